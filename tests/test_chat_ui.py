"""The Gradio chat UI against the real HTTP API, called the way scripts call it: with gradio_client."""

import openai
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from facellm.errors import FacellmError
from facellm.images import load_image, to_data_url
from serve.api import start_in_thread
from serve.chat_ui import _openai_message, build_ui
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
def ui_url(api_url):
    demo = build_ui(api_url)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def test_chat_endpoint_answers_about_an_image(ui_url, face_png):
    client = Client(ui_url, verbose=False)
    reply = client.predict(message={"text": "Describe the face.", "files": [handle_file(str(face_png))]},
                           max_tokens=MAX_TOKENS, api_name="/chat")
    assert isinstance(reply, str) and reply.strip()


def test_follow_up_turn_resends_the_earlier_image(ui_url, api_url, face_png):
    client = Client(ui_url, verbose=False)  # one Client, one session: the UI keeps the history
    first = client.predict(message={"text": "Describe the face.", "files": [handle_file(str(face_png))]},
                           max_tokens=MAX_TOKENS, api_name="/chat")
    second = client.predict(message={"text": "Is the person wearing glasses?", "files": []},
                            max_tokens=MAX_TOKENS, api_name="/chat")

    api = openai.OpenAI(base_url=f"{api_url}/v1", api_key="unused", max_retries=0)
    model = api.models.list().data[0].id
    image = {"type": "image_url", "image_url": {"url": to_data_url(load_image(face_png))}}
    conversation = [{"role": "user", "content": [image, {"type": "text", "text": "Describe the face."}]},
                    {"role": "assistant", "content": first},
                    {"role": "user", "content": [{"type": "text", "text": "Is the person wearing glasses?"}]}]
    expected = api.chat.completions.create(model=model, messages=conversation, max_tokens=MAX_TOKENS)
    assert second == expected.choices[0].message.content  # greedy: same conversation, same answer


def test_non_image_upload_is_a_clear_error(ui_url, tmp_path):
    client = Client(ui_url, verbose=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a photo")
    # Gradio itself refuses file types other than images (file_types=["image"])
    with pytest.raises(AppError, match=r"Please upload a file that is one of these formats: \['image'\]"):
        client.predict(message={"text": "Describe the face.", "files": [handle_file(str(notes))]}, api_name="/chat")
    # a file that only looks like an image gets our message, naming the upload
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not really a jpeg")
    with pytest.raises(AppError, match="Upload 'broken.jpg' is not a usable image"):
        client.predict(message={"text": "Describe the face.", "files": [handle_file(str(broken))]}, api_name="/chat")


def test_history_resends_earlier_images(face_png):
    # both shapes Gradio hands history over in: normalised parts (UI) and strings/{"path"} (API endpoint)
    for content in ([{"type": "file", "file": {"path": str(face_png)}}, {"type": "text", "text": "Describe."}],
                    [{"path": str(face_png)}, "Describe."]):
        parts = _openai_message("user", content)["content"]
        assert [p["type"] for p in parts] == ["image_url", "text"]
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert _openai_message("assistant", [{"type": "text", "text": "A smile."}]) == \
        {"role": "assistant", "content": "A smile."}


def test_unreachable_api_is_a_clear_error():
    with pytest.raises(FacellmError, match="cannot list models"):
        build_ui("http://127.0.0.1:9")  # the discard port: nothing listens there
