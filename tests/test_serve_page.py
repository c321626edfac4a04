"""The chat page the server serves, in headless Chromium (Debian's, driven by Playwright): a
question typed in gets a streamed answer, the conversation carries over, and nothing is
fetched from outside the server."""
import shutil

import pytest

from .serve_helpers import serving, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


@pytest.fixture
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_the_page_streams_an_answer_and_keeps_the_conversation(page):
    with serving() as (base, worker):
        outside, bodies = [], []
        page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
        page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/chat/completions") else None)
        page.goto(base + "/")
        sync_api.expect(page.locator("#model")).to_have_text("tiny")
        page.fill("#temperature", "0")  # greedy: the same answer every run
        page.fill("#question", "What is a KV cache?")
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#stats")).to_contain_text("tokens/s", timeout=60_000)
        answers = page.locator(".message.assistant")
        assert answers.count() == 1 and answers.first.text_content() != ""
        assert page.locator(".message.user").first.text_content() == "What is a KV cache?"
        page.fill("#question", "And a second question?")
        page.click("#send")
        sync_api.expect(answers).to_have_count(2)
        sync_api.expect(page.locator("#send")).to_be_enabled(timeout=60_000)
        # The second request carried the whole conversation, the first answer included.
        assert [m["role"] for m in bodies[-1]["messages"]] == ["user", "assistant", "user"]
        assert bodies[-1]["messages"][1]["content"] == answers.first.text_content()
        assert bodies[-1]["stream"] is True and bodies[-1]["temperature"] == 0 and bodies[-1]["max_tokens"] == 512
        assert outside == []
        assert wait_for(lambda: worker.stats["blocks_used"] == 0)


def test_the_page_shows_an_error_and_sends_the_api_key(page):
    with serving(api_key="k3y") as (base, _):
        page.goto(base + "/")
        sync_api.expect(page.locator(".message.error")).to_contain_text("API key")
        page.fill("#key", "k3y")
        page.dispatch_event("#key", "change")
        page.fill("#temperature", "0")
        page.fill("#question", "hello")
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#stats")).to_contain_text("tokens/s", timeout=60_000)
        assert page.locator(".message.assistant").count() == 1
