"""`facellm caption`: every input form, the bad-input matrix, per-face records, schema validation,
resume after a kill with every image exactly once, retries of failures, exports.

The server is the embedded engine behind the real HTTP API on 127.0.0.1 (the vLLM module captions
through vLLM too)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from bad_inputs import ASTRONAUT, bad_images, save, two_faces, undecodable
from facellm.schema import json_schema
from serve.caption import CaptionConfig, CaptionError, collect_images, export_results, run_captioning

SCHEMA = json_schema()


@pytest.fixture(scope="module")
def endpoint(tiny_endpoint):
    return tiny_endpoint


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def caption(endpoint, inputs, out, **kwargs):
    settings = {"schema": SCHEMA, "concurrency": 4, **kwargs}
    return run_captioning(CaptionConfig(inputs=[str(i) for i in inputs], out=out, endpoint=endpoint, model="base",
                                        **settings))


def test_inputs_from_folders_globs_lists_and_datasets(tmp_path):
    for name in ("a.jpg", "sub/b.png", "sub/deeper/c.webp"):
        save(ASTRONAUT.resize((64, 64)), tmp_path / "photos" / name)
    (tmp_path / "photos" / "notes.txt").write_text("not an image list: ignored inside folders")
    (tmp_path / "list.txt").write_text("photos/a.jpg\n\nphotos/sub/b.png\n")
    found = collect_images([str(tmp_path / "photos")])
    assert [p.name for p in found] == ["a.jpg", "b.png", "c.webp"]
    assert [p.name for p in collect_images([str(tmp_path / "photos/**/*.png")])] == ["b.png"]
    assert [p.name for p in collect_images([str(tmp_path / "list.txt"), str(tmp_path / "photos")])] == \
        ["a.jpg", "b.png", "c.webp"]  # each image once, whatever names it twice
    with pytest.raises(CaptionError, match="nowhere"):
        collect_images([str(tmp_path / "nowhere")])


def test_bad_input_matrix_every_image_one_line_valid_or_a_reason(endpoint, tmp_path):
    root = tmp_path / "matrix"
    root.mkdir()
    cases = bad_images(root)
    out = tmp_path / "results.jsonl"
    summary = caption(endpoint, [root], out)
    by_image = {r["image"].split("/")[-1]: r for r in lines(out)}
    assert sorted(by_image) == sorted([*cases, "good.jpg", "full.png"])  # one line each
    for name, expected in cases.items():
        record = by_image[name]
        if undecodable(expected):
            assert record["error"].startswith("image:") and name in record["error"], record
        else:  # whole-image mode: anything that decodes is captioned, faces or not
            jsonschema.validate(record["attributes"], SCHEMA)
    assert summary["failed"] == 5 and summary["captioned"] == len(by_image) - 5


def test_per_face_lines_carry_boxes_and_faceless_images_a_reason(endpoint, tmp_path):
    save(two_faces(), tmp_path / "in" / "two.jpg")
    save(ASTRONAUT, tmp_path / "in" / "one.jpg")
    save(ASTRONAUT.crop((0, 300, 200, 512)), tmp_path / "in" / "no-face.jpg")  # the suit, no head
    out = tmp_path / "faces.jsonl"
    caption(endpoint, [tmp_path / "in"], out, per_face=True)
    rows = lines(out)
    two = sorted((r for r in rows if r["image"].endswith("two.jpg")), key=lambda r: r["face"])
    assert [r["face"] for r in two] == [0, 1]
    assert sorted(r["box"][0] < 512 for r in two) == [False, True]  # one face on each side
    one = [r for r in rows if r["image"].endswith("one.jpg")]
    assert len(one) == 1 and 150 < one[0]["box"][0] < 200 and 50 < one[0]["box"][1] < 100  # astronaut's face
    assert all("attributes" in r for r in two + one)
    assert [r["error"] for r in rows if r["image"].endswith("no-face.jpg")] == ["no face found"]


def test_200_images_killed_halfway_resume_with_no_duplicate_and_no_gap(endpoint, tmp_path):
    from data_pipeline.synthetic import generate

    root = tmp_path / "many"
    for i in range(180):  # synthetic faces
        save(generate(i, 3, 112)[0], root / "synthetic" / f"{i:03d}.png")
    photos = {"astronaut": ASTRONAUT, "cameraman": Image.fromarray(skimage.data.camera()).convert("RGB"),
              "pair": two_faces()}
    for i in range(20):  # packaged photos at several sizes
        name = list(photos)[i % 3]
        save(photos[name].resize((96 + 8 * i, 96 + 8 * i)), root / "photos" / f"{name}-{i}.jpg")
    bad = {"empty.jpg": b"", "text.png": b"no image here", "truncated.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF"}
    for name, raw in bad.items():
        (root / "bad" / name).parent.mkdir(exist_ok=True)
        (root / "bad" / name).write_bytes(raw)
    total = 180 + 20 + len(bad)

    out = tmp_path / "resume.jsonl"
    cmd = [sys.executable, "-m", "facellm.cli", "caption", str(root), "--out", str(out),
           "--endpoint", endpoint, "--model", "base", "--concurrency", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while (not out.exists() or out.read_text().count("\n") < total // 2) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)  # a condition, not a timing bet
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    with out.open("a") as f:
        f.write('{"image": "/torn/line"')  # as if killed mid-write
    assert total // 2 <= len(out.read_text().splitlines()) < total

    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = lines(out)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert sorted(str(Path(r["image"]).relative_to(root)) for r in rows) == names  # no duplicate, no gap
    for row in rows:
        if Path(row["image"]).name in bad:
            assert row["error"].startswith("image:") and Path(row["image"]).name in row["error"]
        else:
            jsonschema.validate(row["attributes"], SCHEMA)
    assert json.loads(result.stdout.splitlines()[-1])["skipped"] >= total // 2


def test_answers_cut_by_max_tokens_fail_with_the_reason_and_retry(endpoint, tmp_path):
    for i in range(3):
        save(ASTRONAUT.resize((64, 64)), tmp_path / "in" / f"{i}.jpg")
    out = tmp_path / "cut.jsonl"
    summary = caption(endpoint, [tmp_path / "in"], out, max_tokens=4)
    assert summary["failed"] == 3
    assert all("max_tokens reached" in r["error"] for r in lines(out))
    assert caption(endpoint, [tmp_path / "in"], out)["skipped"] == 3  # failures count as done...
    summary = caption(endpoint, [tmp_path / "in"], out, retry_failed=True)  # ...unless retried
    assert summary["captioned"] == 3 and [("attributes" in r) for r in lines(out)] == [True] * 3


def test_free_text_and_custom_schema(endpoint, tmp_path):
    save(ASTRONAUT.resize((64, 64)), tmp_path / "in" / "a.jpg")
    caption(endpoint, [tmp_path / "in"], tmp_path / "text.jsonl", schema=None, max_tokens=8)
    assert lines(tmp_path / "text.jsonl")[0]["text"]
    schema = {"type": "object", "properties": {"smiling": {"enum": ["yes", "no"]}}, "required": ["smiling"],
              "additionalProperties": False}
    caption(endpoint, [tmp_path / "in"], tmp_path / "custom.jsonl", schema=schema)
    assert lines(tmp_path / "custom.jsonl")[0]["attributes"]["smiling"] in ("yes", "no")


def test_export_to_csv_and_parquet(endpoint, tmp_path):
    save(two_faces(), tmp_path / "in" / "two.jpg")
    (tmp_path / "in" / "broken.jpg").write_bytes(b"junk")
    out = tmp_path / "r.jsonl"
    caption(endpoint, [tmp_path / "in"], out, per_face=True)
    csv, parquet = export_results(out, ["csv", "parquet"])
    for frame in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert len(frame) == 3 and {"image", "face", "box", "error", "attr.expression", "attr.age"} <= set(frame)
        assert frame["attr.glasses"].dropna().isin(["yes", "no"]).all()


def test_unreachable_endpoint_is_a_clear_error_keeping_finished_work(tmp_path):
    save(ASTRONAUT.resize((64, 64)), tmp_path / "in" / "a.jpg")
    result = subprocess.run([sys.executable, "-m", "facellm.cli", "caption", str(tmp_path / "in"), "--out",
                             str(tmp_path / "r.jsonl"), "--endpoint", "http://127.0.0.1:9", "--model", "base"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "stopped answering" in result.stderr and "Traceback" not in result.stderr


def test_without_an_endpoint_the_engine_runs_in_the_workers_with_the_same_answers(tiny_model_dir, endpoint,
                                                                                    tmp_path):
    """`facellm caption --model DIR --engine transformers`: no server, the engine inside each worker process,
    a batch of images per call. The bad-input matrix gives the same lines with 1 and 2 workers, and the
    same captions as the embedded server over HTTP."""
    root = tmp_path / "matrix"
    root.mkdir()
    cases = bad_images(root)
    save(two_faces(), root / "pair.jpg")

    def run(out, *flags):
        result = subprocess.run([sys.executable, "-m", "facellm.cli", "caption", str(root), "--out", str(out),
                                 "--model", str(tiny_model_dir), "--engine", "transformers", "--per-face",
                                 "--max-tokens", "64", "--batch-size", "4", *flags],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return sorted(lines(out), key=lambda r: (r["image"], r.get("face", 0)))

    one, two = run(tmp_path / "one.jsonl", "--workers", "1"), run(tmp_path / "two.jsonl", "--workers", "2")
    assert one == two
    caption(endpoint, [root], tmp_path / "http.jsonl", per_face=True, max_tokens=64)
    assert one == sorted(lines(tmp_path / "http.jsonl"), key=lambda r: (r["image"], r.get("face", 0)))
    by_name = {}
    for row in one:
        by_name.setdefault(Path(row["image"]).name, []).append(row)
    assert [r["face"] for r in by_name["pair.jpg"]] == [0, 1]
    for name, expected in cases.items():
        if undecodable(expected):
            assert [set(r) for r in by_name[name]] == [{"image", "error"}]
            assert by_name[name][0]["error"].startswith("image:")
    assert not list(tmp_path.glob("*.server.log"))  # no server was started
