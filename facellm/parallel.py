"""Fan a batch stage out over this machine's cores or a Ray cluster: the one place work leaves the process.

A stage is a *worker*: a picklable factory (e.g. ``functools.partial(Ingest, cfg)``) that builds, once per
process or Ray actor, a callable taking a list of items and returning one result per item. The worker holds
what is expensive to set up (a face detector, a model engine); items and results are small (paths, journal
entries, output lines). :func:`fan_out` yields ``(item, result)`` as batches finish, so the caller journals
each result before the next arrives and decides the output order itself: results never depend on how
many workers ran or where.

- ``workers == 1``: in this process, no pool.
- ``workers > 1``: a ``ProcessPoolExecutor`` (spawned processes, each limited to its share of the cores). A
  worker process that dies (killed, out of memory) is replaced and its unfinished batches run again.
- ``ray``: Ray Data. Items become a dataset read in blocks; ``map_batches`` runs the worker in an actor pool
  (one worker per actor, ``num_cpus``/``num_gpus`` each); Ray restarts a dead actor and retries its batch.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from facellm.errors import FacellmError

Worker = Callable[[list], list]
RETRIES = 2  # a batch whose worker process died this many more times ends the run (the input may kill it)


def available_cores() -> int:
    """The cores this process may use (its CPU affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class FanOut:
    """Where a stage runs: ``workers`` processes here, or ``workers`` actors on the Ray cluster at ``ray``."""

    workers: int | None = None  # None: one per core here; on Ray, one per CPU the cluster has
    ray: str | None = None  # "auto", "HOST:PORT" or "ray://HOST:PORT"
    batch_size: int = 16
    num_cpus: float = 1  # per Ray actor
    num_gpus: float | None = 0  # per Ray actor: 1 puts one engine on each GPU; None: 1 where the cluster has GPUs

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise FacellmError(f"--workers {self.workers}: expected at least 1")
        if self.batch_size < 1:
            raise FacellmError(f"batch size {self.batch_size}: expected at least 1")


def limit_threads(threads: int) -> None:
    """Keep a worker's libraries to ``threads`` threads: N workers each using every core slow each other."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    import sys

    if "torch" in sys.modules:  # else torch reads OMP_NUM_THREADS when it is imported
        sys.modules["torch"].set_num_threads(threads)


def fan_out(make_worker: Callable[[], Worker], items: Sequence, fanout: FanOut) -> Iterator[tuple[Any, Any]]:
    """``(item, result)`` for every item, in the order batches finish."""
    if not items:
        return
    if fanout.ray:
        yield from _on_ray(make_worker, items, fanout)
        return
    batches = [list(items[i:i + fanout.batch_size]) for i in range(0, len(items), fanout.batch_size)]
    workers = min(fanout.workers or available_cores(), len(batches))
    if workers == 1:
        worker = make_worker()
        for batch in batches:
            yield from zip(batch, _checked(worker(batch), batch))
        return
    yield from _in_processes(make_worker, batches, workers)


def _checked(results: list, batch: list) -> list:
    if len(results) != len(batch):
        raise RuntimeError(f"a worker returned {len(results)} results for {len(batch)} items")
    return results


# ----------------------------------------------------------------------------- processes on this machine

_worker: Worker | None = None  # the worker of this pool process
_start_error: Exception | None = None  # why it could not be built (a model that does not load, ...)


def _start_process(make_worker: bytes, threads: int) -> None:
    global _worker, _start_error
    limit_threads(threads)  # before unpickling the factory imports the worker's libraries
    try:
        _worker = pickle.loads(make_worker)()
    except Exception as e:  # raised with the first batch, so the caller sees the reason, not a broken pool
        _start_error = e


def _run_batch(batch: list) -> list:
    if _start_error is not None:
        raise _start_error
    return _checked(_worker(batch), batch)


def _in_processes(make_worker, batches: list[list], workers: int) -> Iterator[tuple[Any, Any]]:
    import multiprocessing

    threads = max(1, available_cores() // workers)
    todo = list(range(len(batches)))  # batch numbers not yet finished, in submission order
    deaths = dict.fromkeys(todo, 0)
    while todo:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_process, initargs=(pickle.dumps(make_worker), threads))
        pending: dict[Future, int] = {}
        try:
            queue = iter(list(todo))
            for n in queue:  # keep every worker busy with one batch queued behind it, no more
                pending[pool.submit(_run_batch, batches[n])] = n
                if len(pending) >= 2 * workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    n = pending.pop(future)
                    results = future.result()  # BrokenProcessPool when a worker process died
                    todo.remove(n)
                    yield from zip(batches[n], results)
                    if (nxt := next(queue, None)) is not None:
                        pending[pool.submit(_run_batch, batches[nxt])] = nxt
        except BrokenProcessPool:
            if len(todo) == len(batches):  # not one batch came back: the processes could not start
                raise FacellmError("worker processes could not start (their error is above; a script that calls "
                                   "facellm must do so under `if __name__ == \"__main__\":`, as processes are "
                                   "spawned); --workers 1 runs in this process") from None
            for n in pending.values():
                deaths[n] += 1
                if deaths[n] > RETRIES:
                    names = ", ".join(str(getattr(i, "name", i)) for i in batches[n][:3])
                    raise FacellmError(f"a worker process died {deaths[n]} times on the batch holding {names} ...; "
                                       "finished work is saved: run the same command again to continue") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- a Ray cluster

class _RayWorker:
    """One stage worker in a Ray actor: rows of pickled items in, rows of pickled results out."""

    def __init__(self, make_worker: bytes, threads: int):
        limit_threads(threads)
        self.start_error = None
        try:
            self.worker = pickle.loads(make_worker)()
        except Exception as e:  # raised with the first batch: Ray reports a failed actor start without its reason
            self.start_error = e

    def __call__(self, rows: dict) -> dict:
        try:
            if self.start_error is not None:
                raise self.start_error
            batch = [pickle.loads(b) for b in rows["item"]]
            results = [pickle.dumps(r) for r in _checked(self.worker(batch), batch)]
        except Exception as e:  # sent back as a result: Ray would hand the driver its own error, the reason in text
            results = [pickle.dumps(_Raised(e))] * len(rows["index"])
        return {"index": rows["index"], "result": results}


@dataclass
class _Raised:
    error: Exception


def _on_ray(make_worker, items: Sequence, fanout: FanOut) -> Iterator[tuple[Any, Any]]:
    import ray

    with ray_cluster(fanout.ray):
        if fanout.num_gpus is None:
            fanout = replace(fanout, num_gpus=1 if ray.cluster_resources().get("GPU", 0) else 0)
        actors = min(_actors_that_fit(fanout), -(-len(items) // fanout.batch_size))
        ray.data.DataContext.get_current().enable_progress_bars = False  # the caller shows one bar over every item
        dataset = ray.data.from_items([{"index": i, "item": pickle.dumps(item)} for i, item in enumerate(items)],
                                      override_num_blocks=max(1, min(len(items) // fanout.batch_size, 10 * actors)))
        threads = max(1, int(fanout.num_cpus))
        results = dataset.map_batches(_RayWorker, fn_constructor_args=(pickle.dumps(make_worker), threads),
                                      batch_size=fanout.batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                                      num_cpus=fanout.num_cpus, num_gpus=fanout.num_gpus or None,
                                      batch_format="numpy")
        for row in results.iter_rows():
            result = pickle.loads(row["result"])
            if isinstance(result, _Raised):
                raise result.error
            yield items[int(row["index"])], result


def _actors_that_fit(fanout: FanOut) -> int:
    """Actors to start: ``workers`` (default: as many as the cluster's CPUs hold); an error naming what is
    missing where not even one fits (Ray would otherwise wait for resources forever)."""
    import ray

    have = ray.cluster_resources()
    fits = [int(have.get("CPU", 0) // fanout.num_cpus)]
    if fanout.num_gpus:
        fits.append(int(have.get("GPU", 0) // fanout.num_gpus))
    if min(fits) < 1:
        raise FacellmError(f"--ray {fanout.ray}: the cluster has {have.get('CPU', 0):g} CPUs and "
                           f"{have.get('GPU', 0):g} GPUs; each worker needs {fanout.num_cpus:g} CPUs"
                           + (f" and {fanout.num_gpus:g} GPUs" if fanout.num_gpus else ""))
    return min([*fits, fanout.workers] if fanout.workers else fits)


class ray_cluster:
    """Connected to the Ray cluster at ``address`` inside the block (a clear error where none answers)."""

    def __init__(self, address: str):
        self.address = address
        self.connected_here = False

    def __enter__(self):
        import ray

        if ray.is_initialized():
            return self
        _check_reachable(self.address)
        try:
            ray.init(address=self.address, logging_level="ERROR", configure_logging=True, log_to_driver=True)
        except Exception as e:  # ray raises ConnectionError, RuntimeError or its own auth errors
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise FacellmError(f"--ray {self.address}: cannot join the Ray cluster there ({first[:200]}); "
                               "start one with `ray start --head`, or pass the address it printed") from None
        self.connected_here = True
        return self

    def __exit__(self, *exc):
        if self.connected_here:
            import ray

            ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5) -> None:
    """A HOST:PORT that does not answer fails in seconds with its name, where ray.init would wait minutes."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise FacellmError(f"--ray {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise FacellmError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                           "`ray start --head` on that machine, or pass the address it printed") from None
