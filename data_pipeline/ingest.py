"""``facellm data build --source fairface|utkface|celeba|rafdb|folder --root DIR``: real images -> records.

Per image: open it (orientation fixed, RGB), find faces and cues, apply the
filters, crop each kept face with a margin, write template QA from labels and
cues. Every image ends as records or as a reject with its reason.

Work is journalled: one JSON line per finished image in ``DIR/journal.jsonl``
(a torn last line is ignored), so an interrupted build continues where it
stopped, with no duplicate and no lost records; the dataset, ShareGPT export
and ``DIR/rejects.jsonl`` are derived from the journal at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data_pipeline.export import export_all
from data_pipeline.sources import SourceItem, read_source
from data_pipeline.templates import cue_qa, pose_from_cues, qa_pairs
from facellm.errors import FacellmError
from facellm.images import ImageError, load_image
from facellm.records import Record, chat

SPLITS = ("train", "validation", "test")


@dataclass
class IngestConfig:
    source: str
    root: Path
    out: Path
    labels: Path | None = None
    min_face: int = 32  # pixels, shorter side of the face box
    max_faces: int = 1  # images with more faces: skipped, or one record set per face with multi_face="each"
    multi_face: str = "skip"  # skip | each
    min_blur: float = 0.0  # Laplacian variance of the face crop; 0 keeps all
    crop_margin: float = 0.25  # added on every side, as a fraction of the face box
    val_size: float = 0.05  # where the source has no split of its own: fraction of images, by key hash
    test_size: float = 0.05
    seed: int = 0


def hash_split(key: str, val_size: float, test_size: float) -> str:
    u = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 16**8
    return "test" if u < test_size else "validation" if u < test_size + val_size else "train"


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in key)


class Ingest:
    def __init__(self, cfg: IngestConfig):
        from facellm.faces import FaceAnalyzer

        if cfg.multi_face not in ("skip", "each"):
            raise FacellmError(f"multi_face {cfg.multi_face!r}: expected skip or each")
        self.cfg = cfg
        self.analyzer = FaceAnalyzer()
        (cfg.out / "images" / cfg.source).mkdir(parents=True, exist_ok=True)

    def faces(self, item: SourceItem):
        """(image, kept faces) or a reject reason."""
        if item.problems:
            return "labels: " + "; ".join(item.problems)
        try:
            image = load_image(item.image)
        except ImageError as e:
            return f"image: {e}"
        faces = self.analyzer.analyze(image)
        if not faces:
            return "no face found"
        if len(faces) > self.cfg.max_faces and self.cfg.multi_face == "skip":
            return f"{len(faces)} faces (max_faces {self.cfg.max_faces}; multi_face=each keeps one record set per face)"
        kept = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= self.cfg.min_face
                and f.cues.get("blur_laplacian_var", 0) >= self.cfg.min_blur]
        if not kept:
            return f"every face is smaller than {self.cfg.min_face} px or blurrier than {self.cfg.min_blur}"
        return image, kept

    def records(self, item: SourceItem, image, faces) -> list[dict]:
        split = item.split if item.split in SPLITS else hash_split(item.key, self.cfg.val_size, self.cfg.test_size)
        out = []
        for n, face in enumerate(faces):
            x0, y0, x1, y1 = face.box
            m = self.cfg.crop_margin * max(x1 - x0, y1 - y0)
            crop_box = tuple(int(round(v)) for v in (max(0, x0 - m), max(0, y0 - m),
                                                     min(image.width, x1 + m), min(image.height, y1 + m)))
            rel = f"images/{self.cfg.source}/{_safe(item.key)}" + (f"_face{n}" if len(faces) > 1 else "") + ".jpg"
            tmp = self.cfg.out / (rel + ".tmp")
            image.crop(crop_box).save(tmp, format="JPEG", quality=95)
            os.replace(tmp, self.cfg.out / rel)
            labels = dict(item.labels)
            if (pose := pose_from_cues(face.cues)) is not None:
                labels.setdefault("head_pose", pose)
            rng = random.Random(f"{self.cfg.seed}-{item.source}-{item.key}-{n}")
            base = f"{item.source}-{_safe(item.key)}" + (f"-face{n}" if len(faces) > 1 else "")
            face_info = {"box": [round(v - o, 1) for v, o in zip(face.box, crop_box[:2] * 2)], "cues": face.cues}
            for category, q, a in qa_pairs(labels, rng) + cue_qa(face.cues, rng):
                out.append({**Record(id=f"{base}#{category}", images=[rel], messages=chat(q, a), labels=labels,
                                     category=category, source=item.source, face=face_info).model_dump(),
                            "split": split})
        return out

    def process(self, item: SourceItem) -> dict:
        result = self.faces(item)
        if isinstance(result, str):
            return {"key": item.key, "records": [], "reject": {"source": item.source, "input": str(item.image),
                                                              "reason": result}}
        return {"key": item.key, "records": self.records(item, *result), "reject": None}


def _read_journal(path: Path) -> dict[str, dict]:
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a killed run was writing
            done[entry["key"]] = entry
    return done


def ingest(cfg: IngestConfig) -> dict:
    if not (0 <= cfg.val_size < 1 and 0 <= cfg.test_size < 1):
        raise FacellmError(f"--val-size {cfg.val_size} / --test-size {cfg.test_size}: for real sources these are "
                           "fractions of the images in [0, 1), applied where the dataset has no split of its own")
    items = list(read_source(cfg.source, cfg.root, cfg.labels))
    cfg.out.mkdir(parents=True, exist_ok=True)
    journal_path = cfg.out / "journal.jsonl"
    done = _read_journal(journal_path)
    todo = [item for item in items if item.key not in done]
    if todo:
        worker = Ingest(cfg)
        with journal_path.open("a", encoding="utf-8") as journal:
            if journal.tell() and not journal_path.read_bytes().endswith(b"\n"):
                journal.write("\n")  # end a torn line so the next entry starts clean
            for item in tqdm(todo, desc=f"{cfg.source} images", unit="img"):
                entry = worker.process(item)
                journal.write(json.dumps(entry, ensure_ascii=False) + "\n")
                journal.flush()
                done[item.key] = entry
    entries = [done[item.key] for item in items if item.key in done]
    by_split = {s: [] for s in SPLITS}
    for entry in entries:
        for r in entry["records"]:
            by_split[r["split"]].append({k: v for k, v in r.items() if k != "split"})
    by_split = {s: r for s, r in by_split.items() if r}
    if not by_split:
        raise FacellmError(f"{cfg.root}: no image gave a record; see {cfg.out / 'rejects.jsonl'}")
    rejects = [e["reject"] for e in entries if e["reject"]]
    with (cfg.out / "rejects.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects)
    export_all(by_split, cfg.out)
    manifest = {"source": cfg.source, "root": str(cfg.root), "images": len(items), "rejected": len(rejects),
                "records": {s: len(r) for s, r in by_split.items()}}
    (cfg.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
