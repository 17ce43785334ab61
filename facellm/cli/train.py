"""`facellm train` (fine-tune a VLM from a recipe) and `facellm merge` (fold an adapter into its base)."""

from __future__ import annotations

from pathlib import Path

from facellm.cli.args import existing_dir, output_dir
from facellm.errors import FacellmError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a VLM (LoRA or full) on a dataset dir",
                       description="Train from a YAML config (see finetune/configs/); flags and --set override it.")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("--model", help="model directory")
    p.add_argument("--data", help="dataset directory")
    p.add_argument("--output", type=output_dir, help="run directory (adapter/, log.jsonl, curves.png, summary.json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. --set max_steps=200")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in the run directory (needs save_every > 0)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("merge", help="fold a LoRA adapter into its base model: one full safetensors model",
                       description="Write base + adapter as one model directory (weights, processor, generation "
                                   "config, model card) that transformers and vLLM load without PEFT.")
    p.add_argument("--model", required=True, type=existing_dir, help="base model directory")
    p.add_argument("--adapter", required=True, type=existing_dir, help="LoRA adapter directory")
    p.add_argument("--out", required=True, type=output_dir, help="new model directory")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the merged weights")
    p.set_defaults(func=cmd_merge)


def cmd_train(args) -> None:
    from facellm.modeling import is_hub_id
    from finetune.config import TrainConfig
    from finetune.train import train

    flags = {key: getattr(args, key) for key in ("model", "data", "output") if getattr(args, key)}
    cfg = TrainConfig.from_yaml(args.config, args.set or (), flags)
    for key in ("model", "data"):
        if not getattr(cfg, key):
            raise FacellmError(f"no {key} given: set `{key}:` in the config or pass --{key}")
        if not Path(getattr(cfg, key)).is_dir() and not (key == "model" and is_hub_id(cfg.model)):
            raise FacellmError(f"{getattr(cfg, key)}: no such {key} directory")
    summary = train(cfg, resume=args.resume)
    if summary is not None:  # the main process of a multi-process run, or the only one
        print(f"saved in {summary['output']}; validation accuracy: {summary['validation']}")


def cmd_merge(args) -> None:
    from finetune.merge import merge

    out = merge(args.model, args.adapter, args.out, args.dtype)
    print(f"merged model written to {out}")
