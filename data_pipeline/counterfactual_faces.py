"""Counterfactual faces: the same synthetic face rendered again with one attribute changed at a time.

For each face the original and every variant (each other value of skin tone, glasses, hair colour,
expression, head pose) are asked the same question per attribute, worded identically, so that an
answer about an unchanged attribute can only change because of the changed one. Written as
``DIR/counterfactual.jsonl`` (facellm records) and ``DIR/images/``; ids read
``cf-<face>/<attribute>=<value>/<asked>`` (``original`` for the unchanged face).
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from data_pipeline import synthetic
from data_pipeline.build import save_png
from data_pipeline.templates import answer, question
from facellm.atomic import atomic_open

CHANGES = {"skin_tone": tuple(synthetic.SKIN), "glasses": ("yes", "no"), "hair_color": tuple(synthetic.HAIR),
           "expression": synthetic.EXPRESSIONS, "head_pose": synthetic.POSES}


def _record(key: str, rel: str, labels: dict, asked: str, face: int) -> dict:
    rng = random.Random(f"cf-{face}-{asked}")  # one wording per face and attribute, whatever the variant
    return {"id": f"{key}/{asked}", "images": [rel], "category": asked, "labels": labels, "source": "counterfactual",
            "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question(asked, rng)}]},
                         {"role": "assistant", "content": [{"type": "text", "text": answer(asked, labels[asked], rng)}]}]}


def build_counterfactuals(out: str | Path, faces: int = 20, seed: int = 0, size: int = 112) -> Path:
    """Render ``faces`` faces and their one-attribute variants; the records file."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for face in range(faces):
        spec = synthetic.generate_spec(2 * face, 1000 + seed, size)  # even: no mirror twins; a stream no split draws
        variants = [("original", spec)] + [(f"{a}={v}", replace(spec, **{a: v}))
                                           for a, values in CHANGES.items() for v in values if v != getattr(spec, a)]
        for change, variant in variants:
            key = f"cf-{face:04d}/{change}"
            rel = f"images/{face:04d}-{change.replace('=', '-')}.png"
            if not (out / rel).exists():
                save_png(synthetic.render(variant), out / rel)
            records += [_record(key, rel, variant.labels, asked, face) for asked in CHANGES]
    path = out / "counterfactual.jsonl"
    with atomic_open(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path
