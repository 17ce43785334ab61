"""Load a VLM and its processor the way a hub checkpoint is loaded, plus LoRA adapters."""

from __future__ import annotations

import json
from pathlib import Path

from facellm.errors import FacellmError
from facellm.families import Family, family


class ModelDirError(FacellmError, ValueError):
    pass


def read_model_type(model_dir: str | Path) -> str:
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


def load_model(model_dir: str | Path, dtype: str = "float32"):
    """Model from safetensors weights only; ``trust_remote_code`` stays off."""
    import torch
    from transformers import AutoModelForImageTextToText

    model_family(model_dir)  # refuse unsupported families with a clear message
    return AutoModelForImageTextToText.from_pretrained(
        str(model_dir), dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False)


def read_adapter(adapter_dir: str | Path) -> dict:
    config = Path(adapter_dir) / "adapter_config.json"
    if not config.is_file():
        raise ModelDirError(f"{adapter_dir}: not a PEFT adapter directory (no adapter_config.json)")
    return json.loads(config.read_text())
