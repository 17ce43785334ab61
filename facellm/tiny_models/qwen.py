"""Tiny offline Qwen-VL models: Qwen2-VL, Qwen2.5-VL and Qwen3-VL.

The three share a tokenizer (ChatML turns, vision markers), a processor layout
(image + video processor, pixel budget in merged patches) and the hub files a
checkpoint carries; ``_build_tiny_qwen`` writes those with the shared tiny-model
helpers, and each family's builder gives only its config, classes, chat template
and patch geometry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from facellm.tiny_models.common import TINY_HEADS, TINY_HIDDEN, save_tiny, start_tiny, tiny_tokenizer

# Qwen2's own special tokens (Qwen2/2.5 language models: also InternVL3's and LLaVA-OneVision's),
# then Qwen-VL's vision markers.
QWEN2_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_VL_SPECIAL = QWEN2_SPECIAL + ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
                                    "<|vision_pad|>"]

# Qwen2-VL's chat template (image/video placeholders, ChatML turns) without its default
# system prompt, which would only cost every training sample a dozen tokens. Qwen2.5-VL
# ships the same template.
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

# Qwen3-VL Instruct's chat template as shipped: it has no default system prompt and no think
# block, so nothing needs stripping (tools, tool calls and tool responses stay).
QWEN3_VL_CHAT_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with \
function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n\
</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Pixel budget of the tiny models, in merged patches (patch_size * merge_size pixels a side):
# from 2x2 up to 4x4, i.e. 16 image tokens for a square image (112x112 with Qwen2-VL's 14-pixel
# patches, 128x128 with Qwen3-VL's 16-pixel ones).
TINY_MERGE = 2
TINY_MIN_SIDE, TINY_MAX_SIDE = 2, 4
TINY_LAYERS = 2


def _tiny_text_config(vocab_size: int, special: dict, rope_parameters: dict, **extra) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=TINY_HIDDEN, intermediate_size=4 * TINY_HIDDEN,
                num_hidden_layers=TINY_LAYERS, num_attention_heads=TINY_HEADS, num_key_value_heads=TINY_HEADS,
                max_position_embeddings=4096, rope_parameters=rope_parameters, **extra, **special)


def _vision_token_ids(ids: dict[str, int]) -> dict[str, int]:
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def _build_tiny_qwen(out_dir: str | Path, corpus: list[str] | None, seed: int, *, model_type: str,
                     make_config: Callable[[int, dict[str, int], dict], object], model_class, processor_class,
                     video_processor_class, chat_template: str, patch_size: int,
                     image_norm: dict | None = None) -> None:
    """Tokenizer, processor, randomly initialised model and generation config of one Qwen-VL family.

    ``make_config(vocab_size, special_token_ids, bos/eos/pad ids)`` returns the family's config.
    """
    from transformers import Qwen2VLImageProcessor

    out = start_tiny(out_dir, seed)
    tokenizer, ids = tiny_tokenizer(corpus, QWEN2_VL_SPECIAL, chat_template, eos="<|im_end|>", pad="<|endoftext|>")
    side = patch_size * TINY_MERGE
    pixels = dict(size={"shortest_edge": (TINY_MIN_SIDE * side) ** 2, "longest_edge": (TINY_MAX_SIDE * side) ** 2},
                  patch_size=patch_size, temporal_patch_size=2, merge_size=TINY_MERGE, **(image_norm or {}))
    image_processor = Qwen2VLImageProcessor(**pixels)
    video_processor = video_processor_class(**pixels)
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=video_processor, chat_template=chat_template)

    special = dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                   pad_token_id=ids["<|endoftext|>"])
    config = make_config(len(tokenizer), ids, special)
    config.dtype = "float32"
    save_tiny(out, model_type, seed, model_class(config), processor, special, image_processor, video_processor)


def build_tiny_qwen2_vl(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor

    def make_config(vocab_size, ids, special):
        return Qwen2VLConfig(
            text_config=_tiny_text_config(vocab_size, special, {
                "rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]}),
            vision_config=dict(depth=2, embed_dim=TINY_HIDDEN, hidden_size=TINY_HIDDEN, mlp_ratio=4,
                               num_heads=TINY_HEADS, in_channels=3, patch_size=14, spatial_merge_size=TINY_MERGE,
                               temporal_patch_size=2),
            **_vision_token_ids(ids), tie_word_embeddings=False, **special,
        )

    _build_tiny_qwen(out_dir, corpus, seed, model_type="qwen2_vl", make_config=make_config,
                     model_class=Qwen2VLForConditionalGeneration, processor_class=Qwen2VLProcessor,
                     video_processor_class=Qwen2VLVideoProcessor, chat_template=QWEN2_VL_CHAT_TEMPLATE,
                     patch_size=14)


def build_tiny_qwen2_5_vl(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLVideoProcessor)

    def make_config(vocab_size, ids, special):
        return Qwen2_5_VLConfig(
            text_config=_tiny_text_config(vocab_size, special, {
                "rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [4, 6, 6]}),
            # windowed attention in the first block, full attention in the last, as in every
            # Qwen2.5-VL tower (window 112 pixels = 4x4 merged patches)
            vision_config=dict(depth=2, hidden_size=TINY_HIDDEN, intermediate_size=4 * TINY_HIDDEN,
                               num_heads=TINY_HEADS, out_hidden_size=TINY_HIDDEN, hidden_act="silu",
                               in_channels=3, patch_size=14, spatial_merge_size=TINY_MERGE, temporal_patch_size=2,
                               window_size=112, fullatt_block_indexes=[1], tokens_per_second=2),
            **_vision_token_ids(ids), tie_word_embeddings=False, **special,
        )

    _build_tiny_qwen(out_dir, corpus, seed, model_type="qwen2_5_vl", make_config=make_config,
                     model_class=Qwen2_5_VLForConditionalGeneration, processor_class=Qwen2_5_VLProcessor,
                     video_processor_class=Qwen2VLVideoProcessor, chat_template=QWEN2_VL_CHAT_TEMPLATE,
                     patch_size=14)


def build_tiny_qwen3_vl(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    def make_config(vocab_size, ids, special):
        return Qwen3VLConfig(
            # interleaved M-RoPE over head_dim/2 = 16 frequencies: [24, 20, 20] of 64 scaled down
            text_config=_tiny_text_config(vocab_size, special, {
                "rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [6, 5, 5],
                "mrope_interleaved": True}, head_dim=TINY_HIDDEN // TINY_HEADS),
            # learned 16x16 position grid (resampled to each image's grid); one DeepStack level,
            # fed from the first block into the first decoder layer
            vision_config=dict(depth=2, hidden_size=TINY_HIDDEN, intermediate_size=4 * TINY_HIDDEN,
                               num_heads=TINY_HEADS, out_hidden_size=TINY_HIDDEN, hidden_act="gelu_pytorch_tanh",
                               in_channels=3, patch_size=16, spatial_merge_size=TINY_MERGE, temporal_patch_size=2,
                               num_position_embeddings=256, deepstack_visual_indexes=[0]),
            **_vision_token_ids(ids), tie_word_embeddings=False, **special,
        )

    _build_tiny_qwen(out_dir, corpus, seed, model_type="qwen3_vl", make_config=make_config,
                     model_class=Qwen3VLForConditionalGeneration, processor_class=Qwen3VLProcessor,
                     video_processor_class=Qwen3VLVideoProcessor, chat_template=QWEN3_VL_CHAT_TEMPLATE,
                     patch_size=16, image_norm=dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]))
