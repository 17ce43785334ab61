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


def test_size_table_puts_each_run_beside_its_baseline_and_its_estimate():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import sizes
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    row = {"parameters": 256_500_000,
           "lora": {"tokens_per_s_in_loop": 40.0, "seconds_per_step": 6.0, "peak_mib": 4000.0, "estimate_mib": 3600.0},
           "full": {"estimate_mib": 30000.0, "skipped": "needs 29.3 GiB, 21.8 GiB available"},
           "trainer": {"tokens_per_s_in_loop": 50.0, "seconds_per_step": 5.0, "peak_mib": 3900.0},
           "generate": {"images_per_s": 0.5, "peak_mib": 2000.0},
           "vllm": {"images_per_s": 0.6, "peak_mib": 5600.0}}  # no checkpointing run: left out, no line
    lines = sizes.report({"results": {"smolvlm-256m": row}}).splitlines()[2:]
    assert lines == [
        "| smolvlm-256m | 256.5 M | lora | 40.00 tokens/s | 0.80x | 6.00 | 4,000 | 3,600 (0.90) |",
        "| smolvlm-256m | 256.5 M | full | needs 29.3 GiB, 21.8 GiB available | | | | |",
        "| smolvlm-256m | 256.5 M | Trainer, LoRA | 50.00 tokens/s |  | 5.00 | 3,900 |  |",
        "| smolvlm-256m | 256.5 M | generate | 0.50 images/s |  |  | 2,000 |  |",
        "| smolvlm-256m | 256.5 M | vllm | 0.60 images/s | 1.20x |  | 5,600 |  |"]
