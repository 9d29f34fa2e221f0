"""XSS: every channel a model or a server controls, fed the corpus, emits only inert HTML.

Live output in JupyterLab is trusted (nothing sanitizes it), so the product is the sanitizer.
Each test sends the corpus of ``_xss.py`` through one channel over real HTTP (the stand-in, or
for what it cannot say, a hostile server), collects every HTML string the product emits (each
display and each in-place update, each widget value, nested widgets and the Export link too),
and asks the shared checker whether any of it is live. Markers around each payload prove that
it reached the page; the checker itself is tested to flag the corpus when rendered unsafely.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shlex
import sys
import threading
from collections.abc import Iterator
from html import escape as escape_html
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import ipywidgets as w
import pytest
from _xss import (
    CORPUS,
    IMAGE_STRINGS,
    INERT_EVEN_UNSAFE,
    Payload,
    check,
    findings,
    text_of,
    unsafe_renderings,
)
from IPython.utils.capture import capture_output
from test_magics import final_html, run

from ollama_magic.conversation import Conversation
from ollama_magic.core import ask, build_request
from ollama_magic.errors import OllamaError
from ollama_magic.images import thumbnails_html
from ollama_magic.markdown import render_markdown
from ollama_magic.testing import Fault, Reply
from ollama_magic.views import NotebookView
from ollama_magic.widget import ChatWidget
from ollama_magic.widget_html import close_tree as _close_tree
from ollama_magic.widget_html import message_html
from ollama_magic.widget_turn import BubbleView as _BubbleView

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def marked(i: int, payload: Payload) -> list[str]:
    """The payload's stream chunks between two marker paragraphs (proof that it arrived)."""
    return [f"xss{i:03d}a\n\n", *payload.pieces(), f"\n\nxss{i:03d}z"]


def arrived(i: int, markup: str) -> bool:
    text = text_of(markup)
    return f"xss{i:03d}a" in text and f"xss{i:03d}z" in text


def squeezed(text: str) -> str:
    return " ".join(text.split())


def outputs_html(captured: Any) -> list[str]:
    """The HTML of every display and every in-place update, in order."""
    return [o.data.get("text/html", "") for o in captured.outputs]


def check_all(markups: list[str], where: str, problems: list[str]) -> None:
    for n, markup in enumerate(markups):
        check(markup, f"{where} #{n}", problems)


_JS_CLASS = re.compile(r"ollama-chat-[0-9a-f]{8}")


def widget_html(widget: w.Widget, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, HTML) for every HTML string a widget tree puts in the page.

    HTML widgets' values; Output widgets' HTML outputs. The only script is the chat widget's
    own key handling, which must be exactly that resource (no text from anywhere else).
    """
    from ollama_magic.widget_html import resource as _resource

    where = f"{path}/{type(widget).__name__}"
    if isinstance(widget, (w.HTML, w.HTMLMath)):
        yield where, widget.value
    if isinstance(widget, w.Output):
        for output in widget.outputs:
            data = output.get("data", {})
            if "text/html" in data:
                yield where, data["text/html"]
            script = data.get("application/javascript")
            if script is not None:
                assert _JS_CLASS.sub("__CLASS__", script) == _resource("widget.js"), where
    for n, child in enumerate(getattr(widget, "children", ())):
        yield from widget_html(child, f"{where}[{n}]")


def check_widget(widget: w.Widget, where: str, problems: list[str]) -> str:
    """Check every HTML string in the widget; return them joined (to look for markers)."""
    parts = []
    for path, markup in widget_html(widget):
        check(markup, f"{where} {path}", problems)
        parts.append(markup)
    return "".join(parts)


def assert_no(problems: list[str]) -> None:
    assert not problems, f"{len(problems)} live: " + "\n".join(problems[:40])


# -- the checker -------------------------------------------------------------------------------


def test_the_corpus_is_big_and_named_once():
    names = [p.name for p in CORPUS]
    assert len(CORPUS) >= 60
    assert len(set(names)) == len(names)
    assert set(INERT_EVEN_UNSAFE) <= set(names)
    assert sum(bool(p.chunks) for p in CORPUS) >= 5, "some payloads are split on purpose"


def test_the_checker_flags_the_corpus_rendered_unsafely():
    inert = []
    for payload in CORPUS:
        renderings = unsafe_renderings(payload.text)
        if not any(findings(markup) for markup in renderings.values()):
            inert.append(payload.name)
    # Exactly the payloads listed as inert, with their reasons: a payload that stops being
    # flagged (or an entry that no longer applies) must be looked at.
    assert sorted(inert) == sorted(INERT_EVEN_UNSAFE)


@pytest.mark.parametrize(
    ("markup", "rule"),
    [
        ('<a href="&#x6A;avascript:alert(1)">x</a>', "script URL"),
        ('<a href="java&#x09;script:alert(1)">x</a>', "script URL"),
        ('<a href="\x01 VBScript:msgbox(1)">x</a>', "script URL"),
        ('<form action="javascript:alert(1)">', "element"),
        ('<img src="data:image/png;base64,iVBORw0KGgo=" alt="ok">', None),
        ('<img src="data:image/png;base64,iVBORw0KGgo=&quot;x">', "data URL"),
        ('<img src="data:image/svg+xml;base64,PHN2Zz4=">', "data URL"),
        ('<img src="https://example.com/p.png">', "remote resource"),
        ('<img src="/files/p.png">', "remote resource"),
        ('<a download="c.md" href="data:text/markdown;charset=utf-8;base64,SGk=">x</a>', None),
        ('<a href="data:text/markdown;charset=utf-8;base64,SGk=">x</a>', "data URL"),
        ('<a href="https://example.com" target="_blank">x</a>', "tabnabbing"),
        ('<a href="https://example.com" target="_blank" rel="noopener noreferrer">x</a>', None),
        ('<div style="color: var(--jp-ui-font-color2, #6e6e6e)">x</div>', None),
        ('<div style="position: fixed; inset: 0">x</div>', "style attribute"),
        ('<div style="background: URL(https://example.com/l)">x</div>', "style attribute"),
        ("<style>p { color: red }</style>", "style element"),
        ("<details ontoggle=alert(1)>", "event handler"),
        ("<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>", None),
        ("<!-- x -->", "comment"),
        ("<blink>x</blink>", "unexpected element"),
        ("<svg><a>x</a></svg>", "element"),
    ],
)
def test_the_checker_rules(markup, rule):
    rules = {f.rule for f in findings(markup)}
    assert rule in rules if rule else not rules, findings(markup)


def test_the_widgets_own_stylesheet_and_export_link_pass(fake_ollama):
    chat = ChatWidget("llama3.2", host=fake_ollama.url, session=Conversation("own"))
    try:
        problems: list[str] = []
        html = check_widget(chat, "empty chat", problems)
        assert "<style>" in html and "om-export" in html
        chat.conversation.append({"role": "user", "content": "hi"})
        check_widget(chat, "chat with a message", problems)
        assert "data:text/markdown;charset=utf-8;base64," in chat.export_link.value
        assert_no(problems)
    finally:
        chat.close()


def test_benign_markdown_and_thumbnails_pass():
    text = (
        "# Title\n\n*a* **b** `c` ~~d~~\n\n- [link](https://example.com)\n\n"
        f"![pixel](data:image/png;base64,{base64.b64encode(PNG).decode()})\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n```py\nprint('<b>')\n```\n\n> quote\n\n---\n"
    )
    problems: list[str] = []
    check(render_markdown(text), "markdown", problems)
    check(thumbnails_html([base64.b64encode(PNG).decode()], ["a.png"]), "thumbnail", problems)
    assert_no(problems)


# -- answers and thinking, streamed in 3-character pieces: every frame -------------------------


def stepping_clock() -> Any:
    """A clock that moves a second each time it is read: every chunk is a frame."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


class FrameRecorder:
    """A display sink that keeps the HTML of every display and update."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def display(self, bundle: dict[str, str], metadata: dict[str, Any]) -> FrameRecorder:
        self.frames.append(bundle["text/html"])
        return self

    def update(self, bundle: dict[str, str], metadata: dict[str, Any]) -> None:
        self.frames.append(bundle["text/html"])


def bubble_frames(view: _BubbleView) -> list[str]:
    """Every value the live bubble's HTML widgets take (observed as they are set)."""
    frames: list[str] = []
    seen: set[int] = set()

    def value_changed(change: dict[str, Any]) -> None:
        frames.append(change["new"])

    def children_changed(change: dict[str, Any]) -> None:
        for child in change["new"]:
            if isinstance(child, w.HTML) and id(child) not in seen:
                seen.add(id(child))
                frames.append(child.value)
                child.observe(value_changed, names="value")

    view.bubble.observe(children_changed, names="children")
    return frames


def test_every_frame_of_streamed_answers_and_thinking_is_inert(fake_ollama, client):
    """Each payload as thinking and answer, 3 characters a chunk, with a clock that makes
    every chunk a frame: in the magic's view, then in the chat widget's live bubble."""
    problems: list[str] = []
    for i, payload in enumerate(CORPUS):
        pieces = marked(i, payload)
        fake_ollama.add_reply(f"^q{i:03d}$", Reply(text=pieces, thinking=pieces))

        sink = FrameRecorder()
        view = NotebookView(sink=sink, clock=stepping_clock())
        ask(client, build_request("qwen3", f"q{i:03d}", think=True), view)
        assert len(sink.frames) > 2 * len(pieces), "every chunk should make a frame"
        check_all(sink.frames, f"{payload.name} magic frame", problems)
        assert arrived(i, sink.frames[-1]), payload.name

        bubble = _BubbleView(fps=10, clock=stepping_clock())
        frames = bubble_frames(bubble)
        request = build_request("qwen3", f"q{i:03d}", conversation=Conversation(), think=True)
        outcome = ask(client, request, bubble)
        assert len(frames) >= len(pieces), "every chunk should make a frame (if it changed)"
        check_all(frames, f"{payload.name} bubble frame", problems)
        final = message_html(outcome.result.message)  # what replaces the bubble
        check(final, f"{payload.name} message", problems)
        assert arrived(i, final), payload.name
        _close_tree(bubble.bubble)
    assert_no(problems)


# -- through the magic, in a real shell --------------------------------------------------------


def test_cells_history_and_a_chat_on_the_session_are_inert(ipython, fake_ollama):
    """Each payload answered in a %%ollama --chat cell (thinking and answer, every frame the
    cell sends); then %ollama history, and a chat widget opened on that conversation."""
    problems: list[str] = []
    for i, payload in enumerate(CORPUS):
        pieces = marked(i, payload)
        fake_ollama.add_reply(f"^q{i:03d}\n", Reply(text=pieces, thinking=pieces))
        captured = run(ipython, "qwen3 --think --chat", f"q{i:03d}\n\n{payload.text}")
        check_all(outputs_html(captured), f"{payload.name} cell output", problems)
        assert arrived(i, final_html(captured)), payload.name

    with capture_output() as captured:
        ipython.run_line_magic("ollama", "history")
    check_all(outputs_html(captured), "history", problems)
    assert all(arrived(i, final_html(captured)) for i in range(len(CORPUS)))

    magics = ipython.magics_manager.registry["OllamaMagics"]
    chat = ChatWidget(session="default", workspace=magics.workspace)
    try:
        html = check_widget(chat, "chat on the session", problems)
        assert all(arrived(i, html) for i in range(len(CORPUS)))
    finally:
        chat.close()
    assert_no(problems)


# -- the chat widget ---------------------------------------------------------------------------


def test_the_chat_widget_shows_every_payload_inert(fake_ollama):
    """Each payload typed by the user (pasted model output) and answered with thinking, in one
    chat widget: every message, the status line and the Export link after each turn."""
    problems: list[str] = []
    chat = ChatWidget("qwen3", host=fake_ollama.url, session=Conversation("xss"), think="on")
    try:
        for i, payload in enumerate(CORPUS):
            pieces = marked(i, payload)
            fake_ollama.add_reply(f"^ask{i:03d}\n", Reply(text=pieces, thinking=pieces))
            assert chat.ask(f"ask{i:03d}\n\n{payload.text}")
            assert chat.wait(10)
            html = check_widget(chat, payload.name, problems)
            assert arrived(i, html), payload.name
            assert "tokens" in text_of(chat.status.value), "the turn ended well"
        export = re.search(r'href="data:text/markdown;charset=utf-8;base64,([^"]*)"', html)
        assert export and "xss000a" in base64.b64decode(export.group(1)).decode()
    finally:
        chat.close()
    assert_no(problems)


# -- tool names, arguments and results ---------------------------------------------------------


def lookup(q: str) -> str:
    """Look something up (echoes it back: results are text from elsewhere, like a web page).

    Args:
        q: What to look up.
    """
    return q


def test_tool_names_arguments_and_results_are_inert(ipython, fake_ollama):
    """A model calls a tool named by each payload (with the payload as argument name and
    value) and a real tool that returns the payload; the answer then quotes both. Seven
    payloads a cell (14 calls: a round runs at most 16). Then each session's history and a
    chat widget showing its tool messages."""
    problems: list[str] = []
    ipython.user_ns["lookup"] = lookup
    magics = ipython.magics_manager.registry["OllamaMagics"]
    for group in range(0, len(CORPUS), 7):
        payloads = CORPUS[group : group + 7]
        calls = []
        for payload in payloads:
            calls.append({"name": payload.text, "arguments": {payload.text: payload.text}})
            calls.append({"name": "lookup", "arguments": {"q": payload.text}})
        session = f"tools{group:03d}"
        fake_ollama.add_reply(f"^{session}$", Reply(tool_calls=calls))
        captured = run(ipython, f"qwen3 --tools lookup --session {session}", session)
        check_all(outputs_html(captured), f"{session} cell", problems)
        shown = squeezed(text_of(final_html(captured)))
        assert shown.count("no tool named") >= len(payloads), session
        assert all(squeezed(p.text)[:20] in shown for p in payloads), session

        with capture_output() as captured:
            ipython.run_line_magic("ollama", f"history --session {session}")
        check_all(outputs_html(captured), f"{session} history", problems)
        chat = ChatWidget(session=session, workspace=magics.workspace)
        try:
            html = check_widget(chat, f"chat on {session}", problems)
            tool_messages = 2 * len(payloads)
            # The question, the calls, their results and the answer.
            assert html.count('class="om-role"') == 3 + tool_messages
        finally:
            chat.close()
    assert_no(problems)


# -- structured views (-f): the JSON as it streams, the table, the tree, the retry note --------


def test_structured_tables_and_trees_are_inert(ipython, fake_ollama, monkeypatch):
    """All payloads as keys and values of records (a table: pandas, then without pandas) and
    of nested objects (a tree), streamed in 3-character pieces."""
    records = [{"name": p.text, p.text: i} for i, p in enumerate(CORPUS)]
    tree = {p.text: [p.text, {"key": p.text, "n": i}] for i, p in enumerate(CORPUS)}
    problems: list[str] = []
    for name, value in [("records", records), ("tree", tree)]:
        text = json.dumps(value)
        pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
        fake_ollama.add_reply(f"^{name}$", Reply(text=pieces))
        captured = run(ipython, "llama3.2 -f json -o value", name)
        check_all(outputs_html(captured), f"-f json {name}", problems)
        assert ipython.user_ns["value"] == value
        assert ("<table" if name == "records" else "<details open>") in final_html(captured)
    monkeypatch.setitem(sys.modules, "pandas", None)  # the table drawn without pandas
    captured = run(ipython, "llama3.2 -f json", "records")
    check_all(outputs_html(captured), "-f json records without pandas", problems)
    assert "<table><thead>" in final_html(captured)
    assert_no(problems)


def test_a_structured_answer_that_is_asked_for_again_is_inert(ipython, fake_ollama):
    """The invalid answer (all payloads where a number belongs), the note that quotes the
    problem, and the corrected answer."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    ipython.user_ns["Schema"] = schema
    bad = json.dumps({"n": [p.text for p in CORPUS]})

    def reply(request: Any) -> Reply:
        if "That answer was not valid" in request.prompt:
            return Reply(text='{"n": 1}')
        return Reply(text=[bad[i : i + 3] for i in range(0, len(bad), 3)])

    fake_ollama.add_reply(reply)
    captured = run(ipython, "llama3.2 -f Schema --retries 1 -o value", "n?")
    problems: list[str] = []
    check_all(outputs_html(captured), "-f retry", problems)
    assert ipython.user_ns["value"] == {"n": 1}
    note = squeezed(text_of(final_html(captured)))
    assert "Asking again (1/1)" in note and "alert(1)" in note
    assert_no(problems)


def test_a_structured_answer_that_is_not_json_is_inert(ipython, fake_ollama):
    """Text instead of JSON: it streams inside a ```json block, which the payloads' own fences
    close (so the rest is markdown), and ends with the error."""
    text = "\n".join(["xss-start", *(p.text for p in CORPUS), "xss-end"])
    fake_ollama.add_reply("^prose$", Reply(text=[text[i : i + 3] for i in range(0, len(text), 3)]))
    problems: list[str] = []
    with pytest.raises(OllamaError, match="not valid JSON"), capture_output() as captured:
        ipython.run_cell_magic("ollama", "llama3.2 -f json", "prose")
    check_all(outputs_html(captured), "-f json, prose", problems)
    shown = text_of(final_html(captured))
    assert "xss-start" in shown and "xss-end" in shown
    assert_no(problems)


def test_a_dry_run_of_an_earlier_answer_is_inert(ipython):
    """A prompt filled from a variable holding an earlier answer, shown by --dry-run."""
    ipython.user_ns["earlier"] = "\n".join(p.text for p in CORPUS)
    with capture_output() as captured:
        ipython.run_cell_magic("ollama", "llama3.2 --dry-run", "Summarise: {earlier}")
    problems: list[str] = []
    check_all(outputs_html(captured), "--dry-run", problems)
    assert "Filled from the notebook: {earlier}" in text_of(final_html(captured))
    assert_no(problems)


# -- error texts -------------------------------------------------------------------------------


def batches(limit: int = 250) -> list[str]:
    """The payloads joined into texts of at most ``limit`` characters (servers' error texts are
    cut at 300), one payload a line."""
    out: list[str] = []
    for payload in CORPUS:
        if out and len(out[-1]) + 1 + len(payload.text) <= limit:
            out[-1] += "\n" + payload.text
        else:
            out.append(payload.text)
    return out


FAULTS = {
    "HTTP 500": lambda text: Fault(status=500, error=text),
    "HTTP 400": lambda text: Fault(status=400, error=text),
    "error line first": lambda text: Fault(status=200, error=text),
    "error line mid-stream": lambda text: Fault(error_after=2, error=text),
    "proxy HTML page": lambda text: Fault(
        status=502,
        body=f"<html><head><title>{text}</title></head><body>{text}</body></html>",
        content_type="text/html",
    ),
}


@pytest.mark.parametrize("kind", FAULTS)
def test_error_texts_are_inert(ipython, fake_ollama, kind):
    """A server's error text (all payloads, a few per error) in a cell and in the chat widget:
    the answer's error footer, the widget's status line and its failed message."""
    problems: list[str] = []
    missing: list[str] = []  # error texts that did not show (checked after what is live)
    chat = ChatWidget("llama3.2", host=fake_ollama.url, session=Conversation("errors"))
    try:
        for n, text in enumerate(batches()):
            first_line = squeezed(text.split("\n")[0])[:20]
            fake_ollama.inject(FAULTS[kind](text), endpoint="/api/generate", times=1)
            with pytest.raises(OllamaError), capture_output() as captured:
                ipython.run_cell_magic("ollama", "llama3.2", f"err{n}")
            check_all(outputs_html(captured), f"{kind} {n} cell", problems)
            shown = squeezed(text_of(final_html(captured)))
            if kind == "error line mid-stream" and first_line not in shown:
                missing.append(f"cell: {shown!r}")

            fake_ollama.inject(FAULTS[kind](text), endpoint="/api/chat", times=1)
            assert chat.ask(f"err{n}")
            assert chat.wait(10)
            check_widget(chat, f"{kind} {n} widget", problems)
            shown = squeezed(text_of(chat.status.value))
            if not (shown.startswith("✖") and first_line in shown):
                missing.append(f"status: {shown!r}")
    finally:
        chat.close()
    assert_no(problems)
    assert not missing


# -- what only a server says: model names, details, pull status --------------------------------


class HostileOllama:
    """A server that speaks the Ollama API with payloads wherever a name or a status goes.

    The stand-in only lets valid model names exist, but any server (or a proxy, or whatever
    OLLAMA_HOST points at) can send anything. Paths may start with ``/p<N>``: that "server"
    has one model, named by payload N; otherwise every payload is a model.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def _answer(self) -> None:
                match = re.match(r"/p(\d+)(/.*)", self.path)
                names = [server.names[int(match[1])]] if match else server.names
                path = match[2] if match else self.path
                lines = server.answer(path, names)
                kind = "application/x-ndjson" if len(lines) > 1 else "application/json"
                body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> HostileOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @staticmethod
    def answer(path: str, names: list[str]) -> list[dict[str, Any]]:
        """The JSON objects (one, or NDJSON lines) answering ``path``."""
        details = {"family": names[0], "parameter_size": names[-1], "quantization_level": names[0]}
        model = {
            "name": names[0],
            "model": names[0],
            "size": 3_000_000_000,
            "digest": "0" * 64,
            "details": details,
            "capabilities": ["completion"],
        }
        models = [{**model, "name": n, "model": n, "modified_at": n} for n in names]
        if path == "/api/version":
            return [{"version": "0.12.0"}]
        if path == "/api/tags":
            return [{"models": models}]
        if path == "/api/ps":
            return [{"models": [{**m, "expires_at": m["name"], "size_vram": 1} for m in models]}]
        if path == "/api/show":
            text = "\n".join(names)
            return [
                {
                    "capabilities": names,
                    "details": details,
                    "parameters": text,
                    "template": text,
                    "license": text,
                    "modelfile": text,
                }
            ]
        if path == "/api/pull":
            statuses = [{"status": n, "digest": n, "total": 10, "completed": 5} for n in names]
            return [*statuses, {"error": names[-1]}]
        # /api/generate and /api/chat: a short answer from a model named by the payload.
        key = "message" if path == "/api/chat" else "response"
        text = {"role": "assistant", "content": "ok"} if key == "message" else "ok"
        empty = {"role": "assistant", "content": ""} if key == "message" else ""
        return [
            {"model": names[0], key: text, "done": False},
            {"model": names[0], key: empty, "done": True, "done_reason": "stop", "eval_count": 1},
        ]


@pytest.fixture
def hostile() -> Iterator[HostileOllama]:
    with HostileOllama([p.text for p in CORPUS]) as server:
        yield server


def shows_all(markup: str) -> bool:
    shown = squeezed(text_of(markup))
    return all(squeezed(p.text)[:15] in shown for p in CORPUS)


def test_model_names_details_and_pull_status_from_a_server_are_inert(ipython, hostile):
    """%ollama models / ps / show / pull, and cells whose model the server named (the note
    that says it was chosen, the footer)."""
    problems: list[str] = []
    ipython.run_line_magic("config", f"OllamaMagics.host = {hostile.url!r}")
    for command in ("models", "ps", "show llama3.2"):
        with capture_output() as captured:
            ipython.run_line_magic("ollama", command)
        check_all(outputs_html(captured), f"%ollama {command}", problems)
        if command == "show llama3.2":  # markdown: the names are rendered, not shown as typed
            alerts = sum(p.text.count("alert(1)") for p in CORPUS)
            assert text_of(final_html(captured)).count("alert(1)") >= alerts
        else:
            assert shows_all(final_html(captured)), command
    with pytest.raises(OllamaError), capture_output() as captured:
        ipython.run_line_magic("ollama", "pull llama3.2")
    check_all(outputs_html(captured), "%ollama pull", problems)
    assert shows_all("".join(outputs_html(captured))), "every status was drawn"

    for i, payload in enumerate(CORPUS):
        captured = run(ipython, f"--host {hostile.url}/p{i}", "hi")
        check_all(outputs_html(captured), f"{payload.name} chosen model", problems)
        shown = squeezed(text_of(final_html(captured)))
        assert "newest local model" in shown and squeezed(payload.text)[:15] in shown
    assert_no(problems)


def test_model_names_in_the_chat_widget_are_inert(hostile):
    """The widget on that server: the models listed, each one answering (the status line names
    it), and the refresh button's count."""
    problems: list[str] = []
    chat = ChatWidget(host=hostile.url, session=Conversation("names"))
    try:
        assert list(chat.model_picker.options) == [p.text for p in CORPUS]
        for payload in CORPUS:
            chat.model = payload.text
            assert chat.ask("hi")
            assert chat.wait(10)
            check_widget(chat, payload.name, problems)
            assert squeezed(payload.text)[:15] in squeezed(text_of(chat.status.value))
        chat.refresh_button.click()
        check_widget(chat, "refreshed", problems)
        assert f"{len(CORPUS)} models" in text_of(chat.status.value)
    finally:
        chat.close()
    assert_no(problems)


# -- image strings -----------------------------------------------------------------------------


def test_image_strings_in_cells_are_inert(ipython, fake_ollama, tmp_path):
    """Strings passed as images (``-i NAME``), and an image file whose name is a payload."""
    problems: list[str] = []
    refused = []
    for name, value in IMAGE_STRINGS.items():
        ipython.user_ns["img"] = value
        with capture_output() as captured:
            try:
                ipython.run_cell_magic("ollama", "llava -i img", "What is this?")
            except OllamaError:
                refused.append(name)
        check_all(outputs_html(captured), f"image {name}", problems)
    assert "data-uri-attribute-breakout" in refused
    assert "data-uri-svg" not in refused, "valid base64, shown by name, not as a picture"

    path = tmp_path / '"><img src=x onerror=alert(1)>.png'
    path.write_bytes(PNG)
    captured = run(ipython, f"llava -i {shlex.quote(str(path))}", "What is this?")
    check_all(outputs_html(captured), "image file named by a payload", problems)
    assert f'alt="{escape_html(str(path))}"' in outputs_html(captured)[0], "named, escaped"
    assert_no(problems)


def test_image_strings_in_the_chat_widget_are_inert(fake_ollama):
    """``ChatWidget.ask(..., images=[...])`` with each string; refused ones send nothing."""
    problems: list[str] = []
    chat = ChatWidget("llava", host=fake_ollama.url, session=Conversation("images"))
    try:
        for name, value in IMAGE_STRINGS.items():
            before = len(fake_ollama.requests)
            try:
                assert chat.ask(f"look: {name}", images=[value])
                assert chat.wait(10)
            except OllamaError:
                assert len(fake_ollama.requests) == before, f"{name} was refused but sent"
                assert name != "data-uri-svg"
            else:
                assert name not in ("data-uri-attribute-breakout", "data-uri-tag-breakout")
            check_widget(chat, f"image {name}", problems)
        assert chat.ask(CORPUS[0].text, images=[PNG])
        assert chat.wait(10)
        html = check_widget(chat, "a picture and a payload", problems)
        assert 'src="data:image/png;base64,iVBORw0KGgo' in html
    finally:
        chat.close()
    assert_no(problems)


def test_image_strings_already_in_a_conversation_are_inert(fake_ollama):
    """A conversation filled by code (not through ``ask``) may hold any string as an image:
    the chat widget shows it without a crash, and as a picture only if it is one."""
    conversation = Conversation("raw images")
    for name, value in IMAGE_STRINGS.items():
        conversation.append({"role": "user", "content": name, "images": [value]})
    chat = ChatWidget("llava", host=fake_ollama.url, session=conversation)
    try:
        problems: list[str] = []
        html = check_widget(chat, "conversation with raw images", problems)
        assert all(name in text_of(html) for name in IMAGE_STRINGS)
        assert_no(problems)
    finally:
        chat.close()
