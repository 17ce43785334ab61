"""Images/s of the real-dataset build next to its limit, in one run on the same images.

    python benchmarks/ingest.py [--images 200]

limit: decode + face detection only (what any face pipeline must pay);
facellm: the whole per-image work of ``facellm data build --source folder``:
decode, detection, 468-point mesh, cues, crop, JPEG + landmarks write, journal, then
template QA (every kind) and the validation of every answer.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import skimage.data
from PIL import Image, ImageOps

from data_pipeline.assemble import template_records
from data_pipeline.ingest import Ingest, IngestConfig, faces_of
from data_pipeline.sources import read_folder
from facellm.images import load_image


def measure(images: int = 200) -> dict:
    astronaut = Image.fromarray(skimage.data.astronaut())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        root.mkdir()
        for i in range(images):  # varied sizes and sides, so no two decodes are the same
            image = ImageOps.mirror(astronaut) if i % 2 else astronaut
            image.resize((384 + 16 * (i % 9),) * 2).save(root / f"{i}.jpg", quality=90)
        labels = Path(tmp) / "labels.csv"
        labels.write_text("file,gender\n" + "".join(f"{i}.jpg,female\n" for i in range(images)))
        items = list(read_folder(root, labels))
        worker = Ingest(IngestConfig(source="folder", root=root, out=Path(tmp) / "out", labels=labels))

        start = time.perf_counter()
        found = sum(len(worker.analyzer.detect(load_image(item.image))) for item in items)
        limit_s = time.perf_counter() - start

        start = time.perf_counter()
        faces = []
        with (Path(tmp) / "journal.jsonl").open("w") as journal:
            for item in items:
                entry = worker.process(item)
                journal.write(json.dumps(entry) + "\n")
                kept = faces_of(item, entry, worker.cfg)
                faces += kept if isinstance(kept, list) else []
        records, rejects = template_records(faces, worker.cfg.templates, seed=0)
        seconds = time.perf_counter() - start
    return {"facellm_images_per_s": images / seconds, "limit_images_per_s": images / limit_s, "seconds": seconds,
            "images": images, "faces": found, "records": len(records), "rejected": len(rejects)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    r = measure(args.images)
    print("| stage | images/s |\n|---|---:|")
    print(f"| decode + detect (limit) | {r['limit_images_per_s']:.1f} |\n"
          f"| facellm ingest per image | {r['facellm_images_per_s']:.1f} |")
    print(f"\nratio facellm / limit: {r['facellm_images_per_s'] / r['limit_images_per_s']:.2f} ({args.images} JPEGs "
          f"384-512 px, {r['faces']} faces, {r['records']} QA records, {r['rejected']} rejected by validation)")


if __name__ == "__main__":
    main()
