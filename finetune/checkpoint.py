"""Resumable checkpoints: OUTPUT/checkpoints/step-N holds the accelerate state (weights, optimizer,
scheduler, RNG) and the step; a checkpoint is complete once its ``done`` marker exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from facellm.atomic import write_text_atomic
from facellm.errors import FacellmError


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in (out / "checkpoints").glob("step-*") if (p / "done").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save(accelerator, out: Path, step: int, keep: int) -> Path:
    path = out / "checkpoints" / f"step-{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        write_text_atomic(path / "done", json.dumps({"step": step}))  # a torn marker would break resuming
        for old in checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def latest(out: Path) -> tuple[Path, int]:
    """The newest complete checkpoint and its step; an error saying what to do when there is none."""
    found = checkpoints(out)
    if not found:
        raise FacellmError(f"{out}: no complete checkpoint to resume from; train with save_every > 0 "
                           "(e.g. --set save_every=100) to write them")
    return found[-1], json.loads((found[-1] / "done").read_text())["step"]
