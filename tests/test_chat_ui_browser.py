"""The chat UI in a real headless Chromium (Debian's chromium, driven by Playwright): upload, ask, read the answer."""

import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

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
        page.wait_for_selector("textarea")
        yield page
        browser.close()


def test_upload_a_face_ask_and_read_the_streamed_answer(page, face_png):
    page.set_input_files("input[type=file]", str(face_png))
    page.fill("textarea", "What is the skin tone?")
    page.keyboard.press("Enter")
    user = page.locator('[data-testid="user"]')
    expect(user.locator("img")).to_have_count(1)  # the uploaded image is part of the turn
    expect(user.filter(has_text="What is the skin tone?")).to_have_count(1)
    bot = page.locator('[data-testid="bot"]').first
    expect(bot).not_to_be_empty(timeout=30_000)
    assert bot.inner_text().strip()


def test_a_broken_upload_shows_an_error_naming_the_file(page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    page.set_input_files("input[type=file]", str(broken))
    page.fill("textarea", "Who is this?")
    page.keyboard.press("Enter")
    toast = page.locator('[data-testid="toast-body"]').first
    expect(toast).to_contain_text("broken.png", timeout=30_000)
    expect(toast).to_contain_text("not a usable image")
    expect(page.locator('[data-testid="bot"]')).to_have_count(0)
