"""JSON-schema constrained decoding for transformers' ``generate``, through xgrammar (vLLM's default
structured-output backend), so the embedded engine honours ``response_format`` the way vLLM does:
every answer parses and validates, by construction rather than parse-and-hope."""

from __future__ import annotations

import json

from facellm.errors import FacellmError


class SchemaError(FacellmError, ValueError):
    """A JSON schema xgrammar cannot compile."""


class JsonConstraint:
    """Compiles schemas for one tokenizer (compiled grammars are cached by the compiler)."""

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr

        # the answer ends where the JSON does: the matcher then allows only the stop token
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=[tokenizer.eos_token_id])
        self._compiler = xgr.GrammarCompiler(info)

    def compile(self, schema: dict):
        try:
            # as vLLM's xgrammar backend compiles it (--structured-outputs-config disable_any_whitespace, which
            # facellm serve --engine vllm sets), so both engines give the same text: properties in the schema's
            # order, no free whitespace (an undertrained model would otherwise fill its budget with blanks)
            return self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
        except (RuntimeError, ValueError) as e:
            raise SchemaError(f"cannot use this JSON schema for constrained decoding: {e}") from None

    def logits_processor(self, schemas: list[dict]):
        """A fresh processor (they are single-use) constraining batch row i to ``schemas[i]``."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor([self.compile(s) for s in schemas])


def for_model(model, processor) -> JsonConstraint:
    # the model's vocabulary may be padded beyond the tokenizer's; the mask must cover every logit
    return JsonConstraint(processor.tokenizer, model.config.get_text_config().vocab_size)
