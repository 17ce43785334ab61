"""GPU figures for the real-size presets: LoRA training in bf16 (tokens/s, MFU against the GPU's peak, peak
memory, facellm's loop vs ``transformers.Trainer``) and batched ``generate``, in one run.

    python benchmarks/gpu.py [--presets internvl3-1b qwen2-vl-2b] [--steps 20] [--batch-size 8] [--json PATH]
    python benchmarks/gpu.py --presets tiny-qwen2_vl --steps 2 --peak-tflops 1   # the same path on a CPU

Each preset (``facellm init-model``: random weights, the published shapes) is trained with the shipped recipes'
LoRA (r16 on the language model, vision tower frozen) in bf16 autocast, gradient checkpointing off, on the
synthetic faces, each run in a fresh process; then answers 16 tokens per image with ``generate`` batched 8.
MFU = 4 x language-model parameters x real tokens/s / the GPU's dense bf16 peak: LoRA's forward and backward
through frozen weights (no weight gradients), the vision tower and attention scores left out, so a lower
bound. Peak memory: ``torch.cuda.max_memory_allocated`` (RSS growth on a CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import facellm  # noqa: E402,F401
import sizes  # noqa: E402

# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets; SXM parts)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
BF16_LORA = sizes.LORA + ["mixed_precision=bf16"]


def gpu_peak_tflops() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "CPU (no CUDA device)", None
    name = torch.cuda.get_device_name(0)
    return name, next((tflops for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def language_parameters(model: Path) -> int:
    from facellm.modeling import model_family
    from facellm.presets import meta_model
    from transformers import AutoConfig

    prefix = model_family(model).language_model + "."
    return sum(p.numel() for name, p in meta_model(AutoConfig.from_pretrained(model)).named_parameters()
               if name.startswith(prefix))


def train_run(model: Path, data: Path, out: Path, steps: int, batch: int, trainer: bool) -> dict:
    """One bf16 LoRA run in this fresh process; peak memory from CUDA's allocator (RSS growth on a CPU)."""
    import torch

    if not torch.cuda.is_available():
        return sizes.train_in_fresh_process(model, data, out, steps, batch, BF16_LORA, trainer)
    import training

    torch.cuda.reset_peak_memory_stats()
    run = training.trainer_run if trainer else training.facellm_run
    result = run(model, data, out, steps, batch, BF16_LORA) if trainer else run(model, data, out, steps, batch,
                                                                                 False, BF16_LORA)
    result["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def measure(presets: list[str], steps: int, batch: int, images: int, peak_tflops: float | None) -> dict:
    from data_pipeline.build import BuildConfig, build_synthetic, write_faces
    from data_pipeline.templates import ATTRIBUTES_ONLY

    device, known_peak = gpu_peak_tflops()
    peak = peak_tflops or known_peak
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        build_synthetic(BuildConfig(out=data, n=images, val_size=1, test_size=1, templates=ATTRIBUTES_ONLY))
        faces = write_faces(tmp / "faces", sizes.GENERATE_BATCH + images, seed=9)  # a warm-up batch first
        for name in presets:
            model = sizes.fresh(sizes.write_preset, name, tmp / name)
            row = {"language_parameters": language_parameters(model),
                   "facellm": sizes.fresh(train_run, model, data, tmp / f"{name}-facellm", steps, batch, False),
                   "trainer": sizes.fresh(train_run, model, data, tmp / f"{name}-trainer", steps, batch, True),
                   "generate": sizes.fresh(sizes.serve_in_fresh_process, model, faces, "generate")}
            for loop in ("facellm", "trainer"):
                flops = 4 * row["language_parameters"] * row[loop]["tokens_per_s_in_loop"]
                row[loop]["mfu"] = flops / (peak * 1e12) if peak else None
            print(f"[{name}] {row}", file=sys.stderr, flush=True)
            results[name] = row
            sizes.remove_model(model)
    return {"device": device, "peak_tflops": peak, "steps": steps, "batch": batch, "results": results}


def report(r: dict) -> str:
    mfu = lambda x: f"{x['mfu']:.1%}" if x["mfu"] is not None else "n/a"  # noqa: E731
    lines = [f"device: {r['device']}, bf16 peak {r['peak_tflops'] or 'unknown'} TFLOP/s; {r['steps']} steps of "
             f"{r['batch']}",
             "| preset | facellm LoRA tokens/s (MFU) | Trainer tokens/s (MFU) | facellm vs Trainer | peak MiB "
             "facellm / Trainer | generate images/s |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in r["results"].items():
        f, t = row["facellm"], row["trainer"]
        lines.append(f"| {name} | {f['tokens_per_s_in_loop']:.0f} ({mfu(f)}) | {t['tokens_per_s_in_loop']:.0f} "
                     f"({mfu(t)}) | {f['tokens_per_s_in_loop'] / t['tokens_per_s_in_loop']:.2f}x | "
                     f"{f['peak_mib']:.0f} / {t['peak_mib']:.0f} | {row['generate']['images_per_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["internvl3-1b", "qwen2-vl-2b"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=64, help="synthetic training images; also answered")
    parser.add_argument("--peak-tflops", type=float, help="the device's bf16 peak, where the table lacks it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    r = measure(args.presets, args.steps, args.batch_size, args.images, args.peak_tflops)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    print(report(r))


if __name__ == "__main__":
    main()
