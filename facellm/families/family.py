"""One entry of the VLM family registry: only what truly differs between families."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    model_type: str  # transformers' config.model_type, the name used on the CLI
    language_model: str  # module path prefix of the language model
    vision_tower: str  # module path prefix of the vision encoder
    projector: str  # module path prefix of the vision->text projector
    image_token: str  # placeholder the chat template emits and the processor expands
    tiny_builder: str  # "module:function" writing a tiny model: (out_dir, corpus_texts, seed) -> None
    # Prefix-LM attention (PaliGemma): token_type_ids 0 mark the prompt, attended bidirectionally, 1 the
    # answer, attended causally. The processor marks a whole prompt 0; training marks from the first answer on 1.
    prefix_lm: bool = False
    # Dynamic-resolution families take a pixel budget (``min_pixels``/``max_pixels`` processor kwargs,
    # the same names vLLM's ``--mm-processor-kwargs`` forwards); the others resize to a fixed size.
    pixel_budget: bool = False

    def lora_target_regex(self, projections: tuple[str, ...] = LM_PROJECTIONS) -> str:
        """PEFT ``target_modules`` regex: the language model's linear layers only."""
        prefix = re.escape(self.language_model)
        return rf"^(?:.*\.)?{prefix}\..*\.(?:{'|'.join(projections)})$"

    def build_tiny(self, out_dir, corpus: list[str] | None = None, seed: int = 0) -> None:
        """Write a tiny, randomly initialised model of this family into ``out_dir`` (hub layout; its
        tokenizer learnt on ``corpus``); the same seed and corpus give the same files."""
        module, _, function = self.tiny_builder.partition(":")
        getattr(importlib.import_module(module), function)(out_dir, corpus, seed)
