"""The Gradio face chat against the real HTTP API, called the way scripts call it: with gradio_client.

Each answer is checked against the same request sent straight to the API (greedy: same conversation,
same answer), so the tests show what the UI sent: which crop, which history, which schema."""

import json

import openai
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from bad_inputs import CAT, save, two_faces
from facellm.errors import FacellmError
from facellm.faces import crop_box
from facellm.images import load_image, to_data_url
from facellm.schema import json_schema
from serve.api import start_in_thread
from serve.chat_ui import build_ui, face_boxes
from serve.engine import EmbeddedEngine

MAX_TOKENS = 16  # short greedy answers: fast and reproducible


@pytest.fixture(scope="module")
def api_url(tiny_model_dir):
    engine = EmbeddedEngine(tiny_model_dir)
    url, stop = start_in_thread(engine)
    yield url
    stop()
    engine.close()


@pytest.fixture(scope="module")
def api(api_url):
    client = openai.OpenAI(base_url=f"{api_url}/v1", api_key="unused", max_retries=0)
    return client, client.models.list().data[0].id


@pytest.fixture(scope="module")
def ui_url(api_url):
    demo = build_ui(api_url)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return save(two_faces(), tmp_path_factory.mktemp("photos") / "pair.jpg")


def face_crop_url(path, number):
    image = load_image(path)
    return to_data_url(image.crop(crop_box(face_boxes(str(path))[number - 1], image.width, image.height)))


def last_answer(chat):
    return chat[-1]["content"][0]["text"]


def test_faces_are_found_numbered_left_to_right_and_offered(ui_url, pair, tmp_path):
    client = Client(ui_url, verbose=False)
    annotated, choices, _ = client.predict(handle_file(str(pair)), api_name="/faces")
    assert [a["label"] for a in annotated["annotations"]] == ["face 1", "face 2"]
    assert [c[0] for c in choices["choices"]] == ["whole image", "face 1", "face 2"]
    assert "2 faces found" in choices["label"]
    boxes = face_boxes(str(pair))
    assert boxes[0][0] < 512 <= boxes[1][0]  # face 1 on the left half, face 2 on the right
    cat = save(CAT, tmp_path / "cat.jpg")
    _, choices, _ = client.predict(handle_file(str(cat)), api_name="/faces")
    assert [c[0] for c in choices["choices"]] == ["whole image"] and "0 faces found" in choices["label"]


def test_a_question_about_face_2_sends_its_crop_and_the_follow_up_resends_it(ui_url, api, pair):
    client = Client(ui_url, verbose=False)  # one Client, one session: the UI keeps the history
    first = last_answer(client.predict("Describe the face.", handle_file(str(pair)), "face 2", max_tokens=MAX_TOKENS,
                                       api_name="/chat")[0])
    chat = client.predict("Is the person wearing glasses?", handle_file(str(pair)), "face 2", max_tokens=MAX_TOKENS,
                          api_name="/chat")[0]
    assert [m["role"] for m in chat] == ["user", "user", "assistant", "user", "assistant"]  # photo, q, a, q, a
    assert chat[1]["content"][0]["text"] == "(face 2) Describe the face."

    openai_client, model = api
    crop = {"type": "image_url", "image_url": {"url": face_crop_url(pair, 2)}}
    conversation = [{"role": "user", "content": [crop, {"type": "text", "text": "Describe the face."}]}]
    expected = openai_client.chat.completions.create(model=model, messages=conversation, max_tokens=MAX_TOKENS,
                                                     temperature=0).choices[0].message.content
    assert first == expected
    conversation += [{"role": "assistant", "content": first},
                     {"role": "user", "content": [{"type": "text", "text": "Is the person wearing glasses?"}]}]
    expected = openai_client.chat.completions.create(model=model, messages=conversation, max_tokens=MAX_TOKENS,
                                                     temperature=0).choices[0].message.content
    assert last_answer(chat) == expected


def test_attributes_button_returns_the_schema_record_of_the_chosen_face(ui_url, api, pair):
    table = Client(ui_url, verbose=False).predict(handle_file(str(pair)), "face 1", api_name="/attributes")
    schema = json_schema()
    assert [row[0] for row in table["data"]] == list(schema["properties"])
    shown = {row[0]: row[1] for row in table["data"]}

    openai_client, model = api
    reply = openai_client.chat.completions.create(
        model=model, max_tokens=256, temperature=0,
        messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": face_crop_url(pair, 1)}},
            {"type": "text", "text": "Describe this person's face. Answer with the JSON attribute record."}]}],
        response_format={"type": "json_schema", "json_schema": {"name": "face", "schema": schema}})
    assert shown == json.loads(reply.choices[0].message.content)
    for name, value in shown.items():
        assert value in schema["properties"][name]["enum"]


def test_bad_uploads_are_clear_errors_naming_the_file(ui_url, tmp_path):
    client = Client(ui_url, verbose=False)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not really a jpeg")
    for api_name, args in {"/faces": (handle_file(str(broken)),),
                           "/chat": ("Describe the face.", handle_file(str(broken)), "whole image")}.items():
        with pytest.raises(AppError, match="Upload 'broken.jpg' is not a usable image"):
            client.predict(*args, api_name=api_name)
    with pytest.raises(AppError, match="There is no face 3"):
        client.predict("Hi", handle_file(str(save(two_faces(), tmp_path / "p.jpg"))), "face 3", api_name="/chat")


def test_unreachable_api_is_a_clear_error():
    with pytest.raises(FacellmError, match="cannot list models"):
        build_ui("http://127.0.0.1:9")  # the discard port: nothing listens there


def test_bad_input_matrix_through_the_upload(ui_url, tmp_path):
    """The shared matrix uploaded to /faces: what does not decode is an error naming the file; everything
    else is offered face by face (faceless images as the whole image only)."""
    from bad_inputs import bad_images, undecodable

    client = Client(ui_url, verbose=False)
    for name, expected in bad_images(tmp_path).items():
        if undecodable(expected):
            with pytest.raises(AppError, match=f"Upload '{name}' is not a usable image"):
                client.predict(handle_file(str(tmp_path / name)), api_name="/faces")
            continue
        _, choices, _ = client.predict(handle_file(str(tmp_path / name)), api_name="/faces")
        offered = [c[0] for c in choices["choices"]]
        faces = {None: 1, "2 faces": 2, "10 faces": 10, "no face found": 0}[expected]  # the data pipeline's verdict
        assert offered == ["whole image"] + [f"face {i}" for i in range(1, faces + 1)], (name, offered)


def test_the_ui_serves_no_server_files_and_caps_uploads(api_url, tmp_path):
    import urllib.error
    import urllib.request

    from serve.chat_ui import MAX_UPLOAD

    demo = build_ui(api_url)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, max_file_size=MAX_UPLOAD)
    try:
        for path in ("/etc/passwd", "../../../../etc/passwd", str(tmp_path / "secret.txt")):
            (tmp_path / "secret.txt").write_text("not for the browser")
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=30)
            assert error.value.code in (403, 404), path
        big = tmp_path / "big.jpg"
        big.write_bytes(b"\xff\xd8" + b"\0" * (21 * 2 ** 20))  # over the 20 MB upload cap
        with pytest.raises(ValueError, match="exceeds the maximum file size of 20971520 bytes"):
            Client(url, verbose=False).predict(handle_file(str(big)), api_name="/faces")
    finally:
        demo.close()


def test_the_ui_answers_while_a_captioning_job_runs_against_the_same_server(ui_url, api_url, api, pair, tmp_path):
    """A `facellm caption` job (its own process, 32 requests in flight) holds the server's queue; the UI's
    question joins the engine's next batch, so it is answered while the job still runs."""
    import subprocess
    import sys
    import time

    from data_pipeline.build import write_faces

    write_faces(tmp_path / "faces", 300, seed=5)
    out = tmp_path / "captions.jsonl"
    job = subprocess.Popen([sys.executable, "-m", "facellm.cli", "caption", str(tmp_path / "faces"), "--endpoint",
                            api_url, "--model", api[1], "--concurrency", "32", "--out", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not out.exists() and job.poll() is None:  # wait until the job is answering
            time.sleep(0.05)
        chat = Client(ui_url, verbose=False).predict("Describe the face.", handle_file(str(pair)), "face 1",
                                                     max_tokens=MAX_TOKENS, api_name="/chat")[0]
        running = job.poll() is None
        assert last_answer(chat)
        assert running, "the captioning job ended before the UI's answer came"
    finally:
        assert job.wait(300) == 0, job.stderr.read()[-2000:]
    assert sum(1 for _ in out.open()) == 300
