"""`facellm train` (fine-tune a VLM from a recipe) and `facellm merge` (fold an adapter into its base)."""

from __future__ import annotations

from pathlib import Path

from facellm.cli.args import existing_dir, output_dir
from facellm.errors import FacellmError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a VLM (LoRA or full) on a facellm dataset or any chat dataset",
                       description="Train from a YAML config (see finetune/configs/); flags and --set override it. "
                                   "Rows of a chat dataset that cannot train (missing or undecodable image, image "
                                   "count not matching the image tags, roles out of order, empty answer) are "
                                   "skipped into OUTPUT/data_rejects.jsonl with their reason; the run says how many.")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("--model", help="model directory")
    p.add_argument("--data", help="what to train on: a dataset directory from `facellm data build`; a datasets "
                                  "save_to_disk folder or Parquet file/folder with TRL's messages + images columns; "
                                  "LLaMA-Factory's dataset_info.json (or its folder) with ShareGPT files (the "
                                  "entry named *train, or --set data_name=NAME); a LLaVA "
                                  "JSON (id, image, conversations); a .jsonl of messages + images rows. Folders: "
                                  "train* trains, validation* validates")
    p.add_argument("--image-folder", dest="image_folder",
                   help="where relative image paths of --data start (LLaVA's --image_folder, LLaMA-Factory's "
                        "media_dir); default: the data's own folder")
    p.add_argument("--output", type=output_dir, help="run directory (adapter/, log.jsonl, curves.png, summary.json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. --set max_steps=200")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in the run directory (needs save_every > 0)")
    p.add_argument("--estimate", action="store_true",
                   help="print the predicted peak memory (weights, gradients, optimizer states, activations of the "
                        "longest batch, with and without gradient checkpointing, per precision) and whether it "
                        "fits this machine's RAM or each GPU, then exit without training")
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

    flags = {key: getattr(args, key) for key in ("model", "data", "output", "image_folder") if getattr(args, key)}
    cfg = TrainConfig.from_yaml(args.config, args.set or (), flags)
    for key in ("model", "data"):
        if not getattr(cfg, key):
            raise FacellmError(f"no {key} given: set `{key}:` in the config or pass --{key}")
    if not Path(cfg.model).is_dir() and not is_hub_id(cfg.model):
        raise FacellmError(f"{cfg.model}: no such model directory")
    if not Path(cfg.data).exists():  # a directory or a file (finetune/chat_data.py tells the layout)
        raise FacellmError(f"{cfg.data}: no such data directory or file")
    if cfg.image_folder and not Path(cfg.image_folder).is_dir():
        raise FacellmError(f"{cfg.image_folder}: no such image folder")
    if args.estimate:
        from finetune.estimate import estimate_run

        print(estimate_run(cfg))
        return
    from finetune.train import train

    summary = train(cfg, resume=args.resume)
    if summary is not None:  # the main process of a multi-process run, or the only one
        print(f"saved in {summary['output']}; validation accuracy: {summary['validation']}")


def cmd_merge(args) -> None:
    from finetune.merge import merge

    out = merge(args.model, args.adapter, args.out, args.dtype)
    print(f"merged model written to {out}")
