"""Draw ``docs/_static/chat_page.png``: ``python -m lucid.serve`` on SmolLM2, its chat page in
headless Chromium (Playwright), one question asked greedily and answered.

    python docs/tools/chat_screenshot.py
"""
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

OUT = pathlib.Path(__file__).resolve().parents[1] / "_static" / "chat_page.png"
PORT = 8765


def main() -> None:
    server = subprocess.Popen([sys.executable, "-m", "lucid.serve", "--port", str(PORT)])
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 900, "height": 560})
            page.goto(f"http://127.0.0.1:{PORT}/")
            expect(page.locator("#model")).to_have_text("smollm2-135m-instruct")
            page.fill("#temperature", "0")
            page.fill("#question", "What is the capital of France, and what is it known for?")
            page.keyboard.press("Enter")
            expect(page.locator("#stats")).to_contain_text("tokens/s", timeout=120_000)
            page.screenshot(path=str(OUT))
            browser.close()
    finally:
        server.terminate()
        server.wait()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
