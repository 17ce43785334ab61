"""The VLM family registry: only what truly differs between families.

Loading goes through transformers' Auto classes (``AutoProcessor`` and
``AutoModelForImageTextToText``) for every family, exactly as for a hub model;
an entry records where the language model, vision tower and projector live (for
LoRA targets and freeze switches), and how to build a tiny offline model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from facellm.errors import FacellmError

LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    model_type: str  # transformers' config.model_type, the name used on the CLI
    language_model: str  # module path prefix of the language model
    vision_tower: str  # module path prefix of the vision encoder
    projector: str  # module path prefix of the vision->text projector
    image_token: str  # placeholder the chat template emits and the processor expands
    build_tiny: Callable[..., None]  # (out_dir, corpus_texts, seed) -> writes a tiny model

    def lora_target_regex(self, projections: tuple[str, ...] = LM_PROJECTIONS) -> str:
        """PEFT ``target_modules`` regex: the language model's linear layers only."""
        prefix = re.escape(self.language_model)
        return rf"^(?:.*\.)?{prefix}\..*\.(?:{'|'.join(projections)})$"


def _build_tiny_qwen2_vl(out_dir, corpus, seed):
    from facellm.tiny import build_tiny_qwen2_vl

    build_tiny_qwen2_vl(out_dir, corpus, seed)


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in [
        Family(
            model_type="qwen2_vl",
            language_model="model.language_model",
            vision_tower="model.visual",
            projector="model.visual.merger",
            image_token="<|image_pad|>",
            build_tiny=_build_tiny_qwen2_vl,
        ),
    ]
}


def family(model_type: str) -> Family:
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise FacellmError(
            f"unsupported VLM family {model_type!r}; supported: {', '.join(FAMILIES)}"
        ) from None
