"""The counterfactual probe: change one attribute of a face and see which answers change.

Records come from ``data_pipeline.counterfactual_faces`` (ids ``cf-<face>/<attribute>=<value>/<asked>``).
For each changed attribute: how often answers about the *other* attributes flip (a fair model: 0 %),
and how often the answer about the changed attribute itself follows the change (a seeing model: 100 %).
"""

from __future__ import annotations

from collections import defaultdict

from facellm.schema import normalize


def analyze(records: list[dict], answers: list[str]) -> dict:
    predicted = {}
    truth = {}
    for record, text in zip(records, answers, strict=True):
        face, change, asked = record["id"].split("/")
        predicted[face, change, asked] = normalize(asked, text)
        truth[face, change, asked] = record["labels"][asked]
    flips = defaultdict(lambda: {"n": 0, "flipped": 0, "follows": 0, "changed_n": 0})
    for (face, change, asked), answer in predicted.items():
        if change == "original":
            continue
        attribute = change.split("=")[0]
        cell = flips[attribute]
        if asked == attribute:
            cell["changed_n"] += 1
            cell["follows"] += answer == truth[face, change, asked]
        else:
            cell["n"] += 1
            cell["flipped"] += answer != predicted[face, "original", asked]
    return {a: {"other_answers": c["n"], "flip_rate": c["flipped"] / c["n"] if c["n"] else 0.0,
                "follows_change": c["follows"] / c["changed_n"] if c["changed_n"] else 0.0}
            for a, c in sorted(flips.items())}


def markdown(results: dict[str, dict]) -> str:
    """One column pair per run: flip rate of other answers, and answers that follow the change."""
    runs = list(results)
    lines = ["Each face re-rendered with one attribute changed. *Flips*: answers about the other attributes "
             "that changed (lower is better); *follows*: answers about the changed attribute that are right "
             "for the new face (higher is better).", "",
             "| changed | questions | " + " | ".join(f"{r}: flips | {r}: follows" for r in runs) + " |",
             "|---|---:|" + "---:|---:|" * len(runs)]
    for attribute in results[runs[0]]:
        cells = " | ".join(f"{results[r][attribute]['flip_rate']:.1%} | {results[r][attribute]['follows_change']:.1%}"
                           for r in runs)
        lines.append(f"| {attribute} | {results[runs[0]][attribute]['other_answers']} | {cells} |")
    return "\n".join(lines)
