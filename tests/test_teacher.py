"""Teacher-LLM QA writer against a real local HTTP server that misbehaves on purpose."""

import base64
import io
import json

import pytest
from fake_openai import FakeOpenAI  # tests/ is on sys.path (pytest prepend import mode)
from PIL import Image

from data_pipeline import synthetic
from data_pipeline.teacher import FACELLM_CATEGORIES, Teacher, TeacherConfig, TeacherError, build_prompt


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """50 synthetic faces as (key, path, labels, cues) jobs."""
    root = tmp_path_factory.mktemp("faces")
    jobs = []
    for i in range(50):
        image, spec = synthetic.generate(i, seed=0, size=64)
        path = root / f"face{i:02d}.png"
        image.save(path)
        jobs.append((f"face{i:02d}", path, spec.labels, {"yaw_deg": 12.3456 * (i % 3 - 1), "blur": 0.123456}))
    return jobs


def config(server, **kw):
    # fast settings: tiny backoff, client timeout well under the server's stall
    return TeacherConfig(url=server.url, model=server.model, timeout=0.5, backoff_base=0.01, backoff_max=0.05, **kw)


def user_text(body):
    return next(p["text"] for p in body["messages"][1]["content"] if p["type"] == "text")


def test_happy_path_pairs_prompt_and_image(faces, tmp_path):
    key, path, labels, cues = faces[0]
    with FakeOpenAI() as server:
        teacher = Teacher(config(server, qa_per_category=2), tmp_path / "cache")
        pairs = teacher.qa(path, labels, cues)
        body = server.last_request

    assert len(pairs) == 2 * len(FACELLM_CATEGORIES)
    assert [c for c, _, _ in pairs] == [c for c in FACELLM_CATEGORIES for _ in range(2)]
    for _, question, answer in pairs:
        assert question and answer
        assert all(str(v) in answer for v in labels.values())  # the fake states the labels it was given

    # the labels and rounded cues are in the prompt as facts; JSON output requested
    text = user_text(body)
    assert f"Labels: {json.dumps(labels, sort_keys=True)}" in text
    assert '"yaw_deg": -12.35' in text and '"blur": 0.12' in text
    assert "never contradict" in body["messages"][0]["content"].lower()
    assert body["response_format"] == {"type": "json_object"}
    assert body["model"] == server.model

    # the image travels as a JPEG data URL of the same picture
    url = body["messages"][1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == Image.open(path).size


def test_twenty_percent_faults_lose_nothing(faces, tmp_path):
    with FakeOpenAI(fault_rate=0.2, seed=3, timeout_sleep=1.0) as server:
        teacher = Teacher(config(server, qa_per_category=1, concurrency=8, max_retries=8), tmp_path / "cache")
        results = dict(teacher.qa_many(faces))

    assert sorted(results) == [k for k, *_ in faces]  # every job answered exactly once
    labels = {k: lab for k, _, lab, _ in faces}
    n_qa = 0
    for key, pairs in results.items():
        assert isinstance(pairs, list), f"{key}: {pairs}"
        assert {c for c, _, _ in pairs} == set(FACELLM_CATEGORIES)
        assert all(all(v in a for v in labels[key].values()) for _, _, a in pairs)
        n_qa += len(pairs)
    assert n_qa >= 200

    usage = teacher.usage.as_dict()
    faults = sum(v for k, v in server.counts.items() if k != "ok")
    assert faults >= 5 and usage["retries"] >= faults  # every fault cost a retry
    assert usage["gave_up"] == 0 and usage["cache_hits"] == 0
    seen = {k for k, v in usage["failures"].items() if v}
    assert len(seen & {"429", "500", "503", "timeout", "malformed", "connection"}) >= 4, usage["failures"]
    assert usage["requests"] >= len(faces) + faults


def test_cache_answers_without_requests_and_torn_file_is_a_miss(faces, tmp_path):
    jobs = faces[:6]
    with FakeOpenAI() as server:
        first = dict(Teacher(config(server), tmp_path / "cache").qa_many(jobs))
        assert server.requests == 6

        again = Teacher(config(server), tmp_path / "cache")
        assert dict(again.qa_many(jobs)) == first
        assert server.requests == 6 and again.usage.cache_hits == 6 and again.usage.requests == 0

        # a torn entry (crash mid-write) and a stray temp file: one miss, one new request
        files = sorted((tmp_path / "cache").rglob("*.json"))
        assert len(files) == 6
        files[0].write_bytes(files[0].read_bytes()[: files[0].stat().st_size // 2])
        (files[1].parent / ".tmp-junk.json").write_text("{")
        third = Teacher(config(server), tmp_path / "cache")
        assert dict(third.qa_many(jobs)) == first
        assert server.requests == 7 and third.usage.cache_hits == 5
        json.loads(files[0].read_text())  # rewritten whole

        # a different model is a different key
        other = Teacher(TeacherConfig(url=server.url, model="other-model"), tmp_path / "cache")
        other.qa(*jobs[0][1:])
        assert server.requests == 8


def test_unauthorised_is_not_retried(faces, tmp_path, monkeypatch):
    _, path, labels, cues = faces[0]
    with FakeOpenAI(api_key="secret") as server:
        teacher = Teacher(config(server, api_key="wrong"), tmp_path / "cache")
        with pytest.raises(TeacherError) as err:
            teacher.qa(path, labels, cues)
        assert server.requests == 1 and teacher.usage.retries == 0
        message = str(err.value)
        assert "401" in message and server.url in message and server.model in message and "API key" in message

        monkeypatch.setenv("FACELLM_TEACHER_API_KEY", "secret")  # the key from the environment works
        assert Teacher(config(server), tmp_path / "cache").qa(path, labels, cues)


def test_retries_exhausted_names_the_image(faces, tmp_path):
    _, path, labels, cues = faces[0]
    with FakeOpenAI(fault_rate=1.0, fault_kinds=("500",)) as server:
        teacher = Teacher(config(server, max_retries=2), tmp_path / "cache")
        with pytest.raises(TeacherError, match=str(path)) as err:
            teacher.qa(path, labels, cues)
        assert "500" in str(err.value)
        assert server.requests == 3
        assert teacher.usage.as_dict()["failures"] == {"500": 3} and teacher.usage.gave_up == 1

        # qa_many hands the error back instead of raising, and goes on with the rest
        results = list(teacher.qa_many([("a", path, labels, cues), ("b", path.with_name("missing.png"), {}, {})]))
        assert {k for k, _ in results} == {"a", "b"}
        assert all(isinstance(r, TeacherError) for _, r in results)
        assert "missing.png" in str(dict(results)["b"])


def test_retry_after_is_honoured(faces, tmp_path):
    """Retry-After: 0 on every 429 -- with a 30 s backoff base this only finishes fast if it is obeyed."""
    _, path, labels, cues = faces[0]
    with FakeOpenAI(fault_rate=0.6, seed=1, fault_kinds=("429",)) as server:
        cfg = config(server, max_retries=20)
        cfg.backoff_base = cfg.backoff_max = 30.0
        teacher = Teacher(cfg, tmp_path / "cache")
        assert teacher.qa(path, labels, cues)
        assert server.counts["429"] >= 1 and teacher.usage.failures["429"] == server.counts["429"]


def test_reply_is_cleaned_and_bad_replies_retried(faces, tmp_path):
    _, path, labels, cues = faces[0]
    replies = iter(['```json\n{"answers": []}\n```', '{"qa": "none"}'])

    def answer(labels, cues, categories, n):
        planted = next(replies, None)
        if planted is not None:
            return planted
        return [
            {"category": "expression", "question": "  What emotion?  ", "answer": " The person looks happy. "},
            {"category": "expression", "question": "Empty?", "answer": "   "},
            {"category": "weather", "question": "Is it raining?", "answer": "No."},
            {"category": "head_pose", "question": "Pose?", "answer": "Frontal."},
        ]

    with FakeOpenAI(answer=answer) as server:
        teacher = Teacher(config(server, categories=("expression", "head_pose")), tmp_path / "cache")
        pairs = teacher.qa(path, labels, cues)
    assert pairs == [("expression", "What emotion?", "The person looks happy."), ("head_pose", "Pose?", "Frontal.")]
    assert teacher.usage.failures["malformed"] == 2 and server.requests == 3


def test_usage_tokens_and_cost(faces, tmp_path):
    with FakeOpenAI(latency=0.05) as server:
        teacher = Teacher(
            config(server, concurrency=4, price_input_per_mtok=2.0, price_output_per_mtok=8.0), tmp_path / "cache"
        )
        results = list(teacher.qa_many(faces[:12]))
    assert len(results) == 12
    assert 2 <= server.max_in_flight <= 4  # parallel, and capped by cfg.concurrency
    usage = teacher.usage.as_dict()
    assert usage["requests"] == 12
    assert usage["prompt_tokens"] == server.prompt_tokens > 0
    assert usage["completion_tokens"] == server.completion_tokens > 0
    assert usage["cost"] == pytest.approx(server.prompt_tokens * 2e-6 + server.completion_tokens * 8e-6)
    assert "12 requests" in teacher.usage.summary()


def test_prompt_states_rules_and_skips_unknown_labels():
    messages = build_prompt({"age": "20-29", "emotion": None}, {"landmarks": [[0.1, 0.2]] * 468, "yaw": 3.14159},
                            ("demographics",), 3)
    system, text = messages[0]["content"], messages[1]["content"][1]["text"]
    assert "exactly 3" in system and "demographics" in system and "forensic" not in system
    assert "name" in system and '{"qa"' in system
    assert 'Labels: {"age": "20-29"}' in text  # unknown emotion left out, not stated as null
    assert 'Cues: {"yaw": 3.14}' in text  # landmark arrays dropped
