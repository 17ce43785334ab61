"""OpenAI-compatible HTTP API (``/v1/models``, ``/v1/chat/completions``) over an engine.

Requests arrive in OpenAI's chat format (image parts as ``image_url`` with a data URL, or a server path
where allowed), pass the guard (``serve/guard.py``: key, sizes, images decoded and checked) and are
handed to the engine in facellm's record format: ``{"type": "image"}`` parts plus the guard's PIL images
in order. Errors use OpenAI's JSON shape, so OpenAI clients raise their usual exception types.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Literal

import anyio
import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from facellm.constrained import SchemaError
from facellm.generation import Generated
from serve.engine import DEFAULT_MAX_TOKENS, EmbeddedEngine, EngineBusy
from serve.guard import IMAGES, Guard, GuardSettings, RequestError, error_body, error_response

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
                raise RequestError(400, "response_format: type json_schema needs a json_schema object")
            return self.json_schema.schema_
        return {"type": "object"} if self.type == "json_object" else None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    temperature: float | None = Field(None, ge=0, le=2)  # None or 0: greedy, so answers are reproducible
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None  # JSON answers by constrained decoding, as vLLM does
    logprobs: bool = False  # each answer token's log-probability (calibration in facellm eval)
    top_logprobs: int | None = Field(None, ge=0, le=20)  # most likely alternatives per token (with logprobs)


SERVER_ERROR = "the model server failed on this request; the details are in its log"


def _to_record(messages: list[ChatMessage]) -> list[dict]:
    """Record-format messages: image parts become ``{"type": "image"}`` (the guard has decoded the images)."""
    records = []
    for message in messages:
        parts = [TextPart(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        records.append({"role": message.role, "content": [
            {"type": "text", "text": part.text} if isinstance(part, TextPart) else {"type": "image"}
            for part in parts]})
    return records


def create_app(engine: EmbeddedEngine, guard: GuardSettings | None = None, log_requests: bool = False) -> FastAPI:
    """The API app behind ``guard`` (the request checks every engine shares: key, sizes, images; defaults
    without a key).

    Prompts, images and answers are not logged (nor written anywhere) unless ``log_requests``, which logs
    each request's text at INFO level, images as ``<image>``."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # routes are plain functions run in anyio's thread pool (40 threads by default): give it room for
        # every request the engine may hold, so a full queue is answered 503 rather than left waiting
        anyio.to_thread.current_default_thread_limiter().total_tokens = engine.max_batch_size + engine.max_queue + 8
        yield

    app = FastAPI(title="facellm", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(Guard, settings=guard or GuardSettings())
    v1 = APIRouter(prefix="/v1")
    started = int(time.time())

    @app.exception_handler(RequestError)
    def refused(request: Request, e: RequestError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return error_response(400, problems)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    def server_error(request: Request, e: Exception) -> JSONResponse:  # Starlette re-raises it for uvicorn to log
        return error_response(500, SERVER_ERROR, type="server_error")

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
    def chat_completions(req: ChatRequest, request: Request):
        if req.model not in engine.models():
            raise RequestError(404, f"model {req.model!r} not found; available: {', '.join(engine.models())}",
                               "model_not_found")
        messages, images = _to_record(req.messages), request.scope[IMAGES]
        if log_requests:
            log.info("chat request for %s: %s", req.model, json.dumps(
                [{"role": m["role"], "content": [p.get("text", "<image>") for p in m["content"]]} for m in messages]))
        max_tokens = req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS
        schema = req.response_format.schema_or_none() if req.response_format else None
        args = (req.model, messages, images, max_tokens, req.temperature or 0.0, req.top_p or 1.0, schema)
        if req.stream and req.logprobs:
            raise RequestError(400, "logprobs are returned by non-streaming requests only on this engine",
                               "unsupported_parameter")
        try:
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                return StreamingResponse(_events(*engine.stream(*args), req.model, include_usage),
                                         media_type="text/event-stream")
            answer = engine.complete(*args, logprobs=req.logprobs, top_logprobs=req.top_logprobs or 0)
        except SchemaError as e:
            raise RequestError(400, f"response_format: {e}", "invalid_schema") from None
        except EngineBusy as e:
            raise RequestError(503, str(e), "queue_full", {"Retry-After": str(e.retry_after_s)}) from None
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
            "usage": _usage(answer),
        }

    app.include_router(v1)
    return app


def _usage(answer: Generated) -> dict:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def _events(deltas: Iterator[str], answer: Callable[[], Generated], model: str, include_usage: bool) -> Iterator[str]:
    """Server-sent events in OpenAI's chat.completion.chunk format, ending with ``data: [DONE]``; with
    ``include_usage``, every chunk has ``usage: null`` and a last one, without choices, the token counts."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}
    usage = {"usage": None} if include_usage else {}

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        payload = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **usage}
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for text in deltas:
            yield chunk({"content": text})
        done = answer()
    except Exception:  # the 200 status is already sent: report in-band, as OpenAI does
        log.exception("streaming generation failed")
        yield f"data: {json.dumps(error_body(SERVER_ERROR, 'server_error'))}\n\n"
        return
    yield chunk({}, "length" if done.cut_short else "stop")
    if include_usage:
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(done)})}\n\n"
    yield "data: [DONE]\n\n"


def warn_if_exposed(host: str, api_key: str | None) -> None:
    if host in ("0.0.0.0", "::"):
        log.warning("binding %s makes the model reachable from the network%s", host,
                    "" if api_key else " without an API key")


def serve_forever(engine: EmbeddedEngine, host: str = "127.0.0.1", port: int = 8000,
                  guard: GuardSettings | None = None, log_requests: bool = False) -> None:
    guard = guard or GuardSettings()
    warn_if_exposed(host, guard.api_key)
    if log_requests:
        log.setLevel(logging.INFO)  # this logger only: the rest of the process keeps its level
    uvicorn.run(create_app(engine, guard, log_requests), host=host, port=port)


def start_in_thread(engine: EmbeddedEngine, host: str = "127.0.0.1", port: int = 0,
                    guard: GuardSettings | None = None, timeout_s: float = 30.0,
                    log_requests: bool = False) -> tuple[str, Callable[[], None]]:
    """Serve from a background thread; returns (base_url, stop) once /health answers. Port 0: a free port."""
    guard = guard or GuardSettings()
    warn_if_exposed(host, guard.api_key)
    sock = socket.create_server((host, port))  # bound here, so port 0's choice is known before uvicorn starts
    base_url = f"http://{host}:{sock.getsockname()[1]}"
    app = create_app(engine, guard, log_requests)
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
