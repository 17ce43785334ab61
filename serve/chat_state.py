"""The face chat's state and steps, without Gradio (``serve/chat_ui.py`` shows them).

A *photo* is a dict: the upload's path on this machine, the file name the person gave it, its size and its
faces' boxes (numbered left to right). A conversation is a list of *turns*, one per question: the question,
the image it asks about (a face's crop or the whole photo: a data URL for the model, a thumbnail file for the
chat) with its label, and the answer, or a note in its place (waiting, retrying, failed, stopped). Turns are
changed in place: Stop (``stop``) reaches the answer streaming into the turn that way.

What goes wrong is said in words a person can act on (``ChatProblem``): the name they gave the file, never
the server's temporary path or an exception's class; the details go to the log.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from pathlib import Path

import openai
from PIL import Image, ImageDraw, ImageFont

from facellm.client import AnswerError, RecordRequest
from facellm.errors import FacellmError
from facellm.images import ImageError, load_image, to_data_url
from facellm.schema import json_schema

log = logging.getLogger(__name__)

WHOLE_IMAGE = "whole image"
NO_FACE = "no face found: asking about the whole image"
SHOWN_SIDE = 1024  # the photo is shown (faces boxed and numbered) at most this many pixels wide or high
THUMBNAIL_SIDE = 256  # a chat turn shows the image it asks about at most this large
BOX_COLOUR = (255, 210, 0)  # yellow: visible on skin, hair and most backgrounds
WAITING = "_waiting for the model…_"
STOPPED = "_(stopped)_"
EMPTY_ANSWER = "(the model returned an empty answer)"
RETRY_DELAYS_S = (1, 2, 4, 8)  # a server that is not answering is asked again for about 15 s
RECORD_REQUEST = RecordRequest(json_schema())  # the Attributes button's question, as the captioner asks it


class ChatProblem(FacellmError):
    """Something a person can act on, in their words (their file's name, the server's URL)."""


_detector_lock = threading.Lock()  # one LiteRT detector, not thread-safe; Gradio runs handlers in threads


@functools.cache
def _detector():
    from facellm.faces import FaceAnalyzer

    return FaceAnalyzer()


def face_boxes(image: Image.Image) -> list[list[float]]:
    """The faces' boxes in an RGB image, numbered left to right."""
    with _detector_lock:
        faces = _detector().detect(image)
    return [list(face.box) for face in sorted(faces, key=lambda face: face.box[0])]


def open_image(path: str) -> Image.Image:
    try:
        return load_image(path)
    except ImageError as e:
        log.info("upload refused: %s", e)  # the path and the reason, for whoever runs the server
        name, reason = Path(path).name, str(e).removeprefix(f"{path}: ")
        if reason.startswith("image too large"):
            raise ChatProblem(f"{name}: {reason}") from None
        raise ChatProblem(f"{name} could not be read as an image (corrupt or not a photo)") from None


def open_photo(path: str) -> dict:
    """The photo at ``path`` (an upload: its name is the one the person gave it) with its faces found."""
    image = open_image(path)
    return {"path": path, "name": Path(path).name, "size": image.size, "boxes": face_boxes(image)}


def face_choices(photo: dict | None) -> list[str]:
    return [WHOLE_IMAGE] + [f"face {number}" for number in range(1, len(photo["boxes"]) + 1 if photo else 1)]


def default_face(photo: dict | None) -> str:
    """The face asked about until the person picks one: the only face, else the whole image."""
    return "face 1" if photo and len(photo["boxes"]) == 1 else WHOLE_IMAGE


def photo_note(photo: dict | None) -> str:
    """What was found, in a line under the photo."""
    if photo is None:
        return "No photo yet: drop one above, or attach it to a message."
    faces = len(photo["boxes"])
    if faces == 0:
        return f"**{photo['name']}**: {NO_FACE}."
    if faces == 1:
        return f"**{photo['name']}**: 1 face found."
    return f"**{photo['name']}**: {faces} faces found. Click one (or pick it below) to ask about it."


def _shown_scale(photo: dict) -> float:
    return min(1.0, SHOWN_SIDE / max(photo["size"]))


def draw_faces(photo: dict) -> Image.Image:
    """The photo, at most SHOWN_SIDE pixels, each face boxed with its number drawn on the box."""
    image = open_image(photo["path"])
    scale = _shown_scale(photo)
    shown = image.resize((round(image.width * scale), round(image.height * scale))) if scale < 1 else image
    draw = ImageDraw.Draw(shown)
    line = max(2, round(max(shown.size) / 300))
    for number, box in enumerate(photo["boxes"], 1):
        x0, y0, x1, y1 = (v * scale for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=line)
        # numbers readable when the photo is shown small, but not larger than the face
        font = ImageFont.load_default(size=max(14, round(min(max(shown.size) / 20, (y1 - y0) * 0.6))))
        left, top, right, bottom = draw.textbbox((0, 0), str(number), font=font)
        pad = line + 2
        width, height = right - left + 2 * pad, bottom - top + 2 * pad
        tag_y = y0 - height if y0 >= height else y0  # the number above the box, or inside it at the top edge
        draw.rectangle((x0, tag_y, x0 + width, tag_y + height), fill=BOX_COLOUR)
        draw.text((x0 + pad - left, tag_y + pad - top), str(number), fill="black", font=font)
    return shown


def face_at(photo: dict, x: float, y: float) -> str:
    """The face whose box holds the point (x, y) of the shown photo (the smallest, where boxes overlap); the
    whole image where no box does."""
    scale = _shown_scale(photo)
    x, y = x / scale, y / scale
    hits = [((x1 - x0) * (y1 - y0), number) for number, (x0, y0, x1, y1) in enumerate(photo["boxes"], 1)
            if x0 <= x <= x1 and y0 <= y <= y1]
    return f"face {min(hits)[1]}" if hits else WHOLE_IMAGE


def subject(photo: dict, face: str | None) -> tuple[Image.Image, str]:
    """The image a question is about, the whole photo or the face's crop (cut as the training data were),
    and the label the chat shows with it."""
    from facellm.faces import crop_box

    image, boxes = open_image(photo["path"]), photo["boxes"]
    if not face or face == WHOLE_IMAGE:
        return image, WHOLE_IMAGE if boxes else NO_FACE
    number = face.removeprefix("face ").strip()
    if not number.isdigit() or not 1 <= int(number) <= len(boxes):
        raise ChatProblem(f"There is no {face} in {photo['name']} ({len(boxes)} found).")
    return image.crop(crop_box(boxes[int(number) - 1], image.width, image.height)), face


def new_turn(question: str, photo: dict | None, face: str | None, thumbnails: Path) -> dict:
    """A question about ``face`` of ``photo`` (None: no photo), waiting for its answer; its thumbnail is
    written to the folder ``thumbnails`` (named by its content: one file per image)."""
    turn = {"question": question, "image_url": None, "thumbnail": None, "label": None, "answer": "",
            "note": WAITING, "waiting": True}
    if photo:
        image, turn["label"] = subject(photo, face)
        turn["image_url"] = to_data_url(image)
        thumbnail = thumbnails / f"{hashlib.sha1(turn['image_url'].encode()).hexdigest()[:20]}.png"
        if not thumbnail.exists():
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            image.save(thumbnail)
        turn["thumbnail"] = str(thumbnail)
    return turn


def api_messages(turns: list[dict]) -> list[dict]:
    """The conversation the model is sent: the turns that were answered, then the last turn's question. The
    latest image goes with the first question about it, the follow-ups seeing it in the conversation; earlier
    images stay out (their answers are in it): servers take a few images per request (facellm serve
    --max-images), and a long conversation must not outgrow that."""
    sent = [turn for turn in turns[:-1] if turn["answer"]] + turns[-1:]  # failed or stopped before a word: left out
    carrier = max((i for i, turn in enumerate(sent)
                   if turn["image_url"] and (i == 0 or sent[i - 1]["image_url"] != turn["image_url"])), default=None)
    messages = []
    for i, turn in enumerate(sent):
        content = [{"type": "text", "text": turn["question"]}]
        if i == carrier:
            content.insert(0, {"type": "image_url", "image_url": {"url": turn["image_url"]}})
        messages.append({"role": "user", "content": content})
        if i < len(sent) - 1:
            messages.append({"role": "assistant", "content": turn["answer"]})
    return messages


def chat_messages(turns: list[dict]) -> list[dict]:
    """What the chat shows: each question, after the image it asks about where that changed (with its label,
    e.g. "face 2"), and the answer, or the note in its place."""
    shown, last_image = [], None
    for turn in turns:
        content = [turn["question"]]
        if turn["thumbnail"] and turn["thumbnail"] != last_image:
            content = [{"path": turn["thumbnail"]}, f"({turn['label']}) {turn['question']}"]
        last_image = turn["thumbnail"]
        shown += [{"role": "user", "content": content},
                  {"role": "assistant", "content": turn["answer"] or turn["note"]}]
    return shown


def server_problem(endpoint: str, error: openai.APIError) -> str:
    log.warning("%s: %s: %s", endpoint, type(error).__name__, error)
    if isinstance(error, openai.APIConnectionError):
        return f"the model server at {endpoint} is not answering"
    body = error.body if isinstance(error.body, dict) else {}
    status = f" {error.status_code}" if isinstance(error, openai.APIStatusError) else ""
    return f"the model server at {endpoint} answered{status}: {body.get('message') or error.message}"


def stream_answer(client: openai.OpenAI, endpoint: str, turns: list[dict], model: str, max_tokens: int):
    """Streams the last turn's answer into it, yielding after each piece. A server that is not answering (or
    answers 5xx) is asked again (RETRY_DELAYS_S), the turn saying so meanwhile; then the turn fails, saying
    why, and Retry asks again. A turn stopped meanwhile (``stop``) ends the stream and closes the request
    (vLLM then stops generating)."""
    turn = turns[-1]
    for delay in (*RETRY_DELAYS_S, None):
        turn["answer"] = ""
        try:
            with client.chat.completions.create(model=model, messages=api_messages(turns), stream=True,
                                                max_tokens=max_tokens, temperature=0) as chunks:
                for chunk in chunks:
                    if not turn["waiting"]:  # stopped, maybe before Stop could cancel this generator
                        return
                    if chunk.choices and chunk.choices[0].delta.content:
                        turn["answer"] += chunk.choices[0].delta.content
                        yield
            turn.update(answer=turn["answer"] or EMPTY_ANSWER, note="", waiting=False)
            yield
            return
        except (openai.APIConnectionError, openai.InternalServerError) as e:  # down, restarting, overloaded
            problem = server_problem(endpoint, e)
        except openai.APIError as e:  # the server refused this question: asking again would not help
            turn.update(answer="", note=f"⚠️ {server_problem(endpoint, e)}", waiting=False)
            yield
            return
        if delay is None:
            break
        turn.update(answer="", note=f"⚠️ {problem}; retrying")
        yield
        time.sleep(delay)
        if not turn["waiting"]:
            return
    turn.update(answer="", note=f"⚠️ {problem}. Press Retry (↻ under this message) to ask again.", waiting=False)
    yield


def attribute_rows(client: openai.OpenAI, endpoint: str, photo: dict | None, face: str | None,
                   model: str) -> list[list[str]]:
    """The structured attribute record of the face asked about (JSON-schema output), as (name, value) rows."""
    if photo is None:
        raise ChatProblem("Drop a face photo first.")
    image, _ = subject(photo, face)
    try:
        reply = client.chat.completions.create(model=model, **RECORD_REQUEST.arguments(to_data_url(image)))
    except openai.APIError as e:
        raise ChatProblem(server_problem(endpoint, e)) from None
    try:
        record = RECORD_REQUEST.read(reply)
    except AnswerError as e:
        log.info("attribute record refused: %s", e)
        raise ChatProblem("The model's answer was cut short before the record was complete." if e.cut_short
                          else "The model's answer was not a usable attribute record.") from None
    return [[name, record.get(name, "")] for name in RECORD_REQUEST.schema["properties"]]


def stop(turns: list[dict]) -> None:
    """The last turn, stopped while waiting or streaming: what came of the answer stays (and is part of the
    conversation); a turn stopped before any word came says so."""
    if turns and turns[-1]["waiting"]:
        turns[-1].update(note="" if turns[-1]["answer"] else STOPPED, waiting=False)
