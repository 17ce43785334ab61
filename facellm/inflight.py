"""A bounded number of calls in flight over a lazy input: the loop behind every client that sends many
requests to a server (teacher QA, captioning, evaluation questions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], limit: int,
                name: str = "inflight") -> Iterator[tuple[T, R | Exception]]:
    """``(item, fn(item))`` for every item, in the order the calls finish, ``limit`` calls at a time in
    threads named ``name``.

    - At most ``limit`` calls run at once. Up to ``limit`` more items are read ahead and queued, so a
      thread that finishes starts its next call without waiting for the consumer; beyond that ``items``
      is read lazily (at most ``2 * limit`` items ahead of what has been yielded), so a generator of
      millions of items is fine.
    - An ``Exception`` raised by ``fn`` is yielded in place of its result, so one failed item does not
      end the others; the consumer decides what to raise.
    - Each result is yielded as soon as it is ready, so the consumer can journal it before the next.
    - Closing the iterator (``close()``, e.g. by ``contextlib.closing`` when the consumer breaks or
      raises; Ctrl-C while it waits) cancels the calls not yet started and waits for the running ones,
      so no call outlives it.
    """
    if limit < 1:
        raise ValueError(f"bounded_map: limit {limit}; expected at least 1")
    items = iter(items)
    pending: dict[Future, T] = {}
    pool = ThreadPoolExecutor(limit, thread_name_prefix=name)
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * limit:
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                pending[pool.submit(fn, item)] = item
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                error = future.exception()
                if error is None:
                    yield item, future.result()
                elif isinstance(error, Exception):
                    yield item, error
                else:  # KeyboardInterrupt, SystemExit raised inside fn: not an item's failure
                    raise error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
