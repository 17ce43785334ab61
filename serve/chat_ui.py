"""Gradio multimodal chat UI, a client of the OpenAI-compatible API only (ours or any other server's).

Every turn resends the whole conversation, images of earlier turns included (as data URLs), and the
answer streams in. The model dropdown lists what the API's ``GET /v1/models`` returns.

Scripts can call the chat through its named Gradio endpoint ``/chat``:

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    reply = client.predict(message={"text": "What is the expression?", "files": [handle_file("face.jpg")]},
                           model="model-name", max_tokens=256, api_name="/chat")

``model`` and ``max_tokens`` may be left out (defaults: the first model the API lists, 256). Calls on one
``Client`` continue one conversation (its session keeps the history); a new ``Client`` starts afresh.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import openai

from facellm.client import openai_client
from facellm.errors import FacellmError
from facellm.images import ImageError, load_image, to_data_url

log = logging.getLogger(__name__)


def _image_part(path: str) -> dict:
    try:
        image = load_image(path)
    except ImageError as e:
        raise gr.Error(f"Upload {Path(path).name!r} is not a usable image ({e}). "
                       "Please upload a photo (JPEG, PNG, WebP...).") from None
    return {"type": "image_url", "image_url": {"url": to_data_url(image)}}


def _openai_message(role: str, content) -> dict:
    """An OpenAI message from a Gradio chat message's content: a string, a file, or a list of those.

    Gradio hands history over as normalised parts ({"type": "text"} / {"type": "file", "file": {...}}),
    or, for turns made through the API endpoint, as plain strings and {"path": ...} dicts.
    """
    parts = []
    for item in content if isinstance(content, list) else [content]:
        if isinstance(item, str):
            parts.append({"type": "text", "text": item})
        elif isinstance(item, dict) and item.get("type") == "text":
            parts.append({"type": "text", "text": item["text"]})
        elif isinstance(item, dict) and (path := item.get("path") or (item.get("file") or {}).get("path")):
            parts.append(_image_part(path))
        # anything else (a component the bot showed) has nothing the model could read
    if role == "assistant":  # assistants answer in text; a plain string suits every server
        return {"role": role, "content": "".join(p["text"] for p in parts if p["type"] == "text")}
    return {"role": role, "content": parts}


def _error_message(e: openai.APIError) -> str:
    if isinstance(e, openai.APIConnectionError):
        return f"cannot reach the API ({e})"
    body = e.body if isinstance(e.body, dict) else {}
    status = f" {e.status_code}" if isinstance(e, openai.APIStatusError) else ""
    return f"API error{status}: {body.get('message') or e.message}"


def build_ui(endpoint: str, api_key: str | None = None) -> gr.Blocks:
    """The chat UI for the API at ``endpoint`` (e.g. ``http://127.0.0.1:8000``); lists its models now."""
    # No retries: a failing API should show its error at once, not after back-off.
    client = openai_client(endpoint, api_key, max_retries=0)
    try:
        models = [m.id for m in client.models.list()]
    except openai.APIError as e:
        raise FacellmError(f"{endpoint}: cannot list models: {_error_message(e)}; "
                           "is `facellm serve` running there?") from None

    def respond(message: dict, history: list[dict], model: str, max_tokens: int):
        files = [f if isinstance(f, str) else f["path"] for f in message.get("files", [])]
        text = (message.get("text") or "").strip()
        if not files and not text:
            raise gr.Error("Type a question or upload a face image.")
        messages = [_openai_message(m["role"], m["content"]) for m in history]
        messages.append({"role": "user", "content": [_image_part(f) for f in files]
                         + ([{"type": "text", "text": text}] if text else [])})
        reply = ""
        try:
            chunks = client.chat.completions.create(model=model, messages=messages, max_tokens=int(max_tokens),
                                                    stream=True)
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    reply += chunk.choices[0].delta.content
                    yield reply
        except openai.APIError as e:
            raise gr.Error(_error_message(e)) from None
        if not reply:
            yield "(the model returned an empty answer)"

    return gr.ChatInterface(
        respond,
        multimodal=True,
        textbox=gr.MultimodalTextbox(file_types=["image"], file_count="multiple",
                                     placeholder="Ask about a face; attach a photo"),
        additional_inputs=[gr.Dropdown(models, value=models[0] if models else None, label="Model"),
                           gr.Slider(16, 1024, value=256, step=16, label="Max new tokens")],
        title="facellm chat",
        description=f"Face understanding chat against {endpoint}.",
        api_name="chat",
        concurrency_limit=None,  # the API server batches concurrent requests; don't serialise them here
        analytics_enabled=False,  # no network beyond the API
    )


def launch_ui(endpoint: str, host: str = "127.0.0.1", port: int = 7860, api_key: str | None = None,
              share: bool = False) -> None:
    if host in ("0.0.0.0", "::") or share:
        log.warning("the chat UI will be reachable from the network (%s); anyone there can use the model",
                    "share link" if share else host)
    build_ui(endpoint, api_key).launch(server_name=host, server_port=port, share=share)
