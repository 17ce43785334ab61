"""The face chat in a real headless Chromium (Debian's chromium, driven by Playwright): upload, see the faces
boxed, pick one, ask, read the streamed answer; the attribute table; a broken upload."""

import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from bad_inputs import save, two_faces
from facellm.schema import json_schema
from serve.api import start_in_thread
from serve.chat_ui import build_ui
from serve.engine import EmbeddedEngine

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as the machine notes advise: no background traffic toward hosts this machine cannot reach
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def ui_url(tiny_model_dir):
    engine = EmbeddedEngine(tiny_model_dir)
    api_url, stop_api = start_in_thread(engine)
    ui = build_ui(api_url)
    ui.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield ui.local_url
    ui.close()
    stop_api()
    engine.close()


@pytest.fixture
def page(ui_url):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(ui_url)
        page.wait_for_selector("#question textarea")
        yield page
        browser.close()


def upload(page, path):
    page.set_input_files("input[type=file]", str(path))


def test_faces_are_boxed_a_face_is_picked_and_the_answer_streams(page, tmp_path):
    upload(page, save(two_faces(), tmp_path / "pair.jpg"))
    faces = page.locator("#faces")
    expect(faces.get_by_text("face 1", exact=True)).to_be_visible(timeout=30_000)  # the boxes' legend
    expect(faces.get_by_text("face 2", exact=True)).to_be_visible()
    expect(page.get_by_text("Ask about (2 faces found)")).to_be_visible()
    page.locator("#face input").click()
    page.get_by_role("option", name="face 2").click()
    page.locator("#question textarea").fill("What is the skin tone?")
    page.keyboard.press("Enter")
    user = page.locator('[data-testid="user"]')
    expect(user.locator("img")).to_have_count(1)  # the photo is part of the conversation
    expect(user.filter(has_text="(face 2) What is the skin tone?")).to_have_count(1)
    bot = page.locator('[data-testid="bot"]').first
    expect(bot).not_to_be_empty(timeout=30_000)
    assert bot.inner_text().strip()


def test_attributes_button_fills_the_table(page, face_png):
    upload(page, face_png)
    expect(page.get_by_text("Ask about (")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Attributes").click()
    table = page.locator("#attributes")
    names = list(json_schema()["properties"])
    expect(table.get_by_test_id(f"cell-{len(names) - 1}-0")).to_contain_text(names[-1], timeout=30_000)
    row = names.index("expression")
    expect(table.get_by_test_id(f"cell-{row}-0")).to_contain_text("expression")
    assert table.get_by_test_id(f"cell-{row}-1").inner_text().strip() in json_schema()["properties"]["expression"]["enum"]


def test_a_broken_upload_shows_an_error_naming_the_file(page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    upload(page, broken)
    toast = page.locator('[data-testid="toast-body"]').first
    expect(toast).to_contain_text("broken.png", timeout=30_000)
