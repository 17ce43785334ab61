"""Atomic writes: a file or folder is written aside under a hidden temp name and renamed over its final
name only once whole, so a reader (or a resumed run) never sees half of it.

Every facellm writer of a finished artefact goes through here: exports, images and landmarks, the
dataset card, the teacher cache, captioning results, checkpoint markers and run records. Append-only
journals (``journal.jsonl``, captioning JSONL, training logs) are the exception: they are written in
place on purpose, and their readers drop a torn last line.

The temp file sits in the same folder as the target (``os.replace`` is atomic only within one
filesystem) and is named ``.<name>.tmp``: hidden, and reused by the next attempt, so a run killed
mid-write leaves one stale temp file that the next run overwrites. Where several writers may write
the same path at once (a cache shared by threads or processes), ``unique=True`` gives each call its own
``.<name>.<random>.tmp`` instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _aside(path: Path, kind: str, unique: bool = False) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12] + '.' if unique else ''}{kind}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False, unique: bool = False) -> Iterator[Path]:
    """A temp path next to ``path`` for the block to write a file at; when the block ends without error
    the file replaces ``path`` (``fsync``: flushed to disk first), else it is removed and ``path`` is left
    as it was. The block must create the file (any writer taking a path will do: PIL, numpy, pandas)."""
    path = Path(path)
    tmp = _aside(path, "tmp", unique)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str = "utf-8", fsync: bool = False,
                unique: bool = False) -> Iterator[IO]:
    """``open(path, mode)`` for writing (``"w"`` or ``"wb"``) through :func:`atomic_path`: the file appears
    under its name, whole, when the block ends without error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r}; expected 'w' or 'wb'")
    with atomic_path(path, fsync=fsync, unique=unique) as tmp, \
            open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


def write_text_atomic(path: str | Path, text: str, *, encoding: str = "utf-8", fsync: bool = False,
                      unique: bool = False) -> None:
    """``Path.write_text``, atomically."""
    with atomic_open(path, "w", encoding=encoding, fsync=fsync, unique=unique) as f:
        f.write(text)


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False, unique: bool = False) -> None:
    """``Path.write_bytes``, atomically."""
    with atomic_open(path, "wb", fsync=fsync, unique=unique) as f:
        f.write(data)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """An empty temp folder next to ``path`` for the block to fill; when the block ends without error it
    replaces the folder ``path`` (an existing one included), else it is removed and ``path`` is left as
    it was.

    A folder cannot be renamed over another, so the swap is two renames: the old copy goes to
    ``.<name>.old`` first and is deleted after; a crash between the two leaves it there, next to the
    finished temp folder, and the next call clears both.
    """
    path = Path(path)
    tmp, old = _aside(path, "tmp"), _aside(path, "old")
    shutil.rmtree(tmp, ignore_errors=True)  # what a killed earlier run left
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
