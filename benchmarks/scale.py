"""Scale-out: the data build and batch captioning on 1 and 2 worker processes and on a 2-node Ray cluster
started on this machine, each next to its limit or strongest baseline, in one run.

    python benchmarks/scale.py [--images 600] [--caption-images 256] [--no-ray] [--no-vllm] [--json PATH]

data build (the per-image stage ``--workers`` spreads: decode, detection, 468-point mesh, cues, crop, JPEG +
landmarks write, journal), on the same photos:
  limit      decode + detection + mesh alone, in this process, one core: what one worker can reach
  workers 1  ``fan_out`` over 1 worker (the build's own path, data_pipeline.ingest)
  workers 2  ... over 2 worker processes: target 1.7x workers 1, each worker >= 0.8 of the limit
  ray        ... as Ray Data actors on a 2-node cluster (one CPU per node): target 0.85x workers 2
  whole      ``ingest()`` end to end (also templates, validation, exports: one process) at 1 and 2 workers,
             start-up included
captioning without HTTP (``run_captioning`` with no endpoint, i.e. ``facellm caption --model DIR``: the engine
inside the workers, 16 images per call, 64 for vLLM, output JSONL) against transformers ``generate`` batched 16 in-process
(all cores) on the same tiny Qwen2-VL, images, prompt and token budget (16 new tokens, free text, greedy);
also on the Ray cluster and with vLLM's offline engine.
Rates are once started: images/s over the second half of each job's results (by then every worker is up);
what a job pays once (processes, imports, model and engine loads) shows as the seconds to its first result.
Peak RSS: this process, and the largest worker process (``RUSAGE_CHILDREN``).
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import skimage.data  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from data_pipeline.ingest import Ingest, IngestConfig, ingest  # noqa: E402
from data_pipeline.sources import read_folder  # noqa: E402
from facellm.faces import FaceAnalyzer  # noqa: E402
from facellm.images import load_image  # noqa: E402
from facellm.parallel import FanOut, fan_out  # noqa: E402

CAPTION_TOKENS = 16


def photos(root: Path, count: int) -> Path:
    """``count`` astronaut photos of varied sizes and sides; the labels CSV."""
    astronaut = Image.fromarray(skimage.data.astronaut())
    root.mkdir(parents=True)
    for i in range(count):
        image = ImageOps.mirror(astronaut) if i % 2 else astronaut
        image.resize((384 + 16 * (i % 9),) * 2).save(root / f"{i}.jpg", quality=90)
    labels = root.parent / "labels.csv"
    labels.write_text("file,gender\n" + "".join(f"{i}.jpg,female\n" for i in range(count)))
    return labels


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def once_started(results, n: int) -> tuple[float, float]:
    """(images/s over the second half of a job's ``n`` results, seconds until its first result): by halfway
    every worker is up, so the rate is the running one, with what a job pays once (processes, imports, model
    and engine loads) reported apart."""
    start = time.perf_counter()
    arrived = [time.perf_counter() for _ in results]
    assert len(arrived) == n, (len(arrived), n)
    half = n // 2
    return (n - half) / (arrived[-1] - arrived[half - 1]), arrived[0] - start


def data_build(images: int, ray_address: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels = photos(tmp / "photos", images)
        items = list(read_folder(tmp / "photos", labels))
        analyzer = FaceAnalyzer()
        analyzer.analyze(load_image(items[0].image))  # warm-up
        limit_s, _ = timed(lambda: [analyzer.analyze(load_image(item.image)) for item in items])
        result = {"images": images, "limit_images_per_s": images / limit_s}
        for name, fanout in (("workers1", FanOut(workers=1)), ("workers2", FanOut(workers=2)),
                             *([("ray", FanOut(ray=ray_address))] if ray_address else [])):
            cfg = IngestConfig(source="folder", root=tmp / "photos", out=tmp / name, labels=labels)
            results = (entry for _, entry in fan_out(functools.partial(Ingest, cfg), items, fanout) if entry["faces"])
            result[f"{name}_images_per_s"], result[f"{name}_first_s"] = once_started(results, images)
            if name == "workers2":
                result["worker_peak_rss_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
        for workers in (1, 2):
            cfg = IngestConfig(source="folder", root=tmp / "photos", out=tmp / f"whole{workers}", labels=labels,
                               fanout=FanOut(workers=workers))
            seconds, _ = timed(ingest, cfg)
            result[f"whole{workers}_images_per_s"] = images / seconds
        result["driver_peak_rss_mb"] = peak_rss_mb()
    return result


def captioning(images: int, ray_address: str | None, with_vllm: bool) -> dict:
    """Free-text captions of ``CAPTION_TOKENS`` tokens (the issue's measurement), greedy, the CLI's batch sizes. The
    caption workers are timed through ``fan_out`` (the path ``run_captioning`` takes, less its JSONL writes,
    which a whole job adds: ``job_images_per_s``)."""
    import facellm  # noqa: F401  (patches torchvision before transformers is imported)
    from data_pipeline.build import write_faces
    from facellm.generation import GenerationRequest, generate
    from facellm.modeling import load_model, load_processor
    from facellm.records import chat
    from facellm.tiny_models.qwen import build_tiny_qwen2_vl
    from serve.caption import BATCH_SIZE, FREE_TEXT_PROMPT, CaptionConfig, CaptionWorker, run_captioning

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_tiny_qwen2_vl(tmp / "model")
        paths = write_faces(tmp / "faces", images, seed=9)
        model, processor = load_model(tmp / "model").eval(), load_processor(tmp / "model")

        def batched_generate():
            for i in range(0, images, 16):
                answers = generate(model, processor, [GenerationRequest(chat(FREE_TEXT_PROMPT), [load_image(p)],
                                                                        CAPTION_TOKENS) for p in paths[i:i + 16]])
                yield from answers

        list(batched_generate())  # warm-up
        result = {"images": images, "tokens": CAPTION_TOKENS}
        result["generate_images_per_s"], _ = once_started(batched_generate(), images)
        del model

        def config(engine: str, fanout: FanOut, out: str) -> CaptionConfig:
            return CaptionConfig(inputs=[str(tmp / "faces")], out=tmp / out, model=str(tmp / "model"), schema=None,
                                 prompt=FREE_TEXT_PROMPT, max_tokens=CAPTION_TOKENS, engine=engine, fanout=fanout)

        runs = [("workers1", "transformers", FanOut(workers=1)), ("workers2", "transformers", FanOut(workers=2)),
                *([("ray", "transformers", FanOut(ray=ray_address))] if ray_address else []),
                *([("vllm", "vllm", FanOut(workers=1, batch_size=BATCH_SIZE["vllm"]))] if with_vllm else [])]
        for name, engine, fanout in runs:
            cfg = config(engine, fanout, f"{name}.jsonl")
            lines = (line for _, lines in fan_out(functools.partial(CaptionWorker, cfg), paths, fanout) for line in lines)
            result[f"{name}_images_per_s"], result[f"{name}_first_s"] = once_started(lines, images)
        seconds, summary = timed(run_captioning, config("transformers", FanOut(), "job.jsonl"))
        assert summary["captioned"] == images, summary
        result["job_images_per_s"] = images / seconds
    return result


def report(data: dict, caption: dict | None) -> str:
    w1, w2, limit = data["workers1_images_per_s"], data["workers2_images_per_s"], data["limit_images_per_s"]
    rows = [("data build, per-image stage", "2 workers vs 1", w2, w1, "1.7"),
            ("data build, per-image stage", "each of 2 workers vs the limit", w2 / 2, limit, "0.8"),
            ("data build, whole build", "2 workers vs 1 (start-up included)", data["whole2_images_per_s"],
             data["whole1_images_per_s"], "")]
    if "ray_images_per_s" in data:
        rows.append(("data build, per-image stage", "2-node Ray vs 2 local workers", data["ray_images_per_s"], w2,
                     "0.85"))
    if caption:
        base = caption["generate_images_per_s"]
        for name, what, target in (("workers1", "1 worker", "1.0"), ("workers2", "2 workers", "1.0"),
                                   ("ray", "2-node Ray", ""), ("vllm", "vLLM offline, 1 engine", "")):
            if f"{name}_images_per_s" in caption:
                rows.append(("captioning without HTTP", f"{what} vs batched generate", caption[f"{name}_images_per_s"],
                             base, target))
    lines = ["| stage | comparison | facellm img/s | baseline img/s | ratio | target |", "|---|---|---|---|---|---|"]
    lines += [f"| {stage} | {what} | {a:.1f} | {b:.1f} | **{a / b:.2f}** | {target and '>= ' + target} |"
              for stage, what, a, b, target in rows]
    starts = {f"{part} {name}": f"{figures[name]:.1f} s" for part, figures in (("data", data), ("caption", caption or {}))
              for name in figures if name.endswith("_first_s")}
    lines.append("\nimages/s over the second half of each job (every worker up); seconds to the first result: "
                 + ", ".join(f"{k.removesuffix('_first_s')} {v}" for k, v in starts.items()))
    if caption:
        lines.append(f"a whole `facellm caption --model DIR` job (default workers, start-up and JSONL included): "
                     f"{caption['job_images_per_s']:.1f} images/s")
    lines.append(f"data: N = {data['images']} photos (384-512 px); peak RSS: driver {data['driver_peak_rss_mb']:.0f} MB, "
                 f"largest worker process {data['worker_peak_rss_mb']:.0f} MB"
                 + (f"; captions: N = {caption['images']} faces, {caption['tokens']} new tokens" if caption else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--caption-images", type=int, default=256)
    parser.add_argument("--no-ray", action="store_true", help="skip the 2-node Ray cluster")
    parser.add_argument("--no-vllm", action="store_true", help="skip vLLM's offline engine")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cluster = None
    if not args.no_ray:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    try:
        data = data_build(args.images, cluster and cluster.address)
        caption = captioning(args.caption_images, cluster and cluster.address, not args.no_vllm)
    finally:
        if cluster:
            cluster.shutdown()
    print(report(data, caption))
    if args.json:
        args.json.write_text(json.dumps({"data": data, "caption": caption}, indent=2))


if __name__ == "__main__":
    main()
