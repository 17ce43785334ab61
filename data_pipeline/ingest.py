"""``facellm data build --source fairface|utkface|celeba|rafdb|folder|hf --root DIR``: real images -> records.

Per image: open it (orientation fixed, RGB), find faces and cues, apply the
filters, crop each kept face with a margin and save its 468 landmarks. Every
image ends as faces or as a reject with its reason.

Aligned face crops (``faces.aligned``: what the source's layout says, or yes/no
for every image) get a second look where the full-range detector finds no face:
the short-range detector, then the face mesh on the whole image
(:meth:`facellm.faces.FaceAnalyzer.analyze`).

The expensive part is journalled: one JSON line per finished image in
``DIR/journal.jsonl`` (a torn last line is ignored), so an interrupted build
continues where it stopped, with no duplicate and no lost work. An entry records
whether its image was treated as aligned; one made the other way is redone. QA
(templates, teacher through its on-disk cache), validation, exports and
``DIR/rejects.jsonl`` are derived from the journal at the end
(:mod:`data_pipeline.assemble`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_pipeline.assemble import SPLITS, FaceEntry, write_dataset
from data_pipeline.sources import ALIGNED_MODES, DatasetImages, SourceItem, read_source
from data_pipeline.templates import TemplateOptions, pose_from_cues
from facellm.atomic import atomic_open, atomic_path
from facellm.errors import FacellmError
from facellm.faces import CROP_MARGIN, crop_box
from facellm.images import ImageError, load_image, load_image_bytes
from facellm.parallel import FanOut, fan_out


@dataclass
class IngestConfig:
    source: str
    root: Path
    out: Path
    labels: Path | None = None
    columns: dict[str, str] = field(default_factory=dict)  # hf: attribute/image/identity/split -> column
    min_face: int = 32  # pixels, shorter side of the face box
    max_faces: int = 1  # images with more faces: skipped, or one record set per face with multi_face="each"
    multi_face: str = "skip"  # skip | each
    min_blur: float = 0.0  # Laplacian variance of the face crop; 0 keeps all
    aligned: str = "auto"  # images are aligned face crops: auto (as the source's layout says) | yes | no
    crop_margin: float = CROP_MARGIN  # added on every side, as a fraction of the face box
    val_size: float = 0.05  # where the source has no split of its own: fraction of images (or identities)
    test_size: float = 0.05
    seed: int = 0
    dedupe: int = -1  # drop face crops within this many pHash bits of an earlier one; -1 keeps all
    templates: TemplateOptions = field(default_factory=TemplateOptions)
    fanout: FanOut = field(default_factory=FanOut)  # where detection runs: processes here or a Ray cluster


def hash_split(key: str, val_size: float, test_size: float) -> str:
    u = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 16**8
    return "test" if u < test_size else "validation" if u < test_size + val_size else "train"


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in key)


JOURNAL_VERSION = 3  # entries of other versions are redone; v3 added "aligned" (and each face's "found_by")
NO_FACE = "no face found"
NO_FACE_ALIGNED = f"{NO_FACE} (aligned crop: neither detector nor the face mesh on the whole image sees one)"


def aligned_of(item: SourceItem, cfg: IngestConfig) -> bool:
    """Whether the item's image is treated as an aligned face crop."""
    return item.aligned if cfg.aligned == "auto" else cfg.aligned == "yes"


def _current(entry: dict | None, aligned: bool) -> bool:
    """Whether a journal entry holds the detection this build would make (an entry of the other mode: no)."""
    return entry is not None and entry["aligned"] == aligned


class Ingest:
    """The expensive, journalled part: open an image, find every face, save crops and landmarks. One per
    worker process (or Ray actor), each with its own detector; called with a batch of items."""

    def __init__(self, cfg: IngestConfig):
        from facellm.faces import FaceAnalyzer

        self.cfg = cfg
        self.analyzer = FaceAnalyzer()
        self.dataset_images = DatasetImages(cfg.root, cfg.columns) if cfg.source == "hf" else None
        (cfg.out / "images" / cfg.source).mkdir(parents=True, exist_ok=True)

    def __call__(self, items: list[SourceItem]) -> list[dict]:
        return [self.process(item) for item in items]

    def crop(self, item: SourceItem, image, face, n: int | None) -> dict:
        """Save the face's crop and landmarks; ``n`` numbers the faces of a several-face image."""
        box = crop_box(face.box, image.width, image.height, self.cfg.crop_margin)
        stem = f"images/{self.cfg.source}/{_safe(item.key).replace('.', '_')}" + (f"_face{n}" if n is not None else "")
        with atomic_path(self.cfg.out / f"{stem}.jpg") as tmp:
            image.crop(box).save(tmp, format="JPEG", quality=95)
        info = {"box": [round(v - o, 1) for v, o in zip(face.box, box[:2] * 2)], "cues": face.cues}
        if face.landmarks is not None:
            points = (face.landmarks - np.array([box[0], box[1], 0])).astype(np.float32)
            with atomic_open(self.cfg.out / f"{stem}.landmarks.npy", "wb") as f:
                np.save(f, points)
            info["landmarks"] = f"{stem}.landmarks.npy"
        return {"n": n, "image": f"{stem}.jpg", "face": info, "found_by": face.found_by}

    def process(self, item: SourceItem) -> dict:
        """Journal entry: every face found (filters and labels are applied later, so changing them needs no
        new detection), or why the image gave none."""
        aligned = aligned_of(item, self.cfg)
        entry = {"v": JOURNAL_VERSION, "key": item.key, "aligned": aligned, "faces": [], "error": None}
        try:
            image = (load_image(item.image) if item.row is None
                     else load_image_bytes(self.dataset_images(*item.row), item.name))
        except ImageError as e:
            return {**entry, "error": f"image: {e}"}
        faces = self.analyzer.analyze(image, aligned=aligned)
        if not faces:
            return {**entry, "error": NO_FACE_ALIGNED if aligned else NO_FACE}
        return {**entry, "faces": [self.crop(item, image, f, n if len(faces) > 1 else None)
                                   for n, f in enumerate(faces)]}


def split_of(item: SourceItem, cfg: IngestConfig) -> str:
    """The dataset's own split, else a hash of the identity (all photos of a person on one side), else of
    the image."""
    if item.split in SPLITS:
        return item.split
    return hash_split(item.identity or item.key, cfg.val_size, cfg.test_size)


def faces_of(item: SourceItem, entry: dict, cfg: IngestConfig) -> list[FaceEntry] | str:
    """The item's faces that pass the filters, with labels and split, or the reason it gives none."""
    if item.problems:
        return "labels: " + "; ".join(item.problems)
    if entry["error"]:
        return entry["error"]
    found = entry["faces"]
    if len(found) > cfg.max_faces and cfg.multi_face == "skip":
        return f"{len(found)} faces (max_faces {cfg.max_faces}; multi_face=each keeps one record set per face)"
    kept = []
    for f in found:
        x0, y0, x1, y1 = f["face"]["box"]
        if min(x1 - x0, y1 - y0) < cfg.min_face or f["face"]["cues"].get("blur_laplacian_var", 0) < cfg.min_blur:
            continue
        labels = dict(item.labels)
        if (pose := pose_from_cues(f["face"]["cues"])) is not None:
            labels.setdefault("head_pose", pose)
        key = f"{item.source}-{_safe(item.key)}" + (f"-face{f['n']}" if f["n"] is not None else "")
        face = f["face"] if item.age_years is None else {**f["face"], "age_years": item.age_years}
        kept.append(FaceEntry(key, f["image"], labels, split_of(item, cfg), item.source, face))
    return kept or f"every face is smaller than {cfg.min_face} px or blurrier than {cfg.min_blur}"


def _read_journal(path: Path) -> dict[str, dict]:
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a killed run was writing
            if entry.get("v") == 2:  # made before aligned crops had a mode: all by the full-range detector
                entry = {**entry, "v": JOURNAL_VERSION, "aligned": False}
            if entry.get("v") == JOURNAL_VERSION:
                done[entry["key"]] = entry  # a later line (a redo in the other mode) replaces an earlier one
    return done


def ingest(cfg: IngestConfig, teacher=None) -> dict:
    if not (0 <= cfg.val_size < 1 and 0 <= cfg.test_size < 1):
        raise FacellmError(f"--val-size {cfg.val_size} / --test-size {cfg.test_size}: for real sources these are "
                           "fractions of the images in [0, 1), applied where the dataset has no split of its own")
    if cfg.multi_face not in ("skip", "each"):
        raise FacellmError(f"multi_face {cfg.multi_face!r}: expected skip or each")
    if cfg.aligned not in ALIGNED_MODES:
        raise FacellmError(f"aligned {cfg.aligned!r}: expected one of {', '.join(ALIGNED_MODES)}")
    items = list(read_source(cfg.source, cfg.root, cfg.labels, cfg.columns))
    cfg.out.mkdir(parents=True, exist_ok=True)
    journal_path = cfg.out / "journal.jsonl"
    done = _read_journal(journal_path)
    todo = [item for item in items  # bad labels: no detection
            if not item.problems and not _current(done.get(item.key), aligned_of(item, cfg))]
    if todo:
        with journal_path.open("a", encoding="utf-8") as journal:
            if journal.tell() and not journal_path.read_bytes().endswith(b"\n"):
                journal.write("\n")  # end a torn line so the next entry starts clean
            results = fan_out(functools.partial(Ingest, cfg), todo, cfg.fanout)
            for item, entry in tqdm(results, total=len(todo), desc=f"{cfg.source} images", unit="img"):
                if _current(done.get(item.key), entry["aligned"]):
                    continue  # a batch Ray ran twice (its actor died after finishing it): journalled once
                journal.write(json.dumps(entry, ensure_ascii=False) + "\n")
                journal.flush()
                done[item.key] = entry
    faces, rejects = [], []
    for item in items:
        result = faces_of(item, done.get(item.key, {"error": None, "faces": []}), cfg)
        if isinstance(result, str):
            rejects.append({"source": item.source, "input": item.name, "reason": result})
        else:
            faces += result
    if cfg.dedupe >= 0:
        faces, duplicates = _drop_duplicates(faces, cfg.out, cfg.dedupe)
        rejects += duplicates
    if not faces:
        with atomic_open(cfg.out / "rejects.jsonl") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
        hint = ("; for face crops that fill the frame pass --aligned" if any(r["reason"] == NO_FACE for r in rejects)
                else "")
        raise FacellmError(f"{cfg.root}: no image gave a face; reasons in {cfg.out / 'rejects.jsonl'}{hint}")
    found = [f for item in items for f in done.get(item.key, {}).get("faces", ())]  # before the filters
    found_by = Counter(f.get("found_by", "full_range") for f in found)  # v2 entries: full range alone
    manifest = {"source": cfg.source, "root": str(cfg.root), "images": len(items), "rejected": len(rejects),
                "faces_found_by": dict(sorted(found_by.items()))}
    return write_dataset(cfg.out, faces, cfg.templates, cfg.seed, rejects, manifest, teacher)


def _drop_duplicates(faces: list[FaceEntry], out: Path, max_distance: int) -> tuple[list[FaceEntry], list[dict]]:
    """Keep the first of every group of near-identical face crops (perceptual hash); reject the rest."""
    from data_pipeline.phash import near_duplicates

    first = near_duplicates([out / f.image for f in faces], max_distance)
    rejects = [{"source": faces[i].source, "input": faces[i].image,
                "reason": f"near-duplicate of {faces[k].image} (pHash within {max_distance} bits)"}
               for i, k in sorted(first.items())]
    return [f for i, f in enumerate(faces) if i not in first], rejects
