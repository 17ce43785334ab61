"""Training chats from a chat dataset on disk, in the layouts VLM fine-tuning tools read, plus its rejects.

``read_chats(path)`` tells the layout from what is on disk:

* **facellm**: a directory written by ``facellm data build`` (``DIR/dataset``): its records as they are (validated
  when built), image paths relative to DIR. Nothing below applies to it.
* **hf**: a ``datasets`` ``save_to_disk`` folder (Dataset, or DatasetDict with ``train`` and maybe ``validation``),
* **parquet**: a Parquet file, or a folder of ``train*.parquet`` / ``validation*.parquet`` files,
* **json**: a ``.json`` list or ``.jsonl`` file (or a folder of ``train*`` / ``validation*`` ones) of rows,
  in TRL's convention: ``messages`` (content as parts lists ``{"type": "image"}`` / ``{"type": "text", "text"}``
  or as plain strings) and ``images`` (``datasets.Image`` cells, embedded bytes or paths, or path strings).
  With plain strings, ``<image>`` tags mark where the images go; without any, the images open the first user
  turn, as TRL's ``prepare_multimodal_messages`` puts them.
* **sharegpt**: LLaMA-Factory's ``dataset_info.json`` (its folder or the file) with ``formatting: sharegpt``
  entries: ``columns`` (messages, images, system) and ``tags`` (role/content/user/assistant/system, default
  ``conversations`` of ``from``/``value``, ``human``/``gpt``), ``<image>`` placeholders where the images go.
  The entry named ``*train`` trains (or the only one, or ``data_name``); one named ``*validation`` validates.
* **llava**: LLaVA's JSON list of ``{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}``
  (rows with ``conversations`` in a .json/.jsonl); ``<image>`` tags move to the front of their turn, as LLaVA's
  ``preprocess_multimodal`` does.

Relative image paths resolve as those tools do: against ``image_folder`` where set (LLaVA's ``--image_folder``,
LLaMA-Factory's ``media_dir``), else the data's own folder (that of dataset_info.json, of the JSON or Parquet
file, the save_to_disk folder); then against the facellm dataset directory holding that folder (facellm's
exports under DIR/llava, DIR/sharegpt write paths relative to DIR); then as given, from the working
directory (LLaMA-Factory and ``datasets`` fall back to the path itself). Chats carry absolute paths, or the
encoded bytes of embedded images (held in memory: the size of the data file); ``facellm.images`` opens both.

Every row is checked before training: roles an optional system turn then user/assistant in alternation ending
with an answer, no empty answer, as many images as image parts/tags, every image found and decodable (each
distinct image decoded once; JPEGs at 1/8 scale). A row that fails is a reject (split, file, index: its place
in the file, id, reason) rather than an error mid-run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from facellm.errors import FacellmError
from facellm.records import is_dataset_dir, load_split, read_manifest, split_fingerprints

IMAGE_TAG = "<image>"
SPLITS = {"train": ("train",), "validation": ("validation", "val")}  # file/entry names that mean each split
KEPT = ("category", "labels", "face")  # facellm's record keys, where a row carries them (its own exports do)


@dataclass
class ChatData:
    layout: str  # facellm | hf | parquet | json | sharegpt | llava
    path: Path
    image_root: Path  # where relative image paths of the chats start (facellm); other layouts: absolute paths
    train: list[dict]
    validation: list[dict]
    rejects: list[dict] = field(default_factory=list)  # {"split", "file", "index", "id", "reason"}
    rows: int = 0  # rows read, rejects included
    fingerprint: dict = field(default_factory=dict)  # what exactly was read (model card)

    def summary(self) -> dict:
        return {"layout": self.layout, "path": str(self.path), "rows": self.rows, "train_rows": len(self.train),
                "validation_rows": len(self.validation), "rejected": len(self.rejects)}


class BadRow(Exception):
    """A row that cannot train; the message is the reason."""


def read_chats(path: str | Path, image_folder: str | Path | None = None, data_name: str | None = None) -> ChatData:
    """The train (and validation, where present) chats of ``path`` in any layout above, and the rejected rows;
    ``data_name`` picks the dataset of a dataset_info.json."""
    path = Path(path)
    kind = detect(path)
    if data_name is not None and kind != "sharegpt":
        raise FacellmError(f"{path}: data_name {data_name!r} picks a dataset of a dataset_info.json; this is not "
                           "one (unset data_name)")
    if kind == "facellm":
        train, validation = load_split(path, "train"), load_split(path, "validation")
        return ChatData("facellm", path, path, train, validation, rows=len(train) + len(validation),
                        fingerprint={"splits": split_fingerprints(path), "manifest": read_manifest(path)})
    folder = path if path.is_dir() else path.parent
    reader = _Reader(folder, image_folder)
    if kind == "hf":
        reader.fingerprint = _read_saved(folder, reader)
    elif kind == "sharegpt":
        _read_sharegpt(path if path.is_file() else path / "dataset_info.json", data_name, reader)
    else:
        kinds = {_read_file(file, split, reader) for split, files in _split_files(path).items() for file in files}
        kind = kinds.pop() if len(kinds) == 1 else "json"
    if not reader.chats["train"] and not reader.rejects:
        raise FacellmError(f"{path}: no training rows")
    fingerprint = reader.fingerprint or {"files": {str(f): _digest(f) for f in reader.files}}
    return ChatData(kind, path, folder, reader.chats["train"], reader.chats["validation"], reader.rejects,
                    reader.rows, {"layout": kind, **fingerprint})


def detect(path: Path) -> str:
    """facellm | hf | sharegpt | files (Parquet, .json, .jsonl: their rows tell TRL's convention from LLaVA's)."""
    if not path.exists():
        raise FacellmError(f"{path}: no such file or directory")
    folder = path if path.is_dir() else path.parent
    if path.is_dir() and (path / "dataset" / "dataset_dict.json").is_file():
        return "facellm"
    # before dataset_info.json: a save_to_disk folder holds one of its own (datasets' metadata, not LLaMA-Factory's)
    if _is_saved_dataset(folder) and (path.is_dir() or path.name == "dataset_info.json"):
        return "hf"
    if path.name == "dataset_info.json" or (path.is_dir() and (path / "dataset_info.json").is_file()):
        return "sharegpt"
    return "files"


# --- layouts: which files hold which split, and how their rows read


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _split_of(name: str) -> str | None:
    name = name.lower()
    for split, names in SPLITS.items():
        if any(name == n or name.startswith((f"{n}-", f"{n}_", f"{n}.")) or name.endswith((f"_{n}", f"-{n}"))
               for n in names):
            return split
    return None


def _split_files(path: Path) -> dict[str, list[Path]]:
    """A data file trains; a folder's train* files train and its validation* files validate."""
    suffixes = (".parquet", ".json", ".jsonl")
    if path.is_file():
        if path.suffix not in suffixes:
            raise FacellmError(f"{path}: not a dataset file (expected .parquet, .json or .jsonl, or a folder)")
        return {"train": [path]}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in suffixes)
    if not files:
        raise FacellmError(f"{path}: no training data found: expected a facellm dataset directory "
                           "(`facellm data build`), LLaMA-Factory's dataset_info.json, a datasets save_to_disk "
                           "folder, Parquet files, or .json/.jsonl chat files (TRL messages, LLaVA)")
    by_split: dict[str, list[Path]] = {}
    for f in files:
        if split := _split_of(f.name.split(".")[0]):
            by_split.setdefault(split, []).append(f)
    if "train" not in by_split:
        if len(files) > 1:
            raise FacellmError(f"{path}: {len(files)} data files and none named train*: "
                               f"{', '.join(f.name for f in files)}; point --data at one")
        by_split["train"] = files
    return by_split


def _rows(file: Path, columns: list[str] | None = None) -> Iterator[dict | BadRow]:
    """The rows of a .json list, .jsonl or Parquet file; a .jsonl line that does not parse is a BadRow."""
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(file, columns=[c for c in columns if c in pq.read_schema(file).names]
                                  if columns else None)
        except Exception as e:  # noqa: BLE001 (pyarrow raises several kinds for a damaged file)
            raise FacellmError(f"{file}: unreadable Parquet ({type(e).__name__}: {e})") from None
        yield from table.to_pylist()
        return
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FacellmError(f"{file}: unreadable ({e})") from None
    if file.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # else JSON lines in a .json file, which datasets' json loader reads too
                raise FacellmError(f"{file}: not JSON ({e})") from None
        else:
            if not isinstance(data, list):
                raise FacellmError(f"{file}: expected a JSON list of rows, found {type(data).__name__}")
            yield from data
            return
    for line in text.splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                yield BadRow(f"malformed row: invalid JSON ({e})")


def _read_file(file: Path, split: str, reader: _Reader) -> str:
    """Rows of a .json/.jsonl/.parquet file in TRL's convention or LLaVA's; the layout read."""
    reader.files.append(file)
    rows = list(_rows(file, ["id", "messages", "images", "image", "conversations", *KEPT]))
    first = next((r for r in rows if isinstance(r, dict)), None)
    if first is None:
        reader.add(split, file.name, rows, _trl_chat)  # nothing but malformed lines: their rejects
        return "json"
    if "conversations" in first:
        reader.add(split, file.name, rows, _llava_chat)
        return "llava"
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        first = dict.fromkeys(pq.read_schema(file).names)  # every column, to name them in an error
    _require(file, first, ("messages",), ("images", "image"))
    reader.add(split, file.name, rows, _trl_chat)
    return "parquet" if file.suffix == ".parquet" else "json"


def _require(where: Path, row: dict, *needed: tuple[str, ...]) -> None:
    for names in needed:
        if not any(n in row for n in names):
            raise FacellmError(f"{where}: no {' or '.join(repr(n) for n in names)} column (has "
                               f"{', '.join(row) or 'none'}); expected TRL's `messages` + `images`")


def _read_saved(folder: Path, reader: _Reader) -> dict:
    from datasets import Dataset, load_from_disk

    try:
        saved = load_from_disk(str(folder))
    except Exception as e:  # noqa: BLE001 (datasets raises several kinds for a damaged folder)
        raise FacellmError(f"{folder}: unreadable datasets folder ({type(e).__name__}: {e})") from None
    parts = {"train": saved} if isinstance(saved, Dataset) else dict(saved)
    if "train" not in parts:
        raise FacellmError(f"{folder}: no 'train' split (has {', '.join(parts)})")
    for split in ("train", "validation"):
        if (ds := parts.get(split)) is None:
            continue
        _require(folder if split == "train" and isinstance(saved, Dataset) else folder / split,
                 dict.fromkeys(ds.column_names), ("messages",), ("images", "image"))
        keep = [c for c in ("id", "messages", "images", "image", *KEPT) if c in ds.column_names]
        # raw Arrow rows: Image cells stay {"bytes", "path"}, nothing is decoded twice
        reader.add(split, split, ds.select_columns(keep).with_format("arrow")[:].to_pylist(), _trl_chat)
    return {"splits": {split: ds._fingerprint for split, ds in parts.items()}}


def _read_sharegpt(info_path: Path, name: str | None, reader: _Reader) -> None:
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FacellmError(f"{info_path}: unreadable dataset_info.json ({e})") from None
    if not isinstance(info, dict):
        raise FacellmError(f"{info_path}: expected a JSON object of datasets")
    usable = {k: v for k, v in info.items() if isinstance(v, dict) and v.get("formatting") == "sharegpt"
              and v.get("file_name") and not v.get("ranking")}
    if name is not None:
        if name not in usable:
            raise FacellmError(f"{info_path}: no local sharegpt dataset {name!r} (has {', '.join(usable) or 'none'})")
        chosen = {"train": name}
    elif len(usable) == 1:
        chosen = {"train": next(iter(usable))}
    else:
        chosen = {}
        for entry in usable:
            if (split := _split_of(entry)) and split not in chosen:
                chosen[split] = entry
        if "train" not in chosen:
            raise FacellmError(f"{info_path}: {len(usable)} local sharegpt datasets ({', '.join(usable) or 'none'}) "
                               "and none named *train; pick one with --set data_name=NAME")
    for split, entry in chosen.items():
        attrs = usable[entry]
        target = info_path.parent / attrs["file_name"]
        if not target.exists():
            raise FacellmError(f"{info_path}: {entry}'s file_name {attrs['file_name']} does not exist ({target})")
        files = sorted(p for p in target.iterdir() if p.is_file()) if target.is_dir() else [target]
        columns, tags = attrs.get("columns") or {}, attrs.get("tags") or {}
        fields = [columns.get("messages", "conversations"), columns.get("images"), columns.get("system"), "id", *KEPT]
        for file in files:
            reader.files.append(file)
            reader.add(split, f"{entry}:{file.name}", _rows(file, [f for f in fields if f]),
                       lambda row, c=columns, t=tags: _sharegpt_chat(row, c, t))


# --- rows -> (messages as parts, image references, facellm's keys)


def _parts(text: str) -> list[dict]:
    """Text with ``<image>`` placeholders as content parts, images where the tags stood."""
    parts = []
    for i, piece in enumerate(text.split(IMAGE_TAG)):
        if i:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def _as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


def _kept(row: dict) -> dict:
    """facellm's category, labels and face, where the row has them in facellm's shape (nulls dropped: Arrow)."""
    out = {}
    if isinstance(row.get("category"), str):
        out["category"] = row["category"]
    if isinstance(row.get("labels"), dict):
        out["labels"] = {k: v for k, v in row["labels"].items() if v is not None}
    if isinstance(row.get("face"), dict):
        out["face"] = row["face"]
    return out


def _trl_chat(row: dict) -> tuple[list[dict], list, dict]:
    refs = _as_list(row["images"] if "images" in row else row.get("image"))
    tagged = any(isinstance(m["content"], str) and IMAGE_TAG in m["content"] for m in row["messages"])
    all_text = all(isinstance(m["content"], str) for m in row["messages"])
    messages, shown = [], False
    for m in row["messages"]:
        content = m["content"]
        if isinstance(content, str):
            parts = _parts(content) if tagged else [{"type": "text", "text": content}]
            if all_text and not tagged and not shown and m["role"] == "user":  # TRL: images open the first user turn
                parts, shown = [{"type": "image"}] * len(refs) + parts, True
        else:
            parts = []
            for p in content:
                if p.get("type") == "image":
                    parts.append({"type": "image"})
                elif p.get("type") == "text":
                    parts.append({"type": "text", "text": p.get("text") or ""})
                else:
                    raise BadRow(f"unsupported content part {p.get('type')!r}")
        messages.append({"role": m["role"], "content": parts})
    return messages, refs, _kept(row)


def _sharegpt_chat(row: dict, columns: dict, tags: dict) -> tuple[list[dict], list, dict]:
    """LLaMA-Factory's SharegptDatasetConverter: tags map to roles, a leading system_tag turn (or the system
    column) is the system prompt."""
    role_tag, content_tag = tags.get("role_tag", "from"), tags.get("content_tag", "value")
    user_tag, assistant_tag = tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt")
    roles = {user_tag: "user", assistant_tag: "assistant"}
    turns, messages = row[columns.get("messages", "conversations")], []
    system_tag = tags.get("system_tag")
    if system_tag and turns and turns[0][role_tag] == system_tag:
        messages.append({"role": "system", "content": _parts(turns[0][content_tag])})
        turns = turns[1:]
    elif columns.get("system") and row.get(columns["system"]):
        messages.append({"role": "system", "content": [{"type": "text", "text": row[columns["system"]]}]})
    for t in turns:
        if t[role_tag] not in roles:
            raise BadRow(f"roles: {t[role_tag]!r} is neither the user tag {user_tag!r} nor the assistant tag "
                         f"{assistant_tag!r}")
        messages.append({"role": roles[t[role_tag]], "content": _parts(t[content_tag])})
    refs = _as_list(row.get(columns["images"])) if columns.get("images") else []
    return messages, refs, _kept(row)


LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _llava_chat(row: dict) -> tuple[list[dict], list, dict]:
    messages = []
    for t in row["conversations"]:
        if t["from"] not in LLAVA_ROLES:
            raise BadRow(f"roles: {t['from']!r} is neither human nor gpt")
        value, n = t["value"], t["value"].count(IMAGE_TAG)
        text = value.replace(IMAGE_TAG, "").strip() if n else value  # LLaVA: the image first, then the text
        messages.append({"role": LLAVA_ROLES[t["from"]],
                         "content": [{"type": "image"}] * n + ([{"type": "text", "text": text}] if text else [])})
    return messages, _as_list(row["image"] if "image" in row else row.get("images")), _kept(row)


# --- checks shared by every layout


def check_turns(messages: list[dict], n_images: int) -> None:
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[:1] == ["system"] else roles
    if not body or len(body) % 2 or any(r != ("user", "assistant")[i % 2] for i, r in enumerate(body)):
        raise BadRow(f"roles {', '.join(roles) or '(none)'}: expected user and assistant in alternation, "
                     "from a question to an answer (after one system turn at most)")
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not "".join(p.get("text") or "" for p in m["content"]).strip():
            raise BadRow(f"empty answer (turn {i})")
    n_parts = sum(p["type"] == "image" for m in messages for p in m["content"])
    if n_parts != n_images:
        raise BadRow(f"image count: {n_parts} image tags/parts but {n_images} images")


class _Reader:
    """Rows -> chats or rejects; images resolved and decoded once each."""

    def __init__(self, folder: Path, image_folder: str | Path | None):
        first = Path(image_folder) if image_folder else folder
        self.bases = [first] + ([folder.parent] if is_dataset_dir(folder.parent) and folder.parent != first else [])
        self.chats: dict[str, list[dict]] = {"train": [], "validation": []}
        self.rejects: list[dict] = []
        self.rows = 0
        self.files: list[Path] = []
        self.fingerprint: dict | None = None
        self._images: dict[str | bytes, tuple[str | bytes | None, str | None]] = {}

    def add(self, split: str, source: str, rows, convert: Callable[[dict], tuple[list[dict], list, dict]]) -> None:
        for index, row in enumerate(rows):
            self.rows += 1
            row_id = row.get("id") if isinstance(row, dict) else None
            try:
                if isinstance(row, BadRow):
                    raise row
                if not isinstance(row, dict):
                    raise BadRow(f"malformed row: a {type(row).__name__}, not an object")
                try:
                    messages, refs, kept = convert(row)
                except (KeyError, TypeError, AttributeError, IndexError) as e:
                    raise BadRow(f"malformed row ({type(e).__name__}: {e})") from None
                check_turns(messages, len(refs))
                images = [self.image(ref) for ref in refs]
            except BadRow as e:
                self.rejects.append({"split": split, "file": source, "index": index,
                                     "id": None if row_id is None else str(row_id), "reason": str(e)})
                continue
            chat_id = str(row_id) if row_id is not None else f"{source}#{index}"
            self.chats[split].append({"id": chat_id, "images": images, "messages": messages, **kept})

    def image(self, ref) -> str | bytes:
        if isinstance(ref, dict):  # a datasets.Image cell: embedded bytes, else a path
            ref = ref.get("bytes") or ref.get("path")
        if not ref or not isinstance(ref, (str, bytes)):
            raise BadRow(f"missing image: {ref!r} is not an image reference")
        if ref not in self._images:
            self._images[ref] = self._check(ref)
        image, reason = self._images[ref]
        if reason:
            raise BadRow(reason)
        return image

    def _check(self, ref: str | bytes) -> tuple[str | bytes | None, str | None]:
        if isinstance(ref, str) and ref.startswith("data:"):
            header, _, payload = ref.partition(",")
            try:
                ref = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return None, f"undecodable image: data URL ({header[:40]}) with invalid base64"
        if isinstance(ref, str) and "://" in ref and not ref.startswith("file://"):
            return None, f"missing image: {ref[:80]} is a remote URL (not fetched); download it first"
        if isinstance(ref, str):
            path = self.resolve(ref)
            if path is None:
                return None, f"missing image: {ref} (looked in {', '.join(str(b) for b in self.bases)})"
            ref = path
        name = "embedded image" if isinstance(ref, bytes) else ref
        try:
            with Image.open(io.BytesIO(ref) if isinstance(ref, bytes) else ref) as img:
                img.draft("RGB", (1, 1))  # JPEG: decoded at 1/8 scale, every byte still read
                img.load()
        except Exception as e:  # noqa: BLE001 (PIL raises many kinds for a broken file: each is this row's reason)
            return None, f"undecodable image: {name} ({type(e).__name__}: {e})"
        return ref, None

    def resolve(self, ref: str) -> str | None:
        if ref.startswith("file://"):
            ref = ref[len("file://"):]
        path = Path(ref).expanduser()
        candidates = [path] if path.is_absolute() else [b / path for b in self.bases] + [path]
        return next((os.path.abspath(c) for c in candidates if c.is_file()), None)


def _digest(file: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with file.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
