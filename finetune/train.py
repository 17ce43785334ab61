"""``facellm train CONFIG.yaml``: PEFT fine-tuning of a VLM on face QA records, with accelerate.

Read top to bottom: load -> choose what trains -> data -> loop -> save.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from facellm.errors import FacellmError
from facellm.evaluation import prompt_messages, question_records, score
from facellm.families import Family
from facellm.generation import GenerationRequest, generate
from facellm.images import load_image
from facellm.modeling import load_model, load_processor, model_family
from facellm.records import load_split
from finetune.collator import ChatCollator, group_by_image
from finetune.config import TrainConfig
from finetune.plots import plot_curves


class TrainingDiverged(FacellmError, RuntimeError):
    pass


def apply_method(model, cfg: TrainConfig, fam: Family):
    """LoRA on the language model (plus fully trained parts as PEFT modules_to_save), or full."""
    if cfg.method == "full":
        for name, p in model.named_parameters():
            if name.startswith(fam.projector + "."):  # tested first: some families nest it in the tower
                p.requires_grad_(cfg.train_projector)
            elif name.startswith(fam.vision_tower + "."):
                p.requires_grad_(cfg.train_vision_tower)
        return model
    from peft import LoraConfig, get_peft_model

    modules_to_save = []
    if cfg.train_vision_tower:
        modules_to_save.append(fam.vision_tower)  # includes the projector where it lives inside the tower
    elif cfg.train_projector:
        modules_to_save.append(fam.projector)
    if cfg.train_embeddings:
        modules_to_save += ["embed_tokens", "lm_head"]
    lora = LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, bias="none",
        target_modules=fam.lora_target_regex(tuple(cfg.lora.projections)),
        modules_to_save=modules_to_save or None,
    )
    return get_peft_model(model, lora)


def validation_accuracy(model, processor, records: list[dict], image_root: Path, batch_size: int = 32) -> dict:
    model.eval()
    answers = []
    for i in range(0, len(records), batch_size):
        chunk = records[i: i + batch_size]
        requests = [GenerationRequest(prompt_messages(r), [load_image(p, image_root) for p in r["images"]],
                                      max_new_tokens=24) for r in chunk]
        answers += [text for text, _, _ in generate(model, processor, requests)]
    model.train()
    return score(records, answers)


class ShuffledBatches(torch.utils.data.IterableDataset):
    """Endless collated batches, reshuffled each epoch from the seed.

    With ``dataloader_workers`` >= 1, collation (image decoding, chat templates,
    processor) runs in worker processes, overlapping the training step; that pays
    where an accelerator computes, not where the same CPU cores do both.
    """

    def __init__(self, chats: list[dict], batch_size: int, seed: int, collator: ChatCollator):
        self.chats, self.batch_size, self.seed, self.collator = chats, batch_size, seed, collator

    def __iter__(self):
        epoch = 0
        while True:
            order = random.Random(self.seed + epoch).sample(self.chats, len(self.chats))
            for i in range(0, len(order) - self.batch_size + 1, self.batch_size):
                yield self.collator(order[i: i + self.batch_size])
            epoch += 1


def _single_threaded_worker(_: int) -> None:
    torch.set_num_threads(1)  # leave the cores to the training process


def train(cfg: TrainConfig) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)

    fam = model_family(cfg.model)
    processor = load_processor(cfg.model)
    model = apply_method(load_model(cfg.model), cfg, fam)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    train_records = load_split(data, "train")
    val_records = question_records(load_split(data, "validation"))[: cfg.eval_samples]
    rng = random.Random(cfg.seed)
    chats = group_by_image(train_records, rng) if cfg.group_by_image else train_records
    if len(chats) < cfg.batch_size:
        raise FacellmError(f"{data}: {len(chats)} training examples, fewer than batch_size {cfg.batch_size}")
    collator = ChatCollator(processor, data, cfg.max_length)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * cfg.max_steps),
                              num_training_steps=cfg.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()

    log: list[dict] = []
    log_file = (out / "log.jsonl").open("w")

    def record(entry: dict) -> None:
        log.append(entry)
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()

    def evaluate(step: int) -> dict:
        result = validation_accuracy(accelerator.unwrap_model(model), processor, val_records, data)
        record({"step": step, "val_accuracy": result["mean_accuracy"],
                "val_per_attribute": {a: v["accuracy"] for a, v in result["attributes"].items()}})
        return result

    record({"step": 0, "config": cfg.to_dict(), "trainable_parameters": trainable, "parameters": total,
            "train_examples": len(chats)})
    bar = tqdm(total=cfg.max_steps, desc="train", unit="step", disable=not accelerator.is_main_process)
    loader = torch.utils.data.DataLoader(
        ShuffledBatches(chats, cfg.batch_size, cfg.seed, collator), batch_size=None,
        num_workers=cfg.dataloader_workers, worker_init_fn=_single_threaded_worker)
    micro = iter(loader)
    window_loss, window_tokens, t0 = 0.0, 0, time.perf_counter()
    for step in range(1, cfg.max_steps + 1):
        for _ in range(cfg.grad_accum):
            batch = next(micro)
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(f"loss became {loss_value} at step {step}; lower learning_rate "
                                           f"(now {cfg.learning_rate}) or use mixed_precision=no")
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            window_loss += loss_value / cfg.grad_accum
            window_tokens += int(batch["attention_mask"].sum())  # real tokens, padding excluded
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            elapsed = time.perf_counter() - t0
            record({"step": step, "loss": window_loss / n, "lr": scheduler.get_last_lr()[0],
                    "tokens_per_s": window_tokens / elapsed})
            bar.set_postfix(loss=f"{window_loss / n:.4f}")
            window_loss, window_tokens, t0 = 0.0, 0, time.perf_counter()
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps and val_records:
            bar.write(f"step {step}: validation accuracy {evaluate(step)['mean_accuracy']:.3f}")
    bar.close()

    final = evaluate(cfg.max_steps) if val_records else None
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(out / "adapter" if cfg.method == "lora" else out / "model", safe_serialization=True)
    if cfg.method == "full":
        processor.save_pretrained(out / "model")
    log_file.close()
    plot_curves(log, out / "curves.png")
    summary = {"output": str(out), "steps": cfg.max_steps, "final_loss": next(r["loss"] for r in reversed(log) if "loss" in r),
               "validation": None if final is None else {a: v["accuracy"] for a, v in final["attributes"].items()},
               "trainable_parameters": trainable}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
