"""Loss and validation-accuracy curves as a PNG."""

from __future__ import annotations

from pathlib import Path


def plot_curves(log: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in log if "loss" in r]
    evals = [r for r in log if "val_accuracy" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss (assistant tokens)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    if evals:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r["val_accuracy"] for r in evals], "o-", color="C1",
                 label="validation accuracy (mean over attributes)")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("accuracy")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title("facellm training")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
