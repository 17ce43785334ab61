"""Tiny offline models: a randomly initialised VLM of each registered family's real architecture.

``common`` holds what they all share (the BPE tokenizer trained on the QA texts, the
language model's size, how a model is written); each other module builds the models of
one family line (hand-written chat templates, special tokens, processors, config). The
registry (:mod:`facellm.families`) names each family's builder; call it through
``family(name).build_tiny(out_dir, corpus, seed)``.
"""
