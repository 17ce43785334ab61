"""The API under load: 1, 8 and 32 concurrent clients sending chat requests with an image.

    python benchmarks/load.py [--requests 96]

One ``facellm serve --engine transformers`` process (the tiny Qwen2-VL with random weights, default queue
and batch limits) on 127.0.0.1; the clients, in this process, each send a fresh 112x112 face as a data URL
and ask for a 16-token answer. Reported per level: requests/s, p50 / p95 latency, errors, and the server
process's peak resident memory.
"""

from __future__ import annotations

import argparse
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
from facellm.tiny_models.qwen import build_tiny_qwen2_vl  # noqa: E402
from facellm.images import to_data_url  # noqa: E402
from serve.launch import server_process  # noqa: E402
from memory import PeakRSS  # noqa: E402

LEVELS = (1, 8, 32)


def measure(requests: int = 96, levels: tuple[int, ...] = LEVELS) -> dict:
    urls = [to_data_url(draw_face(i, seed=11)[0]) for i in range(requests)]
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_qwen2_vl(Path(tmp) / "model")
        server = server_process(Path(tmp) / "model", {}, "transformers", log_path=Path(tmp) / "server.log")
        with server as url:
            client = openai_client(url, max_retries=0)

            def ask(face_url: str) -> tuple[float, bool]:
                start = time.perf_counter()
                try:
                    client.chat.completions.create(model="base", max_tokens=16, temperature=0, messages=[
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": face_url}},
                                                     {"type": "text", "text": "Describe this face."}]}])
                    return time.perf_counter() - start, True
                except Exception:  # counted: any failure is an error of the server under load
                    return time.perf_counter() - start, False

            results = {}
            ask(urls[0])  # warm-up
            for clients in levels:
                with PeakRSS(server.process.pid) as memory, ThreadPoolExecutor(clients) as pool:
                    start = time.perf_counter()
                    outcomes = list(pool.map(ask, urls))
                    seconds = time.perf_counter() - start
                latencies = sorted(t for t, _ in outcomes)
                results[clients] = {
                    "requests_per_s": requests / seconds, "p50_ms": 1000 * statistics.median(latencies),
                    "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
                    "errors": sum(not ok for _, ok in outcomes), "peak_rss_mib": memory.peak / 2 ** 20}
    return {"levels": results, "requests": requests}


def ui_during_batch(images: int = 256, asks: int = 5) -> dict:
    """The chat UI's answer time (upload a face, ask about it) idle and while a `facellm caption` job of
    ``images`` images runs against the same server: three processes, as a lab would run them (server,
    captioning job, UI)."""
    import subprocess

    from gradio_client import Client, handle_file

    from data_pipeline.build import write_faces
    from serve.chat_ui import build_ui

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_tiny_qwen2_vl(tmp / "model")
        write_faces(tmp / "faces", images, seed=12)
        with server_process(tmp / "model", {}, "transformers", log_path=tmp / "server.log") as url:
            ui = build_ui(url)
            _, ui_url, _ = ui.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
            client = Client(ui_url, verbose=False)
            photo = handle_file(str(tmp / "faces" / "0000.png"))

            def ask() -> float:
                start = time.perf_counter()
                client.predict("Describe the face.", photo, "whole image", max_tokens=16, api_name="/chat")
                return time.perf_counter() - start

            ask()  # warm-up
            idle = [ask() for _ in range(asks)]
            job = subprocess.Popen([sys.executable, "-m", "facellm.cli", "caption", str(tmp / "faces"), "--endpoint",
                                    url, "--model", "base", "--concurrency", "32", "--out", str(tmp / "c.jsonl")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not (tmp / "c.jsonl").exists() and job.poll() is None:  # the job has started answering
                time.sleep(0.05)
            busy = [ask() for _ in range(asks)]
            still_running = job.poll() is None
            job.wait()
            ui.close()
        captioned = sum(1 for _ in (tmp / "c.jsonl").open())
    return {"idle_ms": 1000 * statistics.median(idle), "during_batch_ms": 1000 * statistics.median(busy),
            "batch_still_running": still_running, "captioned": captioned, "images": images}


def markdown(result: dict) -> str:
    lines = ["| clients | requests/s | p50 ms | p95 ms | errors | peak RSS MiB |", "|---:|---:|---:|---:|---:|---:|"]
    for clients, r in result["levels"].items():
        lines.append(f"| {clients} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                     f"{r['errors']} | {r['peak_rss_mib']:.0f} |")
    if ui := result.get("ui"):
        lines += ["", f"Chat UI answer (upload + question, 16 tokens), median of 5: idle {ui['idle_ms']:.0f} ms, "
                      f"while `facellm caption` ran {ui['images']} images against the same server "
                      f"{ui['during_batch_ms']:.0f} ms (job still running after the last: {ui['batch_still_running']}; "
                      f"captioned {ui['captioned']})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    args = parser.parse_args()
    result = measure(args.requests)
    result["ui"] = ui_during_batch()
    print(markdown(result))


if __name__ == "__main__":
    main()
