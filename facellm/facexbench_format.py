"""The FaceXBench task file format: one reader for evaluation and for the leakage check.

Layout (github.com/Kartik-3004/facexbench, ``benchmark/``): one JSON per task beside an ``images/``
folder, with top-level ``category``, ``sub-category``, ``dataset``, ``num_images``, ``prepend_text``,
``postpend_text`` (and ``context`` for tools-use tasks) and ``questions`` keyed by id, each with
``image_paths`` (relative to the JSON's folder), ``question_text``, ``options`` (no letters),
``correct_answer_option`` (a letter) and ``answer``.

What the reader requires is what a question cannot be asked or scored without: ``image_paths``
(a list of paths, or one path as a string), ``question_text``, ``options`` (a list) and a
``correct_answer_option`` naming one of the options. The task's own fields are optional. A file
breaking these rules raises :class:`FacellmError` naming the file (and the question); a JSON file
that is not a task at all (no ``questions`` object) raises :class:`NotATaskFile`, so that a
caller reading a folder can tell other JSON beside the tasks (results, notes) from a broken task.
Each caller decides what it does with either.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from facellm.errors import FacellmError

LETTERS = "ABCDEFGH"  # the benchmark's option letters, in order
REQUIRED = ("image_paths", "question_text", "options", "correct_answer_option")


class NotATaskFile(FacellmError):
    """A JSON file that is not a FaceXBench task (no ``questions`` object)."""


@dataclass(frozen=True)
class TaskQuestion:
    qid: str
    images: list[Path]  # absolute, normalised, resolved from the JSON's folder
    text: str  # question_text
    options: list[str]
    correct: str  # the correct option's letter, upper case


@dataclass(frozen=True)
class Task:
    path: Path  # the JSON file, as given
    category: str | None = None
    sub_category: str | None = None  # "sub-category" in the file
    dataset: str | None = None
    num_images: str | None = None  # "single" | "multiple", as the benchmark labels it
    prepend_text: str = ""
    postpend_text: str = ""
    context: str = ""  # tools-use tasks only
    questions: list[TaskQuestion] = field(default_factory=list)


def task_files(path: str | Path) -> list[Path]:
    """``path`` itself when it is a file, else every ``*.json`` directly in the folder, sorted.
    Raises FacellmError when there is none."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise FacellmError(f"{path}: no FaceXBench JSON files (expected benchmark/*.json beside images/)")
    return files


def read_task(path: str | Path) -> Task:
    """One task file, checked as the module docstring says; raises NotATaskFile or FacellmError."""
    path = Path(path)
    try:
        task = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FacellmError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(task, dict) or not isinstance(task.get("questions"), dict):
        raise NotATaskFile(f"{path}: not a FaceXBench task file (no 'questions' object)")
    return Task(path=path, category=task.get("category"), sub_category=task.get("sub-category"),
                dataset=task.get("dataset"), num_images=task.get("num_images"),
                prepend_text=task.get("prepend_text") or "", postpend_text=task.get("postpend_text") or "",
                context=task.get("context") or "",
                questions=[_question(path, str(qid), q) for qid, q in task["questions"].items()])


def _question(path: Path, qid: str, question) -> TaskQuestion:
    def bad(problem: str) -> FacellmError:
        return FacellmError(f"{path}: question {qid} {problem}")

    if not isinstance(question, dict):
        raise bad("is not an object")
    missing = [key for key in REQUIRED if key not in question]
    if missing:
        raise bad(f"lacks {missing}")
    images = question["image_paths"]
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise bad("has image_paths that are not a list of paths")
    options = question["options"]
    if not isinstance(options, list) or not 0 < len(options) <= len(LETTERS):
        raise bad(f"has options that are not a list of 1 to {len(LETTERS)}")
    correct = str(question["correct_answer_option"]).strip().upper()
    if correct not in LETTERS[: len(options)]:
        raise bad(f"has correct_answer_option {question['correct_answer_option']!r}, not one of its "
                  f"{len(options)} options' letters")
    return TaskQuestion(qid=qid, images=[Path(os.path.abspath(path.parent / rel)) for rel in images],
                        text=str(question["question_text"]), options=[str(o) for o in options], correct=correct)
