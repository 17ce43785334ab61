"""Idefics3 and SmolVLM (SmolVLM2-style) families (tiny models: :mod:`facellm.tiny_models.idefics`).

The two are near-twins in transformers: a SigLIP-style vision tower, a pixel-shuffle
connector and a Llama language model.
"""

from __future__ import annotations

import logging

from facellm.families.family import Family

FAMILIES = [
    Family(model_type=model_type, language_model="model.text_model", vision_tower="model.vision_model",
           projector="model.connector", image_token="<image>",
           tiny_builder=f"facellm.tiny_models.idefics:build_tiny_{model_type}")
    for model_type in ("idefics3", "smolvlm")
]


class _SmolVLMRenderNoise(logging.Filter):
    """SmolVLMProcessor.apply_chat_template (transformers 5.19) always sets num_frames/fps in ``**kwargs``,
    so every render, with or without video, logs this warning: thousands of lines per training run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Kwargs passed to `processor.__call__` have to be in")


logging.getLogger("transformers.processing_utils").addFilter(_SmolVLMRenderNoise())
