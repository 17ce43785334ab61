"""A short real training run: the tiny random model learns to see from chance (or worse) to high held-out accuracy.

The first attributes a tiny model learns are colours and glasses (expression and head pose need
~800 steps of batch 32: see the demo); 300 steps of batch 16 (~1 min on 2 cores) suffice for these.
"""

import json

import pytest

from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.templates import ATTRIBUTES_ONLY
from facellm.tiny_models.qwen import build_tiny_qwen2_vl
from finetune.config import ConfigError, TrainConfig
from finetune.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data, model = root / "data", root / "model"
    build_synthetic(BuildConfig(out=data, n=640, val_size=40, test_size=1, seed=5, templates=ATTRIBUTES_ONLY))
    texts = [m["content"] for line in (data / "sharegpt" / "train.jsonl").open() for m in json.loads(line)["messages"]]
    build_tiny_qwen2_vl(model, texts)
    cfg = TrainConfig.from_yaml("finetune/configs/tiny-synthetic.yaml", [
        f"model={model}", f"data={data}", f"output={root / 'run'}",
        "max_steps=300", "batch_size=16", "eval_every=0", "eval_samples=200", "log_every=10", "seed=0",
    ])
    return cfg, train(cfg)


LEARNED_FIRST = {"skin_tone": 0.9, "hair_color": 0.75, "glasses": 0.75}  # chance: 1/3, 1/4, 1/2


def test_loss_falls_and_held_out_accuracy_rises(trained):
    cfg, summary = trained
    log = [json.loads(line) for line in open(f"{cfg.output}/log.jsonl")]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0] / 5
    # held-out validation images the model never trained on
    for attribute, floor in LEARNED_FIRST.items():
        assert summary["validation"][attribute] >= floor, (attribute, summary["validation"])


def test_the_untrained_model_is_at_or_below_chance(trained):
    from facellm.eval.attributes import question_records
    from facellm.modeling import load_model, load_processor
    from facellm.records import load_split
    from finetune.train import validation_accuracy

    cfg, _ = trained
    records = question_records(load_split(cfg.data, "validation"))
    result = validation_accuracy(load_model(cfg.model), load_processor(cfg.model), records, cfg.data)
    for attribute in LEARNED_FIRST:
        assert result["attributes"][attribute]["accuracy"] <= 0.6  # far below what training reaches


def test_run_writes_adapter_curves_and_logs(trained):
    cfg, _ = trained
    from pathlib import Path

    out = Path(cfg.output)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 64
    assert "model.visual" in adapter["modules_to_save"]
    assert all("language_model" in t for t in [adapter["target_modules"]])
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 300


def test_config_overrides_and_validation(tmp_path):
    cfg = TrainConfig.from_yaml("finetune/configs/tiny-synthetic.yaml", ["lora.r=8", "max_steps=3"])
    assert cfg.lora.r == 8 and cfg.max_steps == 3 and cfg.train_vision_tower is True
    with pytest.raises(ConfigError, match="lora_rank"):
        TrainConfig.from_yaml(None, ["lora_rank=8"])
    with pytest.raises(ConfigError, match="method"):
        TrainConfig.from_yaml(None, ["method=qlora-ish"])
