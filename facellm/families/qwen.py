"""Qwen-VL families: Qwen2-VL, Qwen2.5-VL and Qwen3-VL (tiny models: :mod:`facellm.tiny_models.qwen`)."""

from __future__ import annotations

from facellm.families.family import Family

FAMILIES = [
    Family(model_type="qwen2_vl", language_model="model.language_model", vision_tower="model.visual",
           projector="model.visual.merger", image_token="<|image_pad|>", pixel_budget=True,
           tiny_builder="facellm.tiny_models.qwen:build_tiny_qwen2_vl"),
    Family(model_type="qwen2_5_vl", language_model="model.language_model", vision_tower="model.visual",
           projector="model.visual.merger", image_token="<|image_pad|>", pixel_budget=True,
           tiny_builder="facellm.tiny_models.qwen:build_tiny_qwen2_5_vl"),
    # Qwen3-VL's DeepStack mergers (model.visual.deepstack_merger_list) project too, but live in the
    # tower beside the final merger: they train and freeze with the vision tower.
    Family(model_type="qwen3_vl", language_model="model.language_model", vision_tower="model.visual",
           projector="model.visual.merger", image_token="<|image_pad|>", pixel_budget=True,
           tiny_builder="facellm.tiny_models.qwen:build_tiny_qwen3_vl"),
]
