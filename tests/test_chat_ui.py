"""The Gradio face chat: its steps on their own (serve/chat_state.py), and the UI against the real HTTP API,
called the way scripts call it, with gradio_client (tests/test_chat_ui_browser.py drives it in a browser).

Each answer is checked against the same request sent straight to the API (greedy: same conversation,
same answer), so the tests show what the UI sent: which crop, which history, which schema."""

import json
from pathlib import Path

import openai
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from bad_inputs import CAT, bad_images, save, two_faces, undecodable
from facellm.errors import FacellmError
from facellm.faces import crop_box
from facellm.images import load_image, to_data_url
from facellm.schema import json_schema
from serve.api import start_in_thread
from serve.chat_state import (BOX_COLOUR, NO_FACE, STOPPED, WAITING, ChatProblem, api_messages, chat_messages,
                              draw_faces, face_at, new_turn, open_photo, server_problem, stop, stream_answer)
from serve.chat_ui import build_ui
from serve.engine import EmbeddedEngine

MAX_TOKENS = 16  # short greedy answers: fast and reproducible


@pytest.fixture(scope="module")
def api_url(tiny_model_dir):
    engine = EmbeddedEngine(tiny_model_dir)
    url, stop_api = start_in_thread(engine)
    yield url
    stop_api()
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
    return to_data_url(image.crop(crop_box(open_photo(str(path))["boxes"][number - 1], image.width, image.height)))


def last_answer(chat):
    return chat[-1]["content"][0]["text"]


# The steps on their own


def test_faces_are_numbered_on_their_boxes_and_found_where_clicked(pair):
    photo = open_photo(str(pair))
    assert photo["name"] == "pair.jpg" and len(photo["boxes"]) == 2
    assert photo["boxes"][0][0] < 512 <= photo["boxes"][1][0]  # face 1 on the left half, face 2 on the right
    shown = draw_faces(photo)
    assert shown.size == (1024, 512)
    for number, (x0, y0, x1, y1) in enumerate(photo["boxes"], 1):
        tag = shown.crop((int(x0), int(y0) - 30, int(x0) + 30, int(y0)))  # the number's tag, on the box's corner
        colours = {colour for _, colour in tag.getcolors(1024)}
        assert BOX_COLOUR in colours and (0, 0, 0) in colours, number  # a yellow tag with a black number
        assert face_at(photo, (x0 + x1) / 2, (y0 + y1) / 2) == f"face {number}"
    assert face_at(photo, 5, 500) == "whole image"


def test_the_latest_image_goes_with_its_first_turn_and_failed_turns_leave_the_conversation(pair, tmp_path):
    photo = open_photo(str(pair))
    turns = [new_turn("Describe the face.", photo, "face 2", tmp_path)]
    assert turns[0]["label"] == "face 2" and turns[0]["image_url"] == face_crop_url(pair, 2)
    turns[0].update(answer="A face.", note="", waiting=False)
    turns.append(new_turn("Glasses?", photo, "face 2", tmp_path))  # a follow-up: the crop is in the conversation
    turns[1].update(note="⚠️ the model server is not answering", waiting=False)  # failed: left out
    turns.append(new_turn("Hair?", photo, "face 1", tmp_path))  # another face: its crop goes along
    assert [part["type"] for part in api_messages(turns[:1])[0]["content"]] == ["image_url", "text"]
    sent = api_messages(turns)
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == [{"type": "text", "text": "Describe the face."}]  # only the latest image is sent
    assert sent[2]["content"][0]["image_url"]["url"] == face_crop_url(pair, 1)
    shown = chat_messages(turns)
    assert shown[0]["content"][1] == "(face 2) Describe the face." and shown[2]["content"] == ["Glasses?"]
    assert shown[3]["content"] == "⚠️ the model server is not answering" and shown[5]["content"] == WAITING
    stop(turns)
    assert chat_messages(turns)[-1]["content"] == STOPPED and not turns[-1]["waiting"]

    cat = open_photo(str(save(CAT, tmp_path / "cat.jpg")))
    assert new_turn("What is this?", cat, "whole image", tmp_path)["label"] == NO_FACE
    with pytest.raises(ChatProblem, match=r"^There is no face 3 in pair.jpg \(2 found\)\.$"):
        new_turn("Hi", photo, "face 3", tmp_path)


def test_unreadable_photos_are_named_as_the_person_named_them(tmp_path):
    upload = tmp_path / "gradio" / "0123abcd" / "holiday.jpg"  # where a server keeps an upload
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"not a photo")
    with pytest.raises(ChatProblem) as problem:
        open_photo(str(upload))
    assert str(problem.value) == "holiday.jpg could not be read as an image (corrupt or not a photo)"
    bad_images(tmp_path)
    with pytest.raises(ChatProblem, match=r"^bomb.png: image too large \("):
        open_photo(str(tmp_path / "bomb.png"))


def test_a_server_that_does_not_answer_is_said_retried_and_then_a_failed_turn(monkeypatch, tmp_path):
    import serve.chat_state

    monkeypatch.setattr(serve.chat_state, "RETRY_DELAYS_S", (0, 0))
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    turns = [new_turn("Hello?", None, None, tmp_path)]
    notes = [turns[-1]["note"] for _ in stream_answer(openai.OpenAI(base_url=f"{dead}/v1", api_key="x",
                                                                    max_retries=0), dead, turns, "m", 16)]
    assert notes[:2] == [f"⚠️ the model server at {dead} is not answering; retrying"] * 2
    assert notes[-1].startswith(f"⚠️ the model server at {dead} is not answering. Press Retry")
    assert not turns[-1]["waiting"] and api_messages(turns + [new_turn("Again?", None, None, tmp_path)]) == [
        {"role": "user", "content": [{"type": "text", "text": "Again?"}]}]  # the failed turn is not sent


def test_server_refusals_are_said_in_the_servers_words():
    import httpx

    request = httpx.Request("POST", "http://server/v1/chat/completions")
    refusal = openai.BadRequestError("Error code: 400 - {...}", response=httpx.Response(400, request=request),
                                     body={"message": "too many images", "type": "invalid_request_error"})
    assert server_problem("http://server", refusal) == "the model server at http://server answered 400: too many images"


# The UI as scripts call it


def test_faces_are_found_numbered_left_to_right_and_offered(ui_url, pair, tmp_path):
    client = Client(ui_url, verbose=False)
    picture, picker, note, table = client.predict(handle_file(str(pair)), api_name="/faces")
    assert Path(picture).is_file() and not table["value"]["data"]  # the faces drawn; the table emptied
    assert [c[0] for c in picker["choices"]] == ["whole image", "face 1", "face 2"]
    assert note == "**pair.jpg**: 2 faces found. Click one (or pick it below) to ask about it."
    cat = save(CAT, tmp_path / "cat.jpg")
    _, picker, note, _ = client.predict(handle_file(str(cat)), api_name="/faces")
    assert [c[0] for c in picker["choices"]] == ["whole image"] and NO_FACE in note


def test_a_question_about_face_2_sends_its_crop_and_the_follow_up_resends_it(ui_url, api, pair):
    client = Client(ui_url, verbose=False)  # one Client, one session: the UI keeps the history
    first = last_answer(client.predict("Describe the face.", handle_file(str(pair)), "face 2", max_tokens=MAX_TOKENS,
                                       api_name="/chat"))
    chat = client.predict("Is the person wearing glasses?", handle_file(str(pair)), "face 2", max_tokens=MAX_TOKENS,
                          api_name="/chat")
    assert [m["role"] for m in chat] == ["user", "assistant", "user", "assistant"]
    assert [part["type"] for part in chat[0]["content"]] == ["file", "text"]  # the crop, then the question
    assert chat[0]["content"][1]["text"] == "(face 2) Describe the face."

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


def test_bad_uploads_are_short_errors_naming_the_file(ui_url, tmp_path):
    client = Client(ui_url, verbose=False)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not really a jpeg")
    for api_name, args in {"/faces": (handle_file(str(broken)),),
                           "/chat": ("Describe the face.", handle_file(str(broken)), "whole image"),
                           "/attributes": (handle_file(str(broken)), "whole image")}.items():
        with pytest.raises(AppError) as error:
            client.predict(*args, api_name=api_name)
        assert str(error.value) == "broken.jpg could not be read as an image (corrupt or not a photo)", api_name
    with pytest.raises(AppError, match="There is no face 3 in p.jpg"):
        client.predict("Hi", handle_file(str(save(two_faces(), tmp_path / "p.jpg"))), "face 3", api_name="/chat")


def test_unreachable_api_is_a_clear_error():
    with pytest.raises(FacellmError, match="cannot list models: the model server at http://127.0.0.1:9 is not"):
        build_ui("http://127.0.0.1:9")  # the discard port: nothing listens there


def test_bad_input_matrix_through_the_upload_and_the_chat(ui_url, tmp_path):
    """The shared matrix: what does not decode is a short error naming the file, never its server path; every
    other image is offered face by face (faceless images as the whole image only) and answered."""
    client = Client(ui_url, verbose=False)
    for name, expected in bad_images(tmp_path).items():
        photo = handle_file(str(tmp_path / name))
        if undecodable(expected):
            for args, api_name in (((photo,), "/faces"), (("Describe the face.", photo, "whole image"), "/chat")):
                with pytest.raises(AppError) as error:
                    client.predict(*args, api_name=api_name)
                assert str(error.value).startswith(name) and "/" not in str(error.value), error.value
            continue
        _, picker, _, _ = client.predict(photo, api_name="/faces")
        offered = [c[0] for c in picker["choices"]]
        faces = {None: 1, "2 faces": 2, "10 faces": 10, "no face found": 0}[expected]  # the data pipeline's verdict
        assert offered == ["whole image"] + [f"face {i}" for i in range(1, faces + 1)], (name, offered)
        chat = client.predict("Describe the face.", photo, offered[-1], max_tokens=MAX_TOKENS, api_name="/chat")
        assert chat[-1]["role"] == "assistant" and not last_answer(chat).startswith("⚠️"), (name, chat[-1])


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
                                                     max_tokens=MAX_TOKENS, api_name="/chat")
        running = job.poll() is None
        assert last_answer(chat) and not last_answer(chat).startswith("⚠️")
        assert running, "the captioning job ended before the UI's answer came"
    finally:
        assert job.wait(300) == 0, job.stderr.read()[-2000:]
    assert sum(1 for _ in out.open()) == 300
