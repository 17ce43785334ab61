"""Shared fixtures: a tiny real model built offline once per test session."""

from pathlib import Path

import facellm  # noqa: F401  (patches torchvision before anything imports transformers)
import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from facellm.tiny_models.qwen import build_tiny_qwen2_vl

    out = tmp_path_factory.mktemp("tiny-qwen2-vl")
    build_tiny_qwen2_vl(out)
    return out


@pytest.fixture(scope="session")
def lora_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A PEFT LoRA adapter on the language model's q/v projections, the kind vLLM serves."""
    import torch
    from peft import LoraConfig, get_peft_model

    from facellm.modeling import load_model

    torch.manual_seed(0)
    # init_lora_weights=False: random A and B, so the adapter really changes the answers
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    out = tmp_path_factory.mktemp("lora")
    get_peft_model(load_model(tiny_model_dir), config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_endpoint(tiny_model_dir):
    """The tiny model, served as "base" by the embedded engine behind the real HTTP API on 127.0.0.1."""
    from serve.api import start_in_thread
    from serve.engine import EmbeddedEngine

    engine = EmbeddedEngine(tiny_model_dir, {}, served_name="base")
    url, stop = start_in_thread(engine, "127.0.0.1", 0)
    yield url
    stop()
    engine.close()


@pytest.fixture(scope="session")
def face_png(tmp_path_factory) -> Path:
    """A small drawn face (head, eyes, smile) saved as PNG."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 112), (90, 140, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((18, 14, 78, 98), fill=(225, 185, 150))
    for x in (34, 56):
        draw.ellipse((x, 44, x + 8, 50), fill=(40, 30, 30))
    draw.arc((34, 62, 62, 82), start=20, end=160, fill=(150, 40, 40), width=3)
    path = tmp_path_factory.mktemp("images") / "face.png"
    image.save(path)
    return path
