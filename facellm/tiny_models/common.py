"""What every tiny offline model shares: a BPE tokenizer trained on the QA texts (dressed as each
family's tokenizer), the language model's size, and how a tiny model is written.

A tiny model is a randomly initialised VLM of a real architecture whose model,
tokenizer, chat template and processors are written with ``save_pretrained``
exactly as a hub checkpoint is laid out, so every stage loads it through the
same code path as a real model. Sizes respect what vLLM's CPU backend accepts
(attention head_dim 32, all processor files).
"""

from __future__ import annotations

import json
from pathlib import Path

from facellm.schema import ATTRIBUTES

# Words the tokenizer must know even without a corpus: schema labels and a little chat English.
BASE_CORPUS = [
    "You are a helpful assistant.",
    "Describe the face in this image. What is the person's expression? Is the person wearing glasses?",
    "The quick brown fox jumps over the lazy dog. Hello, how are you today? Yes. No. I cannot tell.",
    '{"expression": "happy", "glasses": "no", "skin_tone": "light", "head_pose": "frontal"}',
    "system\nuser\nassistant\n",  # role names follow a special token: they must be words of their own
] + [" ".join((a.name.replace("_", " "),) + a.values) for a in ATTRIBUTES.values()]


def train_bpe_tokenizer(texts: list[str], special_tokens: list[str], vocab_size: int = 1000):
    """A byte-level BPE tokenizer trained on ``texts`` (any byte string stays encodable)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


TINY_HIDDEN, TINY_HEADS = 128, 4  # head_dim 32: the smallest head size vLLM's CPU attention serves


def tiny_tokenizer(corpus: list[str] | None, special_tokens: list[str], chat_template: str, *, eos: str, pad: str,
                   bos: str | None = None, add_bos: bool = False, words: tuple[str, ...] = (),
                   space_before_answers: bool = False, **tokenizer_kwargs):
    """The shared byte-level BPE tokenizer dressed as a family's tokenizer: its special tokens (the
    family names some of ``special_tokens`` bos/eos/pad), its chat template and, for Llama tokenizers,
    a BOS prepended to every encoded text. ``words``: the template's own words (role names), so that
    they cost a token or two. ``space_before_answers``: the template puts a space between the generation
    prompt and the answer ("ASSISTANT: The ..."); the texts are learnt with a leading space too, so that
    the space folds into the first word (" The") as in a real BPE vocabulary, rather than standing alone
    as a token that the label mask leaves to the prompt and the model never learns to emit.

    Right padding is recorded in the tokenizer's init kwargs: a processor whose defaults pad left
    (InternVL) then follows the tokenizer's live ``padding_side``, which training and generation set.
    Returns (tokenizer, {special token: id}).
    """
    from transformers import PreTrainedTokenizerFast

    corpus = list(corpus or [])
    texts = BASE_CORPUS * 4 + list(words) * 4 + corpus + ([" " + t for t in corpus] if space_before_answers else [])
    tok = train_bpe_tokenizer(texts, special_tokens)
    ids = {t: tok.token_to_id(t) for t in special_tokens}
    named = {eos, pad, bos} | {v for k, v in tokenizer_kwargs.items() if k.endswith("_token")}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=pad, bos_token=bos, model_max_length=4096,
        padding_side="right", add_bos_token=add_bos,
        additional_special_tokens=[t for t in special_tokens if t not in named],
        chat_template=chat_template, **tokenizer_kwargs,
    )
    return tokenizer, ids


def tiny_text_config(vocab_size: int, **special_ids) -> dict:
    """The language model of every tiny model: hidden 128, 2 layers, 4 heads of 32."""
    return dict(vocab_size=vocab_size, hidden_size=TINY_HIDDEN, intermediate_size=4 * TINY_HIDDEN,
                num_hidden_layers=2, num_attention_heads=TINY_HEADS, num_key_value_heads=TINY_HEADS,
                max_position_embeddings=4096, tie_word_embeddings=False, **special_ids)


def save_tiny(out: Path, family: str, seed: int, model, processor, generation_ids: dict, *components) -> None:
    """Write a tiny model in the hub layout: weights, processor (plus each component's own file, which
    vLLM and older transformers read), a greedy generation config, and ``facellm_tiny.json``."""
    from transformers import GenerationConfig

    model.config.dtype = "float32"
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    for component in components:
        component.save_pretrained(out)
    GenerationConfig(do_sample=False, max_new_tokens=64, **generation_ids).save_pretrained(out)
    (out / "facellm_tiny.json").write_text(json.dumps(
        {"family": family, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
         "vocab_size": model.config.text_config.vocab_size}, indent=2))


def start_tiny(out_dir, seed: int) -> Path:
    """The output directory, created, with torch seeded for the random weights."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    return out
