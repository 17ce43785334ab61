"""Tiny offline LLaVA models: LLaVA-1.5 and LLaVA-OneVision."""

from __future__ import annotations

from pathlib import Path

from facellm.tiny_models.common import (TINY_HEADS, TINY_HIDDEN, save_tiny, start_tiny, tiny_text_config,
                                        tiny_tokenizer)
from facellm.tiny_models.qwen import QWEN2_SPECIAL

# ----------------------------------------------------------------- LLaVA-1.5

LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]

# llava-hf/llava-1.5-7b-hf's chat template ("USER: <image>\n... ASSISTANT: ..."), with one change: an
# assistant turn ends in "</s>", as in LLaVA-1.5's own training format (Vicuna v1), instead of the
# hub template's bare " ", which would train a model that never stops answering.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + '</s>'}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# 112x112 images in patches of 28 (CLIP's 14 would give 64): 16 image tokens once CLS is dropped. As in
# LLaVA-1.5, the projector reads the tower's penultimate layer (vision_feature_layer -2).
LLAVA_IMAGE_SIZE, LLAVA_PATCH = 112, 28


def build_tiny_llava(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    out = start_tiny(out_dir, seed)
    tokenizer, ids = tiny_tokenizer(corpus, LLAVA_SPECIAL, LLAVA_CHAT_TEMPLATE, eos="</s>", pad="<pad>", bos="<s>",
                                    add_bos=True, words=("USER: ASSISTANT: USER:",),
                                    space_before_answers=True, unk_token="<unk>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": LLAVA_IMAGE_SIZE},
                                         crop_size={"height": LLAVA_IMAGE_SIZE, "width": LLAVA_IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=LLAVA_PATCH,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    special = dict(bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"])
    config = LlavaConfig(
        text_config=dict(model_type="llama", **tiny_text_config(len(tokenizer), **special)),
        vision_config=dict(model_type="clip_vision_model", hidden_size=TINY_HIDDEN, intermediate_size=4 * TINY_HIDDEN,
                           num_hidden_layers=2, num_attention_heads=TINY_HEADS, image_size=LLAVA_IMAGE_SIZE,
                           patch_size=LLAVA_PATCH, projection_dim=TINY_HIDDEN),
        image_token_index=ids["<image>"], image_seq_length=(LLAVA_IMAGE_SIZE // LLAVA_PATCH) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-2, pad_token_id=ids["<pad>"],
    )
    save_tiny(out, "llava", seed, LlavaForConditionalGeneration(config), processor, special, image_processor)


# ----------------------------------------------------------------- LLaVA-OneVision

LLAVA_ONEVISION_SPECIAL = QWEN2_SPECIAL + ["<image>", "<video>"]

# The template transformers' LLaVA-OneVision converter writes: Qwen2 ChatML with "<image>\n" before the
# text, as LLaVA-OneVision trained (its default system prompt is not added). The hub -hf repos carry a
# variant opening turns with "<|im_start|>assistant " while the generation prompt is
# "<|im_start|>assistant\n": not prefix-stable, so assistant spans could not be located.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# SigLIP tiles of 112 in patches of 28: 16 tokens a tile. A 112x112 image is one tile plus the base
# image and a newline a row: 36 tokens; the anyres grid allows at most two tiles (52 tokens).
ONEVISION_TILE, ONEVISION_PATCH = 112, 28
ONEVISION_PINPOINTS = [[112, 112], [112, 224], [224, 112]]


def build_tiny_llava_onevision(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    out = start_tiny(out_dir, seed)
    tokenizer, ids = tiny_tokenizer(corpus, LLAVA_ONEVISION_SPECIAL, LLAVA_ONEVISION_CHAT_TEMPLATE,
                                    eos="<|im_end|>", pad="<|endoftext|>")
    siglip = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    size = {"height": ONEVISION_TILE, "width": ONEVISION_TILE}
    image_processor = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=ONEVISION_PINPOINTS, do_pad=True,
                                                   **siglip)
    video_processor = LlavaOnevisionVideoProcessor(size=size, **siglip)
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        num_image_tokens=(ONEVISION_TILE // ONEVISION_PATCH) ** 2, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9", chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                   pad_token_id=ids["<|endoftext|>"])
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
                         **tiny_text_config(len(tokenizer), **special)),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=TINY_HIDDEN,
                           intermediate_size=4 * TINY_HIDDEN, num_hidden_layers=2, num_attention_heads=TINY_HEADS,
                           image_size=ONEVISION_TILE, patch_size=ONEVISION_PATCH, vision_use_head=False),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
        use_image_newline_parameter=True,
    )
    save_tiny(out, "llava_onevision", seed, LlavaOnevisionForConditionalGeneration(config), processor, special,
              image_processor, video_processor)
