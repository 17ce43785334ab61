"""What facellm's request guard (serve/guard.py) costs in front of vLLM: requests/s at 16 concurrent clients,
vLLM with the guard (as `facellm serve --engine vllm` runs it) against the same vLLM without it.

    python benchmarks/guard.py [--requests 128] [--rounds 5]

Both servers run at once (the tiny Qwen2-VL, random weights) and are loaded in turn, alternating which
goes first, so drifts of the machine fall on both; each round sends the same ``--requests`` fresh 112x112
faces (PNG data URLs, as facellm's clients send them) with a 16-token answer. Reported: each server's
median requests/s over the rounds, and the median of the per-round ratios (guarded / unguarded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import facellm  # noqa: E402,F401
from data_pipeline.synthetic import generate as draw_face  # noqa: E402
from facellm.client import openai_client  # noqa: E402
from facellm.images import to_data_url  # noqa: E402
from facellm.tiny_models.qwen import build_tiny_qwen2_vl  # noqa: E402
from serve.launch import free_port  # noqa: E402
from serve.process import ServerProcess  # noqa: E402
from serve.vllm_server import VLLMServer, VLLMSettings, vllm_command, vllm_env  # noqa: E402

CLIENTS = 16


def unguarded(settings: VLLMSettings, log_path: Path) -> ServerProcess:
    """The same vLLM server without facellm's middleware: the baseline."""
    command = vllm_command(settings)
    at = command.index("--middleware")
    return ServerProcess("vLLM (no guard)", command[:at] + command[at + 2:], vllm_env(settings),
                         f"http://{settings.host}:{settings.port}", log_path=log_path)


def requests_per_s(url: str, faces: list[str]) -> float:
    client = openai_client(url, max_retries=0)

    def ask(face: str) -> None:
        client.chat.completions.create(model="base", max_tokens=16, temperature=0, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": face}},
                                         {"type": "text", "text": "Describe this face."}]}])

    with ThreadPoolExecutor(CLIENTS) as pool:
        start = time.perf_counter()
        list(pool.map(ask, faces))  # any error fails the benchmark: a guard must not refuse good requests
        return len(faces) / (time.perf_counter() - start)


def measure(requests: int = 128, rounds: int = 5) -> dict:
    faces = [to_data_url(draw_face(i, seed=13)[0]) for i in range(requests)]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        build_tiny_qwen2_vl(tmp / "model")

        def settings() -> VLLMSettings:
            return VLLMSettings(model=str(tmp / "model"), served_name="base", port=free_port(), max_model_len=1024,
                                max_in_flight=CLIENTS + 256)

        urls = {"guard": stack.enter_context(VLLMServer(settings(), tmp / "guard.log")),
                "no guard": stack.enter_context(unguarded(settings(), tmp / "plain.log"))}
        for url in urls.values():
            requests_per_s(url, faces[:CLIENTS])  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in urls}
        for r in range(rounds):
            for name in (list(urls) if r % 2 == 0 else list(urls)[::-1]):
                rates[name].append(requests_per_s(urls[name], faces))
    ratios = [g / p for g, p in zip(rates["guard"], rates["no guard"])]
    return {"clients": CLIENTS, "requests": requests, "rounds": rates,
            "guard_rps": statistics.median(rates["guard"]), "no_guard_rps": statistics.median(rates["no guard"]),
            "ratio": statistics.median(ratios)}


def markdown(result: dict) -> str:
    return (f"| vLLM at {result['clients']} clients | requests/s (median of {len(result['rounds']['guard'])} rounds) |\n"
            f"|---|---:|\n| without the guard | {result['no_guard_rps']:.1f} |\n"
            f"| with the guard | {result['guard_rps']:.1f} |\n\n"
            f"Guarded / unguarded, median of the per-round ratios: **{result['ratio']:.3f}**")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.requests, args.rounds)
    print(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
