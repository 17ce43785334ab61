"""How evenly a model serves every group: accuracy per race, gender, age group (and skin tone, the
synthetic faces' group), the max-min gap and the min/max ratio, bootstrap 95 % intervals, and the
confusion of each attribute within each group."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from facellm.eval.stats import bootstrap_ci

GROUP_ATTRIBUTES = ("race", "gender", "age", "skin_tone")


def per_group(samples: list[dict]) -> dict:
    """``samples``: score()'s, each with ``groups`` (the record's group labels). For each group attribute
    present: per group n, accuracy, CI and the confusion of every asked attribute; gap and ratio."""
    report = {}
    for attribute in GROUP_ATTRIBUTES:
        hits: dict[str, list[bool]] = defaultdict(list)
        confusion: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        for s in samples:
            group = s.get("groups", {}).get(attribute)
            if group is None:
                continue
            hits[group].append(s["predicted"] == s["truth"])
            confusion[group][s["attribute"]][f"{s['truth']} -> {s['predicted']}"] += 1
        if len(hits) < 2:
            continue  # one group (or none): nothing to compare
        groups = {g: {"n": len(h), "accuracy": float(np.mean(h)), "ci95": list(bootstrap_ci(h)),
                      "confusion": {a: dict(c) for a, c in confusion[g].items()}} for g, h in sorted(hits.items())}
        accuracies = [g["accuracy"] for g in groups.values()]
        report[attribute] = {"groups": groups, "gap": max(accuracies) - min(accuracies),
                             "ratio": min(accuracies) / max(accuracies) if max(accuracies) else None}
    return report


def markdown(report: dict) -> str:
    if not report:
        return "No group labels (race, gender, age, skin tone) on the evaluated records."
    lines = []
    for attribute, r in report.items():
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines += [f"**{attribute}**: max-min gap {r['gap']:.1%}, min/max ratio {ratio}", "",
                  "| group | questions | accuracy | 95 % CI (bootstrap) |", "|---|---:|---:|---|"]
        lines += [f"| {g} | {v['n']} | {v['accuracy']:.1%} | {v['ci95'][0]:.1%}–{v['ci95'][1]:.1%} |"
                  for g, v in r["groups"].items()]
        lines.append("")
    return "\n".join(lines)
