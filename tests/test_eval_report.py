"""`facellm eval` end to end through the real HTTP API: the attribute report with per-group fairness and
plots, and a FaceXBench-format benchmark (single and multi-image questions) made from packaged and
synthetic images, on which an untrained model answers at chance."""

import json
import shutil
import subprocess
import sys

import pytest

from bad_inputs import ASTRONAUT, save
from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.synthetic import generate
from data_pipeline.identity_questions import all_phrasings
from data_pipeline.templates import ATTRIBUTES_ONLY
from facellm.eval.stats import wilson
from facellm.records import load_split


@pytest.fixture(scope="module")
def endpoint(tiny_endpoint):
    return tiny_endpoint


def facellm(*args):
    result = subprocess.run([sys.executable, "-m", "facellm.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_attribute_report_has_groups_intervals_and_plots(endpoint, tmp_path):
    data = tmp_path / "data"
    build_synthetic(BuildConfig(out=data, n=120, val_size=4, test_size=24, seed=2, templates=ATTRIBUTES_ONLY))
    facellm("eval", "--endpoint", endpoint, "--model", "base", "--data", data, "--out", tmp_path / "report",
            "--counterfactual", "2", "--identity-probe")
    report = json.loads((tmp_path / "report" / "report.json").read_text())["base"]
    assert sum(a["n"] for a in report["attributes"].values()) == 24 * 5
    for a in report["attributes"].values():
        assert a["ci95"][0] <= a["accuracy"] <= a["ci95"][1]
    skin = report["fairness"]["skin_tone"]  # the synthetic faces' group attribute
    assert len(skin["groups"]) >= 2 and sum(g["n"] for g in skin["groups"].values()) == 24 * 5
    accuracies = [g["accuracy"] for g in skin["groups"].values()]
    assert skin["gap"] == pytest.approx(max(accuracies) - min(accuracies))
    for name in ("report.md", "report.html", "accuracy_per_attribute.png", "groups_base_skin_tone.png"):
        assert (tmp_path / "report" / name).stat().st_size > 500, name
    assert "max-min gap" in (tmp_path / "report" / "report.md").read_text()
    # calibration from the engine's token logprobs: every answer has a confidence
    calibration = report["calibration"]
    assert calibration["n"] == 120 and sum(b["n"] for b in calibration["bins"]) == 120
    assert all(0 < s["confidence"] <= 1 for s in report["samples"])
    assert calibration["mean_confidence"] == pytest.approx(sum(s["confidence"] for s in report["samples"]) / 120)
    assert (tmp_path / "report" / "calibration.png").stat().st_size > 500

    # counterfactual: 2 faces, each re-rendered once per other value of each attribute; the other 4 asked
    cf = report["counterfactual"]
    assert {a: c["other_answers"] for a, c in cf.items()} == \
        {"skin_tone": 16, "glasses": 8, "hair_color": 24, "expression": 24, "head_pose": 16}
    assert all(0 <= c["flip_rate"] <= 1 and 0 <= c["follows_change"] <= 1 for c in cf.values())
    # identity probe: every question asked in a conversation that then asks the attribute question
    identity = report["identity"]
    assert identity["conversations"] == 120 and 0 <= identity["refusal_rate"] <= 1
    assert identity["plain_attribute_accuracy"] == pytest.approx(
        sum(a["correct"] for a in report["attributes"].values()) / 120)
    assert not {s["question"] for s in identity["samples"]} & all_phrasings()  # held out

    shutil.copytree(tmp_path / "report", tmp_path / "again")
    facellm("eval", "compare", tmp_path / "report", tmp_path / "again", "--out", tmp_path / "both")
    both = json.loads((tmp_path / "both" / "report.json").read_text())
    assert list(both) == ["report: base", "again: base"]
    table = (tmp_path / "both" / "report.md").read_text()
    assert "| attribute | n | chance | report: base | again: base |" in table


def test_facexbench_format_benchmark_through_the_api_scores_chance_for_an_untrained_model(endpoint, tmp_path):
    bench = tmp_path / "benchmark"
    images = bench / "images"
    faces = [save(generate(i, 9, 112)[0], images / "synthetic" / f"{i}.png") for i in range(20)]
    photo = save(ASTRONAUT.resize((128, 128)), images / "photos" / "astronaut.png")
    options = ["20-29", "30-39", "40-49", "50-59"]
    single = {str(i + 1): {"image_paths": [str(faces[i % 20].relative_to(bench))], "question_text": "Age?",
                           "options": options, "correct_answer_option": "ABCD"[i % 4], "answer": options[i % 4]}
              for i in range(60)}
    multiple = {str(i + 1): {"image_paths": [str(faces[i % 20].relative_to(bench)), str(photo.relative_to(bench))],
                             "question_text": "Which image shows a photograph?",
                             "options": ["Image 1", "Image 2", "Both", "Neither"],
                             "correct_answer_option": "ABCD"[i % 4], "answer": "x"} for i in range(20)}
    for name, category, sub, num, questions in (("age_single", "bias_fairness", "age", "single", single),
                                                ("forensic_multiple", "fas_deepfakes", "deepfakes", "multiple",
                                                 multiple)):
        (bench / f"{name}.json").write_text(json.dumps({
            "category": category, "sub-category": sub, "dataset": "synthetic", "question_type": "MCQ",
            "num_images": num, "prepend_text": "Look at the face.",
            "postpend_text": "Please answer the question and provide only the correct option letter, e.g., A, B, C, D.",
            "questions": questions}))
    result = facellm("eval", "--endpoint", endpoint, "--model", "base", "--facexbench", bench, "--constrained",
                     "--out", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())["base"]
    overall = report["overall"]
    assert overall["n"] == 80 and overall["unanswered"] == 0  # constrained: every answer a letter
    low, high = wilson(20, 80)
    assert low <= overall["accuracy"] <= high  # random weights answer at chance (25 %)
    assert report["num_images"]["multiple"]["n"] == 20 and report["category"]["fas_deepfakes"]["n"] == 20
    assert "GPT-4o" in result.stdout and (tmp_path / "report" / "facexbench_per_category.png").stat().st_size > 500


def test_a_broken_image_in_the_evaluated_split_is_an_error_naming_it(endpoint, tmp_path):
    data = tmp_path / "data"
    build_synthetic(BuildConfig(out=data, n=30, val_size=2, test_size=4, seed=3, templates=ATTRIBUTES_ONLY))
    broken = data / load_split(data, "test")[0]["images"][0]
    broken.write_bytes(broken.read_bytes()[:100])  # truncated
    result = subprocess.run([sys.executable, "-m", "facellm.cli", "eval", "--endpoint", endpoint, "--model", "base",
                             "--data", str(data), "--out", str(tmp_path / "report")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert f"facellm: error: {broken}: not a readable image" in result.stderr
