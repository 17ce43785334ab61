"""What training and serving cost at real sizes: tiny, 256M, 1B (and 2B) presets, measured in one run.

    nice -n 10 python benchmarks/sizes.py [--presets tiny-qwen2_vl smolvlm-256m internvl3-1b qwen2-vl-2b] [--steps 3]
        [--batch-size 2] [--no-vllm] [--only training|serving] [--json PATH]

Each preset is written by ``facellm init-model`` (random weights, the published shapes) into a temporary
folder, deleted after. On the same synthetic faces (112x112, four attribute questions per chat), each in a
fresh process (peak memory: how far the run raises the process's RSS above its imports):
  training   facellm's loop, LoRA r16 on the language model (vision tower frozen, as the shipped recipes),
             with and without gradient checkpointing, and full fine-tuning of the language model, against
             ``transformers.Trainer`` on the same model, data, collator and LoRA: real tokens/s, seconds per
             step, peak memory; next to each, the memory ``facellm train --estimate`` predicts for that run
             (finetune/estimate.py), computed first: a run predicted not to fit the RAM available is skipped
             and says so (full fine-tuning at 2B on this machine)
  serving    16-token free-text answers: transformers ``generate`` batched 8 in-process (the baseline) and
             vLLM's offline engine (serve/offline.py, a 4,096-token context), images/s after a warm-up batch
             of other faces (vLLM's prefix cache would answer repeated ones) and the peak RSS of the process tree

Every preset has its published image geometry: SmolVLM's processor resizes every image to 2048 pixels and cuts
16 tiles of 512 plus the whole image (1,088 image tokens a face; a LoRA step of 2 chats takes minutes on 2 CPU
cores); ``--no-split`` turns that off (one 512 tile, 64 image tokens) for a quicker run; InternVL3: one 448
tile, 256 tokens; Qwen2-VL: 112x112 -> 16 tokens.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import facellm  # noqa: E402,F401
from facellm.presets import available_ram  # noqa: E402
from memory import PeakRSS  # noqa: E402

# the shipped recipes' LoRA (r16, alpha 32, dropout 0.05, language model only), over the tiny recipe's file
LORA = ["lora.r=16", "lora.alpha=32", "lora.dropout=0.05", "train_vision_tower=false", "train_projector=false",
        "train_embeddings=false", "learning_rate=1e-4"]
VARIANTS = {  # name -> --set overrides; the Trainer runs the plain LoRA one
    "lora": LORA,
    "lora, gradient checkpointing": LORA + ["gradient_checkpointing=true"],
    "full": LORA + ["method=full"],
}
ANSWER_TOKENS, GENERATE_BATCH = 16, 8
# vLLM's context: a face and a question take at most ~1,400 tokens here, and vLLM sizes its start-up profile run
# and KV cache by the context (a model's own, 32k at InternVL3-1B, is more than a captioning run needs)
VLLM_CONTEXT = 4096


def write_preset(name: str, out: Path, split: bool = True) -> Path:
    from facellm.presets import build_preset, preset

    build_preset(preset(name), out, dtype="float32")
    if split is False and name.startswith("smolvlm"):  # one 512 tile per image (see the docstring)
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(out)
        processor.image_processor.do_image_splitting = False
        processor.save_pretrained(out)  # processor_config.json holds the image processor's settings too
    return out


def train_in_fresh_process(model: Path, data: Path, out: Path, steps: int, batch: int, extra: list[str],
                           trainer: bool) -> dict:
    """One training run (facellm's loop, or the Trainer) in this fresh process: rate, seconds per step and
    peak memory added."""
    import training

    with PeakRSS() as memory:
        if trainer:
            result = training.trainer_run(model, data, out, steps, batch, extra)
        else:
            result = training.facellm_run(model, data, out, steps, batch, False, extra)
    result["peak_mib"] = memory.growth_mib
    result["seconds_per_step"] = result.get("loop_s", result["wall_s"]) / steps
    return result


def estimate_mib(model: Path, data: Path, batch: int, extra: list[str]) -> float:
    """What ``facellm train --estimate`` predicts for that run (the recipe of benchmarks/training.py)."""
    import training
    from finetune.config import TrainConfig
    from finetune.estimate import estimate_recipe

    cfg = TrainConfig.from_yaml(training.RECIPE, [f"model={model}", f"data={data}", f"batch_size={batch}", *extra])
    return estimate_recipe(cfg).peak(cfg.mixed_precision, cfg.gradient_checkpointing) / 2 ** 20


def serve_in_fresh_process(model: Path, faces: list[Path], engine: str) -> dict:
    """Images/s of 16-token answers and the peak RSS of this process and its children (vLLM's engine). The
    first ``GENERATE_BATCH`` faces warm up, untimed: warmed up on the timed faces, vLLM's prefix cache would
    answer them without running the vision tower (as a captioning run, which sees each image once, never is)."""
    from facellm.generation import GenerationRequest, generate
    from facellm.images import load_image
    from facellm.modeling import load_model, load_processor
    from facellm.records import chat
    from serve.caption import FREE_TEXT_PROMPT

    decoded = [load_image(p) for p in faces]
    warmup, images = decoded[:GENERATE_BATCH], decoded[GENERATE_BATCH:]
    with PeakRSS(tree=True) as memory:
        if engine == "generate":
            loaded, processor = load_model(model).eval(), load_processor(model)

            def answer(batch):
                generate(loaded, processor, [GenerationRequest(chat(FREE_TEXT_PROMPT), [image], ANSWER_TOKENS)
                                             for image in batch])
        else:
            from serve.offline import open_engine

            offline = open_engine(model, engine="vllm", max_model_len=VLLM_CONTEXT)

            def answer(batch):
                offline.chat(batch, FREE_TEXT_PROMPT, None, ANSWER_TOKENS)
        answer(warmup)
        start = time.perf_counter()
        for i in range(0, len(images), GENERATE_BATCH):
            answer(images[i:i + GENERATE_BATCH])
        seconds = time.perf_counter() - start
        if engine != "generate":
            offline.close()
    return {"images_per_s": len(images) / seconds, "peak_mib": memory.peak / 2 ** 20}


def fresh(fn, *args):
    """``fn(*args)`` in a fresh spawned process (its peak memory its own), which may start processes of its
    own (vLLM does: a multiprocessing.Pool's daemonic workers may not)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def measure(presets: list[str], steps: int, batch: int, images: int, serve_images: int, with_vllm: bool,
            split: bool = True, stages: tuple[str, ...] = ("training", "serving")) -> dict:
    from data_pipeline.build import BuildConfig, build_synthetic, write_faces
    from data_pipeline.templates import ATTRIBUTES_ONLY

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        build_synthetic(BuildConfig(out=data, n=images, val_size=1, test_size=1, templates=ATTRIBUTES_ONLY))
        faces = write_faces(tmp / "faces", GENERATE_BATCH + serve_images, seed=9)  # a warm-up batch first
        for name in presets:
            model = fresh(write_preset, name, tmp / name, split)
            row = {"parameters": _parameters(model)}
            for i, (variant, extra) in enumerate(VARIANTS.items() if "training" in stages else ()):
                predicted = fresh(estimate_mib, model, data, batch, extra)
                if predicted * 2 ** 20 > available_ram():  # the estimate refuses it, as --estimate would
                    row[variant] = {"estimate_mib": predicted, "skipped": f"needs {predicted / 1024:.1f} GiB, "
                                    f"{available_ram() / 2 ** 30:.1f} GiB available"}
                else:
                    row[variant] = {**fresh(train_in_fresh_process, model, data, tmp / f"{name}-{i}", steps, batch,
                                            extra, False), "estimate_mib": predicted}
                print(f"[{name}] {variant}: {row[variant]}", file=sys.stderr, flush=True)
            if "training" in stages:
                row["trainer"] = row["lora"] if "skipped" in row["lora"] else fresh(
                    train_in_fresh_process, model, data, tmp / f"{name}-trainer", steps, batch, VARIANTS["lora"],
                    True)
            if "serving" in stages:
                row["generate"] = fresh(serve_in_fresh_process, model, faces, "generate")
                if with_vllm:
                    try:
                        row["vllm"] = fresh(serve_in_fresh_process, model, faces, "vllm")
                    except Exception as e:  # noqa: BLE001 - the table says so; the other rows stand
                        row["vllm"] = {"error": str(e).splitlines()[0][:200]}
            print(f"[{name}] {row}", file=sys.stderr, flush=True)
            results[name] = row
            remove_model(model)
    return {"results": results, "steps": steps, "batch": batch, "split": split}


def _parameters(model: Path) -> int:
    from facellm.presets import meta_model, parameter_count
    from transformers import AutoConfig

    return parameter_count(meta_model(AutoConfig.from_pretrained(model)))


def remove_model(model: Path) -> None:
    import shutil

    shutil.rmtree(model)  # 1B: 4 GB in fp32


def report(r: dict) -> str:
    """One line per run: its rate next to its baseline's (the Trainer; batched ``generate``), its peak memory
    next to what ``--estimate`` predicted."""
    lines = ["| preset | parameters | run | rate | vs baseline | s/step | peak MiB | --estimate MiB (/ measured) |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for name, row in r["results"].items():
        head = f"| {name} | {row['parameters'] / 1e6:,.1f} M"
        for run, baseline in (("lora", "trainer"), ("lora, gradient checkpointing", None), ("full", None),
                              ("trainer", None), ("generate", None), ("vllm", "generate")):
            x, base = row.get(run), row.get(baseline) if baseline else None
            label = "Trainer, LoRA" if run == "trainer" else run
            if x is None:  # left out (--only, --no-vllm)
                continue
            if "skipped" in x or "error" in x:
                why = x.get("skipped") or f"failed: {x['error']}"
                lines.append(f"{head} | {label} | {why} | | | | |")
                continue
            unit = "tokens/s" if "tokens_per_s_in_loop" in x else "images/s"
            rate = x.get("tokens_per_s_in_loop") or x["images_per_s"]
            base_rate = base and "skipped" not in base and "error" not in base and (
                base.get("tokens_per_s_in_loop") or base["images_per_s"])
            step = f"{x['seconds_per_step']:.2f}" if "seconds_per_step" in x else ""
            est = (f"{x['estimate_mib']:,.0f} ({x['estimate_mib'] / x['peak_mib']:.2f})"
                   if "estimate_mib" in x else "")
            lines.append(f"{head} | {label} | {rate:,.2f} {unit} | {f'{rate / base_rate:.2f}x' if base_rate else ''} "
                         f"| {step} | {x['peak_mib']:,.0f} | {est} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny-qwen2_vl", "smolvlm-256m", "internvl3-1b"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--images", type=int, default=16, help="synthetic training images (one chat each)")
    parser.add_argument("--serve-images", type=int, default=16)
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--no-split", action="store_true", help="SmolVLM: one 512 tile per image, not 17")
    parser.add_argument("--only", choices=["training", "serving"], help="measure one stage (default: both)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    r = measure(args.presets, args.steps, args.batch_size, args.images, args.serve_images, not args.no_vllm,
                not args.no_split, (args.only,) if args.only else ("training", "serving"))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    print(report(r))


if __name__ == "__main__":
    main()
