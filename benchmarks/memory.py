"""Peak memory of a block of work, for the benchmarks (CPU: no allocator statistics to ask)."""

from __future__ import annotations

import os
import threading


class PeakRSS:
    """Peak resident memory of a process (default: this one) while the block runs, sampled every 20 ms:
    ``peak`` in bytes and ``growth_mib`` over the memory held when it started."""

    def __init__(self, pid: int | str = "self"):
        self.pid = pid

    def __enter__(self):
        self.start = self.peak = rss(self.pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss(self.pid))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth_mib = (self.peak - self.start) / 2 ** 20


def rss(pid: int | str = "self") -> int:
    """Resident memory of a process in bytes."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
