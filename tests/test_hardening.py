"""Holes an attacker and a fault injector found, each shut and kept shut.

Real HTTP to the stand-in or to small local servers; magics through a real IPython shell.
"""

from __future__ import annotations

import functools
import http.server
import io
import threading
import time
from html.parser import HTMLParser

import pytest
from _util import RawServer
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from test_magics import final_html, last_body, run

from ollama_magic import (
    ChatWidget,
    Client,
    OllamaError,
    OllamaTimeout,
    StreamError,
)
from ollama_magic.core import Outcome, Request
from ollama_magic.testing import Reply
from ollama_magic.types import Result
from ollama_magic.views import TextView

HOSTILE_IMAGE = 'data:image/png;base64,iVBORw0KGgo" onerror="alert(1)'


class _Attributes(HTMLParser):
    """Every attribute name of every element in some HTML."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.names: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names += [name for name, _ in attrs]


# -- 1. an image string cannot write markup ---------------------------------------------------


def test_an_image_string_with_markup_is_refused_before_anything_shows(ipython, fake_ollama):
    ipython.user_ns["img"] = HOSTILE_IMAGE
    with capture_output() as captured, pytest.raises(OllamaError, match="not hold valid base64"):
        ipython.run_cell_magic("ollama", "llava -i img", "What is this?")
    shown = "".join(o.data.get("text/html", "") for o in captured.outputs)
    assert "onerror" not in _Attributes(shown).names
    assert fake_ollama.last_request("/api/generate") is None
    ipython.user_ns["img"] = "data:image/gif;base64,R0lGODlhAQABAAAAACw="  # a valid one
    run(ipython, "llava -i img", "What is this?")
    assert last_body(fake_ollama)["images"] == ["R0lGODlhAQABAAAAACw="]


def test_a_widget_refuses_an_image_string_with_markup(fake_ollama):
    chat = ChatWidget("llava", client=Client(fake_ollama.url))
    try:
        with pytest.raises(OllamaError, match="not hold valid base64"):
            chat.ask("What is this?", images=[HOSTILE_IMAGE])
        html = "".join(getattr(w, "value", "") for w in chat.message_list.children)
        assert "onerror" not in _Attributes(html).names
    finally:
        chat.close()


# -- 3. credentials never follow a redirect to another host ------------------------------------


class _Redirect(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_POST(self) -> None:
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirect_to_another_host_carries_no_configured_header(fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-bearer-secret")

    class Handler(_Redirect):
        target = fake_ollama.url

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        with Client(url, headers={"X-Api-Key": "k-secret", "X-Team": "physics"}) as client:
            assert client.generate("llama3.2", "hi", stream=False).content
    finally:
        proxy.shutdown()
        proxy.server_close()
    headers = fake_ollama.last_request("/api/generate").headers
    assert "X-Api-Key" not in headers and "X-Team" not in headers
    assert "Authorization" not in headers


# -- 4. one long line ------------------------------------------------------------------------


def test_a_line_over_the_cap_is_a_clear_stream_error(fake_ollama):
    fake_ollama.add_reply("long", Reply(text=["x" * 200_000]))
    with Client(fake_ollama.url) as client:
        client.max_line_bytes = 100_000
        with pytest.raises(StreamError, match="a line longer than 100,000 bytes"):
            list(client.generate("llama3.2", "long"))
        assert client.generate("llama3.2", "hi", stream=False).content  # still works


# -- 5. nothing untrusted drives the terminal ---------------------------------------------------


def test_the_terminal_view_strips_control_sequences():
    out = io.StringIO()
    view = TextView(out)
    view.content("copied\x1b]52;c;ZXZpbA==\x07 \x1b]0;owned\x07title \x9b2J")
    request = Request("generate", {"model": "evil\x1b[8m"})
    view.finish(Outcome(request, text="", result=Result(model="evil", content="")))
    printed = out.getvalue()
    assert "\x1b" not in printed and "\x07" not in printed and "\x9b" not in printed
    assert printed.startswith("copied]52;c;ZXZpbA== ]0;ownedtitle 2J")


def test_an_error_from_the_server_cannot_drive_the_terminal(client, fake_ollama):
    from ollama_magic.testing import Fault

    fake_ollama.inject(Fault(status=400, error="bad \x1b]52;c;ZXZpbA==\x07 request"), times=1)
    with pytest.raises(OllamaError) as info:
        client.generate("llama3.2", "hi", stream=False)
    assert info.value._render_traceback_()[0] == "BadRequest: bad ]52;c;ZXZpbA== request"


# -- 6. tools ----------------------------------------------------------------------------------


def _weather(city: str, unit: str = "c") -> str:
    """Weather for a city."""
    return f"{city}: 21 {unit}"


class _Clock:
    def __call__(self) -> str:
        return "noon"


def test_tools_without_a_name_of_their_own_take_the_notebooks(ipython, fake_ollama):
    ipython.user_ns.update(
        oslo=functools.partial(_weather, unit="f"),
        clock=_Clock(),
        double=lambda text: text * 2,
        size=lambda text: len(text),
    )
    fake_ollama.add_reply("go", Reply(tool_calls=[{"name": "size", "arguments": {"text": "abcd"}}]))
    run(ipython, "llama3.2 --tools oslo,clock,double,size -o answer", "go")
    first = fake_ollama.requests[-2].body
    names = [t["function"]["name"] for t in first["tools"]]
    assert names == ["oslo", "clock", "double", "size"]
    assert first["tools"][0]["function"]["description"] == "Weather for a city."
    tool_message = fake_ollama.requests[-1].body["messages"][-1]
    assert (tool_message["tool_name"], tool_message["content"]) == ("size", "4")


def test_python_tools_without_a_usable_name_are_refused_with_how_to_name_them(fake_ollama):
    from ollama_magic import ask

    client = Client(fake_ollama.url)
    with pytest.raises(OllamaError, match=r"pass tools as a dict \{name: function\}"):
        ask("hi", "llama3.2", tools=[lambda: 1], client=client)
    with pytest.raises(OllamaError, match="Two tools are named 'f'"):
        ask("hi", "llama3.2", tools=[_named("f"), _named("f")], client=client)
    assert ask("hi", "llama3.2", tools={"half": lambda x: x}, client=client)


def _named(name: str):
    def function() -> str:
        return name

    function.__name__ = name
    return function


def test_a_round_runs_at_most_sixteen_tool_calls_and_says_so(ipython, fake_ollama):
    calls: list[int] = []

    def count(n: int) -> int:
        """Count."""
        calls.append(n)
        return n

    many = [{"name": "count", "arguments": {"n": i}} for i in range(300)]
    fake_ollama.add_reply("go", Reply(tool_calls=many))
    ipython.user_ns["count"] = count
    html = final_html(run(ipython, "llama3.2 --tools count", "go"))
    assert len(calls) == 16
    assert "284 tool calls not run (at most 16 a round)" in html
    refused = [m for m in fake_ollama.requests[-1].body["messages"] if m["role"] == "tool"]
    assert len(refused) == 300 and refused[-1]["content"].startswith("Error: not run")


# -- 7. a trickling server -----------------------------------------------------------------------


def test_a_server_that_trickles_times_out(dead_url):
    stop = threading.Event()

    def trickle(server, conn):
        server.read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        while not stop.wait(0.2):  # a byte now and then, never a whole line
            try:
                conn.sendall(b"1\r\n \r\n")
            except OSError:
                break
        conn.close()

    with RawServer(trickle) as server, Client(server.url, timeout=1) as client:
        error = _read_with_deadline(client, stop)
    assert isinstance(error, OllamaTimeout), error
    assert "no complete line for 1 s" in error.message


def _read_with_deadline(client: Client, stop: threading.Event) -> BaseException | None:
    """Read an answer in a thread, so that a read that never ends fails the test (after 15 s)
    instead of hanging it; the error it ended with, if any."""
    errors: list[BaseException] = []

    def read() -> None:
        try:
            list(client.generate("llama3.2", "hi"))
        except BaseException as exc:  # the outcome is checked in the test's thread
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(15)
    stop.set()
    assert not reader.is_alive(), "a trickle of bytes kept the read going"
    return errors[0] if errors else None


# -- 8. invalid UTF-8 ------------------------------------------------------------------------------


def test_invalid_utf8_costs_a_character_not_the_answer():
    lines = [
        b'{"model":"m","response":"caf\xc3\xa9 \xff\xfe ok","done":false}\n',
        b'{"model":"m","response":"","done":true,"done_reason":"stop"}\n',
    ]

    def serve(server, conn):
        server.read_request(conn)
        body = b"".join(lines)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        conn.close()

    with RawServer(serve) as server, Client(server.url) as client:
        assert client.generate("m", "hi", stream=False).content == "café \ufffd\ufffd ok"


# -- 9. no secret saved in metadata ------------------------------------------------------------


def test_the_saved_provenance_keeps_the_template_not_the_filled_secret(ipython, fake_ollama):
    ipython.user_ns["token"] = "tok-SECRET-123"
    captured = run(ipython, "llama3.2", "Use {token} to log in")
    assert last_body(fake_ollama)["prompt"] == "Use tok-SECRET-123 to log in"
    saved = [o.metadata["ollama_magic"] for o in captured.outputs if o.metadata]
    assert saved[-1]["prompt"] == "Use {token} to log in"
    assert saved[-1]["filled"] == ["token"]
    assert "tok-SECRET-123" not in repr([o.metadata for o in captured.outputs])


# -- 10. credentials in the host -------------------------------------------------------------------


def test_user_and_password_in_the_host_are_basic_credentials(fake_ollama, monkeypatch):
    port = fake_ollama.url.rsplit(":", 1)[1]
    monkeypatch.setenv("OLLAMA_HOST", f"http://ada:pa%40ss@127.0.0.1:{port}")
    with Client() as client:
        client.list()
        assert "pa@ss" not in repr(client) + client.host
    sent = fake_ollama.last_request("/api/tags").headers["Authorization"]
    assert sent == "Basic YWRhOnBhQHNz"  # ada:pa@ss


def test_an_invalid_port_never_echoes_the_password():
    with pytest.raises(OllamaError) as info:
        Client("http://ada:s3cret@example.com:notaport")
    assert "s3cret" not in str(info.value)
    assert "example.com:notaport" in str(info.value)


def test_the_magics_pass_host_credentials_on(ipython, fake_ollama):
    port = fake_ollama.url.rsplit(":", 1)[1]
    run(ipython, f"llama3.2 --host http://ada:pw@127.0.0.1:{port}", "hi")
    assert fake_ollama.last_request("/api/generate").headers["Authorization"] == "Basic YWRhOnB3"


# -- 2. a key with a line break -----------------------------------------------------------------


def test_status_with_a_broken_key_names_the_key_not_reachability(ipython, monkeypatch):
    from test_magics import line

    monkeypatch.setenv("OLLAMA_API_KEY", "sk-SECRET\nmore")
    with capture_output() as captured, pytest.raises(OllamaError) as info:
        line(ipython, "status")
    shown = str(info.value) + captured.stdout
    assert "OLLAMA_API_KEY has a line break" in shown
    assert "not reachable" not in shown and "SECRET" not in shown


# -- what a second read found ----------------------------------------------------------------


def _raw_answer(*, chunked: bool, stop: threading.Event, trickle: bool = False, body: bytes = b""):
    """A RawServer handler: one answer, framed as asked, trickled a byte at a time or not."""

    def serve(server, conn):
        server.read_request(conn)
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Connection: close\r\n"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n" + framing)
        conn.sendall(b"\r\n" + (b"40000000\r\n" if chunked else b""))  # one huge chunk
        try:
            conn.sendall(body)
            while not stop.wait(0.2):  # then a byte now and then, or nothing, until stopped
                if trickle:
                    conn.sendall(b" ")
        except OSError:
            pass  # the client left: what the test wants
        conn.close()

    return serve


@pytest.mark.parametrize("chunked", [True, False], ids=["one big chunk", "no chunked framing"])
def test_a_trickle_inside_any_framing_times_out(chunked):
    stop = threading.Event()
    with (
        RawServer(_raw_answer(chunked=chunked, trickle=True, stop=stop)) as server,
        Client(server.url, timeout=1) as client,
    ):
        assert isinstance(_read_with_deadline(client, stop), OllamaTimeout)


def test_the_line_cap_holds_without_chunked_framing():
    stop = threading.Event()
    body = b"x" * 1_000_000  # no newline, and then nothing: a line that never ends
    serve = _raw_answer(chunked=False, body=body, stop=stop)
    try:
        with RawServer(serve) as server, Client(server.url, timeout=30) as client:
            client.max_line_bytes = 100_000
            started = time.monotonic()
            with pytest.raises(StreamError, match="longer than 100,000 bytes"):
                list(client.generate("llama3.2", "hi"))
            # At once, from what arrived; not after reading a body that never ends.
            assert time.monotonic() - started < 10
    finally:
        stop.set()


def test_the_idle_rule_does_not_count_the_callers_time(fake_ollama):
    from ollama_magic.testing import Fault

    # Every line arrives in two pieces, so reads after the pause end mid-line.
    fake_ollama.add_reply("slow", Reply(text=["é1 ", "é2 ", "é3"], fault=Fault(split_utf8=True)))
    seen = []
    with Client(fake_ollama.url, timeout=1) as client:
        for chunk in client.generate("llama3.2", "slow"):
            seen.append(chunk.content)
            if len(seen) == 1:
                time.sleep(1.5)  # slow work on one chunk (speech, say): not the server's silence
    assert "".join(seen) == "é1 é2 é3"


def test_another_password_for_the_same_server_gets_its_own_client(ipython, fake_ollama):
    port = fake_ollama.url.rsplit(":", 1)[1]
    run(ipython, f"llama3.2 --host http://alice:one@127.0.0.1:{port}", "hi")
    first = fake_ollama.last_request("/api/generate").headers["Authorization"]
    run(ipython, f"llama3.2 --host http://bob:two@127.0.0.1:{port}", "hi")
    second = fake_ollama.last_request("/api/generate").headers["Authorization"]
    assert first == "Basic YWxpY2U6b25l" and second == "Basic Ym9iOnR3bw=="


def test_a_user_without_a_password_is_sent_as_user_colon(fake_ollama):
    port = fake_ollama.url.rsplit(":", 1)[1]
    with Client(f"http://tok@127.0.0.1:{port}") as client:
        client.list()
    assert fake_ollama.last_request("/api/tags").headers["Authorization"] == "Basic dG9rOg=="


@pytest.mark.parametrize(
    "host", ["https://ada:pa/ss@example.com/ollama", "https://ada:p@ss@example.com:x"]
)
def test_a_password_with_reserved_characters_never_shows(ipython, host):
    from ollama_magic.options import SecretHost

    with pytest.raises(OllamaError) as info:
        Client(host)
    shown = str(info.value) + repr(SecretHost(host))
    assert "pa/ss" not in shown and "p@ss" not in shown and "ss@" not in shown
    assert "ada:****@example.com" in shown


def test_two_tools_that_would_share_a_name_are_refused(ipython):
    def search() -> str:
        return "local"

    web_search = _named("search")
    ipython.user_ns.update(search=search, web_search=web_search)
    with pytest.raises(UsageError, match="two tools would be named 'search'"):
        run(ipython, "llama3.2 --tools web_search,search", "hi")


def test_a_header_value_http_cannot_send_is_refused_by_name():
    with pytest.raises(OllamaError, match="The header X-Api-Key has characters HTTP cannot send"):
        Client(headers={"X-Api-Key": "sk-s3cr€t"})


def test_a_crlf_split_over_two_tokens_is_one_line_break():
    out = io.StringIO()
    view = TextView(out)
    view.content("a\r")
    view.content("\nb")
    assert out.getvalue() == "a\nb"


def test_the_full_traceback_strips_control_sequences(ipython, fake_ollama):
    from test_magics import line

    from ollama_magic.testing import Fault

    fake_ollama.inject(Fault(status=400, error="bad \x1b]52;c;ZXZpbA==\x07 thing"), times=1)
    with capture_output():
        ipython.run_cell("%%ollama llama3.2\nhi")  # IPython keeps the error for %ollama traceback
    printed = line(ipython, "traceback").stdout
    assert "Traceback" in printed and "]52;c;ZXZpbA==" in printed
    assert "\x1b" not in printed and "\x07" not in printed
