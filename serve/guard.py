"""The gate every request passes before an engine sees it, whichever engine serves: one ASGI middleware,
in front of the embedded engine's app (``serve/api.py``) and inside vLLM's own server
(``--middleware serve.guard.VLLMGuard``, settings in the ``FACELLM_GUARD`` environment variable).

What it checks, answering in OpenAI's error shape:

- the route: facellm's (``ROUTES``) only (404), since vLLM's others take images in other shapes;
- the API key on every ``/v1`` route (401), before any work is spent on the request;
- the body size, declared or chunked (413), on every route, before it is parsed;
- requests held at once, where the engine does not bound its own queue (503 + Retry-After);
- every image of a chat request: decoded the way facellm decodes images (upright, RGB, photo formats,
  at most ``MAX_IMAGE_PIXELS``), at most ``max_images`` of them, no remote URLs, server paths only
  under ``local_media_dir`` (400 naming the message part and the problem).

The decoded images are handed on: to the embedded engine as PIL images (``scope["facellm.images"]``,
decoded once); to an engine that decodes images itself (``rewrite_images``), odd ones (rotated,
CMYK, 16-bit, alpha, animated) and server paths are replaced by PNG data URLs of facellm's decoding,
so both engines see the same pixels. Plain ones pass as sent, costing only their decoding here.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
from starlette.responses import JSONResponse

from facellm.images import ImageError, decode_image, to_data_url

ENV = "FACELLM_GUARD"
CHAT_PATH = "/v1/chat/completions"
# what facellm serves, on either engine; vLLM's text-only completions and its probes pass too
ROUTES = frozenset({"/health", "/ping", "/version", "/metrics", "/v1/models", CHAT_PATH, "/v1/completions"})
IMAGES = "facellm.images"  # the scope key the decoded images travel under
MAX_REQUEST_BYTES = 32 * 2 ** 20  # a request is a few images: tens of MB at most


@dataclass(frozen=True)
class GuardSettings:
    api_key: str | None = None
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_images: int = 4  # per request
    local_media_dir: str | None = None  # image_url may name files under it; None: data URLs only
    max_in_flight: int | None = None  # requests held at once; None: the engine bounds its own queue
    rewrite_images: bool = False  # the engine decodes images itself: hand odd ones on as facellm decodes them

    def env(self) -> dict[str, str]:
        """The environment that carries these settings (all but the key: vLLM reads that from VLLM_API_KEY)."""
        return {ENV: json.dumps({**asdict(self), "api_key": None})}


class RequestError(Exception):
    """A request refused, answered as ``error_response`` writes it: by the guard, or by the app behind it."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code, self.headers)


def error_body(message: str, type: str, code: str | None = None) -> dict:
    """OpenAI's error shape, so OpenAI clients raise their usual exception types."""
    return {"error": {"message": message, "type": type, "code": code}}


def error_response(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                   type: str | None = None) -> JSONResponse:
    type = type or ("server_overloaded" if status == 503 else "invalid_request_error")
    return JSONResponse(error_body(message, type, code), status_code=status, headers=headers)


class Guard:
    def __init__(self, app, settings: GuardSettings):
        self.app, self.settings = app, settings
        self.in_flight = 0
        self.mean_request_s = 1.0  # moving average: the Retry-After estimate
        self._key = f"Bearer {settings.api_key}".encode() if settings.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chat = scope["path"] == CHAT_PATH and scope["method"] == "POST"
        try:
            self._check_route(scope)
            self._check_key(scope)
            self._check_declared_size(scope)
            if not chat:
                return await self._forward(scope, receive, send)
            self._check_room()
        except RequestError as e:
            return await e.response()(scope, receive, send)
        self.in_flight += 1
        start = time.monotonic()
        try:
            await self._forward(scope, receive, send, self._check_images)
        finally:
            self.in_flight -= 1
            self.mean_request_s = 0.9 * self.mean_request_s + 0.1 * (time.monotonic() - start)

    async def _forward(self, scope, receive, send, check=None) -> None:
        """Hand the request on with its body read (bounded) and, with ``check``, checked (in a worker thread:
        decoding images must not stall the server's event loop)."""
        try:
            body = await self._read_body(receive)
            if check is not None:
                body = await anyio.to_thread.run_sync(check, scope, body)
        except RequestError as e:
            return await e.response()(scope, receive, send)
        sent = False

        async def replay():  # the app reads the (checked) body, then waits on the client as usual
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if self.settings.rewrite_images:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                     + [(b"content-length", str(len(body)).encode())]}
        await self.app(scope, replay, send)

    @staticmethod
    def _check_route(scope) -> None:
        if scope["path"] not in ROUTES:  # vLLM's other routes take images in shapes this guard does not check
            raise RequestError(404, f"{scope['path']} is not served here; routes: {', '.join(sorted(ROUTES))}",
                               "not_found")

    def _check_key(self, scope) -> None:
        if self._key is None or not scope["path"].startswith("/v1"):
            return
        sent = dict(scope["headers"]).get(b"authorization", b"")
        if not secrets.compare_digest(sent, self._key):
            raise RequestError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'", "invalid_api_key")

    def _check_declared_size(self, scope) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit():
            self._check_size(int(declared))

    def _check_size(self, size: int) -> None:
        if size > self.settings.max_request_bytes:
            raise RequestError(413, f"request body of {size} bytes is over this server's limit of "
                                    f"{self.settings.max_request_bytes} (facellm serve --max-request-mb)",
                               "request_too_large")

    def _check_room(self) -> None:
        limit = self.settings.max_in_flight
        if limit is not None and self.in_flight >= limit:
            retry_after = min(60, max(1, math.ceil(self.mean_request_s)))
            raise RequestError(503, f"server busy: {self.in_flight} requests in progress, its limit "
                                    f"(facellm serve --max-queue); retry in {retry_after} s", "queue_full",
                               {"Retry-After": str(retry_after)})

    async def _read_body(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client went away before its request arrived", "client_closed")
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            self._check_size(size)  # chunked and too long: refused without reading the rest
            if not message.get("more_body"):
                return b"".join(chunks)

    def _check_images(self, scope, body: bytes) -> bytes:
        """The body to hand on; the decoded images in ``scope``. Malformed requests pass unchanged: the
        app's own validation answers those."""
        scope[IMAGES] = []
        try:
            request = json.loads(body)
            parts = [(i, j, part) for i, message in enumerate(request["messages"])
                     for j, part in enumerate(message["content"] if isinstance(message["content"], list) else [])]
        except (ValueError, TypeError, KeyError):
            return body
        images = [(f"messages[{i}].content[{j}].image_url", part, _image_url(part)) for i, j, part in parts
                  if isinstance(part, dict) and part.get("type") == "image_url"]
        if len(images) > self.settings.max_images:
            raise RequestError(400, f"{len(images)} images in one request; this server allows "
                                    f"{self.settings.max_images} (facellm serve --max-images)", "too_many_images")
        rewritten = False
        for where, part, url in images:
            image, as_sent = self._decode(url, where)
            scope[IMAGES].append(image)
            if self.settings.rewrite_images and (not as_sent or not url.startswith("data:")):
                # PNG's fastest level: 3x quicker than its default, for 10 % more bytes on localhost
                part["image_url"] = {**part["image_url"], "url": to_data_url(image, compress_level=1)}
                rewritten = True
        return json.dumps(request).encode() if rewritten else body

    def _decode(self, url: str, where: str):
        if not url.startswith("data:") and "://" not in url:
            self._check_local(url, where)
        try:
            return decode_image(url)
        except ImageError as e:
            raise RequestError(400, f"{where}: {e}", "invalid_image") from None

    def _check_local(self, path: str, where: str) -> None:
        root = self.settings.local_media_dir
        if root is None:
            raise RequestError(400, f"{where}: server file paths are not accepted here; send the image as a "
                                    "data URL (data:image/jpeg;base64,...)", "invalid_image")
        if not Path(path).resolve().is_relative_to(Path(root).resolve()):
            raise RequestError(400, f"{where}: {path} is outside the folder this server reads images from "
                                    "(facellm serve --allowed-local-media-path)", "invalid_image")


def _image_url(part: dict) -> str:
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str):
        raise RequestError(400, "an image_url part needs {\"url\": \"data:image/...;base64,...\"}", "invalid_image")
    return url


class VLLMGuard(Guard):
    """The guard as vLLM's ``--middleware`` builds it (from the app alone): settings from ``FACELLM_GUARD``,
    the key from ``VLLM_API_KEY``."""

    def __init__(self, app):
        settings = json.loads(os.environ.get(ENV) or "{}")
        super().__init__(app, GuardSettings(**{**settings, "api_key": os.environ.get("VLLM_API_KEY")}))
