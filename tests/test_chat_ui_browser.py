"""The face chat in a real headless Chromium (Debian's chromium, driven by Playwright), used the way a person
uses it, in a 1280x800 window: photos uploaded, dropped and attached, faces clicked, questions asked,
stopped, retried and undone, a bad upload, the API killed and restarted mid-conversation.

One API server, one chat UI server and one browser serve the whole module; each test has a fresh page.
Every page fails its test if the UI answers 5xx or shows an "Error" badge. Screenshots of the main states
are written to $FACELLM_SCREENSHOTS (default: chat_ui_screenshots/ in pytest's temporary folder); they are
for a reviewer to look at, not committed."""

import base64
import mimetypes
import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from bad_inputs import CAT, bad_images, crowd, save, two_faces, undecodable
from facellm.schema import json_schema
from serve.api import start_in_thread
from serve.chat_state import open_photo
from serve.chat_ui import build_ui
from serve.engine import EmbeddedEngine

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as the machine notes advise: no background traffic toward hosts this machine cannot reach
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDOW = {"width": 1280, "height": 800}
ANSWER_S = 30_000  # ms: the longest a short answer of the tiny model may take on a busy CI machine


class Api:
    """The real HTTP API over one engine; ``kill`` stops the server, ``restart`` brings it back on its port."""

    def __init__(self, engine):
        self.engine = engine
        self.url, self.kill = start_in_thread(engine)

    def restart(self):
        self.url, self.kill = start_in_thread(self.engine, port=int(self.url.rsplit(":", 1)[1]))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return {"pair": save(two_faces(), root / "pair.jpg"), "crowd": save(crowd(), root / "crowd.jpg"),
            "cat": save(CAT, root / "cat.jpg")}


@pytest.fixture(scope="module")
def api(tiny_model_dir):
    engine = EmbeddedEngine(tiny_model_dir)
    api = Api(engine)
    yield api
    api.kill()
    engine.close()


@pytest.fixture(scope="module")
def ui_url(api, photos):
    ui = build_ui(api.url, examples=[photos["pair"], photos["crowd"]])
    ui.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield ui.local_url
    ui.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("FACELLM_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "chat_ui_screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser, ui_url):
    page = browser.new_page(viewport=WINDOW)
    server_errors = []
    page.on("response", lambda response: response.status >= 500 and server_errors.append(response.url))
    page.goto(ui_url)
    expect(page.locator("#message textarea")).to_be_editable(timeout=ANSWER_S)
    yield page
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)  # no error badge over any component
    page.close()
    assert not server_errors


def upload(page, path):
    page.set_input_files("#upload input[type=file]", str(path))


def drop(page, target, path):
    """Drops the file at ``path`` on ``target`` the way a file dragged from the desktop arrives."""
    path = Path(path)
    transfer = page.evaluate_handle("""([data, name, type]) => {
        const transfer = new DataTransfer();
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        transfer.items.add(new File([bytes], name, {type}));
        return transfer;
    }""", [base64.b64encode(path.read_bytes()).decode(), path.name, mimetypes.guess_type(path.name)[0]])
    for event in ("dragenter", "dragover", "drop"):
        target.dispatch_event(event, {"dataTransfer": transfer})


def max_tokens(page, tokens):
    settings = page.locator("#settings").get_by_text("Settings")
    settings.click()
    page.locator("#max_tokens input[type=number]").fill(str(tokens))
    page.locator("#max_tokens input[type=number]").press("Enter")
    settings.click()
    page.evaluate("window.scrollTo(0, 0)")


def shoot(page, shots, name):
    """A screenshot once the short transitions (a toast sliding in) have ended; spinners and a toast's
    countdown bar go on."""
    page.evaluate("""Promise.allSettled(document.getAnimations()
        .filter((animation) => animation.effect.getComputedTiming().endTime <= 1000)
        .map((animation) => animation.finished))""")
    page.screenshot(path=shots / f"{name}.png")


def ask(page, question):
    page.locator("#message textarea").fill(question)
    page.keyboard.press("Enter")


def answered(page, turns):
    """Waits for ``turns`` answered turns, the message box ready for the next question."""
    expect(page.get_by_test_id("bot")).to_have_count(turns, timeout=ANSWER_S)
    expect(page.locator("#message textarea")).to_be_editable(timeout=ANSWER_S)
    expect(page.get_by_test_id("bot").last).not_to_contain_text("waiting for the model", timeout=ANSWER_S)


def note(page):
    return page.locator("#note")


def test_a_face_clicked_on_a_multi_face_photo_is_asked_about_and_its_crop_shown(page, photos, shots):
    upload(page, photos["crowd"])
    expect(note(page)).to_contain_text("crowd.jpg: 10 faces found")
    page.locator("#face input").click()
    expect(page.get_by_role("option")).to_have_count(11)  # the whole image, faces 1 to 10
    page.keyboard.press("Escape")
    photo = open_photo(str(photos["crowd"]))
    x0, y0, x1, y1 = photo["boxes"][6]  # face 7, drawn with its number on its box
    picture = page.locator("#picture img")
    expect(picture).to_be_visible()
    left, top, width, height, natural_width, natural_height = picture.evaluate("""image => {
        const box = image.getBoundingClientRect();
        return [box.x, box.y, box.width, box.height, image.naturalWidth, image.naturalHeight];
    }""")
    # screen pixels per photo pixel: the picture is the photo scaled down, fitted into its box, centred
    scale = min(width / natural_width, height / natural_height) * natural_width / photo["size"][0]
    page.mouse.click(left + (width - photo["size"][0] * scale) / 2 + (x0 + x1) / 2 * scale,
                     top + (height - photo["size"][1] * scale) / 2 + (y0 + y1) / 2 * scale)
    expect(page.locator("#face input")).to_have_value("face 7")
    shoot(page, shots, "1-face-7-clicked")

    max_tokens(page, 16)
    ask(page, "What is the facial expression?")
    expect(page.locator("#chat")).to_contain_text("(face 7) What is the facial expression?")
    crop = page.get_by_test_id("user").locator("img")
    expect(crop).to_have_count(1)
    assert crop.evaluate("i => i.naturalWidth") < 256  # the face's crop, not the 1280-pixel photo
    answered(page, 1)
    shoot(page, shots, "2-answered-about-face-7")


def test_photos_replaced_by_upload_drop_attachment_and_example_take_their_state_along(page, photos, shots):
    upload(page, photos["pair"])
    expect(note(page)).to_contain_text("pair.jpg: 2 faces found")
    page.get_by_role("button", name="Attributes").click()
    table = page.locator("#attributes")
    names = list(json_schema()["properties"])
    expect(table.get_by_test_id(f"cell-{len(names) - 1}-0")).to_contain_text(names[-1], timeout=ANSWER_S)
    expect(table).to_contain_text("whole image of pair.jpg")  # which face of which photo the record is of
    value = table.get_by_test_id(f"cell-{names.index('expression')}-1").inner_text().strip()
    assert value in json_schema()["properties"]["expression"]["enum"]
    shoot(page, shots, "3-attributes")

    drop(page, page.locator("#upload").get_by_label("Click to upload or drop files"), photos["crowd"])
    expect(note(page)).to_contain_text("crowd.jpg: 10 faces found")
    expect(table.get_by_test_id("cell-0-0")).to_have_count(0)  # the table belonged to the photo before
    expect(table).not_to_contain_text("pair.jpg")
    expect(page.locator("#face input")).to_have_value("whole image")

    page.get_by_role("button", name="Attributes").click()  # an answer on its way when the photo changes...
    drop(page, page.locator("#picture"), photos["cat"])  # ...dropped anywhere but on an upload area
    expect(note(page)).to_contain_text("cat.jpg: no face found: asking about the whole image")
    expect(page.get_by_test_id("toast-body").last).to_contain_text(  # the answer came, and was not shown
        "attribute record: whole image of crowd.jpg came after the photo changed", timeout=ANSWER_S)
    expect(table.get_by_test_id("cell-0-0")).to_have_count(0)
    shoot(page, shots, "4-no-face")

    page.set_input_files("#message input[type=file]", str(photos["pair"]))  # attached to a message
    max_tokens(page, 16)
    ask(page, "Describe this face.")
    expect(note(page)).to_contain_text("pair.jpg: 2 faces found")
    expect(page.locator("#chat")).to_contain_text("(whole image) Describe this face.")
    answered(page, 1)

    page.get_by_role("button", name="Remove photo").click()
    expect(note(page)).to_contain_text("No photo yet")
    page.locator("#examples img").first.click()  # example photos are thumbnails
    expect(note(page)).to_contain_text("pair.jpg: 2 faces found")

    page.get_by_role("button", name="New chat").click()  # everything goes
    expect(note(page)).to_contain_text("No photo yet")
    expect(page.get_by_test_id("user")).to_have_count(0)
    expect(page.locator("#face input")).to_have_value("whole image")


def test_a_bad_upload_is_a_short_toast_and_the_conversation_goes_on(page, photos, shots, tmp_path):
    upload(page, photos["pair"])
    expect(note(page)).to_contain_text("pair.jpg: 2 faces found")
    max_tokens(page, 16)
    ask(page, "Describe this face.")
    answered(page, 1)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    upload(page, broken)
    toast = page.get_by_test_id("toast-body").last
    expect(toast).to_contain_text("broken.png could not be read as an image (corrupt or not a photo)")
    assert "/tmp" not in toast.inner_text() and "Error" not in toast.inner_text()
    shoot(page, shots, "5-bad-upload")
    expect(note(page)).to_contain_text("pair.jpg: 2 faces found")  # the photo, its faces and the chat stay
    expect(page.get_by_test_id("bot")).to_have_count(1)

    page.get_by_test_id("toast-close").click()
    page.set_input_files("#message input[type=file]", str(broken))  # attached: refused, the question kept
    expect(page.locator("#message").get_by_label("File thumbnail")).to_be_visible()
    ask(page, "And now?")
    expect(page.get_by_test_id("toast-body")).to_contain_text("broken.png could not be read")
    expect(page.locator("#message textarea")).to_have_value("And now?")
    # the toast comes while the refused message is still being handled; a second Enter before that is over
    # would be taken for a double press, and dropped
    expect(page.locator("#chat").get_by_test_id("status-tracker")).to_have_class(re.compile(r"\bhide\b"))

    page.locator("#message").get_by_role("button", name="Remove file").click()  # the attachment off...
    ask(page, "Is the person smiling?")
    answered(page, 2)  # ...and the next question is answered, after the first
    expect(page.locator("#chat")).to_contain_text("Describe this face.")


def test_the_api_killed_and_restarted_mid_conversation(page, api, photos, shots):
    upload(page, photos["pair"])
    expect(note(page)).to_contain_text("pair.jpg: 2 faces found")
    max_tokens(page, 16)
    ask(page, "Describe this face.")
    answered(page, 1)
    first_answer = page.get_by_test_id("bot").first.inner_text()

    api.kill()
    try:
        ask(page, "Is the person wearing glasses?")
        expect(page.get_by_test_id("bot").last).to_contain_text(
            f"the model server at {api.url} is not answering; retrying", timeout=ANSWER_S)
        shoot(page, shots, "6-api-down-retrying")
    finally:
        api.restart()
    answered(page, 2)  # the retry after the restart is answered
    assert page.get_by_test_id("bot").first.inner_text() == first_answer

    second_answer = page.get_by_test_id("bot").last.inner_text()
    max_tokens(page, 32)
    page.get_by_role("button", name="Retry").click()  # asked again, now with room for a longer answer
    expect(page.get_by_test_id("bot").last).not_to_have_text(second_answer, timeout=ANSWER_S)
    answered(page, 2)
    page.get_by_role("button", name="Undo").click()  # the last turn goes, its question back in the box
    expect(page.get_by_test_id("bot")).to_have_count(1)
    expect(page.locator("#message textarea")).to_have_value("Is the person wearing glasses?")


def test_stop_during_a_long_answer(page, photos, shots):
    max_tokens(page, 512)  # about 5 s of answer from the tiny model
    ask(page, "Describe the face.")
    bot = page.get_by_test_id("bot")
    expect(bot).to_have_count(1)
    expect(bot).not_to_contain_text("waiting for the model", timeout=ANSWER_S)  # it is streaming
    shoot(page, shots, "7-streaming")
    page.locator("#message").get_by_role("button", name="Stop").click()
    expect(page.locator("#message textarea")).to_be_editable()
    stopped = bot.inner_text()
    page.wait_for_timeout(1000)  # long enough for more words to come, had it gone on
    assert bot.inner_text() == stopped and stopped.strip()

    # the conversation goes on, the stopped answer part of it (facellm's own engine finishes the stopped answer,
    # unread, before it answers; vLLM stops generating when the request closes)
    max_tokens(page, 16)
    ask(page, "And in short?")
    answered(page, 2)


def test_the_layout_fits_a_1280x800_window(page, photos, shots):
    upload(page, photos["pair"])
    expect(note(page)).to_contain_text("pair.jpg: 2 faces found")
    expect(page.locator("#examples img")).to_have_count(2)
    for element in [page.locator(f"#{name}") for name in ("upload", "picture", "note", "face", "settings", "chat",
                                                          "message", "attributes", "examples")] + [
            page.get_by_role("button", name=name) for name in ("Attributes", "Remove photo", "New chat")]:
        box = element.bounding_box()
        assert box and box["x"] >= 0 and box["y"] >= 0, element
        assert box["x"] + box["width"] <= WINDOW["width"] and box["y"] + box["height"] <= WINDOW["height"], element
    for text in ("Drop File Here", "Click to Upload"):  # not cut by a squeezed upload area
        top, bottom, area_top, area_bottom = page.locator("#upload").evaluate("""(area, text) => {
            const walker = document.createTreeWalker(area, NodeFilter.SHOW_TEXT);
            while (!walker.nextNode().textContent.includes(text));
            const range = document.createRange();
            range.selectNodeContents(walker.currentNode);
            const line = range.getBoundingClientRect(), box = area.getBoundingClientRect();
            return [line.top, line.bottom, box.top, box.bottom];
        }""", text)
        assert area_top <= top < bottom <= area_bottom, text
    assert page.evaluate("document.documentElement.scrollWidth") <= WINDOW["width"]
    shoot(page, shots, "0-layout")


def test_the_bad_input_matrix_through_the_upload(page, tmp_path):
    """Undecodable files are a short toast naming the file; every other image is opened, its faces counted."""
    for name, expected in bad_images(tmp_path).items():
        upload(page, tmp_path / name)
        if undecodable(expected):
            toast = page.get_by_test_id("toast-body").filter(has_text=name)
            expect(toast).to_contain_text("could not be read as an image" if expected != "image too large"
                                          else "image too large")
            assert "/tmp" not in toast.inner_text()
            page.get_by_test_id("toast-close").first.click()
            continue
        faces = {None: "1 face found", "2 faces": "2 faces found", "10 faces": "10 faces found",
                 "no face found": "no face found: asking about the whole image"}[expected]
        expect(note(page)).to_contain_text(f"{name}: {faces}")
