"""FaceXBench-format MCQ: the benchmark's own layout and prompt, the answer styles models really produce,
scoring with intervals; a random answerer lands on chance."""

import json
import random

import pytest

from facellm.errors import FacellmError
from facellm.eval.facexbench import build_prompt, extract_letter, load_benchmark, score_mcq
from facellm.eval.stats import wilson
from facellm.facexbench_format import Task, TaskQuestion

OPTIONS = ["20-29", "30-39", "40-49", "50-59"]
IMAGES = ["Image 1", "Image 1 and Image 4", "Image 3", "Image 2 and Image 4"]

# (answer, options, expected letter): styles seen from GPT-4o, Gemini, LLaVA, Qwen-VL, InternVL and
# small tuned models on FaceXBench-like prompts
STYLES = [
    ("B", OPTIONS, "B"),
    ("b", OPTIONS, None),  # a bare lower-case letter is too ambiguous (could be a word)
    ("B.", OPTIONS, "B"),
    ("(B)", OPTIONS, "B"),
    ("B)", OPTIONS, "B"),
    ("[C]", OPTIONS, "C"),
    ("**C**", OPTIONS, "C"),
    ("Answer: D", OPTIONS, "D"),
    ("answer: d", OPTIONS, "D"),
    ("The answer is (A).", OPTIONS, "A"),
    ("The correct answer is C: 40-49.", OPTIONS, "C"),
    ("The correct option is B", OPTIONS, "B"),
    ("Option A", OPTIONS, "A"),
    ("I choose D.", OPTIONS, "D"),
    ("I would go with B", OPTIONS, "B"),
    ("It is C.", OPTIONS, "C"),
    ("C - 40-49", OPTIONS, "C"),
    ("B: 30-39", OPTIONS, "B"),
    ("(D) 50-59", OPTIONS, "D"),
    ("30-39", OPTIONS, "B"),
    ("The person appears to be 40-49 years old.", OPTIONS, "C"),
    ("Based on the wrinkles, the age range is 50-59.", OPTIONS, "D"),
    ("A", OPTIONS, "A"),
    ("A.", OPTIONS, "A"),
    ("A woman in her thirties, so 30-39.", OPTIONS, "B"),  # "A" is an article here
    ("A person with grey hair: D", OPTIONS, "D"),
    ("After looking at the face, my answer is\n\nB", OPTIONS, "B"),
    ("Answer: (c) 40-49", OPTIONS, "C"),
    ("The answer is B, 30-39.", OPTIONS, "B"),
    ("Image 1 and Image 4", IMAGES, "B"),  # one option's text contains another's
    ("The images of other people are Image 2 and Image 4.", IMAGES, "D"),
    ("Image 3", IMAGES, "C"),
    ("I cannot determine the age from this image.", OPTIONS, None),
    ("", OPTIONS, None),
    ("Either B or C.", OPTIONS, None),  # two picks are no pick
    ("E", OPTIONS, None),  # not an option here
    ("Final answer: **A**", OPTIONS, "A"),
    ("'B'", OPTIONS, "B"),
    ("> C", OPTIONS, "C"),
    ("I think the answer should be D because of the visible wrinkles.", OPTIONS, "D"),
    ("My answer a bit later; first: C", OPTIONS, "C"),  # "answer a" is not a pick of A
]


@pytest.mark.parametrize("answer, options, expected", STYLES)
def test_answer_letter_extraction(answer, options, expected):
    assert extract_letter(answer, options) == expected


def test_the_table_covers_at_least_30_styles():
    assert len(STYLES) >= 30


def write_task(root, name, category, sub, num_images, questions, prepend="Prepended context.",
               postpend="Please answer the question and provide only the correct option letter, e.g., A, B, C, D."):
    task = {"category": category, "sub-category": sub, "dataset": "test", "question_type": "MCQ",
            "num_images": num_images, "prepend_text": prepend, "postpend_text": postpend,
            "questions": {str(i + 1): q for i, q in enumerate(questions)}}
    (root / f"{name}.json").write_text(json.dumps(task))


def question(images, options, correct, text="What is the age of the person?"):
    return {"image_paths": images, "question_text": text, "options": options,
            "correct_answer_option": correct, "answer": options["ABCD".index(correct)]}


def test_layout_and_prompt_as_the_benchmark_builds_them(tmp_path):
    write_task(tmp_path, "utk_single", "bias_fairness", "age", "single",
               [question(["images/utk/q1.png"], OPTIONS, "B")])
    write_task(tmp_path, "agedb_multiple", "face_recognition", "hr_fr", "multiple",
               [question(["images/a/1.png", "images/a/2.png"], IMAGES, "D", "Which images show other people?")])
    (tmp_path / "results.json").write_text("{}")  # other JSON beside the tasks is not a task
    questions = load_benchmark(tmp_path)
    assert [(q.task, q.num_images, len(q.images)) for q in questions] == \
        [("agedb_multiple", "multiple", 2), ("utk_single", "single", 1)]
    assert questions[1].images == [tmp_path / "images/utk/q1.png"]
    assert questions[1].prompt == ("What is the age of the person?\n"
                                   "Please answer the question and provide only the correct option letter, "
                                   "e.g., A, B, C, D.\n(A) 20-29\n(B) 30-39\n(C) 40-49\n(D) 50-59\n")
    assert load_benchmark(tmp_path, prepend=True)[1].prompt.startswith("Prepended context.\nWhat is the age")
    tools = Task(path=tmp_path / "tools.json", category="tools_use", context="Tools: a face detector.")
    asked = TaskQuestion(qid="1", images=[], text="Q?", options=["x", "y"], correct="A")
    assert build_prompt(tools, asked) == "Tools: a face detector.\nQ?\n(A) x\n(B) y\n"
    with pytest.raises(FacellmError, match="no FaceXBench JSON"):
        load_benchmark(tmp_path / "nowhere")
    with pytest.raises(FacellmError, match="not a FaceXBench task file"):
        load_benchmark(tmp_path / "results.json")  # named on its own, it is an error, not passed over


@pytest.mark.parametrize("broken, problem", [
    ({"options": OPTIONS, "correct_answer_option": "B"}, r"question 2 lacks \['image_paths', 'question_text'\]"),
    ({"image_paths": ["images/x.png"], "question_text": "Age?", "options": OPTIONS, "correct_answer_option": "E"},
     "question 2 has correct_answer_option 'E'"),
    ({"image_paths": [1], "question_text": "Age?", "options": OPTIONS, "correct_answer_option": "A"},
     "question 2 has image_paths that are not a list of paths"),
    ("not a question", "question 2 is not an object"),
])
def test_a_broken_task_is_an_error_naming_file_and_question(tmp_path, broken, problem):
    write_task(tmp_path, "utk", "bias_fairness", "age", "single", [question(["images/q1.png"], OPTIONS, "A"), broken])
    with pytest.raises(FacellmError, match=f"utk.json: {problem}"):
        load_benchmark(tmp_path)
    (tmp_path / "utk.json").write_text("{not json")
    with pytest.raises(FacellmError, match="utk.json: not readable as JSON"):
        load_benchmark(tmp_path)


def test_one_image_path_may_be_a_string_and_paths_resolve_from_the_task_folder(tmp_path):
    lower_case = {**question("./images/../images/q1.png", OPTIONS, "C"), "correct_answer_option": " c"}
    write_task(tmp_path, "utk", "bias_fairness", "age", "single",
               [lower_case, question(["images/q2.png"], OPTIONS, "D")])
    first, second = load_benchmark(tmp_path / "utk.json")
    assert first.images == [tmp_path / "images" / "q1.png"] and first.correct == "C"
    assert second.images == [tmp_path / "images" / "q2.png"]


def test_scores_per_level_with_intervals_and_a_random_answerer_lands_on_chance(tmp_path):
    rng = random.Random(0)
    qs = [question([f"images/q{i}.png"], OPTIONS, "ABCD"[i % 4]) for i in range(400)]
    write_task(tmp_path, "attrs", "attributes_expression", "attributes", "single", qs[:200])
    write_task(tmp_path, "ages", "bias_fairness", "age", "multiple", qs[200:])
    questions = load_benchmark(tmp_path)
    answers = [f"Answer: {rng.choice('ABCD')}" for _ in questions]
    result = score_mcq(questions, answers)
    low, high = wilson(int(0.25 * 400), 400)
    assert low <= result["overall"]["accuracy"] <= high  # within the 95 % interval of 25 %
    assert result["chance"] == 0.25 and result["overall"]["unanswered"] == 0
    assert set(result["category"]) == {"attributes_expression", "bias_fairness"}
    assert set(result["num_images"]) == {"single", "multiple"} and result["subcategory"]["age"]["n"] == 200
    perfect = score_mcq(questions, [q.correct for q in questions])
    assert perfect["overall"]["accuracy"] == 1 and perfect["overall"]["ci95"][0] > 0.99
    assert score_mcq(questions, ["no idea"] * len(questions))["overall"]["unanswered"] == 400
