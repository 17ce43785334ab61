"""`facellm caption`: batch attribute captioning, in-process engines or a running server, resumable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facellm.cli.args import ENGINES, adapter_arg, add_api_key_arg
from facellm.errors import FacellmError

DESCRIPTION = """\
Caption images with a vision-language model: answers are decoded under a JSON schema and
validated; the --out JSONL gets one line per image (per face with --per-face) as each
finishes. Re-running the same command skips what is done, so a killed run resumes and
every image appears exactly once; failures are lines with an "error" reason.

Two ways to reach the model:
  --model DIR [--adapter ...]     the engine runs in worker processes here (vLLM's offline
                                  LLM where installed, else transformers), fed batches of
                                  images directly, no HTTP; or as actors on a Ray cluster
                                  with --ray ADDRESS (one engine per GPU on GPU nodes)
  --endpoint URL --model NAME     a running OpenAI-compatible server (facellm serve, vLLM)"""

EPILOG = """\
examples:
  facellm caption photos/ --out captions.jsonl --model runs/demo/tuned --per-face
  facellm caption s3-mount/photos/ --out s3-mount/captions.jsonl --model runs/demo/tuned --ray auto
  facellm caption 'shots/**/*.jpg' list.txt --endpoint http://127.0.0.1:8000 --model face \\
      --out captions.jsonl --export csv,parquet"""


def add_parser(sub) -> None:
    p = sub.add_parser("caption", help="batch attribute captioning: one validated JSON record per image (or per face)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (recursive), quoted globs, .txt lists of paths, facellm dataset folders")
    p.add_argument("--out", required=True, help="results JSONL (appended to; re-runs resume)")
    p.add_argument("--endpoint", help="API base URL of a running server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True,
                   help="with --endpoint: the served model (or adapter) name; without: a model directory")
    p.add_argument("--adapter", type=_adapter_or_dir, metavar="[NAME=]DIR",
                   help="LoRA adapter to caption with (no --endpoint)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="engine in the workers (no --endpoint): auto = vLLM where installed and able to serve the "
                        "adapter, else transformers")
    p.add_argument("--workers", type=int, metavar="N",
                   help="engines (no --endpoint): processes here (default: 1 for vLLM, one per core for "
                        "transformers), or actors on the Ray cluster (default: as many as fit)")
    p.add_argument("--max-model-len", type=int, metavar="TOKENS",
                   help="vLLM engines (no --endpoint): context length (default: the longest training chat + 1024 "
                        "where facellm trained the model, else the model's own; vLLM's start-up profile run and "
                        "KV cache grow with it)")
    p.add_argument("--batch-size", type=int,
                   help="images (or faces) per engine call (no --endpoint; default 16 for transformers, 64 for vLLM)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the engines on the Ray cluster at ADDRESS (auto, HOST:PORT): Ray Data, one engine per "
                        "actor, one GPU each where the cluster has GPUs; inputs and --out on paths every node sees")
    p.add_argument("--schema", default="attributes",
                   help="'attributes' (facellm's record, default), a JSON Schema file, or 'none' for free text")
    p.add_argument("--prompt", help="question asked with every image (default: asks for the JSON record)")
    p.add_argument("--per-face", action="store_true",
                   help="detect faces and caption each crop; lines carry the face's box")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (--endpoint; default 8)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--retry-failed", action="store_true", help="give images that failed before another try")
    p.add_argument("--export", type=_formats, metavar="csv,parquet", help="also write the results as CSV / Parquet")
    add_api_key_arg(p, "bearer key the API expects")
    p.set_defaults(func=cmd_caption)


def _adapter_or_dir(value: str) -> tuple[str, str]:
    return adapter_arg(value) if "=" in value else ("adapter", value)


def _formats(value: str) -> list[str]:
    formats = [f.strip() for f in value.split(",") if f.strip()]
    if bad := [f for f in formats if f not in ("csv", "parquet")]:
        raise argparse.ArgumentTypeError(f"{','.join(bad)}: expected csv and/or parquet")
    return formats


def cmd_caption(args) -> None:
    from facellm.parallel import FanOut
    from serve.caption import BATCH_SIZE, CaptionConfig, export_results, load_schema, run_captioning
    from serve.launch import choose_engine

    schema = load_schema(args.schema)
    cfg = CaptionConfig(inputs=args.inputs, out=Path(args.out), model=args.model, schema=schema, prompt=args.prompt,
                        per_face=args.per_face, concurrency=args.concurrency, max_tokens=args.max_tokens,
                        api_key=args.api_key, retry_failed=args.retry_failed)
    if args.endpoint:
        if args.adapter or args.workers or args.ray:
            raise FacellmError("--adapter, --workers and --ray are for a model run here; with --endpoint, --model "
                               "names a served model")
        cfg.endpoint = args.endpoint
    else:
        if not Path(args.model).is_dir():
            raise FacellmError(f"--model {args.model}: no such model directory (with --endpoint, --model names a "
                               "served model instead)")
        cfg.adapter, cfg.max_model_len = args.adapter, args.max_model_len
        cfg.engine = choose_engine(args.engine, dict([args.adapter]) if args.adapter else {})
        cfg.fanout = FanOut(workers=args.workers, ray=args.ray, batch_size=args.batch_size or BATCH_SIZE[cfg.engine],
                            num_gpus=None if cfg.engine == "vllm" else 0)
    summary = run_captioning(cfg)
    print(json.dumps(summary))
    if args.export:
        for path in export_results(Path(args.out), args.export):
            print(f"wrote {path}")
