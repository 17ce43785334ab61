"""The embedded engine behind the real HTTP API, driven with the `openai` client, on a tiny real model."""

import base64
import json
import logging
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from facellm.images import load_image, to_data_url
from facellm.schema import json_schema
from serve.api import start_in_thread
from serve.engine import EmbeddedEngine
from serve.guard import GuardSettings

MAX_TOKENS = 12  # short answers keep the tests fast; greedy decoding makes them reproducible
ADAPTER = "face-lora"


@pytest.fixture(scope="module")
def engine(tiny_model_dir, lora_adapter_dir):
    # a long batch window, so concurrent test requests reliably meet in one batch
    engine = EmbeddedEngine(tiny_model_dir, {ADAPTER: lora_adapter_dir}, batch_wait_ms=100)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def base_url(engine, face_png):
    url, stop = start_in_thread(engine, "127.0.0.1", 0, GuardSettings(local_media_dir=str(face_png.parent)))
    yield url
    stop()


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def face_url(face_png):
    return to_data_url(load_image(face_png))


def ask(client, model, image_url, question="Describe the face.", **kwargs):
    kwargs = {"max_tokens": MAX_TOKENS, **kwargs}
    return client.chat.completions.create(
        model=model, temperature=0,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                               {"type": "text", "text": question}]}],
        **kwargs)


def test_models_lists_base_and_adapters(client, engine, tiny_model_dir):
    assert engine.served_name == tiny_model_dir.name
    assert [m.id for m in client.models.list()] == [engine.served_name, ADAPTER]


def test_chat_with_data_url_image(client, engine, face_url):
    response = ask(client, engine.served_name, face_url)
    assert isinstance(response.choices[0].message.content, str) and response.choices[0].message.content
    usage = response.usage
    assert usage.prompt_tokens > 16  # the image alone is 16 tokens in the tiny model
    assert 0 < usage.completion_tokens <= MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert response.choices[0].finish_reason in ("stop", "length")


def test_file_path_image_answers_like_its_data_url(client, engine, face_png, face_url):
    assert ask(client, engine.served_name, str(face_png)).choices[0].message.content == \
        ask(client, engine.served_name, face_url).choices[0].message.content


def test_server_paths_are_refused_unless_allowed(engine, face_png, base_url):
    from bad_inputs import post_chat

    status, body = post_chat(base_url, engine.served_name, "/etc/hostname")  # outside the allowed folder
    assert status == 400 and "outside the folder this server reads images from" in body["error"]["message"]
    url, stop = start_in_thread(engine)  # the default: data URLs only
    try:
        status, body = post_chat(url, engine.served_name, str(face_png))
    finally:
        stop()
    assert status == 400 and "server file paths are not accepted here" in body["error"]["message"]


def test_multi_turn_with_system_prompt_and_string_content(client, engine, face_url):
    response = client.chat.completions.create(model=engine.served_name, max_tokens=MAX_TOKENS, messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": face_url}},
                                     {"type": "text", "text": "Describe the face."}]},
        {"role": "assistant", "content": "A smiling person."},
        {"role": "user", "content": "Is the person wearing glasses?"}])
    assert response.choices[0].message.content


def test_stream_concatenates_to_the_greedy_answer(client, engine, face_url):
    whole = ask(client, engine.served_name, face_url)
    chunks = list(ask(client, engine.served_name, face_url, stream=True))
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"  # cut at MAX_TOKENS
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content


def test_a_stream_the_client_closes_stops_generating(engine, base_url):
    """Stop in a chat UI closes the stream: the engine ends that answer (no more forward passes for it) and
    answers the next request at once, instead of finishing 1,500 tokens nobody reads."""
    import httpx

    steps = []
    handle = engine.model.register_forward_hook(lambda *args: steps.append(1))
    body = {"model": engine.served_name, "max_tokens": 1500, "messages": [{"role": "user", "content": "Go on."}]}
    try:
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json={**body, "stream": True}) as stream:
            lines = stream.iter_lines()
            for _ in range(6):  # the role chunk and a few deltas, then the client goes away
                next(lines)
        answer = httpx.post(f"{base_url}/v1/chat/completions", json={**body, "max_tokens": 2}, timeout=60).json()
    finally:
        handle.remove()
    assert answer["usage"]["completion_tokens"] == 2
    assert len(steps) < 100, f"{len(steps)} forward passes: the closed stream kept generating"


def test_adapter_changes_the_answer(client, engine, face_url):
    base = ask(client, engine.served_name, face_url).choices[0].message.content
    tuned = ask(client, ADAPTER, face_url).choices[0].message.content
    assert tuned and tuned != base
    # switching back to the base model really disables the adapter
    assert ask(client, engine.served_name, face_url).choices[0].message.content == base


def test_concurrent_requests_are_batched_without_changing_answers(client, engine, face_url, caplog):
    caplog.set_level(logging.DEBUG, logger="serve.engine")
    gray_url = to_data_url(load_image(face_url).convert("L").convert("RGB"))
    requests = [(url, question) for url in (face_url, gray_url)
                for question in ("Describe the face.", "What is the expression?", "Glasses?",
                                 "How old is the person and what is their head pose?")]
    alone = [ask(client, engine.served_name, url, q).choices[0].message.content for url, q in requests]
    caplog.clear()
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: ask(client, engine.served_name, *r).choices[0].message.content, requests))
    assert together == alone  # left padding leaves greedy answers of the tiny model unchanged
    batch_sizes = [int(n) for n in re.findall(r"running (\d+) request", caplog.text)]
    assert sum(batch_sizes) == len(requests) and max(batch_sizes) > 1


def test_unreadable_image_is_400_naming_the_input(client, engine):
    bad = "data:image/png;base64," + base64.b64encode(b"these bytes are no image").decode()
    with pytest.raises(openai.BadRequestError) as error:
        ask(client, engine.served_name, bad)
    assert error.value.status_code == 400
    assert "messages[0].content[0].image_url: data URL (data:image/png;base64): not a readable image" \
        in error.value.body["message"]
    assert error.value.body["code"] == "invalid_image"


def test_remote_image_url_is_refused(client, engine):
    with pytest.raises(openai.BadRequestError, match="remote URLs are not fetched") as error:
        ask(client, engine.served_name, "http://example.com/face.jpg")
    assert "http://example.com/face.jpg" in error.value.body["message"]


def test_unknown_model_is_404(client, face_url):
    with pytest.raises(openai.NotFoundError) as error:
        ask(client, "no-such-model", face_url)
    assert error.value.body["code"] == "model_not_found"


def _get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_key_is_required_on_every_v1_route(engine, face_url):
    url, stop = start_in_thread(engine, "127.0.0.1", 0, GuardSettings(api_key="s3cret"))
    try:
        assert _get(f"{url}/health")[0] == 200  # health stays open for probes
        status, body = _get(f"{url}/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert _get(f"{url}/v1/models", {"Authorization": "Bearer wrong"})[0] == 401
        with pytest.raises(openai.AuthenticationError):
            ask(openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0), engine.served_name, face_url)

        keyed = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in keyed.models.list()] == engine.models()
        assert ask(keyed, engine.served_name, face_url).choices[0].message.content
    finally:
        stop()


ATTRIBUTES = json_schema(("expression", "glasses", "hair_color"))


def test_json_schema_output_parses_validates_and_batches_apart(client, engine, face_url):
    response_format = {"type": "json_schema", "json_schema": {"name": "attributes", "schema": ATTRIBUTES}}

    def constrained():
        reply = ask(client, ADAPTER, face_url, "Attributes as JSON.", response_format=response_format, max_tokens=200)
        return json.loads(reply.choices[0].message.content)

    record = constrained()
    jsonschema.validate(record, ATTRIBUTES)
    # concurrent constrained and free requests: each kind gets its own batch, answers unchanged
    free = ask(client, ADAPTER, face_url).choices[0].message.content
    with ThreadPoolExecutor(6) as pool:
        mixed = [pool.submit(constrained if i % 2 else (lambda: ask(client, ADAPTER, face_url).choices[0]
                                                        .message.content)) for i in range(6)]
        results = [f.result() for f in mixed]
    assert results == [free, record] * 3
    as_object = ask(client, ADAPTER, face_url, response_format={"type": "json_object"}, max_tokens=64)
    assert as_object.choices[0].finish_reason == "length" or isinstance(
        json.loads(as_object.choices[0].message.content), dict)


def test_unusable_schema_and_too_many_images_are_400(client, engine, face_url):
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    with pytest.raises(openai.BadRequestError, match="response_format"):
        ask(client, ADAPTER, face_url, response_format=bad_schema)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": face_url}}] * 5
                 + [{"type": "text", "text": "Compare."}]}]
    with pytest.raises(openai.BadRequestError, match="5 images in one request; this server allows 4") as error:
        client.chat.completions.create(model=ADAPTER, messages=messages, max_tokens=4)
    assert error.value.body["code"] == "too_many_images"


def test_logprobs_cover_the_answer_tokens_and_match_a_forward_pass(client, engine, face_url, face_png):
    import torch

    from facellm.generation import GenerationRequest, prepare_inputs
    from facellm.records import chat

    response = ask(client, engine.served_name, face_url, logprobs=True)
    tokens = response.choices[0].logprobs.content
    assert len(tokens) == response.usage.completion_tokens
    assert "".join(t.token for t in tokens).strip() == response.choices[0].message.content
    assert all(t.logprob <= 0 and t.bytes == list(t.token.encode()) for t in tokens)
    # the first answer token's log-probability is the greedy maximum of the model's next-token distribution
    # (computed here while the engine's worker is idle: no request is in flight)
    inputs = prepare_inputs(engine.processor, [GenerationRequest(chat("Describe the face."), [load_image(face_png)])])
    with torch.no_grad(), engine.model.disable_adapter():
        expected = engine.model(**inputs).logits[0, -1].log_softmax(-1).max().item()
    assert tokens[0].logprob == pytest.approx(expected, abs=1e-4)
    assert ask(client, engine.served_name, face_url).choices[0].logprobs is None  # only when asked
    with pytest.raises(openai.BadRequestError, match="non-streaming"):
        ask(client, engine.served_name, face_url, logprobs=True, stream=True)
    # alternatives: most likely first; greedy decoding chose the most likely one
    ranked = ask(client, engine.served_name, face_url, logprobs=True, top_logprobs=3).choices[0].logprobs.content
    assert [t.token for t in ranked] == [t.token for t in tokens]
    for t in ranked:
        assert len(t.top_logprobs) == 3 and [a.logprob for a in t.top_logprobs] == sorted(
            (a.logprob for a in t.top_logprobs), reverse=True)
        assert (t.top_logprobs[0].token, t.top_logprobs[0].logprob) == pytest.approx((t.token, t.logprob))
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        ask(client, engine.served_name, face_url, logprobs=True, top_logprobs=21)


def test_a_full_queue_is_503_with_retry_after_and_the_server_keeps_serving(tiny_model_dir, face_url):
    """The worker is held inside its first batch (a forward pre-hook waiting on an event), so the queue's
    state is known exactly: one request running, two waiting (max_queue=2), the fourth refused."""
    import threading
    import time

    engine = EmbeddedEngine(tiny_model_dir, max_batch_size=1, max_queue=2, batch_wait_ms=0)
    entered, release = threading.Event(), threading.Event()

    def hold(module, args):
        entered.set()
        release.wait()

    handle = engine.model.register_forward_pre_hook(hold)
    url, stop = start_in_thread(engine)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    try:
        with ThreadPoolExecutor(3) as pool:
            running = pool.submit(ask, client, engine.served_name, face_url)
            assert entered.wait(30)
            waiting = [pool.submit(ask, client, engine.served_name, face_url) for _ in range(2)]
            deadline = time.monotonic() + 30
            while len(engine._pending) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(openai.APIStatusError) as refused:
                ask(client, engine.served_name, face_url)
            release.set()
            answers = [f.result().choices[0].message.content for f in [running, *waiting]]
        assert refused.value.status_code == 503 and refused.value.body["code"] == "queue_full"
        assert int(refused.value.response.headers["retry-after"]) >= 1
        assert len(answers) == 3 and all(answers)
        assert ask(client, engine.served_name, face_url).choices[0].message.content == answers[0]  # still serving
    finally:
        release.set()
        handle.remove()
        stop()
        engine.close()


def test_the_guards_bound_on_requests_held_is_503_with_retry_after(tiny_model_dir, face_url):
    """The bound vLLM relies on (it queues without one), held on the embedded engine: with one request in
    progress and max_in_flight=1 the next is refused before any engine sees it, and served once room frees."""
    import threading

    engine = EmbeddedEngine(tiny_model_dir, batch_wait_ms=0)
    entered, release = threading.Event(), threading.Event()

    def hold(module, args):
        entered.set()
        release.wait()

    handle = engine.model.register_forward_pre_hook(hold)
    url, stop = start_in_thread(engine, guard=GuardSettings(max_in_flight=1))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(ask, client, engine.served_name, face_url)
            assert entered.wait(30)
            with pytest.raises(openai.APIStatusError) as refused:
                ask(client, engine.served_name, face_url)
            release.set()
            answer = running.result().choices[0].message.content
        assert refused.value.status_code == 503 and refused.value.body["code"] == "queue_full"
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
        assert ask(client, engine.served_name, face_url).choices[0].message.content == answer
    finally:
        release.set()
        handle.remove()
        stop()
        engine.close()


def test_request_bodies_over_the_limit_are_413_declared_or_chunked(engine):
    url, stop = start_in_thread(engine, guard=GuardSettings(max_request_bytes=1000))
    try:
        body = json.dumps({"model": engine.served_name, "messages": [{"role": "user", "content": "x" * 2000}]})
        for chunked in (False, True):
            data = iter([body.encode()]) if chunked else body.encode()
            request = urllib.request.Request(f"{url}/v1/chat/completions", data=data,
                                             headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(request, timeout=30)
            assert error.value.code == 413, chunked
            assert "over this server's limit of 1000" in json.loads(error.value.read())["error"]["message"]
        small = json.dumps({"model": engine.served_name, "max_tokens": 2,
                            "messages": [{"role": "user", "content": "hi"}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/chat/completions", data=small, headers={
                "Content-Type": "application/json"}), timeout=30) as response:
            assert response.status == 200
    finally:
        stop()


def test_prompts_are_logged_only_with_log_requests(engine, face_url, caplog):
    secret = "Is this the face of patient 4711?"
    for log_requests in (False, True):
        url, stop = start_in_thread(engine, log_requests=log_requests)
        try:
            with caplog.at_level(logging.DEBUG):
                caplog.clear()
                ask(openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), engine.served_name,
                    face_url, secret)
        finally:
            stop()
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert (secret in logged) == log_requests
        assert "base64" not in logged  # images are never logged, not even with --log-requests


def test_bad_input_matrix_through_the_api(engine, tmp_path):
    """Every case of the shared matrix, as a data URL and as an allowed server path: undecodable files are
    400s naming the part and the problem, everything that decodes (odd modes, EXIF rotation, GIF's first
    frame, tiny, faceless, two faces) is answered; the server answers the next request either way."""
    from bad_inputs import api_matrix, data_url

    url, stop = start_in_thread(engine, guard=GuardSettings(local_media_dir=str(tmp_path)))
    try:
        answers = api_matrix(url, engine.served_name, tmp_path)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert ask(client, engine.served_name, data_url(tmp_path / "good.jpg")).choices[0].message.content
    finally:
        stop()
    assert set(answers) >= {"cmyk.jpg", "sixteen.png", "rotated.jpg", "animated.gif", "alpha.png", "tiny.png"}


def test_streaming_reports_usage_when_asked_as_the_whole_answer_does(client, engine, face_url):
    whole = ask(client, engine.served_name, face_url)
    chunks = list(ask(client, engine.served_name, face_url, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    plain = list(ask(client, engine.served_name, face_url, stream=True))
    assert all(c.choices for c in plain)  # no usage chunk unless asked


def test_32_concurrent_chats_with_images_are_all_answered_as_when_sent_alone(client, engine):
    from data_pipeline.synthetic import generate as draw_face

    urls = [to_data_url(draw_face(i, seed=21)[0]) for i in range(32)]
    alone = [ask(client, engine.served_name, url).choices[0].message.content for url in urls[:4]]
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda url: ask(client, engine.served_name, url), urls))
    assert all(r.choices[0].message.content for r in replies)  # no errors: 32 answers
    assert [r.choices[0].message.content for r in replies[:4]] == alone
