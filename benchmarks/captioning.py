"""Answers per second through the embedded engine: dynamic batching vs one request at a time.

    python benchmarks/captioning.py [--requests 256] [--concurrency 32]

Both sides run in this process on the same tiny Qwen2-VL and the same images; the
baseline is the engine with max_batch_size=1 (plain one-at-a-time ``generate``).
Prints a Markdown table with the ratio; writes benchmarks/results/captioning.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import facellm  # noqa: F401
from data_pipeline.synthetic import generate as draw_face
from facellm.records import chat
from facellm.families.qwen import build_tiny_qwen2_vl
from serve.engine import EmbeddedEngine


def answers_per_second(engine: EmbeddedEngine, images: list, concurrency: int) -> float:
    def ask(image):
        return engine.complete(engine.served_name, chat("Describe this face."), [image], max_tokens=16)

    ask(images[0])  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(ask, images))
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    images = [draw_face(i, seed=9)[0] for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_qwen2_vl(tmp)
        rows = {}
        for label, batch in (("one at a time (max_batch_size=1)", 1), ("dynamic batching (max_batch_size=32)", 32)):
            engine = EmbeddedEngine(tmp, max_batch_size=batch)
            rows[label] = answers_per_second(engine, images, args.concurrency)
            engine.close()
    base, fast = rows.values()
    print(f"| engine setting | answers/s |\n|---|---:|")
    for label, value in rows.items():
        print(f"| {label} | {value:.1f} |")
    print(f"\nratio batched / one-at-a-time: {fast / base:.2f}x "
          f"({args.requests} requests, {args.concurrency} concurrent clients, 16 new tokens, 112x112 images)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "captioning.json").write_text(json.dumps({"answers_per_s": rows, "ratio": fast / base, **vars(args)}, indent=2))


if __name__ == "__main__":
    main()
