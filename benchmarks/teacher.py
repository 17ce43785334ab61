"""Teacher-mode QA throughput against a local fake OpenAI API with a fixed latency, next to the ideal.

    python benchmarks/teacher.py [--faces 64] [--latency 0.1] [--concurrency 8]

The teacher's requests wait on the network, so the most any client can do is ``concurrency`` requests
per ``latency`` seconds. facellm's figure: ``Teacher.qa_many`` over fresh synthetic faces (image
hashing, prompt, JPEG data URL, HTTP, JSON parsing, the on-disk cache write). The fake server is the
test suite's (tests/fake_openai.py), speaking OpenAI's protocol on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the fake API lives with the tests

from data_pipeline.build import save_png  # noqa: E402
from data_pipeline.synthetic import generate  # noqa: E402
from data_pipeline.teacher import Teacher, TeacherConfig  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402


def measure(faces: int = 64, latency: float = 0.1, concurrency: int = 8) -> dict:
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(latency=latency) as server:
        tmp = Path(tmp)
        jobs = []
        for i in range(faces):
            image, spec = generate(i, seed=4, size=112)
            path = tmp / f"{i}.png"
            save_png(image, path)
            jobs.append((i, path, spec.labels, {}))
        teacher = Teacher(TeacherConfig(url=server.url, model=server.model, concurrency=concurrency), tmp / "cache")
        start = time.perf_counter()
        pairs = sum(len(result) for _, result in teacher.qa_many(jobs) if isinstance(result, list))
        seconds = time.perf_counter() - start
    return {"requests_per_s": faces / seconds, "ideal_requests_per_s": concurrency / latency,
            "qa_per_s": pairs / seconds, "seconds": seconds, "faces": faces, "latency_s": latency,
            "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    r = measure(args.faces, args.latency, args.concurrency)
    print(f"teacher: {r['requests_per_s']:.1f} requests/s ({r['qa_per_s']:.0f} QA/s) vs ideal "
          f"{r['ideal_requests_per_s']:.1f} requests/s: ratio {r['requests_per_s'] / r['ideal_requests_per_s']:.2f}")


if __name__ == "__main__":
    main()
