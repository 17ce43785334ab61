"""``facellm merge``: base model + LoRA adapter -> one full model in safetensors, loadable by transformers and
vLLM (which otherwise ignores an adapter's fully trained vision parts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from facellm.atomic import atomic_dir
from facellm.errors import FacellmError
from facellm.modeling import load_model, load_processor, model_family, read_adapter, trained_pixel_budget


def merge(model_dir: str | Path, adapter_dir: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    from peft import PeftModel
    from transformers import GenerationConfig

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FacellmError(f"{out}: not empty; merge writes a fresh model directory")
    fam = model_family(model_dir)
    config = read_adapter(adapter_dir)
    if config.get("peft_type") != "LORA":
        raise FacellmError(f"{adapter_dir}: a {config.get('peft_type')} adapter; merge handles LoRA adapters")
    model = PeftModel.from_pretrained(load_model(model_dir, dtype), str(adapter_dir)).merge_and_unload()
    budget = trained_pixel_budget(adapter_dir)
    processor = load_processor(model_dir, *budget)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:  # a crashed merge leaves no half model under out's name
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        for name in ("preprocessor_config.json", "video_preprocessor_config.json"):  # per-processor files vLLM reads
            if (Path(model_dir) / name).is_file():
                shutil.copy(Path(model_dir) / name, tmp / name)
        if any(budget):  # the merged model carries the budget it was trained with, for every server
            processor.image_processor.save_pretrained(tmp)
        try:
            GenerationConfig.from_pretrained(str(model_dir)).save_pretrained(tmp)
        except OSError:
            pass  # the base has no generation_config.json: transformers' defaults apply
        run = Path(adapter_dir) / "facellm_train.json"
        if run.is_file():  # the training record travels: serving reads the pixel budget and lengths from it
            shutil.copy(run, tmp / "facellm_train.json")
        card = Path(adapter_dir) / "README.md"
        if card.is_file():
            (tmp / "README.md").write_text(card.read_text().replace("library_name: peft", "library_name: transformers"))
        (tmp / "facellm_merge.json").write_text(json.dumps(
            {"base_model": str(model_dir), "adapter": str(adapter_dir), "family": fam.model_type, "dtype": dtype},
            indent=2))
    return out
