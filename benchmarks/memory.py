"""Peak memory of a block of work, for the benchmarks (CPU: no allocator statistics to ask)."""

from __future__ import annotations

import os
import threading


class PeakRSS:
    """Peak resident memory of a process (default: this one; ``tree``: with every process it started, e.g.
    vLLM's engine) while the block runs, sampled every 20 ms: ``peak`` in bytes and ``growth_mib`` over the
    memory held when it started."""

    def __init__(self, pid: int | str = "self", tree: bool = False):
        self.pid, self.tree = pid, tree

    def _rss(self) -> int:
        return tree_rss(self.pid) if self.tree else rss(self.pid)

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth_mib = (self.peak - self.start) / 2 ** 20


def rss(pid: int | str = "self") -> int:
    """Resident memory of a process in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tree_rss(pid: int | str = "self") -> int:
    """Resident memory of a process and all its descendants, in bytes (gone ones count 0)."""
    pid = os.getpid() if pid == "self" else int(pid)
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += rss(current)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(child) for child in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
