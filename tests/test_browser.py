"""The chat widget in a real JupyterLab, driven in headless Chromium.

JupyterLab runs on 127.0.0.1 with its own temporary config, runtime, settings and workspace
directories; its kernels inherit ``OLLAMA_HOST``, which points at a stand-in server running in
this process. Debian's Chromium is driven through Playwright (never ``playwright install``).
Screenshots of the chat go to ``tests/artifacts/chat_widget*.png`` for people to look at (one
while an answer streams, one at the end). Each test waits until no answer is streaming, so they
do not depend on each other's order.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _util import wait_until

from ollama_magic.testing import FakeOllama, Fault, Reply

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "chat",
            "metadata": {},
            "outputs": [],
            "source": [
                "from ollama_magic import ChatWidget\n",
                'chat = ChatWidget("llama3.2", session="browser")\n',
                "chat",
            ],
        }
    ],
    "metadata": {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        }
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}
ANSWER = (
    "Here is **bold** text, and a list:\n\n"
    "1. the first point\n2. the second point\n3. the third point\n\n"
    "```python\nprint('hello from the chat')\n```\n\nThat is all."
)
# Records the text of the newest answer each time the message list changes in the page.
OBSERVE = """
() => {
  window.__frames = [];
  const list = document.querySelector(".ollama-chat .om-list");
  new MutationObserver(() => {
    const answers = list.querySelectorAll(".om-assistant");
    const last = answers[answers.length - 1];
    if (last) window.__frames.push(last.textContent);
  }).observe(list, { childList: true, subtree: true, characterData: true });
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
            "(tests/run does so when run as root)."
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def stand_in() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        server.add_reply("markdown", Reply(text=ANSWER, fault=Fault(delay=0.03)))
        server.add_reply("keyboard", "Sent with the keyboard: **Shift+Enter** works.")
        slow = "This answer comes slowly, one word at a time, and will be stopped."
        server.add_reply("slow", Reply(text=slow, fault=Fault(delay=1.2)))
        yield server


@pytest.fixture(scope="module")
def lab(stand_in, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on 127.0.0.1: (base URL, token). Stopped by its own PID."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    root.mkdir()
    (root / "chat.ipynb").write_text(json.dumps(NOTEBOOK))
    settings = home / "settings"
    for path, value in {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "autoStartDefaultKernel": True
        },
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }.items():
        (settings / path).parent.mkdir(parents=True, exist_ok=True)
        (settings / path).write_text(json.dumps(value))
    env = dict(os.environ, OLLAMA_HOST=stand_in.url)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
        env[name] = str(home / name.lower())
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run the cells
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (home / "lab.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"JupyterLab exited: {(home / 'lab.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(up, timeout=60, interval=0.1)
        yield url, token
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture(scope="module")
def page(chromium, lab) -> Iterator[object]:
    """The notebook open in Chromium, its cell run: the chat widget is on the page."""
    from playwright.sync_api import sync_playwright

    url, token = lab
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(f"{url}/lab/tree/chat.ipynb?reset&token={token}")
        # The toolbar's idle indicator shows before the kernel is ready; the status bar does not.
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.locator(".ollama-chat .om-input textarea").wait_for()
        yield page
        browser.close()


def ready(page) -> None:
    """Wait until no answer is streaming, whatever ran before: each test starts afresh."""
    page.wait_for_function("() => document.querySelector('.ollama-chat button.om-stop').disabled")


def last_answer(page) -> object:
    return page.locator(".ollama-chat .om-list .om-assistant").last


def status_text(page) -> str:
    return page.locator(".ollama-chat .om-status").inner_text()


def test_an_answer_streams_in_and_renders_as_html(page):
    ready(page)
    page.evaluate(OBSERVE)
    page.locator(".ollama-chat .om-input textarea").fill("Show me some markdown, please.")
    page.locator(".ollama-chat button.om-send").click()
    page.wait_for_function(
        "() => /tokens\\/s/.test(document.querySelector('.ollama-chat .om-status').textContent)"
    )
    answer = last_answer(page)
    assert answer.locator("strong").inner_text() == "bold"
    assert answer.locator("ol > li").count() == 3
    assert "hello from the chat" in answer.locator("pre code").inner_text()

    frames = page.evaluate("() => window.__frames")
    partial = {f for f in frames if "bold" in f and "That is all." not in f}
    assert len(partial) >= 3, f"the answer should stream in, saw {len(frames)} frames"
    assert (
        page.locator(".ollama-chat .om-user")
        .last.inner_text()
        .strip()
        .endswith("Show me some markdown, please.")
    )
    assert page.locator(".ollama-chat .om-input textarea").input_value() == ""


def test_shift_enter_sends_and_enter_makes_a_new_line(page):
    ready(page)
    box = page.locator(".ollama-chat .om-input textarea")
    box.click()
    page.keyboard.type("Sent from the")
    page.keyboard.press("Enter")
    page.keyboard.type("keyboard")
    assert box.input_value() == "Sent from the\nkeyboard"
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.ollama-chat .om-assistant')]"
        ".some(e => e.textContent.includes('Sent with the keyboard'))"
    )
    assert box.input_value() == ""
    assert "Sent from the" in page.locator(".ollama-chat .om-user").last.inner_text()
    # The key went to the chat, not to JupyterLab: the cell did not run again.
    assert page.locator(".jp-InputArea-prompt").first.inner_text().strip() == "[1]:"


def test_stop_ends_a_slow_answer_and_keeps_what_it_said(page):
    ready(page)
    page.locator(".ollama-chat .om-input textarea").fill("A slow answer, please.")
    page.locator(".ollama-chat button.om-send").click()
    answer = last_answer(page)
    wait_until(lambda: "This" in answer.inner_text(), timeout=15)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".ollama-chat").screenshot(path=str(ARTIFACTS / "chat_widget_streaming.png"))
    clicked = time.monotonic()
    page.locator(".ollama-chat button.om-stop").click()
    page.wait_for_function(
        "() => /stopped/.test(document.querySelector('.ollama-chat .om-status').textContent)",
        timeout=5_000,
    )
    elapsed = time.monotonic() - clicked
    assert elapsed < 1.0, f"Stop took {elapsed:.2f} s in the browser; a word takes 1.2 s"
    stopped = last_answer(page).inner_text()
    assert "stopped" in stopped and "answer" not in stopped
    assert page.locator(".ollama-chat button.om-stop").is_disabled()
    assert page.locator(".ollama-chat button.om-send").is_enabled()

    page.locator(".ollama-chat").screenshot(path=str(ARTIFACTS / "chat_widget.png"))
