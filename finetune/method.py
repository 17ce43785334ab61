"""What trains: LoRA / QLoRA adapters on the language model, or full fine-tuning, and the freeze switches."""

from __future__ import annotations

import logging

from facellm.errors import FacellmError
from facellm.families import Family
from finetune.config import TrainConfig

log = logging.getLogger(__name__)


def quantization_config(cfg: TrainConfig):
    """QLoRA's 4-bit NF4 base model (bitsandbytes, CUDA only); None for the other methods."""
    if cfg.method != "qlora":
        return None
    import torch

    if not torch.cuda.is_available():
        raise FacellmError("method qlora loads the base model in 4 bits with bitsandbytes, which needs a CUDA GPU; "
                           "on this machine use method: lora (same adapter, full-precision base)")
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise FacellmError("method qlora needs bitsandbytes: pip install bitsandbytes") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _freeze_full(model, cfg: TrainConfig, fam: Family) -> None:
    for name, p in model.named_parameters():
        if name.startswith(fam.projector + "."):  # tested first: some families nest it in the tower
            p.requires_grad_(cfg.train_projector)
        elif name.startswith(fam.vision_tower + "."):
            p.requires_grad_(cfg.train_vision_tower)
        else:
            p.requires_grad_(cfg.train_language_model)


def modules_to_save(cfg: TrainConfig, fam: Family) -> list[str]:
    """Parts trained in full beside the LoRA adapter (saved whole in the adapter)."""
    names = []
    if cfg.train_vision_tower:
        names.append(fam.vision_tower)  # includes the projector where it lives inside the tower
    if cfg.train_projector and not fam.projector.startswith(fam.vision_tower + "."):
        names.append(fam.projector)
    if cfg.train_embeddings:
        names += ["embed_tokens", "lm_head"]
    return names


def apply_method(model, cfg: TrainConfig, fam: Family):
    """LoRA on the language model (plus fully trained parts as PEFT modules_to_save), or full."""
    if cfg.method == "full":
        _freeze_full(model, cfg, fam)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    saved = modules_to_save(cfg, fam)
    if saved:
        log.warning("the adapter trains %s in full: vLLM applies LoRA to the language model only and ignores "
                    "these at serving time; serve with the embedded engine or merge first (facellm merge)",
                    ", ".join(saved))
    lora = LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, bias="none",
        target_modules=cfg.lora.target_regex or fam.lora_target_regex(tuple(cfg.lora.projections)),
        use_rslora=cfg.lora.use_rslora, use_dora=cfg.lora.use_dora, modules_to_save=saved or None,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as e:  # e.g. a target regex that matches nothing
        raise FacellmError(f"LoRA on {fam.model_type}: {e}") from None
