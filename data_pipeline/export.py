"""Dataset on disk: Hugging Face ``datasets`` (Arrow) and Parquet, plus ShareGPT and LLaVA exports.

The ShareGPT layout is the one LLaMA-Factory, ms-swift and TRL read unchanged:
``{"messages": [{"role", "content": "<image>question"}], "images": [...]}``;
the record's id, labels, category, source and face ride along as extra keys so
the export parses back into the same records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facellm.atomic import atomic_dir, atomic_open, atomic_path, write_text_atomic
from facellm.errors import FacellmError
from facellm.records import Record


IMAGE_TAG = "<image>"


def to_sharegpt(record: dict, image_root: str = "") -> dict:
    messages = []
    for m in record["messages"]:
        text = "".join(IMAGE_TAG if p["type"] == "image" else p["text"] for p in m["content"])
        messages.append({"role": m["role"], "content": text})
    extra = {k: record[k] for k in ("id", "labels", "category", "source", "face") if record.get(k) is not None}
    return {"messages": messages, "images": [os.path.join(image_root, p) for p in record["images"]], **extra}


def from_sharegpt(row: dict, image_root: str = "") -> dict:
    messages = []
    for m in row["messages"]:
        parts, pieces = [], m["content"].split(IMAGE_TAG)
        for i, piece in enumerate(pieces):
            if i:
                parts.append({"type": "image", "text": None})
            if piece:
                parts.append({"type": "text", "text": piece})
        messages.append({"role": m["role"], "content": parts})
    images = [os.path.relpath(p, image_root) if image_root else p for p in row["images"]]
    record = {"id": row["id"], "images": images, "messages": messages, "labels": row.get("labels", {}),
              "category": row["category"], "source": row["source"], "face": row.get("face")}
    return Record.model_validate(record).model_dump()


def write_sharegpt(records_by_split: dict[str, list[dict]], out_dir: Path, image_root: str = "..") -> None:
    """One JSONL per split plus LLaMA-Factory's dataset_info.json; image paths are ``image_root`` (the dataset
    dir, relative to out_dir) joined with the records' paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {}
    for split, records in records_by_split.items():
        path = out_dir / f"{split}.jsonl"
        with atomic_open(path) as f:
            for r in records:
                f.write(json.dumps(to_sharegpt(r, image_root), ensure_ascii=False) + "\n")
        info[f"facellm_{split}"] = {
            "file_name": path.name, "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    write_text_atomic(out_dir / "dataset_info.json", json.dumps(info, indent=2))


def to_llava(record: dict) -> dict:
    """LLaVA's training JSON: one image, ``conversations`` of human/gpt turns, ``<image>`` in the first."""
    conversations = [{"from": "human" if m["role"] == "user" else "gpt",
                      "value": "".join(IMAGE_TAG + "\n" if p["type"] == "image" else p["text"] for p in m["content"])}
                     for m in record["messages"] if m["role"] != "system"]
    return {"id": record["id"], "image": record["images"][0], "conversations": conversations}


def write_llava(records_by_split: dict[str, list[dict]], out_dir: Path) -> None:
    """One JSON list per split; image paths relative to the dataset directory (LLaVA's --image_folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, records in records_by_split.items():
        with atomic_open(out_dir / f"{split}.json") as f:
            json.dump([to_llava(r) for r in records if len(r["images"]) == 1], f, ensure_ascii=False)


def save_dataset(records_by_split: dict[str, list[dict]], out_dir: Path | None, parquet_dir: Path | None) -> None:
    """A ``datasets.DatasetDict`` under out_dir (replacing an older one only once complete) and one
    Parquet file per split under parquet_dir (either may be None)."""
    from datasets import Dataset, DatasetDict

    dataset = DatasetDict({s: Dataset.from_list(r) for s, r in records_by_split.items()})
    if out_dir is not None:
        with atomic_dir(out_dir) as tmp:
            dataset.save_to_disk(str(tmp))
    if parquet_dir is None:
        return
    parquet_dir.mkdir(parents=True, exist_ok=True)
    for split, ds in dataset.items():
        with atomic_path(parquet_dir / f"{split}.parquet") as tmp:
            ds.to_parquet(str(tmp))


FORMATS = ("hf", "parquet", "sharegpt", "llava")


def export_all(records_by_split: dict[str, list[dict]], out: Path, formats: tuple[str, ...] = FORMATS,
               dataset_dir: Path | None = None) -> None:
    """On-disk forms of a dataset under ``out``: dataset/ (hf), parquet/, sharegpt/, llava/. Record image
    paths are relative to ``dataset_dir`` (default: out)."""
    if unknown := set(formats) - set(FORMATS):
        raise FacellmError(f"unknown export formats {sorted(unknown)}; known: {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        if "hf" in formats or "parquet" in formats:
            save_dataset(records_by_split, out / "dataset" if "hf" in formats else None,
                         out / "parquet" if "parquet" in formats else None)
        if "sharegpt" in formats:
            write_sharegpt(records_by_split, out / "sharegpt", os.path.relpath(dataset_dir or out, out / "sharegpt"))
        if "llava" in formats:
            write_llava(records_by_split, out / "llava")
    except OSError as e:  # disk full, quota, permissions: every file is written aside and renamed when whole
        raise FacellmError(f"{out}: export failed ({e.strerror or e}{f': {e.filename}' if e.filename else ''}); "
                           "files written before stay as they were; free space and run it again") from None
