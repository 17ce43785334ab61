"""The one record format every stage speaks (DESIGN.md): an OpenAI-style chat with image parts, and the
one way to open a dataset directory written by ``facellm data build``.

A dataset directory DIR holds the records as a ``datasets.DatasetDict`` in DIR/dataset (plus exports
beside it) and, when a build wrote it, DIR/manifest.json; record image paths are relative to DIR.
Stages read it through :func:`open_dataset`, :func:`load_split` / :func:`load_splits`,
:func:`read_manifest` and :func:`split_fingerprints`, rather than by path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, field_validator

from facellm.errors import FacellmError
from facellm.schema import validate_labels

if TYPE_CHECKING:
    from datasets import DatasetDict


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


def _dataset_folder(data_dir: str | Path) -> Path:
    ds_dir = Path(data_dir) / "dataset"
    if not ds_dir.is_dir():
        raise FacellmError(f"{data_dir}: no dataset/ inside; build one with `facellm data build --out {data_dir}`")
    return ds_dir


def open_dataset(data_dir: str | Path) -> DatasetDict:
    """The ``datasets.DatasetDict`` of a dataset directory (memory-mapped, one key per split); a
    FacellmError saying how to build one when DIR has no dataset/."""
    from datasets import load_from_disk

    return load_from_disk(str(_dataset_folder(data_dir)))


def is_dataset_dir(path: str | Path) -> bool:
    """Whether ``path`` is a dataset directory written by ``facellm data build`` (it has a manifest)."""
    return (Path(path) / "manifest.json").is_file()


def read_manifest(data_dir: str | Path) -> dict | None:
    """What the build wrote about the dataset (source, seed, counts, teacher usage); None when DIR has no
    manifest (an export, or a dataset built elsewhere)."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FacellmError(f"{path}: unreadable manifest ({e}); rebuild the dataset") from None


def split_fingerprints(data_dir: str | Path) -> dict[str, str | None]:
    """split -> ``datasets``' fingerprint of its content, read without loading the data."""
    return {state.parent.name: json.loads(state.read_text(encoding="utf-8")).get("_fingerprint")
            for state in sorted(_dataset_folder(data_dir).glob("*/state.json"))}


def load_split(data_dir: str | Path, split: str) -> list[dict]:
    """Records of one split of a dataset directory written by ``facellm data build``; ``images`` are the
    paths of the image files relative to the directory (the embedded bytes stay on disk)."""
    ds = open_dataset(data_dir)
    if split not in ds:
        raise FacellmError(f"{data_dir}: no split {split!r} (has {', '.join(ds)})")
    return _records(ds[split])


def load_splits(data_dir: str | Path) -> dict[str, list[dict]]:
    """Every split of a dataset directory."""
    return {split: _records(part) for split, part in open_dataset(data_dir).items()}


def image_paths_column(part) -> str:
    """The column of a split that holds the records' image paths: ``image_files`` beside the embedded
    ``images``, or ``images`` itself in a dataset built before images were embedded."""
    return "image_files" if "image_files" in part.column_names else "images"


def _records(part) -> list[dict]:
    """Records with ``images`` as paths; the embedded images' bytes are not read."""
    if image_paths_column(part) == "images":
        return [_without_nulls(r) for r in part.to_list()]
    records = part.remove_columns("images").to_list()
    for record in records:
        record["images"] = record.pop("image_files")
    return [_without_nulls(r) for r in records]


def _without_nulls(record: dict) -> dict:
    """Arrow gives every record every label/cue key any record has, as null where it lacks it."""
    record["labels"] = {k: v for k, v in (record.get("labels") or {}).items() if v is not None}
    if (face := record.get("face")) and face.get("cues"):
        face["cues"] = {k: v for k, v in face["cues"].items() if v is not None}
    return record
