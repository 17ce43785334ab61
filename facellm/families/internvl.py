"""InternVL families (InternVL3 in its transformers-native -hf form; tiny model:
:mod:`facellm.tiny_models.internvl`)."""

from __future__ import annotations

from facellm.families.family import Family

FAMILIES = [
    Family(model_type="internvl", language_model="model.language_model", vision_tower="model.vision_tower",
           projector="model.multi_modal_projector", image_token="<IMG_CONTEXT>",
           tiny_builder="facellm.tiny_models.internvl:build_tiny_internvl"),
]
