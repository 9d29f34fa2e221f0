"""The HTTP client against the stand-in server, over real HTTP."""

from __future__ import annotations

import base64
import gc
import gzip
import json
import signal
import socket
import struct
import sys
import threading
import time

import pytest
import requests
from _util import RawServer, wait_until

from ollama_magic import (
    BadRequest,
    Cancellation,
    Client,
    ModelNotFound,
    NotOllama,
    OllamaTimeout,
    ServerError,
    ServerUnreachable,
    StreamError,
    Unauthorized,
    __version__,
)
from ollama_magic.errors import OllamaError
from ollama_magic.testing import Fault, Reply

REPLY = "The sky is **blue** because of Rayleigh scattering."


@pytest.fixture
def sky(fake_ollama):
    fake_ollama.add_reply("sky", REPLY)
    return fake_ollama


# -- host, headers, auth ----------------------------------------------------------------------


def test_host_comes_from_argument_then_environment_then_default(monkeypatch):
    assert Client().host == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11500")
    assert Client().host == "http://gpu-box:11500"
    assert Client("https://proxy.example/ollama").host == "https://proxy.example:443/ollama"


def test_invalid_host_is_a_clear_error():
    with pytest.raises(OllamaError, match="not a valid Ollama host"):
        Client("http://localhost:99999")


def test_headers_identify_the_client_and_carry_the_api_key(fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-test")
    Client(fake_ollama.url, headers={"X-Team": "physics"}).version()
    headers = fake_ollama.last_request("/api/version").headers
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["x-team"] == "physics"
    assert headers["user-agent"].startswith(f"ollama-magic/{__version__} (")
    assert "Python/" in headers["user-agent"]


def test_an_explicit_authorization_header_wins_over_the_api_key(fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-test")
    Client(fake_ollama.url, headers={"authorization": "Basic dTpw"}).version()
    assert fake_ollama.last_request("/api/version").headers["authorization"] == "Basic dTpw"


def test_no_authorization_header_without_a_key(client, fake_ollama):
    client.version()
    assert "authorization" not in fake_ollama.last_request("/api/version").headers


def test_a_proxy_asking_for_credentials_says_how_to_give_them(client, fake_ollama):
    fake_ollama.inject(Fault(status=401, error="unauthorized"))
    with pytest.raises(Unauthorized, match="HTTP 401") as info:
        client.list()
    assert "OLLAMA_API_KEY" in info.value.hint


def test_a_host_path_that_is_not_the_api_says_so(fake_ollama):
    with pytest.raises(NotOllama, match="404 page not found") as info:
        Client(fake_ollama.url + "/wrong/prefix").list()
    assert "Check the host given to Client():" in info.value.hint


# -- generate and chat ------------------------------------------------------------------------


def test_generate_streams_chunks_and_accumulates_the_answer(client, sky):
    stream = client.generate("llama3.2", "Why is the sky blue?")
    pieces = [chunk.content for chunk in stream]
    assert len(pieces) > 3, "the answer should arrive in several chunks"
    assert "".join(pieces) == REPLY == stream.text
    result = stream.result
    assert result is not None and result.content == REPLY
    assert result.done_reason == "stop"
    assert result.metrics.eval_count and result.metrics.tokens_per_second > 0
    assert result.context and all(isinstance(t, int) for t in result.context)
    assert stream.closed


def test_generate_without_streaming_returns_the_whole_answer(client, sky):
    result = client.generate("llama3.2", "Why is the sky blue?", stream=False)
    assert result.content == REPLY == str(result)
    assert fake_body(sky)["stream"] is False


def fake_body(server, path="/api/generate"):
    return server.last_request(path).body


def test_chat_streams_thinking_then_content(client, fake_ollama):
    fake_ollama.add_reply("count", Reply(text="There are 3.", thinking="Let me count: r, r, r."))
    stream = client.chat("qwen3", [{"role": "user", "content": "count the r in strawberry"}])
    chunks = list(stream)
    first_content = next(i for i, c in enumerate(chunks) if c.content)
    assert all(not c.content for c in chunks[:first_content])
    assert any(c.thinking for c in chunks[:first_content])
    assert stream.result.thinking == "Let me count: r, r, r."
    assert stream.result.content == "There are 3."
    assert stream.result.message == {
        "role": "assistant",
        "content": "There are 3.",
        "thinking": "Let me count: r, r, r.",
    }


def test_text_in_the_final_chunk_is_kept(client, fake_ollama):
    fake_ollama.add_reply("final", Reply(text="one two three", final_text_in_done=True))
    stream = client.generate("llama3.2", "final please")
    chunks = list(stream)
    assert chunks[-1].done and chunks[-1].content, "the stand-in should put text in the final chunk"
    assert stream.text == "one two three"


def test_tool_calls_from_several_chunks_are_accumulated(client, fake_ollama):
    calls = [
        {"name": "get_weather", "arguments": {"city": "Tokyo"}},
        {"name": "get_time", "arguments": {"zone": "JST"}},
    ]
    fake_ollama.add_reply("weather", Reply(tool_calls=calls))
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("get_weather", "get_time")
    ]
    stream = client.chat("llama3.2", [{"role": "user", "content": "weather?"}], tools=tools)
    chunks = list(stream)
    assert sum(1 for c in chunks if c.tool_calls and not c.done) == 2
    result = stream.result
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        ("get_weather", {"city": "Tokyo"}),
        ("get_time", {"zone": "JST"}),
    ]
    assert all(c.id and c.id.startswith("call_") for c in result.tool_calls)
    assert [c.index for c in result.tool_calls] == [0, 1]
    # The calls go back into the history in the wire shape.
    history = [{"role": "user", "content": "weather?"}, result.message]
    client.chat("llama3.2", history, tools=tools, stream=False)
    sent = fake_body(fake_ollama, "/api/chat")["messages"][1]["tool_calls"]
    assert sent[0]["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": {"city": "Tokyo"},
    }


def test_load_and_unload_replies_are_one_chunk_even_when_streaming(client):
    load = list(client.generate("llama3.2"))
    assert len(load) == 1 and load[0].done and load[0].done_reason == "load"
    unload = client.chat("llama3.2", keep_alive=0, stream=False)
    assert unload.done_reason == "unload" and unload.content == ""


def test_multibyte_characters_split_across_network_reads_survive(client, fake_ollama):
    text = "Grüße aus 東京 🎉 — naïve café"
    fake_ollama.add_reply("unicode", Reply(text=text, fault=Fault(split_utf8=True)))
    assert client.generate("llama3.2", "unicode please", stream=False).content == text
    assert client.generate("llama3.2", "unicode please").consume().content == text


def test_every_generate_field_reaches_the_server(client, fake_ollama, tmp_path):
    image_file = tmp_path / "pixel.png"
    image_file.write_bytes(b"\x89PNG fake")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    client.generate(
        "qwen2.5-coder",
        "def add(a, b):",
        suffix="    return result",
        system="You write Python.",
        template="{{ .Prompt }}",
        context=[1, 2, 3],
        format=schema,
        images=[b"raw bytes", image_file, "data:image/png;base64,QUJD"],
        options={"temperature": 0.2, "seed": 7, "stop": ["\n\n"]},
        keep_alive="10m",
        think=False,
        logprobs=True,
        top_logprobs=2,
        stream=False,
        shift=False,
    )
    body = fake_body(fake_ollama)
    assert body["suffix"] == "    return result"
    assert body["system"] == "You write Python."
    assert body["template"] == "{{ .Prompt }}"
    assert body["context"] == [1, 2, 3]
    assert body["format"] == schema
    assert body["images"] == [
        base64.b64encode(b"raw bytes").decode(),
        base64.b64encode(b"\x89PNG fake").decode(),
        "QUJD",
    ]
    assert body["options"] == {"temperature": 0.2, "seed": 7, "stop": ["\n\n"]}
    assert body["keep_alive"] == "10m"
    assert body["think"] is False
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["shift"] is False
    assert "raw" not in body, "fields left as None use the server's defaults"


def test_raw_mode_and_logprobs(client, fake_ollama):
    result = client.generate("llama3.2", "[INST] hi [/INST]", raw=True, logprobs=True, stream=False)
    assert fake_body(fake_ollama)["raw"] is True
    assert result.context is None, "raw mode returns no context"
    assert result.logprobs and "logprob" in result.logprobs[0]


def test_a_missing_image_file_is_one_clear_error(client, fake_ollama):
    with pytest.raises(OllamaError, match=r"Image file not found: nowhere/cat\.png"):
        client.generate("llava", "what is this?", images=["nowhere/cat.png"])
    assert not fake_ollama.requests, "nothing is sent for a bad image"


def test_chat_messages_with_images_are_encoded(client, fake_ollama):
    client.chat("llava", [{"role": "user", "content": "what?", "images": [b"img"]}], stream=False)
    assert fake_body(fake_ollama, "/api/chat")["messages"][0]["images"] == ["aW1n"]


# -- errors -----------------------------------------------------------------------------------


def test_unknown_model_says_how_to_pull_it_and_lists_similar_names(client):
    with pytest.raises(ModelNotFound) as info:
        client.generate("llama3", "hi")
    error = info.value
    assert error.status_code == 404 and error.server_message == "model 'llama3' not found"
    assert "ollama pull llama3" in error.hint
    assert "llama3.2:latest" in error.similar and "llama3.2:latest" in error.hint


def test_unknown_model_in_chat_without_similar_names(client):
    with pytest.raises(ModelNotFound) as info:
        client.chat("zzz-unheard-of", [{"role": "user", "content": "hi"}])
    assert info.value.similar == []
    assert "ollama pull zzz-unheard-of" in str(info.value)


def test_a_capability_the_model_lacks_gives_the_server_text(client):
    with pytest.raises(BadRequest) as info:
        client.chat("llama3.2", [{"role": "user", "content": "hi"}], think=True)
    assert info.value.message == '"llama3.2" does not support thinking'
    assert info.value.status_code == 400
    assert "qwen3" in info.value.hint


def test_a_bad_keep_alive_gives_the_server_text_and_a_fix(client):
    with pytest.raises(BadRequest, match='missing unit in duration "-1"') as info:
        client.generate("llama3.2", "hi", keep_alive="-1")
    assert "number" in info.value.hint


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(status=500, error="llama runner process has terminated"), "HTTP 500"),
        (
            Fault(
                status=502,
                body="<html><title>502 Bad Gateway</title></html>",
                content_type="text/html",
            ),
            "502 Bad Gateway",
        ),
        (Fault(status=502, error="upstream unavailable"), "upstream unavailable"),
        (
            Fault(
                status=503,
                error="server busy, please try again.  maximum pending requests exceeded",
            ),
            "server busy",
        ),
        (Fault(status=500, body="Internal Server Error"), "Internal Server Error"),
    ],
    ids=["500-json", "502-html", "502-json", "503-busy", "500-text"],
)
def test_server_errors_carry_the_server_text(client, fake_ollama, fault, expected):
    fake_ollama.inject(fault, times=1)
    with pytest.raises(ServerError, match=expected) as info:
        client.generate("llama3.2", "hi")
    assert info.value.status_code == fault.status
    # and the next request works
    assert client.generate("llama3.2", "hi", stream=False).content


def test_an_error_line_mid_stream_keeps_the_partial_text(client, fake_ollama):
    fake_ollama.add_reply("long", Reply(text="one two three four five six"))
    fake_ollama.inject(
        Fault(error_after=3, error="an error was encountered while running the model"), times=1
    )
    stream = client.generate("llama3.2", "long answer")
    received = []
    with pytest.raises(StreamError) as info:
        for chunk in stream:
            received.append(chunk.content)
    error = info.value
    assert error.status_code is None
    assert error.server_message == "an error was encountered while running the model"
    assert error.partial == "".join(received) == stream.text == "one two three"
    assert "kept" in error.hint
    assert stream.closed


def test_an_error_object_that_also_says_done_is_still_an_error(client, fake_ollama):
    fake_ollama.add_reply("long", Reply(text="one two three four"))
    fake_ollama.inject(Fault(error_after=2, error_done=True, error="proxy gave up"), times=1)
    with pytest.raises(StreamError, match="proxy gave up") as info:
        client.chat("llama3.2", [{"role": "user", "content": "long"}]).consume()
    assert info.value.partial == "one two"


def test_a_connection_cut_mid_stream_keeps_the_partial_text(client, fake_ollama):
    fake_ollama.add_reply("long", Reply(text="one two three four five"))
    fake_ollama.inject(Fault(cut_after=2), times=1)
    with pytest.raises(StreamError, match="broke before the answer was complete") as info:
        client.generate("llama3.2", "long").consume()
    assert info.value.partial == "one two"
    assert client.generate("llama3.2", "long", stream=False).content == "one two three four five"


def test_a_non_streamed_error_mid_generation_is_an_http_error(client, fake_ollama):
    fake_ollama.inject(Fault(error_after=2, error="out of memory"), times=1)
    with pytest.raises(ServerError, match="out of memory"):
        client.generate("llama3.2", "hi", stream=False)


def test_unreachable_server_names_the_host_and_how_to_start_one(dead_url):
    with pytest.raises(ServerUnreachable) as info:
        Client(dead_url).generate("llama3.2", "hi")
    assert dead_url in info.value.message and "connection refused" in info.value.message
    assert "ollama serve" in info.value.hint and "the host given to Client()" in info.value.hint
    assert not Client(dead_url).is_running()


def test_a_silent_server_times_out_with_a_clear_error(fake_ollama):
    fake_ollama.inject(Fault(delay=5.0))
    client = Client(fake_ollama.url, timeout=0.3)
    with pytest.raises(OllamaTimeout, match=r"sent nothing for 0\.3 s") as info:
        client.generate("llama3.2", "hi").consume()
    assert "timeout" in info.value.hint


def test_missing_or_zero_stats_and_empty_context_are_tolerated(client, fake_ollama):
    for stats in ("omit", "zero"):
        fake_ollama.inject(Fault(stats=stats, empty_context=True), times=1)
        result = client.generate("llama3.2", "hi", stream=False)
        assert result.content
        assert result.metrics.eval_count is None and result.metrics.tokens_per_second is None
        assert result.context == ()


def test_a_pooled_connection_reset_after_an_error_is_retried_on_a_fresh_one(client, fake_ollama):
    fake_ollama.add_reply("hi", "hello there")
    fake_ollama.inject(Fault(status=500, error="boom", reset_connection=True), times=1)
    with pytest.raises(ServerError, match="boom"):
        client.generate("llama3.2", "hi")
    # The connection the error came on is reset when reused; the client retries once.
    assert client.generate("llama3.2", "hi", stream=False).content == "hello there"
    generate_requests = [r for r in fake_ollama.requests if r.path == "/api/generate"]
    # the error, the request the reset connection swallowed (no status), and the retry
    assert [r.status for r in generate_requests] == [500, 0, 200]


def _reset_after_reading(server, conn):
    server.read_request(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # RST, no byte of an answer


def test_a_fresh_connection_that_fails_is_not_sent_again():
    # The server may have acted on it (a delete, a pull): only a reused connection that
    # dies is known not to have reached it.
    with RawServer(_reset_after_reading) as server:
        with pytest.raises(ServerError, match="closed the connection without answering"):
            Client(server.url).delete("llama3.2")
        assert len(server.requests) == 1


def _done_then_silence(server, conn):
    server.read_request(conn)
    line = json.dumps({"model": "m", "response": "hi", "done": True, "done_reason": "stop"})
    body = (line + "\n").encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n"
    )
    server.wait.wait(10)  # never sends the terminating chunk while the test runs
    conn.close()


def test_a_body_left_open_after_done_does_not_hang_the_answer():
    with RawServer(_done_then_silence) as server:
        server.wait = threading.Event()
        started = time.monotonic()
        result = Client(server.url, timeout=30).generate("m", "hi").consume()
        assert result.content == "hi" and result.done_reason == "stop"
        assert time.monotonic() - started < 5, "the end of the body must not be awaited long"
        server.wait.set()


def test_cancel_while_the_model_loads_returns_at_once(client, fake_ollama):
    fake_ollama.inject(Fault(load_delay=10.0))  # no byte, not even headers, for 10 s
    cancel = Cancellation()
    threading.Thread(
        target=lambda: (wait_until(lambda: fake_ollama.requests), cancel.cancel())
    ).start()
    started = time.monotonic()
    stream = client.generate("llama3.2", "hi", cancel=cancel)
    assert list(stream) == [] and stream.aborted and stream.result is None
    assert time.monotonic() - started < 5, "cancel must not wait for the model to load"
    request = fake_ollama.last_request("/api/generate")
    assert request.finished.wait(5) and request.client_disconnected


def test_timeout_none_waits_forever_and_still_explains_a_timeout(fake_ollama):
    client = Client(fake_ollama.url, timeout=None)
    assert client.generate("llama3.2", "hi", stream=False).content
    error = client._transport_error(requests.ReadTimeout("read timed out"))
    assert isinstance(error, OllamaTimeout) and "sent nothing in time" in error.message


# -- leaving early, interrupts, abort ---------------------------------------------------------

SLOW = " ".join(f"word{i}" for i in range(200))


def _slow(server, delay=0.05):
    server.add_reply("slow", Reply(text=SLOW, fault=Fault(delay=delay)))


def _generation_stopped(server):
    request = server.last_request("/api/generate")
    assert request.finished.wait(10), "the server should stop generating"
    assert request.client_disconnected
    assert request.chunks_sent < 50, "the server should have stopped early"


def test_breaking_out_of_the_loop_releases_the_connection(client, fake_ollama):
    _slow(fake_ollama)
    for _ in client.generate("llama3.2", "slow"):
        break
    _generation_stopped(fake_ollama)


def test_garbage_collecting_a_half_read_stream_releases_the_connection(client, fake_ollama):
    _slow(fake_ollama)
    stream = client.generate("llama3.2", "slow")
    next(stream)
    del stream
    gc.collect()
    _generation_stopped(fake_ollama)


def test_closing_with_a_with_block(client, fake_ollama):
    _slow(fake_ollama)
    with client.generate("llama3.2", "slow") as stream:
        next(stream)
    assert stream.closed
    _generation_stopped(fake_ollama)


def _wait_until_blocked_in_recv(thread_id: int) -> None:
    """Wait until a thread sits in a socket read."""

    def in_recv() -> bool:
        frame = sys._current_frames().get(thread_id)
        while frame is not None:
            if frame.f_code.co_name in ("readinto", "recv_into", "_safe_read"):
                return True
            frame = frame.f_back
        return False

    wait_until(in_recv)


def _interrupt_when_blocked_in_recv(thread_id: int) -> None:
    """Send SIGINT to a thread once it waits in a socket read, as a kernel interrupt does."""
    _wait_until_blocked_in_recv(thread_id)
    signal.pthread_kill(thread_id, signal.SIGINT)


def test_a_keyboard_interrupt_during_the_read_releases_the_connection(client, fake_ollama):
    _slow(fake_ollama, delay=0.5)
    stream = client.generate("llama3.2", "slow")
    first = next(stream)
    threading.Thread(target=_interrupt_when_blocked_in_recv, args=(threading.get_ident(),)).start()
    with pytest.raises(KeyboardInterrupt):
        for _ in stream:
            pass
    assert stream.closed
    assert stream.text.startswith(first.content)
    _generation_stopped(fake_ollama)


def test_a_keyboard_interrupt_in_the_loop_body_releases_the_connection(client, fake_ollama):
    _slow(fake_ollama)
    with pytest.raises(KeyboardInterrupt):
        for _ in client.generate("llama3.2", "slow"):
            raise KeyboardInterrupt
    _generation_stopped(fake_ollama)


def test_abort_from_another_thread_wakes_the_blocked_read(client, fake_ollama):
    _slow(fake_ollama, delay=5.0)  # the next token would be 5 s away
    stream = client.generate("llama3.2", "slow")
    first = next(stream)
    woke_at: list[float] = []

    def abort_once_blocked() -> None:
        _wait_until_blocked_in_recv(main)
        woke_at.append(time.monotonic())
        stream.abort()

    main = threading.get_ident()
    threading.Thread(target=abort_once_blocked).start()
    rest = list(stream)  # blocks in recv() until abort() shuts the socket down
    assert time.monotonic() - woke_at[0] < 1.0, "abort() must wake the blocked read at once"
    assert rest == [] and stream.aborted and stream.closed
    assert stream.text == first.content == "word0"
    assert stream.result is None
    _generation_stopped(fake_ollama)
    # The client still works afterwards.
    assert client.generate("llama3.2", "hi", stream=False).content


def test_abort_after_the_answer_is_complete_does_nothing(client, sky):
    stream = client.generate("llama3.2", "sky")
    stream.consume()
    stream.abort()
    assert not stream.aborted
    assert client.generate("llama3.2", "sky", stream=False).content == REPLY


def test_streams_in_parallel_threads_share_one_client(client, sky):
    results: list[str] = []

    def ask() -> None:
        results.append(client.generate("llama3.2", "sky").consume().content)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [REPLY] * 4


# -- administration ---------------------------------------------------------------------------


def test_list_ps_show_version(client):
    models = client.list()
    assert models[0].name == "llama3.2:latest"
    assert {"qwen3:latest", "llava:latest", "all-minilm:latest"} <= {m.name for m in models}
    assert models[0].size > 0 and models[0].parameter_size and models[0].quantization_level
    assert client.ps() == []
    client.generate("llama3.2", stream=False)  # load it
    running = client.ps()
    assert [m.name for m in running] == ["llama3.2:latest"] and running[0].expires_at
    details = client.show("qwen3")
    assert "thinking" in details["capabilities"] and "model_info" in details
    assert client.version() == "0.33.0"
    assert client.is_running()


def test_pull_reports_progress_then_the_model_is_local(client):
    progress = list(client.pull("gemma3"))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    layers = [p for p in progress if p.total]
    assert layers and layers[-1].fraction == 1.0
    assert any(0 < (p.fraction or 0) < 1 for p in layers), "progress should grow in steps"
    assert "gemma3:latest" in [m.name for m in client.list()]


def test_pulling_an_unknown_model_says_it_is_not_in_the_registry(client):
    with pytest.raises(ModelNotFound, match="no model 'no-such-model' in the registry"):
        list(client.pull("no-such-model"))
    with pytest.raises(ModelNotFound, match="in the registry"):
        client.pull("no-such-model", stream=False)
    assert client.pull("gemma3", stream=False).status == "success"


def test_copy_and_delete(client):
    client.copy("llama3.2", "llama3.2-backup")
    assert "llama3.2-backup:latest" in [m.name for m in client.list()]
    client.delete("llama3.2-backup")
    assert "llama3.2-backup:latest" not in [m.name for m in client.list()]
    with pytest.raises(ModelNotFound):
        client.delete("llama3.2-backup")


def test_embed_returns_normalised_vectors(client):
    vectors = client.embed("all-minilm", ["cats", "dogs"])
    assert len(vectors) == 2
    for vector in vectors:
        assert abs(sum(x * x for x in vector) - 1.0) < 1e-6
    assert client.embed("all-minilm", "cats") == vectors[:1]
    assert len(client.embed("all-minilm", "cats", dimensions=8)[0]) == 8


@pytest.mark.parametrize(
    ("fault", "error", "hint"),
    [
        (Fault(status=403, body="", content_type="text/plain"), Unauthorized, "OLLAMA_ORIGINS"),
        (Fault(status=429, error="too many requests"), ServerError, "Wait a little"),
        (Fault(status=499, error="request canceled"), ServerError, "proxy may be timing out"),
    ],
    ids=["403-empty", "429", "499"],
)
def test_other_statuses_get_fitting_hints(client, fake_ollama, fault, error, hint):
    fake_ollama.inject(fault, times=1)
    with pytest.raises(error) as info:
        client.generate("llama3.2", "hi")
    assert hint in info.value.hint


def _gzipped_stream(server, conn):
    server.read_request(conn)
    lines = [{"model": "m", "response": w, "done": False} for w in ("Hello", " there")]
    lines.append({"model": "m", "response": "", "done": True, "done_reason": "stop"})
    body = gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode())
    framed = b"".join(
        f"{len(body[i : i + 16]):x}\r\n".encode() + body[i : i + 16] + b"\r\n"
        for i in range(0, len(body), 16)
    )
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + framed + b"0\r\n\r\n"
    )
    conn.close()


def test_a_proxy_that_gzips_the_stream_is_read_as_text():
    # The session asks for gzip (requests' default Accept-Encoding); a proxy may honour it.
    with RawServer(_gzipped_stream) as server, Client(server.url) as client:
        stream = client.generate("m", "hi")
        assert [chunk.content for chunk in stream] == ["Hello", " there", ""]
        assert stream.result is not None and stream.result.content == "Hello there"
        assert client.generate("m", "hi", stream=False).content == "Hello there"


def test_a_body_cut_short_is_an_ollama_error_for_every_call():
    # A JSON answer that ends before its Content-Length: the family's error, not requests'.
    def handle(server, conn):
        server.read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n"
            b'\r\n{"models": ['
        )
        conn.close()

    with RawServer(handle) as server, pytest.raises(OllamaError) as raised:
        Client(server.url).list()
    assert type(raised.value).__name__ in ("StreamError", "ServerError", "OllamaError")


def test_proxy_settings_changed_after_a_request_apply_to_the_next(monkeypatch, fake_ollama):
    # A user behind a proxy fixes NO_PROXY with %env: no kernel restart needed.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = Client(fake_ollama.url)
    with pytest.raises(OllamaError):
        client.list()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert [m.name for m in client.list()]
