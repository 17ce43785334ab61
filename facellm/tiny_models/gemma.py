"""Tiny offline Gemma-based VLMs: Gemma 3 and PaliGemma 2.

Both put a SigLIP vision encoder in front of a Gemma language model; they differ
in how an image enters the text and in attention:

* Gemma 3 is a chat model: its template writes ``<start_of_image>``, which the
  processor expands to ``<start_of_image>`` + ``mm_tokens_per_image`` soft tokens
  (average-pooled SigLIP patches) + ``<end_of_image>``; ``token_type_ids`` mark the
  soft tokens, which attend to each other bidirectionally.
* PaliGemma 2 is a prefix-LM with no chat template on the hub (prompt + suffix):
  the processor writes the image tokens and ``<bos>`` before the prompt and a
  ``"\\n"`` after it; the prefix (``token_type_ids`` 0) attends bidirectionally,
  the answer (1) causally. The tiny model's template renders a chat in that
  layout, so its first turn is exactly PaliGemma's ``prefix\\nsuffix<eos>``.
"""

from __future__ import annotations

from pathlib import Path

from facellm.tiny_models.common import save_tiny, start_tiny, tiny_tokenizer

# Gemma's own specials first, in Gemma's order (pad 0, eos 1, bos 2, unk 3), then each family's.
GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
GEMMA3_SPECIAL = GEMMA_SPECIAL + ["<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                                  "<end_of_image>", "<image_soft_token>"]
PALIGEMMA_SPECIAL = GEMMA_SPECIAL + ["<image>"]

# Gemma 3's chat template (google/gemma-3-4b-it, tokenizer_config.json), verbatim: it has no default
# system prompt; a system message is folded into the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

# PaliGemma's layout as a multi-turn chat: every image first (the processor appends <bos> after the last
# <image> and "\n" after the text), then the turns; an answer follows its question after "\n" and ends
# with <eos>. The generation prompt is empty: at inference the processor's "\n" separates prompt and
# answer, in training the template's does, so both read "<image>...<bos>question\n" before an answer.
PALIGEMMA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}{%- if message['content'] is not string -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'image' -%}<image>{%- endif -%}{%- endfor -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] | trim -%}"
    "{%- else -%}{%- set text = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join(' ') | trim -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{ '\\n' + text + eos_token }}"
    "{%- elif message['role'] == 'system' -%}{{ text + '\\n' }}"
    "{%- else -%}{{ text }}{%- endif -%}"
    "{%- endfor -%}"
)

# Tiny sizes: text hidden 128 in 2 layers of 4 heads of 32 (the smallest head vLLM's CPU attention serves);
# a 2-layer SigLIP on 112 px images, each of which becomes 16 tokens. Gemma 3 average-pools its 8x8 patches
# of 14 px 2x2, as the real one pools 64x64 to 16x16; PaliGemma does not pool, so it sees 4x4 patches of 28 px
# (56 px in patches of 14 left hair colour unlearnt in the training test; 64 tokens of 14 px learn slower).
HIDDEN, HEADS, HEAD_DIM, LAYERS = 128, 4, 32, 2
IMAGE_SIZE, IMAGE_TOKENS = 112, 16
GEMMA3_PATCH, PALIGEMMA_PATCH = 14, 28


def _siglip(patch_size: int) -> dict:
    """A small SigLIP vision tower without the pooling head (neither family uses it)."""
    return dict(model_type="siglip_vision_model", hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                num_hidden_layers=LAYERS, num_attention_heads=HEADS, image_size=IMAGE_SIZE, patch_size=patch_size,
                vision_use_head=False)


def _gemma_text(vocab_size: int, tokenizer) -> dict:
    """What Gemma 2 and Gemma 3 text configs share at tiny size (special ids from the tokenizer)."""
    return dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS, head_dim=HEAD_DIM,
                query_pre_attn_scalar=HEAD_DIM, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=4096,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)


def _generation_ids(tokenizer, *stops: str) -> dict:
    """Special ids of greedy decoding that stops at <eos> and at any of ``stops``."""
    eos = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(t) for t in stops]
    return dict(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos if stops else eos[0])


def _tokenizer(corpus: list[str] | None, special: list[str], chat_template: str, **kwargs):
    tokenizer, _ = tiny_tokenizer(corpus, special, chat_template, eos="<eos>", pad="<pad>", bos="<bos>",
                                  unk_token="<unk>", **kwargs)
    return tokenizer


def build_tiny_gemma3(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    out = start_tiny(out_dir, seed)
    # the processor reads its image markers from the tokenizer, as from the hub's tokenizer_config.json
    tokenizer = _tokenizer(corpus, GEMMA3_SPECIAL, GEMMA3_CHAT_TEMPLATE,
                           extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                 "image_token": "<image_soft_token>"})
    image_processor = Gemma3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=IMAGE_TOKENS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GEMMA3_SPECIAL}
    config = Gemma3Config(
        text_config=dict(
            **_gemma_text(len(tokenizer), tokenizer), sliding_window=1024,
            layer_types=["sliding_attention", "full_attention"],  # Gemma 3 interleaves 5 local : 1 global
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        ),
        vision_config=_siglip(GEMMA3_PATCH), mm_tokens_per_image=IMAGE_TOKENS,
        boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    config.dtype = "float32"
    model = Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises the vision->text projection to zero (a checkpoint overwrites it); a tiny model
    # trained from scratch learns faster when images carry signal from the first step.
    model.model.multi_modal_projector.mm_input_projection_weight.data.normal_(0.0, HIDDEN ** -0.5)
    # Gemma 3 instruct stops at <end_of_turn> as well as <eos>, as on the hub
    save_tiny(out, "gemma3", seed, model, processor, _generation_ids(tokenizer, "<end_of_turn>"), image_processor)


def build_tiny_paligemma(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, \
        SiglipImageProcessor

    out = start_tiny(out_dir, seed)
    tokenizer = _tokenizer(corpus, PALIGEMMA_SPECIAL, PALIGEMMA_CHAT_TEMPLATE)
    image_processor = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3,
                                           image_seq_length=(IMAGE_SIZE // PALIGEMMA_PATCH) ** 2)
    # adds PaliGemma's 1024 <locNNNN> and 128 <segNNN> detection/segmentation tokens to the tokenizer
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   chat_template=PALIGEMMA_CHAT_TEMPLATE)
    vocab_size = len(tokenizer)
    config = PaliGemmaConfig(
        text_config=dict(model_type="gemma2", **_gemma_text(vocab_size, tokenizer), sliding_window=4096,
                         attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                         rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}),
        vision_config=_siglip(PALIGEMMA_PATCH), image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vocab_size=vocab_size, projection_dim=HIDDEN, hidden_size=HIDDEN,
    )
    config.dtype = "float32"
    model = PaliGemmaForConditionalGeneration(config)
    save_tiny(out, "paligemma", seed, model, processor, _generation_ids(tokenizer), image_processor)
