"""`facellm tiny-model`: a tiny random VLM of a real architecture, for tests and the offline demo."""

from __future__ import annotations

from pathlib import Path

from facellm.cli.args import output_dir
from facellm.errors import FacellmError


def add_parser(sub) -> None:
    p = sub.add_parser("tiny-model", help="build a tiny random VLM of a real architecture, offline",
                       description="Write a tiny randomly initialised VLM (weights, tokenizer, chat template, "
                                   "processors) in the hub layout, for tests and the offline demo.")
    p.add_argument("--family", default="qwen2_vl", help="transformers model_type (see --list)")
    p.add_argument("--out", type=output_dir, help="output directory")
    p.add_argument("--corpus", nargs="*", help="text files whose lines train the BPE tokenizer (e.g. the QA texts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="print the supported families and exit")
    p.set_defaults(func=cmd_tiny_model)


def cmd_tiny_model(args) -> None:
    from facellm.families import FAMILIES, family

    if args.list:
        for name in FAMILIES:
            print(name)
        return
    if not args.out:
        raise FacellmError("--out DIR is required (where to write the tiny model)")
    corpus = []
    for path in args.corpus or []:
        if not Path(path).is_file():
            raise FacellmError(f"{path}: no such corpus file")
        corpus += Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    family(args.family).build_tiny(args.out, corpus, args.seed)
    print(f"tiny {args.family} model written to {args.out}")
