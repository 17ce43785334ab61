"""Serving: batch captioning and chat streaming through facellm's API, next to plain transformers.

    python benchmarks/captioning.py [--images 128]

captioning: ``facellm caption --endpoint URL`` against ``facellm serve`` (embedded engine, its own process;
32 requests in flight, each image sent over HTTP, batched by the engine, JSON-schema constrained, every
answer validated, appended to JSONL) against ``generate`` batched 16 in-process on the same model, same
prompt, same schema constraint: the strongest thing a user could write without a server. (Captioning with
the engine inside the workers, no HTTP, is measured by benchmarks/scale.py.)
chat: time to first token and decode tokens/s of an answer through the HTTP API, against ``generate``
on the same model, in-process (see chat_latency).
Both sides: the same tiny Qwen2-VL (random weights), the same 112x112 synthetic faces.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import facellm  # noqa: F401
from data_pipeline.build import write_faces
from facellm.client import openai_client
from facellm.constrained import for_model
from facellm.tiny_models.qwen import build_tiny_qwen2_vl
from facellm.generation import GenerationRequest, generate
from facellm.images import load_image, to_data_url
from facellm.records import chat
from facellm.schema import json_schema
from facellm.modeling import load_model, load_processor
from serve.caption import DEFAULT_PROMPT, CaptionConfig, run_captioning
from serve.launch import local_server

CHAT_QUESTION, CHAT_TOKENS, CHATS = "Describe this face.", 48, 8


def batched(model, processor, paths: list[Path], batch_size: int = 16) -> float:
    """Seconds for a plain loop: load the images, generate under the schema, ``batch_size`` images per call."""
    constraint = for_model(model, processor)
    schema = json_schema()
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        requests = [GenerationRequest(chat(DEFAULT_PROMPT), [load_image(p)], 256, json_schema=schema)
                    for p in paths[i:i + batch_size]]
        generate(model, processor, requests, constraint)
    return time.perf_counter() - start


def chat_latency(model, processor, url: str, image) -> dict:
    """Time to first token (the latency of a one-token answer: prefill + one step) and decode tokens/s
    (the extra tokens of a full answer over its extra time), through the API and by direct ``generate``.
    Measured this way rather than on a text stream because a random model's text has few spaces, and
    streamers hold text back until a word ends."""
    client = openai_client(url)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": to_data_url(image)}},
                                             {"type": "text", "text": CHAT_QUESTION}]}]

    def via_api(max_tokens: int) -> tuple[float, int]:
        start = time.perf_counter()
        reply = client.chat.completions.create(model="base", messages=messages, max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - start, reply.usage.completion_tokens

    def direct(max_tokens: int) -> tuple[float, int]:
        start = time.perf_counter()
        answer, = generate(model, processor, [GenerationRequest(chat(CHAT_QUESTION), [image], max_tokens)])
        return time.perf_counter() - start, answer.completion_tokens

    result = {}
    for name, ask in (("api", via_api), ("transformers", direct)):
        ask(CHAT_TOKENS)  # warm-up
        first = statistics.median(ask(1)[0] for _ in range(CHATS))
        full = [ask(CHAT_TOKENS) for _ in range(CHATS)]
        seconds, tokens = statistics.median(f[0] for f in full), statistics.median(f[1] for f in full)
        result[name] = {"ttft_ms": 1000 * first, "decode_tokens_per_s": (tokens - 1) / (seconds - first),
                        "answer_tokens": tokens}
    return result


def measure(images: int = 128, with_chat: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_tiny_qwen2_vl(tmp / "model")
        paths = write_faces(tmp / "faces", images, seed=9)
        model, processor = load_model(tmp / "model").eval(), load_processor(tmp / "model")
        batched(model, processor, paths[:4])  # warm-up: kernels, the schema's grammar
        baseline_s = batched(model, processor, paths)
        # `facellm serve` in its own process (embedded engine), `facellm caption --endpoint`: 32 requests in flight
        with local_server(tmp / "model", {}, "transformers", served_name="base", log_path=tmp / "server.log") as url:
            warm = CaptionConfig(inputs=[str(paths[0])], out=tmp / "warm.jsonl", endpoint=url, model="base",
                                 schema=json_schema())
            run_captioning(warm)
            cfg = CaptionConfig(inputs=[str(tmp / "faces")], out=tmp / "captions.jsonl", endpoint=url, model="base",
                                schema=json_schema(), concurrency=32)
            start = time.perf_counter()
            summary = run_captioning(cfg)
            facellm_s = time.perf_counter() - start
            chat_figures = chat_latency(model, processor, url, load_image(paths[0])) if with_chat else None
    if summary["captioned"] != images:
        raise RuntimeError(f"captioning finished {summary['captioned']} of {images} images: {summary}")
    return {"facellm_images_per_s": images / facellm_s, "batched_generate_images_per_s": images / baseline_s,
            "seconds": facellm_s, "images": images, "chat": chat_figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()
    r = measure(args.images)
    print(f"captioning through the API: {r['facellm_images_per_s']:.1f} images/s vs batched generate "
          f"{r['batched_generate_images_per_s']:.1f}: "
          f"{r['facellm_images_per_s'] / r['batched_generate_images_per_s']:.2f}x")
    for name, c in r["chat"].items():
        print(f"chat via {name}: time to first token {c['ttft_ms']:.0f} ms, {c['decode_tokens_per_s']:.0f} tokens/s")


if __name__ == "__main__":
    main()
