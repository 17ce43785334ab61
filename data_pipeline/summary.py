"""``facellm data inspect DIR``: what a built dataset holds, as numbers and as text tables.

Label counts are per image (a face crop), not per record: every record of an image
carries the same labels, and an image gives one record per question category.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from facellm.records import load_splits, read_manifest, text_of
from facellm.schema import ATTRIBUTES

SPLIT_ORDER = ("train", "validation", "test")
BALANCE_ATTRIBUTES = ("race", "gender", "age", "skin_tone")  # demographic groups (skin_tone: the synthetic one)


def _in_split_order(by_split: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The same splits, train/validation/test first, then any other by name."""
    return dict(sorted(by_split.items(),
                       key=lambda kv: (SPLIT_ORDER.index(kv[0]) if kv[0] in SPLIT_ORDER else len(SPLIT_ORDER), kv[0])))


def image_key(record_id: str) -> str:
    """The image/face a record is about: its id before ``#``."""
    return record_id.split("#", 1)[0]


def read_rejects(dataset_dir: str | Path) -> list[dict]:
    """``rejects.jsonl``: input images that gave no face (no ``question`` key) and QA pairs that failed validation."""
    path = Path(dataset_dir) / "rejects.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def reject_kind(reason: str) -> str:
    """A reason with its particulars dropped, so alike rejects count together:
    ``labels: age='x' is not ...`` -> ``labels``; ``3 faces (max_faces 1; ...)`` -> ``N faces``."""
    head = reason.split(":", 1)[0].split("(", 1)[0].strip()
    return re.sub(r"\d+(?:\.\d+)?", "N", head) or "unknown"


def balance(counts: dict[str, int], attribute: str | None = None) -> dict:
    """Counts of one group attribute with max/min ratio over the values present, and the
    schema's values that are absent altogether."""
    present = {v: n for v, n in counts.items() if n}
    out = {"counts": dict(counts), "total": sum(present.values())}
    if present:
        hi, lo = max(present, key=present.get), min(present, key=present.get)
        out.update(max=hi, min=lo, max_min_ratio=round(present[hi] / present[lo], 3))
    if attribute in ATTRIBUTES:
        out["missing"] = [v for v in ATTRIBUTES[attribute].values if v not in present]
    return out


def _ordered(counter: Counter, attribute: str | None = None) -> dict[str, int]:
    """Counts in the schema's value order where there is one, else by count."""
    if attribute in ATTRIBUTES:
        values = ATTRIBUTES[attribute].values
        known = {v: counter[v] for v in values if counter[v]}
        return known | {v: n for v, n in counter.most_common() if v not in values}
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def summarize(dataset_dir: str | Path, group_of: Callable[[str], str] | None = None,
              samples_per_category: int = 2, seed: int = 0) -> dict:
    """Counts and samples of a dataset dir written by ``facellm data build`` (plain JSON-able dict).

    ``group_of`` maps a record category to a wider group (FaceLLM's 8 categories); identity by default.
    """
    dataset_dir = Path(dataset_dir)
    group_of = group_of or (lambda c: c)
    manifest = read_manifest(dataset_dir) or {}
    records_by_split = _in_split_order(load_splits(dataset_dir))
    splits = list(records_by_split)

    per_split, categories, groups, sources = {}, {}, {}, Counter()
    labels_by_image: dict[tuple[str, str], dict[str, str]] = {}
    records_per_image: Counter = Counter()
    for split, records in records_by_split.items():
        keys = {image_key(r["id"]) for r in records}
        per_split[split] = {"records": len(records), "images": len(keys),
                            "image_files": len({p for r in records for p in r["images"]})}
        categories[split] = _ordered(Counter(r["category"] for r in records))
        groups[split] = _ordered(Counter(group_of(r["category"]) for r in records))
        sources.update(r["source"] for r in records)
        for r in records:
            key = (split, image_key(r["id"]))
            records_per_image[key] += 1
            labels_by_image.setdefault(key, r["labels"])

    attributes: dict[str, dict] = {}
    names = [a for a in ATTRIBUTES if any(a in lab for lab in labels_by_image.values())]
    names += sorted({a for lab in labels_by_image.values() for a in lab} - set(names))
    for name in names:
        by_split = {s: _ordered(Counter(lab[name] for (sp, _), lab in labels_by_image.items()
                                        if sp == s and name in lab), name) for s in splits}
        attributes[name] = {"total": _sum_ordered(by_split, name), "by_split": by_split}
    group_balance = {a: balance(attributes[a]["total"], a) for a in BALANCE_ATTRIBUTES if a in attributes}

    rejects = read_rejects(dataset_dir)
    per_image = Counter(records_per_image.values())
    n_images = sum(per_image.values())
    rpi = {"images": n_images, "histogram": {str(k): v for k, v in sorted(per_image.items())}}
    if n_images:
        rpi.update(min=min(per_image), max=max(per_image),
                   mean=round(sum(records_per_image.values()) / n_images, 3))

    return {
        "dataset_dir": str(dataset_dir),
        "source": manifest.get("source"),
        "sources": _ordered(sources),
        "manifest": manifest,
        "splits": per_split,
        "records": sum(s["records"] for s in per_split.values()),
        "images": sum(s["images"] for s in per_split.values()),
        "categories": {"total": _sum_ordered(categories), "by_split": categories},
        "groups": {"total": _sum_ordered(groups), "by_split": groups},
        "attributes": attributes,
        "balance": group_balance,
        "rejects": {"total": len(rejects), "qa": sum("question" in r for r in rejects),
                    "inputs": sum("question" not in r for r in rejects),
                    "by_reason": _ordered(Counter(r.get("reason", "?") for r in rejects)),
                    "by_kind": _ordered(Counter(reject_kind(r.get("reason", "?")) for r in rejects))},
        "records_per_image": rpi,
        "samples": _samples(records_by_split, samples_per_category, seed),
    }


def _sum_ordered(by_split: dict[str, dict[str, int]], attribute: str | None = None) -> dict[str, int]:
    c = Counter()
    for counts in by_split.values():
        c.update(counts)
    return _ordered(c, attribute)


def _samples(records_by_split: dict[str, list[dict]], k: int, seed: int) -> dict[str, list[dict]]:
    """``k`` (question, answer) pairs per category, drawn with a fixed seed from the records in id order
    (train first): the same dataset always gives the same samples."""
    by_category: dict[str, list[dict]] = {}
    for split, records in records_by_split.items():
        for r in sorted(records, key=lambda r: r["id"]):
            by_category.setdefault(r["category"], []).append(r)
    out = {}
    for category in sorted(by_category):
        pool = by_category[category]
        picked = random.Random(f"{seed}-{category}").sample(pool, min(k, len(pool)))
        out[category] = [{"id": r["id"], "question": _turn(r, "user"), "answer": _turn(r, "assistant")} for r in picked]
    return out


def _turn(record: dict, role: str) -> str:
    return next((text_of(m) for m in record["messages"] if m["role"] == role), "")


# ------------------------------------------------------------------ text

def _table(title: str, rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _by_split_table(title: str, section: dict, splits: list[str], first: str) -> str:
    rows = [[name] + [section["by_split"].get(s, {}).get(name, 0) for s in splits] + [n]
            for name, n in section["total"].items()]
    return _table(title, rows, [first, *splits, "total"])


def format_summary(summary: dict, samples: bool = True) -> str:
    """Readable plain-text tables of :func:`summarize`'s result."""
    splits = list(summary["splits"])
    parts = [f"Dataset {summary['dataset_dir']}  (source: {summary.get('source') or 'unknown'}; "
             f"{summary['records']} records about {summary['images']} images)"]
    rows = [[s, v["images"], v["records"]] for s, v in summary["splits"].items()]
    rows.append(["total", summary["images"], summary["records"]])
    parts.append(_table("Splits", rows, ["split", "images", "records"]))
    parts.append(_table("Sources", [[s, n] for s, n in summary["sources"].items()], ["source", "records"]))
    parts.append(_by_split_table("Records per category", summary["categories"], splits, "category"))
    if summary["groups"]["total"] != summary["categories"]["total"]:
        parts.append(_by_split_table("Records per category group", summary["groups"], splits, "group"))
    for name, section in summary["attributes"].items():
        parts.append(_by_split_table(f"Images per {name}", section, splits, name))
    if summary["balance"]:
        rows = [[a, b.get("max", "-"), b.get("min", "-"), b.get("max_min_ratio", "-"),
                 ", ".join(b.get("missing", [])) or "-"] for a, b in summary["balance"].items()]
        parts.append(_table("Group balance (images)", rows,
                            ["attribute", "largest", "smallest", "max/min", "absent values"]))
    rpi = summary["records_per_image"]
    if rpi["images"]:
        parts.append(f"Records per image: min {rpi['min']}, mean {rpi['mean']}, max {rpi['max']}  "
                     f"(histogram {', '.join(f'{k}: {v}' for k, v in rpi['histogram'].items())})")
    rej = summary["rejects"]
    if rej["total"]:
        parts.append(_table(f"Rejects ({rej['inputs']} input images, {rej['qa']} QA pairs; rejects.jsonl)",
                            [[k, n] for k, n in rej["by_reason"].items()], ["reason", "rejects"]))
    else:
        parts.append("Rejects: none")
    if samples and summary["samples"]:
        lines = ["Sample QA"]
        for category, pairs in summary["samples"].items():
            pad = " " * (len(category) + 8)  # where the question's text starts
            for p in pairs:
                lines.append(f"  [{category}] Q: " + p["question"].replace("\n", "\n" + pad))
                lines.append(f"{pad[:-3]}A: " + p["answer"].replace("\n", "\n" + pad))
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
