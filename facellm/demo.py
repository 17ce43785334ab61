"""``facellm demo``: the whole loop offline, in one command, in a fresh folder.

synthetic faces -> tiny Qwen2-VL -> eval base (over HTTP) -> LoRA fine-tune -> merge ->
eval tuned (over HTTP, served by vLLM where installed) -> before/after report (per attribute, per
skin-tone group, counterfactual probe) -> API server + chat UI.
The steps hand over through files and the HTTP API, as the real stages do. The tiny recipe trains
the vision tower and embeddings too, which vLLM's LoRA support does not apply, so the adapter is
merged into a full model first (``facellm merge``), as one would before serving it with vLLM.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from facellm.atomic import write_text_atomic
from facellm.errors import FacellmError

RECIPE = Path(__file__).resolve().parent.parent / "finetune" / "configs" / "tiny-synthetic.yaml"
TUNED_NAME = "face"
# attribute questions and descriptions, and on three images in ten a polite identity refusal
DEMO_QA = {"kinds": ("attributes", "description"), "refusal_rate": 0.3}


def _step(title: str, t0: float) -> None:
    print(f"\n== [{time.perf_counter() - t0:6.0f} s] {title}", flush=True)


def run_demo(out: Path | None, steps: int | None = None, n_images: int = 6400, ui: bool = True,
             port: int = 8000, ui_port: int = 7860, seed: int = 0, engine: str = "auto") -> dict:
    from data_pipeline.build import BuildConfig, build_synthetic
    from data_pipeline.templates import TemplateOptions
    from data_pipeline.counterfactual_faces import build_counterfactuals
    from facellm.eval.attributes import counterfactual_probe, evaluate_attributes, identity_section, question_records
    from facellm.families import family
    from facellm.records import load_split
    from finetune.config import TrainConfig
    from finetune.merge import merge
    from finetune.train import train
    from serve.api import start_in_thread
    from serve.engine import EmbeddedEngine
    from serve.launch import choose_engine, local_server

    out = out or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and any(out.iterdir()):
        raise FacellmError(f"{out}: not empty; the demo needs a fresh folder (pass another --out)")
    t0 = time.perf_counter()
    data, model_dir, run_dir, tuned_dir = out / "data", out / "tiny-qwen2-vl", out / "train", out / "tuned"

    _step(f"synthetic faces and template QA -> {data}", t0)
    held_out = min(200, max(1, n_images // 20))  # images in each of validation and test
    build_synthetic(BuildConfig(out=data, n=n_images, val_size=held_out, test_size=held_out, seed=seed,
                                templates=TemplateOptions(**DEMO_QA)))

    _step(f"tiny Qwen2-VL (random weights, BPE tokenizer trained on the QA texts) -> {model_dir}", t0)
    texts = [m["content"] for line in (data / "sharegpt" / "train.jsonl").open()
             for m in json.loads(line)["messages"]]
    family("qwen2_vl").build_tiny(model_dir, texts, seed)

    test = question_records(load_split(data, "test"))

    probe = build_counterfactuals(out / "counterfactual", faces=20 if n_images >= 1000 else 2, seed=seed)

    def evaluate(base_url: str, model_name: str) -> dict:
        result = evaluate_attributes(base_url, model_name, test, data)
        result["counterfactual"] = counterfactual_probe(base_url, model_name, probe)
        result["identity"] = identity_section(base_url, model_name, test, data, result)
        return result

    _step("evaluate the base model through the OpenAI-compatible API (embedded transformers engine)", t0)
    base_engine = EmbeddedEngine(str(model_dir), {}, served_name="base")
    base_url, stop = start_in_thread(base_engine, "127.0.0.1", 0)
    results = {"base": evaluate(base_url, "base")}
    stop()
    base_engine.close()  # an idle engine thread measurably slows the training that follows

    _step(f"LoRA fine-tune ({RECIPE.name}) -> {run_dir}", t0)
    overrides = [f"model={model_dir}", f"data={data}", f"output={run_dir}", f"seed={seed}"]
    overrides += [f"max_steps={steps}"] if steps else []
    train(TrainConfig.from_yaml(RECIPE, overrides))

    _step(f"merge the adapter into a full model -> {tuned_dir}", t0)
    merge(model_dir, run_dir / "adapter", tuned_dir)

    engine = choose_engine(engine, {})
    _step(f"serve the tuned model ({engine} engine) and evaluate it through the API", t0)
    with local_server(tuned_dir, {}, engine, served_name=TUNED_NAME, port=port if ui else 0,
                      log_path=out / "server.log") as base_url:
        results["tuned"] = evaluate(base_url, TUNED_NAME)
        _report(results, out, run_dir, test, t0)
        summary = {"elapsed_s": time.perf_counter() - t0, "base": results["base"]["mean_accuracy"],
                   "tuned": results["tuned"]["mean_accuracy"], "engine": engine, "out": str(out)}
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
        if ui:
            examples = sorted({str(data / r["images"][0]) for r in test})[:4]
            _chat_ui(base_url, ui_port, engine, examples)
    return summary


def _report(results: dict, out: Path, run_dir: Path, test: list[dict], t0: float) -> None:
    from facellm.eval import counterfactual
    from facellm.eval.attributes import markdown_table, write_attribute_report

    report = write_attribute_report(results, out / "eval", "facellm demo: tiny Qwen2-VL on synthetic faces, held-out test split")
    elapsed = time.perf_counter() - t0
    print(f"\nHeld-out test accuracy ({len(test)} questions on {len(test) // 5} unseen images):\n")
    print(markdown_table(results))
    print("\nCounterfactual probe (same face, one attribute changed):\n")
    print(counterfactual.markdown({run: r["counterfactual"] for run, r in results.items()}))
    print(f"\nreport: {report}   training curves: {run_dir / 'curves.png'}   elapsed: {elapsed:.0f} s")


def _chat_ui(base_url: str, ui_port: int, engine: str, examples: list[str]) -> None:
    from serve.chat_ui import launch_ui

    print(f"\nAPI:     {base_url}/v1  (model: {TUNED_NAME}, {engine} engine)\nchat UI: http://127.0.0.1:{ui_port}\n"
          "Ctrl-C stops both.", flush=True)
    launch_ui(base_url, port=ui_port, examples=examples)
