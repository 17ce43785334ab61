"""The one record format every stage speaks (DESIGN.md): an OpenAI-style chat with image parts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from facellm.errors import FacellmError
from facellm.schema import validate_labels


class ContentPart(BaseModel):
    type: Literal["image", "text"]
    text: str | None = None


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: list[ContentPart]


class FaceInfo(BaseModel):
    box: list[float] | None = None  # [x0, y0, x1, y1] pixels of the record's image
    cues: dict[str, float] | None = None  # facellm.faces cues: yaw, pitch, roll, blur, brightness, ...
    landmarks: str | None = None  # .npy of the 468 face-mesh points (x, y in the image's pixels, z), relative path
    occlusion: str | None = None  # what covers part of the face, where known exactly (synthetic): none|mouth|eyes
    age_years: float | None = None  # exact age where the source records one (UTKFace); labels["age"] is its bin


class Record(BaseModel):
    id: str
    images: list[str]  # paths relative to the dataset directory
    messages: list[Message]
    labels: dict[str, str] = Field(default_factory=dict)
    category: str
    source: str
    face: FaceInfo | None = None

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if problems := validate_labels(labels):
            raise ValueError("; ".join(problems))
        return labels

    @field_validator("messages")
    @classmethod
    def _image_parts_match(cls, messages: list[Message], info) -> list[Message]:
        n_parts = sum(p.type == "image" for m in messages for p in m.content)
        n_images = len(info.data.get("images", []))
        if n_parts != n_images:
            raise ValueError(f"{n_parts} image parts in messages but {n_images} images")
        return messages


def chat(question: str, answer: str | None = None, with_image: bool = True) -> list[dict]:
    """A single-turn chat in the record format (answer omitted for a prompt)."""
    user = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": user}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def text_of(message: dict) -> str:
    return "".join(p.get("text") or "" for p in message["content"] if p["type"] == "text")


def _open_dataset(data_dir: str | Path):
    from datasets import load_from_disk

    ds_dir = Path(data_dir) / "dataset"
    if not ds_dir.is_dir():
        raise FacellmError(f"{data_dir}: no dataset/ inside; build one with `facellm data build --out {data_dir}`")
    return load_from_disk(str(ds_dir))


def load_split(data_dir: str | Path, split: str) -> list[dict]:
    """Records of one split of a dataset directory written by ``facellm data build``."""
    ds = _open_dataset(data_dir)
    if split not in ds:
        raise FacellmError(f"{data_dir}: no split {split!r} (has {', '.join(ds)})")
    return [_without_nulls(r) for r in ds[split].to_list()]


def load_splits(data_dir: str | Path) -> dict[str, list[dict]]:
    """Every split of a dataset directory."""
    return {split: [_without_nulls(r) for r in part.to_list()] for split, part in _open_dataset(data_dir).items()}


def _without_nulls(record: dict) -> dict:
    """Arrow gives every record every label/cue key any record has, as null where it lacks it."""
    record["labels"] = {k: v for k, v in (record.get("labels") or {}).items() if v is not None}
    if (face := record.get("face")) and face.get("cues"):
        face["cues"] = {k: v for k, v in face["cues"].items() if v is not None}
    return record
