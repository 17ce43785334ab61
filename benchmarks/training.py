"""Training throughput: facellm's loop next to a plain ``transformers.Trainer`` on the same model and data.

    python benchmarks/training.py [--steps 40] [--batch-size 16]

Both train the same tiny Qwen2-VL with the same LoRA (plus the trained vision tower and embeddings of the
tiny recipe) on the same synthetic chats, collated by the same collator, one after the other in this
process, after an untimed warm-up run. Reported: real (non-padding) tokens per second, padding share and
the memory each adds (in a fresh process), for facellm with and without length-grouped batches and with
gradient checkpointing, and for the Trainer (random batches, its own loop); a profile of facellm's step;
and facellm's loop at 1x and 8x the steps. facellm renders every chat's template once, in the pre-flight
before its loop, and reuses that each epoch; the Trainer's collator does that work in its loop, so the
figures also give facellm's rate with the pre-flight's seconds added to its loop.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import tempfile
import time
from pathlib import Path

import facellm  # noqa: F401
import torch
from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.templates import ATTRIBUTES_ONLY
from facellm.families import family
from facellm.tiny_models.qwen import build_tiny_qwen2_vl
from facellm.modeling import load_model, load_processor, model_family
from facellm.records import load_split
from finetune.batches import ShuffledBatches, preflight
from finetune.collator import ChatCollator, group_by_image
from finetune.config import TrainConfig
from finetune.method import apply_method
from finetune.train import train

RECIPE = "finetune/configs/tiny-synthetic.yaml"


def facellm_run(model, data, out, steps, batch, grouped, extra: list[str] = ()) -> dict:
    cfg = TrainConfig.from_yaml(RECIPE, [f"model={model}", f"data={data}", f"output={out}", f"max_steps={steps}",
                                         f"batch_size={batch}", "eval_samples=0", f"log_every={steps}",
                                         f"group_by_length={str(grouped).lower()}", *extra])
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    window = next(r for r in reversed(log) if "tokens_per_s" in r)  # log_every=steps: one window, the whole loop
    loop_s = window["real_tokens"] / window["tokens_per_s"]
    preflight_s = log[0]["preflight"]["seconds"]  # measures and renders every chat once, before the loop
    return {"tokens_per_s_in_loop": window["tokens_per_s"], "loop_s": loop_s, "preflight_s": preflight_s,
            "tokens_per_s_with_preflight": window["real_tokens"] / (loop_s + preflight_s), "wall_s": seconds}


class CountingCollator:
    """The Trainer gets facellm's collator; this counts the real and padded tokens of each batch it hands over.
    The Trainer's loader collates one batch ahead of the step it is on, so only the first ``steps`` trained."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, chats):
        batch = self.collator(chats)
        self.batches.append((int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
        return batch

    def tokens(self, steps: int) -> tuple[int, int]:
        """(real, padded) tokens of the first ``steps`` batches."""
        trained = self.batches[:steps]
        return sum(real for real, _ in trained), sum(padded for _, padded in trained)


def trainer_run(model_dir, data, out, steps, batch, extra: list[str] = ()) -> dict:
    from transformers import Trainer, TrainingArguments

    cfg = TrainConfig.from_yaml(RECIPE, [f"model={model_dir}", f"data={data}", *extra])
    chats = group_by_image(load_split(data, "train"), random.Random(0))
    fam = model_family(model_dir)
    collator = CountingCollator(ChatCollator(load_processor(model_dir), data, family=fam))
    model = apply_method(load_model(model_dir), cfg, fam)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20),
                             logging_steps=steps, save_strategy="no", report_to=[], remove_unused_columns=False,
                             dataloader_num_workers=0, use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=chats, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    real, padded = collator.tokens(steps)
    return {"tokens_per_s_in_loop": real / seconds, "wall_s": seconds, "padding_share": 1 - real / padded}


def padding_share(data, model_dir, batch, grouped) -> float:
    """Share of padding in facellm's batches (one epoch's worth of batch layouts, no training)."""
    chats = group_by_image(load_split(data, "train"), random.Random(0))
    collator = ChatCollator(load_processor(model_dir), data)
    lengths = preflight(chats, collator, data).lengths
    stream = ShuffledBatches(chats, batch, 0, collator, lengths if grouped else None)
    real = padded = 0
    for batch_ids in stream.epoch_batches(0):
        sizes = [lengths[i] for i in batch_ids]
        real, padded = real + sum(sizes), padded + max(sizes) * len(sizes)
    return 1 - real / padded


def peak_memory_added_mib(model, data, out, batch, variant, steps: int = 6, trainer_extra: list[str] = ()) -> float:
    """How far ``steps`` training steps of ``variant`` (None: the Trainer, with ``trainer_extra`` settings)
    raise this fresh process's resident memory above what its imports hold: model, optimizer state,
    activations, batches."""
    from memory import PeakRSS

    torch.manual_seed(0)
    with PeakRSS() as memory:
        if variant is None:
            trainer_run(model, data, out, steps, batch, trainer_extra)
        else:
            facellm_run(model, data, out, steps, batch, *variant)
    return memory.growth_mib


def step_profile(model_dir, data, steps: int, batch: int) -> dict:
    """Where a training step's time goes (facellm's step, by hand: collate, forward, backward, optimizer)."""
    cfg = TrainConfig.from_yaml(RECIPE, [f"model={model_dir}", f"data={data}"])
    chats = group_by_image(load_split(data, "train"), random.Random(0))
    collator = ChatCollator(load_processor(model_dir), data)
    preflight(chats, collator, data)  # as in training: the chat template work is done before the loop
    model = apply_method(load_model(model_dir), cfg, family("qwen2_vl"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    parts = dict.fromkeys(("collate", "forward", "backward", "optimizer"), 0.0)
    for step in range(steps + 2):  # two warm-up steps
        t = [time.perf_counter()]
        inputs = collator([chats[(step * batch + j) % len(chats)] for j in range(batch)])
        t.append(time.perf_counter())
        loss = model(**inputs).loss
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad()
        t.append(time.perf_counter())
        if step >= 2:
            for name, a, b in zip(parts, t, t[1:]):
                parts[name] += b - a
    total = sum(parts.values())
    return {name: seconds / total for name, seconds in parts.items()}


def measure(steps: int = 40, batch: int = 16, images: int = 640, scaling_steps: int = 20) -> dict:
    """Real tokens/s and peak memory: facellm (length-grouped; random batches; with gradient checkpointing)
    and the Trainer; the step profile; and facellm at ``scaling_steps`` and 8x that for the scaling check."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, model = tmp / "data", tmp / "model"
        build_synthetic(BuildConfig(out=data, n=images, val_size=1, test_size=1, templates=ATTRIBUTES_ONLY))
        build_tiny_qwen2_vl(model)
        # untimed: the first training in a process pays one-off costs (oneDNN kernels, allocator growth)
        # that once cost the loop measured first a quarter of its speed
        facellm_run(model, data, tmp / "warmup", 10, batch, False)
        variants = {"facellm (length-grouped)": (True, []), "facellm (random batches)": (False, []),
                    "facellm (length-grouped, gradient checkpointing)": (True, ["gradient_checkpointing=true"]),
                    "transformers.Trainer": None}
        results = {name: facellm_run(model, data, tmp / f"v{i}", steps, batch, *v) if v
                   else trainer_run(model, data, tmp / f"v{i}", steps, batch)
                   for i, (name, v) in enumerate(variants.items())}
        # peak memory: each variant alone in a fresh process (freed memory is not returned to the OS, so
        # within one process a later run would look free); a few steps reach the steady state
        spawn = multiprocessing.get_context("spawn")
        for i, (name, v) in enumerate(variants.items()):
            with spawn.Pool(1) as pool:
                results[name]["peak_memory_added_mib"] = pool.apply(peak_memory_added_mib,
                                                                    (model, data, tmp / f"m{i}", batch, v))
        for name, grouped in (("facellm (length-grouped)", True), ("facellm (random batches)", False),
                              ("facellm (length-grouped, gradient checkpointing)", True)):
            results[name]["padding_share"] = padding_share(data, model, batch, grouped)
        scaling = {n: facellm_run(model, data, tmp / f"s{n}", n, batch, True)["loop_s"]
                   for n in (scaling_steps, 8 * scaling_steps)}
        profile = step_profile(model, data, 8, batch)
    return {"results": results, "scaling_s": scaling, "profile": profile, "steps": steps, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=640)
    args = parser.parse_args()
    r = measure(args.steps, args.batch_size, args.images)
    base = r["results"]["transformers.Trainer"]["tokens_per_s_in_loop"]
    print("| loop | real tokens/s | padding | peak memory added MiB | ratio vs Trainer |\n|---|---:|---:|---:|---:|")
    for name, x in r["results"].items():
        print(f"| {name} | {x['tokens_per_s_in_loop']:.0f} | {x['padding_share']:.1%} | "
              f"{x['peak_memory_added_mib']:.0f} | "
              f"{x['tokens_per_s_in_loop'] / base:.2f} |")
    grouped = r["results"]["facellm (length-grouped)"]
    print(f"facellm (length-grouped) with its {grouped['preflight_s']:.1f} s pre-flight counted: "
          f"{grouped['tokens_per_s_with_preflight']:.0f} tokens/s, "
          f"{grouped['tokens_per_s_with_preflight'] / base:.2f}x the Trainer")
    print("step profile:", ", ".join(f"{k} {v:.1%}" for k, v in r["profile"].items()))


if __name__ == "__main__":
    main()
