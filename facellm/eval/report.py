"""Evaluation reports: report.json for machines, report.md and report.html for people, PNG plots beside them."""

from __future__ import annotations

import json
from pathlib import Path


def bar_plot(path: Path, bars: dict[str, dict[str, tuple[float, tuple[float, float] | None]]], title: str,
             chance: dict[str, float] | float | None = None, references: dict[str, float] | None = None,
             ylabel: str = "accuracy (%)") -> Path:
    """Grouped bars: ``bars[series][label] = (value, (low, high) or None)`` as fractions; optional chance
    (one line, or a tick per label) and reference lines (e.g. published figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for series in bars.values() for label in series))
    width = 0.8 / max(1, len(bars))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) * max(1, len(bars)) + 2) + (1.5 if references else 0),
                                    4.2))
    for k, (name, series) in enumerate(bars.items()):
        xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(labels))]
        values = [100 * series.get(label, (0.0, None))[0] for label in labels]
        errors = [[100 * (series[l][0] - series[l][1][0]) if series.get(l) and series[l][1] else 0 for l in labels],
                  [100 * (series[l][1][1] - series[l][0]) if series.get(l) and series[l][1] else 0 for l in labels]]
        ax.bar(xs, values, width, yerr=errors if any(map(any, errors)) else None, capsize=3, label=name)
        for x, v in zip(xs, values):
            ax.text(x, v + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    if isinstance(chance, (int, float)):
        ax.axhline(100 * chance, color="gray", linestyle="--", linewidth=1, label="chance")
    elif chance:
        for i, label in enumerate(labels):
            if label in chance:
                ax.hlines(100 * chance[label], i - 0.45, i + 0.45, colors="gray", linestyles="--", linewidth=1,
                          label="chance" if i == 0 else None)
    for name, value in (references or {}).items():
        ax.axhline(value, linestyle=":", linewidth=1, color="black", alpha=0.5)
        ax.text(len(labels) - 0.5, value, f" {name}", va="center", fontsize=7, alpha=0.7)
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 5 else 0, ha="right" if len(labels) > 5 else "center")
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_plot(path: Path, runs: dict[str, dict], title: str) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin (``facellm.eval.calibration`` results),
    the diagonal being perfect calibration; marker area grows with the bin's answers, labelled with their count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.plot([0, 100], [0, 100], color="gray", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, result in runs.items():
        rows = [b for b in result["bins"] if b["n"]]
        sizes = [20 + 200 * b["n"] / result["n"] for b in rows]
        line, = ax.plot([100 * b["confidence"] for b in rows], [100 * b["accuracy"] for b in rows], linewidth=1,
                        label=f"{name} (ECE {result['ece']:.3f})")
        ax.scatter([100 * b["confidence"] for b in rows], [100 * b["accuracy"] for b in rows], s=sizes,
                   color=line.get_color(), alpha=0.7)
        for b in rows:  # how many answers each point stands for
            ax.annotate(str(b["n"]), (100 * b["confidence"], 100 * b["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    ax.set_xlim(0, 102)
    ax.set_ylim(0, 102)
    ax.set_xlabel("confidence (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_plot(path: Path, confusions: dict[str, dict[str, dict[str, int]]], title: str) -> Path:
    """One heatmap per attribute: rows the true labels, columns the predicted ones (row-normalised)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(confusions), figsize=(3.3 * len(confusions), 3.4), squeeze=False)
    for ax, (attribute, rows) in zip(axes[0], confusions.items()):
        truths = list(rows)
        predicted = truths + sorted({p for row in rows.values() for p in row} - set(truths))
        counts = np.array([[rows[t].get(p, 0) for p in predicted] for t in truths], dtype=float)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(truths)):
            for j in range(len(predicted)):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(predicted)), predicted, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(truths)), truths, fontsize=7)
        ax.set_title(attribute, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report_files(out_dir: Path, title: str, sections: list[tuple[str, str]], data: dict,
                       plots: list[Path] = ()) -> Path:
    """report.json (``data``), report.md (title, sections, plots) and report.html from it; the .md path."""
    from markdown_it import MarkdownIt

    from facellm.atomic import write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "report.json", json.dumps(data, indent=2, default=str))
    body = [f"# {title}", ""]
    for heading, text in sections:
        body += [f"## {heading}", "", text, ""]
    body += [f"![{p.stem}]({p.name})" for p in plots]
    md = "\n".join(body) + "\n"
    write_text_atomic(out_dir / "report.md", md)
    html = MarkdownIt("commonmark").enable("table").render(md)
    write_text_atomic(
        out_dir / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "img{max-width:100%}</style></head><body>" + html + "</body></html>\n")
    return out_dir / "report.md"
