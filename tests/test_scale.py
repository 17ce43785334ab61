"""Scale-out: a data build gives the same dataset with 1 or 2 worker processes and on a real 2-node Ray
cluster started here; a worker killed mid-job (SIGKILL) loses nothing and duplicates nothing; bad inputs
end as the same rejects everywhere; a Ray address that does not answer is a one-line error.

Photos from scikit-image (astronaut: NASA, public domain; a cat); the bad-input matrix of tests/bad_inputs.py.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PIL import ImageOps

from bad_inputs import ASTRONAUT, CAT, bad_images, save
from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.ingest import IngestConfig, ingest
from data_pipeline.synthetic import SceneOptions
from facellm.errors import FacellmError
from facellm.parallel import FanOut, fan_out
from facellm.records import load_split


def photo_folder(root: Path, photos: int, matrix: bool = True) -> Path:
    """``photos`` astronaut photos (every other one mirrored), a cat, and the bad-input matrix; labels CSV."""
    for i in range(photos):
        save(ImageOps.mirror(ASTRONAUT) if i % 2 else ASTRONAUT, root / f"{i:04d}.jpg", quality=90)
    save(CAT, root / "cat.jpg")
    if matrix:
        bad_images(root)
    labels = root.parent / "labels.csv"
    labels.write_text("file,gender\n" + "".join(f"{p.name},female\n" for p in sorted(root.iterdir())))
    return labels


def dataset(out: Path) -> dict:
    """Everything a build's result is judged by: records of every split, rejects, counts, journal keys."""
    manifest = json.loads((out / "manifest.json").read_text())
    keys = [json.loads(line)["key"] for line in (out / "journal.jsonl").read_text().splitlines()
            if line.endswith("}")] if (out / "journal.jsonl").exists() else []  # a torn line of a killed run: no entry
    return {"records": {s: load_split(out, s) for s in manifest["records"]},
            "rejects": (out / "rejects.jsonl").read_text().splitlines(),
            "manifest": {k: v for k, v in manifest.items() if k != "root"}, "journal": sorted(keys)}


def cli_build(root: Path, labels: Path, out: Path, *extra: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "facellm.cli", "data", "build", "--source", "folder", "--root", str(root),
           "--labels", str(labels), "--out", str(out), "--val-size", "0.2", "--test-size", "0.2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finished(process: subprocess.Popen, timeout: float = 300) -> str:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def kill_one_worker_midway(process: subprocess.Popen, journal: Path, is_worker, after: int = 25) -> int:
    """SIGKILL one worker process once ``after`` images are journalled; its pid."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= after:
            break
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.05)
    victims = [p for p in psutil.process_iter() if _matches(is_worker, p)]
    assert victims, "no worker process found"
    os.kill(victims[0].pid, signal.SIGKILL)
    return victims[0].pid


def _matches(is_worker, process: psutil.Process) -> bool:
    try:
        return is_worker(process.ppid(), " ".join(process.cmdline()))
    except psutil.Error:  # gone, or not ours
        return False


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos") / "folder"
    return root, photo_folder(root, 160)


@pytest.fixture(scope="module")
def local_reference(photos, tmp_path_factory):
    """The build in this process, one worker: what every other way of running must reproduce."""
    root, labels = photos
    out = tmp_path_factory.mktemp("reference") / "out"
    finished(cli_build(root, labels, out, "--workers", "1"))
    return dataset(out)


def test_two_worker_processes_build_the_same_dataset(photos, local_reference, tmp_path):
    root, labels = photos
    finished(cli_build(root, labels, tmp_path / "out", "--workers", "2"))
    assert dataset(tmp_path / "out") == local_reference
    reasons = "\n".join(local_reference["rejects"])
    assert "not a readable image" in reasons and "no face found" in reasons  # the matrix ended as reasons


def test_a_worker_process_killed_midway_loses_nothing(photos, local_reference, tmp_path):
    root, labels = photos
    out = tmp_path / "out"
    build = cli_build(root, labels, out, "--workers", "2")
    kill_one_worker_midway(build, out / "journal.jsonl", lambda ppid, cmd: ppid == build.pid and "spawn_main" in cmd)
    finished(build)
    assert dataset(out) == local_reference  # every image journalled exactly once, the same records


def test_an_interrupted_build_resumes_with_another_worker_count(photos, local_reference, tmp_path):
    root, labels = photos
    out = tmp_path / "out"
    finished(cli_build(root, labels, out, "--workers", "1"))
    journal = (out / "journal.jsonl").read_text().splitlines()
    (out / "journal.jsonl").write_text("\n".join(journal[:40]) + "\n" + journal[40][:30])  # killed mid-line
    finished(cli_build(root, labels, out, "--workers", "2"))
    assert dataset(out) == local_reference


def test_synthetic_builds_the_same_images_and_records_at_any_worker_count(tmp_path):
    scene = SceneOptions(max_faces=2)
    one = build_synthetic(BuildConfig(out=tmp_path / "one", n=24, scene=scene, fanout=FanOut(workers=1)))
    two = build_synthetic(BuildConfig(out=tmp_path / "two", n=24, scene=scene, fanout=FanOut(workers=2, batch_size=5)))
    assert one == two and dataset(tmp_path / "one") == dataset(tmp_path / "two")
    images = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "images").rglob("*.png"))
    assert images == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "images").rglob("*.png"))
    assert any("_face1" in str(p) for p in images)  # several-face scenes were drawn and cropped by the workers
    for rel in images:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


class Square:
    """A worker for fan_out's own tests: squares numbers, remembers its process, takes its time (so that a
    process started late still gets work)."""

    def __call__(self, items):
        time.sleep(0.25)
        return [(x * x, os.getpid()) for x in items]


def test_fan_out_uses_every_worker_and_returns_each_item_once():
    results = dict(fan_out(Square, list(range(40)), FanOut(workers=2, batch_size=4)))
    assert {x: r[0] for x, r in results.items()} == {x: x * x for x in range(40)}
    assert len({r[1] for r in results.values()}) == 2 and os.getpid() not in {r[1] for r in results.values()}
    assert len({r[1] for r in dict(fan_out(Square, [1, 2], FanOut(workers=1))).values()}) == 1


class Unloadable:
    """A worker whose set-up fails, as one whose model does not load."""

    def __init__(self):
        raise FacellmError("models/face: not a model directory")


def test_a_worker_that_cannot_start_reports_why():
    for fanout in (FanOut(workers=1), FanOut(workers=2, batch_size=1)):
        with pytest.raises(FacellmError, match="^models/face: not a model directory$"):
            list(fan_out(Unloadable, [1, 2, 3], fanout))


def test_bad_settings_and_unreachable_clusters_are_one_line_errors(tmp_path):
    with pytest.raises(FacellmError, match="--workers 0: expected at least 1"):
        FanOut(workers=0)
    start = time.monotonic()
    labels = photo_folder(tmp_path / "folder", 1, matrix=False)
    build = cli_build(tmp_path / "folder", labels, tmp_path / "out", "--ray", "127.0.0.1:9")
    _, stderr = build.communicate(timeout=60)
    assert build.returncode != 0 and time.monotonic() - start < 30
    assert stderr.strip().splitlines()[-1].startswith("facellm: error: --ray 127.0.0.1:9: no Ray cluster answers")
    assert "Traceback" not in stderr


# ----------------------------------------------------------------------------- a real 2-node Ray cluster

@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a second node, one CPU each, as separate processes on this machine; stopped afterwards,
    also when a test fails."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


def test_a_ray_cluster_builds_the_same_dataset(photos, local_reference, ray_cluster, tmp_path):
    root, labels = photos
    finished(cli_build(root, labels, tmp_path / "out", "--ray", ray_cluster))
    assert dataset(tmp_path / "out") == local_reference


def test_a_ray_actor_killed_midway_loses_nothing(photos, local_reference, ray_cluster, tmp_path):
    root, labels = photos
    out = tmp_path / "out"
    build = cli_build(root, labels, out, "--ray", ray_cluster)
    kill_one_worker_midway(build, out / "journal.jsonl", lambda ppid, cmd: cmd.startswith("ray::MapWorker"))
    finished(build)
    assert dataset(out) == local_reference


def test_an_actor_that_cannot_start_reports_why(ray_cluster, tmp_path):
    from serve.caption import CaptionConfig, CaptionWorker

    cfg = CaptionConfig(inputs=[], out=tmp_path / "out.jsonl", model=str(tmp_path), schema=None)  # not a model
    with pytest.raises(FacellmError, match=f"^{tmp_path}: .*model") as error:
        list(fan_out(functools.partial(CaptionWorker, cfg), [tmp_path / "a.jpg"], FanOut(ray=ray_cluster)))
    assert len(str(error.value).splitlines()) == 1


def test_a_cluster_without_the_resources_asked_for_is_a_clear_error(ray_cluster):
    with pytest.raises(FacellmError, match=r"the cluster has 2 CPUs and 0 GPUs; each worker needs 1 CPUs and 1 GPUs"):
        list(fan_out(Square, [1], FanOut(ray=ray_cluster, num_gpus=1)))


def test_a_ray_cluster_captions_like_the_local_workers(ray_cluster, tiny_model_dir, tmp_path):
    """`facellm caption --model DIR --ray ADDRESS`: an engine per actor, the bad-input matrix included; the
    same lines as one local worker."""
    from data_pipeline.build import write_faces

    root = tmp_path / "in"
    root.mkdir()
    bad_images(root)
    write_faces(root / "faces", 6, seed=4)

    def run(out, *flags):
        result = subprocess.run([sys.executable, "-m", "facellm.cli", "caption", str(root), "--out", str(out),
                                 "--model", str(tiny_model_dir), "--engine", "transformers", "--max-tokens", "48",
                                 "--batch-size", "4", *flags], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return sorted(out.read_text().splitlines())

    local = run(tmp_path / "local.jsonl", "--workers", "1")
    assert run(tmp_path / "ray.jsonl", "--ray", ray_cluster) == local
    assert len(local) == len([p for p in root.rglob("*") if p.is_file()])
    assert sum('"error": "image:' in line for line in local) >= 4  # the undecodable files, named, as locally
