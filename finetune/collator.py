"""Records -> model inputs with loss on assistant tokens only.

Labels are found in text space, where the chat template is readable: an
assistant reply spans from the end of the chat rendered up to its turn (with
the generation prompt, and any whitespace separating the answer) to the end of
the chat rendered through its turn. The
processor then expands each image placeholder, by family, into image tokens and
sometimes extra markers (tiles, rows, image boundaries); the text tokens are
aligned with the processor's ids by sequence matching, so the mask holds for any
family, is checked to cover every answer token, and nothing is ever truncated.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
from array import array
from collections import defaultdict
from pathlib import Path

import torch

from facellm.families import Family
from facellm.images import load_image

IGNORE = -100


def group_by_image(records: list[dict], rng: random.Random) -> list[dict]:
    """One multi-turn chat per image: the vision tower encodes each image once.

    Attribute questions come in random order; a description, which restates
    every attribute, goes last so that no answer can be copied from it. Only
    records that are one question about their images and its answer are
    grouped (all of facellm's); other chats (text only, a system turn, several
    turns: data from elsewhere) stay as they are.
    """
    groups: dict[tuple | int, list[dict]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[tuple(r["images"]) if _one_question(r) else i].append(r)
    chats = []
    for images, group in groups.items():
        if not isinstance(images, tuple):
            chats.append(group[0])
            continue
        rng.shuffle(group)
        group.sort(key=lambda r: r.get("category") == "description")
        messages = []
        for i, r in enumerate(group):
            user, *rest = r["messages"]
            if i:  # the image is shown once, in the first turn
                user = {**user, "content": [p for p in user["content"] if p["type"] != "image"]}
            messages += [user, *rest]
        chats.append({"id": group[0]["id"].split("#")[0], "images": list(images), "messages": messages})
    return chats


def _one_question(record: dict) -> bool:
    """A user turn holding all of the record's images, then the answer."""
    messages = record["messages"]
    return (bool(record["images"]) and [m["role"] for m in messages] == ["user", "assistant"]
            and sum(p["type"] == "image" for p in messages[0]["content"]) == len(record["images"]))


def strip_nulls(messages: list[dict]) -> list[dict]:
    # Arrow stores image parts with text=None; chat templates test `'text' in content`
    return [{**m, "content": [{k: v for k, v in p.items() if v is not None} for p in m["content"]]}
            for m in messages]


class ChatCollator:
    def __init__(self, processor, image_root: str | Path, max_length: int | None = None,
                 family: Family | None = None):
        self.processor = processor
        self.prefix_lm = family is not None and family.prefix_lm
        self.tokenizer = processor.tokenizer
        self.image_root = Path(image_root)
        self.max_length = max_length
        # chat digest -> (text, text token ids, labels): the template work is the same every epoch, so it is
        # done once per chat (the pre-flight does it for the whole set)
        self._text_side: dict[bytes, tuple[str, array, array]] = {}

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def assistant_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        text = self.render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            start = len(self.render(messages[:i], generation_prompt=True))
            start = len(text) - len(text[start:].lstrip())  # a separator before the answer is not the answer
            end = len(self.render(messages[: i + 1]).rstrip())
            if not text.startswith(self.render(messages[: i + 1])):
                raise ValueError("the chat template is not prefix-stable; assistant spans cannot be located")
            spans.append((start, end))
        return text, spans

    def text_labels(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """Token ids of the text and their labels: the id inside an assistant span, else IGNORE.

        A token that folds the separator into the answer's first word (byte-level BPE's " The" after a
        generation prompt "ASSISTANT:") is the answer's: the model must learn to emit it.
        """
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)

        def content_start(a: int, b: int) -> int:  # where the token's text starts, leading whitespace skipped
            return b - len(text[a:b].lstrip())

        labels = [tid if any(s <= content_start(a, b) and s < b <= e for s, e in spans) and b > a else IGNORE
                  for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])]
        return enc["input_ids"], labels

    def text_side(self, chat: dict) -> tuple[str, array, array]:
        """The chat rendered by its template, its token ids and their labels; remembered by content."""
        messages = strip_nulls(chat["messages"])
        key = hashlib.blake2b(json.dumps(messages, sort_keys=True).encode(), digest_size=16).digest()
        if (known := self._text_side.get(key)) is None:
            text, spans = self.assistant_spans(messages)
            ids, labels = self.text_labels(text, spans)
            known = self._text_side[key] = (text, array("i", ids), array("i", labels))  # compact: sets are large
        return known

    def answer_tokens(self, chat: dict) -> int:
        """Tokens the loss is taken on: the chat's labelled tokens but its first (``labels[:, 1:]``, which no
        template labels: chats open with a role marker), the same count in text and processor space."""
        return sum(label != IGNORE for label in self.text_side(chat)[2][1:])

    @staticmethod
    def align_labels(text_ids: list[int], labels: list[int], input_ids: list[int]) -> list[int]:
        """Carry text-space labels over to the processor's ids, where image placeholders were expanded."""
        out = [IGNORE] * len(input_ids)
        for a, b, size in difflib.SequenceMatcher(a=text_ids, b=input_ids, autojunk=False).get_matching_blocks():
            out[b: b + size] = labels[a: a + size]
        if sum(x != IGNORE for x in out) != sum(x != IGNORE for x in labels):
            raise ValueError("label alignment failed: the processor changed tokens inside an answer")
        return out

    def __call__(self, chats: list[dict]) -> dict[str, torch.Tensor]:
        texts, text_labels, images = [], [], []
        for chat in chats:
            text, ids, labels = self.text_side(chat)
            texts.append(text)
            text_labels.append((ids, labels))
            images.append([load_image(p, self.image_root) for p in chat["images"]])  # nested: one list per chat
        self.tokenizer.padding_side = "right"
        batch = self.processor(text=texts, images=images if any(images) else None, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], IGNORE)
        for row, (ids, mask, (text_ids, tl)) in enumerate(zip(batch["input_ids"], batch["attention_mask"],
                                                                text_labels)):
            n = int(mask.sum())
            labels[row, :n] = torch.tensor(self.align_labels(text_ids, tl, ids[:n].tolist()))
        if self.max_length is not None and batch["input_ids"].shape[1] > self.max_length:
            raise ValueError(f"a batch is {batch['input_ids'].shape[1]} tokens long (max_length {self.max_length}); "
                             "raise max_length or lower the pixel budget: images are never truncated")
        batch["labels"] = labels
        if self.prefix_lm:  # the prompt up to the first answer is the bidirectional prefix, as at generation
            first = torch.where((labels != IGNORE).any(1), (labels != IGNORE).int().argmax(1), 0)
            batch["token_type_ids"] = (torch.arange(labels.shape[1]) >= first[:, None]).long()
        return batch
