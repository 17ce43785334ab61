"""Gradio face chat, a client of the OpenAI-compatible API only (ours, vLLM's, or any other server's).

Upload a photo: faces are found (facellm's detector, on this machine) and drawn as numbered boxes;
pick one and questions are asked about that face's crop, cut the way the training data were. The
"Attributes" button asks for the structured attribute record (JSON-schema output) and shows it as a
table. Answers stream; every turn resends the conversation, earlier images included (as data URLs).

Scripts can drive the same functions through named Gradio endpoints (one ``Client``, one session,
one conversation):

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    client.predict(handle_file("photo.jpg"), api_name="/faces")          # annotated image, face choices
    chat = client.predict("What is the expression?", handle_file("photo.jpg"), "face 1",
                          api_name="/chat")                               # [chat messages, ""]
    table = client.predict(handle_file("photo.jpg"), "face 1", api_name="/attributes")

The model dropdown lists what ``GET /v1/models`` returns; model and max tokens may be passed too.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path

import gradio as gr
import openai

from facellm.client import AnswerError, RecordRequest, openai_client
from facellm.errors import FacellmError
from facellm.images import ImageError, load_image, to_data_url
from facellm.schema import ATTRIBUTES, json_schema

log = logging.getLogger(__name__)

WHOLE_IMAGE = "whole image"
EXAMPLE_QUESTIONS = ["Describe this face.", "What is the facial expression?", "Is the person wearing glasses?",
                     "What colour is the hair?", "Which way is the head turned?"]
MAX_UPLOAD = "20mb"


def _open(path: str):
    try:
        return load_image(path)
    except ImageError as e:
        raise gr.Error(f"Upload {Path(path).name!r} is not a usable image ({e}). "
                       "Please upload a photo (JPEG, PNG, WebP...).") from None


_detector_lock = threading.Lock()  # one LiteRT detector, not thread-safe; Gradio runs handlers in threads


@functools.cache
def _detector():
    from facellm.faces import FaceAnalyzer

    return FaceAnalyzer()


@functools.lru_cache(maxsize=64)
def _face_boxes(path: str, mtime: float) -> tuple[tuple[float, ...], ...]:
    image = _open(path)
    with _detector_lock:
        faces = _detector().detect(image)
    return tuple(tuple(f.box) for f in sorted(faces, key=lambda f: f.box[0]))  # numbered left to right


def face_boxes(path: str) -> tuple[tuple[float, ...], ...]:
    return _face_boxes(path, os.path.getmtime(path))


def _subject(path: str, face: str | None):
    """The image a question is about: the whole photo, or the chosen face's crop."""
    from facellm.faces import crop_box

    image = _open(path)
    if not face or face == WHOLE_IMAGE:
        return image
    boxes = face_boxes(path)
    number = int(face.split()[-1]) if face.split()[-1].isdigit() else 0
    if not 1 <= number <= len(boxes):
        raise gr.Error(f"There is no {face} in this photo ({len(boxes)} found).")
    return image.crop(crop_box(boxes[number - 1], image.width, image.height))


def _error_message(e: openai.APIError) -> str:
    if isinstance(e, openai.APIConnectionError):
        return f"cannot reach the API ({e})"
    body = e.body if isinstance(e.body, dict) else {}
    status = f" {e.status_code}" if isinstance(e, openai.APIStatusError) else ""
    return f"API error{status}: {body.get('message') or e.message}"


def build_ui(endpoint: str, api_key: str | None = None, examples: list[str] | None = None) -> gr.Blocks:
    """The chat UI for the API at ``endpoint`` (e.g. ``http://127.0.0.1:8000``); lists its models now.
    ``examples``: image files offered as example photos."""
    # No retries: a failing API should show its error at once, not after back-off.
    client = openai_client(endpoint, api_key, max_retries=0)
    try:
        models = [m.id for m in client.models.list()]
    except openai.APIError as e:
        raise FacellmError(f"{endpoint}: cannot list models: {_error_message(e)}; "
                           "is `facellm serve` running there?") from None

    def find_faces(path: str | None):
        if not path:
            return None, gr.update(choices=[WHOLE_IMAGE], value=WHOLE_IMAGE), None
        boxes = face_boxes(path)
        annotations = [(tuple(int(v) for v in box), f"face {i}") for i, box in enumerate(boxes, 1)]
        choices = [WHOLE_IMAGE] + [label for _, label in annotations]
        found = f"{len(boxes)} face{'s' * (len(boxes) != 1)} found"
        return ((path, annotations), gr.update(choices=choices, value=choices[1] if len(boxes) == 1 else WHOLE_IMAGE,
                                               label=f"Ask about ({found})"), None)

    def chat(question: str, path: str | None, face: str | None, model: str | None, max_tokens: int,
             conversation: list[dict], shown: list[dict], sent: str | None):
        question = (question or "").strip()
        if not question:
            raise gr.Error("Type a question (and upload a face photo to ask about it).")
        content = [{"type": "text", "text": question}]
        subject = f"{path}#{face}" if path else None
        if path and subject != sent:  # a new photo or another face: this turn carries it
            content.insert(0, {"type": "image_url", "image_url": {"url": to_data_url(_subject(path, face))}})
            shown = shown + [{"role": "user", "content": {"path": path}}]
        label = f"({face}) " if path and face and face != WHOLE_IMAGE else ""
        conversation = conversation + [{"role": "user", "content": content}]
        shown = shown + [{"role": "user", "content": label + question}, {"role": "assistant", "content": ""}]
        reply = ""
        try:
            chunks = client.chat.completions.create(model=model or models[0], messages=conversation, stream=True,
                                                    max_tokens=int(max_tokens or 256), temperature=0)
            for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    reply += chunk.choices[0].delta.content
                    shown[-1] = {"role": "assistant", "content": reply}
                    yield shown, "", conversation, shown, sent
        except openai.APIError as e:
            raise gr.Error(_error_message(e)) from None
        reply = reply or "(the model returned an empty answer)"
        shown[-1] = {"role": "assistant", "content": reply}
        conversation = conversation + [{"role": "assistant", "content": reply}]
        yield shown, "", conversation, shown, subject

    record_request = RecordRequest(json_schema())

    def attributes(path: str | None, face: str | None, model: str | None):
        if not path:
            raise gr.Error("Upload a face photo first.")
        try:
            reply = client.chat.completions.create(model=model or models[0],
                                                   **record_request.arguments(to_data_url(_subject(path, face))))
        except openai.APIError as e:
            raise gr.Error(_error_message(e)) from None
        try:
            record = record_request.read(reply)
        except AnswerError as e:
            raise gr.Error("The model's answer was not a complete JSON record (its answer was cut short)."
                           if e.cut_short else f"The model's answer was not a usable attribute record ({e}).") from None
        return [[name, record.get(name, ""), ATTRIBUTES[name].description]
                for name in record_request.schema["properties"]]

    def new_chat():
        return [], "", [], [], None

    with gr.Blocks(title="facellm chat", analytics_enabled=False) as ui:
        gr.Markdown(f"## facellm: face chat\nAsking **{endpoint}**. Upload a photo, pick a face, ask.")
        conversation, shown, sent = gr.State([]), gr.State([]), gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                # a File, not an Image: gr.Image decodes uploads itself and hides why one fails; the
                # photo shows, with its faces boxed, in the AnnotatedImage below
                photo = gr.File(file_types=["image"], type="filepath", label="Photo", height=90)
                faces = gr.AnnotatedImage(label="Faces found", height=320, elem_id="faces")
                # custom values: scripts may name a face before the UI has listed it; _subject checks it
                face = gr.Dropdown([WHOLE_IMAGE], value=WHOLE_IMAGE, label="Ask about", allow_custom_value=True,
                                   elem_id="face")
                attributes_button = gr.Button("Attributes", variant="secondary")
                table = gr.Dataframe(headers=["attribute", "value", "meaning"], label="Attribute record",
                                     interactive=False, wrap=True, elem_id="attributes")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[photo], label="Example photos")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=460)
                question = gr.Textbox(placeholder="Ask about the face, e.g. What is the expression?",
                                      show_label=False, submit_btn=True, elem_id="question")
                gr.Examples([[q] for q in EXAMPLE_QUESTIONS], inputs=[question], label="Example questions")
                with gr.Row():
                    model = gr.Dropdown(models, value=models[0] if models else None, label="Model")
                    max_tokens = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens")
                clear = gr.Button("New chat")

        photo.change(find_faces, photo, [faces, face, table], api_name="faces")
        question.submit(chat, [question, photo, face, model, max_tokens, conversation, shown, sent],
                        [chatbot, question, conversation, shown, sent], api_name="chat",
                        concurrency_limit=None)  # the API server batches concurrent requests
        attributes_button.click(attributes, [photo, face, model], table, api_name="attributes", concurrency_limit=None)
        clear.click(new_chat, None, [chatbot, question, conversation, shown, sent], api_name=False)
    return ui


def launch_ui(endpoint: str, host: str = "127.0.0.1", port: int = 7860, api_key: str | None = None,
              share: bool = False, examples: list[str] | None = None) -> None:
    if host in ("0.0.0.0", "::") or share:
        log.warning("the chat UI will be reachable from the network (%s); anyone there can use the model",
                    "share link" if share else host)
    build_ui(endpoint, api_key, examples).launch(server_name=host, server_port=port, share=share,
                                                 max_file_size=MAX_UPLOAD)
