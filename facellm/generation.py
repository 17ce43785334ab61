"""Batched greedy/sampled generation from chat messages, shared by the engine, eval and training."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GenerationRequest:
    messages: list[dict]  # record-format messages: content parts {"type": "image"} / {"type": "text", "text"}
    images: list  # PIL images, one per image part, in order
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    json_schema: dict | None = None  # constrain the answer to JSON valid under this schema


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
def generate(model, processor, requests: list[GenerationRequest], constraint=None) -> list[tuple[str, int, int]]:
    """(text, prompt_tokens, completion_tokens) per request; one forward pass batch.

    Requests in a batch share the first request's sampling settings. Requests with a JSON schema need
    ``constraint`` (a ``facellm.constrained.JsonConstraint``) and a batch without unconstrained ones.
    """
    if not requests:
        return []
    inputs = prepare_inputs(processor, requests).to(model.device)
    out = model.generate(**inputs, **generation_kwargs(requests, processor, constraint))
    prompt_len = inputs["input_ids"].shape[1]
    results = []
    eos = processor.tokenizer.eos_token_id
    for row, mask in zip(out, inputs["attention_mask"]):
        completion = row[prompt_len:].tolist()
        if eos in completion:
            completion = completion[: completion.index(eos) + 1]
        pad = processor.tokenizer.pad_token_id
        completion = [t for t in completion if t != pad]
        text = processor.tokenizer.decode(completion, skip_special_tokens=True)
        results.append((text.strip(), int(mask.sum()), len(completion)))
    return results
