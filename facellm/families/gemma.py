"""Gemma-based VLM families: Gemma 3 and PaliGemma 2 (tiny models: :mod:`facellm.tiny_models.gemma`).

PaliGemma is a prefix-LM: the prompt attends bidirectionally, the answer causally (``prefix_lm``).
"""

from __future__ import annotations

from facellm.families.family import Family

FAMILIES = [
    Family(model_type="gemma3", language_model="model.language_model", vision_tower="model.vision_tower",
           projector="model.multi_modal_projector", image_token="<start_of_image>",
           tiny_builder="facellm.tiny_models.gemma:build_tiny_gemma3"),
    Family(model_type="paligemma", language_model="model.language_model", vision_tower="model.vision_tower",
           projector="model.multi_modal_projector", image_token="<image>",
           tiny_builder="facellm.tiny_models.gemma:build_tiny_paligemma", prefix_lm=True),
]
