"""YAML settings files: one mapping of settings, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import yaml

from facellm.errors import FacellmError


def load_mapping(path: str | Path, error: type[FacellmError] = FacellmError) -> dict:
    """The mapping a YAML settings file holds; ``error`` (naming the file) when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a YAML mapping of settings, e.g. `key: value` lines")
    return raw
