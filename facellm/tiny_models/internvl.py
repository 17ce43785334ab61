"""Tiny offline InternVL model (InternVL3 in its transformers-native -hf form)."""

from __future__ import annotations

from pathlib import Path

from facellm.tiny_models.common import (TINY_HEADS, TINY_HIDDEN, save_tiny, start_tiny, tiny_text_config,
                                        tiny_tokenizer)
from facellm.tiny_models.qwen import QWEN2_SPECIAL

# InternVL3-hf's tokenizer: Qwen2.5's plus the image markers, which the processor finds by these names.
INTERNVL_IMAGE_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
INTERNVL_SPECIAL = QWEN2_SPECIAL + ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>",
                                    "<box>", "</box>", "<video>"]

# InternVL3-hf's chat template (ChatML, "<IMG_CONTEXT>\n" per image, which the processor expands into
# <img><IMG_CONTEXT>*n</img>); it has no default system prompt.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)

# Tiles of 112 in patches of 14 (8x8), pixel-shuffled by 0.5: 16 image tokens a tile. A 112x112 image
# is one tile; dynamic tiling allows two (plus InternVL's thumbnail) for other shapes: 48 tokens at most.
INTERNVL_TILE, INTERNVL_PATCH, INTERNVL_MAX_TILES = 112, 14, 2
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def build_tiny_internvl(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    from transformers import (GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor, InternVLVideoProcessor)

    out = start_tiny(out_dir, seed)
    tokenizer, ids = tiny_tokenizer(corpus, INTERNVL_SPECIAL, INTERNVL_CHAT_TEMPLATE, eos="<|im_end|>",
                                    pad="<|endoftext|>", extra_special_tokens=INTERNVL_IMAGE_TOKENS)
    size = {"height": INTERNVL_TILE, "width": INTERNVL_TILE}
    image_processor = GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=1,
                                            max_patches=INTERNVL_MAX_TILES, **IMAGENET)
    video_processor = InternVLVideoProcessor(size=size, **IMAGENET)
    seq_length = (INTERNVL_TILE // INTERNVL_PATCH // 2) ** 2
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                  video_processor=video_processor, image_seq_length=seq_length,
                                  chat_template=INTERNVL_CHAT_TEMPLATE)
    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                   pad_token_id=ids["<|endoftext|>"])
    config = InternVLConfig(
        text_config=dict(model_type="qwen2", rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
                         **tiny_text_config(len(tokenizer), **special)),
        vision_config=dict(hidden_size=TINY_HIDDEN, intermediate_size=4 * TINY_HIDDEN, num_hidden_layers=2,
                           num_attention_heads=TINY_HEADS, image_size=INTERNVL_TILE, patch_size=INTERNVL_PATCH,
                           attention_bias=True, norm_type="layer_norm", use_qk_norm=False),
        image_token_id=ids["<IMG_CONTEXT>"], image_seq_length=seq_length, downsample_ratio=0.5,
        vision_feature_layer=-1, vision_feature_select_strategy="default", tie_word_embeddings=False,
    )
    save_tiny(out, "internvl", seed, InternVLForConditionalGeneration(config), processor, special,
              image_processor, video_processor)
