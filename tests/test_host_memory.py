"""Freed tensor memory goes back to the OS on CPU training runs (facellm/host_memory.py), in fresh processes:
glibc's malloc settings are per process."""

import subprocess
import sys

# A 30 MiB block mapped and freed raises glibc's threshold past 5 MiB; then 100 blocks of 5 MiB, as a step's
# activations, all freed but the last, which pins the heap's top. Prints the RSS (MiB) that stays held.
FRAGMENT = """
import torch
def rss():
    import os
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
big = torch.ones(30 << 18); del big
start = rss()
blocks = [torch.ones(5 << 18) for _ in range(100)]
del blocks[:-1]
print((rss() - start) >> 20)
"""


def held_mib(setup: str) -> int:
    out = subprocess.run([sys.executable, "-c", setup + FRAGMENT], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_freed_activations_stay_held_by_default_and_go_back_once_asked():
    assert held_mib("") >= 400  # glibc's heap keeps the 99 freed blocks
    assert held_mib("from facellm.host_memory import return_freed_memory\nassert return_freed_memory()\n") < 50


def test_a_cpu_training_run_asks_for_it(tiny_model_dir, tmp_path):
    from data_pipeline.build import BuildConfig, build_synthetic

    build_synthetic(BuildConfig(out=tmp_path / "d", n=4, val_size=1, test_size=1))
    run = (f"from finetune.config import TrainConfig\nfrom finetune.train import train\n"
           f"train(TrainConfig.from_yaml('finetune/configs/tiny-synthetic.yaml', ['model={tiny_model_dir}', "
           f"'data={tmp_path / 'd'}', 'output={tmp_path / 'run'}', 'max_steps=1', 'batch_size=2', "
           f"'eval_samples=0', 'save_every=0']))\n")
    assert held_mib(run) < 50
