"""The GPU benchmark stays runnable where no GPU is: the same path on the tiny preset, on CPU (issue 19)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_the_tiny_preset_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, "benchmarks/gpu.py", "--presets", "tiny-qwen2_vl", "--steps", "2",
                             "--batch-size", "2", "--images", "4", "--peak-tflops", "1", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["device"] == "CPU (no CUDA device)" and r["peak_tflops"] == 1
    row = r["results"]["tiny-qwen2_vl"]
    for loop in ("facellm", "trainer"):
        rate = row[loop]["tokens_per_s_in_loop"]
        assert rate > 0 and row[loop]["peak_mib"] > 0
        assert row[loop]["mfu"] == 4 * row["language_parameters"] * rate / 1e12  # against the given peak
    assert row["generate"]["images_per_s"] > 0
    assert "| tiny-qwen2_vl |" in result.stdout and "device: CPU (no CUDA device)" in result.stdout
