"""Qwen-VL families: entries and tiny offline models."""

from __future__ import annotations

import json
from pathlib import Path

from facellm.families.family import Family
from facellm.families.tiny import BASE_CORPUS, train_bpe_tokenizer

FAMILIES = [
    Family(model_type="qwen2_vl", language_model="model.language_model", vision_tower="model.visual",
           projector="model.visual.merger", image_token="<|image_pad|>",
           tiny_builder="facellm.families.qwen:build_tiny_qwen2_vl"),
]

QWEN2_VL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                    "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>"]

# Qwen2-VL's chat template (image/video placeholders, ChatML turns) without its default
# system prompt, which would only cost every training sample a dozen tokens.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Pixel budget of the tiny model: 112x112 -> 8x8 patches of 14 -> 16 image tokens after 2x2 merge.
TINY_MIN_PIXELS, TINY_MAX_PIXELS = 56 * 56, 112 * 112


def build_tiny_qwen2_vl(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    import torch
    from transformers import (GenerationConfig, PreTrainedTokenizerFast, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor,
                              Qwen2VLVideoProcessor)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = train_bpe_tokenizer(BASE_CORPUS * 4 + list(corpus or []), QWEN2_VL_SPECIAL)
    ids = {t: tok.token_to_id(t) for t in QWEN2_VL_SPECIAL}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=4096,
        additional_special_tokens=QWEN2_VL_SPECIAL[1:], chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    pixels = dict(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS, patch_size=14,
                  temporal_patch_size=2, merge_size=2)
    image_processor = Qwen2VLImageProcessor(**pixels)
    video_processor = Qwen2VLVideoProcessor(**pixels)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video_processor, chat_template=QWEN2_VL_CHAT_TEMPLATE)

    hidden, heads = 128, 4  # head_dim 32: the smallest head size vLLM's CPU attention serves
    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                   pad_token_id=ids["<|endoftext|>"])
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=tok.get_vocab_size(), hidden_size=hidden, intermediate_size=4 * hidden,
            num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]},
            **special,
        ),
        vision_config=dict(depth=2, embed_dim=hidden, hidden_size=hidden, mlp_ratio=4, num_heads=heads,
                           in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False, **special,
    )
    config.dtype = "float32"
    model = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    # vLLM and older transformers read the per-processor files, not only processor_config.json
    image_processor.save_pretrained(out)
    video_processor.save_pretrained(out)
    GenerationConfig(do_sample=False, max_new_tokens=64, **special).save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    (out / "facellm_tiny.json").write_text(json.dumps(
        {"family": "qwen2_vl", "seed": seed, "parameters": n_params, "vocab_size": tok.get_vocab_size()}, indent=2))
