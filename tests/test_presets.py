"""Presets (the published checkpoints' shapes, offline) and the training memory estimate: on the meta device,
no weights allocated."""

import json
import re

import pytest

from facellm.cli import main
from facellm.errors import FacellmError
from facellm.families import family
from facellm.presets import PRESETS, build_preset, meta_model, parameter_count, preset, preset_config
from finetune.config import TrainConfig
from finetune.estimate import GiB, PROCESS_BYTES, estimate

REAL = [p for p in PRESETS.values() if not p.tiny]


@pytest.mark.parametrize("p", REAL, ids=lambda p: p.name)
def test_real_presets_have_the_published_parameter_counts(p):
    count = parameter_count(meta_model(preset_config(p)))
    assert abs(count / p.published_parameters - 1) < 0.03, (count, p.published_parameters)


def test_the_required_checkpoints_and_every_tiny_model_are_presets():
    copied = {p.hub_id for p in REAL}
    assert {"HuggingFaceTB/SmolVLM-256M-Instruct", "OpenGVLab/InternVL3-1B-hf", "Qwen/Qwen2-VL-2B-Instruct"} <= copied
    assert {f"tiny-{name}" for name in ("qwen2_vl", "internvl", "smolvlm", "gemma3")} <= set(PRESETS)


# image tokens a square face crop costs with the published processors: SmolVLM 4x4 tiles of 512 + the whole
# image, 64 each; InternVL3 one 448 tile, 256; Qwen2-VL 112x112 in 28x28 merged patches, 16
@pytest.mark.parametrize("name, side, image_tokens", [("smolvlm-256m", 224, 17 * 64), ("internvl3-1b", 224, 256),
                                                      ("qwen2-vl-2b", 112, 16)])
def test_a_written_preset_has_the_published_shapes_and_image_tokens(tmp_path, name, side, image_tokens):
    from PIL import Image
    from transformers import AutoConfig

    from facellm.modeling import load_processor

    p = preset(name)
    build_preset(p, tmp_path, weights=False)  # config and processors over the tiny model; weights on the meta device
    written = parameter_count(meta_model(AutoConfig.from_pretrained(tmp_path)))
    assert written == parameter_count(meta_model(preset_config(p)))
    processor = load_processor(tmp_path)
    image_id = processor.tokenizer.convert_tokens_to_ids(family(p.family).image_token)
    ids = processor(text=[family(p.family).image_token], images=[Image.new("RGB", (side, side))])["input_ids"][0]
    assert list(ids).count(image_id) == image_tokens
    assert json.loads((tmp_path / "facellm_preset.json").read_text())["vocab_size"] == p.text["vocab_size"]


def test_estimate_adds_weights_gradients_adam_and_activations():
    p = preset("smolvlm-256m")
    config = preset_config(p)
    h, i, kv, layers, vocab, r = 576, 1536, 192, 30, 49280, 16
    cfg = TrainConfig(method="lora")
    chats, longest = 2, 300
    tokens = chats * longest
    est = estimate(config, cfg, family(p.family), chats, longest, image_tokens=2 * 64)
    # LoRA r16 on q, k, v, o, gate, up, down of every layer: r x (in + out) each
    lora = layers * r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))
    assert est.trainable == lora == 4_884_480
    assert est.weights == 4 * est.parameters and est.gradients == 4 * lora and est.optimizer == 8 * lora
    logits = 3 * tokens * vocab * 4
    per_layer = 10 * h + 4 * i + (6 * h + i)  # + LoRA dropout's copy of each adapted projection's input
    mask = chats * longest ** 2  # padded chats: each layer's SDPA keeps a float copy of the attention mask
    assert est.activations["no", False] == (tokens * layers * per_layer + layers * mask) * 4 + logits
    assert est.activations["bf16", False] == (tokens * layers * per_layer + layers * mask) * 2 + logits
    assert est.activations["no", True] == (tokens * (layers * h + per_layer) + mask) * 4 + logits
    one = estimate(config, cfg, family(p.family), 1, longest, image_tokens=64)  # nothing padded, no mask
    assert one.activations["no", False] == longest * layers * per_layer * 4 + 3 * longest * vocab * 4
    assert est.peak("no", False) == PROCESS_BYTES + est.weights + est.gradients + est.optimizer + est.activations[
        "no", False]
    # one micro-batch trains while each loader worker collates 2 ahead; grad_accum adds none
    held = estimate(config, TrainConfig(method="lora", grad_accum=4, dataloader_workers=2), family(p.family), chats,
                    longest, 128, input_bytes=100e6)
    assert held.inputs == 500e6 and held.peak("no", False) == est.peak("no", False) + 500e6
    full = estimate(config, TrainConfig(method="full"), family(p.family), chats, longest, 128)
    vision_side = sum(q.numel() for n, q in meta_model(config).named_parameters()
                      if n.startswith(("model.vision_model.", "model.connector.")))
    assert full.trainable == full.parameters - vision_side  # language model and LM head; vision side frozen
    assert full.activations["no", False] == (tokens * layers * (10 * h + 4 * i) + layers * mask) * 4 + logits


def test_estimate_on_a_recipe_prints_the_table_and_whether_it_fits(tiny_model_dir, tmp_path, capsys):
    from data_pipeline.build import BuildConfig, build_synthetic

    build_synthetic(BuildConfig(out=tmp_path / "d", n=8, val_size=1, test_size=1))
    code = main(["train", "finetune/configs/tiny-synthetic.yaml", "--model", str(tiny_model_dir), "--data",
                 str(tmp_path / "d"), "--output", str(tmp_path / "run"), "--estimate", "--set", "grad_accum=4",
                 "--set", "dataloader_workers=1"])
    out = capsys.readouterr().out
    assert code == 0 and not (tmp_path / "run" / "log.jsonl").exists()  # nothing trained
    held = float(re.search(r"3 collated micro-batches ([0-9.]+) GiB", out)[1])  # 1 training, 2 collated ahead
    # 3 micro-batches x 32 chats x one 112x112 face: 64 patches of 2 x 3 x 14 x 14 fp32 pixels (0.3 MB) each
    assert held == pytest.approx(3 * 32 * 64 * 2 * 3 * 14 * 14 * 4 / GiB, abs=0.006)
    assert "| no | no |" in out and "| bf16 | yes |" in out and "<- this recipe" in out
    assert "CPU RAM (available)" in out and "fits" in out


def test_estimate_refuses_a_dataset_with_broken_rows(tiny_model_dir, tmp_path, face_png, capsys):
    rows = [{"messages": [{"role": "user", "content": "<image>How old?"}, {"role": "assistant", "content": "30"}],
             "images": [str(face_png)]},
            {"messages": [{"role": "user", "content": "<image>How old?"}, {"role": "assistant", "content": "40"}],
             "images": [str(tmp_path / "missing.png")]}]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--estimate"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "1 of 2 rows cannot train" in err and "missing.png" in err


def test_init_model_names_an_unknown_preset_and_refuses_one_that_does_not_fit(tmp_path, monkeypatch, capsys):
    assert main(["init-model", "--preset", "gpt-9", "--out", str(tmp_path / "m")]) == 2
    assert "unknown preset 'gpt-9'" in capsys.readouterr().err
    monkeypatch.setattr("facellm.presets.available_ram", lambda: 1 * GiB)
    assert main(["init-model", "--preset", "qwen2-vl-2b", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "qwen2-vl-2b needs about 8.2 GiB" in err and "1.0 GiB available" in err
    assert not (tmp_path / "m").exists()  # refused before writing anything


def test_init_model_lists_presets_with_their_sizes(capsys):
    assert main(["init-model", "--list"]) == 0
    out = capsys.readouterr().out
    assert "smolvlm-256m" in out and "256 M" in out and "2,209 M" in out and "tiny-qwen2_vl" in out


def test_an_unknown_preset_is_a_facellm_error():
    with pytest.raises(FacellmError, match="presets: tiny-qwen2_vl"):
        preset("nope")
