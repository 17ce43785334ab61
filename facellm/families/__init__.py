"""The VLM family registry: one small entry per family, named by transformers' ``model_type``.

Loading goes through transformers' Auto classes (``AutoProcessor`` and
``AutoModelForImageTextToText``) for every family, exactly as for a hub model;
an entry records where the language model, vision tower and projector live (for
LoRA targets and freeze switches), the image placeholder, and which builder of
:mod:`facellm.tiny_models` writes a tiny offline model of it. Each module of this
package holds the entries of one family line.
"""

from __future__ import annotations

from facellm.errors import FacellmError
from facellm.families import gemma, idefics, internvl, llava, qwen
from facellm.families.family import LM_PROJECTIONS, Family

FAMILIES: dict[str, Family] = {f.model_type: f for module in (qwen, internvl, idefics, llava, gemma) for f in module.FAMILIES}

__all__ = ["FAMILIES", "LM_PROJECTIONS", "Family", "family"]


def family(model_type: str) -> Family:
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise FacellmError(
            f"unsupported VLM family {model_type!r}; supported: {', '.join(FAMILIES)}"
        ) from None
