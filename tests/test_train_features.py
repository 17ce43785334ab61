"""Training beyond one run: kill + resume, data parallel across processes, merge, methods, pre-flight."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.export import export_all
from data_pipeline.templates import TemplateOptions
from facellm.errors import FacellmError
from facellm.generation import GenerationRequest, generate, prepare_inputs
from facellm.images import load_image
from facellm.modeling import load_model, load_processor
from facellm.records import load_split, load_splits
from finetune.config import TrainConfig
from finetune.train import train

RECIPE = "finetune/configs/tiny-synthetic.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("colours")
    build_synthetic(BuildConfig(out=out, n=120, val_size=8, test_size=8, seed=11,
                                templates=TemplateOptions(kinds=("attributes",), refusal_rate=0.0)))
    keep = ("skin_tone", "hair_color")
    export_all({s: [r for r in records if r["category"] in keep] for s, records in load_splits(out).items()}, out)
    return out


def settings(model, data, output, **extra):
    values = {"model": model, "data": data, "output": output, "batch_size": 8, "log_every": 1, "eval_every": 0,
              "eval_samples": 8, "seed": 3, "threads": 1, **extra}
    return [f"{k}={v}" for k, v in values.items()]


def losses(run_dir):
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
            if "loss" in r}


def cli(*args):
    return [sys.executable, "-m", "facellm.cli", "train", RECIPE, *(a for s in args for a in ("--set", s))]


def test_killed_run_resumes_to_the_same_losses(tiny_model_dir, data, tmp_path):
    whole = tmp_path / "whole"
    train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, whole, max_steps=60)))

    cut = tmp_path / "cut"
    proc = subprocess.Popen(cli(*settings(tiny_model_dir, data, cut, max_steps=60, save_every=20)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (cut / "checkpoints/step-20/done").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # a condition, not a timing bet
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (cut / "adapter").exists()

    train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, cut, max_steps=60, save_every=20)),
          resume=True)
    a, b = losses(whole), losses(cut)
    assert sorted(b) == list(range(1, 61))  # the log continues with no gap and no repeat
    for step in range(21, 61):
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    assert b[60] < a[1] / 2  # and it learned


def test_two_process_data_parallel_matches_one_process(tiny_model_dir, data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, one, max_steps=8)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "facellm.cli", "train", RECIPE]
    for s in settings(tiny_model_dir, data, two, max_steps=8):
        cmd += ["--set", s]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = losses(one), losses(two)
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    for step in range(1, 9):  # same global batches, loss = mean over all answer tokens of the step
        assert b[step] == pytest.approx(a[step], rel=2e-3), (step, a, b)


def accelerate_launch(config, *settings_, resume=False):
    """``accelerate launch`` with a shipped config, overriding only what two CPU processes need.

    Not ``--cpu``: accelerate then takes its simple launcher, which starts one process and drops the FSDP
    config; without it, it launches through torchrun with the config's variables, and each process, finding
    no GPU, joins with gloo. Port 0: accelerate picks a free one."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           f"finetune/configs/accelerate/{config}.yaml", "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_port", "0", "-m", "facellm.cli", "train", RECIPE, *(["--resume"] if resume else [])]
    for s in settings_:
        cmd += ["--set", s]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]


def test_shipped_fsdp_config_trains_saves_and_resumes_like_ddp_on_two_cpu_processes(tiny_model_dir, data, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    run = dict(max_steps=6, eval_every=2, save_every=3)  # validation at 2 and 4 runs mid-training, in step
    accelerate_launch("ddp", *settings(tiny_model_dir, data, ddp, **run))
    accelerate_launch("fsdp", *settings(tiny_model_dir, data, fsdp, **run))
    for out, kind in ((ddp, "MULTI_CPU"), (fsdp, "FSDP")):  # FSDP really sharded, not DDP under its name
        summary = json.loads((out / "summary.json").read_text())
        assert (summary["world_size"], summary["distributed_type"]) == (2, kind)
    # fp32, the same global batches and the same per-rank forward passes: only the order in which the
    # gradient collectives (all-reduce vs reduce-scatter) and the clipping norm sum differs, ~1e-7 relative
    # (measured <= 1.2e-7 over the 6 steps); clipping the pre-sharding parameters (a no-op) is 3e-4 off by step 3
    a, b = losses(ddp), losses(fsdp)
    assert sorted(b) == list(range(1, 7))
    for step in range(1, 7):
        assert b[step] == pytest.approx(a[step], rel=1e-5), (step, a, b)
    log = [json.loads(line) for line in (fsdp / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_accuracy" in r] == [2, 4, 6]

    # the adapter is whole (gathered from the shards on rank 0), loads, and holds what DDP trained
    ddp_weights = load_file(ddp / "adapter" / "adapter_model.safetensors")
    fsdp_weights = load_file(fsdp / "adapter" / "adapter_model.safetensors")
    assert sorted(fsdp_weights) == sorted(ddp_weights)
    assert {"lora_A", "lora_B", "visual", "embed_tokens", "lm_head"} <= {p for k in fsdp_weights for p in k.split(".")}
    for name, tensor in ddp_weights.items():
        torch.testing.assert_close(fsdp_weights[name], tensor, rtol=0, atol=2e-5, msg=name)
    assert max(t.abs().max() for k, t in fsdp_weights.items() if "lora_B" in k) > 1e-3  # it trained
    loaded = PeftModel.from_pretrained(load_model(tiny_model_dir), str(fsdp / "adapter")).state_dict()
    some_b = next(k for k in fsdp_weights if "lora_B" in k)
    assert torch.equal(loaded[some_b.replace(".weight", ".default.weight")], fsdp_weights[some_b])

    # SHARDED_STATE_DICT checkpoints (one shard per rank), and resuming from one continues to the same losses
    step3 = fsdp / "checkpoints" / "step-3"
    assert len(list((step3 / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(fsdp / "checkpoints", resumed / "checkpoints")
    shutil.copy(fsdp / "log.jsonl", resumed / "log.jsonl")
    accelerate_launch("fsdp", *settings(tiny_model_dir, data, resumed, **run), resume=True)
    c = losses(resumed)
    assert sorted(c) == list(range(1, 7))
    for step in range(4, 7):
        assert c[step] == pytest.approx(b[step], rel=1e-6), (step, b, c)
    resumed_weights = load_file(resumed / "adapter" / "adapter_model.safetensors")
    for name, tensor in fsdp_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_merged_model_answers_exactly_as_base_plus_adapter(tiny_model_dir, data, tmp_path):
    from peft import PeftModel

    from finetune.merge import merge

    run = tmp_path / "run"
    train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, run, max_steps=30)))
    merged = merge(tiny_model_dir, run / "adapter", tmp_path / "merged")
    processor = load_processor(tiny_model_dir)
    records = load_split(data, "test")
    requests = [GenerationRequest(r["messages"][:1], [load_image(p, data) for p in r["images"]], max_new_tokens=12)
                for r in records]
    with_adapter = PeftModel.from_pretrained(load_model(tiny_model_dir), str(run / "adapter")).eval()
    merged_model = load_model(merged).eval()
    expected = [g.text for g in generate(with_adapter, processor, requests)]
    assert [g.text for g in generate(merged_model, load_processor(merged), requests)] == expected
    inputs = prepare_inputs(processor, requests)
    with torch.no_grad():  # the same function, not just the same argmax
        a, b = with_adapter(**inputs).logits, merged_model(**inputs).logits
        base = load_model(tiny_model_dir).eval()(**inputs).logits
    assert torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, base, atol=1e-2)
    info = json.loads((run / "adapter" / "facellm_train.json").read_text())
    assert info["dataset"]["splits"]["train"] and info["metrics"]["steps"] == 30
    assert "Held-out accuracy" in (run / "adapter" / "README.md").read_text()


def test_rslora_dora_and_full_methods_train(tiny_model_dir, data, tmp_path):
    for name, extra in {"rslora": {"lora.use_rslora": "true"}, "dora": {"lora.use_dora": "true"},
                        "full": {"method": "full", "train_vision_tower": "false", "gradient_checkpointing": "true"}
                        }.items():
        summary = train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, tmp_path / name, max_steps=3,
                                                                eval_samples=0, **extra)))
        assert summary["steps"] == 3 and torch.isfinite(torch.tensor(summary["final_loss"])), name
    adapter = json.loads((tmp_path / "dora" / "adapter" / "adapter_config.json").read_text())
    assert adapter["use_dora"] is True
    assert (tmp_path / "full" / "model" / "model.safetensors").is_file()


def test_qlora_on_cpu_and_a_cutting_max_length_are_refused_before_training(tiny_model_dir, data, tmp_path):
    with pytest.raises(FacellmError, match="needs a CUDA GPU"):
        train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, tmp_path / "q", method="qlora")))
    with pytest.raises(FacellmError, match="would cut samples.*longest.*tokens per image size"):
        train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, tmp_path / "m", max_length=20)))
    assert not (tmp_path / "m" / "log.jsonl").exists() or not (tmp_path / "m" / "adapter").exists()


def test_resume_without_a_checkpoint_says_what_to_do(tiny_model_dir, data, tmp_path):
    with pytest.raises(FacellmError, match="save_every"):
        train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, tmp_path / "r")), resume=True)


def test_pixel_budget_is_the_same_in_training_merge_and_serving(tiny_model_dir, data, tmp_path):
    from facellm.families import family
    from facellm.modeling import pixel_kwargs, serving_max_model_len, serving_pixel_budget
    from finetune.merge import merge
    from serve.engine import EmbeddedEngine

    budget = 56 * 56  # 2x2 merged patches: 4 image tokens per face instead of 16 at 112x112
    run = tmp_path / "run"
    train(TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, run, max_steps=4, max_pixels=budget)))
    preflight = json.loads((run / "log.jsonl").read_text().splitlines()[0])["preflight"]
    assert preflight["image_tokens"] == {"112x112": 3}  # 4 image tokens replace the 1-token placeholder

    assert serving_pixel_budget(tiny_model_dir, [run / "adapter"]) == (None, budget)
    assert serving_pixel_budget(tiny_model_dir, [run / "adapter"], max_pixels=112 * 112) == (None, 112 * 112)
    merged = merge(tiny_model_dir, run / "adapter", tmp_path / "merged")
    assert json.loads((merged / "preprocessor_config.json").read_text())["size"]["longest_edge"] == budget
    assert serving_pixel_budget(merged, []) == (None, budget)  # the merged model carries its training record

    # vLLM's context from the pre-flight: the longest training chat + 1024 for answers, in steps of 256
    longest = json.loads((run / "summary.json").read_text())["longest_tokens"]
    assert serving_max_model_len(tiny_model_dir, [run / "adapter"]) == serving_max_model_len(merged, []) \
        == -(-(longest + 1024) // 256) * 256
    assert serving_max_model_len(tiny_model_dir, []) is None  # nothing trained here: the model's own

    image = load_image(load_split(data, "test")[0]["images"][0], data)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hair colour?"}]}]
    prompt_tokens = {}
    for name, pixels in {"full": None, "budget": budget}.items():
        engine = EmbeddedEngine(tiny_model_dir, {}, max_pixels=pixels)
        prompt_tokens[name] = engine.complete(engine.served_name, chat, [image], 2)[1]
        engine.close()
    assert prompt_tokens["full"] - prompt_tokens["budget"] == 12

    with pytest.raises(FacellmError, match="fixed size"):
        pixel_kwargs(family("llava"), max_pixels=budget)


def test_epochs_set_the_steps_the_schedule_and_the_run_record(tiny_model_dir, data, tmp_path):
    """``epochs: E`` over N chats with batch B and accumulation A trains ceil(E*N/(B*A)) steps (B is the whole
    step's batch, split across processes); warm-up and decay are fitted to that number, not to a max_steps."""
    run = tmp_path / "epochs"
    # the recipe sets max_steps: 1600; --set epochs replaces it
    cfg = TrainConfig.from_yaml(RECIPE, settings(tiny_model_dir, data, run, epochs=1.5, grad_accum=2,
                                                 lr_scheduler="linear", warmup_ratio=0.2, eval_samples=0))
    assert cfg.max_steps is None and cfg.epochs == 1.5
    summary = train(cfg)
    chats = len({r["images"][0] for r in load_split(data, "train")})  # one chat per image
    steps = -(-3 * chats // (2 * 8 * 2))  # ceil(1.5 * N / (8 * 2))
    assert summary["steps"] == steps and summary["epochs"] == round(steps * 16 / chats, 3)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[0]["steps"] == steps and log[0]["train_examples"] == chats
    lr = {r["step"]: r["lr"] for r in log if "lr" in r}
    assert max(lr) == steps  # the loop stops there
    warmup = int(0.2 * steps)
    assert lr[1] == pytest.approx(cfg.learning_rate / warmup) and lr[warmup] == pytest.approx(cfg.learning_rate)
    assert lr[steps] == pytest.approx(0.0)  # linear decay reaches zero exactly at the last step
    card = (run / "adapter" / "README.md").read_text()
    assert f"for {steps} steps\n({summary['epochs']} epochs of {chats} chats" in card
