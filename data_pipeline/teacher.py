"""Teacher-LLM QA writer: a vision LLM behind an OpenAI-compatible API writes face QA.

FaceLLM (FairFaceGPT) recipe: the teacher sees the image *and* its ground-truth labels
(plus cues we measured, e.g. head pose or blur) and writes question/answer pairs in 8
categories; the labels are stated as facts so the answers cannot drift from the truth.

Robustness is the point of this module, because a dataset build sends thousands of
requests to a server we do not control:

- retries with exponential backoff and full jitter on 429, 5xx, timeouts, dropped
  connections and unusable replies (bad JSON, no ``qa`` list); other 4xx fail at once
  with a message saying what to fix;
- an on-disk cache keyed by (image bytes, prompt, model), written atomically, so a
  rerun after a crash re-asks nothing it already has;
- a thread-safe usage counter (requests, retries, failures by kind, tokens, cost).
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from facellm.atomic import atomic_open
from facellm.errors import FacellmError
from facellm.images import load_image, to_data_url
from facellm.inflight import bounded_map

log = logging.getLogger(__name__)

FACELLM_CATEGORIES = (
    "demographics",
    "facial_structure",
    "skin_texture",
    "expression",
    "lighting_quality",
    "head_pose",
    "forensic",
    "fine_detail",
)

# What each category asks about; only the requested ones go into the prompt.
CATEGORY_GUIDE = {
    "demographics": "perceived age group, gender presentation and ethnicity, as appearance only",
    "facial_structure": "face shape, proportions, jaw, cheekbones, nose, eyes, brows, lips",
    "skin_texture": "skin tone, smoothness, wrinkles, blemishes, facial hair, make-up",
    "expression": "emotion shown, mouth and eye state, muscle movements",
    "lighting_quality": "lighting direction and evenness, exposure, sharpness, blur, resolution",
    "head_pose": "which way the head is turned or tilted, whether the face is frontal",
    "forensic": "signs of editing, synthesis or compression artefacts, and whether the image looks natural",
    "fine_detail": "accessories (glasses, earrings, hats), hair colour and style, small distinctive details",
}

IMAGE_PLACEHOLDER = "<image>"  # stands in for the data URL in the cache key
MAX_IMAGE_SIDE = 1024  # larger photos are downscaled: the teacher gains nothing, the request grows
MAX_CUE_LIST = 16  # longer lists (landmark arrays) cost thousands of tokens and say nothing to an LLM


class TeacherError(FacellmError):
    """The teacher could not produce QA for an image; the message says why and what to do."""


@dataclass
class TeacherConfig:
    url: str  # OpenAI-compatible base URL, e.g. http://127.0.0.1:9000/v1
    model: str
    api_key: str | None = None  # falls back to FACELLM_TEACHER_API_KEY, then OPENAI_API_KEY
    qa_per_category: int = 2
    categories: tuple[str, ...] = FACELLM_CATEGORIES
    concurrency: int = 8
    max_retries: int = 6
    backoff_base: float = 0.5  # seconds
    backoff_max: float = 20.0  # seconds
    timeout: float = 60.0  # seconds per request
    temperature: float = 0.7
    max_tokens: int = 1024
    price_input_per_mtok: float = 0.0  # currency units per million prompt tokens
    price_output_per_mtok: float = 0.0

    def resolved_api_key(self) -> str:
        # local servers (vLLM) often need no key, but the client insists on one
        return self.api_key or os.environ.get("FACELLM_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"


@dataclass
class TeacherUsage:
    """Running totals, safe to update from the worker threads."""

    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    requests: int = 0  # HTTP requests sent, failed ones included
    retries: int = 0
    failures: Counter = field(default_factory=Counter)  # kind -> count: "429", "500", "timeout", ...
    gave_up: int = 0  # images that ended in TeacherError
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def fail(self, kind: str) -> None:
        with self._lock:
            self.failures[kind] += 1

    @property
    def cost(self) -> float:
        paid = self.prompt_tokens * self.price_input_per_mtok + self.completion_tokens * self.price_output_per_mtok
        return paid / 1e6

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "failures": dict(self.failures),
                "gave_up": self.gave_up,
                "cache_hits": self.cache_hits,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost": self.cost,
            }

    def summary(self) -> str:
        d = self.as_dict()
        failures = ", ".join(f"{k}×{v}" for k, v in sorted(d["failures"].items())) or "none"
        return (
            f"teacher: {d['requests']} requests, {d['retries']} retries (failures: {failures}), "
            f"{d['gave_up']} images given up, {d['cache_hits']} cache hits, "
            f"{d['prompt_tokens']:,} prompt + {d['completion_tokens']:,} completion tokens, cost {d['cost']:.4f}"
        )


def _round_cues(value: Any) -> Any:
    """JSON-ready cues: floats rounded to 2 places (numpy scalars too), long lists dropped."""
    if isinstance(value, dict):
        out = {str(k): _round_cues(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_round_cues(v) for v in value] if len(value) <= MAX_CUE_LIST else None
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return round(float(value), 2)
    if hasattr(value, "tolist"):  # numpy arrays
        return _round_cues(value.tolist())
    return str(value)


def build_prompt(
    labels: dict, cues: dict, categories: Iterable[str], n: int, image_url: str = IMAGE_PLACEHOLDER
) -> list[dict]:
    """Chat messages asking for ``n`` QA pairs per category about one face image.

    The labels go in as facts the teacher must not contradict (FaceLLM's recipe);
    unknown (None/empty) labels are left out rather than stated.
    """
    categories = list(categories)
    guide = "\n".join(f"- {c}: {CATEGORY_GUIDE.get(c, c.replace('_', ' '))}" for c in categories)
    system = (
        "You write training data for a face-understanding assistant. You are shown one face image "
        "with facts about it: ground-truth labels annotated by people, and cues measured by software.\n"
        f"Write exactly {n} question/answer pair(s) for each of these categories:\n{guide}\n"
        "Rules:\n"
        "1. The labels are the truth. Never contradict them, even where the image seems to suggest otherwise.\n"
        "2. State nothing that neither the image nor these facts support; if something cannot be judged "
        "from the image, say so.\n"
        "3. Phrase perceived attributes (age, gender, ethnicity, emotion) as appearance: "
        "'appears to be', 'looks'.\n"
        "4. Never identify the person, guess a name, or say whom they resemble.\n"
        "5. Questions are varied and natural, as a user would ask them; answers are 1-3 complete "
        "sentences grounded in visible detail.\n"
        "Reply with JSON only, no prose and no markdown fences: "
        '{"qa": [{"category": "<one of the categories>", "question": "...", "answer": "..."}]}'
    )
    facts = {k: v for k, v in _round_cues(dict(labels or {})).items() if v != ""}
    text = (
        f"Labels: {json.dumps(facts, ensure_ascii=False, sort_keys=True)}\n"
        f"Cues: {json.dumps(_round_cues(dict(cues or {})), ensure_ascii=False, sort_keys=True)}\n"
        f"Categories: {json.dumps(categories)}\n"
        f"Pairs per category: {n}"
    )
    return [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": text},
            ],
        },
    ]


def parse_qa(content: str | None, categories: Iterable[str]) -> list[tuple[str, str, str]]:
    """(category, question, answer) from the teacher's reply; ValueError when it is unusable.

    Pairs for categories we did not ask for and empty pairs are dropped; a reply
    with nothing left is unusable (and retried by the caller).
    """
    wanted = set(categories)
    text = (content or "").strip()
    if text.startswith("```"):  # some models fence JSON even when told not to
        text = text.strip("`").removeprefix("json").strip()
    data = json.loads(text)  # JSONDecodeError is a ValueError
    items = data.get("qa") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError('reply has no "qa" list')
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"qa item is not an object: {item!r:.80}")
        cat, q, a = (item.get(k) for k in ("category", "question", "answer"))
        if not all(isinstance(s, str) or s is None for s in (cat, q, a)):
            raise ValueError(f"qa item has non-string fields: {item!r:.80}")
        cat, q, a = ((s or "").strip() for s in (cat, q, a))
        if cat in wanted and q and a:
            pairs.append((cat, q, a))
    if not pairs:
        raise ValueError("reply has no usable question/answer pairs for the requested categories")
    return pairs


class _Cache:
    """One JSON file per key, written atomically (each write its own temp file: threads, and builds sharing
    the cache, may write one key at once), so readers never see half a file.

    A file that does not parse (torn by a crash before the rename was durable, or
    edited by hand) is a miss, never an error.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[tuple[str, str, str]] | None:
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
            pairs = entry["pairs"]
            ok = all(isinstance(p, list) and len(p) == 3 and all(isinstance(s, str) for s in p) for p in pairs)
            if entry["key"] != key or not pairs or not ok:
                return None
            return [tuple(p) for p in pairs]  # type: ignore[misc]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, entry: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, fsync=True, unique=True) as f:
            json.dump({"key": key, **entry}, f, ensure_ascii=False)


class _Retry(Exception):
    """A failed attempt worth repeating: kind for the counter, optional server-requested delay."""

    def __init__(self, kind: str, detail: str, retry_after: float | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.retry_after = kind, retry_after


_HINTS = {
    401: "check the API key (TeacherConfig.api_key or FACELLM_TEACHER_API_KEY)",
    403: "check the API key and that it may use this model",
    404: "check the URL (it should end in /v1) and the model name (GET <url>/models lists them)",
    400: "the server rejected the request: check that the model accepts images and response_format json_object",
    413: "the request is too large for the server: use smaller images",
    422: "the server rejected the request: check that the model accepts images and response_format json_object",
}


def _retry_after(err: openai.APIStatusError) -> float | None:
    try:
        return float(err.response.headers.get("retry-after"))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: fall back to our own backoff


class Teacher:
    def __init__(self, cfg: TeacherConfig, cache_dir: Path):
        if not cfg.categories or not all(isinstance(c, str) and c for c in cfg.categories) or cfg.qa_per_category < 1:
            raise TeacherError(
                f"teacher config: need category names and qa_per_category >= 1, "
                f"got categories={cfg.categories!r}, qa_per_category={cfg.qa_per_category}"
            )
        self.cfg = cfg
        self.cache = _Cache(cache_dir)
        self.usage = TeacherUsage(cfg.price_input_per_mtok, cfg.price_output_per_mtok)
        # retries are ours (counted, jittered, and covering bad JSON), so the client makes none
        self.client = openai.OpenAI(
            base_url=cfg.url, api_key=cfg.resolved_api_key(), timeout=cfg.timeout, max_retries=0
        )

    def qa(self, image_path: Path, labels: dict, cues: dict) -> list[tuple[str, str, str]]:
        """(category, question, answer) pairs for one image, from the cache or the teacher."""
        image_path = Path(image_path)
        try:
            image_sha = hashlib.sha256(image_path.read_bytes()).hexdigest()
        except OSError as e:
            raise TeacherError(f"{image_path}: cannot read image ({e.strerror or e})") from None
        cfg = self.cfg
        messages = build_prompt(labels, cues, cfg.categories, cfg.qa_per_category)
        key = hashlib.sha256(
            json.dumps([image_sha, messages, cfg.model], sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()
        if (cached := self.cache.get(key)) is not None:
            self.usage.add(cache_hits=1)
            return cached

        try:
            image = load_image(image_path)
        except FacellmError as e:
            raise TeacherError(str(e)) from None
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        messages[1]["content"][0]["image_url"]["url"] = to_data_url(image, "JPEG")

        pairs, content = self._ask(image_path, messages)
        self.cache.put(key, {"model": cfg.model, "image": str(image_path), "image_sha256": image_sha,
                             "pairs": [list(p) for p in pairs], "content": content})
        return pairs

    def _ask(self, image_path: Path, messages: list[dict]) -> tuple[list[tuple[str, str, str]], str]:
        cfg = self.cfg
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self.usage.add(retries=1)
            try:
                return self._attempt(messages)
            except TeacherError:
                self.usage.add(gave_up=1)
                raise
            except _Retry as e:
                self.usage.fail(e.kind)
                last = e
                if attempt == cfg.max_retries:
                    break
                # full jitter spreads out clients that failed together; Retry-After wins when given
                delay = (min(max(e.retry_after, 0.0), cfg.backoff_max) if e.retry_after is not None
                         else random.uniform(0, min(cfg.backoff_max, cfg.backoff_base * 2**attempt)))
                log.debug("teacher: %s on %s, retry %d in %.2fs", e, image_path, attempt + 1, delay)
                time.sleep(delay)
        self.usage.add(gave_up=1)
        raise TeacherError(
            f"{image_path}: teacher {cfg.url} (model {cfg.model}) failed {cfg.max_retries + 1} times; last error {last}"
        )

    def _attempt(self, messages: list[dict]) -> tuple[list[tuple[str, str, str]], str]:
        """One request; returns pairs, raises _Retry (transient) or TeacherError (fatal)."""
        cfg = self.cfg
        self.usage.add(requests=1)
        try:
            resp = self.client.chat.completions.create(
                model=cfg.model,
                messages=messages,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                response_format={"type": "json_object"},
            )
        except openai.APITimeoutError:  # subclass of APIConnectionError: test it first
            raise _Retry("timeout", f"no reply within {cfg.timeout}s") from None
        except openai.APIConnectionError as e:
            raise _Retry("connection", str(e.__cause__ or e)) from None
        except openai.APIStatusError as e:
            status = e.status_code
            if status == 429 or status >= 500:
                raise _Retry(str(status), e.message[:200], _retry_after(e) if status == 429 else None) from None
            self.usage.fail(str(status))
            hint = _HINTS.get(status, "check the teacher URL, model and API key")
            raise TeacherError(
                f"teacher {cfg.url} (model {cfg.model}) refused the request: HTTP {status} {e.message[:200]}; {hint}"
            ) from None
        except (ValueError, openai.APIResponseValidationError) as e:  # body is not JSON
            raise _Retry("malformed", f"response body: {e}") from None

        # a body that is JSON but not a completion comes back as str or a half-built model
        try:
            content = resp.choices[0].message.content
            usage = resp.usage
        except (AttributeError, IndexError, TypeError):
            raise _Retry("malformed", "response is not a chat completion") from None
        if usage is not None:
            self.usage.add(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0)
        try:
            return parse_qa(content, cfg.categories), content
        except ValueError as e:
            raise _Retry("malformed", f"message content: {e}") from None

    def qa_many(
        self, jobs: Iterable[tuple[Any, Path, dict, dict]]
    ) -> Iterator[tuple[Any, list[tuple[str, str, str]] | TeacherError]]:
        """(key, pairs or TeacherError) per job, in completion order, ``cfg.concurrency`` at a time.

        Jobs are pulled lazily (:func:`facellm.inflight.bounded_map`), so a generator of
        millions of images is fine, and each result is yielded as soon as it is done so
        the caller can journal it before the next one arrives. Errors other than
        TeacherError (bugs) are raised. Stopping early drops the jobs not yet started.
        """

        def ask(job: tuple[Any, Path, dict, dict]) -> list[tuple[str, str, str]]:
            return self.qa(*job[1:])

        with closing(bounded_map(ask, jobs, self.cfg.concurrency, name="teacher")) as results:
            for (key, *_), result in results:
                if isinstance(result, Exception) and not isinstance(result, TeacherError):
                    raise result
                yield key, result
