"""Datasets other tools read unchanged, from anywhere: TRL's SFTTrainer trains on a moved copy of the HF
dataset and of the Parquet (images embedded) from an unrelated working directory; ShareGPT/LLaVA exports
resolve their images the way LLaMA-Factory does after the folder moves; pushing where no hub answers is a
one-line error.
"""

import json
import shutil
import subprocess
import sys

import pytest
import trl
from PIL import Image

from data_pipeline.build import BuildConfig, build_synthetic
from facellm.records import load_split


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("interop") / "faces"
    build_synthetic(BuildConfig(out=out, n=16, val_size=2, test_size=2, seed=5))
    return out


@pytest.fixture(scope="module")
def moved(built, tmp_path_factory):
    """The dataset's HF and Parquet folders copied elsewhere without the images folder."""
    away = tmp_path_factory.mktemp("elsewhere") / "copy"
    away.mkdir()
    for part in ("dataset", "parquet"):
        shutil.copytree(built / part, away / part)
    return away


def sft_prompt_and_losses(dataset, model_dir, out) -> tuple[str, list[float]]:
    """Two SFTTrainer steps on ``dataset`` as it is; the first example's prompt as the trainer's collator
    renders it, and the losses."""
    from facellm.modeling import load_model, load_processor

    processor = load_processor(model_dir)
    args = trl.SFTConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=2, report_to=[],
                         logging_steps=1, save_strategy="no", use_cpu=True)
    trainer = trl.SFTTrainer(model=load_model(model_dir), args=args, train_dataset=dataset,
                             processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    prompt = processor.tokenizer.decode(batch["input_ids"][0])
    try:
        trainer.train()
    finally:  # the Trainer leaves accelerate's process-wide state set up its way; later tests train facellm's way
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    return prompt, [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("form", ["hf", "parquet"])
def test_trl_trains_on_a_moved_copy_from_an_unrelated_directory(form, built, moved, tiny_model_dir, tmp_path,
                                                               monkeypatch):
    import datasets

    monkeypatch.chdir(tmp_path)  # neither the dataset folder nor its parent
    if form == "hf":
        train = datasets.load_from_disk(str(moved / "dataset"))["train"]
    else:
        train = datasets.load_dataset("parquet", data_files=str(moved / "parquet" / "train.parquet"), split="train")
    record = load_split(built, "train")[0]
    assert train[0]["images"][0].tobytes() == Image.open(built / record["images"][0]).convert("RGB").tobytes()
    prompt, losses = sft_prompt_and_losses(train.select(range(8)), tiny_model_dir, tmp_path / "sft")
    question = record["messages"][0]["content"][1]["text"]
    assert prompt.startswith("<|im_start|>user\n<|vision_start|><|image_pad|>")  # the image, as image tokens
    assert f"<|vision_end|>{question}<|im_end|>" in prompt and "<image>" not in prompt
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_sharegpt_and_llava_paths_resolve_after_the_folder_moves(built, tmp_path):
    """LLaMA-Factory joins its media_dir (default: the folder of dataset_info.json) with each image path and
    refuses paths outside it; LLaVA joins --image_folder. Both still find every image in a moved copy."""
    away = tmp_path / "moved"
    shutil.copytree(built, away)
    info = json.loads((away / "dataset_info.json").read_text())
    for name, entry in info.items():
        rows = [json.loads(line) for line in (away / entry["file_name"]).read_text().splitlines()]
        paths = [p for row in rows for p in row["images"]]
        assert paths and all((away / p).resolve().is_relative_to(away.resolve()) for p in paths)
        assert all((away / p).is_file() for p in paths), name
    llava = json.loads((away / "llava" / "train.json").read_text())
    assert all((away / row["image"]).is_file() for row in llava)


def test_absolute_paths_export_reads_from_any_working_directory(built, tmp_path):
    out = tmp_path / "abs"
    result = subprocess.run([sys.executable, "-m", "facellm.cli", "data", "export", str(built), "--formats",
                             "sharegpt", "--out", str(out), "--absolute-paths"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (out / "sharegpt" / "train.jsonl").read_text().splitlines()]
    records = load_split(built, "train")
    assert [row["images"] for row in rows] == [[str((built / p).resolve()) for p in r["images"]] for r in records]


def test_push_where_no_hub_answers_is_a_one_line_error(built, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "x"}
    result = subprocess.run([sys.executable, "-m", "facellm.cli", "data", "push", str(built), "me/faces"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"facellm: error: cannot push {built} to me/faces: the Hub at http://127.0.0.1:9 is not reachable "
        "([Errno 111] Connection refused)")
