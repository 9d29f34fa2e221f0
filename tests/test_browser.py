"""The chat widget in a real JupyterLab and a real Notebook 7, driven in headless Chromium.

Each frontend's server runs on 127.0.0.1 with its own temporary config, runtime, settings and
workspace directories; both start at once, and their kernels inherit ``OLLAMA_HOST``, which
points at a stand-in server running in this process. Debian's Chromium is driven through
Playwright (never ``playwright install``); one browser serves both frontends, one page each.
Screenshots of the chat go to ``tests/artifacts/chat_widget*.png`` for people to look at (the
new widget, one while an answer streams, one at the end; per frontend). Each test waits until
no answer is streaming, so they do not depend on each other's order.
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
from dataclasses import dataclass
from pathlib import Path

import pytest
from _util import wait_until

from ollama_magic.conversation import Conversation
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


@dataclass(frozen=True)
class Frontend:
    """How to start one Jupyter frontend and where it shows the notebook."""

    module: str
    """What ``python -m`` runs."""
    app: str
    """Its application class, for ``--<App>.expose_app_in_browser``."""
    path: str
    """The notebook's page, below the server's URL."""


FRONTENDS = {
    "lab": Frontend("jupyterlab", "LabApp", "/lab/tree/chat.ipynb?reset"),
    "notebook": Frontend("notebook", "JupyterNotebookApp", "/notebooks/chat.ipynb"),
}
ANSWER = (
    "Here is **bold** text, and a list:\n\n"
    "1. the first point\n2. the second point\n3. the third point\n\n"
    "```python\nprint('hello from the chat')\n```\n\nThat is all."
)
EXPORTED = "Exported, with *markdown* and `<b>raw html</b>`: café ✓"
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
# Records every text the status line shows from now on (a warning may last only a moment).
WATCH_STATUS = """
() => {
  const status = document.querySelector(".ollama-chat .om-status");
  window.__statuses = [status.textContent];
  new MutationObserver(() => window.__statuses.push(status.textContent))
    .observe(status, { childList: true, subtree: true, characterData: true });
}
"""
# Buttons stop taking the focus on a click, as in Safari (a mousedown whose default action is
# prevented does not move the focus); undone with window.__keepFocus.abort().
KEEP_FOCUS_ON_CLICK = """
() => {
  window.__keepFocus = new AbortController();
  document.addEventListener("mousedown", (event) => {
    if (event.target.closest("button")) event.preventDefault();
  }, { capture: true, signal: window.__keepFocus.signal });
}
"""
# The notebook's kernel is up and idle (what JupyterLab's status bar shows as "Idle"; the
# toolbar's indicator says idle before the kernel is ready).
KERNEL_IDLE = """
() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const session = panel && panel.sessionContext;
  return !!session && session.isReady && session.kernelDisplayStatus === "idle";
}
"""
# The last two messages are this question and its finished answer.
TURN_DONE = """
([question, answer]) => {
  const messages = document.querySelectorAll(".ollama-chat .om-list .om-msg");
  const n = messages.length;
  return n >= 2 && document.querySelector(".ollama-chat button.om-stop").disabled
    && messages[n - 2].classList.contains("om-user")
    && messages[n - 2].textContent.includes(question)
    && messages[n - 1].classList.contains("om-assistant")
    && messages[n - 1].textContent.includes(answer);
}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A Jupyter server started for the tests, stopped by its own PID."""

    name: str
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_server(name: str, frontend: Frontend, home: Path, ollama_url: str) -> Server:
    """Start a frontend's server on 127.0.0.1 in its own directories (no waiting)."""
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
    env = dict(os.environ, OLLAMA_HOST=ollama_url)
    for variable in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
        env[variable] = str(home / variable.lower())
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        frontend.module,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        f"--{frontend.app}.expose_app_in_browser=True",  # window.jupyterapp, to run the cells
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(name, f"http://127.0.0.1:{port}", token, process, log)


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
        server.add_reply("keyboard", "Sent with the keyboard: **it** works.")
        server.add_reply("first thing", "The first thing is **one**.")
        server.add_reply("second thing", "The second thing is **two**.")
        server.add_reply("export", EXPORTED)
        slow = "This answer comes slowly, one word at a time, and will be stopped."
        server.add_reply("slow", Reply(text=slow, fault=Fault(delay=1.2)))
        yield server


@pytest.fixture(scope="module")
def servers(stand_in, tmp_path_factory) -> Iterator[dict[str, Server]]:
    """JupyterLab and Notebook 7, started at the same time (each takes seconds to start)."""
    started: dict[str, Server] = {}
    try:
        for name, frontend in FRONTENDS.items():
            home = tmp_path_factory.mktemp(name)
            started[name] = start_server(name, frontend, home, stand_in.url)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def browser(chromium) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module", params=list(FRONTENDS))
def frontend(request) -> str:
    """Which frontend the module's tests run in: each test runs in both."""
    return request.param


@pytest.fixture(scope="module")
def page(browser, servers, frontend) -> Iterator[object]:
    """The notebook open in the frontend, its cell run: the chat widget is on the page."""
    server = servers[frontend]
    wait_until(server.up, timeout=60, interval=0.1)
    context = browser.new_context(viewport={"width": 1200, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    separator = "&" if "?" in FRONTENDS[frontend].path else "?"
    page.goto(f"{server.url}{FRONTENDS[frontend].path}{separator}token={server.token}")
    page.wait_for_function(KERNEL_IDLE, timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.locator(".ollama-chat .om-input textarea").wait_for()
    # The widget as first shown: a cell run again would put a new one in its place.
    page.evaluate("() => { window.__chat = document.querySelector('.ollama-chat'); }")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".ollama-chat").screenshot(path=str(ARTIFACTS / f"{shot_name(frontend)}_new.png"))
    yield page
    context.close()


def shot_name(frontend: str) -> str:
    """Screenshots are chat_widget*.png in JupyterLab, chat_widget_notebook*.png in Notebook 7."""
    return "chat_widget" if frontend == "lab" else f"chat_widget_{frontend}"


def ready(page) -> None:
    """Wait until no answer is streaming, whatever ran before: each test starts afresh."""
    page.wait_for_function("() => document.querySelector('.ollama-chat button.om-stop').disabled")
    page.locator(".ollama-chat .om-input textarea").fill("")  # what a failed test left there


def wait_for_turn(page, question: str, answer: str, timeout: float = 10) -> None:
    """Wait until ``question`` and its finished ``answer`` are the last two messages."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(TURN_DONE, arg=[question, answer], timeout=timeout * 1000)
    except PlaywrightTimeout:
        shown = page.evaluate(
            "() => [...document.querySelectorAll('.ollama-chat .om-list .om-msg')]"
            ".slice(-2).map(e => e.textContent)"
        )
        raise AssertionError(
            f"no answer to {question!r} within {timeout} s; the status says "
            f"{status_text(page)!r}, the last messages are {shown}"
        ) from None


def status_text(page) -> str:
    return page.locator(".ollama-chat .om-status").inner_text()


def last_answer(page) -> object:
    return page.locator(".ollama-chat .om-list .om-assistant").last


def still_the_first_run(page) -> bool:
    """The cell ran once and its widget is still the one on the page."""
    same = page.evaluate(
        "() => document.querySelectorAll('.ollama-chat').length === 1"
        " && document.querySelector('.ollama-chat') === window.__chat"
    )
    return same and page.locator(".jp-InputArea-prompt").first.inner_text().strip() == "[1]:"


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


def test_send_right_after_an_answer_sends_what_the_box_shows(page):
    ready(page)
    page.evaluate(WATCH_STATUS)
    box = page.locator(".ollama-chat .om-input textarea")
    send = page.locator(".ollama-chat button.om-send")
    # As in Safari, and Firefox on macOS, a click leaves the focus in the box: the box never
    # blurs, so nothing but the widget itself tells the kernel what the box holds.
    page.evaluate(KEEP_FOCUS_ON_CLICK)
    try:
        box.fill("What is the first thing?")  # typed, not left: no change event
        send.click()
        wait_for_turn(page, "What is the first thing?", "The first thing is one.")
        box.fill("And the second thing?")  # at once, as a quick user would
        send.click()
        wait_for_turn(page, "And the second thing?", "The second thing is two.")
    finally:
        page.evaluate("() => window.__keepFocus.abort()")
    statuses = page.evaluate("() => window.__statuses")
    assert not [s for s in statuses if "Nothing to send" in s], statuses
    assert box.input_value() == ""


@pytest.mark.parametrize("keys", ["Shift+Enter", "Control+Enter"])
def test_the_keyboard_sends_and_enter_makes_a_new_line(page, keys):
    ready(page)
    box = page.locator(".ollama-chat .om-input textarea")
    box.click()
    page.keyboard.type("Sent from the")
    page.keyboard.press("Enter")
    page.keyboard.type(f"keyboard with {keys}")
    assert box.input_value() == f"Sent from the\nkeyboard with {keys}"
    page.keyboard.press(keys)
    wait_for_turn(page, f"keyboard with {keys}", "Sent with the keyboard: it works.")
    assert box.input_value() == ""
    # The key went to the chat, not to the notebook: the cell did not run again.
    assert still_the_first_run(page), "the notebook ran the cell again"


def test_export_downloads_the_conversation_as_markdown(page, stand_in):
    ready(page)
    page.locator(".ollama-chat .om-input textarea").fill("Something to export, please.")
    page.locator(".ollama-chat button.om-send").click()
    wait_for_turn(page, "Something to export, please.", "Exported, with markdown")
    export = page.locator(".ollama-chat a.om-export")
    assert "markdown" in export.get_attribute("title")
    with page.expect_download() as info:
        export.click()
    download = info.value
    assert download.suggested_filename == "chat-browser.md"
    saved = Path(download.path()).read_text("utf-8")
    # The conversation as the kernel holds it: what it sent with the last question, and
    # the answer to it.
    conversation = Conversation("browser")
    for message in stand_in.last_request("/api/chat").body["messages"]:
        conversation.append(message)
    conversation.append({"role": "assistant", "content": EXPORTED})
    assert saved == conversation.to_markdown()
    assert saved.endswith(
        f"**User**\n\nSomething to export, please.\n\n---\n\n**Assistant**\n\n{EXPORTED}"
    )
    assert still_the_first_run(page), "the download left the notebook as it was"


def test_stop_ends_a_slow_answer_and_keeps_what_it_said(page, frontend):
    ready(page)
    page.locator(".ollama-chat .om-input textarea").fill("A slow answer, please.")
    page.locator(".ollama-chat button.om-send").click()
    answer = last_answer(page)
    wait_until(lambda: "This" in answer.inner_text(), timeout=15)
    shot = page.locator(".ollama-chat")
    shot.screenshot(path=str(ARTIFACTS / f"{shot_name(frontend)}_streaming.png"))
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

    shot.screenshot(path=str(ARTIFACTS / f"{shot_name(frontend)}.png"))
