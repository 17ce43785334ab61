"""`facellm init-model` (a randomly initialised VLM with a preset's shapes: a tiny one, or a published
checkpoint's) and `facellm tiny-model` (the tiny presets by family, for tests and the offline demo)."""

from __future__ import annotations

from pathlib import Path

from facellm.cli.args import output_dir
from facellm.errors import FacellmError


def add_parser(sub) -> None:
    p = sub.add_parser("init-model", help="write a random VLM with a preset's shapes (published or tiny), offline",
                       description="Write a randomly initialised VLM in the hub layout (weights, tokenizer, chat "
                                   "template, processors): a published checkpoint's shapes (layers, widths, heads, "
                                   "vision tower, vocabulary size, image tokens), which cost what the real model "
                                   "costs, or a tiny model. The tokenizer is a small BPE learnt offline.")
    p.add_argument("--preset", help="preset name (see --list)")
    p.add_argument("--out", type=output_dir, help="output directory")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="weights dtype (default: the published one)")
    _add_common(p)
    p.set_defaults(func=cmd_init_model)

    p = sub.add_parser("tiny-model", help="build a tiny random VLM of a real architecture, offline",
                       description="Write a tiny randomly initialised VLM (weights, tokenizer, chat template, "
                                   "processors) in the hub layout, for tests and the offline demo: the preset "
                                   "tiny-FAMILY of `facellm init-model`.")
    p.add_argument("--family", default="qwen2_vl", help="transformers model_type (see --list)")
    p.add_argument("--out", type=output_dir, help="output directory")
    _add_common(p)
    p.set_defaults(func=cmd_tiny_model)


def _add_common(p) -> None:
    p.add_argument("--corpus", nargs="*", help="text files whose lines train the BPE tokenizer (e.g. the QA texts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="print what can be written and exit")


def _corpus(paths: list[str] | None) -> list[str]:
    corpus = []
    for path in paths or []:
        if not Path(path).is_file():
            raise FacellmError(f"{path}: no such corpus file")
        corpus += Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    return corpus


def cmd_init_model(args) -> None:
    from facellm.presets import (PRESETS, available_ram, build_preset, memory_needed, meta_model, parameter_count,
                                 preset, preset_config)

    if args.list:
        print(f"{'preset':<22} {'family':<16} {'parameters':>14}  copies")
        for p in PRESETS.values():
            size = "~1-2 M (tiny)" if p.tiny else f"{parameter_count(meta_model(preset_config(p))) / 1e6:,.0f} M"
            print(f"{p.name:<22} {p.family:<16} {size:>14}  {p.hub_id or '-'}")
        return
    if not args.preset:
        raise FacellmError("--preset NAME is required (see --list)")
    chosen = preset(args.preset)
    if not args.out:
        raise FacellmError("--out DIR is required (where to write the model)")
    if not chosen.tiny:  # refuse before allocating: the weights and safetensors' copy of them must fit
        needed, free = memory_needed(chosen, args.dtype), available_ram()
        if needed > free:
            raise FacellmError(f"preset {chosen.name} needs about {needed / 2 ** 30:.1f} GiB of RAM to write "
                               f"in {args.dtype or chosen.dtype}, this machine has {free / 2 ** 30:.1f} GiB "
                               "available; free memory, or write it in bfloat16")
    build_preset(chosen, args.out, _corpus(args.corpus), args.seed, args.dtype)
    print(f"preset {chosen.name} written to {args.out}")


def cmd_tiny_model(args) -> None:
    from facellm.families import FAMILIES, family

    if args.list:
        for name in FAMILIES:
            print(name)
        return
    if not args.out:
        raise FacellmError("--out DIR is required (where to write the tiny model)")
    family(args.family).build_tiny(args.out, _corpus(args.corpus), args.seed)
    print(f"tiny {args.family} model written to {args.out}")
