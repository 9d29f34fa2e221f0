"""The fault matrix: every way a server can fail, against every way of asking.

Rows are faults (the server down, HTTP errors, error lines, a cut connection, bytes that are not
an answer, servers that stall or trickle, a redirect to another host); columns are the ways a
user asks (``%%ollama``, ``%%ollama --chat``, ``%%ollama -f``, the chat widget, the Client).
Each cell checks what the user notices: a one- or two-line error that names the cause and the
next step, the partial text kept, the chat history right, the very next request answered by the
same shell, widget or client, no traceback, and no credential anywhere in what was shown.

Faults the stand-in can inject are injected there; the others come from :class:`FaultFront`,
a small HTTP front that forwards to the stand-in and misbehaves once when armed, so that the
same host answers normally right after.
"""

from __future__ import annotations

import abc
import atexit
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any

import pytest
from _util import plain
from IPython.utils.capture import capture_output
from test_magics import final_html

import ollama_magic.client
from ollama_magic import (
    BadRequest,
    Client,
    ModelNotFound,
    NotOllama,
    OllamaError,
    OllamaTimeout,
    ServerError,
    ServerUnreachable,
    StreamError,
    Unauthorized,
)
from ollama_magic.conversation import Conversation
from ollama_magic.testing import FakeOllama, Fault, Reply
from ollama_magic.widget import ChatWidget

# The answer is JSON, so that the structured column can parse it; as text it is a paragraph.
TOKENS = ['{"word": ', '"one ', "two ", "three", '"}']
ANSWER = "".join(TOKENS)
VALUE = {"word": "one two three"}
SCHEMA = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
PROMPT = "long answer please"
# Invalid UTF-8 inside a token: that character becomes U+FFFD, the rest of the answer follows.
BAD_UTF8 = [b'{"word": ', b'"one ', b"caf\xff ", b"two ", b"three", b'"}']
ANSWER_UTF8 = '{"word": "one caf\ufffd two three"}'

KEY = "sk-matrix-4f1b9c2e"  # OLLAMA_API_KEY: sent as a bearer token
HEADER = "hdr-matrix-77ad02"  # a proxy's X-Api-Key, from the settings
SECRETS = (KEY, HEADER)
TIMEOUT = 1.0  # the read timeout every column uses: stalls must not cost long
GENERATION = ("/api/generate", "/api/chat")


def reply_to(server: FakeOllama) -> FakeOllama:
    server.add_reply("long answer", Reply(text=TOKENS))
    return server


# -- a front that misbehaves once -----------------------------------------------------------


class FaultFront:
    """An HTTP server on 127.0.0.1 that forwards each request to ``upstream``, except that the
    first generation request after :meth:`arm` is answered by the misbehaviour given.

    One request per connection (``Connection: close`` both ways), one thread per connection,
    so a stalled answer does not hold up the next request.
    """

    def __init__(self, upstream: str) -> None:
        self._upstream = ("127.0.0.1", int(upstream.rsplit(":", 1)[1]))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._armed: Callable[[FaultFront, socket.socket, str], None] | None = None
        self.released = threading.Event()  # ends stalls and trickles
        self.heads: list[bytes] = []
        self.redirect_to = ""  # where :func:`redirect` sends the client
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="fault-front", daemon=True)

    def __enter__(self) -> FaultFront:
        self._accept.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.released.set()
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (close alone does not)
        self._listener.close()
        for thread in [self._accept, *self._threads]:
            thread.join(10)

    def arm(self, misbehave: Callable[[FaultFront, socket.socket, str], None]) -> None:
        with self._lock:
            self._armed = misbehave

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._connection, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK waits
            try:
                head, body = read_request(conn)
                if not head:
                    return
                self.heads.append(head)
                path = head.split(b" ", 2)[1].decode()
                with self._lock:
                    misbehave = self._armed if path in GENERATION else None
                    if misbehave is not None:
                        self._armed = None
                if misbehave is not None:
                    misbehave(self, conn, path)
                else:
                    self._forward(conn, head, body)
            except OSError:
                pass  # the client left: nothing more to do

    def _forward(self, conn: socket.socket, head: bytes, body: bytes) -> None:
        with socket.create_connection(self._upstream, timeout=30) as upstream:
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.sendall(closing(head) + body)
            response = b""
            while b"\r\n\r\n" not in response:
                data = upstream.recv(65536)
                if not data:
                    break
                response += data
            response_head, _, rest = response.partition(b"\r\n\r\n")
            conn.sendall(closing(response_head + b"\r\n\r\n") + rest)
            while data := upstream.recv(65536):
                conn.sendall(data)


def read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """One request's head (with its blank line) and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n", body


def closing(head: bytes) -> bytes:
    """A request or response head that says ``Connection: close`` (and nothing else about it)."""
    head = re.sub(rb"(?im)^connection:[^\r\n]*\r\n", b"", head)
    return head[:-2] + b"Connection: close\r\n\r\n"


# Chunked, as Ollama streams: each write reaches the client as it is sent.
NDJSON_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def chunk_line(path: str, text: str | bytes, done: bool = False) -> bytes:
    """One NDJSON line of an answer as /api/generate or /api/chat sends it; bytes go in as is
    (invalid UTF-8 included)."""
    if isinstance(text, bytes):
        raw = text.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    else:
        raw = json.dumps(text)[1:-1].encode()
    if path == "/api/chat":
        head, tail = b'{"model":"llama3.2","message":{"role":"assistant","content":"', b'"}'
    else:
        head, tail = b'{"model":"llama3.2","response":"', b'"'
    end = b',"done":true,"done_reason":"stop"}' if done else b',"done":false}'
    return head + raw + tail + end + b"\n"


def first_tokens(path: str) -> bytes:
    return NDJSON_HEAD + chunked(chunk_line(path, TOKENS[0]) + chunk_line(path, TOKENS[1]))


def malformed(front: FaultFront, conn: socket.socket, path: str) -> None:
    conn.sendall(first_tokens(path) + chunked(b'{"model": "llama3.2", "respo\n') + LAST_CHUNK)


def five_megabytes(front: FaultFront, conn: socket.socket, path: str) -> None:
    conn.sendall(first_tokens(path))
    line = chunk_line(path, "x" * 5_000_000)
    for start in range(0, len(line), 65536):
        conn.sendall(chunked(line[start : start + 65536]))
    rest = chunk_line(path, TOKENS[2]) + chunk_line(path, "", done=True)
    conn.sendall(chunked(rest) + LAST_CHUNK)


def stalled(front: FaultFront, conn: socket.socket, path: str) -> None:
    conn.sendall(first_tokens(path))
    front.released.wait(10)


def trickling(front: FaultFront, conn: socket.socket, path: str) -> None:
    # A byte every 0.25 s: the socket is never silent for the read timeout, but no line ends.
    # After 5 s it gives up (so a client that would wait forever fails the test instead).
    conn.sendall(first_tokens(path) + chunked(b'{"model": "llama3.2", "response": "'))
    for _ in range(20):
        if front.released.wait(0.25):
            return
        conn.sendall(chunked(b"a"))


def invalid_utf8(front: FaultFront, conn: socket.socket, path: str) -> None:
    lines = [chunk_line(path, token) for token in BAD_UTF8] + [chunk_line(path, "", done=True)]
    conn.sendall(NDJSON_HEAD + b"".join(chunked(line) for line in lines) + LAST_CHUNK)


def redirect(front: FaultFront, conn: socket.socket, path: str) -> None:
    conn.sendall(
        b"HTTP/1.1 307 Temporary Redirect\r\n"
        + f"Location: {front.redirect_to}{path}\r\n".encode()
        + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )


# -- the rows -------------------------------------------------------------------------------

HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in to the proxy</title></head>\n"
    "<body><form>user <input name=u></form></body></html>\n"
)
NGINX_404 = "<html>\n<head><title>404 Not Found</title></head>\n<body>nginx</body>\n</html>\n"


@dataclass
class Row:
    """A fault: how to cause it once, and what a user should then see."""

    name: str
    error: type[OllamaError] | tuple[type[OllamaError], ...] | None  # None: the answer comes
    cause: str = ""  # a pattern the error's first line must match
    partial: str = ""  # the text that arrived before the failure
    fault: Fault | None = None  # injected into the stand-in
    misbehave: Callable[[FaultFront, socket.socket, str], None] | None = None  # by the front
    down: bool = False  # nothing listens until the server is started
    within: float = 10.0  # seconds the failing request may take at most
    answer: str = ANSWER  # a row that is no error: the text that should arrive
    value: Any = field(default_factory=lambda: VALUE)  # ... and what -f makes of it


ROWS = [
    Row(
        "server down", ServerUnreachable, r"Cannot reach Ollama at .*connection refused", down=True
    ),
    Row(
        "404",
        ModelNotFound,
        r"Model 'llama3\.2(:latest)?' is not on the Ollama server",
        fault=Fault(status=404, error='model "llama3.2" not found, try pulling it first'),
    ),
    Row(
        "400",
        BadRequest,
        r"does not support thinking",
        fault=Fault(status=400, error='"llama3.2" does not support thinking'),
    ),
    Row(
        "401",
        Unauthorized,
        r"HTTP 401.*unauthorized",
        fault=Fault(status=401, error="unauthorized"),
    ),
    Row(
        "500",
        ServerError,
        r"HTTP 500.*llama runner process has terminated",
        fault=Fault(status=500, error="llama runner process has terminated: signal: killed"),
    ),
    Row(
        "error line before tokens",
        StreamError,
        r"error.*model runner has unexpectedly stopped",
        fault=Fault(error_after=0, error="model runner has unexpectedly stopped"),
    ),
    Row(
        "error line after tokens",
        StreamError,
        r"CUDA error: out of memory",
        partial="".join(TOKENS[:3]),
        fault=Fault(error_after=3, error="CUDA error: out of memory"),
    ),
    Row(
        "cut connection",
        StreamError,
        r"connection .*broke",
        partial="".join(TOKENS[:2]),
        fault=Fault(cut_after=2),
    ),
    Row(
        "malformed line",
        StreamError,
        r"not JSON",
        partial="".join(TOKENS[:2]),
        misbehave=malformed,
    ),
    Row(
        "5 MB line",
        StreamError,
        r"line longer than [\d,.]+ ?(MB|bytes)",
        partial="".join(TOKENS[:2]),
        misbehave=five_megabytes,
    ),
    Row(
        "stalled server",
        OllamaTimeout,
        r"sent nothing for 1 s",
        partial="".join(TOKENS[:2]),
        misbehave=stalled,
        within=TIMEOUT + 3,
    ),
    Row(
        "trickling server",
        OllamaTimeout,
        r"no complete line for 1 s",
        partial="".join(TOKENS[:2]),
        misbehave=trickling,
        within=TIMEOUT + 3,  # about the timeout, not the 5 s the trickle would last
    ),
    Row(
        "invalid UTF-8",
        None,
        misbehave=invalid_utf8,
        answer=ANSWER_UTF8,
        value={"word": "one caf\ufffd two three"},
    ),
    Row(
        "HTML page with 200",
        (StreamError, NotOllama),
        r"not JSON.*DOCTYPE html|not the Ollama API",
        fault=Fault(status=200, body=HTML_PAGE, content_type="text/html"),
    ),
    Row(
        "HTML page with 404",
        NotOllama,
        r"'404 Not Found'.*not the Ollama API",
        fault=Fault(status=404, body=NGINX_404, content_type="text/html"),
    ),
    Row("cross-host redirect", None, misbehave=redirect),
]


class Scene:
    """The servers of one cell: the stand-in, maybe a front or a port where nothing listens."""

    def __init__(self, row: Row, fake: FakeOllama, stack: list[Any]) -> None:
        self.row = row
        self.fake = reply_to(fake)
        self.other: FakeOllama | None = None
        self._stack = stack
        self._held: socket.socket | None = None
        if row.down:
            self._held = socket.socket()  # bound, not listening: connections are refused
            self._held.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{self._held.getsockname()[1]}"
        elif row.misbehave is not None:
            self.front = FaultFront(fake.url).__enter__()
            stack.append(self.front)
            self.url = self.front.url
            if row.misbehave is redirect:
                self.other = reply_to(FakeOllama().start())
                stack.append(self.other)
                self.front.redirect_to = self.other.url
        else:
            self.url = fake.url

    def arm(self, path: str) -> None:
        """Make the next request to ``path`` fail in this row's way."""
        if self.row.fault is not None:
            self.fake.inject(self.row.fault, endpoint=path, times=1)
        elif self.row.misbehave is not None:
            self.front.arm(self.row.misbehave)

    def recover(self) -> None:
        """A server that was down comes up (on the same port)."""
        if self._held is not None:
            port = self._held.getsockname()[1]
            self._held.close()
            self._held = None
            self.fake = reply_to(FakeOllama(port=port).start())
            self._stack.append(self.fake)

    def close(self) -> None:
        if self._held is not None:
            self._held.close()


@pytest.fixture
def scene_of(fake_ollama, monkeypatch, _clean_environment) -> Iterator[Callable[[Row], Scene]]:
    """Make the scene of a row; every credential is set, so that none may show."""
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    stack: list[Any] = []
    scenes: list[Scene] = []

    def make(row: Row) -> Scene:
        scenes.append(Scene(row, fake_ollama, stack))
        return scenes[-1]

    yield make
    for scene in scenes:
        scene.close()
    for server in reversed(stack):
        if isinstance(server, FaultFront):
            server.__exit__(None, None, None)
        else:
            server.stop()


@pytest.fixture(autouse=True)
def _shell_not_kept_for_exit(ipython) -> Iterator[None]:
    """Each InteractiveShell registers ``atexit_operations``, which runs ``gc.collect()``;
    kept until exit, the 80 shells of this module made the interpreter's exit take 12 s.
    (The shell is cleared after each test anyway; the helper that makes it could do this.)"""
    yield
    atexit.unregister(ipython.atexit_operations)


# -- what a user sees -----------------------------------------------------------------------


@dataclass
class Seen:
    """What one request left for the user."""

    failed: bool = False
    error: BaseException | None = None  # the exception, where the user can have it
    lines: list[str] = field(default_factory=list)  # the error as shown
    shown: str = ""  # every text shown, markup removed
    everything: str = ""  # every byte produced (outputs, metadata, widget values, errors)
    kept: Any = None  # -o NAME, error.partial, the widget's partial message
    history: list[str] | None = None  # the conversation's contents, when there is one
    value: Any = None  # what a successful request gave


def text_of(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


def magic_seen(ipython, line: str, conversation: Conversation | None) -> Seen:
    ipython.user_ns.pop("out", None)
    with capture_output() as captured:
        result = ipython.run_cell(f"%%ollama {line}\n{PROMPT}")
    stdout, stderr = plain(captured.stdout), plain(captured.stderr)
    html = final_html(captured)
    dumped = json.dumps([[o.data, o.metadata] for o in captured.outputs], ensure_ascii=False)
    kept = ipython.user_ns.get("out")
    return Seen(
        failed=result.error_in_exec is not None,
        error=result.error_in_exec,
        lines=stdout.strip().splitlines() if result.error_in_exec else [],
        shown=text_of(html)
        + "\n"
        + "\n".join(o.data.get("text/plain", "") for o in captured.outputs),
        everything="\n".join([stdout, stderr, dumped, repr(kept)]),
        kept=kept,
        history=None if conversation is None else [m["content"] for m in conversation.messages],
        value=kept,
    )


def html_values(widget: Any) -> list[str]:
    values = [widget.value] if hasattr(widget, "value") and isinstance(widget.value, str) else []
    for child in getattr(widget, "children", ()):
        values += html_values(child)
    return values


def widget_seen(chat: ChatWidget) -> Seen:
    chat.input.value = PROMPT
    chat.send_button.click()
    assert chat.wait(20), "the answer did not end in time"
    status = text_of(chat.status.value)
    transcript = text_of("".join(html_values(chat.message_list)))
    failed = "om-error" in chat.status.value
    messages = chat.messages
    return Seen(
        failed=failed,
        lines=status.splitlines() if failed else [],
        shown=transcript + "\n" + status,
        everything="\n".join(
            [*html_values(chat), json.dumps(chat.out.outputs), repr(chat), str(messages)]
        ),
        kept=transcript,
        history=[m["content"] for m in messages],
        value=messages[-1]["content"] if messages and not failed else None,
    )


def client_seen(client: Client) -> Seen:
    received: list[str] = []
    try:
        stream = client.generate("llama3.2", PROMPT)
        for chunk in stream:
            received.append(chunk.content)
    except OllamaError as error:
        lines = [plain(line) for line in error._render_traceback_()]
        return Seen(
            failed=True,
            error=error,
            lines=lines,
            shown="".join(received) + "\n" + "\n".join(lines),
            everything="\n".join([*lines, repr(error), str(error), error.partial, repr(client)]),
            kept=error.partial,
        )
    text = "".join(received)
    return Seen(shown=text, everything=text + repr(client) + repr(stream), value=text)


# -- the columns ----------------------------------------------------------------------------


class Column(abc.ABC):
    """A way of asking: ``start`` sets it up on a host, ``ask`` sends the prompt once."""

    name = ""
    path = "/api/generate"
    chat = False

    def start(self, ipython, url: str) -> None:  # noqa: B027 (most columns need no set-up)
        """Set up on the host ``url`` (nothing, unless a column needs it)."""

    @abc.abstractmethod
    def ask(self) -> Seen:
        """Send the prompt once; what the user saw."""

    def stop(self) -> None:  # noqa: B027 (most columns hold nothing open)
        """Let go of what ``start`` set up."""

    def expected(self, answer: str, value: Any) -> Any:
        return answer


def configure(ipython, url: str) -> Any:
    ipython.run_line_magic("config", f"OllamaMagics.host = {url!r}")
    ipython.run_line_magic("config", f"OllamaMagics.timeout = {TIMEOUT}")
    ipython.run_line_magic("config", f"OllamaMagics.headers = {{'X-Api-Key': {HEADER!r}}}")
    return ipython.magics_manager.registry["OllamaMagics"]


class CellMagic(Column):
    name = "%%ollama"
    line = "llama3.2 -o out"

    def start(self, ipython, url: str) -> None:
        self.ipython = ipython
        self.magics = configure(ipython, url)
        ipython.user_ns["schema"] = SCHEMA

    def conversation(self) -> Conversation | None:
        return None

    def ask(self) -> Seen:
        return magic_seen(self.ipython, self.line, self.conversation())


class ChatMagic(CellMagic):
    name = "--chat"
    line = "llama3.2 --chat -o out"
    path = "/api/chat"
    chat = True

    def conversation(self) -> Conversation | None:
        return self.magics.workspace.conversations["default"]


class StructuredMagic(CellMagic):
    name = "-f"
    line = "llama3.2 -f schema -o out"

    def expected(self, answer: str, value: Any) -> Any:
        return value


class Widget(Column):
    name = "ChatWidget"
    path = "/api/chat"
    chat = True

    def start(self, ipython, url: str) -> None:
        magics = configure(ipython, url)
        self.widget = ChatWidget(
            "llama3.2", host=url, session=Conversation("m"), workspace=magics.workspace
        )

    def ask(self) -> Seen:
        return widget_seen(self.widget)

    def stop(self) -> None:
        self.widget.close()


class ClientColumn(Column):
    name = "Client"

    def start(self, ipython, url: str) -> None:
        self.client = Client(url, timeout=TIMEOUT, headers={"X-Api-Key": HEADER})

    def ask(self) -> Seen:
        return client_seen(self.client)

    def stop(self) -> None:
        self.client.close()


COLUMNS = [CellMagic, ChatMagic, StructuredMagic, Widget, ClientColumn]


def cap_lines(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """The longest NDJSON line clients accept: the module's setting (and the Client class's
    copy of it, which test_the_line_cap_is_set_by_the_module_setting checks on its own)."""
    monkeypatch.setattr(ollama_magic.client, "MAX_LINE_BYTES", size)
    if hasattr(Client, "max_line_bytes"):
        monkeypatch.setattr(Client, "max_line_bytes", size)


def assert_clean(seen: Seen) -> None:
    """No traceback and no credential in anything the request produced."""
    assert "Traceback (most recent call last)" not in seen.everything
    for secret in SECRETS:
        assert secret not in seen.everything, "a credential was shown"


@pytest.mark.parametrize("column", COLUMNS, ids=[c.name for c in COLUMNS])
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_fault_matrix(row: Row, column: type[Column], ipython, scene_of, monkeypatch):
    cap_lines(monkeypatch, 1_000_000)  # so that the 5 MB line is over the cap
    scene = scene_of(row)
    asking = column()
    asking.start(ipython, scene.url)
    try:
        history: list[str] = []
        if not row.down:  # a turn that works first, so the history has something to keep
            first = asking.ask()
            assert not first.failed, first.lines
            if asking.chat:
                history = [PROMPT, ANSWER]
                assert first.history == history
        scene.arm(asking.path)
        started = time.monotonic()
        seen = asking.ask()
        took = time.monotonic() - started
        assert_clean(seen)
        assert took < row.within, f"the request took {took:.1f} s"

        if row.error is None:  # not an error: the answer arrives whole
            assert not seen.failed, seen.lines
            assert seen.value == asking.expected(row.answer, row.value)
            if asking.chat:
                history += [PROMPT, row.answer]
        else:
            check_error(row, asking, seen)
        if asking.chat:
            assert seen.history == history, "a failed turn is not recorded, a good one is"

        if row.name == "cross-host redirect":
            check_redirect(scene)

        scene.recover()
        after = asking.ask()  # the same shell, widget or client answers right after
        assert_clean(after)
        assert not after.failed, after.lines
        assert after.value == asking.expected(ANSWER, VALUE)
        if asking.chat:
            assert after.history == [*history, PROMPT, ANSWER]
    finally:
        asking.stop()


def check_error(row: Row, asking: Column, seen: Seen) -> None:
    assert seen.failed, "the request should have failed"
    assert 1 <= len(seen.lines) <= 2, seen.lines
    if isinstance(asking, Widget):  # the widget says it in its status line
        # One status line: the cause, then what to do after a dash.
        (status,) = seen.lines
        assert re.search(row.cause, status, re.S), status
        assert " — " in status, f"no next step in {status!r}"
    else:
        error = seen.error
        assert isinstance(error, row.error), f"{type(error).__name__}: {error}"
        assert isinstance(error, OllamaError)
        assert seen.lines[0].startswith(f"{type(error).__name__}: "), seen.lines
        assert re.search(row.cause, seen.lines[0]), seen.lines[0]
        assert error.hint and len(seen.lines) == 2 and error.hint in seen.lines[1]
        assert error.partial == row.partial
    # The partial text: on screen (in the widget, its last message), and bound to -o.
    if row.partial:
        words = " ".join(row.partial.split())
        on_screen = seen.kept if isinstance(asking, Widget) else seen.shown
        assert words in " ".join(on_screen.split()), "the partial answer is on screen"
        if not isinstance(asking, Widget):
            assert seen.kept == row.partial
    elif not isinstance(asking, Widget):
        assert not seen.kept, f"nothing arrived, yet {seen.kept!r} was kept"


def check_redirect(scene: Scene) -> None:
    assert scene.other is not None
    sent = scene.front.heads[-1].decode().lower()
    assert HEADER in sent and f"bearer {KEY}".lower() in sent, "the first host got the headers"
    (moved,) = [r for r in scene.other.requests if r.path in GENERATION]
    headers = {name.lower() for name in moved.headers}
    assert "x-api-key" not in headers and "authorization" not in headers
    assert HEADER not in str(dict(moved.headers)) and KEY not in str(dict(moved.headers))


def test_the_line_cap_is_set_by_the_module_setting(monkeypatch, fake_ollama):
    # The issue names ollama_magic.client.MAX_LINE_BYTES as the setting (64 MB by default).
    assert ollama_magic.client.MAX_LINE_BYTES == 64 * 1024 * 1024
    monkeypatch.setattr(ollama_magic.client, "MAX_LINE_BYTES", 1_000_000)
    with FaultFront(fake_ollama.url) as front, Client(front.url, timeout=5) as client:
        front.arm(five_megabytes)
        with pytest.raises(StreamError, match=r"line longer than") as info:
            client.generate("llama3.2", PROMPT).consume()
        assert info.value.partial == "".join(TOKENS[:2])
