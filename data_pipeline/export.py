"""Dataset on disk: Hugging Face ``datasets`` (Arrow) and Parquet, plus ShareGPT and LLaVA exports.

- ``dataset/`` and ``parquet/`` hold each record's images as ``datasets.Image`` with the encoded bytes
  inside, as datasets on the Hub do, and their paths relative to the folder as ``image_files``: a copied,
  moved or pushed folder still trains (TRL reads the images as PIL images).
- ``sharegpt/<split>.jsonl`` (``{"messages": [{"role", "content": "<image>question"}], "images": [...]}``) with
  LLaMA-Factory's ``dataset_info.json`` beside the dataset folder's root, and ``llava/<split>.json``: image
  paths relative to the dataset folder, never climbing out of it, so LLaMA-Factory (``--dataset_dir DIR``,
  its ``media_dir`` defaults to it) finds them wherever the folder is; ms-swift and TRL, which resolve
  paths from their working directory, run from DIR (or take an export with ``absolute`` paths).
The record's id, labels, category, source and face ride along as extra keys so the export parses back into
the same records.
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


def write_sharegpt(records_by_split: dict[str, list[dict]], out: Path, image_root: str = "") -> None:
    """``out/sharegpt/<split>.jsonl`` plus LLaMA-Factory's ``out/dataset_info.json``; image paths are
    ``image_root`` (the dataset folder: "" when it is ``out``, else an absolute path) joined with the
    records' paths."""
    (out / "sharegpt").mkdir(parents=True, exist_ok=True)
    info = {}
    for split, records in records_by_split.items():
        path = out / "sharegpt" / f"{split}.jsonl"
        with atomic_open(path) as f:
            for r in records:
                f.write(json.dumps(to_sharegpt(r, image_root), ensure_ascii=False) + "\n")
        info[f"facellm_{split}"] = {
            "file_name": f"sharegpt/{path.name}", "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        }
    write_text_atomic(out / "dataset_info.json", json.dumps(info, indent=2))


def to_llava(record: dict) -> dict:
    """LLaVA's training JSON: one image, ``conversations`` of human/gpt turns, ``<image>`` in the first."""
    conversations = [{"from": "human" if m["role"] == "user" else "gpt",
                      "value": "".join(IMAGE_TAG + "\n" if p["type"] == "image" else p["text"] for p in m["content"])}
                     for m in record["messages"] if m["role"] != "system"]
    return {"id": record["id"], "image": record["images"][0], "conversations": conversations}


def write_llava(records_by_split: dict[str, list[dict]], out_dir: Path, image_root: str = "") -> None:
    """One JSON list per split; image paths ``image_root`` joined with the records' (relative to the dataset
    folder, LLaVA's ``--image_folder``, when ``image_root`` is "")."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, records in records_by_split.items():
        rows = [to_llava(r) for r in records if len(r["images"]) == 1]
        for row in rows:
            row["image"] = os.path.join(image_root, row["image"])
        with atomic_open(out_dir / f"{split}.json") as f:
            json.dump(rows, f, ensure_ascii=False)


def _with_image_bytes(dataset, image_root: Path, scratch: Path):
    """``dataset`` with its ``images`` column as ``datasets.Image`` holding each file's bytes, embedded in
    batches through an Arrow file in ``scratch`` (a million images never sit in memory at once). The paths
    move to ``image_files`` (an embedded image keeps only its file's base name)."""
    from datasets import Image, List, Value

    def embed(batch: dict) -> dict:
        return {"images": [[{"path": p, "bytes": _read(image_root / p)} for p in paths] for paths in batch["images"]],
                "image_files": batch["images"]}

    features = dataset.features.copy()
    features["images"] = List(Image())
    features["image_files"] = List(Value("string"))
    return dataset.map(embed, batched=True, batch_size=256, features=features,
                       cache_file_name=str(scratch / "embedded.arrow"), desc="embedding images")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise FacellmError(f"{path}: cannot read a record's image ({e.strerror or e}); the dataset folder is "
                           "incomplete: rebuild it") from None


def save_dataset(records_by_split: dict[str, list[dict]], out_dir: Path | None, parquet_dir: Path | None,
                 image_root: Path) -> None:
    """A ``datasets.DatasetDict`` under out_dir (replacing an older one only once complete) and one
    Parquet file per split under parquet_dir (either may be None), images embedded from ``image_root``."""
    import tempfile

    from datasets import Dataset, DatasetDict

    with tempfile.TemporaryDirectory(prefix="facellm-export-") as scratch:
        dataset = DatasetDict()
        for split, records in records_by_split.items():
            (Path(scratch) / split).mkdir()
            dataset[split] = _with_image_bytes(Dataset.from_list(records), image_root, Path(scratch) / split)
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
               dataset_dir: Path | None = None, absolute_paths: bool = False) -> None:
    """On-disk forms of a dataset under ``out``: dataset/ (hf), parquet/, sharegpt/ + dataset_info.json,
    llava/. Record image paths are relative to ``dataset_dir`` (default: out); ShareGPT and LLaVA paths are
    relative to ``out`` when it is the dataset folder, else (or with ``absolute_paths``) absolute."""
    if unknown := set(formats) - set(FORMATS):
        raise FacellmError(f"unknown export formats {sorted(unknown)}; known: {', '.join(FORMATS)}")
    dataset_dir = (dataset_dir or out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    image_root = str(dataset_dir) if absolute_paths or dataset_dir != out.resolve() else ""
    try:
        if "hf" in formats or "parquet" in formats:
            save_dataset(records_by_split, out / "dataset" if "hf" in formats else None,
                         out / "parquet" if "parquet" in formats else None, dataset_dir)
        if "sharegpt" in formats:
            write_sharegpt(records_by_split, out, image_root)
        if "llava" in formats:
            write_llava(records_by_split, out / "llava", image_root)
    except OSError as e:  # disk full, quota, permissions: every file is written aside and renamed when whole
        raise FacellmError(f"{out}: export failed ({e.strerror or e}{f': {e.filename}' if e.filename else ''}); "
                           "files written before stay as they were; free space and run it again") from None


def push_to_hub(dataset_dir: Path, repo: str, private: bool = False) -> str:
    """``dataset_dir``'s splits (images embedded) and its card to the Hub dataset ``repo``; its URL."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from facellm.records import open_dataset

    dataset = open_dataset(dataset_dir)
    try:
        dataset.push_to_hub(repo, private=private)
        if (dataset_dir / "README.md").is_file():
            HfApi().upload_file(path_or_fileobj=str(dataset_dir / "README.md"), path_in_repo="README.md",
                                repo_id=repo, repo_type="dataset")
    except OfflineModeIsEnabled:
        raise FacellmError(f"cannot push {dataset_dir} to {repo}: offline mode is on (HF_HUB_OFFLINE=1)") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        hint = " (log in with `hf auth login` or set $HF_TOKEN)" if status in (401, 403) else ""
        raise FacellmError(f"cannot push {dataset_dir} to {repo}: the Hub answered {status}{hint}") from None
    except Exception as e:  # connection refused, DNS, timeouts: the HTTP library's own error classes
        raise FacellmError(f"cannot push {dataset_dir} to {repo}: the Hub at {constants.ENDPOINT} is not "
                           f"reachable ({str(e).splitlines()[0][:200]})") from None
    return f"{constants.ENDPOINT}/datasets/{repo}"
