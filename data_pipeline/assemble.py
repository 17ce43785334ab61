"""Faces -> validated QA records -> dataset on disk: the last stage both builders share.

A builder (synthetic or a real dataset) hands over :class:`FaceEntry` s: one face image
with its labels, cues and split. Here every face gets its template QA, and with a
teacher its teacher QA; every answer is checked by :mod:`data_pipeline.validate`;
the kept ones become records, the rest go to ``rejects.jsonl`` with the reason.
Everything here is deterministic given the faces (and the teacher's on-disk
cache), so re-running after a crash rebuilds the same records.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from data_pipeline.export import export_all
from data_pipeline.templates import TemplateOptions, group_of, template_qa
from data_pipeline.validate import check
from facellm.atomic import atomic_open
from facellm.records import Record, chat

SPLITS = ("train", "validation", "test")


@dataclass
class FaceEntry:
    """One face image a builder hands over, with what its records are written from."""

    key: str  # unique within the dataset; record ids are "<key>#<category>"
    image: str  # path relative to the dataset directory
    labels: dict[str, str]
    split: str
    source: str
    face: dict = field(default_factory=dict)  # {"box": [...], "cues": {...}, "occlusion": ...}
    observations: list[str] | None = None  # expression cues known exactly (synthetic faces)
    pairs: list[tuple[str, str, str]] = field(default_factory=list)  # QA the builder knows (scene questions)


def qa_reject(face: FaceEntry, writer: str, category: str, question: str, answer: str, reason: str) -> dict:
    return {"source": face.source, "input": face.image, "id": f"{face.key}#{category}", "writer": writer,
            "category": category, "question": question, "answer": answer, "reason": reason}


def face_records(face: FaceEntry, pairs, writer: str) -> tuple[list[dict], list[dict]]:
    """Records for the pairs that pass validation, and rejects for those that don't."""
    records, rejects, seen = [], [], Counter()
    cues = face.face.get("cues") or {}
    for category, q, a in pairs:
        if reason := check(category, q, a, face.labels, cues, face.source):
            rejects.append(qa_reject(face, writer, category, q, a, reason))
            continue
        seen[category] += 1
        suffix = f"-{seen[category]}" if seen[category] > 1 else ""
        record = Record(id=f"{face.key}#{category}{suffix}", images=[face.image], messages=chat(q, a),
                        labels=face.labels, category=category, source=face.source, face=face.face or None)
        records.append({**record.model_dump(), "split": face.split})
    return records, rejects


def template_records(faces: list[FaceEntry], options: TemplateOptions, seed: int):
    records, rejects = [], []
    for face in faces:
        rng = random.Random(f"{seed}-{face.key}")
        pairs = template_qa(face.labels, face.face, face.source, rng, options, face.observations) + face.pairs
        kept, dropped = face_records(face, pairs, "template")
        records += kept
        rejects += dropped
    return records, rejects


def teacher_records(faces: list[FaceEntry], teacher, root: Path):
    """Teacher QA for every face, concurrently; cached answers cost no request."""
    by_key = {f.key: f for f in faces}
    jobs = [(f.key, root / f.image, f.labels, f.face.get("cues") or {}) for f in faces]
    records, rejects = [], []
    for key, result in tqdm(teacher.qa_many(jobs), total=len(jobs), desc="teacher QA", unit="face"):
        face = by_key[key]
        if isinstance(result, Exception):
            rejects.append({"source": face.source, "input": face.image, "id": key, "writer": "teacher",
                            "reason": f"teacher: {result}"})
            continue
        kept, dropped = face_records(face, [(f"teacher_{c}", q, a) for c, q, a in result], "teacher")
        records += kept
        rejects += dropped
    return records, rejects


def write_dataset(out: Path, faces: list[FaceEntry], options: TemplateOptions, seed: int, input_rejects: list[dict],
                  manifest: dict, teacher=None) -> dict:
    """Records from the faces, exports, ``rejects.jsonl``, ``manifest.json`` and the dataset card."""
    from data_pipeline.card import write_card

    records, rejects = template_records(faces, options, seed)
    if teacher is not None:
        taught, refused = teacher_records(faces, teacher, out)
        records += taught
        rejects += refused
    by_split = {s: [] for s in SPLITS}
    for r in sorted(records, key=lambda r: r["id"]):  # teacher answers arrive in completion order
        by_split[r.pop("split")].append(r)
    by_split = {s: r for s, r in by_split.items() if r}
    all_rejects = input_rejects + rejects
    with atomic_open(out / "rejects.jsonl") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in all_rejects)
    if by_split:
        export_all(by_split, out)
    manifest = {
        **manifest,
        "faces": len(faces),
        "records": {s: len(r) for s, r in by_split.items()},
        "categories": dict(sorted(Counter(r["category"] for rs in by_split.values() for r in rs).items())),
        "groups": dict(sorted(Counter(group_of(r["category"]) for rs in by_split.values() for r in rs).items())),
        "rejected_inputs": len(input_rejects),
        "rejected_qa": dict(sorted(Counter(r["reason"].split(":")[0] for r in rejects).items())),
        "template_options": asdict(options),
    }
    if teacher is not None:
        manifest["teacher"] = {"model": teacher.cfg.model, **teacher.usage.as_dict()}
    with atomic_open(out / "manifest.json") as f:
        json.dump(manifest, f, indent=2)
    if by_split:
        write_card(out, group_of=group_of)
    return manifest
