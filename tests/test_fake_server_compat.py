"""The stand-in imitating an "Ollama-compatible" adapter, and the Fault options behind it.

Each deviation is checked three ways over raw HTTP: in `compat="adapter"` mode, as a single
Fault against a normal stand-in, and absent from the default `compat="ollama"` server.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ollama_magic.testing import FakeOllama, Fault, Reply

GENERATE = "/api/generate"
CHAT = "/api/chat"
DURATIONS = ["total_duration", "load_duration", "prompt_eval_duration", "eval_duration"]
NDJSON = "application/x-ndjson"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def lines(self) -> list[dict[str, Any]]:
        """The body as NDJSON (a `stream: false` JSON object is one line without newline)."""
        return [json.loads(line) for line in self.body.splitlines() if line]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def call(server: FakeOllama, method: str, path: str, body: Any = None) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data)
        resp = conn.getresponse()
        payload = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
    finally:
        conn.close()


def body_for(path: str, prompt: str, model: str = "llama3.2", **extra: Any) -> dict[str, Any]:
    if path == CHAT:
        return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    return {"model": model, "prompt": prompt, **extra}


def answer(server: FakeOllama, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """All objects of a successful answer (one for `stream: false`)."""
    resp = call(server, "POST", path, body)
    assert resp.status == 200, resp.body
    return resp.lines()


def text_of(lines: list[dict[str, Any]]) -> str:
    return "".join(
        line.get("response") or line.get("message", {}).get("content", "") for line in lines
    )


@pytest.fixture
def adapter() -> Iterator[FakeOllama]:
    with FakeOllama(compat="adapter") as fake:
        yield fake


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(compat="ollama") as fake:
        yield fake


# ---------------------------------------------------------------------------------------------
# construction
# ---------------------------------------------------------------------------------------------


def test_compat_is_validated_and_defaults_to_ollama():
    assert FakeOllama().compat == "ollama"
    assert FakeOllama(compat="adapter").compat == "adapter"
    with pytest.raises(ValueError, match="compat"):
        FakeOllama(compat="openai")


def test_new_fault_options_are_validated():
    assert Fault(stats="words").stats == "words"
    assert Fault(drop=["thinking", "logprobs"]).drop == ("thinking", "logprobs")
    assert Fault(drop="done_reason").drop == ("done_reason",)  # one name, not its letters
    with pytest.raises(ValueError, match="drop"):
        Fault(drop=("logprobs", "context"))
    with pytest.raises(ValueError, match="stats"):
        Fault(stats="tokens")


# ---------------------------------------------------------------------------------------------
# (a) HEAD / and (b) /api/version
# ---------------------------------------------------------------------------------------------


def test_adapter_refuses_head_root_but_answers_get(adapter):
    head = call(adapter, "HEAD", "/")
    assert (head.status, head.content_type) == (405, "text/plain")
    assert head.headers["content-length"] == str(len(b"405 method not allowed"))
    get = call(adapter, "GET", "/")
    assert (get.status, get.body) == (200, b"Ollama is running")


def test_adapter_has_no_version_endpoint_but_lists_models(adapter):
    resp = call(adapter, "GET", "/api/version")
    assert (resp.status, resp.body, resp.content_type) == (404, b"404 page not found", "text/plain")
    tags = call(adapter, "GET", "/api/tags")
    assert tags.status == 200
    assert "llama3.2:latest" in [m["name"] for m in json.loads(tags.body)["models"]]


def test_ollama_mode_answers_head_root_and_version(ollama):
    assert call(ollama, "HEAD", "/").status == 200
    resp = call(ollama, "GET", "/api/version")
    assert (resp.status, json.loads(resp.body)) == (200, {"version": "0.33.0"})


# ---------------------------------------------------------------------------------------------
# (c) a missing model: 200 and one NDJSON error line
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("path", [GENERATE, CHAT])
def test_adapter_reports_a_missing_model_in_band(adapter, path, stream):
    resp = call(adapter, "POST", path, body_for(path, "hi", model="nope", stream=stream))
    assert (resp.status, resp.content_type) == (200, NDJSON)
    assert resp.body == b'{"error":"model \'nope\' not found"}\n'


@pytest.mark.parametrize("stream", [True, False])
def test_status_200_fault_sends_one_error_line(ollama, stream):
    ollama.inject(Fault(status=200, error="model 'x' not found"), endpoint=CHAT)
    resp = call(ollama, "POST", CHAT, body_for(CHAT, "hi", stream=stream))
    assert (resp.status, resp.content_type) == (200, NDJSON)
    assert resp.body == b'{"error":"model \'x\' not found"}\n'
    assert call(ollama, "POST", GENERATE, body_for(GENERATE, "hi")).lines()[-1]["done"] is True


@pytest.mark.parametrize("path", [GENERATE, CHAT])
def test_ollama_mode_reports_a_missing_model_as_404(ollama, path):
    resp = call(ollama, "POST", path, body_for(path, "hi", model="nope"))
    assert resp.status == 404
    assert json.loads(resp.body) == {"error": "model 'nope' not found"}


# ---------------------------------------------------------------------------------------------
# (d) word counts, no durations
# ---------------------------------------------------------------------------------------------

PROMPT = "How are   you today?"  # four words, more tokens
REPLY = "Fine, thanks: all good.\nAnd you?"  # six words, more tokens


def word_stats_server(server: FakeOllama, inject: bool) -> FakeOllama:
    server.add_reply("today", REPLY)
    if inject:
        server.inject(Fault(stats="words"))
    return server


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("path", [GENERATE, CHAT])
@pytest.mark.parametrize("mode", ["adapter", "fault"])
def test_stats_are_word_counts_without_durations(adapter, ollama, mode, path, stream):
    server = (
        word_stats_server(adapter, False) if mode == "adapter" else word_stats_server(ollama, True)
    )
    lines = answer(server, path, body_for(path, PROMPT, stream=stream))
    assert text_of(lines) == REPLY
    final = lines[-1]
    assert (final["eval_count"], final["prompt_eval_count"]) == (6, 4)
    assert {name: final[name] for name in DURATIONS} == dict.fromkeys(DURATIONS, 0)


def test_word_counts_cover_every_chat_message_and_the_generate_system(ollama):
    ollama.inject(Fault(stats="words"))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": PROMPT},
    ]
    final = answer(ollama, CHAT, {"model": "llama3.2", "messages": messages, "stream": False})[-1]
    assert final["prompt_eval_count"] == 2 + 2 + 1 + 4
    body = body_for(GENERATE, PROMPT, system="Be brief.", stream=False)
    assert answer(ollama, GENERATE, body)[-1]["prompt_eval_count"] == 2 + 4


def test_ollama_mode_counts_tokens_and_measures_durations(ollama):
    word_stats_server(ollama, False)
    final = answer(ollama, CHAT, body_for(CHAT, PROMPT))[-1]
    assert final["eval_count"] > 6  # tokens, not words
    assert final["prompt_eval_count"] > 4
    assert all(final[name] > 0 for name in DURATIONS)


# ---------------------------------------------------------------------------------------------
# (e) dropped fields: logprobs, thinking, done_reason
# ---------------------------------------------------------------------------------------------


def keys_anywhere(lines: list[dict[str, Any]]) -> set[str]:
    """Every key at the top level and in `message`, over all lines."""
    keys: set[str] = set()
    for line in lines:
        keys |= set(line) | set(line.get("message", {}))
    return keys


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("path", [GENERATE, CHAT])
def test_adapter_drops_logprobs_thinking_and_done_reason(adapter, path, stream):
    adapter.add_reply("riddle", Reply(text="A map.", thinking="Cities without houses..."))
    body = body_for(path, "riddle", model="qwen3", think=True, logprobs=True, stream=stream)
    lines = answer(adapter, path, body)
    assert text_of(lines) == "A map."
    assert lines[-1]["done"] is True
    assert not keys_anywhere(lines) & {"logprobs", "thinking", "done_reason"}


# What each single option must remove, and what it must leave alone.
DROP_CASES = [("logprobs",), ("thinking",), ("done_reason",)]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("drop", DROP_CASES)
def test_drop_fault_removes_only_the_named_field(ollama, drop, stream):
    ollama.add_reply("riddle", Reply(text="A map.", thinking="Cities without houses..."))
    ollama.inject(Fault(drop=drop))
    body = body_for(CHAT, "riddle", model="qwen3", think=True, logprobs=True, stream=stream)
    lines = answer(ollama, CHAT, body)
    assert text_of(lines) == "A map."
    present = keys_anywhere(lines)
    assert drop[0] not in present
    assert {"logprobs", "thinking", "done_reason"} - set(drop) <= present


def test_ollama_mode_sends_logprobs_thinking_and_done_reason(ollama):
    body = body_for(GENERATE, "riddle", model="qwen3", think=True, logprobs=True)
    lines = answer(ollama, GENERATE, body)
    assert any("logprobs" in line for line in lines)
    assert any("thinking" in line for line in lines)
    assert lines[-1]["done_reason"] == "stop"


def test_dropped_thinking_still_counts_as_generated(ollama):
    ollama.add_reply("riddle", Reply(text="A map.", thinking="Cities without houses, rivers"))
    body = body_for(CHAT, "riddle", model="qwen3", stream=False)
    full = answer(ollama, CHAT, body)[-1]
    ollama.inject(Fault(drop=("thinking",)))
    dropped = answer(ollama, CHAT, body)[-1]
    assert "thinking" not in dropped["message"]
    assert dropped["eval_count"] == full["eval_count"]  # the model thought; it was not relayed


# ---------------------------------------------------------------------------------------------
# composition with injected faults and the pace
# ---------------------------------------------------------------------------------------------


def test_injected_faults_compose_with_adapter_mode(adapter):
    adapter.inject(Fault(stats="omit"), times=1)  # the fault's own stats win
    final = answer(adapter, CHAT, body_for(CHAT, "hi"))[-1]
    assert "eval_count" not in final and "done_reason" not in final
    adapter.inject(Fault(error_after=2), times=1)  # a stream fault still applies
    lines = answer(adapter, GENERATE, body_for(GENERATE, "hi"))
    assert lines[-1] == {"error": "an error was encountered while running the model"}
    assert len(lines) == 3
    adapter.inject(Fault(status=503, error="busy"), times=1)  # and so does a status fault
    assert call(adapter, "POST", CHAT, body_for(CHAT, "hi")).status == 503
    final = answer(adapter, CHAT, body_for(CHAT, "hi"))[-1]  # then the adapter's own stats
    assert final["total_duration"] == 0 and "done_reason" not in final


def test_cli_compat_flag_builds_an_adapter():
    from ollama_magic.testing.__main__ import parse_args, server_from_args

    assert server_from_args(parse_args(["--compat", "adapter"])).compat == "adapter"
    assert server_from_args(parse_args([])).compat == "ollama"
