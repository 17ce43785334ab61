"""``facellm train CONFIG.yaml``: LoRA / QLoRA / full fine-tuning of a VLM on face QA records, with accelerate.

Read top to bottom: load -> choose what trains -> data (pre-flight, batches) -> loop -> save.
One process or several (``accelerate launch`` / ``torchrun``: data parallel, each rank collates its share
of every batch); the loss is the mean over all answer tokens of the step, whatever the split across ranks
and micro-batches, so a run's curve does not depend on how it is parallelised.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from facellm.atomic import write_text_atomic
from facellm.errors import FacellmError
from facellm.eval.attributes import prompt_messages, question_records, score
from facellm.generation import GenerationRequest, generate
from facellm.host_memory import return_freed_memory
from facellm.images import load_image
from facellm.modeling import load_model, load_processor, model_family
from finetune import checkpoint
from finetune.batches import ShuffledBatches, check_max_length, preflight, training_steps
from finetune.card import write_run_files
from finetune.chat_data import read_chats
from finetune.collator import IGNORE, ChatCollator, group_by_image
from finetune.config import DEFAULT_MAX_STEPS, TrainConfig
from finetune.method import apply_method, quantization_config
from finetune.plots import plot_curves


class TrainingDiverged(FacellmError, RuntimeError):
    pass


def validation_accuracy(model, processor, records: list[dict], image_root: Path, batch_size: int = 32) -> dict:
    model.eval()
    answers = []
    for i in range(0, len(records), batch_size):
        chunk = records[i: i + batch_size]
        requests = [GenerationRequest(prompt_messages(r), [load_image(p, image_root) for p in r["images"]],
                                      max_new_tokens=24) for r in chunk]
        answers += [g.text for g in generate(model, processor, requests)]
    model.train()
    return score(records, answers)


def _data_info(source, val_records: list[dict], out: Path, main: bool) -> dict:
    """What the run reads from its data (log step 0, summary.json): layout, rows, rejects (written to
    OUT/data_rejects.jsonl, one JSON line per skipped row with its reason) and why validation is skipped."""
    info = source.summary()
    if source.layout != "facellm":  # facellm's own records were checked when built
        info["rejects"] = str(out / "data_rejects.jsonl")
        if main:
            write_text_atomic(out / "data_rejects.jsonl", "".join(json.dumps(r) + "\n" for r in source.rejects))
        if not val_records:
            info["validation_note"] = ("validation accuracy skipped: " + (
                "no validation split" if not source.validation else
                "its rows carry no facellm labels (category, labels) to score"))
    if main:
        skipped = f"{info['rejected']} skipped" + (f" (reasons in {info['rejects']})" if info["rejected"] else "")
        print(f"data: {info['layout']} {info['path']}: {info['rows']} rows, {info['train_rows']} train and "
              f"{info['validation_rows']} validation used, {skipped}"
              + (f"; {info['validation_note']}" if "validation_note" in info else ""), flush=True)
    return info


def answer_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over answer tokens (the caller divides by the step's token count). The
    labels shift, not the logits: a slice of the logits would be copied whole (0.4 GB at 1B, 2 chats)."""
    following = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # each position's next token; none after the last
    return F.cross_entropy(logits.float().flatten(0, 1), following.flatten(), ignore_index=IGNORE, reduction="sum")


def _single_threaded_worker(_: int) -> None:
    torch.set_num_threads(1)  # leave the cores to the training process


def _accelerator(cfg: TrainConfig, out: Path):
    from accelerate import Accelerator

    for tracker, package in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
        if tracker in cfg.report_to:
            try:
                __import__(package)
            except ImportError:
                raise FacellmError(f"report_to {tracker} needs `pip install {package}`") from None
    # cpu=True where there is no GPU: accelerate then joins a multi-process CPU launch (torchrun, gloo)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, log_with=cfg.report_to or None,
                              project_dir=str(out), cpu=not torch.cuda.is_available())
    _fsdp_on_cpu(accelerator)
    return accelerator


def _fsdp_on_cpu(accelerator) -> None:
    """Honour an FSDP launch (``accelerate launch --config_file .../fsdp.yaml``) on CPU processes (gloo).

    accelerate (1.16) makes the run FSDP only on accelerator devices: ``AcceleratorState`` promotes
    MULTI_GPU/XPU/... to FSDP when the launch sets ACCELERATE_USE_FSDP, never MULTI_CPU, so on CPU the FSDP
    config is dropped without a word and the run is plain DDP. torch's FSDP2 (``fully_shard``) does run on
    CPU with gloo, so give the state the plugin the launch asked for (read from its FSDP_* variables).
    """
    import os

    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true"
            or accelerator.distributed_type != DistributedType.MULTI_CPU):
        return
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise FacellmError("FSDP on CPU processes needs fsdp_version: 2 (FSDP1 shards CUDA devices only)")
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as AcceleratorState does on GPUs


def _hf_model(model):
    """The transformers model inside a PEFT model (the one whose ``generate`` runs)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def _unsharded_root(model):
    """FSDP2: generate() calls the inner model, not the wrapped root, so the root's own hooks never gather
    its parameters (embeddings, head, norms: those outside any transformer block); gather them around it."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    from accelerate.utils import DistributedType, set_seed
    from transformers import get_scheduler

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    accelerator = _accelerator(cfg, out)
    if accelerator.device.type == "cpu":
        return_freed_memory()  # freed activations go back to the OS (facellm/host_memory.py)
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process  # the one process that reads and writes the run's files
    # the data, in any layout finetune.chat_data reads, before the model: a bad path fails at once
    source = read_chats(cfg.data, cfg.image_folder, cfg.data_name)
    image_root, train_records = source.image_root, source.train  # facellm: DIR; else absolute paths, bytes
    val_records = question_records(source.validation)[: cfg.eval_samples]
    data_info = _data_info(source, val_records, out, main)

    # --- model, and what trains
    fam = model_family(cfg.model)
    processor = load_processor(cfg.model, cfg.min_pixels, cfg.max_pixels)
    model = apply_method(load_model(cfg.model, quantization=quantization_config(cfg)), cfg, fam)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    # --- data: one chat per image, measured before the first step
    chats = group_by_image(train_records, random.Random(cfg.seed)) if cfg.group_by_image else train_records
    if len(chats) < cfg.batch_size:
        raise FacellmError(f"{cfg.data}: {len(chats)} training examples, fewer than batch_size {cfg.batch_size}")
    collator = ChatCollator(processor, image_root, family=fam)
    preflight_start = time.perf_counter()
    report = preflight(chats, collator, image_root)
    preflight_s = time.perf_counter() - preflight_start
    check_max_length(report, chats, cfg.max_length)
    chats_per_step = cfg.batch_size * cfg.grad_accum
    steps = training_steps(cfg.max_steps, cfg.epochs, len(chats), chats_per_step, DEFAULT_MAX_STEPS)
    epochs = round(steps * chats_per_step / len(chats), 3)  # what the run trains, whichever setting chose it

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * steps),
                              num_training_steps=steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # FSDP replaces the parameters with sharded ones (the optimizer is given them): clip those
    params = [p for p in model.parameters() if p.requires_grad]
    sharded = accelerator.distributed_type == DistributedType.FSDP
    if sharded:  # transformers' signal to generate in step on every rank (synced_gpus): each forward gathers
        _hf_model(accelerator.unwrap_model(model))._is_fsdp_managed_module = True
    accelerator.register_for_checkpointing(scheduler)  # stepped once per step, whatever the world size
    start = 0
    if resume:
        path, start = checkpoint.latest(out)
        accelerator.load_state(str(path))
    model.train()

    # --- logging: log.jsonl (kept up to the resumed step), trackers, progress bar
    kept = main and resume and (out / "log.jsonl").is_file()
    log: list[dict] = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()
                       if json.loads(line)["step"] <= start] if kept else []
    log_file = (out / "log.jsonl").open("w") if main else None
    for entry in log:
        log_file.write(json.dumps(entry) + "\n")
    if cfg.report_to:
        accelerator.init_trackers("facellm", config={k: str(v) for k, v in cfg.to_dict().items()})

    def record(entry: dict) -> None:
        log.append(entry)
        if main:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
        if cfg.report_to:
            accelerator.log({k: v for k, v in entry.items() if isinstance(v, (int, float))}, step=entry["step"])

    def evaluate(step: int) -> dict | None:
        result = None
        if sharded:  # every rank holds a shard of the weights: all generate the same answers together
            with _unsharded_root(model):
                result = validation_accuracy(accelerator.unwrap_model(model), processor, val_records, image_root)
        elif main:
            result = validation_accuracy(accelerator.unwrap_model(model), processor, val_records, image_root)
        if main:
            record({"step": step, "val_accuracy": result["mean_accuracy"],
                    "val_per_attribute": {a: v["accuracy"] for a, v in result["attributes"].items()}})
        accelerator.wait_for_everyone()
        return result if main else None

    if not resume:
        record({"step": 0, "config": cfg.to_dict(), "trainable_parameters": trainable, "parameters": total,
                "train_examples": len(chats), "world_size": world,
                "distributed_type": accelerator.distributed_type.value, "steps": steps,
                "epochs": epochs, "data": data_info,
                "preflight": {**report.summary(chats), "seconds": round(preflight_s, 3)}})
    batches = ShuffledBatches(chats, cfg.batch_size, cfg.seed, collator,
                              report.lengths if cfg.group_by_length else None, start * cfg.grad_accum, rank, world,
                              cfg.grad_accum)
    micro = iter(torch.utils.data.DataLoader(batches, batch_size=None, num_workers=cfg.dataloader_workers,
                                             worker_init_fn=_single_threaded_worker))
    bar = tqdm(total=steps, initial=start, desc="train", unit="step", disable=not main)
    window_loss, window_tokens, t0 = 0.0, 0, time.perf_counter()
    for step in range(start + 1, steps + 1):
        step_loss = 0.0
        for k in range(cfg.grad_accum):  # one micro-batch in memory at a time
            batch = next(micro).to(accelerator.device)  # collated on the CPU, the model's device on a GPU
            answer_tokens = batch.pop("step_answer_tokens").item()  # the whole step's, every rank's
            labels = batch.pop("labels")  # not the model's: its own loss would be unused work
            sync = k == cfg.grad_accum - 1  # all-reduce gradients once per step
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                loss = answer_token_loss(model(**batch).logits, labels) / answer_tokens
                accelerator.backward(loss * world)  # DDP averages over ranks; the step wants their sum
            step_loss += loss.item()
            window_tokens += int(batch["attention_mask"].sum()) * world  # real tokens
            del batch, labels, loss  # before the next micro-batch arrives
        step_loss = accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "sum").item()
        if not math.isfinite(step_loss):
            raise TrainingDiverged(f"loss became {step_loss} at step {step}; lower learning_rate "
                                   f"(now {cfg.learning_rate}) or use mixed_precision=no")
        if cfg.max_grad_norm:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        window_loss += step_loss
        bar.update(1)
        if step % cfg.log_every == 0 or step == steps:
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            record({"step": step, "loss": window_loss / n, "lr": scheduler.get_last_lr()[0],
                    "real_tokens": window_tokens, "tokens_per_s": window_tokens / (time.perf_counter() - t0)})
            bar.set_postfix(loss=f"{window_loss / n:.4f}")
            window_loss, window_tokens, t0 = 0.0, 0, time.perf_counter()
        if cfg.eval_every and step % cfg.eval_every == 0 and step < steps and val_records:
            if (result := evaluate(step)) is not None:
                bar.write(f"step {step}: validation accuracy {result['mean_accuracy']:.3f}")
        if cfg.save_every and step % cfg.save_every == 0 and step < steps:
            checkpoint.save(accelerator, out, step, cfg.keep_checkpoints)
    bar.close()

    # --- save: adapter (or full model), run files, curves
    final = evaluate(steps) if val_records else None
    state = accelerator.get_state_dict(model)  # every rank: FSDP gathers the full weights on rank 0
    summary = None
    if main:
        saved = out / ("model" if cfg.method == "full" else "adapter")
        accelerator.unwrap_model(model).save_pretrained(saved, state_dict=state, safe_serialization=True)
        if cfg.method == "full":
            processor.save_pretrained(saved)
        log_file.close()
        plot_curves(log, out / "curves.png")
        summary = {"output": str(out), "steps": steps,
                   "epochs": epochs, "train_examples": len(chats), "data": data_info,
                   "final_loss": next(r["loss"] for r in reversed(log) if "loss" in r),
                   "validation": None if final is None else {a: v["accuracy"] for a, v in final["attributes"].items()},
                   "trainable_parameters": trainable, "world_size": world,
                   "distributed_type": accelerator.distributed_type.value,  # NO, MULTI_CPU, MULTI_GPU, FSDP, ...
                   "longest_tokens": report.longest()}  # serving sizes its context from this
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
        write_run_files(saved, cfg, summary, fam, source.fingerprint)
    if cfg.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return summary
