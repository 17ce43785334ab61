"""`facellm demo --no-ui` end to end on a small budget: every stage runs and hands over through files and HTTP."""

import json
import subprocess
import sys

from serve.vllm_server import vllm_available


def test_demo_runs_the_whole_loop(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "facellm.cli", "demo", "--out", str(out), "--n", "200",
                             "--steps", "4", "--no-ui"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for path in ("data/dataset/dataset_dict.json", "data/sharegpt/train.jsonl", "tiny-qwen2-vl/model.safetensors",
                 "train/adapter/adapter_config.json", "train/curves.png", "eval/report.md", "eval/report.json"):
        assert (out / path).is_file(), path
    report = json.loads((out / "eval" / "report.json").read_text())
    assert set(report) == {"base", "tuned"}
    for run in report.values():
        assert set(run["attributes"]) == {"expression", "glasses", "skin_tone", "head_pose", "hair_color"}
        assert all(a["n"] == 10 for a in run["attributes"].values())  # 10 held-out images, one question each
        assert run["calibration"]["n"] == 50  # every answer came with token logprobs (vLLM's too)
        assert "identity" in run and "counterfactual" in run
    assert "| **mean** |" in result.stdout and "chance" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["base"] <= 1 and 0 <= summary["tuned"] <= 1
    assert (out / "tuned" / "model.safetensors").is_file()  # merged, so vLLM serves what was trained
    # where vLLM is installed (here: always, scripts/install.sh), the tuned model is served by it
    assert summary["engine"] == ("vllm" if vllm_available() else "transformers")
    if summary["engine"] == "vllm":
        assert "Application startup complete" in (out / "server.log").read_text()
