"""OpenAI-compatible HTTP API (``/v1/models``, ``/v1/chat/completions``) over an engine.

Requests arrive in OpenAI's chat format (image parts as ``image_url`` with a data URL or a local file
path) and are handed to the engine in facellm's record format: ``{"type": "image"}`` parts plus the PIL
images in order. Errors use OpenAI's JSON shape, so OpenAI clients raise their usual exception types.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Literal

import anyio
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from facellm.constrained import SchemaError
from facellm.images import ImageError, load_image
from serve.engine import DEFAULT_MAX_TOKENS, EmbeddedEngine, EngineBusy

log = logging.getLogger(__name__)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str  # data:image/...;base64,... or a path on the server; http(s) URLs are refused


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]]


class JsonSchemaFormat(BaseModel):
    name: str = "response"
    schema_: dict = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def schema_or_none(self) -> dict | None:
        if self.type == "json_schema":
            if self.json_schema is None:
                raise APIError(400, "response_format: type json_schema needs a json_schema object")
            return self.json_schema.schema_
        return {"type": "object"} if self.type == "json_object" else None


class ChatRequest(BaseModel):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    temperature: float | None = Field(None, ge=0, le=2)  # None or 0: greedy, so answers are reproducible
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    response_format: ResponseFormat | None = None  # JSON answers by constrained decoding, as vLLM does
    logprobs: bool = False  # each answer token's log-probability (calibration in facellm eval)
    top_logprobs: int | None = Field(None, ge=0, le=20)  # most likely alternatives per token (with logprobs)


class APIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type, code, headers


def _error_body(message: str, type: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "code": code}}


def _to_record(messages: list[ChatMessage]) -> tuple[list[dict], list]:
    """Record-format messages and their PIL images, in order of appearance."""
    records, images = [], []
    for i, message in enumerate(messages):
        parts = [TextPart(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        content = []
        for j, part in enumerate(parts):
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
                continue
            try:
                images.append(load_image(part.image_url.url))
            except ImageError as e:
                raise APIError(400, f"messages[{i}].content[{j}].image_url: {e}", code="invalid_image") from None
            content.append({"type": "image"})
        records.append({"role": message.role, "content": content})
    return records, images


class LimitBody:
    """ASGI middleware: request bodies over ``limit`` bytes are refused (413) whether they declare their
    length or arrive chunked, before they are parsed (a request is a few images: tens of MB at most)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(int(declared), scope, receive, send)
        seen, refused = 0, False

        async def counted():
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit and not refused:  # chunked and too long: answer now, the app sees a disconnect
                refused = True
                await self._refuse(seen, scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message):
            if not refused:
                await send(message)

        await self.app(scope, counted, unless_refused)

    async def _refuse(self, size: int, scope, receive, send) -> None:
        response = JSONResponse(_error_body(self._message(size), "invalid_request_error", "request_too_large"),
                                status_code=413)
        await response(scope, receive, send)

    def _message(self, size: int) -> str:
        return (f"request body of {size} bytes is over this server's limit of {self.limit} "
                "(facellm serve --max-request-mb)")


def _require_key(api_key: str):
    expected = f"Bearer {api_key}".encode()

    def check(request: Request) -> None:
        if not secrets.compare_digest(request.headers.get("authorization", "").encode(), expected):
            raise APIError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    return check


MAX_REQUEST_BYTES = 32 * 2 ** 20


def create_app(engine: EmbeddedEngine, api_key: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES,
               log_requests: bool = False) -> FastAPI:
    """The API app; with ``api_key`` set, every /v1 route requires ``Authorization: Bearer <api_key>``.

    Prompts, images and answers are not logged (nor written anywhere) unless ``log_requests``, which logs
    each request's text at INFO level, images as ``<image>``."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # routes are plain functions run in anyio's thread pool (40 threads by default): give it room for
        # every request the engine may hold, so a full queue is answered 503 rather than left waiting
        anyio.to_thread.current_default_thread_limiter().total_tokens = engine.max_batch_size + engine.max_queue + 8
        yield

    app = FastAPI(title="facellm", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(LimitBody, limit=max_request_bytes)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_require_key(api_key))] if api_key else [])
    started = int(time.time())

    @app.exception_handler(APIError)
    def api_error(request: Request, e: APIError) -> JSONResponse:
        return JSONResponse(_error_body(e.message, e.type, e.code), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return JSONResponse(_error_body(problems, "invalid_request_error"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(_error_body(str(e.detail), "invalid_request_error"), status_code=e.status_code)

    @app.exception_handler(Exception)
    def server_error(request: Request, e: Exception) -> JSONResponse:  # Starlette re-raises it for uvicorn to log
        return JSONResponse(_error_body(f"{type(e).__name__}: {e}", "server_error"), status_code=500)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @v1.get("/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": started, "owned_by": "facellm"}
                                           for name in engine.models()]}

    # Plain `def` routes: FastAPI runs them in its thread pool, so blocking on the engine is fine and
    # concurrent requests reach the engine together, where they are batched.
    @v1.post("/chat/completions")
    def chat_completions(req: ChatRequest):
        if req.model not in engine.models():
            raise APIError(404, f"model {req.model!r} not found; available: {', '.join(engine.models())}",
                           code="model_not_found")
        messages, images = _to_record(req.messages)
        if log_requests:
            log.info("chat request for %s: %s", req.model, json.dumps(
                [{"role": m["role"], "content": [p.get("text", "<image>") for p in m["content"]]} for m in messages]))
        if len(images) > engine.max_images:
            raise APIError(400, f"{len(images)} images in one request; this server allows {engine.max_images} "
                                "(facellm serve --max-images)", code="too_many_images")
        max_tokens = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
        schema = req.response_format.schema_or_none() if req.response_format else None
        args = (req.model, messages, images, max_tokens, req.temperature or 0.0, req.top_p or 1.0, schema)
        if req.stream and req.logprobs:
            raise APIError(400, "logprobs are returned by non-streaming requests only on this engine",
                           code="unsupported_parameter")
        try:
            if req.stream:
                return StreamingResponse(_events(engine.stream(*args), req.model), media_type="text/event-stream")
            answer = engine.complete(*args, logprobs=req.logprobs, top_logprobs=req.top_logprobs or 0)
        except SchemaError as e:
            raise APIError(400, f"response_format: {e}", code="invalid_schema") from None
        except EngineBusy as e:
            raise APIError(503, str(e), "server_overloaded", "queue_full",
                           {"Retry-After": str(e.retry_after_s)}) from None
        alternatives = answer.top_logprobs or [[] for _ in answer.logprobs or []]
        logprobs = None if answer.logprobs is None else {"content": [
            {"token": token, "logprob": logprob, "bytes": list(token.encode()),
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]}
            for (token, logprob), top in zip(answer.logprobs, alternatives)]}
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "logprobs": logprobs,
                         "finish_reason": "length" if answer.cut_short else "stop"}],
            "usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                      "total_tokens": answer.prompt_tokens + answer.completion_tokens},
        }

    app.include_router(v1)
    return app


def _events(deltas: Iterator[str], model: str) -> Iterator[str]:
    """Server-sent events in OpenAI's chat.completion.chunk format, ending with ``data: [DONE]``."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        payload = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for text in deltas:
            yield chunk({"content": text})
    except Exception as e:  # the 200 status is already sent: report in-band, as OpenAI does
        log.exception("streaming generation failed")
        yield f"data: {json.dumps(_error_body(f'{type(e).__name__}: {e}', 'server_error'))}\n\n"
        return
    yield chunk({}, "stop")  # the streamer does not count tokens, so a truncated answer also says "stop"
    yield "data: [DONE]\n\n"


def warn_if_exposed(host: str, api_key: str | None) -> None:
    if host in ("0.0.0.0", "::"):
        log.warning("binding %s makes the model reachable from the network%s", host,
                    "" if api_key else " without an API key")


def serve_forever(engine: EmbeddedEngine, host: str = "127.0.0.1", port: int = 8000,
                  api_key: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES,
                  log_requests: bool = False) -> None:
    warn_if_exposed(host, api_key)
    if log_requests:
        log.setLevel(logging.INFO)  # this logger only: the rest of the process keeps its level
    uvicorn.run(create_app(engine, api_key, max_request_bytes, log_requests), host=host, port=port)


def start_in_thread(engine: EmbeddedEngine, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                    timeout_s: float = 30.0, max_request_bytes: int = MAX_REQUEST_BYTES,
                    log_requests: bool = False) -> tuple[str, Callable[[], None]]:
    """Serve from a background thread; returns (base_url, stop) once /health answers. Port 0: a free port."""
    warn_if_exposed(host, api_key)
    sock = socket.create_server((host, port))  # bound here, so port 0's choice is known before uvicorn starts
    base_url = f"http://{host}:{sock.getsockname()[1]}"
    app = create_app(engine, api_key, max_request_bytes, log_requests)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="facellm-api", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join()
        sock.close()

    deadline = time.monotonic() + timeout_s
    while not _healthy(base_url):
        if not thread.is_alive() or time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"API server at {base_url} did not answer /health within {timeout_s:g} s")
        time.sleep(0.02)
    return base_url, stop


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
