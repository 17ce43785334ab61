"""The benchmark suite in one command: every stage's figure next to its baseline, measured in the same run.

    python benchmarks/run.py [--quick]

Stages (each module also runs alone; its docstring says exactly what is compared):
  data       benchmarks/ingest.py    images/s of the real-photo build vs bare decode + detect (its limit)
  teacher    benchmarks/teacher.py   requests/s against a fake API with fixed latency vs concurrency/latency
  training   benchmarks/training.py  real tokens/s and peak memory vs a plain transformers.Trainer
  serving    benchmarks/captioning.py  facellm caption via the API images/s vs batched generate; chat TTFT, tokens/s
  load       benchmarks/load.py      the API at 1, 8 and 32 concurrent clients: requests/s, p50/p95, peak RSS;
                                     the chat UI's answer time idle and during a captioning job
  scaling    each stage's facellm side at 1x and 8x the work: 8.0 is linear cost

Writes benchmarks/results/suite.md and suite.json (with the machine and versions) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import captioning  # noqa: E402
import ingest  # noqa: E402
import load  # noqa: E402
import teacher  # noqa: E402
import training  # noqa: E402

# (1x, 8x) work per stage; --quick shrinks them for a smoke run
SIZES = {"ingest": 100, "teacher": 64, "training_steps": 40, "training_scaling_steps": 20, "captioning": 64,
         "load_requests": 96, "ui_batch_images": 256}
QUICK = {"ingest": 8, "teacher": 8, "training_steps": 4, "training_scaling_steps": 2, "captioning": 4,
         "load_requests": 8, "ui_batch_images": 16}


def row(stage: str, measure: str, facellm: float, baseline: float, baseline_is: str, unit: str,
        higher_is_better: bool = True) -> dict:
    return {"stage": stage, "measure": measure, "unit": unit, "facellm": facellm, "baseline": baseline,
            "baseline_is": baseline_is, "ratio": facellm / baseline if baseline else float("nan"),
            "higher_is_better": higher_is_better}


def run_suite(sizes: dict) -> dict:
    timings, rows, scaling = {}, [], []

    def timed(name, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - start
        print(f"[{name}] {timings[name]:.0f} s", file=sys.stderr, flush=True)
        return result

    small = timed("data", ingest.measure, sizes["ingest"])
    large = timed("data 8x", ingest.measure, 8 * sizes["ingest"])
    rows.append(row("data", "real-photo build", small["facellm_images_per_s"], small["limit_images_per_s"],
                    "decode + detect only (the limit)", "images/s"))
    scaling.append(("data: real-photo build (images)", small["seconds"], large["seconds"]))

    small = timed("teacher", teacher.measure, sizes["teacher"])
    large = timed("teacher 8x", teacher.measure, 8 * sizes["teacher"])
    rows.append(row("data", f"teacher QA ({small['latency_s'] * 1000:.0f} ms API latency, "
                            f"{small['concurrency']} in flight)", small["requests_per_s"],
                    small["ideal_requests_per_s"], "concurrency / latency (the ideal)", "requests/s"))
    scaling.append(("data: teacher QA (faces)", small["seconds"], large["seconds"]))

    t = timed("training", training.measure, sizes["training_steps"], scaling_steps=sizes["training_scaling_steps"])
    trainer = t["results"]["transformers.Trainer"]
    for name, r in t["results"].items():
        if name != "transformers.Trainer":
            rows.append(row("training", f"{name}: real tokens/s", r["tokens_per_s_in_loop"],
                            trainer["tokens_per_s_in_loop"], "transformers.Trainer, same model/data/collator",
                            "tokens/s"))
    grouped = t["results"]["facellm (length-grouped)"]
    rows.append(row("training", "facellm (length-grouped), its pre-flight counted: real tokens/s",
                    grouped["tokens_per_s_with_preflight"], trainer["tokens_per_s_in_loop"],
                    "transformers.Trainer, same model/data/collator", "tokens/s"))
    for name in ("facellm (length-grouped)", "facellm (length-grouped, gradient checkpointing)"):
        rows.append(row("training", f"{name}: peak memory added", t["results"][name]["peak_memory_added_mib"],
                        trainer["peak_memory_added_mib"], "transformers.Trainer (each in a fresh process)", "MiB",
                        higher_is_better=False))
    n = sizes["training_scaling_steps"]
    scaling.append(("training (steps)", t["scaling_s"][n], t["scaling_s"][8 * n]))

    small = timed("serving", captioning.measure, sizes["captioning"])
    large = timed("serving 8x", captioning.measure, 8 * sizes["captioning"], with_chat=False)
    rows.append(row("serving", "batch captioning via the API, JSON schema (embedded engine)",
                    small["facellm_images_per_s"], small["batched_generate_images_per_s"],
                    "generate batched 16, same schema", "images/s"))
    api, direct = small["chat"]["api"], small["chat"]["transformers"]
    rows.append(row("serving", "chat: time to first token (HTTP API)", api["ttft_ms"], direct["ttft_ms"],
                    "generate in-process", "ms", higher_is_better=False))
    rows.append(row("serving", "chat: decode tokens/s (HTTP API)", api["decode_tokens_per_s"],
                    direct["decode_tokens_per_s"], "generate in-process", "tokens/s"))
    scaling.append(("serving: batch captioning (images)", small["seconds"], large["seconds"]))

    under_load = timed("load", load.measure, sizes["load_requests"])
    under_load["ui"] = timed("ui during a batch job", load.ui_during_batch, sizes["ui_batch_images"])

    scaling = [{"stage": s, "seconds_1x": a, "seconds_8x": b, "cost_ratio": b / a} for s, a, b in scaling]
    return {"rows": rows, "load": under_load, "scaling": scaling, "training_step_profile": t["profile"],
            "stage_seconds": timings}


def markdown(suite: dict) -> str:
    lines = ["| stage | measure | facellm | baseline | ratio | baseline is |", "|---|---|---:|---:|---:|---|"]
    for r in suite["rows"]:
        better = "" if r["higher_is_better"] else " (lower is better)"
        lines.append(f"| {r['stage']} | {r['measure']} | {r['facellm']:.1f} {r['unit']} | {r['baseline']:.1f} "
                     f"{r['unit']} | {r['ratio']:.2f}{better} | {r['baseline_is']} |")
    lines += ["", "Scaling: seconds for 1x and 8x the work (8.0 = linear cost; less = fixed costs amortised)", "",
              "| stage (unit of work) | 1x s | 8x s | 8x / 1x |", "|---|---:|---:|---:|"]
    for s in suite["scaling"]:
        lines.append(f"| {s['stage']} | {s['seconds_1x']:.2f} | {s['seconds_8x']:.2f} | {s['cost_ratio']:.1f} |")
    lines += ["", f"The API under load ({suite['load']['requests']} chat requests with an image per level, embedded "
              "engine):", "", load.markdown(suite["load"])]
    profile = ", ".join(f"{k} {v:.1%}" for k, v in suite["training_step_profile"].items())
    lines += ["", f"Training step profile (facellm's step, by hand): {profile}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite runs, figures mean nothing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results",
                        help="folder for suite.md and suite.json")
    args = parser.parse_args()
    import torch
    import transformers

    start = time.perf_counter()
    suite = run_suite(QUICK if args.quick else SIZES)
    suite["machine"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                        "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "quick": args.quick, "total_s": time.perf_counter() - start}
    table = markdown(suite)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite.json").write_text(json.dumps(suite, indent=2))
    (args.out / "suite.md").write_text(table + "\n")
    print(table)
    print(f"\n{suite['machine']['total_s']:.0f} s; written to {args.out / 'suite.md'} and suite.json")


if __name__ == "__main__":
    main()
