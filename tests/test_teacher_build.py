"""``facellm data build --teacher-url``: a whole build against a local fake teacher that fails on purpose.

Acceptance of the data-pipeline issue: with 20 % injected faults a build of >= 200 teacher QA loses
nothing; killed halfway (SIGKILL) and re-run it completes with no duplicate and no second request
for anything already cached; planted contradictions end in rejects.jsonl with their reasons.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from fake_openai import FakeOpenAI  # tests/ is on sys.path (pytest prepend import mode)

from data_pipeline.teacher import FACELLM_CATEGORIES
from facellm.cli import main
from facellm.records import load_splits

N_IMAGES = 40  # 36 train + 2 + 2; one teacher call per face, 8 categories x 1 QA each -> 320 teacher QA


def build_args(out, server, *extra):
    return ["data", "build", "--source", "synthetic", "--n", str(N_IMAGES), "--val-size", "2", "--test-size", "2",
            "--qa", "attributes", "--refusal-rate", "0", "--out", str(out), "--teacher-url", server.url,
            "--teacher-model", server.model, "--teacher-qa", "1", "--teacher-timeout", "0.5", *extra]


def cached_entries(out):
    return sum(1 for _ in (out / "teacher_cache").rglob("*.json"))


def teacher_records(out):
    return [r for records in load_splits(out).values() for r in records if r["category"].startswith("teacher_")]


def test_faults_and_sigkill_lose_nothing_and_pay_nothing_twice(tmp_path):
    out = tmp_path / "ds"
    with FakeOpenAI(fault_rate=0.2, seed=3, latency=0.05) as server:
        cmd = [sys.executable, "-m", "facellm.cli", *build_args(out, server, "--teacher-concurrency", "2")]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "FACELLM_TEACHER_API_KEY": "sk-test"})
        deadline = time.monotonic() + 240
        while server.counts["ok"] < N_IMAGES // 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting on a condition, not on timing
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the build finished before it could be killed"
        cached, answered_before = cached_entries(out), server.counts["ok"]
        assert 0 < cached < N_IMAGES

        assert main(build_args(out, server)) == 0  # the re-run

        # every face not cached at the kill took exactly one successful request; cached ones took none
        assert server.counts["ok"] - answered_before == N_IMAGES - cached
        assert cached_entries(out) == N_IMAGES
        faults = {k: v for k, v in server.counts.items() if k != "ok"}
        assert sum(faults.values()) >= 10 and len(faults) >= 3, faults

    records = teacher_records(out)
    assert len(records) == N_IMAGES * len(FACELLM_CATEGORIES) >= 200  # 0 lost
    assert len({r["id"] for r in records}) == len(records)  # no duplicates
    assert Counter(r["category"] for r in records) == {f"teacher_{c}": N_IMAGES for c in FACELLM_CATEGORIES}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert rejects == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["cache_hits"] == cached and manifest["teacher"]["retries"] > 0


def planted_answer(labels, cues, categories, n):
    """One consistent and one contradicting answer per face (a different kind of contradiction per category)."""
    wrong_hair = "gray" if labels.get("hair_color") != "gray" else "black"
    other = {"happy": "sad", "sad": "happy", "neutral": "angry", "surprised": "neutral"}
    flip = {"yes": "wears", "no": "does not wear"}
    pose = {"left": "right", "right": "left", "frontal": "left"}
    lies = {
        "demographics": "This is Emma Watson.",
        "expression": f"The person looks {other.get(labels.get('expression'), 'angry')}.",
        "fine_detail": f"The person {flip['no' if labels.get('glasses') == 'yes' else 'yes']} glasses.",
        "head_pose": f"The head is turned to the {pose.get(labels.get('head_pose'), 'left')}.",
        "skin_texture": f"The skin is {'light' if labels.get('skin_tone') != 'light' else 'dark'}.",
        "forensic": "It is a real photograph of a real person.",
        "lighting_quality": "The face is blurry." if cues.get("blur_laplacian_var", 0) >= 100 else "The face is "
                                                                                                   "dimly lit.",
        "facial_structure": f"An oval face framed by {wrong_hair} hair.",
    }
    qa = []
    for category in categories:
        qa.append({"category": category, "question": "What do you see?",
                   "answer": f"The hair is {labels['hair_color']} and the skin tone is {labels['skin_tone']}."})
        qa.append({"category": category, "question": "Tell me more.", "answer": lies[category]})
    return qa


def test_planted_contradictions_end_in_rejects_and_consistent_answers_pass(tmp_path):
    out = tmp_path / "ds"
    with FakeOpenAI(answer=planted_answer) as server:
        assert main(build_args(out, server)) == 0
    records = teacher_records(out)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    for r in records:
        assert r["messages"][0]["content"][1]["text"] == "What do you see?"
    assert len(records) == N_IMAGES * len(FACELLM_CATEGORIES)  # every consistent answer kept
    assert all(r["writer"] == "teacher" and r["question"] == "Tell me more." for r in rejects)
    reasons = Counter(r["category"] for r in rejects)
    assert reasons["teacher_demographics"] == N_IMAGES
    assert set(reasons) == {f"teacher_{c}" for c in FACELLM_CATEGORIES}
    by_category = {r["category"]: r["reason"] for r in rejects}
    assert "identity claim" in by_category["teacher_demographics"]
    assert "expression" in by_category["teacher_expression"]
    assert "glasses" in by_category["teacher_fine_detail"]
    assert "head_pose" in by_category["teacher_head_pose"]
    assert "skin_tone" in by_category["teacher_skin_texture"]
    assert "provenance" in by_category["teacher_forensic"]
    assert "hair_color" in by_category["teacher_facial_structure"]
    assert "contradicts cue" in by_category["teacher_lighting_quality"]

    # the dataset card says what the build did: teacher answers named as such, templates counted, no refusals
    card = (out / "README.md").read_text()
    everything = sum(len(split) for split in load_splits(out).values())
    assert (f"{len(records)} records (categories `teacher_*`) have answers **generated by a teacher model** "
            f"(`{server.model}`)") in card
    assert f"{everything - len(records)} records were written by facellm's templates" in card
    assert "No record asks who the person is." in card and "ask no identity questions" in card
