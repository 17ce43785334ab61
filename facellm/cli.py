"""``facellm``: the composition root. Each subcommand wires one stage; stages never import each other."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from facellm.errors import FacellmError

EPILOG = "Run `facellm demo` for the whole loop offline: data -> tiny model -> eval -> train -> eval -> serve -> chat."


def _adapter_arg(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=DIR, e.g. face=runs/train/adapter")
    return name, path


def _add_bind_args(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help=f"port (default {port})")


def _add_api_key_arg(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--api-key", default=os.environ.get("FACELLM_API_KEY"),
                   help=f"{role} (default: $FACELLM_API_KEY)")


def _output_dir(value: str) -> str:
    if Path(value).exists() and not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value}: exists and is not a directory")
    return value


def _existing_dir(value: str) -> str:
    if not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such directory")
    return value


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


def cmd_data_build(args) -> None:
    if args.source != "synthetic":
        from data_pipeline.ingest import IngestConfig, ingest

        if not args.root:
            raise FacellmError(f"--source {args.source} needs --root DIR (the dataset's folder)")
        manifest = ingest(IngestConfig(
            source=args.source, root=Path(args.root), out=Path(args.out), labels=Path(args.labels) if args.labels else None,
            min_face=args.min_face, max_faces=args.max_faces, multi_face=args.multi_face, min_blur=args.min_blur,
            val_size=args.val_size, test_size=args.test_size, seed=args.seed))
        print(f"dataset written to {args.out}: {manifest['images']} images, {manifest['rejected']} rejected "
              f"(reasons in {Path(args.out) / 'rejects.jsonl'}); records: {manifest['records']}")
        return
    from data_pipeline.build import BuildConfig, build_synthetic

    if args.n < 3:
        raise FacellmError(f"--n {args.n}: need at least 3 images (train, validation, test)")
    counts = build_synthetic(BuildConfig(out=Path(args.out), n=args.n, val_size=args.val_size,
                                         test_size=args.test_size, seed=args.seed, image_size=args.image_size))
    print(f"dataset written to {args.out}: " + ", ".join(f"{s} {n} records" for s, n in counts.items()))


def cmd_train(args) -> None:
    from finetune.config import TrainConfig
    from finetune.train import train

    overrides = list(args.set or [])
    for key in ("model", "data", "output"):
        if getattr(args, key):
            overrides.append(f"{key}={getattr(args, key)}")
    cfg = TrainConfig.from_yaml(args.config, overrides)
    for key in ("model", "data"):
        if not getattr(cfg, key):
            raise FacellmError(f"no {key} given: set `{key}:` in the config or pass --{key}")
        if not Path(getattr(cfg, key)).is_dir():
            raise FacellmError(f"{getattr(cfg, key)}: no such {key} directory")
    summary = train(cfg)
    print(f"adapter saved in {summary['output']}; validation accuracy: {summary['validation']}")


def cmd_eval(args) -> None:
    from facellm.evaluation import ask_endpoint, question_records, score, write_report
    from facellm.records import load_split

    records = question_records(load_split(args.data, args.split))
    if args.limit:
        records = records[: args.limit]
    if not records:
        raise FacellmError(f"{args.data}: no attribute questions in split {args.split!r}")
    answers = ask_endpoint(args.endpoint, args.model, records, Path(args.data), args.api_key,
                           concurrency=args.concurrency)
    result = score(records, answers)
    report = write_report({args.model: result}, Path(args.out), f"facellm eval: {args.model} on {args.data} ({args.split})")
    print(report.read_text())
    print(f"report: {report}")


def cmd_serve(args) -> None:
    from serve.api import serve_forever
    from serve.engine import EmbeddedEngine

    engine = EmbeddedEngine(args.model, dict(args.adapter or []))
    serve_forever(engine, host=args.host, port=args.port, api_key=args.api_key)


def cmd_chat(args) -> None:
    from serve.chat_ui import launch_ui

    launch_ui(args.endpoint, host=args.host, port=args.port, api_key=args.api_key)


def cmd_demo(args) -> None:
    from facellm.demo import run_demo

    run_demo(Path(args.out) if args.out else None, steps=args.steps, n_images=args.n, ui=not args.no_ui,
             port=args.port, ui_port=args.ui_port, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facellm", description="Face understanding with vision-language models.",
                                     epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("tiny-model", help="build a tiny random VLM of a real architecture, offline",
                       description="Write a tiny randomly initialised VLM (weights, tokenizer, chat template, "
                                   "processors) in the hub layout, for tests and the offline demo.")
    p.add_argument("--family", default="qwen2_vl", help="transformers model_type (see --list)")
    p.add_argument("--out", type=_output_dir, help="output directory")
    p.add_argument("--corpus", nargs="*", help="text files whose lines train the BPE tokenizer (e.g. the QA texts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="print the supported families and exit")
    p.set_defaults(func=cmd_tiny_model)

    p = sub.add_parser("data", help="build face QA datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    b = data_sub.add_parser("build", help="images + labels -> QA records -> dataset dir",
                            description="Write DIR/dataset (datasets.DatasetDict), DIR/parquet, DIR/sharegpt (+ "
                                        "LLaMA-Factory dataset_info.json), DIR/llava, DIR/images, DIR/manifest.json. "
                                        "Splits are by image.")
    b.add_argument("--source", choices=["synthetic", "fairface", "utkface", "celeba", "rafdb", "folder"],
                   default="synthetic", help="synthetic faces, or a dataset in its own on-disk layout under --root")
    b.add_argument("--root", type=_existing_dir, help="the dataset's folder (real sources)")
    b.add_argument("--labels", help="labels file for --source folder: CSV or JSONL with a 'file' column")
    b.add_argument("--n", type=int, default=1000, help="number of images (synthetic)")
    b.add_argument("--out", required=True, type=_output_dir, help="output dataset directory")
    b.add_argument("--val-size", type=float, default=0.05, help="validation images: fraction (<1) or count")
    b.add_argument("--test-size", type=float, default=0.05, help="test images: fraction (<1) or count")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--image-size", type=int, default=112, help="synthetic image size")
    b.add_argument("--min-face", type=int, default=32, help="skip faces smaller than this (pixels)")
    b.add_argument("--max-faces", type=int, default=1, help="images with more faces are skipped (see --multi-face)")
    b.add_argument("--multi-face", choices=["skip", "each"], default="skip",
                   help="images with more than --max-faces faces: skip them, or one record set per face")
    b.add_argument("--min-blur", type=float, default=0.0, help="skip faces blurrier than this Laplacian variance")
    b.set_defaults(func=cmd_data_build)

    p = sub.add_parser("train", help="fine-tune a VLM (LoRA or full) on a dataset dir",
                       description="Train from a YAML config (see finetune/configs/); flags and --set override it.")
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("--model", help="model directory")
    p.add_argument("--data", help="dataset directory")
    p.add_argument("--output", type=_output_dir, help="run directory (adapter/, log.jsonl, curves.png, summary.json)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. --set max_steps=200")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy per attribute of a model behind an OpenAI-compatible API",
                       description="Ask every attribute question of a split through the API and score the answers.")
    p.add_argument("--endpoint", required=True, help="API base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="served model name (base or adapter name)")
    p.add_argument("--data", required=True, type=_existing_dir, help="dataset directory")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, type=_output_dir, help="report directory (report.json, report.md)")
    p.add_argument("--limit", type=int, help="ask only the first N questions")
    p.add_argument("--concurrency", type=int, default=16, help="questions in flight at once")
    _add_api_key_arg(p, "bearer key the API expects")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="serve a model (+ LoRA adapters) behind an OpenAI-compatible API",
                       description="Embedded transformers engine with dynamic batching; adapters are served as "
                                   "model names beside the base model.")
    p.add_argument("--model", required=True, type=_existing_dir, help="model directory")
    p.add_argument("--adapter", action="append", type=_adapter_arg, metavar="NAME=DIR", help="LoRA adapter")
    _add_bind_args(p, 8000)
    _add_api_key_arg(p, "require this bearer key on every /v1 route")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("chat", help="Gradio chat UI, a client of the HTTP API")
    p.add_argument("--endpoint", required=True, help="API base URL, e.g. http://127.0.0.1:8000/v1")
    _add_bind_args(p, 7860)
    _add_api_key_arg(p, "bearer key the API expects")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("demo", help="the whole loop offline, in one command",
                       description="Synthetic faces -> tiny Qwen2-VL -> eval base -> LoRA fine-tune -> eval tuned -> "
                                   "before/after table -> API server + chat UI.")
    p.add_argument("--out", type=_output_dir, help="fresh output folder (default: runs/demo-<time>)")
    p.add_argument("--n", type=int, default=6400, help="synthetic images; validation and test get 1/20 each, at most 200")
    p.add_argument("--steps", type=int, help="training steps (default: the tiny-synthetic recipe's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the faces, the model's weights and training")
    p.add_argument("--no-ui", action="store_true", help="stop after the report")
    p.add_argument("--port", type=int, default=8000, help="API port")
    p.add_argument("--ui-port", type=int, default=7860, help="chat UI port")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    import facellm  # noqa: F401  (torchvision patch before transformers loads)

    try:
        args.func(args)
    except (FacellmError, OSError) as e:  # OSError: a path the user gave (permissions, disk full, ...)
        if args.verbose:
            raise
        print(f"facellm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
