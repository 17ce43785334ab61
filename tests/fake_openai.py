"""A fake OpenAI-compatible teacher for tests: real HTTP on 127.0.0.1, with fault injection.

    with FakeOpenAI(fault_rate=0.2, seed=0) as server:
        Teacher(TeacherConfig(url=server.url, model=server.model), cache_dir)...

It speaks ``POST /v1/chat/completions`` and ``GET /v1/models``. The reply is built
from the labels it finds in the prompt (the ``Labels: {...}`` line that
``data_pipeline.teacher.build_prompt`` writes), so tests can check that answers agree
with the labels; pass ``answer=`` to plant something else (a contradiction, raw text).

Faults are drawn per request from one seeded RNG, so a run's sequence of faults is
reproducible: "429" (Retry-After: 0), "500", "503", "timeout" (sleeps ``timeout_sleep``
seconds, longer than the client's timeout), "malformed_body" (HTTP 200, truncated
JSON), "malformed_content" (a completion whose content is not the requested JSON),
"drop" (socket closed without a response).

Import it from a test module as ``from fake_openai import FakeOpenAI`` (pytest puts
tests/ on sys.path; tests/ is not a package).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_KINDS = ("429", "500", "503", "timeout", "malformed_body", "malformed_content", "drop")

# answer(labels, cues, categories, n) -> list of {"category","question","answer"} dicts,
# or a str that is sent verbatim as the message content
AnswerFn = Callable[[dict, dict, list, int], "list[dict] | str"]

QUESTIONS = {
    "demographics": "How old does this person look, and how do they present?",
    "facial_structure": "Describe the shape and proportions of this face.",
    "skin_texture": "What does the skin look like?",
    "expression": "What emotion does this person show?",
    "lighting_quality": "How is the lighting and image quality?",
    "head_pose": "Which way is the head turned?",
    "forensic": "Does this image look edited or synthetic?",
    "fine_detail": "What small details stand out, such as glasses or hair?",
}


def default_answer(labels: dict, cues: dict, categories: list, n: int) -> list[dict]:
    """n pairs per category whose answers state every label value (so they agree with the labels)."""
    facts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(labels.items())) or "nothing certain"
    qa = []
    for cat in categories:
        for i in range(n):
            question = QUESTIONS.get(cat, f"What can you tell about the {cat.replace('_', ' ')}?")
            qa.append({
                "category": cat,
                "question": question if i == 0 else f"{question} (variant {i + 1})",
                "answer": f"Regarding {cat.replace('_', ' ')}, the person appears to have {facts}.",
            })
    return qa


def _line_json(text: str, name: str, default):
    m = re.search(rf"^{name}: (.*)$", text, re.MULTILINE)
    try:
        return json.loads(m.group(1)) if m else default
    except ValueError:
        return default


def _parts(body: dict) -> tuple[list[str], list[str]]:
    """The text parts and image URLs of all messages in a chat request."""
    texts, images = [], []
    for msg in body.get("messages", []):
        content = msg.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                images.append(part.get("image_url", {}).get("url", ""))
    return texts, images


def parse_prompt(body: dict) -> tuple[dict, dict, list, int]:
    """labels, cues, categories and pairs per category found in a chat request."""
    text = "\n".join(_parts(body)[0])
    return (
        _line_json(text, "Labels", {}),
        _line_json(text, "Cues", {}),
        _line_json(text, "Categories", ["general"]),
        _line_json(text, "Pairs per category", 1),
    )


class FakeOpenAI:
    def __init__(
        self,
        fault_rate: float = 0.0,
        seed: int = 0,
        fault_kinds: Sequence[str] = FAULT_KINDS,
        answer: AnswerFn = default_answer,
        api_key: str | None = None,  # when set, requests must send "Authorization: Bearer <key>"
        model: str = "fake-teacher",
        timeout_sleep: float = 1.0,  # seconds a "timeout" fault stalls; keep above the client timeout
        latency: float = 0.0,  # seconds added to every request
    ):
        unknown = set(fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.fault_rate, self.fault_kinds, self.answer = fault_rate, tuple(fault_kinds), answer
        self.api_key, self.model = api_key, model
        self.timeout_sleep, self.latency = timeout_sleep, latency
        self._rng = random.Random(seed)  # fault draws only, so the fault sequence is reproducible
        self._variants = random.Random(seed + 1)  # which malformed content
        self._lock = threading.Lock()
        self.requests = 0  # chat-completion requests received
        self.counts: Counter = Counter()  # outcome -> count: "ok", "401", and the fault kinds
        self.prompt_tokens = 0  # totals of the usage reported in replies
        self.completion_tokens = 0
        self.bodies: list[dict] = []  # every chat request body, in arrival order
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def last_request(self) -> dict | None:
        with self._lock:
            return self.bodies[-1] if self.bodies else None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAI":
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._httpd.serve_forever, daemon=True, name="fake-openai").start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling (called from handler threads) --

    def _draw(self, body: dict, authorised: bool) -> str:
        # counted before the reply goes out, so a test that got its answer sees the count
        with self._lock:
            self.requests += 1
            self.bodies.append(body)
            if not authorised:
                kind = "401"
            else:
                kind = self._rng.choice(self.fault_kinds) if self._rng.random() < self.fault_rate else "ok"
            self.counts[kind] += 1
            return kind

    def _completion(self, body: dict, content: str) -> dict:
        # "tokens": words, plus a flat 85 per image (OpenAI's low-detail image price)
        texts, images = _parts(body)
        prompt_tokens = sum(len(t.split()) for t in texts) + 85 * len(images)
        completion_tokens = len(content.split())
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
        return {
            "id": f"chatcmpl-fake-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _content(self, body: dict) -> str:
        labels, cues, categories, n = parse_prompt(body)
        qa = self.answer(labels, cues, categories, n)
        return qa if isinstance(qa, str) else json.dumps({"qa": qa})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # stalled "timeout" handlers must not block shutdown
    request_queue_size = 128  # the default backlog of 5 drops SYNs under concurrency: spurious timeouts


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: dict | str, headers: dict | None = None) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data.encode())))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data.encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): nothing to tell it

        def _authorised(self) -> bool:
            return fake.api_key is None or self.headers.get("Authorization") == f"Bearer {fake.api_key}"

        def _unauthorised(self) -> None:
            self._send(401, _error("Incorrect API key provided.", "invalid_api_key"))

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                return self._send(404, _error(f"no route {self.path}", "not_found"))
            if not self._authorised():
                return self._unauthorised()
            self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "owned_by": "fake"}]})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, _error(f"no route {self.path}", "not_found"))
            try:
                body = json.loads(raw)
            except ValueError:
                return self._send(400, _error("request body is not JSON", "invalid_json"))
            with fake._lock:
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                self._chat(body)
            finally:
                with fake._lock:
                    fake.in_flight -= 1

        def _chat(self, body: dict) -> None:
            kind = fake._draw(body, self._authorised())
            if kind == "401":
                return self._unauthorised()
            if fake.latency:
                time.sleep(fake.latency)
            if kind == "429":
                return self._send(429, _error("Rate limit reached.", "rate_limit_exceeded"), {"Retry-After": "0"})
            if kind in ("500", "503"):
                return self._send(int(kind), _error("The server had an error.", "server_error"))
            if kind == "drop":
                self.close_connection = True  # returning without a reply closes the socket
                return
            if kind == "malformed_body":
                return self._send(200, '{"id": "chatcmpl-fake", "object": "chat.completion", "choices": [{"ind')
            if kind == "timeout":
                time.sleep(fake.timeout_sleep)
            if kind == "malformed_content":
                with fake._lock:
                    content = fake._variants.choice(
                        ["Sure! Here are the pairs you asked for.", '{"answers": []}', '{"qa": [{"category": "expr']
                    )
            else:
                content = fake._content(body)
            self._send(200, fake._completion(body, content))

    return Handler
