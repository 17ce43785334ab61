"""Typed training configuration (`facellm train`): YAML recipe, `--set key=value` overrides and flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from facellm.config import Config, ConfigError

DEFAULT_MAX_STEPS = 1000  # steps trained when a config sets neither max_steps nor epochs


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
class TrainConfig(Config):
    EXCLUSIVE = (("max_steps", "epochs"),)

    model: str = ""  # model directory (hub layout)
    # what trains: a dataset directory written by `facellm data build`, or a chat dataset on disk in another
    # tool's layout (datasets save_to_disk or Parquet in TRL's messages + images convention, LLaMA-Factory's
    # dataset_info.json with ShareGPT files, LLaVA JSON: finetune/chat_data.py)
    data: str = ""
    image_folder: str | None = None  # relative image paths start here (LLaVA's --image_folder, LLaMA-Factory's
    # media_dir); default: the data's own folder
    data_name: str | None = None  # which dataset of a dataset_info.json trains (default: the one named *train)
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
    # how long to train: optimizer steps, or passes over the training chats (neither: DEFAULT_MAX_STEPS steps)
    max_steps: int | None = None
    epochs: float | None = None
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

    def __post_init__(self):
        if self.method not in ("lora", "qlora", "full"):
            raise ConfigError(f"method {self.method!r}: expected lora, qlora or full")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision {self.mixed_precision!r}: expected no, bf16 or fp16")
        if unknown := set(self.report_to) - {"tensorboard", "wandb"}:
            raise ConfigError(f"report_to {sorted(unknown)}: expected tensorboard and/or wandb")
        if self.max_steps is not None and self.epochs is not None:
            raise ConfigError("set max_steps or epochs, not both")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps {self.max_steps}: expected at least 1")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"epochs {self.epochs}: expected a number above 0")
