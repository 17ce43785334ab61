"""Load a VLM and its processor the way a hub checkpoint is loaded, plus LoRA adapters."""

from __future__ import annotations

import json
import re
from pathlib import Path

from facellm.errors import FacellmError
from facellm.families import FAMILIES, Family, family


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


def pixel_kwargs(fam: Family, min_pixels: int | None = None, max_pixels: int | None = None) -> dict:
    """Processor kwargs of a pixel budget; the same dict goes to vLLM's ``--mm-processor-kwargs``, so
    training, eval and serving see images at the same resolution."""
    budget = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    if budget and not fam.pixel_budget:
        raise FacellmError(f"{fam.model_type} resizes every image to a fixed size, so a pixel budget "
                           f"(min_pixels/max_pixels) does not apply; supported by: "
                           f"{', '.join(f.model_type for f in FAMILIES.values() if f.pixel_budget)}")
    if min_pixels and max_pixels and min_pixels > max_pixels:
        raise FacellmError(f"min_pixels {min_pixels} is larger than max_pixels {max_pixels}")
    return budget


def load_processor(model_dir: str | Path, min_pixels: int | None = None, max_pixels: int | None = None):
    """The checkpoint's processor, with an optional pixel budget (dynamic-resolution families)."""
    from transformers import AutoProcessor

    budget = pixel_kwargs(model_family(model_dir), min_pixels, max_pixels)
    return AutoProcessor.from_pretrained(str(model_dir), trust_remote_code=False, **budget)


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


def training_record(trained_dir: str | Path) -> dict:
    """facellm_train.json of an adapter, a fully trained or a merged model; {} for anything else."""
    run = Path(trained_dir) / "facellm_train.json"
    return json.loads(run.read_text()) if run.is_file() else {}


def trained_pixel_budget(trained_dir: str | Path) -> tuple[int | None, int | None]:
    """(min_pixels, max_pixels) an adapter (or full model) was trained with."""
    config = training_record(trained_dir).get("config", {})
    return config.get("min_pixels"), config.get("max_pixels")


def serving_max_model_len(model: str | Path, adapter_dirs, answer_room: int = 1024) -> int | None:
    """A context length for vLLM from the training pre-flight: the longest training chat plus room for
    answers, rounded up to 256. None (the model's own) when nothing served was trained by facellm.
    vLLM reserves KV cache for the full context, so a model's 32k-128k default can fail to start on a
    small cache (CPU) where the tuned task needs a few hundred tokens."""
    longest = [training_record(d).get("metrics", {}).get("longest_tokens") for d in [model, *adapter_dirs]]
    longest = [n for n in longest if n]
    if not longest:
        return None
    wanted = -(-(max(longest) + answer_room) // 256) * 256
    config = Path(model) / "config.json"
    if config.is_file():  # never beyond what the model was built for
        raw = json.loads(config.read_text())
        wanted = min(wanted, raw.get("text_config", raw).get("max_position_embeddings") or wanted)
    return wanted


def serving_pixel_budget(model: str | Path, adapter_dirs, min_pixels: int | None = None,
                         max_pixels: int | None = None) -> tuple[int | None, int | None]:
    """The budget to serve with: the one given, else the one the adapters (or, without adapters, the model
    itself: a merged or fully trained one) were trained with; adapters must agree."""
    if min_pixels or max_pixels:
        budget = (min_pixels, max_pixels)
    else:
        trained = {trained_pixel_budget(d) for d in adapter_dirs} or {trained_pixel_budget(model)}
        if len(trained) > 1:
            raise FacellmError(f"the adapters were trained with different pixel budgets {sorted(trained, key=str)}; "
                               "one server applies one: pass --min-pixels/--max-pixels")
        budget = trained.pop()
    pixel_kwargs(model_family(model), *budget)  # refuse a budget the family cannot apply
    return budget
