"""Readers of face datasets in their own on-disk layouts, labels mapped onto the facellm schema.

Each reader yields :class:`SourceItem` s; a value the schema cannot hold becomes a
``problem`` on the item (the build rejects it with that reason), never a guess.

Each reader also says whether its layout holds aligned face crops (``SourceItem.aligned``): images that are
one face filling the frame, which the full-range face detector misses (see :mod:`facellm.faces`). With
``faces.aligned: auto`` the build trusts that; ``yes``/``no`` override it for every image.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from facellm.errors import FacellmError
from facellm.schema import ATTRIBUTES, age_group, normalize


@dataclass
class SourceItem:
    source: str
    key: str  # stable id of the image within its source, e.g. "train/17.jpg"
    image: Path
    labels: dict[str, str] = field(default_factory=dict)
    split: str | None = None  # the dataset's own split, where it has one
    problems: list[str] = field(default_factory=list)
    identity: str | None = None  # who is pictured, where the dataset says: splits keep a person on one side
    row: tuple[str, int] | None = None  # (split, row) of an image held inside a datasets source: read by the
    # worker that needs it (DatasetImages), so a million-image build never holds them all in memory
    age_years: float | None = None  # exact age where the dataset records one (labels hold its FairFace bin)
    aligned: bool = False  # the layout holds this image as an aligned face crop (one face filling the frame)

    @property
    def name(self) -> str:
        """How rejects and errors name the input."""
        return str(self.image) if self.row is None else f"{self.source}:{self.key}"


ALIGNED_MODES = ("auto", "yes", "no")  # faces.aligned: the layout says (SourceItem.aligned), or every image is / isn't

SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "valid": "validation",
               "dev": "validation", "test": "test"}


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FacellmError(f"{path}: not found; expected {what}")
    return path


def _label(labels: dict, problems: list, attribute: str, raw: str, mapping: dict | None = None) -> None:
    """Put ``raw`` under ``attribute`` if it maps onto an allowed value, else note the problem."""
    value = (mapping or {}).get(raw.strip(), raw.strip())
    if value not in ATTRIBUTES[attribute].values:
        value = normalize(attribute, value) or value
    if value in ATTRIBUTES[attribute].values:
        labels[attribute] = value
    else:
        problems.append(f"{attribute}={raw!r} is not one of {list(ATTRIBUTES[attribute].values)}")


# ----------------------------------------------------------------------------- FairFace

FAIRFACE_AGE = {"more than 70": "70+"}
FAIRFACE_CSV = {"train": "fairface_label_train.csv", "validation": "fairface_label_val.csv"}


def read_fairface(root: Path) -> Iterator[SourceItem]:
    """``fairface_label_{train,val}.csv`` (file,age,gender,race,service_test) beside ``train/``, ``val/``.

    Not aligned: FairFace's images are face-centred crops with 25 % or 125 % of the face box as margin
    (its "padding"), which the full-range detector finds (it finds crops with 0-50 % margin)."""
    found = [(split, root / name) for split, name in FAIRFACE_CSV.items() if (root / name).is_file()]
    if not found:
        raise FacellmError(f"{root}: no {' or '.join(FAIRFACE_CSV.values())}; is this a FairFace folder?")
    for split, csv_path in found:
        with csv_path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                labels, problems = {}, []
                _label(labels, problems, "age", row.get("age", ""), FAIRFACE_AGE)
                _label(labels, problems, "gender", row.get("gender", "").lower())
                _label(labels, problems, "race", row.get("race", ""))
                yield SourceItem("fairface", row["file"], root / row["file"], labels, split, problems)


# ----------------------------------------------------------------------------- UTKFace

UTK_GENDER = {"0": "male", "1": "female"}
# UTKFace's "Asian" (2) and "Others" (4) have no single FairFace group: those images keep no race label.
UTK_RACE = {"0": "White", "1": "Black", "3": "Indian"}


UTK_CHIP = ".chip.jpg"  # UTKFace's "Aligned&Cropped Faces" (200x200); its in-the-wild photos end in plain .jpg


def read_utkface(root: Path) -> Iterator[SourceItem]:
    """Images named ``age_gender_race_date.jpg[.chip.jpg]``: labels in the file name. The ``.chip.jpg`` ones
    are aligned face crops, the others in-the-wild photos."""
    files = sorted(p for p in _require(root, "a UTKFace folder").rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    for path in files:
        parts = path.name.split("_")
        labels, problems = {}, []
        if len(parts) < 4 or not parts[0].isdigit():
            problems.append(f"file name {path.name!r} is not age_gender_race_date.jpg")
        else:
            labels["age"] = age_group(int(parts[0]))
            _label(labels, problems, "gender", parts[1], UTK_GENDER)
            if parts[2] in UTK_RACE:
                labels["race"] = UTK_RACE[parts[2]]
            elif parts[2] not in ("2", "4"):
                problems.append(f"race code {parts[2]!r} is not one of 0-4")
        yield SourceItem("utkface", str(path.relative_to(root)), path, labels, None, problems,
                         age_years=float(parts[0]) if "age" in labels else None,
                         aligned=path.name.endswith(UTK_CHIP))


# ----------------------------------------------------------------------------- CelebA

CELEBA_HAIR = {"Black_Hair": "black", "Blond_Hair": "blond", "Brown_Hair": "brown", "Gray_Hair": "gray"}
CELEBA_SPLIT = {"0": "train", "1": "validation", "2": "test"}


def _two_columns(path: Path) -> dict[str, str]:
    """``name value`` lines (CelebA's partition and identity files); {} when the file is absent."""
    if not path.is_file():
        return {}
    return dict(line.split()[:2] for line in path.read_text().splitlines() if len(line.split()) >= 2)


def read_celeba(root: Path) -> Iterator[SourceItem]:
    """``list_attr_celeba.txt`` (40 attributes, 1/-1), ``list_eval_partition.txt``, ``identity_CelebA.txt``,
    ``img_align_celeba/``: aligned (178x218, the eyes at fixed points, the face filling the middle)."""
    attr_lines = _require(root / "list_attr_celeba.txt", "CelebA's list_attr_celeba.txt").read_text().split("\n")
    names = attr_lines[1].split()
    partition = _two_columns(root / "list_eval_partition.txt")
    identity = _two_columns(root / "identity_CelebA.txt")
    for line in attr_lines[2:]:
        if not line.strip():
            continue
        file, *values = line.split()
        labels, problems = {}, []
        if len(values) != len(names) or any(v not in ("1", "-1") for v in values):
            problems.append(f"{len(values)} attribute values (expected {len(names)} of 1/-1)")
        else:
            on = {n for n, v in zip(names, values) if v == "1"}
            labels["gender"] = "male" if "Male" in on else "female"
            labels["glasses"] = "yes" if "Eyeglasses" in on else "no"
            labels["smiling"] = "yes" if "Smiling" in on else "no"
            labels["beard"] = "no" if "No_Beard" in on else "yes"
            hair = [CELEBA_HAIR[n] for n in on if n in CELEBA_HAIR]
            if len(hair) == 1:  # none or several: the colour is not known
                labels["hair_color"] = hair[0]
        yield SourceItem("celeba", file, root / "img_align_celeba" / file, labels,
                         CELEBA_SPLIT.get(partition.get(file, "")), problems, identity.get(file), aligned=True)


# ----------------------------------------------------------------------------- RAF-DB

RAFDB_EMOTION = {"1": "surprised", "2": "fearful", "3": "disgusted", "4": "happy", "5": "sad", "6": "angry",
                 "7": "neutral"}


def read_rafdb(root: Path) -> Iterator[SourceItem]:
    """RAF-DB basic: ``EmoLabel/list_patition_label.txt`` (name label 1-7), ``Image/aligned/<stem>_aligned.jpg``
    (100x100, aligned by the eyes, the face filling the frame: aligned), else ``Image/original/<name>`` (not)."""
    labels_file = _require(root / "EmoLabel" / "list_patition_label.txt", "RAF-DB's EmoLabel/list_patition_label.txt")
    for line in labels_file.read_text().splitlines():
        if not line.strip():
            continue
        name, code = line.split()[:2]
        stem = Path(name).stem
        image = root / "Image" / "aligned" / f"{stem}_aligned.jpg"
        if not image.exists():
            image = root / "Image" / "original" / name
        labels, problems = {}, []
        _label(labels, problems, "expression", code, RAFDB_EMOTION)
        split = "train" if name.startswith("train") else "test" if name.startswith("test") else None
        yield SourceItem("rafdb", name, image, labels, split, problems, aligned=image.parent.name == "aligned")


# ----------------------------------------------------------------------------- folder + labels file

def read_folder(root: Path, labels_file: Path) -> Iterator[SourceItem]:
    """Any image folder with a CSV (header ``file,<attribute>...[,split][,identity]``) or JSONL (same keys).
    Its layout says nothing about alignment: for a folder of face crops (AffectNet-style) pass ``--aligned``."""
    _require(labels_file, "a CSV or JSONL labels file")
    if labels_file.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(labels_file.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise FacellmError(f"{labels_file}:{n}: not JSON ({e.msg})") from None
    else:
        with labels_file.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    for n, row in enumerate(rows, 1):
        if "file" not in row:
            raise FacellmError(f"{labels_file}: row {n} has no 'file' column")
        labels, problems = _labels_of(row, ("file", "split", "identity"))
        yield SourceItem("folder", row["file"], root / row["file"], labels,
                         SPLIT_NAMES.get(str(row.get("split") or "").lower()), problems,
                         str(row["identity"]) if row.get("identity") not in (None, "") else None,
                         age_years=_exact_age(row.get("age")))


def _exact_age(raw) -> float | None:
    """An age column holding years (34, "34", 34.5) rather than a bin ("30-39")."""
    try:
        years = float(raw)
    except (TypeError, ValueError):
        return None
    return years if 0 <= years <= 130 else None


def _labels_of(row: dict, skip: tuple[str, ...]) -> tuple[dict, list]:
    """Schema labels from a row whose other keys are attribute names."""
    labels, problems = {}, []
    for attribute, raw in row.items():
        if attribute in skip or raw in (None, ""):
            continue
        if isinstance(raw, bool):  # e.g. CelebA-style boolean columns
            raw = "yes" if raw else "no"
        if attribute not in ATTRIBUTES:
            problems.append(f"unknown attribute {attribute!r}")
        else:
            _label(labels, problems, attribute, str(raw))
    return labels, problems


# ----------------------------------------------------------------------------- Hugging Face datasets

HF_ROLES = ("image", "identity", "split")  # column roles besides the schema attributes


def _load_hf(root: Path):
    from datasets import DatasetDict, load_dataset, load_from_disk

    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        ds = load_from_disk(str(root))
    elif root.suffix == ".parquet":
        ds = load_dataset("parquet", data_files=str(root))
    elif any(root.rglob("*.parquet")):
        ds = load_dataset("parquet", data_dir=str(root))
    else:
        ds = load_dataset("imagefolder", data_dir=str(root))
    return ds if isinstance(ds, DatasetDict) else DatasetDict({"train": ds})


def read_hf(root: Path, columns: dict[str, str] | None = None) -> Iterator[SourceItem]:
    """A ``datasets`` dataset on disk: ``save_to_disk`` folder, Parquet file(s) or an imagefolder with
    metadata.csv/jsonl. ``columns`` maps roles (image, identity, split, or a schema attribute) to column
    names; unmapped attributes are looked up under their own names. Class-label columns give their names.
    Not aligned unless ``--aligned`` says so (an imagefolder of AffectNet-style class folders of face crops:
    ``--columns expression=label --aligned``)."""
    from datasets import ClassLabel, Image

    _require(root, "a datasets folder, a Parquet file or an imagefolder")
    if unknown := set(columns or {}) - set(HF_ROLES) - set(ATTRIBUTES):
        raise FacellmError(f"--columns {sorted(unknown)}: not a role ({', '.join(HF_ROLES)}) or an attribute")
    role = {r: (columns or {}).get(r, r) for r in (*HF_ROLES, *ATTRIBUTES)}
    ds = _load_hf(root)
    for split_name, part in ds.items():
        if role["image"] not in part.column_names:
            raise FacellmError(f"{root}: no image column {role['image']!r} (columns: {', '.join(part.column_names)}); "
                               "map it with --columns image=NAME")
        if missing := {c for c in (columns or {}).values() if c not in part.column_names}:
            raise FacellmError(f"{root} ({split_name}): --columns names {sorted(missing)}, not among its columns "
                               f"({', '.join(part.column_names)})")
        part = part.cast_column(role["image"], Image(decode=False))
        names = {c: f.int2str for c, f in part.features.items() if isinstance(f, ClassLabel)}
        own_split = SPLIT_NAMES.get(split_name) if len(ds) > 1 else None  # a lone "train" is no split at all
        for i, row in enumerate(part):
            cell = row[role["image"]] or {}
            # a class label of -1 is datasets' "no label": the attribute is unknown, not wrong
            raw = {a: (names[c](row[c]) if row[c] >= 0 else None) if c in names and row[c] is not None else row[c]
                   for a in ATTRIBUTES if (c := role[a]) in row}
            labels, problems = _labels_of(raw, ())
            split = SPLIT_NAMES.get(str(row.get(role["split"]) or "")) or own_split
            identity = row.get(role["identity"])
            key = f"{split_name}/{i}"
            if cell.get("bytes") is None and not cell.get("path"):
                problems.append("no image in this row")
            yield SourceItem("hf", key, Path(cell.get("path") or key), labels, split, problems,
                             None if identity in (None, "") else str(identity),
                             (split_name, i) if cell.get("bytes") is not None else None, _exact_age(raw.get("age")))


class DatasetImages:
    """The encoded image of a ``datasets`` source's row, read when asked (Arrow files are memory-mapped)."""

    def __init__(self, root: Path, columns: dict[str, str] | None = None):
        from datasets import Image

        column = (columns or {}).get("image", "image")
        self.parts = {name: part.select_columns([column]).cast_column(column, Image(decode=False))
                      for name, part in _load_hf(root).items()}
        self.column = column

    def __call__(self, split: str, row: int) -> bytes:
        return self.parts[split][row][self.column]["bytes"]


READERS = {"fairface": read_fairface, "utkface": read_utkface, "celeba": read_celeba, "rafdb": read_rafdb}
SOURCES = ("synthetic", *READERS, "folder", "hf")


def read_source(name: str, root: Path, labels_file: Path | None = None,
                columns: dict[str, str] | None = None) -> Iterator[SourceItem]:
    if name == "folder":
        if labels_file is None:
            raise FacellmError("--source folder needs --labels FILE (CSV or JSONL with a 'file' column)")
        return read_folder(root, labels_file)
    if name == "hf":
        return read_hf(root, columns)
    if name not in READERS:
        raise FacellmError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    return READERS[name](root)
