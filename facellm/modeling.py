"""Load a VLM and its processor the way a hub checkpoint is loaded, plus LoRA adapters."""

from __future__ import annotations

import json
import re
from pathlib import Path

from facellm.errors import FacellmError
from facellm.families import Family, family


class ModelDirError(FacellmError, ValueError):
    pass


def is_hub_id(model: str | Path) -> bool:
    """``org/name`` that is not a local path: a Hugging Face Hub model, fetched by transformers."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", str(model))) and not Path(model).exists()


def read_model_type(model_dir: str | Path) -> str:
    if is_hub_id(model_dir):
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False).model_type
        except OSError as e:
            raise ModelDirError(f"{model_dir}: not a local directory and not reachable on the Hugging Face Hub "
                                f"({str(e).splitlines()[0]}); download it first or pass a local copy") from None
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        raise ModelDirError(f"{model_dir}: not a model directory (no config.json); "
                            "build one with `facellm tiny-model --out DIR` or pass a downloaded checkpoint")
    return json.loads(config.read_text())["model_type"]


def model_family(model_dir: str | Path) -> Family:
    return family(read_model_type(model_dir))


def load_processor(model_dir: str | Path):
    from transformers import AutoProcessor

    model_family(model_dir)
    return AutoProcessor.from_pretrained(str(model_dir), trust_remote_code=False)


def load_model(model_dir: str | Path, dtype: str = "float32", quantization=None):
    """Model from safetensors weights only; ``trust_remote_code`` stays off. ``quantization``: a transformers
    quantization config (QLoRA's 4-bit base)."""
    import torch
    from transformers import AutoModelForImageTextToText

    model_family(model_dir)  # refuse unsupported families with a clear message
    return AutoModelForImageTextToText.from_pretrained(
        str(model_dir), dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False,
        **({"quantization_config": quantization} if quantization is not None else {}))


def read_adapter(adapter_dir: str | Path) -> dict:
    config = Path(adapter_dir) / "adapter_config.json"
    if not config.is_file():
        raise ModelDirError(f"{adapter_dir}: not a PEFT adapter directory (no adapter_config.json)")
    return json.loads(config.read_text())
