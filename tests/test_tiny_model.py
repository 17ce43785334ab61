import json

import pytest

import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText, AutoProcessor

from facellm.families import FAMILIES, family
from facellm.generation import GenerationRequest, generate, prepare_inputs
from facellm.images import load_image
from facellm.modeling import load_model, load_processor
from facellm.records import chat


def test_tiny_model_is_saved_in_the_hub_layout(tiny_model_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
                 "generation_config.json"):
        assert (tiny_model_dir / name).is_file(), name
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl"
    text = config["text_config"]
    assert text["hidden_size"] // text["num_attention_heads"] >= 32  # vLLM CPU attention head sizes
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        assert any("visual" in k for k in f.keys()) and any(k.startswith("model.layers.") for k in f.keys())


def test_loads_through_the_auto_classes_and_generates(tiny_model_dir, face_png):
    processor = AutoProcessor.from_pretrained(str(tiny_model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model_dir))
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    ours = load_model(tiny_model_dir)
    for (name, a), b in zip(model.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(a, b), name
    request = GenerationRequest(chat("Describe this face."), [load_image(face_png)], max_new_tokens=6)
    answer, = generate(ours, load_processor(tiny_model_dir), [request])
    text, prompt_tokens, completion_tokens = answer.text, answer.prompt_tokens, answer.completion_tokens
    assert prompt_tokens > 16 and 1 <= completion_tokens <= 6
    # a batch gives each request the answer it gets alone (greedy, left padding)
    other = GenerationRequest(chat("What is the skin tone of the person in this picture?"),
                              [load_image(face_png)], max_new_tokens=6)
    assert generate(ours, processor, [request, other])[0][0] == text
    # logprobs: one per completion token, the first equal to a plain forward pass's for the greedy token
    scored = generate(ours, processor, [GenerationRequest(**{**vars(request), "logprobs": True}), other])
    assert scored[0].text == text and scored[1].logprobs is None
    assert len(scored[0].logprobs) == completion_tokens and "".join(t for t, _ in scored[0].logprobs).strip() == text
    inputs = prepare_inputs(processor, [request])
    with torch.no_grad():
        first = ours(**inputs).logits[0, -1].log_softmax(-1)
    assert scored[0].logprobs[0][1] == pytest.approx(first.max().item(), abs=1e-4)


def test_registry_lists_families_and_targets_only_the_language_model(tiny_model_dir):
    import re

    assert "qwen2_vl" in FAMILIES
    regex = family("qwen2_vl").lora_target_regex()
    names = [n for n, _ in load_model(tiny_model_dir).named_modules() if re.match(regex, n)]
    assert len(names) == 2 * 7 and all(".language_model." in n for n in names)
