"""What every tiny offline model shares: a BPE tokenizer trained on the QA texts, and a base corpus.

A tiny model is a randomly initialised VLM of a real architecture whose model,
tokenizer, chat template and processors are written with ``save_pretrained``
exactly as a hub checkpoint is laid out, so every stage loads it through the
same code path as a real model. Sizes respect what vLLM's CPU backend accepts
(attention head_dim 32, all processor files).
"""

from __future__ import annotations

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
