"""LLaVA families: LLaVA-1.5 and LLaVA-OneVision (tiny models: :mod:`facellm.tiny_models.llava`)."""

from __future__ import annotations

from facellm.families.family import Family

FAMILIES = [
    Family(model_type="llava", language_model="model.language_model", vision_tower="model.vision_tower",
           projector="model.multi_modal_projector", image_token="<image>",
           tiny_builder="facellm.tiny_models.llava:build_tiny_llava"),
    Family(model_type="llava_onevision", language_model="model.language_model", vision_tower="model.vision_tower",
           projector="model.multi_modal_projector", image_token="<image>",
           tiny_builder="facellm.tiny_models.llava:build_tiny_llava_onevision"),
]
