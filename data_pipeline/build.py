"""``facellm data build``: images + labels -> QA records -> dataset on disk.

Output layout::

    DIR/images/<split>/<n>.png   the images (records refer to them relative to DIR)
    DIR/dataset/                 datasets.DatasetDict (save_to_disk), one split per key
    DIR/parquet/<split>.parquet  the same records as Parquet
    DIR/sharegpt/<split>.jsonl   ShareGPT export + LLaMA-Factory dataset_info.json
    DIR/llava/<split>.json       LLaVA training JSON (single-image records)
    DIR/manifest.json            what was built, from which seed, counts per split
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from data_pipeline import synthetic
from data_pipeline.export import export_all
from data_pipeline.templates import qa_pairs
from facellm.errors import FacellmError
from facellm.records import Record, chat
from facellm.schema import SYNTHETIC_ATTRIBUTES

SPLIT_SEED_OFFSET = {"train": 0, "validation": 1, "test": 2}  # disjoint image streams per split


@dataclass
class BuildConfig:
    out: Path
    n: int = 1000
    val_size: float = 0.05  # fraction of n (< 1) or image count (>= 1)
    test_size: float = 0.05
    seed: int = 0
    image_size: int = 112


def split_sizes(n: int, val_size: float, test_size: float) -> dict[str, int]:
    def count(size: float) -> int:
        return int(size) if size >= 1 else max(1, round(n * size))

    val, test = count(val_size), count(test_size)
    if n - val - test < 1:
        raise FacellmError(f"--n {n} leaves no training images after {val} validation and {test} test images")
    return {"train": n - val - test, "validation": val, "test": test}


def synthetic_records(split: str, index: int, cfg: BuildConfig) -> list[dict]:
    stream = cfg.seed * 10 + SPLIT_SEED_OFFSET[split]
    rel = f"images/{split}/{index:06d}.png"
    path = cfg.out / rel
    if not path.exists():  # deterministic, so a re-run only draws what is missing
        image, spec = synthetic.generate(index, seed=stream, size=cfg.image_size)
        tmp = path.with_name(f".{path.name}.tmp")
        image.save(tmp, format="PNG")
        os.replace(tmp, path)  # a killed run never leaves a truncated image behind
    else:
        spec = synthetic.generate_spec(index, seed=stream, size=cfg.image_size)
    rng = random.Random(f"{stream}-{index}")
    base = f"synthetic-{split}-{index:06d}"
    return [
        Record(id=f"{base}#{category}", images=[rel], messages=chat(q, a), labels=spec.labels,
               category=category, source="synthetic", face={"box": synthetic.face_box(spec)}).model_dump()
        for category, q, a in qa_pairs(spec.labels, rng)
    ]


def build_synthetic(cfg: BuildConfig) -> dict[str, int]:
    sizes = split_sizes(cfg.n, cfg.val_size, cfg.test_size)
    records: dict[str, list[dict]] = {}
    for split, size in sizes.items():
        (cfg.out / "images" / split).mkdir(parents=True, exist_ok=True)
        records[split] = [r for i in tqdm(range(size), desc=f"synthetic {split}", unit="img")
                          for r in synthetic_records(split, i, cfg)]
    export_all(records, cfg.out)
    manifest = {
        "source": "synthetic", "seed": cfg.seed, "image_size": cfg.image_size,
        "attributes": list(SYNTHETIC_ATTRIBUTES), "images": sizes,
        "records": {s: len(r) for s, r in records.items()},
    }
    (cfg.out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest["records"]
