"""The playground page in a real browser (Debian's Chromium, driven by Playwright) against a
real server with an API key: a browser opening the root lands on the page, which asks for the
key, then shows the server's /info; an answer streams in, growing, and equals the server's
greedy /generate of the same templated prompt; Stop ends a long answer and the server frees
it. Any console error fails the test."""

import os
import re
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.guarded import API_KEY
from tests.e2e.server import SluiceServer, metric_samples

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

CHROMIUM_FLAGS = (
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-background-networking",  # no calls to hosts this machine cannot reach
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
PROMPT = "What is a sluice gate?"
RECORD_ANSWER_TEXTS = """
window.answerSnapshots = [];
new MutationObserver(() => {
  const text = document.querySelector("#conversation li.assistant:last-child .text");
  if (text && text.textContent && window.answerSnapshots.at(-1) !== text.textContent) {
    window.answerSnapshots.push(text.textContent);
  }
}).observe(document.getElementById("conversation"), {
  subtree: true, childList: true, characterData: true,
});
"""
"""Keeps every text the answer shows, as the page changes it."""
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def browser() -> Iterator["sync_api.Browser"]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: "sync_api.Browser", guarded: SluiceServer) -> Iterator["sync_api.Page"]:
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{guarded.url}/")
    yield page
    page.close()
    assert errors == []


def _open_with_key(page: "sync_api.Page") -> None:
    assert page.url.endswith("/playground")
    sync_api.expect(page.locator("#key-needed")).to_be_visible()
    page.fill("#api-key", API_KEY)
    page.dispatch_event("#api-key", "change")
    sync_api.expect(page.locator("#server-info")).to_contain_text("max total tokens")
    sync_api.expect(page.locator("#key-needed")).to_be_hidden()


def _last_answer(page: "sync_api.Page") -> "sync_api.Locator":
    return page.locator("#conversation li.assistant").last


def test_an_answer_streams_in_and_equals_the_greedy_generate(
    page: "sync_api.Page", guarded: SluiceServer
) -> None:
    _open_with_key(page)
    sync_api.expect(page.locator("#server-info")).to_contain_text("SmolLM2")
    page.fill("#max-new-tokens", "40")
    page.fill("#prompt", PROMPT)
    page.evaluate(RECORD_ANSWER_TEXTS)
    page.click("#send")

    answer = _last_answer(page)
    finished = re.compile("length|eos_token|stop_sequence")
    sync_api.expect(answer.locator(".stats")).to_contain_text(finished, timeout=120_000)
    final = answer.locator(".text").text_content() or ""
    seen = page.evaluate("window.answerSnapshots")
    assert len(seen) >= 3, seen  # it grew token by token, not at once
    assert all(final.startswith(prefix) for prefix in seen)
    assert "TTFT" in (answer.locator(".stats").text_content() or "")
    assert "tokens/s" in (answer.locator(".stats").text_content() or "")

    chat = {"model": "tgi", "messages": [{"role": "user", "content": PROMPT}]}
    templated = httpx.post(f"{guarded.url}/chat_tokenize", json=chat, headers=AUTH).json()
    body = {"inputs": templated["templated_text"], "parameters": {"max_new_tokens": 40}}
    expected = httpx.post(f"{guarded.url}/generate", json=body, headers=AUTH, timeout=120)
    assert final == expected.json()["generated_text"]
    if path := os.environ.get("SLUICE_PLAYGROUND_SCREENSHOT"):  # for the README
        page.screenshot(path=path)


def test_stop_cancels_the_answer_and_the_server_frees_it(
    page: "sync_api.Page", guarded: SluiceServer
) -> None:
    _open_with_key(page)
    dropped_before = _dropped(guarded)
    page.fill("#max-new-tokens", "2000")
    page.fill("#prompt", "Count to a thousand, one number a line.")
    page.click("#send")
    answer = _last_answer(page)
    sync_api.expect(answer.locator(".stats")).to_contain_text("tokens/s", timeout=60_000)
    page.click("#stop")
    sync_api.expect(answer.locator(".stats")).to_contain_text("stopped")
    sync_api.expect(page.locator("#send")).to_be_enabled()

    deadline = time.monotonic() + 20
    while _dropped(guarded) == dropped_before:
        assert time.monotonic() < deadline, "the server never counted the request dropped"
        time.sleep(0.2)
    one_token = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
    httpx.post(f"{guarded.url}/generate", json=one_token, headers=AUTH, timeout=60)
    assert _metric(guarded, "sluice_kv_cache_blocks_used") == 0


def _dropped(server: SluiceServer) -> float:
    return _metric(server, 'tgi_request_failure{err="dropped"}')


def _metric(server: SluiceServer, name: str) -> float:
    page = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    return metric_samples(page, name.split("{")[0]).get(name, 0.0)
