"""Dataset leakage: near-duplicate images inside a dataset (across splits) and leaks into
evaluation benchmarks, found with perceptual hashes (:mod:`data_pipeline.phash`), with the reports.

Synthetic faces are all drawn from one template (same layout, flat colours), so
*distinct* synthetic faces can hash within 0-2 bits of each other: on a synthetic
dataset, near-duplicate pairs are expected and are not leaks; ``identical`` (same
decoded pixels) still tells true copies apart.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_pipeline.phash import DEFAULT_HASH_SIZE, close_pairs, image_hashes, pack_bits, same_pixels
from facellm.errors import FacellmError
from facellm.facexbench_format import read_task
from facellm.records import image_paths_column, open_dataset

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
SYNTHETIC_NOTE = ("synthetic faces are drawn from one template: distinct faces can hash within 0-2 bits of "
                  "each other, so near-duplicate pairs among them are expected and are not leaks; "
                  "pairs marked identical (same decoded pixels) are true copies")


# ------------------------------------------------------------------ what is compared

def dataset_images(dataset_dir: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Image path (relative to the dataset dir) -> [(split, record id), ...] over every split; a
    FacellmError when ``dataset_dir`` holds no dataset (see :func:`facellm.records.open_dataset`)."""
    images: dict[str, list[tuple[str, str]]] = {}
    for split, ds in open_dataset(dataset_dir).items():
        paths_column = image_paths_column(ds)
        columns = ds.select_columns(["id", paths_column]).to_dict()
        for record_id, paths in zip(columns["id"], columns[paths_column]):
            for rel in paths:
                images.setdefault(rel, []).append((split, record_id))
    return images


def _facexbench_refs(path: Path) -> dict[Path, list[dict]]:
    """Image -> the questions that use it, from one FaceXBench task file (raises FacellmError for a
    file that is not a well-formed task)."""
    task = read_task(path)
    refs: dict[Path, list[dict]] = {}
    for question in task.questions:
        for image in question.images:
            refs.setdefault(image, []).append({
                "file": str(path), "question": question.qid, "dataset": task.dataset,
                "category": task.category, "sub_category": task.sub_category})
    return refs


def benchmark_questions(target: str | Path, skipped: dict[str, str] | None = None) -> dict[Path, list[dict]]:
    """Every benchmark image under ``target`` -> the FaceXBench questions that use it (empty for a
    plain image). ``target`` is an image, a folder of images (searched recursively), a FaceXBench
    task JSON (read by :mod:`facellm.facexbench_format`), or a folder holding such JSONs (their
    images and any other image in the tree count). JSON files in a folder that are not well-formed
    FaceXBench tasks are skipped into ``skipped`` (path -> reason); a single JSON named as
    ``target`` must be one."""
    target = Path(target)
    if not target.exists():
        raise FacellmError(f"{target}: no such file or folder")
    found: dict[Path, list[dict]] = {}

    def add(refs: dict[Path, list[dict]]) -> None:
        for image, r in refs.items():
            found.setdefault(image, []).extend(r)

    if target.is_file():
        if target.suffix.lower() == ".json":
            add(_facexbench_refs(target))
        elif target.suffix.lower() in IMAGE_SUFFIXES:
            add({target.absolute(): []})
        else:
            raise FacellmError(f"{target}: expected an image, a FaceXBench task JSON, or a folder of either")
        return found
    for path in sorted(target.rglob("*")):
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            found.setdefault(Path(os.path.abspath(path)), [])
        elif suffix == ".json":
            try:
                add(_facexbench_refs(path))
            except FacellmError as e:
                log.info("skipping %s", e)
                if skipped is not None:
                    skipped[str(path)] = str(e)
    if not found:
        raise FacellmError(f"{target}: no images or FaceXBench task JSON files inside")
    return dict(sorted(found.items()))


def benchmark_images(target: str | Path) -> list[Path]:
    """The benchmark images under ``target`` (see :func:`benchmark_questions`), sorted."""
    return list(benchmark_questions(target))


def _manifest_source(dataset_dir: Path) -> str | None:
    try:
        return json.loads((dataset_dir / "manifest.json").read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None


# ------------------------------------------------------------------ leaks into a benchmark

@dataclass
class Leak:
    benchmark_image: str
    dataset_image: str  # relative to the dataset dir
    distance: int  # Hamming distance of the pHashes, in bits
    identical: bool  # same decoded pixels
    records: dict[str, list[str]]  # split -> ids of the records using the dataset image
    questions: list[dict]  # FaceXBench questions using the benchmark image: file, question, dataset, category

    @property
    def splits(self) -> list[str]:
        return sorted(self.records)

    @property
    def record_ids(self) -> list[str]:
        return sorted(r for ids in self.records.values() for r in ids)


@dataclass
class LeakReport:
    dataset_dir: str
    target: str
    hash_size: int
    max_distance: int
    dataset_images: int  # hashed
    benchmark_images: int  # hashed
    leaks: list[Leak] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> reason, both sides
    skipped: dict[str, str] = field(default_factory=dict)  # JSON files that are not FaceXBench tasks
    notes: list[str] = field(default_factory=list)

    @property
    def record_ids(self) -> list[str]:
        return sorted({r for leak in self.leaks for r in leak.record_ids})

    @property
    def leaked_benchmark_images(self) -> list[str]:
        return sorted({leak.benchmark_image for leak in self.leaks})

    @property
    def questions(self) -> list[dict]:
        seen, out = set(), []
        for leak in self.leaks:
            for q in leak.questions:
                if (key := (q["file"], q["question"])) not in seen:
                    seen.add(key)
                    out.append(q)
        return out

    def by_split(self) -> dict[str, int]:
        """Dataset images that leak, per split using them."""
        counts: dict[str, set[str]] = {}
        for leak in self.leaks:
            for split in leak.splits:
                counts.setdefault(split, set()).add(leak.dataset_image)
        return {s: len(v) for s, v in sorted(counts.items())}

    def to_dict(self) -> dict:
        return {"kind": "leakage", **{k: v for k, v in asdict(self).items() if k != "leaks"},
                "summary": {"leaks": len(self.leaks), "benchmark_images_leaked": len(self.leaked_benchmark_images),
                            "dataset_images_leaked_by_split": self.by_split(), "records_affected": len(self.record_ids),
                            "questions_affected": len(self.questions)},
                "leaks": [{**asdict(leak), "splits": leak.splits} for leak in self.leaks]}


def find_leaks(dataset_dir: str | Path, target: str | Path, max_distance: int = 4,
               hash_size: int = DEFAULT_HASH_SIZE, progress: bool = False) -> LeakReport:
    """Dataset images (all splits) within ``max_distance`` bits of a benchmark image under ``target``."""
    dataset_dir = Path(dataset_dir)
    uses = dataset_images(dataset_dir)
    skipped: dict[str, str] = {}
    bench = benchmark_questions(target, skipped)
    unreadable: dict[str, str] = {}
    rel_of = {dataset_dir / rel: rel for rel in uses}
    data_hashes = image_hashes(rel_of, hash_size, unreadable, progress)
    bench_hashes = image_hashes(bench, hash_size, unreadable, progress)
    data_paths, bench_paths = list(data_hashes), list(bench_hashes)
    leaks = []
    for i, j, d in close_pairs(pack_bits(bench_hashes.values()), pack_bits(data_hashes.values()), max_distance):
        b, rel = bench_paths[i], rel_of[data_paths[j]]
        leaks.append(Leak(str(b), rel, d, d == 0 and same_pixels(b, data_paths[j]),
                          _by_split(uses.get(rel, [])), bench[b]))
    leaks.sort(key=lambda x: (x.benchmark_image, x.distance, x.dataset_image))
    notes = [SYNTHETIC_NOTE] if _manifest_source(dataset_dir) == "synthetic" else []
    return LeakReport(str(dataset_dir), str(target), hash_size, max_distance, len(data_hashes), len(bench_hashes),
                      leaks, unreadable, skipped, notes)


# ------------------------------------------------------------------ duplicates inside the dataset

def _by_split(refs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for split, record_id in refs:
        out.setdefault(split, []).append(record_id)
    return {split: sorted(ids) for split, ids in sorted(out.items())}


@dataclass
class DuplicatePair:
    a: str  # image paths relative to the dataset dir, a < b
    b: str
    distance: int
    identical: bool
    records_a: dict[str, list[str]]  # split -> record ids using image a
    records_b: dict[str, list[str]]

    @property
    def splits_a(self) -> list[str]:
        return sorted(self.records_a)

    @property
    def splits_b(self) -> list[str]:
        return sorted(self.records_b)

    @property
    def cross_split(self) -> bool:
        return len(set(self.records_a) | set(self.records_b)) > 1


@dataclass
class DuplicateReport:
    dataset_dir: str
    hash_size: int
    max_distance: int
    images: int  # hashed
    pairs: list[DuplicatePair] = field(default_factory=list)
    shared_files: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # one file used by several splits
    unreadable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def cross_split(self) -> list[DuplicatePair]:
        """The pairs that are leaks: one image in one split, its near-copy in another."""
        return [p for p in self.pairs if p.cross_split]

    def leaked_record_ids(self, eval_splits: tuple[str, ...] = ("validation", "test")) -> list[str]:
        """Evaluation records whose image has a near-copy in another split, or is a file another split uses."""
        groups = [g for p in self.cross_split for g in (p.records_a, p.records_b)] + list(self.shared_files.values())
        return sorted({r for g in groups for split, ids in g.items() if split in eval_splits for r in ids})

    def to_dict(self) -> dict:
        pairs = [{**asdict(p), "splits_a": p.splits_a, "splits_b": p.splits_b, "cross_split": p.cross_split}
                 for p in self.pairs]
        return {"kind": "duplicates", **{k: v for k, v in asdict(self).items() if k != "pairs"},
                "summary": {"pairs": len(self.pairs), "cross_split_pairs": len(self.cross_split),
                            "identical_pairs": sum(p.identical for p in self.pairs),
                            "shared_files": len(self.shared_files),
                            "eval_records_leaked": len(self.leaked_record_ids())},
                "pairs": pairs}


def find_duplicates(dataset_dir: str | Path, max_distance: int = 4, hash_size: int = DEFAULT_HASH_SIZE,
                    progress: bool = False) -> DuplicateReport:
    """Near-duplicate image pairs inside the dataset; the ones across splits are train/eval leaks.
    An image file referred to by records of several splits is reported under ``shared_files``."""
    dataset_dir = Path(dataset_dir)
    uses = dataset_images(dataset_dir)
    unreadable: dict[str, str] = {}
    rel_of = {dataset_dir / rel: rel for rel in uses}
    hashes = image_hashes(rel_of, hash_size, unreadable, progress)
    paths = list(hashes)
    rels = [rel_of[p] for p in paths]
    bits = pack_bits(hashes.values())
    pairs = []
    for i, j, d in close_pairs(bits, bits, max_distance, same=True):
        (a, pa), (b, pb) = sorted([(rels[i], paths[i]), (rels[j], paths[j])])
        pairs.append(DuplicatePair(a, b, d, d == 0 and same_pixels(pa, pb),
                                   _by_split(uses.get(a, [])), _by_split(uses.get(b, []))))
    pairs.sort(key=lambda p: (not p.cross_split, p.distance, p.a, p.b))
    shared = {rel: _by_split(refs) for rel, refs in sorted(uses.items()) if len({s for s, _ in refs}) > 1}
    notes = [SYNTHETIC_NOTE] if _manifest_source(dataset_dir) == "synthetic" else []
    return DuplicateReport(str(dataset_dir), hash_size, max_distance, len(hashes), pairs, shared, unreadable, notes)


# ------------------------------------------------------------------ reports

def save_report(report: LeakReport | DuplicateReport, path: str | Path) -> Path:
    """The report as indented JSON (written via a temp file, so never half-written)."""
    from facellm.atomic import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        json.dump(report.to_dict(), f, indent=2, ensure_ascii=False)
    return path


def format_report(report: LeakReport | DuplicateReport, limit: int = 20) -> str:
    """A few readable lines for the terminal: totals, then the closest ``limit`` findings."""
    lines = []
    if isinstance(report, LeakReport):
        lines.append(f"{report.benchmark_images} benchmark images ({report.target}) vs {report.dataset_images} "
                     f"dataset images ({report.dataset_dir}); pHash {report.hash_size**2} bits, "
                     f"max distance {report.max_distance}")
        lines.append(f"{len(report.leaks)} leaks: {len(report.leaked_benchmark_images)} benchmark images, "
                     f"dataset images by split {report.by_split() or {}}, {len(report.record_ids)} records, "
                     f"{len(report.questions)} benchmark questions")
        for leak in sorted(report.leaks, key=lambda x: x.distance)[:limit]:
            qs = ", ".join(f"{Path(q['file']).name}#{q['question']}" for q in leak.questions[:3])
            lines.append(f"  d={leak.distance}{' identical' if leak.identical else ''}  {leak.benchmark_image}  ~  "
                         f"{leak.dataset_image} [{', '.join(leak.splits)}]" + (f"  questions: {qs}" if qs else ""))
    else:
        lines.append(f"{report.images} images in {report.dataset_dir}; pHash {report.hash_size**2} bits, "
                     f"max distance {report.max_distance}")
        lines.append(f"{len(report.pairs)} near-duplicate pairs, {len(report.cross_split)} across splits, "
                     f"{sum(p.identical for p in report.pairs)} identical; "
                     f"{len(report.shared_files)} image files used by several splits")
        for p in report.pairs[:limit]:
            lines.append(f"  d={p.distance}{' identical' if p.identical else ''}  {p.a} [{', '.join(p.splits_a)}]  ~  "
                         f"{p.b} [{', '.join(p.splits_b)}]")
        for rel, splits in list(report.shared_files.items())[:limit]:
            lines.append(f"  same file in {', '.join(splits)}: {rel}")
    shown = len(report.leaks if isinstance(report, LeakReport) else report.pairs)
    if shown > limit:
        lines.append(f"  ... {shown - limit} more in the JSON report")
    if report.unreadable:
        lines.append(f"{len(report.unreadable)} unreadable images skipped, e.g. "
                     + "; ".join(f"{p}: {r}" for p, r in list(report.unreadable.items())[:3]))
    lines.extend(f"note: {n}" for n in report.notes)
    return "\n".join(lines)
