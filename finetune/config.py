"""Typed training configuration, loadable from YAML, with CLI overrides (``key=value``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from facellm.errors import FacellmError
from facellm.yamlfile import load_mapping


class ConfigError(FacellmError, ValueError):
    pass


def _numbers(cls, raw: dict) -> dict:
    """Numbers YAML 1.1 reads as text ("2e-3" lacks the dot it wants) become numbers; others are refused."""
    raw = dict(raw)
    for f in dataclasses.fields(cls):
        kind = str(f.type).split(" |")[0]
        if kind in ("float", "int") and isinstance(raw.get(f.name), str):
            try:
                raw[f.name] = float(raw[f.name]) if kind == "float" else int(raw[f.name])
            except ValueError:
                raise ConfigError(f"{f.name} {raw[f.name]!r}: expected a number") from None
    return raw


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    projections: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                            "gate_proj", "up_proj", "down_proj"])
    target_regex: str | None = None  # PEFT target_modules regex; default: the projections of the language model
    use_rslora: bool = False  # rank-stabilised scaling alpha/sqrt(r)
    use_dora: bool = False  # weight-decomposed LoRA


@dataclass
class TrainConfig:
    model: str = ""  # model directory (hub layout)
    data: str = ""  # dataset directory written by `facellm data build`
    output: str = "runs/train"
    method: str = "lora"  # lora | qlora (4-bit base, CUDA + bitsandbytes) | full
    lora: LoraSettings = field(default_factory=LoraSettings)
    # Pretrained models keep vision tower and projector frozen; a randomly
    # initialised tiny model must learn to see, so its recipe trains them.
    train_vision_tower: bool = False
    train_projector: bool = False
    train_embeddings: bool = False  # token embeddings + LM head (tiny models with new vocabularies)
    train_language_model: bool = True  # full fine-tuning only: False trains just the vision side
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30 % more compute
    group_by_image: bool = True  # all questions about an image in one multi-turn chat
    group_by_length: bool = False  # batch chats of similar token length together: less padding, less random
    max_steps: int = 1000
    epochs: float = 0  # > 0: train this many passes over the training chats instead of max_steps
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    lr_scheduler: str = "cosine"  # any transformers scheduler name: cosine | linear | constant_with_warmup
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate)
    max_length: int | None = None  # refuse longer samples; images are never truncated
    # pixel budget per image (Qwen-VL families): fewer pixels, fewer image tokens; `facellm serve` applies
    # the adapter's budget too, so the model sees images at the resolution it was trained on
    min_pixels: int | None = None
    max_pixels: int | None = None
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # steps between validation evaluations (0: only at the end)
    eval_samples: int = 200  # validation questions asked per evaluation
    save_every: int = 0  # steps between resumable checkpoints in OUTPUT/checkpoints (0: none)
    keep_checkpoints: int = 2  # newest checkpoints kept
    report_to: list[str] = field(default_factory=list)  # experiment trackers: tensorboard, wandb
    threads: int | None = None  # torch CPU threads (None: torch's default)
    dataloader_workers: int = 1  # processes collating batches ahead of the training step (0: inline)

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: list[str] = ()) -> "TrainConfig":
        raw = load_mapping(path, ConfigError) if path is not None else {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r}: expected key=value (e.g. max_steps=200 or lora.r=8)")
            target = raw
            *parents, leaf = key.split(".")
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = yaml.safe_load(value)
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(raw) - known:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        raw = dict(raw)
        lora = raw.pop("lora", {}) or {}
        lora_known = {f.name for f in dataclasses.fields(LoraSettings)}
        if unknown := set(lora) - lora_known:
            raise ConfigError(f"unknown lora setting(s) {sorted(unknown)}; known: {sorted(lora_known)}")
        if "betas" in raw:
            raw["betas"] = tuple(raw["betas"])
        if raw.get("mixed_precision") is False:  # YAML 1.1 reads a bare `no` as false
            raw["mixed_precision"] = "no"
        cfg = cls(lora=LoraSettings(**_numbers(LoraSettings, lora)), **_numbers(cls, raw))
        if cfg.method not in ("lora", "qlora", "full"):
            raise ConfigError(f"method {cfg.method!r}: expected lora, qlora or full")
        if cfg.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision {cfg.mixed_precision!r}: expected no, bf16 or fp16")
        if unknown := set(cfg.report_to) - {"tensorboard", "wandb"}:
            raise ConfigError(f"report_to {sorted(unknown)}: expected tensorboard and/or wandb")
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
