"""The embedded transformers engine: one model, its LoRA adapters as extra model names, one worker thread.

The worker thread is the only thread that touches the model (torch modules and peft's active-adapter
switch are not thread-safe). Callers queue jobs; the worker batches non-streaming jobs that share a
model name and sampling settings into one ``facellm.generation.generate`` call, and runs streaming
jobs alone, token by token.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import facellm  # noqa: F401  (patches torchvision before transformers is imported)
import torch
from transformers import TextIteratorStreamer

from facellm.constrained import JsonConstraint, for_model
from facellm.errors import FacellmError
from facellm.generation import Generated, GenerationRequest, generate
from facellm.modeling import ModelDirError, load_model, load_processor, read_adapter

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256


class UnknownModelError(LookupError):
    """A request named a model this engine does not serve."""


class EngineBusy(RuntimeError):
    """The queue is full: the caller should retry after ``retry_after_s``."""

    def __init__(self, queued: int, retry_after_s: int):
        super().__init__(f"{queued} requests are queued, the most this server takes (facellm serve --max-queue); "
                         f"retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class _Job:
    model: str
    request: GenerationRequest
    streamer: object | None = None  # a TextIteratorStreamer for streaming jobs
    future: Future = field(default_factory=Future)

    @property
    def batch_key(self) -> tuple:
        # generate() applies the first request's settings to the whole batch, so only equal ones mix
        r = self.request
        schema = json.dumps(r.json_schema, sort_keys=True) if r.json_schema else None
        return self.model, r.max_new_tokens, r.temperature, r.top_p, schema


def load_served_model(model_dir: str | Path, adapters: dict[str, str | Path] | None = None,
                      min_pixels: int | None = None, max_pixels: int | None = None):
    """(model, processor) as transformers serves them: the model in eval mode, each adapter loaded as a peft
    adapter named by its key (the first one active), the processor seeing images within the pixel budget.

    The embedded engine and the offline engine (``serve/offline.py``) both load through here. A directory
    that does not load, or an adapter that does not fit the model, is a :class:`ModelDirError` naming it.
    """
    adapters = dict(adapters or {})
    for adapter_dir in adapters.values():
        read_adapter(adapter_dir)  # a clear error before the slow model load
    with loading_errors(f"{model_dir}: cannot load the model"):
        processor = load_processor(model_dir, min_pixels, max_pixels)
        model = load_model(model_dir)
    return _attach_adapters(model, adapters, model_dir).eval(), processor


def check_adapters_fit(model_dir: str | Path, adapters: dict[str, str | Path]) -> None:
    """:func:`load_served_model`'s adapter checks without its weights: peft loads the adapters into an empty
    (meta-device) copy of the model, in about a second whatever the model's size. For engines that would
    otherwise load an adapter that does not fit without a word (vLLM does, for a rank or targets that differ
    from its weights)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    for adapter_dir in adapters.values():
        read_adapter(adapter_dir)
    with loading_errors(f"{model_dir}: cannot load the model"):
        config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)
        with torch.device("meta"):
            skeleton = AutoModelForImageTextToText.from_config(config)
    _attach_adapters(skeleton, adapters, model_dir, low_cpu_mem_usage=True)


def _attach_adapters(model, adapters: dict[str, str | Path], model_dir: str | Path, **peft_kwargs):
    """``model`` with each adapter as a peft adapter named by its key, the first one active; an adapter that
    does not fit the model (shapes, target modules, weights its config lacks) is a ModelDirError."""
    for i, (name, adapter_dir) in enumerate(adapters.items()):
        with loading_errors(f"adapter {adapter_dir} does not fit the model {model_dir}"):
            if i == 0:
                from peft import PeftModel

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name, **peft_kwargs)
                missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
                for w in caught:
                    if str(w.message) not in missing:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            else:
                missing = model.load_adapter(str(adapter_dir), adapter_name=name, **peft_kwargs).missing_keys
            if missing:  # peft loads it anyway and leaves those layers untuned: answers would not be the tuned ones
                raise ModelDirError(f"adapter {adapter_dir} does not fit the model {model_dir}: it lacks weights "
                                    "for layers its config targets (trained on another base model?)")
    return model


@contextlib.contextmanager
def loading_errors(what: str):
    """Failures inside become a one-line ModelDirError: ``what``, then the cause's first line."""
    try:
        yield
    except FacellmError:
        raise
    except Exception as e:  # transformers/peft/safetensors raise many kinds; the person needs the directory
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or ["unreadable"]
        cause = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]  # "Error(s) in ...:" says nothing alone
        raise ModelDirError(f"{what}: {cause}") from e


class EmbeddedEngine:
    """Serves ``model_dir`` as ``served_name`` (default: the directory's name) and each adapter as its key,
    seeing images within the pixel budget (``facellm.modeling.serving_pixel_budget``).

    At most ``max_batch_size`` requests run together; at most ``max_queue`` wait behind them, and the next
    one is refused with :class:`EngineBusy` (the API's 503 + Retry-After) rather than queued without bound."""

    def __init__(self, model_dir: str | Path, adapters: dict[str, str | Path] | None = None,
                 max_batch_size: int = 16, batch_wait_ms: float = 5, served_name: str | None = None,
                 min_pixels: int | None = None, max_pixels: int | None = None,
                 max_queue: int = 256):
        adapters = dict(adapters or {})
        self.served_name = served_name or Path(model_dir).resolve().name
        if self.served_name in adapters:
            raise FacellmError(f"adapter name {self.served_name!r} is also the base model's served name")
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.batch_wait_s = batch_wait_ms / 1000
        self._batch_s = 1.0  # how long the last batch took: the Retry-After estimate
        self.model, self.processor = load_served_model(model_dir, adapters, min_pixels, max_pixels)
        self.adapters = list(adapters)

        self._pending: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="facellm-engine", daemon=True)
        self._worker.start()

    @functools.cached_property
    def constraint(self) -> JsonConstraint:
        """Built on the first JSON-schema request (indexing a real vocabulary takes a second or two)."""
        return for_model(self.model, self.processor)

    def models(self) -> list[str]:
        return [self.served_name, *self.adapters]

    def complete(self, name: str, messages: list[dict], images: list, max_tokens: int = DEFAULT_MAX_TOKENS,
                 temperature: float = 0.0, top_p: float = 1.0, json_schema: dict | None = None,
                 logprobs: bool = False, top_logprobs: int = 0) -> Generated:
        """Blocks until the batch holding this request is done.

        With ``json_schema`` the answer is JSON valid under it (constrained decoding), unless cut by max_tokens.
        """
        request = GenerationRequest(messages, images, max_tokens, temperature, top_p, json_schema, logprobs,
                                    top_logprobs)
        return self._submit(name, request).future.result()

    def stream(self, name: str, messages: list[dict], images: list, max_tokens: int = DEFAULT_MAX_TOKENS,
               temperature: float = 0.0, top_p: float = 1.0,
               json_schema: dict | None = None) -> tuple[Iterator[str], Callable[[], Generated]]:
        """Text deltas whose concatenation equals ``complete``'s text for the same request, and a function
        giving the whole answer (token counts, whether max_tokens cut it) once the deltas are read.

        The model name is checked now, so an unknown model raises before the first delta is asked for.
        """
        streamer = _Streamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        request = GenerationRequest(messages, images, max_tokens, temperature, top_p, json_schema)
        job = self._submit(name, request, streamer)

        def deltas() -> Iterator[str]:
            try:
                yield from _stripped(streamer)
            finally:  # read to the end, or closed early (the client went away): either way, generate no more
                streamer.stopped = True
            job.future.result()  # re-raise a failure in the worker (it ended the streamer early)

        return deltas(), job.future.result

    def close(self) -> None:
        """Stop the worker after its current batch; queued requests fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join()
        for job in self._pending:
            self._fail(job, RuntimeError("engine closed"))

    def _submit(self, name: str, request: GenerationRequest, streamer=None) -> _Job:
        if name not in self.models():
            raise UnknownModelError(f"model {name!r} is not served here; available: {', '.join(self.models())}")
        if request.json_schema is not None:
            self.constraint.compile(request.json_schema)  # a bad schema fails its caller now, not the batch
        job = _Job(name, request, streamer)
        with self._cond:
            if self._closed:
                raise RuntimeError("engine closed")
            if len(self._pending) >= self.max_queue:
                batches_ahead = len(self._pending) / self.max_batch_size
                raise EngineBusy(len(self._pending), max(1, math.ceil(batches_ahead * self._batch_s)))
            self._pending.append(job)
            self._cond.notify()
        return job

    def _work(self) -> None:
        while batch := self._next_batch():
            start = time.monotonic()
            self._run(batch)
            self._batch_s = time.monotonic() - start

    def _next_batch(self) -> list[_Job]:
        """The oldest job plus compatible queued ones, waiting up to batch_wait for more; [] once closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            batch = [self._pending.popleft()]
            if batch[0].streamer is not None:
                return batch
            deadline = time.monotonic() + self.batch_wait_s
            while True:
                for job in [j for j in self._pending if j.streamer is None and j.batch_key == batch[0].batch_key]:
                    if len(batch) == self.max_batch_size:
                        break
                    self._pending.remove(job)
                    batch.append(job)
                remaining = deadline - time.monotonic()
                if len(batch) == self.max_batch_size or remaining <= 0:
                    return batch
                self._cond.wait(remaining)

    def _run(self, batch: list[_Job]) -> None:
        log.debug("running %d request(s) on %s", len(batch), batch[0].model)
        try:
            with self._use(batch[0].model):
                constraint = self.constraint if batch[0].request.json_schema else None  # batches don't mix
                results = generate(self.model, self.processor, [job.request for job in batch], constraint,
                                   batch[0].streamer)  # streaming jobs run alone
        except Exception as e:
            if len(batch) > 1:  # rerun one by one, so a bad request fails alone, not its batch neighbours
                for job in batch:
                    self._run([job])
            else:
                self._fail(batch[0], e)
            return
        for job, result in zip(batch, results):
            job.future.set_result(result)

    def _use(self, name: str):
        """Context in which ``self.model`` is the base model or the named adapter."""
        if name != self.served_name:
            self.model.set_adapter(name)
            return contextlib.nullcontext()
        return self.model.disable_adapter() if self.adapters else contextlib.nullcontext()

    @staticmethod
    def _fail(job: _Job, error: Exception) -> None:
        job.future.set_exception(error)
        if job.streamer is not None:
            job.streamer.end()  # wake the reader, which then re-raises the error from the future


class StreamClosed(RuntimeError):
    pass


class _Streamer(TextIteratorStreamer):
    """A text streamer that ends the generation feeding it once its reader has stopped (a client that closed
    its stream): the worker moves on to the next batch instead of finishing an answer nobody reads."""

    stopped = False

    def put(self, value):
        if self.stopped:
            raise StreamClosed("the client closed its stream")
        super().put(value)


def _stripped(deltas: Iterable[str]) -> Iterator[str]:
    """Non-empty deltas whose concatenation is ``"".join(deltas).strip()``, as generate() returns text.

    Leading whitespace is dropped; trailing whitespace is held back until more text follows it.
    """
    held = ""
    started = False
    for delta in deltas:
        if not started:
            delta = delta.lstrip()
            started = bool(delta)
        body = delta.rstrip()
        if body:
            yield held + body
            held = delta[len(body):]
        else:
            held += delta
