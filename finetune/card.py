"""What travels with a trained adapter or model: the training config, the dataset's fingerprint, the
metrics (``facellm_train.json``) and a model card (``README.md``)."""

from __future__ import annotations

import json
from pathlib import Path

from facellm.atomic import write_text_atomic
from facellm.families import Family
from finetune.config import TrainConfig


def model_card(cfg: TrainConfig, summary: dict, fam: Family, base: str) -> str:
    validation = summary.get("validation") or {}
    rows = "\n".join(f"| {a} | {v:.3f} |" for a, v in sorted(validation.items())) or "| (no validation split) | |"
    method = cfg.method if cfg.method == "full" else (
        f"{cfg.method} r={cfg.lora.r} alpha={cfg.lora.alpha} dropout={cfg.lora.dropout}"
        + (" rsLoRA" if cfg.lora.use_rslora else "") + (" DoRA" if cfg.lora.use_dora else ""))
    return f"""---
library_name: {"peft" if cfg.method != "full" else "transformers"}
base_model: {base}
tags: [facellm, face-understanding, vision-language]
---

# facellm fine-tune of `{base}` ({fam.model_type})

Trained with `facellm train` on `{cfg.data}` for {summary['steps']} steps
({summary['epochs']} epochs of {summary['train_examples']:,} chats; {method}; batch {cfg.batch_size}, split across
{summary.get('world_size', 1)} processes, x {cfg.grad_accum} accumulation; lr {cfg.learning_rate}, {cfg.lr_scheduler}).
Trainable parameters: {summary['trainable_parameters']:,}. Final training loss: {summary['final_loss']:.4f}.

## Held-out accuracy (validation split, per attribute)

| attribute | accuracy |
|---|---:|
{rows}

## Use

Serve: `facellm serve --model {base} --adapter face=<this dir>` (embedded engine), or merge first:
`facellm merge --model {base} --adapter <this dir> --out merged/` for any transformers/vLLM loader.
Training config, dataset fingerprint and metrics: `facellm_train.json`.

## Responsible use

Face understanding, not face recognition: the model must not be used to identify people, for
surveillance, or on images of people who have not consented. Perceived attributes (age, gender, race)
are perceptions; check per-group accuracy (`facellm eval`) before relying on it.
"""


def write_run_files(saved: Path, cfg: TrainConfig, summary: dict, fam: Family, dataset: dict) -> None:
    """``dataset``: what exactly was trained on (``ChatData.fingerprint``: datasets' fingerprint of each split
    plus the build manifest for a facellm dataset directory, digests of the files read for other layouts)."""
    info = {"config": cfg.to_dict(), "dataset": dataset, "metrics": summary,
            "family": fam.model_type, "base_model": cfg.model}
    # merge and serving read the pixel budget and lengths from facellm_train.json: never half of it
    write_text_atomic(saved / "facellm_train.json", json.dumps(info, indent=2, default=str))
    write_text_atomic(saved / "README.md", model_card(cfg, summary, fam, cfg.model))
