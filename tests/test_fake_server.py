"""Conformance of the stand-in Ollama server, checked over raw HTTP (http.client and sockets)."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from _util import Response
from pydantic import BaseModel, Field

from ollama_magic.testing import FakeOllama, Fault, ModelSpec, RecordedRequest, Reply
from ollama_magic.testing.__main__ import describe_pace, main, parse_args, server_from_args
from ollama_magic.testing.headers import Headers

REPO = Path(__file__).resolve().parents[1]
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")
METRICS = [
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
]
JSON_UTF8 = "application/json; charset=utf-8"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {
                "city": {"type": "string", "description": "The city"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {
            "type": "object",
            "required": ["timezone"],
            "properties": {"timezone": {"type": "string"}},
        },
    },
}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def server():
    with FakeOllama() as fake:
        yield fake


def call(
    server: FakeOllama, method: str, path: str, body: Any = None, *, raw: bytes | None = None
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
    finally:
        conn.close()


def post(server: FakeOllama, path: str, body: Any = None, **kwargs: Any) -> Response:
    return call(server, "POST", path, body, **kwargs)


def parse_chunked(data: bytes) -> tuple[list[bytes], bool]:
    """Split a chunked body into its chunks; the flag says whether the 0-chunk arrived."""
    chunks, pos = [], 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return chunks, False
        size = int(data[pos:eol], 16)
        if size == 0:
            return chunks, data[eol : eol + 4] == b"\r\n\r\n"
        start = eol + 2
        if start + size + 2 > len(data):
            return chunks, False
        assert data[start + size : start + size + 2] == b"\r\n"
        chunks.append(data[start : start + size])
        pos = start + size + 2


def request_bytes(server: FakeOllama, path: str, body: Any, *, close: bool = True) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    )
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + data


def raw_exchange(server: FakeOllama, path: str, body: Any) -> tuple[bytes, list[bytes], bool]:
    """Send one request on a raw socket; return (head, chunks, terminated)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_bytes(server, path, body))
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    chunks, terminated = parse_chunked(rest)
    return head, chunks, terminated


def stream_lines(server: FakeOllama, path: str, body: Any) -> list[dict[str, Any]]:
    resp = post(server, path, body)
    assert resp.status == 200, resp.body
    assert resp.content_type == "application/x-ndjson"
    return resp.lines()


def text_of(lines: list[dict[str, Any]], chat: bool) -> str:
    if chat:
        return "".join(line["message"]["content"] for line in lines if "message" in line)
    return "".join(line.get("response", "") for line in lines)


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def chat_body(model: str = "llama3.2", content: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


# ---------------------------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------------------------


def test_root_answers_ollama_is_running(server):
    resp = call(server, "GET", "/")
    assert (resp.status, resp.body) == (200, b"Ollama is running")
    assert resp.content_type == "text/plain; charset=utf-8"
    head = call(server, "HEAD", "/")
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "17")


def test_version(server):
    for method in ("GET", "HEAD"):
        resp = call(server, method, "/api/version")
        assert resp.status == 200
        assert resp.content_type == JSON_UTF8
    assert call(server, "GET", "/api/version").body == b'{"version":"0.33.0"}'


def test_unknown_path_is_a_plain_404(server):
    resp = call(server, "GET", "/api/nothing")
    assert (resp.status, resp.body, resp.content_type) == (404, b"404 page not found", "text/plain")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/chat"), ("POST", "/api/tags"), ("GET", "/api/delete"), ("HEAD", "/api/ps")],
)
def test_wrong_method_is_a_plain_405(server, method, path):
    resp = call(server, method, path)
    assert resp.status == 405
    assert resp.content_type == "text/plain"
    if method != "HEAD":
        assert resp.body == b"405 method not allowed"


def test_query_string_is_ignored_for_routing(server):
    assert call(server, "GET", "/api/version?x=1").status == 200
    assert server.last_request().path == "/api/version"


# ---------------------------------------------------------------------------------------------
# /api/tags and model management
# ---------------------------------------------------------------------------------------------


def test_tags_lists_default_models_newest_first(server):
    resp = call(server, "GET", "/api/tags")
    assert resp.content_type == JSON_UTF8
    models = resp.json()["models"]
    names = [m["name"] for m in models]
    assert names == [
        "llama3.2:latest",
        "qwen3:latest",
        "llava:latest",
        "qwen2.5-coder:latest",
        "all-minilm:latest",
    ]
    first = models[0]
    assert list(first)[:6] == ["name", "model", "modified_at", "size", "digest", "details"]
    assert re.fullmatch(r"[0-9a-f]{64}", first["digest"])
    assert CREATED_AT.match(first["modified_at"])
    assert first["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }
    stamps = [m["modified_at"] for m in models]
    assert stamps == sorted(stamps, reverse=True)


def test_tags_is_an_empty_list_not_null_without_models(server):
    for spec in server.models:
        server.remove_model(spec.name)
    assert call(server, "GET", "/api/tags").body == b'{"models":[]}'
    assert call(server, "GET", "/api/ps").body == b'{"models":[]}'


def test_add_model_appears_first_and_answers(server):
    spec = server.add_model(
        "mymodel",
        capabilities=("completion", "tools"),
        family="mistral",
        parameter_size="7B",
        quantization_level="Q4_0",
        size=4_000_000_000,
        context_length=8192,
    )
    assert isinstance(spec, ModelSpec)
    assert spec.name == "mymodel:latest"
    first = call(server, "GET", "/api/tags").json()["models"][0]
    assert first["name"] == "mymodel:latest"
    assert first["size"] == 4_000_000_000
    assert first["details"]["family"] == "mistral"
    assert first["details"]["quantization_level"] == "Q4_0"
    body = chat_body("mymodel", tools=[WEATHER_TOOL], stream=False)
    assert post(server, "/api/chat", body).status == 200
    server.remove_model("mymodel")
    resp = post(server, "/api/chat", chat_body("mymodel"))
    assert (resp.status, resp.json()) == (404, {"error": "model 'mymodel' not found"})


# ---------------------------------------------------------------------------------------------
# streaming framing and field order
# ---------------------------------------------------------------------------------------------


def test_generate_stream_is_chunked_ndjson_one_object_per_chunk(server):
    head, chunks, terminated = raw_exchange(
        server, "/api/generate", {"model": "llama3.2", "prompt": "Why is the sky blue?"}
    )
    header_lines = head.decode().split("\r\n")
    assert header_lines[0] == "HTTP/1.1 200 OK"
    headers = {k.lower(): v for k, _, v in (h.partition(": ") for h in header_lines[1:])}
    assert headers["content-type"] == "application/x-ndjson"
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert terminated
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.endswith(b"\n") and chunk.count(b"\n") == 1
        json.loads(chunk)
    objects = [json.loads(c) for c in chunks]
    assert all(o["done"] is False for o in objects[:-1])
    assert objects[-1]["done"] is True


def test_generate_chunk_and_final_field_order_and_metrics(server):
    lines = stream_lines(server, "/api/generate", {"model": "llama3.2", "prompt": "Hi"})
    for line in lines[:-1]:
        assert list(line) == ["model", "created_at", "response", "done"]
        assert line["model"] == "llama3.2"  # echoed as sent
        assert CREATED_AT.match(line["created_at"])
    final = lines[-1]
    assert list(final) == [
        "model",
        "created_at",
        "response",
        "done",
        "done_reason",
        "context",
        *METRICS,
    ]
    assert final["done_reason"] == "stop"
    for name in METRICS:
        assert isinstance(final[name], int) and final[name] > 0
    assert final["total_duration"] >= final["load_duration"]
    assert final["eval_count"] == len(lines) - 1
    assert all(isinstance(t, int) for t in final["context"])


def test_chat_chunk_and_final_field_order(server):
    lines = stream_lines(server, "/api/chat", chat_body())
    for line in lines[:-1]:
        assert list(line) == ["model", "created_at", "message", "done"]
        assert list(line["message"]) == ["role", "content"]
        assert line["message"]["role"] == "assistant"
    final = lines[-1]
    assert list(final) == ["model", "created_at", "message", "done", "done_reason", *METRICS]
    assert final["message"] == {"role": "assistant", "content": ""}


def test_non_streamed_answer_is_one_object_with_the_whole_text(server):
    streamed = text_of(stream_lines(server, "/api/chat", chat_body(content="Tell me")), chat=True)
    resp = post(server, "/api/chat", chat_body(content="Tell me", stream=False))
    assert resp.status == 200
    assert resp.content_type == JSON_UTF8
    assert resp.headers["content-length"] == str(len(resp.body))
    assert not resp.body.endswith(b"\n")
    obj = resp.json()
    assert obj["message"]["content"] == streamed
    assert obj["done"] is True and obj["done_reason"] == "stop"
    assert all(obj[name] > 0 for name in METRICS)

    gen = post(server, "/api/generate", {"model": "llama3.2", "prompt": "Tell me", "stream": False})
    assert list(gen.json())[:5] == ["model", "created_at", "response", "done", "done_reason"]


def test_go_json_escaping_of_html_characters_and_raw_utf8(server):
    server.add_reply("html", "<b>Fish & chips</b> café")
    resp = post(server, "/api/chat", chat_body(content="html please", stream=False))
    assert b"\\u003cb\\u003eFish \\u0026 chips\\u003c/b\\u003e" in resp.body
    assert b"<" not in resp.body and b"&" not in resp.body
    assert "café".encode() in resp.body  # non-ASCII is sent as UTF-8, not \u escapes
    assert b", " not in resp.body and b'": ' not in resp.body  # compact separators
    assert resp.json()["message"]["content"] == "<b>Fish & chips</b> café"


def test_replies_are_deterministic(server):
    body = chat_body(content="Explain recursion", stream=False)
    first = post(server, "/api/chat", body).json()["message"]["content"]
    second = post(server, "/api/chat", body).json()["message"]["content"]
    other = post(server, "/api/chat", chat_body(content="Explain loops", stream=False))
    assert first == second
    assert other.json()["message"]["content"] != first


def test_default_reply_names_model_and_quotes_prompt(server):
    body = {"model": "llama3.2", "prompt": "What is a monad?", "stream": False}
    text = post(server, "/api/generate", body).json()["response"]
    assert "llama3.2" in text
    assert "What is a monad?" in text
    assert re.search(r"^- ", text, re.MULTILINE)


def test_reply_token_list_is_sent_one_token_per_chunk(server):
    server.add_reply("count", Reply(text=["one", " two", " three"]))
    lines = stream_lines(server, "/api/generate", {"model": "llama3.2", "prompt": "count"})
    assert [line["response"] for line in lines] == ["one", " two", " three", ""]


def test_final_text_in_done_chunk(server):
    server.add_reply("last", Reply(text=["A", "B", "C"], final_text_in_done=True))
    lines = stream_lines(server, "/api/chat", chat_body(content="last"))
    assert [line["message"]["content"] for line in lines] == ["A", "B", "C"]
    assert lines[-1]["done"] is True
    resp = post(server, "/api/chat", chat_body(content="last", stream=False))
    assert resp.json()["message"]["content"] == "ABC"


# ---------------------------------------------------------------------------------------------
# validation (texts, statuses, order)
# ---------------------------------------------------------------------------------------------

GENERATE = "/api/generate"
CHAT = "/api/chat"


def gen(**fields: Any) -> bytes:
    return json.dumps({"model": "llama3.2", "prompt": "hi", **fields}).encode()


def cht(**fields: Any) -> bytes:
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], **fields}
    return json.dumps(body).encode()


VALIDATION_CASES = [
    (GENERATE, b"", 400, "missing request body"),
    (CHAT, b" \n ", 400, "missing request body"),
    (GENERATE, b"{model", 400, "invalid character 'm' looking for beginning of object key string"),
    (GENERATE, b'{"model":', 400, "unexpected EOF"),
    (GENERATE, b"nope", 400, "invalid character 'o' in literal null (expecting 'u')"),
    (
        GENERATE,
        b'{"model": 5}',
        400,
        "json: cannot unmarshal number into Go struct field GenerateRequest.model of type string",
    ),
    (
        CHAT,
        b'{"model": "llama3.2", "stream": "yes"}',
        400,
        "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool",
    ),
    (
        GENERATE,
        b"[1]",
        400,
        "json: cannot unmarshal array into Go value of type api.GenerateRequest",
    ),
    (GENERATE, gen(keep_alive="-1"), 400, 'time: missing unit in duration "-1"'),
    (CHAT, cht(keep_alive=True), 400, "Unsupported type: 'bool'"),
    (CHAT, cht(keep_alive="5x"), 400, 'time: unknown unit "x" in duration "5x"'),
    (GENERATE, gen(keep_alive="soon"), 400, 'time: invalid duration "soon"'),
    (
        GENERATE,
        gen(think="extreme"),
        400,
        'invalid think value: "extreme" (must be "high", "medium", "low", "max", true, or false)',
    ),
    (
        CHAT,
        cht(think=5),
        400,
        'think must be a boolean or string ("high", "medium", "low", "max", true, or false)',
    ),
    (
        GENERATE,
        gen(model="llava", images=["data:image/png;base64,iVBORw0KGgo="]),
        400,
        "illegal base64 data at input byte 4",
    ),
    (GENERATE, gen(top_logprobs=21), 400, "top_logprobs must be between 0 and 20"),
    (GENERATE, gen(model=""), 404, "model '' not found"),
    (CHAT, b'{"messages": []}', 400, "model is required"),
    (GENERATE, gen(model="bad name!"), 400, "invalid model name"),
    (GENERATE, gen(model="nope"), 404, "model 'nope' not found"),
    (CHAT, cht(model="Nope:7b"), 404, "model 'Nope:7b' not found"),
    (CHAT, cht(think=True), 400, '"llama3.2" does not support thinking'),
    (
        CHAT,
        cht(model="llava", tools=[WEATHER_TOOL]),
        400,
        "registry.ollama.ai/library/llava:latest does not support tools",
    ),
    (
        GENERATE,
        gen(suffix="return x"),
        400,
        "registry.ollama.ai/library/llama3.2:latest does not support insert",
    ),
    (GENERATE, gen(model="all-minilm"), 400, '"all-minilm" does not support generate'),
    (CHAT, cht(model="all-minilm"), 400, '"all-minilm" does not support chat'),
    (
        GENERATE,
        gen(raw=True, system="be brief"),
        400,
        "raw mode does not support template, system, or context",
    ),
    (
        GENERATE,
        gen(options={"temperature": "hot"}),
        500,
        'option "temperature" must be of type float32',
    ),
    (
        CHAT,
        cht(options={"num_predict": "many"}),
        500,
        'option "num_predict" must be of type integer',
    ),
    (CHAT, cht(options={"stop": "\n"}), 500, 'option "stop" must be of type array'),
    (
        CHAT,
        cht(options={"stop": [1]}),
        500,
        'option "stop" must be of type an array of strings',
    ),
    (CHAT, cht(options={"use_mmap": 1}), 500, 'option "use_mmap" must be of type boolean'),
]


@pytest.mark.parametrize(("path", "raw", "status", "error"), VALIDATION_CASES)
def test_validation_errors(server, path, raw, status, error):
    resp = post(server, path, raw=raw)
    assert (resp.status, resp.json()) == (status, {"error": error})
    assert resp.content_type == JSON_UTF8


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("xml", 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'),
        (123, 'invalid format: "123"; expected "json" or a valid JSON Schema object'),
    ],
)
def test_invalid_format_is_a_500_from_the_runner(server, value, message):
    streamed = post(server, GENERATE, raw=gen(format=value))
    assert (streamed.status, streamed.json()) == (500, {"error": message})
    assert streamed.content_type == "application/json"  # streamResponse: no charset
    single = post(server, CHAT, raw=cht(format=value, stream=False))
    assert (single.status, single.json()) == (500, {"error": message})
    assert single.content_type == JSON_UTF8


@pytest.mark.parametrize(
    ("path", "raw", "status", "expected"),
    [
        # decoding happens before the model is looked at
        (CHAT, b'{"think": "extreme", "keep_alive": "-1"}', 400, "invalid think value"),
        (GENERATE, gen(model="nope", top_logprobs=50), 400, "top_logprobs must be between"),
        # existence before capabilities
        (CHAT, cht(model="nope", think=True), 404, "model 'nope' not found"),
        # thinking before the embedding check
        (GENERATE, gen(model="all-minilm", think=True), 400, "does not support thinking"),
        # tools capability before load-only
        (CHAT, json.dumps({"model": "llava", "tools": [WEATHER_TOOL]}).encode(), 400, "tools"),
        # options before load-only
        (GENERATE, gen(prompt="", options={"top_k": "x"}), 500, 'option "top_k"'),
    ],
)
def test_validation_order(server, path, raw, status, expected):
    resp = post(server, path, raw=raw)
    assert resp.status == status
    assert expected in resp.json()["error"]


def test_unload_is_checked_before_capabilities_and_format_after_load(server):
    body = {"model": "llama3.2", "prompt": "", "think": True, "keep_alive": 0}
    assert post(server, GENERATE, body).json()["done_reason"] == "unload"
    body = {"model": "llama3.2", "prompt": "", "format": "xml"}
    assert post(server, GENERATE, body).json()["done_reason"] == "load"


def test_json_field_names_match_case_insensitively_like_go(server):
    resp = post(server, GENERATE, {"Model": "llama3.2", "Prompt": "hi", "Stream": False})
    assert resp.status == 200
    assert resp.json()["model"] == "llama3.2"


def test_unknown_options_are_ignored(server):
    body = chat_body(options={"mirostat": 2, "tfs_z": 1.0, "temperature": 0}, stream=False)
    assert post(server, CHAT, body).status == 200


# ---------------------------------------------------------------------------------------------
# load / unload / ps
# ---------------------------------------------------------------------------------------------


def test_generate_load_only_is_a_single_object_even_when_streaming(server):
    resp = post(server, GENERATE, {"model": "llama3.2"})
    assert resp.status == 200
    assert resp.content_type == JSON_UTF8
    assert "transfer-encoding" not in resp.headers
    assert not resp.body.endswith(b"\n")
    obj = resp.json()
    assert list(obj) == ["model", "created_at", "response", "done", "done_reason"]
    assert (obj["response"], obj["done"], obj["done_reason"]) == ("", True, "load")
    assert server.loaded_models() == ["llama3.2:latest"]


def test_chat_load_and_unload(server):
    load = post(server, CHAT, {"model": "qwen3", "messages": []}).json()
    assert list(load) == ["model", "created_at", "message", "done", "done_reason"]
    assert load["message"] == {"role": "assistant", "content": ""}
    assert load["done_reason"] == "load"
    assert "qwen3:latest" in server.loaded_models()
    unload = post(server, CHAT, {"model": "qwen3", "messages": [], "keep_alive": "0"}).json()
    assert unload["done_reason"] == "unload"
    assert unload["message"] == {"role": "assistant", "content": ""}
    assert "qwen3:latest" not in server.loaded_models()


def test_ps_tracks_keep_alive_and_sorts_by_expiry(server):
    post(server, GENERATE, {"model": "llama3.2", "keep_alive": "10m"})
    post(server, GENERATE, {"model": "llava", "keep_alive": -1})
    post(server, CHAT, {"model": "qwen3", "messages": [], "options": {"num_ctx": 8192}})
    resp = call(server, "GET", "/api/ps")
    models = resp.json()["models"]
    assert [m["name"] for m in models] == ["llava:latest", "llama3.2:latest", "qwen3:latest"]
    entry = models[1]
    assert list(entry) == [
        "name",
        "model",
        "size",
        "digest",
        "details",
        "expires_at",
        "size_vram",
        "context_length",
    ]
    now = datetime.now(timezone.utc)
    expires = datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00")[:26] + "+00:00")
    assert now + timedelta(minutes=9) < expires < now + timedelta(minutes=11)
    assert int(models[0]["expires_at"][:4]) > 2200  # negative keep_alive: "forever"
    assert models[2]["context_length"] == 8192
    post(server, CHAT, chat_body("llava", keep_alive=0, stream=False))
    assert "llava:latest" not in server.loaded_models()  # keep_alive 0 unloads after answering


# ---------------------------------------------------------------------------------------------
# thinking
# ---------------------------------------------------------------------------------------------


def test_thinking_model_thinks_by_default_before_answering(server):
    lines = stream_lines(server, CHAT, chat_body("qwen3", content="Count to three"))
    kinds = []
    for line in lines[:-1]:
        message = line["message"]
        if "thinking" in message:
            assert message["content"] == ""
            assert list(message) == ["role", "content", "thinking"]
            kinds.append("thinking")
        else:
            kinds.append("content")
    assert kinds[0] == "thinking"
    assert "content" in kinds
    assert kinds == sorted(kinds, key=lambda k: k != "thinking")  # all thinking first


def test_think_false_disables_thinking(server):
    lines = stream_lines(server, CHAT, chat_body("qwen3", think=False))
    assert all("thinking" not in line["message"] for line in lines)
    resp = post(
        server, GENERATE, {"model": "qwen3", "prompt": "x", "think": False, "stream": False}
    )
    assert "thinking" not in resp.json()


def test_generate_thinking_chunks_and_levels(server):
    lines = stream_lines(server, GENERATE, {"model": "qwen3", "prompt": "Plan", "think": "high"})
    thinking = [line for line in lines if "thinking" in line]
    assert thinking
    assert list(thinking[0]) == ["model", "created_at", "response", "thinking", "done"]
    assert thinking[0]["response"] == ""
    body = {"model": "qwen3", "prompt": "Plan", "think": "high", "stream": False}
    obj = post(server, GENERATE, body).json()
    assert obj["thinking"] == "".join(line["thinking"] for line in thinking)
    assert list(obj)[:5] == ["model", "created_at", "response", "thinking", "done"]


def test_reply_thinking_text_is_used(server):
    server.add_reply("riddle", Reply(text="A map.", thinking="Cities without houses..."))
    obj = post(server, CHAT, chat_body("qwen3", content="riddle", stream=False)).json()
    assert obj["message"]["thinking"] == "Cities without houses..."
    assert obj["message"]["content"] == "A map."


def test_small_num_predict_on_thinking_model_leaves_only_thinking(server):
    body = chat_body("qwen3", content="Why?", options={"num_predict": 4}, stream=False)
    obj = post(server, CHAT, body).json()
    assert obj["message"]["content"] == ""
    assert obj["message"]["thinking"]
    assert obj["done_reason"] == "length"


# ---------------------------------------------------------------------------------------------
# options, context, logprobs
# ---------------------------------------------------------------------------------------------


def test_num_predict_stops_with_length(server):
    server.add_reply("five", "one two three four five")
    body = {"model": "llama3.2", "prompt": "five", "options": {"num_predict": 3}}
    lines = stream_lines(server, GENERATE, body)
    assert text_of(lines, chat=False) == "one two three"
    assert lines[-1]["done_reason"] == "length"
    assert lines[-1]["eval_count"] == 3


def test_stop_option_cuts_the_answer(server):
    server.add_reply("five", "one two three four five")
    body = chat_body(content="five", options={"stop": [" four", "zzz"]}, stream=False)
    obj = post(server, CHAT, body).json()
    assert obj["message"]["content"] == "one two three"
    assert obj["done_reason"] == "stop"


def test_context_is_returned_extended_and_omitted_in_raw_mode(server):
    first = post(server, GENERATE, {"model": "llama3.2", "prompt": "Hi", "stream": False}).json()
    context = first["context"]
    assert context and all(isinstance(t, int) for t in context)
    again = {"model": "llama3.2", "prompt": "More", "context": context, "stream": False}
    second = post(server, GENERATE, again).json()
    assert second["context"][: len(context)] == context
    assert second["prompt_eval_count"] > len(context)
    raw = post(server, GENERATE, {"model": "llama3.2", "prompt": "Hi", "raw": True}).lines()
    assert "context" not in raw[-1]


def test_logprobs_per_chunk_and_accumulated(server):
    server.add_reply("lp", Reply(text=["Hello", " world"]))
    body = chat_body(content="lp", logprobs=True, top_logprobs=2)
    lines = stream_lines(server, CHAT, body)
    first = lines[0]
    assert list(first) == ["model", "created_at", "message", "done", "logprobs"]
    (entry,) = first["logprobs"]
    assert entry["token"] == "Hello"
    assert entry["bytes"] == list(b"Hello")
    assert entry["logprob"] < 0
    assert len(entry["top_logprobs"]) == 2
    assert entry["top_logprobs"][0]["token"] == "Hello"
    assert "logprobs" not in lines[-1]
    whole = post(server, CHAT, {**body, "stream": False}).json()
    assert [e["token"] for e in whole["logprobs"]] == ["Hello", " world"]
    assert list(whole).index("logprobs") < list(whole).index("total_duration")


# ---------------------------------------------------------------------------------------------
# structured outputs
# ---------------------------------------------------------------------------------------------


class Address(BaseModel):
    street: str
    city: str
    postcode: str = Field(min_length=4, max_length=8)


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    email: str | None = None
    role: str = Field(json_schema_extra={"enum": ["admin", "editor", "viewer"]})
    address: Address


class Team(BaseModel):
    team: str
    founded: int
    score: float = Field(gt=0, lt=10)
    members: list[Person] = Field(min_length=1, max_length=5)
    tags: list[str]


def test_format_json_gives_a_json_object(server):
    resp = post(server, GENERATE, {"model": "llama3.2", "prompt": "List", "format": "json"})
    text = text_of(resp.lines(), chat=False)
    assert isinstance(json.loads(text), dict)


def test_schema_format_instance_validates_for_nested_pydantic_models(server):
    schema = Team.model_json_schema()
    assert "$defs" in schema  # nested models are referenced, as pydantic v2 does
    lines = stream_lines(server, CHAT, chat_body(content="A team", format=schema))
    assert len(lines) > 5  # JSON text split across chunks
    text = text_of(lines, chat=True)
    jsonschema.validate(json.loads(text), schema)
    team = Team.model_validate_json(text)
    assert 2 <= len(team.members) <= 3  # a table with a few rows, for DataFrame demos
    assert len({m.name for m in team.members}) == len(team.members)
    again = post(server, CHAT, chat_body(content="A team", format=schema, stream=False))
    assert again.json()["message"]["content"] == text


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "integer", "minimum": 5, "multipleOf": 5}},
        {
            "type": "object",
            "properties": {
                "when": {"type": "string", "format": "date-time"},
                "day": {"type": "string", "format": "date"},
                "kind": {"const": "event"},
                "size": {"oneOf": [{"type": "integer", "maximum": 3}, {"type": "string"}]},
                "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 1},
                "nothing": {"type": "null"},
                "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "code": {"type": "string", "minLength": 12},
                "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
                "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
            "required": ["when", "day", "kind", "size"],
            "additionalProperties": False,
        },
        {
            "definitions": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
                    },
                    "required": ["label", "children"],
                }
            },
            "$ref": "#/definitions/Node",
        },
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string"}}, "required": ["b"]},
            ]
        },
    ],
)
def test_schema_instances_validate(server, schema):
    resp = post(
        server, GENERATE, {"model": "llama3.2", "prompt": "x", "format": schema, "stream": False}
    )
    jsonschema.validate(json.loads(resp.json()["response"]), schema)


def test_registered_text_is_sent_as_is_with_format(server):
    server.add_reply("broken", "{not json")
    body = {"model": "llama3.2", "prompt": "broken", "format": "json", "stream": False}
    assert post(server, GENERATE, body).json()["response"] == "{not json"


# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------


def test_reply_tool_calls_arrive_in_their_own_chunks(server):
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {"timezone": "Europe/Paris"}},
    ]
    server.add_reply("Paris", Reply(tool_calls=calls))
    body = chat_body(content="Weather and time in Paris?", tools=[WEATHER_TOOL, TIME_TOOL])
    lines = stream_lines(server, CHAT, body)
    tool_lines = [line for line in lines if "tool_calls" in line["message"]]
    assert len(tool_lines) == 2
    for index, line in enumerate(tool_lines):
        assert line["done"] is False
        assert line["message"]["content"] == ""
        assert list(line["message"]) == ["role", "content", "tool_calls"]
        (call_obj,) = line["message"]["tool_calls"]
        assert list(call_obj) == ["id", "function"]
        assert re.fullmatch(r"call_[a-z0-9]{8}", call_obj["id"])
        assert call_obj["function"] == {"index": index, **calls[index]}
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    again = stream_lines(server, CHAT, body)
    assert [line["message"].get("tool_calls") for line in again] == [
        line["message"].get("tool_calls") for line in lines
    ]


def test_default_tool_call_picks_named_tool_with_valid_arguments(server):
    body = chat_body(
        content="Use get_weather please", tools=[TIME_TOOL, WEATHER_TOOL], stream=False
    )
    message = post(server, CHAT, body).json()["message"]
    (call_obj,) = message["tool_calls"]
    assert call_obj["function"]["name"] == "get_weather"
    jsonschema.validate(call_obj["function"]["arguments"], WEATHER_TOOL["function"]["parameters"])
    body = chat_body(content="What now?", tools=[TIME_TOOL, WEATHER_TOOL], stream=False)
    (first,) = post(server, CHAT, body).json()["message"]["tool_calls"]
    assert first["function"]["name"] == "get_time"


def test_tool_result_turn_is_answered_with_text(server):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "22 degrees and sunny"},
    ]
    body = {"model": "llama3.2", "messages": messages, "tools": [WEATHER_TOOL], "stream": False}
    message = post(server, CHAT, body).json()["message"]
    assert "tool_calls" not in message
    assert "22 degrees and sunny" in message["content"]
    assert "get_weather" in message["content"]


def test_non_streamed_chat_keeps_tool_calls_only_when_tools_were_offered(server):
    server.add_reply("call", Reply(tool_calls=[{"name": "f", "arguments": {"x": 1}}]))
    with_tools = post(server, CHAT, chat_body(content="call", tools=[WEATHER_TOOL], stream=False))
    assert with_tools.json()["message"]["tool_calls"][0]["function"]["name"] == "f"
    without = post(server, CHAT, chat_body(content="call", stream=False))
    assert "tool_calls" not in without.json()["message"]


def test_generate_tool_calls_ride_on_the_final_chunk(server):
    server.add_reply("call", Reply(tool_calls=[{"name": "f", "arguments": {"x": 1}}]))
    lines = stream_lines(server, GENERATE, {"model": "llama3.2", "prompt": "call"})
    assert all("tool_calls" not in line for line in lines[:-1])
    assert lines[-1]["tool_calls"][0]["function"] == {
        "index": 0,
        "name": "f",
        "arguments": {"x": 1},
    }
    assert list(lines[-1])[-1] == "tool_calls"


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------


def test_status_fault_before_first_chunk_and_times(server):
    server.inject(
        Fault(
            status=503, error="server busy, please try again.  maximum pending requests exceeded"
        ),
        times=1,
    )
    resp = post(server, CHAT, chat_body())
    assert resp.status == 503
    assert resp.content_type == "application/json"
    assert resp.json() == {
        "error": "server busy, please try again.  maximum pending requests exceeded"
    }
    assert post(server, CHAT, chat_body()).status == 200  # expired after one use


def test_status_fault_filters_by_endpoint_and_model(server):
    server.inject(Fault(status=500, error="boom"), endpoint="/api/chat", model="qwen3")
    assert post(server, CHAT, chat_body("qwen3:latest")).status == 500
    assert post(server, CHAT, chat_body("llama3.2")).status == 200
    assert post(server, GENERATE, {"model": "qwen3", "prompt": "x"}).status == 200
    server.clear_faults()
    assert post(server, CHAT, chat_body("qwen3")).status == 200


def test_unfiltered_status_fault_hits_every_endpoint(server):
    server.inject(Fault(status=500, error="down"))
    assert call(server, "GET", "/api/tags").json() == {"error": "down"}
    assert call(server, "GET", "/").status == 500


def test_plain_text_body_fault_like_a_proxy(server):
    server.inject(Fault(status=502, body="Bad Gateway"))
    resp = post(server, CHAT, chat_body())
    assert (resp.status, resp.body, resp.content_type) == (502, b"Bad Gateway", "text/plain")
    assert Fault(body="oops").status == 502


def test_error_after_sends_an_error_line_on_a_200_stream(server):
    server.add_reply("go", Reply(text=["a", "b", "c", "d", "e"]))
    server.inject(Fault(error_after=3))
    head, chunks, terminated = raw_exchange(server, GENERATE, {"model": "llama3.2", "prompt": "go"})
    assert head.startswith(b"HTTP/1.1 200")
    objects = [json.loads(c) for c in chunks]
    assert [o.get("response") for o in objects[:3]] == ["a", "b", "c"]
    assert objects[3] == {"error": "an error was encountered while running the model"}
    assert len(objects) == 4 and terminated  # no done chunk, but a clean end of body


def test_error_done_and_custom_text(server):
    server.inject(Fault(error_after=1, error="runner died", error_done=True))
    lines = stream_lines(server, CHAT, chat_body())
    assert lines[-1] == {"error": "runner died", "done": True}
    assert len(lines) == 2


def test_error_after_without_streaming_is_a_500(server):
    server.inject(Fault(error_after=2, error="model runner has unexpectedly stopped"))
    resp = post(server, CHAT, chat_body(stream=False))
    assert (resp.status, resp.json()) == (500, {"error": "model runner has unexpectedly stopped"})


def test_cut_after_drops_the_connection_without_terminating_chunk(server):
    server.add_reply("go", Reply(text=["a", "b", "c", "d"]))
    server.inject(Fault(cut_after=2))
    _, chunks, terminated = raw_exchange(server, CHAT, chat_body(content="go"))
    assert [json.loads(c)["message"]["content"] for c in chunks] == ["a", "b"]
    assert not terminated
    with pytest.raises(http.client.IncompleteRead):
        post(server, CHAT, chat_body(content="go"))


def test_delay_slows_each_token(server):
    server.add_reply("slow", Reply(text=["a", "b", "c", "d"]))
    server.inject(Fault(delay=0.05))
    started = time.monotonic()
    lines = stream_lines(server, GENERATE, {"model": "llama3.2", "prompt": "slow"})
    assert time.monotonic() - started >= 0.2
    assert text_of(lines, chat=False) == "abcd"


def test_split_utf8_splits_lines_inside_a_character(server):
    server.add_reply("utf", Reply(text=["héllo", " 世界", " plain"]))
    server.inject(Fault(split_utf8=True))
    _, chunks, terminated = raw_exchange(server, GENERATE, {"model": "llama3.2", "prompt": "utf"})
    assert terminated
    broken = []
    for chunk in chunks:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            broken.append(chunk)
    assert len(broken) >= 4  # both halves of each split line are invalid UTF-8 on their own
    lines = b"".join(chunks).split(b"\n")[:-1]
    assert [json.loads(line)["response"] for line in lines[:3]] == ["héllo", " 世界", " plain"]
    assert len(chunks) > len(lines)


@pytest.mark.parametrize(("stats", "expected"), [("omit", None), ("zero", 0)])
def test_stats_fault(server, stats, expected):
    server.inject(Fault(stats=stats))
    final = stream_lines(server, CHAT, chat_body())[-1]
    assert final["done"] is True
    for name in METRICS:
        assert final.get(name) == expected
        assert (name in final) == (expected is not None)


def test_empty_context_fault(server):
    server.inject(Fault(empty_context=True))
    final = post(server, GENERATE, {"model": "llama3.2", "prompt": "x", "stream": False}).json()
    assert final["context"] == []


def test_reply_can_carry_a_fault(server):
    server.add_reply("explode", Reply(text="never", fault=Fault(status=500, error="kaput")))
    resp = post(server, GENERATE, {"model": "llama3.2", "prompt": "explode"})
    assert (resp.status, resp.json()) == (500, {"error": "kaput"})
    assert post(server, GENERATE, {"model": "llama3.2", "prompt": "fine"}).status == 200


def test_reset_connection_resets_the_next_request_on_that_connection(server):
    server.inject(Fault(status=500, error="boom", reset_connection=True), times=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request_bytes(server, CHAT, chat_body(), close=False))
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 500")
        sock.sendall(request_bytes(server, CHAT, chat_body(), close=False))
        with pytest.raises(ConnectionResetError):
            assert sock.recv(4096) == b"", "expected a reset, got an orderly close"
    assert wait_for(lambda: len(server.requests) == 2 and server.requests[1].finished.is_set())
    assert server.requests[1].status == 0  # nothing was answered
    assert post(server, CHAT, chat_body()).status == 200  # new connections are fine


def test_reset_connection_after_a_normal_answer(server):
    server.inject(Fault(reset_connection=True), times=1)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", GENERATE, body=json.dumps({"model": "llama3.2", "prompt": "x"}))
        resp = conn.getresponse()
        assert resp.status == 200 and b'"done":true' in resp.read()
        conn.request("GET", "/api/tags")
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            conn.getresponse()
    finally:
        conn.close()


def test_chunked_request_body_is_accepted(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        body = iter([b'{"model": "llama3.2", ', b'"prompt": "hi", "stream": false}'])
        conn.request("POST", GENERATE, body=body, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["done"] is True
    finally:
        conn.close()
    assert server.last_request().body["prompt"] == "hi"


def test_fault_validation():
    with pytest.raises(ValueError, match="stats"):
        Fault(stats="none")
    with pytest.raises(ValueError, match="endpoint"), FakeOllama() as fake:
        fake.inject(Fault(status=500), endpoint="api/chat")


# ---------------------------------------------------------------------------------------------
# /api/show, /api/pull, /api/delete, /api/copy
# ---------------------------------------------------------------------------------------------


def test_show(server):
    resp = post(server, "/api/show", {"model": "qwen3"})
    assert resp.status == 200
    obj = resp.json()
    for key in ("license", "modelfile", "parameters", "template", "details", "model_info"):
        assert obj[key]
    assert list(obj).index("model_info") < list(obj).index("capabilities")
    assert obj["capabilities"] == ["completion", "tools", "thinking"]
    assert obj["details"]["family"] == "qwen3"
    assert obj["model_info"]["general.architecture"] == "qwen3"
    assert obj["model_info"]["qwen3.context_length"] == 40960
    assert list(obj["model_info"]) == sorted(obj["model_info"])  # Go sorts map keys
    assert "temperature                    0.6" in obj["parameters"]
    assert CREATED_AT.match(obj["modified_at"])
    assert post(server, "/api/show", {"name": "llama3.2"}).status == 200  # legacy field


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model": "nope"}, 404, "model 'nope' not found"),
        ({}, 400, "model is required"),
        ({"model": "bad name!"}, 400, "invalid model name"),
    ],
)
def test_show_errors(server, body, status, error):
    resp = post(server, "/api/show", body)
    assert (resp.status, resp.json()) == (status, {"error": error})


def test_pull_streams_progress_then_installs(server):
    resp = post(server, "/api/pull", {"model": "gemma3"})
    assert resp.content_type == "application/x-ndjson"
    lines = resp.lines()
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    layers: dict[str, list[dict[str, Any]]] = {}
    for line in lines[1:-3]:
        assert line["status"] == "pulling " + line["digest"][7:19]
        assert list(line)[:3] == ["status", "digest", "total"]
        layers.setdefault(line["digest"], []).append(line)
    assert len(layers) >= 2
    for progress in layers.values():
        assert "completed" not in progress[0]
        completed = [p["completed"] for p in progress[1:]]
        assert len(completed) >= 2
        assert completed == sorted(completed) and completed[-1] == progress[0]["total"]
    names = [m["name"] for m in call(server, "GET", "/api/tags").json()["models"]]
    assert names[0] == "gemma3:latest"
    again = post(server, "/api/pull", {"model": "gemma3"}).lines()
    assert all(line.get("completed") == line.get("total") for line in again[1:-3])


def test_pull_unknown_model(server):
    resp = post(server, "/api/pull", {"model": "no-such-model"})
    assert resp.status == 200
    assert resp.lines() == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    single = post(server, "/api/pull", {"model": "no-such-model", "stream": False})
    assert (single.status, single.json()) == (
        500,
        {"error": "pull model manifest: file does not exist"},
    )
    assert post(server, "/api/pull", {"model": "bad name!"}).json() == {
        "error": "invalid model name"
    }


def test_pull_without_streaming_and_remote_registry(server):
    server.add_remote_model("tiny", size=1_000_000, capabilities=("completion",))
    resp = post(server, "/api/pull", {"model": "tiny", "stream": False})
    assert (resp.status, resp.body) == (200, b'{"status":"success"}')
    assert resp.content_type == "application/json"
    assert post(server, GENERATE, {"model": "tiny", "prompt": "hi", "stream": False}).status == 200


def test_delete(server):
    resp = call(server, "DELETE", "/api/delete", {"model": "llava"})
    assert (resp.status, resp.body) == (200, b"")
    assert "content-type" not in resp.headers
    names = [m["name"] for m in call(server, "GET", "/api/tags").json()["models"]]
    assert "llava:latest" not in names
    again = call(server, "DELETE", "/api/delete", {"model": "llava"})
    assert (again.status, again.json()) == (404, {"error": "model 'llava' not found"})
    bad = call(server, "DELETE", "/api/delete", {"model": "bad name!"})
    assert (bad.status, bad.json()) == (400, {"error": 'name "bad name!" is invalid'})
    empty = call(server, "DELETE", "/api/delete", raw=b"")
    assert empty.json() == {"error": "missing request body"}


def test_copy(server):
    resp = post(server, "/api/copy", {"source": "llama3.2", "destination": "backup"})
    assert (resp.status, resp.body) == (200, b"")
    models = {m["name"]: m for m in call(server, "GET", "/api/tags").json()["models"]}
    assert models["backup:latest"]["digest"] == models["llama3.2:latest"]["digest"]
    missing = post(server, "/api/copy", {"source": "nope", "destination": "x"})
    assert (missing.status, missing.json()) == (404, {"error": 'model "nope" not found'})
    bad = post(server, "/api/copy", {"source": "bad name!", "destination": "x"})
    assert (bad.status, bad.json()) == (400, {"error": 'source "bad name!" is invalid'})
    bad = post(server, "/api/copy", {"source": "llama3.2", "destination": "a/b/c/d"})
    assert (bad.status, bad.json()) == (400, {"error": 'destination "a/b/c/d" is invalid'})


# ---------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embed_vectors_are_normalized_deterministic_and_meaningful(server):
    inputs = ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew"]
    resp = post(server, "/api/embed", {"model": "all-minilm", "input": inputs})
    obj = resp.json()
    assert list(obj) == [
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    ]
    vectors = obj["embeddings"]
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-5)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    again = post(server, "/api/embed", {"model": "all-minilm", "input": inputs[0]}).json()
    assert again["embeddings"] == [vectors[0]]
    assert "all-minilm:latest" in server.loaded_models()


def test_embed_dimensions_truncates_and_renormalizes(server):
    body = {"model": "all-minilm", "input": "hello", "dimensions": 8}
    (vector,) = post(server, "/api/embed", body).json()["embeddings"]
    assert len(vector) == 8
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ({"model": "all-minilm"}, 200, {"model": "all-minilm", "embeddings": []}),
        ({"model": "all-minilm", "input": [1, 2]}, 400, {"error": "invalid input type"}),
        (
            {"model": "nope", "input": "x"},
            404,
            {"error": 'model "nope" not found, try pulling it first'},
        ),
        ({"input": "x"}, 400, {"error": "model is required"}),
        (
            {"model": "all-minilm", "input": "word " * 600, "truncate": False},
            400,
            {"error": "the input length exceeds the context length"},
        ),
    ],
)
def test_embed_edge_cases(server, body, status, expected):
    resp = post(server, "/api/embed", body)
    assert (resp.status, resp.json()) == (status, expected)


def test_legacy_embeddings(server):
    obj = post(server, "/api/embeddings", {"model": "all-minilm", "prompt": "hello"}).json()
    assert list(obj) == ["embedding"] and len(obj["embedding"]) == 384
    empty = post(server, "/api/embeddings", {"model": "all-minilm", "prompt": ""})
    assert empty.body == b'{"embedding":[]}'


# ---------------------------------------------------------------------------------------------
# replies API, recording, reset
# ---------------------------------------------------------------------------------------------


def test_reply_rules_latest_wins_model_filter_and_callables(server):
    server.add_reply("weather", "Sunny.")
    server.add_reply("weather", "Rainy.", model="qwen3")
    seen: list[RecordedRequest] = []

    def by_callable(request: RecordedRequest) -> str | None:
        seen.append(request)
        return "From a callable." if "callable" in request.prompt else None

    server.add_reply(by_callable)

    def ask(model: str, text: str) -> str:
        body = chat_body(model, content=text, think=False, stream=False)
        return post(server, CHAT, body).json()["message"]["content"]

    assert ask("llama3.2", "weather?") == "Sunny."
    assert ask("qwen3", "weather?") == "Rainy."
    assert ask("llama3.2", "callable weather?") == "From a callable."
    assert seen[-1].body["messages"][0]["content"] == "callable weather?"
    server.clear_replies()
    assert ask("llama3.2", "weather?") != "Sunny."


def test_failing_reply_callable_is_a_500(server):
    def broken(request: RecordedRequest) -> str:
        raise RuntimeError("bug in test")

    server.add_reply(broken)
    resp = post(server, CHAT, chat_body(stream=False))
    assert resp.status == 500
    assert "bug in test" in resp.json()["error"]


def test_requests_are_recorded(server):
    post(server, "/api/chat?debug=1", chat_body(content="record me"))
    call(server, "GET", "/api/tags")
    first, second = server.requests
    assert (first.method, first.path, first.status) == ("POST", "/api/chat", 200)
    assert first.headers["content-type"] == "application/json"
    assert first.body["messages"][0]["content"] == "record me"
    assert json.loads(first.raw_body) == first.body
    assert first.chunks_sent > 3
    assert first.finished.wait(5) and not first.client_disconnected
    assert server.last_request() is second
    assert server.last_request("/api/chat") is first
    assert server.last_request("/api/ps") is None


def test_recorded_headers_match_names_whatever_their_case(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /api/tags HTTP/1.1\r\nHost: x\r\nauthorization: Bearer x\r\n"
            b"X-Team: physics\r\nConnection: close\r\n\r\n"
        )
        while sock.recv(65536):
            pass
    headers = server.last_request("/api/tags").headers
    assert headers["Authorization"] == "Bearer x"
    assert headers.get("AUTHORIZATION") == "Bearer x"
    assert "Authorization" in headers and "x-team" in headers
    assert headers.get("X-Missing") is None and "X-Missing" not in headers
    with pytest.raises(KeyError, match="X-Missing"):
        headers["X-Missing"]
    assert [name for name in headers if name != "Host"] == ["authorization", "X-Team", "Connection"]
    assert headers == {
        "AUTHORIZATION": "Bearer x",
        "x-team": "physics",
        "host": "x",
        "connection": "close",
    }
    made_by_hand = RecordedRequest("GET", "/", {"Content-Type": "text/plain"}, None, b"")
    assert isinstance(made_by_hand.headers, Headers)
    assert made_by_hand.headers["content-type"] == "text/plain"


def test_reset_restores_a_fresh_server(server):
    server.add_model("extra")
    server.add_reply("x", "y")
    server.inject(Fault(status=500))
    server.reset()
    assert [m.name for m in server.models] == [
        "llama3.2:latest",
        "qwen3:latest",
        "llava:latest",
        "qwen2.5-coder:latest",
        "all-minilm:latest",
    ]
    assert server.requests == []
    assert (
        post(server, GENERATE, {"model": "llama3.2", "prompt": "x", "stream": False}).status == 200
    )


def test_keep_alive_connection_serves_several_requests(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        sockets = []
        for body in (chat_body(), chat_body(stream=False), {"model": "llama3.2"}):
            conn.request("POST", "/api/chat", body=json.dumps(body))
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
            sockets.append(conn.sock)
        assert sockets[0] is not None and all(s is sockets[0] for s in sockets)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# disconnects, stop(), concurrency
# ---------------------------------------------------------------------------------------------


def open_stream(server: FakeOllama, body: Any) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request_bytes(server, GENERATE, body))
    return sock


def test_client_disconnect_mid_stream_is_detected(server):
    server.add_reply("long", Reply(text=[f"t{i} " for i in range(200)]))
    server.inject(Fault(delay=0.01))
    sock = open_stream(server, {"model": "llama3.2", "prompt": "long"})
    data = b""
    while data.count(b'"done":false') < 2:
        data += sock.recv(4096)
    sock.close()
    record = server.last_request(GENERATE)
    assert record is not None and record.finished.wait(5)
    assert record.client_disconnected
    assert record.chunks_sent < 50


def test_stop_returns_promptly_with_a_slow_stream_in_flight():
    server = FakeOllama().start()
    server.add_reply("slow", Reply(text=["a"] * 100))
    server.inject(Fault(delay=2.0))
    sock = open_stream(server, {"model": "llama3.2", "prompt": "slow"})
    try:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # headers sent, first token pending
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        record = server.requests[0]
        assert record.finished.is_set()
        assert not record.client_disconnected  # the server went away, not the client
        sock.settimeout(2)
        assert sock.recv(4096) == b""  # the client sees the connection end, it does not hang
    finally:
        sock.close()
    with pytest.raises(RuntimeError):
        _ = server.url


def test_concurrent_streams_are_served_in_parallel(server):
    server.add_reply("par", Reply(text=["x"] * 5))
    server.inject(Fault(delay=0.05))
    results: list[str] = []

    def run() -> None:
        lines = stream_lines(server, GENERATE, {"model": "llama3.2", "prompt": "par"})
        results.append(text_of(lines, chat=False))

    threads = [threading.Thread(target=run) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["xxxxx"] * 4
    assert time.monotonic() - started < 4 * 5 * 0.05  # not one after another


def test_fixed_port_and_restart():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeOllama(port=port)
    with fake:
        assert fake.url == f"http://127.0.0.1:{port}"
        assert call(fake, "GET", "/").status == 200
    with pytest.raises(OSError):
        call(fake, "GET", "/")


# ---------------------------------------------------------------------------------------------
# pace: instant by default, realistic when asked (the command line asks)
# ---------------------------------------------------------------------------------------------


def timed_lines(port: int, path: str, body: Any) -> tuple[list[float], list[dict[str, Any]]]:
    """Stream *path* and note when each NDJSON line arrives (time.monotonic)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body))
        resp = conn.getresponse()
        assert resp.status == 200
        times, lines = [], []
        while line := resp.readline():
            times.append(time.monotonic())
            lines.append(json.loads(line))
        return times, lines
    finally:
        conn.close()


def test_fake_ollama_fixture_is_instant(fake_ollama):
    assert (fake_ollama.token_delay, fake_ollama.pull_seconds) == (0.0, 0.0)
    fake_ollama.add_reply("many", Reply(text=[f"t{i} " for i in range(50)]))
    started = time.monotonic()
    _, lines = timed_lines(fake_ollama.port, GENERATE, {"model": "llama3.2", "prompt": "many"})
    _, progress = timed_lines(fake_ollama.port, "/api/pull", {"model": "gemma3"})
    # At the command line's pace the answer alone would take 2 s and the pull 2 s more.
    assert time.monotonic() - started < 1.0
    assert len(lines) == 51 and progress[-1] == {"status": "success"}


def test_token_delay_paces_each_token_streamed_or_not():
    with FakeOllama(token_delay=0.05) as server:
        server.add_reply("pace", Reply(text=[f"w{i} " for i in range(8)]))
        body = {"model": "llama3.2", "prompt": "pace"}
        times, lines = timed_lines(server.port, GENERATE, body)
        assert text_of(lines, chat=False) == "".join(f"w{i} " for i in range(8))
        spread = times[-2] - times[0]  # first to last token; the final chunk follows at once
        assert 0.7 * 7 * 0.05 <= spread < 7 * 0.05 + 2.0
        started = time.monotonic()
        assert post(server, GENERATE, {**body, "stream": False}).status == 200
        assert time.monotonic() - started >= 8 * 0.05 * 0.9  # generated at the same pace


def test_faults_injected_later_compose_with_the_pace():
    with FakeOllama(token_delay=0.04) as server:
        server.add_reply("go", Reply(text=["a", "b", "c", "d", "e"]))
        server.inject(Fault(error_after=3), times=1)
        started = time.monotonic()
        lines = stream_lines(server, GENERATE, {"model": "llama3.2", "prompt": "go"})
        assert [line.get("response") for line in lines] == ["a", "b", "c", None]
        assert lines[-1] == {"error": "an error was encountered while running the model"}
        assert time.monotonic() - started >= 3 * 0.04 * 0.9
        server.inject(Fault(delay=0.04), times=1)  # a slow-model fault adds to the pace
        times, _ = timed_lines(server.port, GENERATE, {"model": "llama3.2", "prompt": "go"})
        assert times[-2] - times[0] >= 4 * 0.08 * 0.8


def test_pull_seconds_spreads_progress_over_the_pull_and_installs_at_the_end():
    with FakeOllama(pull_seconds=0.6) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            started = time.monotonic()
            conn.request("POST", "/api/pull", body=json.dumps({"model": "gemma3"}))
            resp = conn.getresponse()
            times, lines, listed_while_pulling = [], [], []
            while line := resp.readline():
                times.append(time.monotonic())
                lines.append(json.loads(line))
                if lines[-1].get("completed") and len(listed_while_pulling) < 1:
                    tags = call(server, "GET", "/api/tags").json()["models"]
                    listed_while_pulling.append("gemma3:latest" in [m["name"] for m in tags])
            elapsed = time.monotonic() - started
        finally:
            conn.close()
        assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
        weights = lines[1]["digest"]
        updates = [t for t, line in zip(times, lines, strict=True) if line.get("digest") == weights]
        assert len(updates) >= 6  # a progress bar that moves, not a jump to 100 %
        assert updates[-1] - updates[1] >= 0.3  # the download takes most of the time
        assert 0.6 <= elapsed < 0.6 + 2.0
        assert listed_while_pulling == [False]  # not installed before it is complete
        assert "gemma3:latest" in [m.name for m in server.models]
        server.add_remote_model("tiny", size=1_000_000)
        started = time.monotonic()
        single = post(server, "/api/pull", {"model": "tiny", "stream": False})
        assert single.json() == {"status": "success"}
        assert time.monotonic() - started >= 0.6  # as long, without the lines


@pytest.mark.parametrize(
    ("pace", "path", "body"),
    [
        ({"token_delay": 30.0}, GENERATE, {"model": "llama3.2", "prompt": "wait"}),
        ({"pull_seconds": 300.0}, "/api/pull", {"model": "gemma3"}),
    ],
)
def test_stop_interrupts_the_pace(pace, path, body):
    server = FakeOllama(**pace).start()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(request_bytes(server, path, body))
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # under way, waiting at its pace
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        assert server.requests[0].finished.is_set()
    finally:
        sock.close()


def test_a_client_leaving_a_paced_pull_is_noticed_and_gets_no_model():
    with FakeOllama(pull_seconds=300.0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request_bytes(server, "/api/pull", {"model": "gemma3"}))
            data = b""
            while b"pulling manifest" not in data:
                data += sock.recv(4096)
        record = server.last_request("/api/pull")
        assert record is not None and record.finished.wait(5)
        assert record.client_disconnected
        assert "gemma3:latest" not in [m.name for m in server.models]


def test_pace_is_validated():
    with pytest.raises(ValueError, match="negative"):
        FakeOllama(token_delay=-0.1)
    with pytest.raises(ValueError, match="negative"):
        FakeOllama(pull_seconds=-1)


# ---------------------------------------------------------------------------------------------
# command line and pytest plugin
# ---------------------------------------------------------------------------------------------


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_serves_until_terminated():
    port = free_port()
    command = [sys.executable, "-m", "ollama_magic.testing", "--port", str(port), "--quiet"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )
    try:

        def answers() -> bool:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/")
                return conn.getresponse().read() == b"Ollama is running"
            except OSError:
                return False

        assert wait_for(answers, timeout=15), proc.stderr.read() if proc.poll() is not None else ""
        banner = proc.stdout.readline()
        assert "stand-in" in banner.lower()
        assert f"http://127.0.0.1:{port}" in banner
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_cli_reports_a_busy_port(server):
    command = [sys.executable, "-m", "ollama_magic.testing", "--port", str(server.port)]
    done = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=30)
    assert done.returncode == 1
    assert f"port {server.port}" in done.stderr and "already in use" in done.stderr


def test_cli_defaults_to_a_realistic_pace_and_zero_means_instant():
    args = parse_args([])
    assert (args.delay, args.pull_seconds, args.compat, args.port) == (0.04, 2.0, "ollama", 11434)
    paced = server_from_args(args)
    assert (paced.token_delay, paced.pull_seconds) == (0.04, 2.0)
    instant = server_from_args(parse_args(["--delay", "0", "--pull-seconds", "0", "--port", "0"]))
    assert (instant.token_delay, instant.pull_seconds) == (0.0, 0.0)
    with instant:
        instant.add_reply("many", Reply(text=["x"] * 50))
        started = time.monotonic()
        stream_lines(instant, GENERATE, {"model": "llama3.2", "prompt": "many"})
        assert time.monotonic() - started < 1.0  # 2 s at the default pace


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--delay", "-1"], "--delay must not be negative"),
        (["--pull-seconds", "-0.5"], "--pull-seconds must not be negative"),
        (["--compat", "openai"], "invalid choice: 'openai'"),
        (["--delay", "fast"], "invalid float value: 'fast'"),
    ],
)
def test_cli_rejects_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help_describes_the_pace(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default 0.04, about 25 tokens/s; 0: instant answers" in text
    assert "--pull-seconds SECONDS" in text and "(default 2; 0: instant pulls)" in text
    assert "--compat {ollama,adapter}" in text


@pytest.mark.parametrize(
    ("delay", "pull", "expected"),
    [
        (0.04, 2.0, "about 25 tokens/s, pulls take about 2 s; --delay 0 --pull-seconds 0 for"),
        (0.04, 0.0, "about 25 tokens/s; --delay 0 for instant answers"),
        (0.5, 0.0, "about 2 tokens/s; --delay 0 for instant answers"),
        (0.0, 1.5, "pulls take about 1.5 s; --pull-seconds 0 for instant answers"),
        (0.0, 0.0, "instant answers"),
    ],
)
def test_describe_pace(delay, pull, expected):
    assert describe_pace(delay, pull).startswith(expected)


def read_line(stream: Any, timeout: float) -> str:
    """One line of a child's output, failing (not hanging) if none comes in time."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no output within {timeout} s"
    return stream.readline()


def test_cli_serves_at_a_realistic_pace_by_default():
    command = [sys.executable, "-m", "ollama_magic.testing", "--port", "0", "--quiet"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env()
    )
    try:
        banner = read_line(proc.stdout, 15)
        assert "(about 25 tokens/s, pulls take about 2 s; --delay 0" in banner, banner
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", banner).group(1))
        body = {"model": "llama3.2", "prompt": "Hi", "options": {"num_predict": 10}}
        times, lines = timed_lines(port, GENERATE, body)
        assert len(lines) == 11 and lines[-1]["done_reason"] == "length"
        assert 0.7 * 9 * 0.04 <= times[-2] - times[0] < 9 * 0.04 + 2.0
        times, lines = timed_lines(port, "/api/pull", {"model": "gemma3"})
        assert lines[-1] == {"status": "success"}
        progress = [t for t, line in zip(times, lines, strict=True) if "completed" in line]
        assert len(progress) >= 10
        assert 2.0 * 0.9 <= times[-1] - times[0] < 2.0 + 3.0
        assert progress[-1] - progress[0] >= 1.0  # spread over the time, not all at the end
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_pytest_plugin_fixture(tmp_path):
    (tmp_path / "test_uses_fixture.py").write_text(
        "import urllib.error, urllib.request\n"
        "import pytest\n"
        "URLS = []\n"
        "def test_served(fake_ollama):\n"
        "    URLS.append(fake_ollama.url)\n"
        "    with urllib.request.urlopen(fake_ollama.url + '/') as r:\n"
        "        assert r.read() == b'Ollama is running'\n"
        "def test_stopped_afterwards():\n"
        "    with pytest.raises(urllib.error.URLError):\n"
        "        urllib.request.urlopen(URLS[0] + '/', timeout=2)\n"
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "ollama_magic.testing.pytest_plugin",
        str(tmp_path / "test_uses_fixture.py"),
    ]
    # Only this plugin: other installed plugins are slow to load and irrelevant here.
    env = {**subprocess_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_import_hygiene():
    # Compared with what `import ollama_magic` itself loads (that file is not this package's).
    code = (
        "import json, sys, urllib.request, ollama_magic\n"
        "before = set(sys.modules)\n"
        "import ollama_magic.testing.pytest_plugin\n"
        "plugin = sorted(set(sys.modules) - before)\n"
        "from ollama_magic.testing import FakeOllama\n"
        "with FakeOllama() as s:\n"
        "    urllib.request.urlopen(s.url + '/api/tags').read()\n"
        "print(json.dumps([plugin, sorted(set(sys.modules) - before)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    plugin, served = json.loads(done.stdout)
    assert "ollama_magic.testing.server" not in plugin  # the pytest plugin stays light
    assert "ollama_magic.testing.server" in served
    for new in (plugin, served):
        assert not [m for m in new if m.split(".")[0] in ("IPython", "requests", "jsonschema")]
        assert not [
            m
            for m in new
            if m.startswith("ollama_magic.") and not m.startswith("ollama_magic.testing")
        ]


def test_it_samples_above_temperature_zero_and_a_seed_repeats_the_draw(server):
    def answer(**options) -> str:
        body = {"model": "llama3.2", "prompt": "Name a colour.", "stream": False}
        return post(server, "/api/generate", {**body, "options": options}).json()["response"]

    drawn = {answer(temperature=0.9) for _ in range(8)}
    assert len(drawn) > 1  # 210 possible answers: eight equal draws would be a broken sampler
    assert len({answer(temperature=0.9, seed=7) for _ in range(3)}) == 1
    assert len({answer(temperature=0.9, seed=seed) for seed in range(6)}) > 1  # seeds differ
    assert len({answer(temperature=0) for _ in range(3)} | {answer()}) == 1  # greedy
