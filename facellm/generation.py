"""Batched greedy/sampled generation from chat messages, shared by the engine, eval and training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass
class GenerationRequest:
    messages: list[dict]  # record-format messages: content parts {"type": "image"} / {"type": "text", "text"}
    images: list  # PIL images, one per image part, in order
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    json_schema: dict | None = None  # constrain the answer to JSON valid under this schema
    logprobs: bool = False  # return each answer token's log-probability under the model
    top_logprobs: int = 0  # and, per token, this many most likely alternatives (OpenAI's top_logprobs)


class Generated(NamedTuple):
    text: str
    prompt_tokens: int
    completion_tokens: int
    # (token text, log-probability) per completion token, from the model's raw logits: what the model
    # believes, before any JSON constraint masks it (vLLM also reports unprocessed logprobs by default)
    logprobs: list[tuple[str, float]] | None = None
    top_logprobs: list[list[tuple[str, float]]] | None = None  # per completion token, most likely first
    cut_short: bool = False  # max_new_tokens ended the answer before the model's end token (OpenAI's "length")


class ConstraintMissing(RuntimeError):
    pass


def prepare_inputs(processor, requests: list[GenerationRequest]) -> dict[str, torch.Tensor]:
    """Left-padded processor inputs for a batch of prompts (generation prompt appended)."""
    texts = [processor.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in requests]
    # one list of images per prompt: processors such as SmolVLM's and Gemma3's read a flat list as one prompt's
    images = [list(r.images) for r in requests]
    processor.tokenizer.padding_side = "left"
    return processor(text=texts, images=images if any(images) else None, padding=True, return_tensors="pt")


def generation_kwargs(requests: list[GenerationRequest], processor, constraint=None) -> dict:
    """``generate`` kwargs of a batch: the first request's sampling settings, each row's JSON schema."""
    request = requests[0]
    kwargs = dict(max_new_tokens=request.max_new_tokens, pad_token_id=processor.tokenizer.pad_token_id)
    if any(r.json_schema for r in requests):
        if constraint is None or not all(r.json_schema for r in requests):
            raise ConstraintMissing("JSON-schema requests need a JsonConstraint and a batch of their own")
        kwargs["logits_processor"] = [constraint.logits_processor([r.json_schema for r in requests])]
    if request.temperature > 0:
        kwargs.update(do_sample=True, temperature=request.temperature, top_p=request.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


@torch.inference_mode()
def generate(model, processor, requests: list[GenerationRequest], constraint=None,
             streamer=None) -> list[Generated]:
    """One :class:`Generated` per request; one forward pass batch.

    Requests in a batch share the first request's sampling settings. Requests with a JSON schema need
    ``constraint`` (a ``facellm.constrained.JsonConstraint``) and a batch without unconstrained ones.
    ``streamer`` (transformers' streamers take one request) receives the tokens as they come.
    """
    if not requests:
        return []
    inputs = prepare_inputs(processor, requests).to(model.device)
    want_logprobs = any(r.logprobs for r in requests)
    out = model.generate(**inputs, **generation_kwargs(requests, processor, constraint),
                         output_logits=want_logprobs, return_dict_in_generate=True, streamer=streamer)
    prompt_len = inputs["input_ids"].shape[1]
    chosen = out.sequences[:, prompt_len:]
    if want_logprobs:
        distribution = torch.stack(out.logits, 1).float().log_softmax(-1)  # (batch, new tokens, vocab)
        token_logprobs = distribution.gather(-1, chosen[..., None])[..., 0]
        top = distribution.topk(max(r.top_logprobs for r in requests) or 1, dim=-1)
    results = []
    tokenizer = processor.tokenizer
    for i, (request, row, mask) in enumerate(zip(requests, chosen.tolist(), inputs["attention_mask"])):
        end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        kept = [k for k in range(end) if row[k] != tokenizer.pad_token_id]
        completion = [row[k] for k in kept]
        text = tokenizer.decode(completion, skip_special_tokens=True)
        logprobs = ([(tokenizer.decode([row[k]]), float(token_logprobs[i, k])) for k in kept]
                    if request.logprobs else None)
        alternatives = ([[(tokenizer.decode([t]), float(lp))
                          for t, lp in zip(top.indices[i, k, :request.top_logprobs].tolist(),
                                           top.values[i, k, :request.top_logprobs].tolist())] for k in kept]
                        if request.logprobs and request.top_logprobs else None)
        cut_short = tokenizer.eos_token_id not in row and len(row) >= request.max_new_tokens
        results.append(Generated(text.strip(), int(mask.sum()), len(completion), logprobs, alternatives, cut_short))
    return results
