"""facellm.inflight.bounded_map: at most N calls at once, lazy input, per-item errors, completion order."""

import itertools
import threading
import time
from contextlib import closing

import pytest

from facellm.inflight import bounded_map


class Gauge:
    """How many calls run at once, at most."""

    def __init__(self):
        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *_):
        with self.lock:
            self.now -= 1


@pytest.mark.parametrize("limit", [1, 3, 8])
def test_never_more_than_limit_calls_at_once_and_every_item_once(limit):
    gauge = Gauge()

    def work(n):
        with gauge:
            time.sleep(0.005 * (1 + n % 3))
            return n * n

    results = dict(bounded_map(work, range(40), limit))
    assert results == {n: n * n for n in range(40)}
    assert gauge.peak == limit  # parallel, and capped


def test_input_is_read_lazily_so_an_endless_generator_works_with_an_early_stop():
    read = itertools.count()
    pulled = []

    def endless():
        for n in read:
            pulled.append(n)
            yield n

    with closing(bounded_map(lambda n: n, endless(), 4)) as results:
        got = [n for n, _ in itertools.islice(results, 10)]
    assert len(got) == 10
    assert len(pulled) <= 10 + 2 * 4  # at most 2 * limit read ahead of what was handed back


def test_exceptions_come_back_per_item_and_the_rest_go_on():
    def work(n):
        if n % 4 == 0:
            raise ValueError(f"bad {n}")
        return n

    results = dict(bounded_map(work, range(12), 3))
    assert sorted(results) == list(range(12))
    for n, result in results.items():
        if n % 4 == 0:
            assert isinstance(result, ValueError) and str(result) == f"bad {n}"
        else:
            assert result == n


def test_results_come_in_completion_order_not_input_order():
    delays = {"slow": 0.3, "medium": 0.15, "fast": 0.0}
    order = [item for item, _ in bounded_map(lambda k: time.sleep(delays[k]), ["slow", "medium", "fast"], 3)]
    assert order == ["fast", "medium", "slow"]


def test_closing_early_cancels_queued_calls_and_waits_for_running_ones():
    started, finished = [], []
    lock = threading.Lock()

    def work(n):
        with lock:
            started.append(n)
        time.sleep(0.05)
        with lock:
            finished.append(n)
        return n

    with closing(bounded_map(work, range(100), 2)) as results:
        next(results)
    assert sorted(started) == sorted(finished)  # nothing still running once closed
    assert len(started) <= 1 + 2 * 2  # the queued ones never started


def test_a_consumer_error_closes_the_pool():
    def work(n):
        time.sleep(0.01)
        return n

    before = threading.active_count()
    with pytest.raises(RuntimeError), closing(bounded_map(work, range(50), 4, name="t")) as results:
        for _ in results:
            raise RuntimeError("consumer failed")
    assert threading.active_count() == before


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        next(bounded_map(str, [1], 0))
