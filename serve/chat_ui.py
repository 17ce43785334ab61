"""Gradio face chat, a client of the OpenAI-compatible API only (ours, vLLM's, or any other server's).

Drop or upload a photo (on the photo panel, anywhere on the page, or attached to a message) and it replaces
the one before, with everything that belonged to it (faces, face picked, attribute table, an attribute
answer still on its way). Faces are found on this machine (facellm's detector) and boxed, their numbers
drawn on the boxes; click a face, or pick it, and questions are asked about its crop, cut the way the
training data were; the chat turn shows that crop. "Attributes" asks for the structured attribute record
(JSON-schema output) and shows it as a table. Answers stream, with Stop (in the message box), Retry and
Undo (under the last answer); every turn resends the conversation, with its latest image (a data URL).

Nothing that goes wrong costs the conversation: a bad upload is a short toast naming the file, and the photo
and history stay; a model server that is not answering is said in the answer's place, asked again for a
while, then Retry asks again (``serve/chat_state.py`` has the steps and the messages).

Scripts can drive the same steps through named Gradio endpoints (one ``Client``, one session, one
conversation); there a problem is an error raised to the caller:

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    picture, picker, note, table = client.predict(handle_file("photo.jpg"), api_name="/faces")
    chat = client.predict("What is the expression?", handle_file("photo.jpg"), "face 1",
                          api_name="/chat")                               # the chat's messages
    table = client.predict(handle_file("photo.jpg"), "face 1", api_name="/attributes")

``picker["choices"]`` lists the faces found; the photo may be None (a question without one). The model
dropdown lists what ``GET /v1/models`` returns; ``model`` and ``max_tokens`` may be passed too.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import weakref
from pathlib import Path

import gradio as gr
import openai

from facellm.client import openai_client
from facellm.errors import FacellmError
from serve.chat_state import (WAITING, WHOLE_IMAGE, ChatProblem, attribute_rows, chat_messages, default_face,
                              draw_faces, face_at, face_choices, new_turn, open_photo, photo_note, server_problem,
                              stop, stream_answer)

log = logging.getLogger(__name__)

EXAMPLE_QUESTIONS = ["Describe this face.", "What is the facial expression?", "Is the person wearing glasses?",
                     "What colour is the hair?", "Which way is the head turned?"]
MAX_UPLOAD = "20mb"
TABLE_LABEL = "Attribute record"
# A photo dropped anywhere but on an upload area goes to the photo upload, instead of the browser opening
# the file in place of the chat.
DROP_ANYWHERE_JS = """() => {
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    if (event.defaultPrevented || !event.dataTransfer?.files.length) return;  // an upload area took it
    event.preventDefault();
    const input = document.querySelector("#upload input[type=file]");
    input.files = event.dataTransfer.files;
    input.dispatchEvent(new Event("change", {bubbles: true}));
  });
}"""


def _as_toast(fn):
    """For the browser: a ChatProblem is a toast, and every output keeps its value (a raised gr.Error would
    put an error badge over each output, hiding the conversation until dismissed)."""
    @functools.wraps(fn)
    def shown(*args):
        try:
            return fn(*args)
        except ChatProblem as e:
            gr.Warning(str(e))
            return gr.skip()
    return shown


def _as_error(fn):
    """For scripts: a ChatProblem is an error raised to the caller, with the same short message."""
    @functools.wraps(fn)
    def raised(*args):
        try:
            return fn(*args)
        except ChatProblem as e:
            raise gr.Error(str(e), print_exception=False) from None
    return raised


def _message_box(busy: bool, **update) -> gr.MultimodalTextbox:
    """The message box while an answer is on its way (Stop in place of Send) or ready for the next one."""
    return gr.MultimodalTextbox(interactive=not busy, submit_btn=not busy, stop_btn=busy, **update)


def build_ui(endpoint: str, api_key: str | None = None, examples: list[str] | None = None) -> gr.Blocks:
    """The chat UI for the API at ``endpoint`` (e.g. ``http://127.0.0.1:8000``); lists its models now.
    ``examples``: image files offered as example photos."""
    client = openai_client(endpoint, api_key, max_retries=0)  # the chat retries itself, saying so in the turn
    try:
        models = [m.id for m in client.models.list()]
    except openai.APIError as e:
        raise FacellmError(f"cannot list models: {server_problem(endpoint, e)}; "
                           "is `facellm serve` running there?") from None
    examples = [str(path) for path in examples or []]
    thumbnails = Path(tempfile.mkdtemp(prefix="facellm-chat-"))  # the images chat turns show

    def show_photo(photo: dict | None):
        """Everything that belongs to a photo, for ``photo`` (None: no photo); the previous photo's faces,
        face picked and attribute table go."""
        return (photo, draw_faces(photo) if photo else None,
                gr.Dropdown(face_choices(photo), value=default_face(photo)), photo_note(photo),
                gr.Dataframe(value=None, label=TABLE_LABEL))

    def load_photo(path: str):
        return show_photo(open_photo(path))

    def load_example(event: gr.SelectData):
        return show_photo(open_photo(examples[event.index]))

    def pick_face(photo: dict | None, event: gr.SelectData):
        return face_at(photo, *event.index) if photo else gr.skip()

    def send(message: dict, face: str, photo: dict | None, turns: list[dict]):
        """The question shows at once, after the image it is about; `answer` then streams the answer. A photo
        attached to the message replaces the photo (and its only face, or the whole image, is asked about)."""
        text, files = message["text"].strip(), message["files"]
        new_photo = open_photo(files[-1]) if files else None
        if not text and not new_photo:
            raise ChatProblem("Type a question (and drop a face photo to ask about it).")
        if text:
            turns = turns + [new_turn(text, new_photo or photo, default_face(new_photo) if new_photo else face,
                                      thumbnails)]
        shown = show_photo(new_photo) if new_photo else [gr.skip()] * len(photo_outputs)
        return _message_box(busy=bool(text), value=None), *shown, turns, chat_messages(turns)

    def answer(turns: list[dict], model: str | None, max_tokens: float):
        if not turns or not turns[-1]["waiting"]:  # nothing was asked (a toast said why)
            yield gr.skip()
            return
        for _ in stream_answer(client, endpoint, turns, model or models[0], int(max_tokens)):
            yield chat_messages(turns), turns

    def retry(turns: list[dict]):
        if not turns or turns[-1]["waiting"]:
            return gr.skip()
        turns[-1].update(answer="", note=WAITING, waiting=True)
        return chat_messages(turns), turns, _message_box(busy=True)

    def undo(turns: list[dict]):
        """The last turn goes; its question is back in the message box."""
        if not turns or turns[-1]["waiting"]:
            return gr.skip()
        return chat_messages(turns[:-1]), turns[:-1], {"text": turns[-1]["question"], "files": []}

    def stopped(turns: list[dict]):
        stop(turns)
        return chat_messages(turns), turns, _message_box(busy=False)

    def clear_chat(turns: list[dict]):
        stop(turns)  # an answer on its way ends (its request closed) rather than fill a chat that is gone
        return [], [], _message_box(busy=False, value=None)

    def new_chat(turns: list[dict]):
        return *clear_chat(turns), *show_photo(None)

    def ask_attributes(photo: dict | None, face: str, model: str | None):
        rows = attribute_rows(client, endpoint, photo, face, model or models[0])
        return {"path": photo["path"], "label": f"{TABLE_LABEL}: {face} of {photo['name']}", "rows": rows}

    def show_attributes(record: dict | None, photo: dict | None):
        """The record, unless the photo changed while it was on its way (it belonged to the one before)."""
        if record and photo and record["path"] == photo["path"]:
            return gr.Dataframe(value=record["rows"], label=record["label"]), None
        if record:
            gr.Info(f"The {record['label'].lower()} came after the photo changed; it is not shown.")
        return gr.skip(), None

    def chat_for_script(question: str, path: str | None, face: str, model: str | None, max_tokens: float,
                        photo: dict | None, turns: list[dict]):
        """Asks about ``face`` of the photo at ``path`` (None: no photo); returns the chat, answered."""
        if not (question or "").strip():
            raise ChatProblem("Type a question.")
        if path and not (photo and photo["path"] == path):  # the same photo again (a follow-up) is not reopened
            photo = open_photo(path)
        turns = turns + [new_turn(question.strip(), photo if path else None, face, thumbnails)]
        for _ in stream_answer(client, endpoint, turns, model or models[0], int(max_tokens)):
            pass
        return chat_messages(turns), photo, turns

    def attributes_for_script(path: str | None, face: str, model: str | None):
        return attribute_rows(client, endpoint, open_photo(path) if path else None, face, model or models[0])

    with gr.Blocks(title="facellm chat", analytics_enabled=False) as ui:
        gr.Markdown(f"### facellm face chat · asking {endpoint}")
        photo, turns, record = gr.State(None), gr.State([]), gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=320):
                # a File, not an Image: gr.Image decodes uploads itself and hides why one fails. It stays empty,
                # ready for the next photo; the photo shows below, its faces boxed and numbered.
                upload = gr.File(file_types=["image"], type="filepath", show_label=False, height=130,
                                 elem_id="upload")
                picture = gr.Image(type="pil", interactive=False, show_label=False, height=300,
                                   buttons=["fullscreen"], elem_id="picture")
                note = gr.Markdown(photo_note(None), elem_id="note")
                face = gr.Dropdown([WHOLE_IMAGE], value=WHOLE_IMAGE, label="Ask about", elem_id="face")
                with gr.Row():
                    attributes_button = gr.Button("Attributes", size="md")
                    remove_button = gr.Button("Remove photo", size="md")
                with gr.Accordion("Settings", open=False, elem_id="settings"):
                    model = gr.Dropdown(models, value=models[0] if models else None, label="Model")
                    max_tokens = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens",
                                           elem_id="max_tokens")
            with gr.Column(scale=6, min_width=400):
                chatbot = gr.Chatbot(label="Chat", height=440, buttons=["copy"], feedback_options=None,
                                     elem_id="chat")
                message = gr.MultimodalTextbox(file_types=["image"], show_label=False, elem_id="message",
                                               placeholder="Ask about the face, or attach/drop a photo here")
                gr.Examples([[{"text": q, "files": []}] for q in EXAMPLE_QUESTIONS], inputs=[message],
                            label="Example questions")
                new_chat_button = gr.Button("New chat", size="md")
            with gr.Column(scale=3, min_width=240):
                table = gr.Dataframe(headers=["attribute", "value"], label=TABLE_LABEL, interactive=False,
                                     wrap=True, elem_id="attributes")
                if examples:
                    gallery = gr.Gallery(examples, label="Example photos", columns=3, height=180,
                                         allow_preview=False, elem_id="examples")
        # the scripts' inputs the UI takes otherwise (a question typed; a face by name, before it is listed)
        script_question, script_face = gr.Textbox(visible=False), gr.Textbox(visible=False)

        photo_outputs = [photo, picture, face, note, table]
        upload.upload(_as_toast(load_photo), upload, photo_outputs, api_visibility="private").then(
            lambda: None, None, upload, api_visibility="private", show_progress="hidden")  # ready for the next
        if examples:
            gallery.select(_as_toast(load_example), None, photo_outputs, api_visibility="private")
        picture.select(pick_face, photo, face, api_visibility="private", show_progress="hidden")
        remove_button.click(lambda: show_photo(None), None, photo_outputs, api_visibility="private")

        # concurrency_limit=None where the API is asked: its server batches concurrent requests
        asked = message.submit(_as_toast(send), [message, face, photo, turns],
                               [message, *photo_outputs, turns, chatbot], show_progress_on=chatbot,
                               api_visibility="private")
        retried = chatbot.retry(retry, turns, [chatbot, turns, message], api_visibility="private")
        answering = [event.then(answer, [turns, model, max_tokens], [chatbot, turns], api_visibility="private",
                                show_progress="minimal", concurrency_limit=None) for event in (asked, retried)]
        for event in answering:
            event.then(lambda: _message_box(busy=False), None, message, api_visibility="private")
        message.stop(stopped, turns, [chatbot, turns, message], cancels=answering, api_visibility="private")
        chatbot.undo(undo, turns, [chatbot, turns, message], api_visibility="private")
        chatbot.clear(clear_chat, turns, [chatbot, turns, message], cancels=answering,
                      api_visibility="private")  # the chat's own bin: the conversation goes, the photo stays
        new_chat_button.click(new_chat, turns, [chatbot, turns, message, *photo_outputs], cancels=answering,
                              api_visibility="private")

        attributes_button.click(_as_toast(ask_attributes), [photo, face, model], record, show_progress_on=table,
                                concurrency_limit=None, api_visibility="private").then(
            show_attributes, [record, photo], [table, record], api_visibility="private", show_progress="hidden")

        gr.on([], _as_error(load_photo), upload, photo_outputs, api_name="faces")
        gr.on([], _as_error(chat_for_script), [script_question, upload, script_face, model, max_tokens, photo, turns],
              [chatbot, photo, turns], api_name="chat", concurrency_limit=None)
        gr.on([], _as_error(attributes_for_script), [upload, script_face, model], table, api_name="attributes",
              concurrency_limit=None)
        ui.load(None, js=DROP_ANYWHERE_JS)
    weakref.finalize(ui, shutil.rmtree, thumbnails, ignore_errors=True)
    return ui


def launch_ui(endpoint: str, host: str = "127.0.0.1", port: int = 7860, api_key: str | None = None,
              share: bool = False, examples: list[str] | None = None) -> None:
    if host in ("0.0.0.0", "::") or share:
        log.warning("the chat UI will be reachable from the network (%s); anyone there can use the model",
                    "share link" if share else host)
    build_ui(endpoint, api_key, examples).launch(server_name=host, server_port=port, share=share,
                                                 max_file_size=MAX_UPLOAD)
