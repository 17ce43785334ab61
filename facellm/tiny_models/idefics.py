"""Tiny offline Idefics3 and SmolVLM (SmolVLM2-style) models.

The two are near-twins in transformers: a SigLIP-style vision tower, a pixel-shuffle
connector (``scale_factor``) and a Llama language model; their processors expand each
``<image>`` into ``<fake_token_around_image><global-img>`` + ``image_seq_len`` image tokens
+ ``<fake_token_around_image>`` when image splitting is off. What differs (classes,
special tokens, chat template's BOS, patch size) lives in a ``_Variant``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facellm.tiny_models.common import (TINY_HEADS, TINY_HIDDEN, save_tiny, start_tiny, tiny_text_config,
                                        tiny_tokenizer)

# The processors' markers around and inside images (6x6 tile grid, unused with splitting off
# but part of the real vocabularies, and looked up by the processors and by vLLM).
IMAGE_MARKERS = (["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
                 + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])


def _chat_template(bos: str, video: bool) -> str:
    """The real template (Idefics2/3, SmolVLM2): "User:<image>question<end_of_utterance>\\nAssistant: answer".

    Nothing in it costs a sample extra tokens (no system prompt), so it is kept whole;
    "Assistant:" as the generation prompt leaves the space to the answer's first token.
    """
    return (
        bos + "{% for message in messages %}{{message['role'] | capitalize}}"
        "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
        "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
        "{% elif line['type'] == 'image' %}{{ '<image>' }}"
        + ("{% elif line['type'] == 'video' %}{{ '<video>' }}" if video else "")
        + "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    )


@dataclass(frozen=True)
class _Variant:
    model_type: str
    classes: tuple[str, str, str, str]  # config, model, image processor, processor (transformers names)
    video_processor: str | None  # SmolVLM's processor requires one
    bos: str
    eos: str  # ends an assistant turn: generation stops there
    pad: str
    specials: list[str]  # the text model's own special tokens, before IMAGE_MARKERS
    chat_template: str
    patch_size: int  # 14: so400m-style towers (Idefics3); 16: SigLIP-base-style (SmolVLM(2) 256M/500M)


IDEFICS3 = _Variant(
    "idefics3", ("Idefics3Config", "Idefics3ForConditionalGeneration", "Idefics3ImageProcessor", "Idefics3Processor"),
    None, bos="<|begin_of_text|>", eos="<end_of_utterance>", pad="<|reserved_special_token_0|>",
    specials=["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"],
    chat_template=_chat_template("<|begin_of_text|>", video=False), patch_size=14,
)
SMOLVLM = _Variant(
    "smolvlm", ("SmolVLMConfig", "SmolVLMForConditionalGeneration", "SmolVLMImageProcessor", "SmolVLMProcessor"),
    "SmolVLMVideoProcessor", bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>",
    specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    chat_template=_chat_template("<|im_start|>", video=True), patch_size=16,
)

# The template's role words, so that each costs one token
ROLE_WORDS = ["User: Assistant: User:\nAssistant:"]

# Pixel budget of the tiny models: one square image (no tiles) of 8x8 patches, pixel-shuffled 4x4
# (SmolVLM-256M/500M's scale factor) into 4 image tokens + 3 markers. With scale 2 (16 tokens)
# held-out hair colour after the 300-step test swung from 0.375 to 0.8 with details as small as the
# BOS id or patch size; with 4 both colours reached 1.0 in both families (SmolVLM: two seeds).
TINY_PATCHES_PER_SIDE, TINY_SCALE_FACTOR = 8, 4


def _build(v: _Variant, out_dir: str | Path, corpus: list[str] | None, seed: int) -> None:
    import transformers

    config_cls, model_cls, image_processor_cls, processor_cls = (getattr(transformers, c) for c in v.classes)
    out = start_tiny(out_dir, seed)
    # "Assistant: {answer}": a space before every answer
    tokenizer, ids = tiny_tokenizer(corpus, v.specials + IMAGE_MARKERS, v.chat_template, eos=v.eos, pad=v.pad,
                                    bos=v.bos, words=ROLE_WORDS, space_before_answers=True)
    image_size = TINY_PATCHES_PER_SIDE * v.patch_size
    image_seq_len = (TINY_PATCHES_PER_SIDE // TINY_SCALE_FACTOR) ** 2
    pixels = dict(size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size})
    image_processors = [image_processor_cls(do_image_splitting=False, **pixels)]
    extra = {}
    if v.video_processor:
        extra["video_processor"] = getattr(transformers, v.video_processor)(**pixels)
    processor = processor_cls(image_processor=image_processors[0], tokenizer=tokenizer, image_seq_len=image_seq_len,
                              chat_template=v.chat_template, **extra)

    special = dict(bos_token_id=ids[v.bos], eos_token_id=ids[v.eos], pad_token_id=ids[v.pad])
    config = config_cls(
        text_config=dict(model_type="llama", rms_norm_eps=1e-5, **tiny_text_config(len(tokenizer), **special)),
        vision_config=dict(hidden_size=TINY_HIDDEN, intermediate_size=4 * TINY_HIDDEN, num_hidden_layers=2,
                           num_attention_heads=TINY_HEADS, image_size=image_size, patch_size=v.patch_size),
        scale_factor=TINY_SCALE_FACTOR, image_token_id=ids["<image>"], tie_word_embeddings=False, **special,
    )
    config.dtype = "float32"
    save_tiny(out, v.model_type, seed, model_cls(config), processor, special, *image_processors, *extra.values())


def build_tiny_idefics3(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    _build(IDEFICS3, out_dir, corpus, seed)


def build_tiny_smolvlm(out_dir: str | Path, corpus: list[str] | None = None, seed: int = 0) -> None:
    _build(SMOLVLM, out_dir, corpus, seed)
