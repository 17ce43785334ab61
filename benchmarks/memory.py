"""Peak memory of a block of work, for the benchmarks (CPU: no allocator statistics to ask)."""

from __future__ import annotations

import os
import threading


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 20 ms: ``peak`` in
    bytes and ``growth_mib`` over the memory held when it started."""

    def __enter__(self):
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth_mib = (self.peak - self.start) / 2 ** 20


def rss() -> int:
    """Resident memory of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
