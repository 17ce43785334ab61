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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    astronaut = Image.fromarray(skimage.data.astronaut())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        root.mkdir()
        for i in range(args.images):  # varied sizes and sides, so no two decodes are the same
            image = ImageOps.mirror(astronaut) if i % 2 else astronaut
            image.resize((384 + 16 * (i % 9),) * 2).save(root / f"{i}.jpg", quality=90)
        labels = Path(tmp) / "labels.csv"
        labels.write_text("file,gender\n" + "".join(f"{i}.jpg,female\n" for i in range(args.images)))
        items = list(read_folder(root, labels))
        worker = Ingest(IngestConfig(source="folder", root=root, out=Path(tmp) / "out", labels=labels))

        start = time.perf_counter()
        found = sum(len(worker.analyzer.detect(load_image(item.image))) for item in items)
        limit = len(items) / (time.perf_counter() - start)

        start = time.perf_counter()
        faces = []
        with (Path(tmp) / "journal.jsonl").open("w") as journal:
            for item in items:
                entry = worker.process(item)
                journal.write(json.dumps(entry) + "\n")
                kept = faces_of(item, entry, worker.cfg)
                faces += kept if isinstance(kept, list) else []
        records, rejects = template_records(faces, worker.cfg.templates, seed=0)
        full = len(items) / (time.perf_counter() - start)
        records = len(records)
    print("| stage | images/s |\n|---|---:|")
    print(f"| decode + detect (limit) | {limit:.1f} |\n| facellm ingest per image | {full:.1f} |")
    print(f"\nratio facellm / limit: {full / limit:.2f} ({args.images} JPEGs 384-512 px, {found} faces, "
          f"{records} QA records, {len(rejects)} rejected by validation, one process)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_text(json.dumps({"limit_images_per_s": limit, "facellm_images_per_s": full,
                                                 "ratio": full / limit, **vars(args)}, indent=2))


if __name__ == "__main__":
    main()
