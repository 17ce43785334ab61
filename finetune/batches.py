"""Training batches: a pre-flight pass over the data, then an endless, seeded, resumable batch stream.

The pre-flight measures every chat in tokens, image tokens included, without
running the processor on every image: image token counts depend only on image
size, so each distinct size is measured once. Its lengths let batches group
chats of similar length (less padding) and let a ``max_length`` that would cut
an image be refused before training starts. It renders and labels every chat's
text once; the collator keeps that for every epoch's batches.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from facellm.errors import FacellmError
from facellm.images import image_size
from finetune.collator import ChatCollator


@dataclass
class Preflight:
    lengths: list[int]  # tokens per chat, image tokens included
    image_tokens: dict[tuple[int, int], int]  # tokens an image of (width, height) adds to the chat's text

    def longest(self) -> int:
        return max(self.lengths)

    def summary(self, chats: list[dict]) -> dict:
        i = max(range(len(self.lengths)), key=self.lengths.__getitem__)
        return {"longest_tokens": self.lengths[i], "longest_id": chats[i]["id"],
                "mean_tokens": round(sum(self.lengths) / len(self.lengths), 1),
                "image_tokens": {f"{w}x{h}": n for (w, h), n in sorted(self.image_tokens.items())}}


def preflight(chats: list[dict], collator: ChatCollator, image_root: Path) -> Preflight:
    tokenizer, sizes, per_size = collator.tokenizer, {}, {}
    for chat in chats:
        for path in chat["images"]:  # paths relative to image_root, absolute paths or embedded bytes
            if path not in sizes:
                sizes[path] = image_size(path, image_root)  # the header only: no decode
    for size in set(sizes.values()):
        probe = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
        text = collator.render(probe)
        with_image = collator.processor(text=[text], images=[Image.new("RGB", size)], return_tensors="pt")
        per_size[size] = with_image["input_ids"].shape[1] - len(tokenizer(text, add_special_tokens=False)["input_ids"])
    # the collator remembers each chat's text side, so the batches of every epoch reuse this pass's work
    lengths = [len(collator.text_side(chat)[1]) + sum(per_size[sizes[p]] for p in chat["images"])
               for chat in tqdm(chats, desc="pre-flight", unit="chat", disable=len(chats) < 5000)]
    return Preflight(lengths, per_size)


def check_max_length(report: Preflight, chats: list[dict], max_length: int | None) -> None:
    if max_length is None or report.longest() <= max_length:
        return
    s = report.summary(chats)
    raise FacellmError(
        f"max_length {max_length} would cut samples: the longest ({s['longest_id']}) is {s['longest_tokens']} tokens, "
        f"images included ({s['image_tokens']} tokens per image size). Images are never truncated: raise max_length "
        f"to at least {s['longest_tokens']}, or lower the pixel budget so images take fewer tokens, or set "
        "group_by_image: false for shorter chats")


def training_steps(max_steps: int | None, epochs: float | None, chats: int, chats_per_step: int,
                   default: int) -> int:
    """Optimiser steps of a run: ``max_steps`` as given, or ``ceil(epochs * chats / chats_per_step)``.

    ``chats_per_step`` is every chat one step sees: ``batch_size * grad_accum`` here, since ``batch_size`` is
    the batch of the whole step, split across processes (``B * accum * world`` with a per-process ``B``).
    ``default`` applies where a recipe sets neither.
    """
    if epochs is not None:
        return max(1, math.ceil(epochs * chats / chats_per_step))
    return default if max_steps is None else max_steps


class ShuffledBatches(torch.utils.data.IterableDataset):
    """Endless collated batches, reshuffled each epoch from the seed; batch ``start`` onward (resume).

    With ``lengths``, each run of 32 batches is cut from chats sorted by length and the batches are
    shuffled again, so a batch pads little and the order stays random. With ``world`` > 1 every rank
    collates its own share of each batch (data parallel: together they see the single-process batch).

    Each batch carries ``step_answer_tokens``: the answer tokens of its optimiser step (``grad_accum``
    batches, all ranks' shares), the loss's denominator, counted from the chats' text labels. So a step's
    first micro-batch trains before the others are collated, and the ranks need not exchange counts.
    """

    def __init__(self, chats: list[dict], batch_size: int, seed: int, collator: ChatCollator,
                 lengths: list[int] | None = None, start: int = 0, rank: int = 0, world: int = 1,
                 grad_accum: int = 1):
        self.chats, self.batch_size, self.seed, self.collator = chats, batch_size, seed, collator
        self.lengths, self.start, self.rank, self.world = lengths, start, rank, world
        self.grad_accum = grad_accum

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed + epoch)
        order = rng.sample(range(len(self.chats)), len(self.chats))
        batches = [order[i: i + self.batch_size] for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]
        if self.lengths is None:
            return batches
        grouped, span = [], 32 * self.batch_size
        for i in range(0, len(batches) * self.batch_size, span):
            run = sorted(order[i: i + span], key=self.lengths.__getitem__)
            grouped += [run[j: j + self.batch_size] for j in range(0, len(run) - self.batch_size + 1, self.batch_size)]
        rng.shuffle(grouped)
        return grouped

    def batch_ids(self):
        """Chat indices of every batch from ``start`` on, endlessly."""
        per_epoch = len(self.chats) // self.batch_size
        if per_epoch == 0:
            raise FacellmError(f"{len(self.chats)} training examples, fewer than batch_size {self.batch_size}")
        epoch, skip = divmod(self.start, per_epoch)
        while True:
            yield from self.epoch_batches(epoch)[skip:]
            epoch, skip = epoch + 1, 0

    def __iter__(self):
        ids = self.batch_ids()
        while True:
            step = [next(ids) for _ in range(self.grad_accum)]  # may span two epochs
            answer_tokens = torch.tensor(sum(self.collator.answer_tokens(self.chats[i]) for b in step for i in b))
            for batch in step:
                collated = self.collator([self.chats[i] for i in batch[self.rank:: self.world]])
                collated["step_answer_tokens"] = answer_tokens
                yield collated
