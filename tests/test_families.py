"""Every registered VLM family: its tiny model builds offline, loads through the Auto classes, gets an exact
assistant-only label mask, and learns the synthetic faces from chance to well above it."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from data_pipeline.build import BuildConfig, build_synthetic
from data_pipeline.export import export_all
from data_pipeline.templates import TemplateOptions
from facellm.families import FAMILIES, family
from facellm.generation import GenerationRequest, generate
from facellm.images import load_image
from facellm.records import load_split, load_splits
from finetune.collator import IGNORE, ChatCollator, group_by_image
from finetune.config import TrainConfig
from finetune.train import train

COLOURS = ("skin_tone", "hair_color")  # what a tiny model learns first; chance 1/3 and 1/4
FLOORS = {"skin_tone": 0.75, "hair_color": 0.5}  # chance 0.33 and 0.25; hair varies ±0.2 across seeds


@pytest.fixture(scope="session")
def colour_data(tmp_path_factory):
    """Synthetic faces asked only about skin tone and hair colour."""
    out = tmp_path_factory.mktemp("colours")
    build_synthetic(BuildConfig(out=out, n=440, val_size=40, test_size=1, seed=7,
                                templates=TemplateOptions(kinds=("attributes",), refusal_rate=0.0)))
    export_all({s: [r for r in records if r["category"] in COLOURS] for s, records in load_splits(out).items()}, out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, colour_data):
    texts = [m["content"] for line in (colour_data / "sharegpt" / "train.jsonl").open()
             for m in json.loads(line)["messages"]]
    built = {}

    def get(model_type: str):
        if model_type not in built:
            built[model_type] = tmp_path_factory.mktemp(model_type)
            family(model_type).build_tiny(built[model_type], texts, 0)
        return built[model_type]

    return get


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_tiny_model_loads_through_the_auto_classes_and_generates(model_type, tiny_models, colour_data):
    model_dir = tiny_models(model_type)
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == model_type
    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir)).eval()
    records = load_split(colour_data, "validation")[:2]
    requests = [GenerationRequest(r["messages"][:1], [load_image(p, colour_data) for p in r["images"]],
                                  max_new_tokens=5) for r in records]
    answers = generate(model, processor, requests)
    assert len(answers) == 2 and all(isinstance(a.text, str) for a in answers)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_labels_cover_exactly_the_assistant_answers(model_type, tiny_models, colour_data):
    processor = AutoProcessor.from_pretrained(str(tiny_models(model_type)))
    chat = group_by_image(load_split(colour_data, "train")[:2], __import__("random").Random(0))[0]
    answers = [m["content"][0]["text"] for m in chat["messages"] if m["role"] == "assistant"]
    assert len(answers) == 2
    batch = ChatCollator(processor, colour_data)([chat])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    labelled = (labels != IGNORE).nonzero().flatten().tolist()
    assert torch.equal(labels[labelled], ids[labelled])
    runs, run = [], [labelled[0]]
    for i in labelled[1:]:
        if i == run[-1] + 1:
            run.append(i)
        else:
            runs.append(run)
            run = [i]
    runs.append(run)
    assert len(runs) == len(answers)  # one run per answer, nothing in the user turns
    tok = processor.tokenizer
    for run, answer in zip(runs, answers):
        # "Assistant: {answer}" templates (Idefics3, SmolVLM, LLaVA) end the generation prompt before the space,
        # which byte-level BPE folds into the answer's first token: the model learns to emit it
        text = tok.decode(ids[run], skip_special_tokens=False).removeprefix(" ")
        assert text.startswith(answer), (text, answer)  # the answer, then only the end-of-turn marker
        end = text[len(answer):]
        assert len(tok(end, add_special_tokens=False)["input_ids"]) <= 2, end


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_training_lifts_held_out_accuracy_well_above_chance(model_type, tiny_models, colour_data, tmp_path):
    cfg = TrainConfig.from_yaml("finetune/configs/tiny-synthetic.yaml", [
        f"model={tiny_models(model_type)}", f"data={colour_data}", f"output={tmp_path / 'run'}",
        "max_steps=300", "batch_size=16", "eval_every=0", "eval_samples=80", "log_every=10", "seed=0",
        "group_by_length=true",  # the setting every family's floor was measured with
    ])
    summary = train(cfg)
    for attribute, floor in FLOORS.items():
        assert summary["validation"][attribute] >= floor, (model_type, summary["validation"])


RECIPES = {"facellm-internvl3-1b": "internvl", "qwen2.5-vl-3b-lora": "qwen2_5_vl", "smolvlm-256m-cpu": "smolvlm"}


@pytest.mark.parametrize("recipe, model_type", RECIPES.items())
def test_each_recipe_runs_unchanged_on_its_familys_tiny_model(recipe, model_type, tiny_models, colour_data, tmp_path):
    """Only the model (a hub id in the recipe), the data and the length change; bf16 becomes fp32 on CPU."""
    path = f"finetune/configs/{recipe}.yaml"
    cfg = TrainConfig.from_yaml(path, [f"model={tiny_models(model_type)}", f"data={colour_data}",
                                       f"output={tmp_path}", "max_steps=2", "eval_samples=4",
                                       "mixed_precision=no", "save_every=0"])
    recipe_cfg = TrainConfig.from_yaml(path)
    summary = train(cfg)
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (recipe_cfg.lora.r, recipe_cfg.lora.alpha)
    assert not adapter["modules_to_save"]  # vision tower and projector stay frozen, as the recipe says
    assert summary["steps"] == 2 and recipe_cfg.model.count("/") == 1
