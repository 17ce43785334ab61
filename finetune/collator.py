"""Records -> model inputs with loss on assistant tokens only.

Labels are found in text space, where the chat template is readable: an
assistant reply spans from the end of the chat rendered up to its turn (with
the generation prompt) to the end of the chat rendered through its turn. The
processor then expands each image placeholder into its image tokens; those runs
are aligned back, so the mask works for any family whose processor repeats a
placeholder token, and nothing is ever truncated.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import torch

from facellm.images import load_image

IGNORE = -100


def group_by_image(records: list[dict], rng: random.Random) -> list[dict]:
    """One multi-turn chat per image: the vision tower encodes each image once.

    Attribute questions come in random order; a description, which restates
    every attribute, goes last so that no answer can be copied from it.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r["images"])].append(r)
    chats = []
    for images, group in groups.items():
        rng.shuffle(group)
        group.sort(key=lambda r: r["category"] == "description")
        messages = []
        for i, r in enumerate(group):
            user, *rest = r["messages"]
            if i:  # the image is shown once, in the first turn
                user = {**user, "content": [p for p in user["content"] if p["type"] != "image"]}
            messages += [user, *rest]
        chats.append({"id": group[0]["id"].split("#")[0], "images": list(images), "messages": messages})
    return chats


def _strip_nulls(messages: list[dict]) -> list[dict]:
    # Arrow stores image parts with text=None; chat templates test `'text' in content`
    return [{**m, "content": [{k: v for k, v in p.items() if v is not None} for p in m["content"]]}
            for m in messages]


class ChatCollator:
    def __init__(self, processor, image_root: str | Path, image_token: str, max_length: int | None = None):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_root = Path(image_root)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(image_token)
        self.max_length = max_length

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def assistant_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        text = self.render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            start = len(self.render(messages[:i], generation_prompt=True))
            end = len(self.render(messages[: i + 1]).rstrip())
            if not text.startswith(self.render(messages[: i + 1])):
                raise ValueError("the chat template is not prefix-stable; assistant spans cannot be located")
            spans.append((start, end))
        return text, spans

    def text_labels(self, text: str, spans: list[tuple[int, int]]) -> list[int]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [tid if any(s <= a and b <= e for s, e in spans) and b > a else IGNORE
                for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])]

    def expand_labels(self, labels: list[int], input_ids: list[int]) -> list[int]:
        """Map text-space labels onto processor ids, where each image placeholder became a run."""
        out, i = [], 0
        for j, tid in enumerate(input_ids):
            if tid == self.image_token_id:
                out.append(IGNORE)
                if j + 1 == len(input_ids) or input_ids[j + 1] != self.image_token_id:
                    i += 1  # end of a run: one placeholder consumed
            else:
                out.append(labels[i])
                i += 1
        if i != len(labels):
            raise ValueError(f"label alignment failed ({i} of {len(labels)} text tokens matched)")
        return out

    def __call__(self, chats: list[dict]) -> dict[str, torch.Tensor]:
        texts, text_labels, images = [], [], []
        for chat in chats:
            messages = _strip_nulls(chat["messages"])
            text, spans = self.assistant_spans(messages)
            texts.append(text)
            text_labels.append(self.text_labels(text, spans))
            images += [load_image(p, self.image_root) for p in chat["images"]]
        self.tokenizer.padding_side = "right"
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], IGNORE)
        for row, (ids, mask, tl) in enumerate(zip(batch["input_ids"], batch["attention_mask"], text_labels)):
            n = int(mask.sum())
            labels[row, :n] = torch.tensor(self.expand_labels(tl, ids[:n].tolist()))
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            raise ValueError(f"a batch is {batch['input_ids'].shape[1]} tokens long (max_length {self.max_length}); "
                             "raise max_length or lower the pixel budget: images are never truncated")
        batch["labels"] = labels
        return batch
