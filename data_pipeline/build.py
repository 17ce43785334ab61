"""``facellm data build`` (synthetic): procedural faces with exact labels -> QA records -> dataset on disk.

Output layout::

    DIR/images/<split>/<n>.png   the images (records refer to them relative to DIR); <n>_face<k>.png: one
                                 face of a several-face scene
    DIR/dataset/                 datasets.DatasetDict (save_to_disk), one split per key, images embedded
    DIR/parquet/<split>.parquet  the same records as Parquet
    DIR/sharegpt/<split>.jsonl   ShareGPT export; DIR/dataset_info.json: LLaMA-Factory's index of it
    DIR/llava/<split>.json       LLaVA training JSON (single-image records)
    DIR/rejects.jsonl            QA that failed validation, with the reason
    DIR/manifest.json, README.md what was built (seed, counts) and the dataset card

Images are a pure function of (seed, split, index), so a re-run draws only the
missing ones and rebuilds the same records.
"""

from __future__ import annotations

import functools
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_pipeline import synthetic
from data_pipeline.assemble import FaceEntry, write_dataset
from data_pipeline.templates import TemplateOptions, scene_qa
from facellm.atomic import atomic_path
from facellm.errors import FacellmError
from facellm.faces import quality_cues
from facellm.parallel import FanOut, fan_out
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
    scene: synthetic.SceneOptions = field(default_factory=synthetic.SceneOptions)
    templates: TemplateOptions = field(default_factory=TemplateOptions)
    fanout: FanOut = field(default_factory=FanOut)  # where images are drawn: processes here or a Ray cluster


def split_sizes(n: int, val_size: float, test_size: float) -> dict[str, int]:
    def count(size: float) -> int:
        return int(size) if size >= 1 else max(1, round(n * size))

    val, test = count(val_size), count(test_size)
    if n - val - test < 1:
        raise FacellmError(f"--n {n} leaves no training images after {val} validation and {test} test images")
    return {"train": n - val - test, "validation": val, "test": test}


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:  # a killed run never leaves a truncated image behind
        image.save(tmp, format="PNG")


def write_faces(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` synthetic face PNGs in ``folder`` (0000.png, ...): a folder of faces to caption or upload."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}.png" for i in range(count)]
    for i, path in enumerate(paths):
        save_png(synthetic.generate(i, seed=seed)[0], path)
    return paths


def _cues(image: Image.Image, box: list[float]) -> dict[str, float]:
    return quality_cues(np.asarray(image.convert("L"), dtype=np.float64), box)


def synthetic_faces(split: str, index: int, cfg: BuildConfig) -> list[FaceEntry]:
    """The faces of image ``index`` of ``split``: the image itself when it holds one face, else one crop per
    face plus the whole scene (face count, each face by place)."""
    stream = cfg.seed * 10 + SPLIT_SEED_OFFSET[split]
    rel = f"images/{split}/{index:06d}.png"
    path = cfg.out / rel
    image, faces, _ = synthetic.generate_scene(index, stream, cfg.image_size, cfg.scene)
    if not path.exists():
        save_png(image, path)
    key = f"synthetic-{split}-{index:06d}"
    scene_pairs = [] if cfg.scene.plain else scene_qa([f.labels for f in faces], random.Random(key), cfg.templates.kinds)
    if len(faces) == 1:
        f = faces[0]
        info = {"box": f.box, "cues": _cues(image, f.box), **({} if cfg.scene.plain else {"occlusion": f.occlusion})}
        return [FaceEntry(key, rel, f.labels, split, "synthetic", info, f.observations, scene_pairs)]
    out = [FaceEntry(f"{key}-scene", rel, {}, split, "synthetic", {}, None, scene_pairs)]
    size = cfg.image_size
    for k, f in enumerate(faces):
        crop_rel = f"images/{split}/{index:06d}_face{k}.png"
        crop = image.crop((k * size, 0, (k + 1) * size, size))
        if not (cfg.out / crop_rel).exists():
            save_png(crop, cfg.out / crop_rel)
        box = [round(f.box[0] - k * size, 1), f.box[1], round(f.box[2] - k * size, 1), f.box[3]]
        info = {"box": box, "cues": _cues(crop, box), "occlusion": f.occlusion}
        out.append(FaceEntry(f"{key}-face{k}", crop_rel, f.labels, split, "synthetic", info, f.observations))
    return out


@dataclass
class Draw:
    """A worker (see facellm.parallel) that draws a batch of (split, index) images and saves them."""

    cfg: BuildConfig

    def __call__(self, images: list[tuple[str, int]]) -> list[list[FaceEntry]]:
        return [synthetic_faces(split, i, self.cfg) for split, i in images]


def build_synthetic(cfg: BuildConfig, teacher=None) -> dict:
    sizes = split_sizes(cfg.n, cfg.val_size, cfg.test_size)
    for split in sizes:
        (cfg.out / "images" / split).mkdir(parents=True, exist_ok=True)
    images = [(split, i) for split, size in sizes.items() for i in range(size)]
    drawn = dict(tqdm(fan_out(functools.partial(Draw, cfg), images, cfg.fanout),
                      total=len(images), desc="synthetic images", unit="img"))
    faces = [face for image in images for face in drawn[image]]  # in image order, however the work was split
    manifest = {"source": "synthetic", "seed": cfg.seed, "image_size": cfg.image_size,
                "attributes": list(SYNTHETIC_ATTRIBUTES), "images": sizes, "scene": asdict(cfg.scene)}
    return write_dataset(cfg.out, faces, cfg.templates, cfg.seed, [], manifest, teacher)
