"""FaceXBench-format multiple-choice evaluation: the public benchmark's files as they are (read by
:mod:`facellm.facexbench_format`), its prompt, a robust answer-letter extraction, accuracy per
category / sub-category / single vs multiple images.

The prompt is built as the benchmark's ``evaluate.py`` does: [context] [prepend_text, if asked]
question, postpend_text, then "(A) option" lines; images first.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from facellm.errors import FacellmError
from facellm.eval.stats import wilson
from facellm.facexbench_format import LETTERS, NotATaskFile, Task, TaskQuestion, read_task, task_files

# Published FaceXBench accuracies (%), for the report's reference column.
PUBLISHED = {
    "GPT-4o (FaceXBench paper)": 50.24,
    "Gemini 1.5 Pro (FaceXBench paper)": 54.40,
    "FaceLLM-1B (FaceLLM paper)": 38.86,
    "FaceLLM-8B (FaceLLM paper)": 56.14,
    "FaceLLM-38B (FaceLLM paper)": 60.52,
}


@dataclass
class Question:
    task: str  # the JSON file's stem
    qid: str
    category: str
    subcategory: str
    num_images: str  # "single" | "multiple", as the benchmark labels it
    images: list[Path]
    prompt: str
    options: list[str]
    correct: str  # letter

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]


def build_prompt(task: Task, question: TaskQuestion, prepend: bool = False) -> str:
    text = ""
    if task.category == "tools_use" and task.context:
        text += task.context + "\n"
    if prepend and task.prepend_text:
        text += task.prepend_text + "\n"
    text += question.text + "\n"
    if task.postpend_text:
        text += task.postpend_text + "\n"
    return text + "".join(f"({letter}) {option}\n" for letter, option in zip(LETTERS, question.options))


def load_benchmark(path: str | Path, prepend: bool = False) -> list[Question]:
    """Questions of one FaceXBench JSON, or of every such JSON in a folder (one benchmark). Every
    problem with a task file is an error; in a folder, JSON that is not a task (results, notes) is
    passed over."""
    path = Path(path)
    questions = []
    for file in task_files(path):
        try:
            task = read_task(file)
        except NotATaskFile:
            if not path.is_dir():
                raise
            continue
        questions += [Question(task=file.stem, qid=q.qid, category=task.category or "unknown",
                               subcategory=task.sub_category or "unknown", num_images=task.num_images or "unknown",
                               images=q.images, prompt=build_prompt(task, q, prepend), options=q.options,
                               correct=q.correct)
                      for q in task.questions]
    if not questions:
        raise FacellmError(f"{path}: no questions found")
    return questions


# ------------------------------------------------------------ answer letters

_MARKER = re.compile(  # "Answer: B", "the answer is (B)", "Option B", "correct choice: **b**"
    r"\b(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be))?\s*[:=\-]?\s*(?:option\s+)?"
    r"[\(\[\*]*\s*([A-Ha-h])\s*[\)\]\*]*(?![\w'])", re.I)
_BRACKETED = re.compile(r"[\(\[]\s*([A-H])\s*[\)\]]")
_LEADING = re.compile(r"^[\s\*\"'`>#]*([A-H])(?:\s*[\.\):\-,'\"\*]|\s*$|\s+(?=[A-Z0-9(\"']))")
_IS_LETTER = re.compile(r"\b(?:is|be|pick|choose|select|go\s+with)\s+[\(\*]*([A-H])[\)\*]*(?=[\s\.,;!]|$)")
_TRAILING = re.compile(r"(?:^|[\s:])[\(\*]*([A-H])[\)\*]*[\.\!]?\s*$")
_STANDALONE = re.compile(r"(?<![\w'])(?:A(?!\s+[a-z])|[B-H])(?![\w'])")  # not the article in "A woman"


def extract_letter(answer: str, options: list[str]) -> str | None:
    """The option letter an answer picks, or None when it picks none (or several).

    Explicit markers first ("Answer: B", "option (c)"), then a lone bracketed letter, a leading letter
    ("B.", "B) ...", not the article in "A woman ..."), "is C" / "I pick D", a trailing letter, and
    finally the text of exactly one option (the longest when one option contains another).
    """
    letters = LETTERS[: len(options)]
    text = answer.strip()
    if not text:
        return None

    def valid(found: list[str]) -> str | None:
        distinct = {f.upper() for f in found if f.upper() in letters}
        return distinct.pop() if len(distinct) == 1 else None

    # a lower-case letter after a marker is a word ("my answer a bit later"), unless nothing follows it
    marked = [m.group(1) for m in _MARKER.finditer(text)
              if m.group(1).isupper() or not re.match(r"\s+[a-z]", text[m.end():])]
    for found in (marked, _BRACKETED.findall(text)):
        if (letter := valid(found)) is not None:
            return letter
    several = len({c for c in _STANDALONE.findall(text) if c in letters}) > 1  # "Either B or C"
    for pattern in () if several else (_LEADING, _IS_LETTER, _TRAILING):
        match = pattern.search(text)
        if match and match.group(1) in letters:
            return match.group(1)
    lowered = " ".join(text.lower().split())
    matched = [i for i, o in enumerate(options)
               if re.search(rf"(?<![\w-]){re.escape(' '.join(o.lower().split()))}(?![\w-])", lowered)]
    matched = [i for i in matched if not any(j != i and options[i].lower() in options[j].lower() for j in matched)]
    return letters[matched[0]] if len(matched) == 1 else None


# ------------------------------------------------------------ scoring

def score_mcq(questions: list[Question], answers: list[str]) -> dict:
    """Accuracy overall and per category, sub-category and single/multiple images, with Wilson 95 %
    intervals, chance (mean 1/options) and answers no letter could be read from."""
    groups: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: {"n": 0, "correct": 0, "unanswered": 0}))
    samples = []
    for q, answer in zip(questions, answers, strict=True):
        picked = extract_letter(answer, q.options)
        for level, key in (("overall", "all"), ("category", q.category), ("subcategory", q.subcategory),
                           ("num_images", q.num_images)):
            cell = groups[level][key]
            cell["n"] += 1
            cell["correct"] += picked == q.correct
            cell["unanswered"] += picked is None
        samples.append({"task": q.task, "id": q.qid, "correct": q.correct, "picked": picked, "answer": answer})

    def finish(cell: dict) -> dict:
        low, high = wilson(cell["correct"], cell["n"])
        return {**cell, "accuracy": cell["correct"] / cell["n"], "ci95": [low, high]}

    result = {level: {k: finish(v) for k, v in sorted(cells.items())} for level, cells in groups.items()}
    result["overall"] = result["overall"]["all"]
    result["chance"] = sum(1 / len(q.options) for q in questions) / len(questions)
    result["published"] = PUBLISHED
    result["samples"] = samples
    return result


def answer_schema(question: Question) -> dict:
    """JSON schema of a letter answer: constrained decoding makes every answer a letter."""
    return {"type": "object", "properties": {"answer": {"type": "string", "enum": list(question.letters)}},
            "required": ["answer"], "additionalProperties": False}


def ask_mcq(endpoint: str, model: str, questions: list[Question], api_key: str | None = None,
            concurrency: int = 8, constrained: bool = False, max_tokens: int = 64) -> list[str]:
    """Each question through the API, images first (as the benchmark sends them), answers in order.
    ``constrained``: the answer is decoded under a one-letter JSON schema, and returned as that letter."""
    from facellm.client import ask_all, json_schema_format
    from facellm.images import load_image, to_data_url

    def build(q: Question) -> tuple[list[dict], dict]:
        parts = [{"type": "image_url", "image_url": {"url": to_data_url(load_image(p))}} for p in q.images]
        extra = {"response_format": json_schema_format(answer_schema(q), "answer")} if constrained else {}
        return [{"role": "user", "content": parts + [{"type": "text", "text": q.prompt}]}], extra

    answers = ask_all(endpoint, model, questions, build, api_key, concurrency, max_tokens, desc="facexbench")
    if not constrained:
        return answers
    letters = []
    for answer in answers:
        try:
            letters.append(json.loads(answer)["answer"])
        except (json.JSONDecodeError, KeyError, TypeError):
            letters.append(answer)  # cut by max_tokens: scored as written
    return letters


def markdown(result: dict) -> str:
    """The MCQ section of a report: overall, per category, sub-category and image count, next to chance
    and the published figures."""
    def rows(cells: dict) -> list[str]:
        return [f"| {name} | {c['n']} | {c['accuracy']:.1%} | {c['ci95'][0]:.1%}–{c['ci95'][1]:.1%} | {c['unanswered']} |"
                for name, c in cells.items()]

    header = ["| | questions | accuracy | 95 % CI | no letter |", "|---|---:|---:|---|---:|"]
    o = result["overall"]
    lines = [f"Overall accuracy **{o['accuracy']:.1%}** on {o['n']} questions (95 % CI {o['ci95'][0]:.1%}–"
             f"{o['ci95'][1]:.1%}); chance {result['chance']:.1%}.", ""]
    for level, title in (("category", "Category"), ("subcategory", "Sub-category"), ("num_images", "Images")):
        lines += [f"**{title}**", "", *header, *rows(result[level]), ""]
    lines += ["Published FaceXBench accuracies, for reference (full benchmark, 5,000 questions):", "",
              "| model | accuracy |", "|---|---:|", *(f"| {m} | {v:.2f} % |" for m, v in result["published"].items())]
    return "\n".join(lines)


def write_facexbench_report(out_dir: Path, model: str, benchmark: str | Path, result: dict) -> Path:
    """report.md/.html/.json of one model's FaceXBench-format run, with a per-category plot; the .md path."""
    from facellm.eval.report import bar_plot, write_report_files

    out_dir.mkdir(parents=True, exist_ok=True)
    plot = bar_plot(out_dir / "facexbench_per_category.png",
                    {model: {c: (v["accuracy"], tuple(v["ci95"])) for c, v in result["category"].items()}},
                    f"FaceXBench-format MCQ: {model} (95 % Wilson CI)", chance=result["chance"],
                    references={k.split(" (")[0]: v for k, v in PUBLISHED.items()})
    return write_report_files(out_dir, f"facellm eval: {model} on {benchmark} (FaceXBench format)",
                              [("Multiple-choice accuracy", markdown(result))], {model: result}, [plot])
