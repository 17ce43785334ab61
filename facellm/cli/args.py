"""Argument types and arguments that several commands share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ENGINES = ("auto", "vllm", "transformers")


def adapter_arg(value: str) -> tuple[str, str]:
    """``NAME=DIR`` -> (name, dir)."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=DIR, e.g. face=runs/train/adapter")
    return name, path


def output_dir(value: str) -> str:
    """A directory to write: absent, or a directory."""
    if Path(value).exists() and not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value}: exists and is not a directory")
    return value


def existing_dir(value: str) -> str:
    if not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such directory")
    return value


def model_arg(value: str) -> str:
    """A model directory, or a hub id."""
    from facellm.modeling import is_hub_id

    if not Path(value).is_dir() and not is_hub_id(value):
        raise argparse.ArgumentTypeError(f"{value}: no such directory (nor a hub id such as Qwen/Qwen2-VL-2B-Instruct)")
    return value


def add_bind_args(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help=f"port (default {port})")


def add_api_key_arg(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--api-key", default=os.environ.get("FACELLM_API_KEY"),
                   help=f"{role} (default: $FACELLM_API_KEY)")
