"""Fidelity of the stand-in where users rely on it and no other test looks: the exact error
texts of the real server (Go's JSON decoder, field checks, unknown models) and the legacy
`/api/embeddings` endpoint. Everything goes over real HTTP with `requests`.

Expected texts come from /work/shared/ollama-api.md (§4, §5.3, §6) and, where it says "Go json
text", from Go's encoding/json (scanner.go and decode.go) as the server (Go 1.26) uses it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ollama_magic.testing import FakeOllama

JSON_UTF8 = "application/json; charset=utf-8"  # gin's c.JSON: handler errors
JSON_PLAIN = "application/json"  # errors the runner returns before the first chunk
GENERATE = "/api/generate"
CHAT = "/api/chat"
EMBEDDINGS = "/api/embeddings"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOllama]:
    """One stand-in for the error tables: no case there depends on what another one did."""
    with FakeOllama() as fake:
        yield fake


def send(
    server: FakeOllama, path: str, body: bytes | dict[str, Any], method: str = "POST"
) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.request(
        method,
        server.url + path,
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def go_body(obj: Any) -> bytes:
    """A JSON object as gin writes it: compact, UTF-8, no trailing newline (no <>& here)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def assert_error(
    resp: requests.Response, status: int, message: str, content_type: str = JSON_UTF8
) -> None:
    assert (resp.status_code, resp.headers["Content-Type"]) == (status, content_type)
    assert resp.content == go_body({"error": message})


# ---------------------------------------------------------------------------------------------
# Malformed JSON: the text of Go's json.Decoder, byte for byte
# ---------------------------------------------------------------------------------------------

SYNTAX_CASES = [
    ("empty", b"", "missing request body"),
    ("only-space", b" \r\n\t ", "missing request body"),
    ("bare-key", b"{model", "invalid character 'm' looking for beginning of object key string"),
    (
        "single-quotes",
        b"{'model': 'llama3.2'}",
        "invalid character '\\'' looking for beginning of object key string",
    ),
    ("no-colon", b'{"model" "llama3.2"}', "invalid character '\"' after object key"),
    (
        "no-comma",
        b'{"model": "llama3.2" "prompt": "hi"}',
        "invalid character '\"' after object key:value pair",
    ),
    (
        "trailing-comma-object",
        b'{"model": "llama3.2",}',
        "invalid character '}' looking for beginning of object key string",
    ),
    ("no-comma-array", b'{"context": [1 2]}', "invalid character '2' after array element"),
    (
        "trailing-comma-array",
        b'{"context": [1,]}',
        "invalid character ']' looking for beginning of value",
    ),
    ("tab-in-string", b'{"prompt": "a\tb"}', "invalid character '\\t' in string literal"),
    ("control-in-string", b'{"prompt": "a\x01b"}', "invalid character '\\x01' in string literal"),
    ("bad-escape", b'{"prompt": "C:\\dir"}', "invalid character 'd' in string escape code"),
    (
        "bad-unicode-escape",
        b'{"prompt": "\\u12G4"}',
        "invalid character 'G' in \\u hexadecimal character escape",
    ),
    (
        "leading-dot",
        b'{"options": {"temperature": .5}}',
        "invalid character '.' looking for beginning of value",
    ),
    (
        "trailing-dot",
        b'{"options": {"temperature": 1.}}',
        "invalid character '}' after decimal point in numeric literal",
    ),
    ("lone-minus", b'{"options": {"seed": -}}', "invalid character '}' in numeric literal"),
    (
        "empty-exponent",
        b'{"options": {"temperature": 1e}}',
        "invalid character '}' in exponent of numeric literal",
    ),
    (
        "nan",
        b'{"options": {"temperature": NaN}}',
        "invalid character 'N' looking for beginning of value",
    ),
    (
        "minus-infinity",
        b'{"options": {"temperature": -Infinity}}',
        "invalid character 'I' in numeric literal",
    ),
    (
        "python-true",
        b'{"stream": True}',
        "invalid character 'T' looking for beginning of value",
    ),
    ("short-true", b'{"stream": tru}', "invalid character '}' in literal true (expecting 'e')"),
    ("bad-false", b'{"raw": fasle}', "invalid character 's' in literal false (expecting 'l')"),
    ("short-null", b'{"system": nul}', "invalid character '}' in literal null (expecting 'l')"),
    # Go quotes the offending *byte*: a curly quote's lead byte E2 shows as 'â', a BOM's as 'ï'.
    (
        "curly-quotes",
        "{\u201cmodel\u201d: \u201cllama3.2\u201d}".encode(),
        "invalid character 'â' looking for beginning of object key string",
    ),
    (
        "byte-order-mark",
        b'\xef\xbb\xbf{"model": "llama3.2"}',
        "invalid character 'ï' looking for beginning of value",
    ),
    (
        "error-after-valid-values",
        b'{"options": {}, "context": [], "raw": false, "x": [-0.5e+3, 1E2, "\\u00e9", null] "y"}',
        "invalid character '\"' after object key:value pair",
    ),
    ("cut-after-value", b'{"model": "llama3.2"', "unexpected EOF"),
    ("cut-in-string", b'{"model": "llama3.2", "prompt": "Why is', "unexpected EOF"),
    # A top-level number Python would read as 1: Go's scanner rejects it.
    ("top-level-number", b"1.x", "invalid character 'x' after decimal point in numeric literal"),
    ("top-level-cut", b"-", "unexpected EOF"),
]


@pytest.mark.parametrize(
    ("raw", "message"),
    [case[1:] for case in SYNTAX_CASES],
    ids=[case[0] for case in SYNTAX_CASES],
)
def test_malformed_json_gets_the_go_decoder_text(server, raw, message):
    assert_error(send(server, GENERATE, raw), 400, message)


ENDPOINTS = [
    ("POST", GENERATE, "GenerateRequest"),
    ("POST", CHAT, "ChatRequest"),
    ("POST", "/api/embed", "EmbedRequest"),
    ("POST", EMBEDDINGS, "EmbeddingRequest"),
    ("POST", "/api/show", "ShowRequest"),
    ("POST", "/api/pull", "PullRequest"),
    ("DELETE", "/api/delete", "DeleteRequest"),
    ("POST", "/api/copy", "CopyRequest"),
]


@pytest.mark.parametrize(("method", "path", "struct"), ENDPOINTS, ids=[e[1] for e in ENDPOINTS])
def test_every_endpoint_decodes_its_body_like_gin(server, method, path, struct):
    assert_error(send(server, path, b"", method), 400, "missing request body")
    assert_error(
        send(server, path, b'{"model": "llama3.2",}', method),
        400,
        "invalid character '}' looking for beginning of object key string",
    )
    assert_error(
        send(server, path, b"[]", method),
        400,
        f"json: cannot unmarshal array into Go value of type api.{struct}",
    )
    assert_error(
        send(server, path, b'"llama3.2"', method),
        400,
        f"json: cannot unmarshal string into Go value of type api.{struct}",
    )


# ---------------------------------------------------------------------------------------------
# Well-formed JSON of the wrong shape: UnmarshalTypeError and the custom unmarshalers
# ---------------------------------------------------------------------------------------------


def gen(**fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "prompt": "hi", **fields}


def cht(**fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], **fields}


def unmarshal(kind: str, field: str, go_type: str) -> str:
    return f"json: cannot unmarshal {kind} into Go struct field {field} of type {go_type}"


TYPE_CASES = [
    # The doc's own example (§5.3).
    (
        "string-field",
        GENERATE,
        gen(prompt=42),
        unmarshal("number", "GenerateRequest.prompt", "string"),
    ),
    ("bool-field", GENERATE, gen(raw="yes"), unmarshal("string", "GenerateRequest.raw", "bool")),
    (
        "int-field-string",
        GENERATE,
        gen(top_logprobs="5"),
        unmarshal("string", "GenerateRequest.top_logprobs", "int"),
    ),
    # An int field reports the number as written, and takes no fraction or exponent at all.
    (
        "int-field-fraction",
        GENERATE,
        b'{"model": "llama3.2", "prompt": "hi", "top_logprobs": 2.50}',
        unmarshal("number 2.50", "GenerateRequest.top_logprobs", "int"),
    ),
    (
        "int-field-whole-float",
        CHAT,
        b'{"model": "llama3.2", "messages": [], "top_logprobs": 2.0}',
        unmarshal("number 2.0", "ChatRequest.top_logprobs", "int"),
    ),
    (
        "int-field-exponent",
        "/api/embed",
        b'{"model": "all-minilm", "input": "x", "dimensions": 1e2}',
        unmarshal("number 1e2", "EmbedRequest.dimensions", "int"),
    ),
    (
        "int-field-overflow",
        GENERATE,
        b'{"model": "llama3.2", "context": [1, 99999999999999999999]}',
        unmarshal("number 99999999999999999999", "GenerateRequest.context", "int"),
    ),
    (
        "int-list-element",
        GENERATE,
        gen(context=[1, "2"]),
        unmarshal("string", "GenerateRequest.context", "int"),
    ),
    (
        "int-list",
        GENERATE,
        gen(context="1,2"),
        unmarshal("string", "GenerateRequest.context", "[]int"),
    ),
    (
        "options-not-object",
        CHAT,
        cht(options=["temperature", 0]),
        unmarshal("array", "ChatRequest.options", "map[string]interface {}"),
    ),
    (
        "images-not-list",
        GENERATE,
        gen(model="llava", images="iVBORw0KGgo="),
        unmarshal("string", "GenerateRequest.images", "[]api.ImageData"),
    ),
    (
        "image-not-string",
        GENERATE,
        gen(model="llava", images=[7]),
        unmarshal("number", "GenerateRequest.images", "api.ImageData"),
    ),
    (
        "image-data-uri",
        GENERATE,
        gen(model="llava", images=["data:image/png;base64,iVBORw0KGgo="]),
        "illegal base64 data at input byte 4",
    ),
    (
        "image-unpadded",
        GENERATE,
        gen(model="llava", images=["iVBORw0KGgo"]),
        "illegal base64 data at input byte 8",
    ),
    (
        "image-bad-padding",
        GENERATE,
        gen(model="llava", images=["ab=c"]),
        "illegal base64 data at input byte 2",
    ),
    # Go keeps the first ordinary error (type mismatch or bad base64) in document order...
    (
        "first-error-base64",
        GENERATE,
        {"images": ["!!!!"], "model": 5},
        "illegal base64 data at input byte 0",
    ),
    (
        "first-error-type",
        GENERATE,
        {"model": 5, "images": ["!!!!"]},
        unmarshal("number", "GenerateRequest.model", "string"),
    ),
    # ...but an error from a type's own UnmarshalJSON (think, keep_alive, a message) ends it.
    (
        "custom-unmarshaler-wins",
        GENERATE,
        {"stream": "yes", "think": "extreme"},
        'invalid think value: "extreme" (must be "high", "medium", "low", "max", true, or false)',
    ),
    (
        "think-type",
        CHAT,
        cht(think=1),
        'think must be a boolean or string ("high", "medium", "low", "max", true, or false)',
    ),
    ("keep-alive-no-unit", GENERATE, gen(keep_alive="-1"), 'time: missing unit in duration "-1"'),
    ("keep-alive-empty", GENERATE, gen(keep_alive=""), 'time: invalid duration ""'),
    ("keep-alive-no-digits", CHAT, cht(keep_alive=".s"), 'time: invalid duration ".s"'),
    ("keep-alive-bool", CHAT, cht(keep_alive=True), "Unsupported type: 'bool'"),
    ("keep-alive-list", CHAT, cht(keep_alive=[5]), "Unsupported type: '[]interface {}'"),
    (
        "keep-alive-object",
        EMBEDDINGS,
        {"model": "all-minilm", "keep_alive": {"m": 5}},
        "Unsupported type: 'map[string]interface {}'",
    ),
    (
        "keep-alive-unknown-unit",
        GENERATE,
        gen(keep_alive="5 min"),
        'time: unknown unit " min" in duration "5 min"',
    ),
    # package time quotes non-ASCII bytes as \xHH, unlike %q.
    (
        "keep-alive-non-ascii",
        GENERATE,
        gen(keep_alive="1\u00bdh"),
        'time: unknown unit "\\xc2\\xbdh" in duration "1\\xc2\\xbdh"',
    ),
    (
        "messages-not-list",
        CHAT,
        {"model": "llama3.2", "messages": {"role": "user", "content": "hi"}},
        unmarshal("object", "ChatRequest.messages", "[]api.Message"),
    ),
    # Message.UnmarshalJSON decodes into a local Alias type; its errors name the inner field.
    (
        "message-content",
        CHAT,
        {"model": "llama3.2", "messages": [{"role": "user", "content": 5}]},
        unmarshal("number", "ChatRequest.messages.content", "string"),
    ),
    (
        "message-not-object",
        CHAT,
        {"model": "llama3.2", "messages": ["hi"]},
        unmarshal("string", "ChatRequest.messages", "api.Alias"),
    ),
    (
        "message-tool-calls",
        CHAT,
        {"model": "llama3.2", "messages": [{"role": "assistant", "tool_calls": {}}]},
        unmarshal("object", "ChatRequest.messages.tool_calls", "[]api.ToolCall"),
    ),
    (
        "message-image",
        CHAT,
        {"model": "llava", "messages": [{"role": "user", "content": "?", "images": ["abc"]}]},
        "illegal base64 data at input byte 0",
    ),
    (
        "message-error-ends-decoding",
        CHAT,
        {"model": 5, "messages": [{"role": 1}]},
        unmarshal("number", "ChatRequest.messages.role", "string"),
    ),
    (
        "tools-not-list",
        CHAT,
        cht(tools={"type": "function"}),
        unmarshal("object", "ChatRequest.tools", "api.Tools"),
    ),
    ("top-logprobs-range", CHAT, cht(top_logprobs=21), "top_logprobs must be between 0 and 20"),
]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [case[1:] for case in TYPE_CASES],
    ids=[case[0] for case in TYPE_CASES],
)
def test_wrong_types_get_the_go_decoder_text(server, path, body, message):
    assert_error(send(server, path, body), 400, message)


def test_a_null_body_is_an_empty_request(server):
    # Go decodes `null` into the request struct as a no-op: what follows is "no model".
    assert_error(send(server, GENERATE, b"null"), 404, "model '' not found")
    assert_error(send(server, CHAT, b"null"), 400, "model is required")


# ---------------------------------------------------------------------------------------------
# Errors from the scheduler (options) and the runner (format): HTTP 500
# ---------------------------------------------------------------------------------------------

RUNNER_CASES = [
    (
        "temperature",
        cht(options={"temperature": "hot"}),
        'option "temperature" must be of type float32',
    ),
    ("num-ctx", gen(options={"num_ctx": "8k"}), 'option "num_ctx" must be of type integer'),
    ("use-mmap", gen(options={"use_mmap": 1}), 'option "use_mmap" must be of type boolean'),
    ("stop", cht(options={"stop": "###"}), 'option "stop" must be of type array'),
]


@pytest.mark.parametrize(
    ("body", "message"), [c[1:] for c in RUNNER_CASES], ids=[c[0] for c in RUNNER_CASES]
)
def test_bad_options_are_a_500(server, body, message):
    path = CHAT if "messages" in body else GENERATE
    assert_error(send(server, path, body), 500, message)


def test_bad_options_on_embeddings_are_a_500_too(server):
    body = {"model": "all-minilm", "prompt": "x", "options": {"num_ctx": "big"}}
    assert_error(send(server, EMBEDDINGS, body), 500, 'option "num_ctx" must be of type integer')


FORMAT_CASES = [
    # The doc's example (§4.7): %q of the raw JSON, so the inner quotes are escaped.
    ("xml", b'"xml"', 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'),
    (
        "upper-case",
        b'"JSON"',
        'invalid format: "\\"JSON\\""; expected "json" or a valid JSON Schema object',
    ),
    ("number", b"123", 'invalid format: "123"; expected "json" or a valid JSON Schema object'),
    # format is a json.RawMessage: the text as sent, spaces and all, not re-encoded.
    ("array", b"[1, 2]", 'invalid format: "[1, 2]"; expected "json" or a valid JSON Schema object'),
    ("exponent", b"1e3", 'invalid format: "1e3"; expected "json" or a valid JSON Schema object'),
]


@pytest.mark.parametrize(
    ("raw_format", "message"), [c[1:] for c in FORMAT_CASES], ids=[c[0] for c in FORMAT_CASES]
)
def test_invalid_format_is_a_runner_error_before_any_chunk(server, raw_format, message):
    streamed = b'{"model": "llama3.2", "prompt": "hi", "format": ' + raw_format + b"}"
    # Nothing was streamed yet, so the error is a plain JSON response (no charset, no NDJSON).
    assert_error(send(server, GENERATE, streamed), 500, message, JSON_PLAIN)
    # stream: false collects the answer first; the error is then gin's c.JSON (with charset).
    whole = b'{"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], '
    whole += b'"stream": false, "format": ' + raw_format + b"}"
    assert_error(send(server, CHAT, whole), 500, message, JSON_UTF8)


# ---------------------------------------------------------------------------------------------
# Missing, invalid and unknown models: each endpoint's own wording
# ---------------------------------------------------------------------------------------------

MODEL_CASES = [
    ("generate-empty", "POST", GENERATE, {"prompt": "hi"}, 404, "model '' not found"),
    ("generate-unknown", "POST", GENERATE, gen(model="llama3"), 404, "model 'llama3' not found"),
    ("generate-invalid", "POST", GENERATE, gen(model="bad name!"), 400, "invalid model name"),
    ("chat-empty", "POST", CHAT, {"messages": []}, 400, "model is required"),
    ("chat-unknown", "POST", CHAT, cht(model="Llama3:8B"), 404, "model 'Llama3:8B' not found"),
    ("chat-invalid", "POST", CHAT, cht(model="a/b/c/d"), 400, "invalid model name"),
    ("show-empty", "POST", "/api/show", {}, 400, "model is required"),
    # Fully spelled names: show and delete may print the name normalized (ollama-api.md §5.3).
    (
        "show-unknown",
        "POST",
        "/api/show",
        {"model": "llama3:latest"},
        404,
        "model 'llama3:latest' not found",
    ),
    ("show-invalid", "POST", "/api/show", {"name": "bad name!"}, 400, "invalid model name"),
    (
        "delete-unknown",
        "DELETE",
        "/api/delete",
        {"model": "llama3:latest"},
        404,
        "model 'llama3:latest' not found",
    ),
    (
        "delete-invalid",
        "DELETE",
        "/api/delete",
        {"model": "bad name!"},
        400,
        'name "bad name!" is invalid',
    ),
    # %q escapes a control character the Go way (\x01), not the JSON way (\u0001).
    (
        "delete-control-character",
        "DELETE",
        "/api/delete",
        {"model": "a\u0001b"},
        400,
        'name "a\\x01b" is invalid',
    ),
    (
        "delete-no-break-space",
        "DELETE",
        "/api/delete",
        {"model": "a\u00a0b"},
        400,
        'name "a\\u00a0b" is invalid',
    ),
    (
        "copy-unknown",
        "POST",
        "/api/copy",
        {"source": "llama3", "destination": "x"},
        404,
        'model "llama3" not found',
    ),
    (
        "copy-invalid-source",
        "POST",
        "/api/copy",
        {"source": "bad name!", "destination": "x"},
        400,
        'source "bad name!" is invalid',
    ),
    (
        "copy-invalid-destination",
        "POST",
        "/api/copy",
        {"source": "llama3.2", "destination": ""},
        400,
        'destination "" is invalid',
    ),
    ("embed-empty", "POST", "/api/embed", {"input": "x"}, 400, "model is required"),
    (
        "embed-unknown",
        "POST",
        "/api/embed",
        {"model": "nomic-embed-text", "input": "x"},
        404,
        'model "nomic-embed-text" not found, try pulling it first',
    ),
    ("pull-invalid", "POST", "/api/pull", {"model": "bad name!"}, 400, "invalid model name"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [c[1:] for c in MODEL_CASES],
    ids=[c[0] for c in MODEL_CASES],
)
def test_model_errors_use_each_endpoints_wording(server, method, path, body, status, message):
    assert_error(send(server, path, body, method), status, message)


REQUEST_CHECKS = [
    (
        "thinking",
        CHAT,
        cht(think=True),
        '"llama3.2" does not support thinking',
    ),
    (
        "thinking-level",
        GENERATE,
        gen(model="LLaVA", think="low"),
        '"LLaVA" does not support thinking',
    ),
    (
        "tools",
        CHAT,
        cht(model="llava", tools=[{"type": "function", "function": {"name": "f"}}]),
        "registry.ollama.ai/library/llava:latest does not support tools",
    ),
    (
        "insert",
        GENERATE,
        gen(suffix="return x"),
        "registry.ollama.ai/library/llama3.2:latest does not support insert",
    ),
    (
        "embedder-generate",
        GENERATE,
        gen(model="all-minilm"),
        '"all-minilm" does not support generate',
    ),
    ("embedder-chat", CHAT, cht(model="all-minilm"), '"all-minilm" does not support chat'),
    (
        "raw-with-system",
        GENERATE,
        gen(raw=True, system="Be brief."),
        "raw mode does not support template, system, or context",
    ),
    ("embed-input-type", "/api/embed", {"model": "all-minilm", "input": 5}, "invalid input type"),
    (
        "embed-too-long",
        "/api/embed",
        {"model": "all-minilm", "input": "word " * 600, "truncate": False},
        "the input length exceeds the context length",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "message"), [c[1:] for c in REQUEST_CHECKS], ids=[c[0] for c in REQUEST_CHECKS]
)
def test_request_checks_after_decoding(server, path, body, message):
    assert_error(send(server, path, body), 400, message)


def test_pulling_an_unknown_model(server):
    body = {"model": "no-such-model", "stream": False}
    error = "pull model manifest: file does not exist"
    assert_error(send(server, "/api/pull", body), 500, error, JSON_PLAIN)
    streamed = send(server, "/api/pull", {"model": "no-such-model"})
    assert (streamed.status_code, streamed.headers["Content-Type"]) == (200, "application/x-ndjson")
    assert (
        streamed.content == b'{"status":"pulling manifest"}\n' + go_body({"error": error}) + b"\n"
    )


# ---------------------------------------------------------------------------------------------
# The legacy /api/embeddings endpoint: request `prompt`, response `embedding`
# ---------------------------------------------------------------------------------------------


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_legacy_embeddings_answer_one_vector_under_embedding(fake_ollama):
    resp = send(fake_ollama, EMBEDDINGS, {"model": "all-minilm", "prompt": "the cat sat"})
    assert (resp.status_code, resp.headers["Content-Type"]) == (200, JSON_UTF8)
    obj = resp.json()
    # Only `embedding`: no model, no metrics, and not the `embeddings` list of /api/embed.
    assert list(obj) == ["embedding"]
    vector = obj["embedding"]
    assert len(vector) == 384 and all(type(x) is float for x in vector)
    assert resp.content.startswith(b'{"embedding":[') and not resp.content.endswith(b"\n")
    again = send(fake_ollama, EMBEDDINGS, {"model": "all-minilm:latest", "prompt": "the cat sat"})
    assert again.json() == obj  # the same text, the same vector
    near = send(fake_ollama, EMBEDDINGS, {"model": "all-minilm", "prompt": "a cat sat"}).json()
    far = send(fake_ollama, EMBEDDINGS, {"model": "all-minilm", "prompt": "quarterly revenue"})
    assert cosine(vector, near["embedding"]) > cosine(vector, far.json()["embedding"]) + 0.3


@pytest.mark.parametrize(
    "body",
    [
        {"model": "all-minilm", "prompt": ""},
        {"model": "all-minilm"},
        {"model": "all-minilm", "prompt": None},
        # The /api/embed field is not this endpoint's: ignored, so the prompt is empty.
        {"model": "all-minilm", "input": "the cat sat"},
    ],
    ids=["empty-prompt", "no-prompt", "null-prompt", "input-instead-of-prompt"],
)
def test_legacy_embeddings_without_a_prompt_only_load_the_model(fake_ollama, body):
    assert fake_ollama.loaded_models() == []
    resp = send(fake_ollama, EMBEDDINGS, body)
    assert (resp.status_code, resp.content) == (200, b'{"embedding":[]}')
    assert fake_ollama.loaded_models() == ["all-minilm:latest"]


def test_legacy_embeddings_need_no_embedding_capability(fake_ollama):
    # No capability check on this endpoint: a chat model answers with its own vector size.
    resp = send(fake_ollama, EMBEDDINGS, {"model": "llama3.2", "prompt": "hello"})
    assert resp.status_code == 200
    assert len(resp.json()["embedding"]) == 3072


def test_legacy_embeddings_keep_alive_and_num_ctx_reach_ps(fake_ollama):
    body = {"model": "all-minilm", "prompt": "x", "options": {"num_ctx": 256}, "keep_alive": -1}
    assert send(fake_ollama, EMBEDDINGS, body).status_code == 200
    (entry,) = requests.get(fake_ollama.url + "/api/ps", timeout=10).json()["models"]
    assert (entry["name"], entry["context_length"]) == ("all-minilm:latest", 256)
    assert entry["expires_at"] > "2200"  # keep_alive -1: loaded "forever"
    body = {"model": "all-minilm", "prompt": "x", "keep_alive": 0}
    assert len(send(fake_ollama, EMBEDDINGS, body).json()["embedding"]) == 384
    assert requests.get(fake_ollama.url + "/api/ps", timeout=10).json() == {"models": []}


LEGACY_ERRORS = [
    ("no-model", {"prompt": "x"}, 400, "model is required"),
    ("empty-model", {"model": "", "prompt": "x"}, 400, "model is required"),
    ("invalid-model", {"model": "bad name!", "prompt": "x"}, 400, "invalid model name"),
    (
        "unknown-model",
        {"model": "nomic-embed-text", "prompt": "x"},
        404,
        'model "nomic-embed-text" not found, try pulling it first',
    ),
    (
        "prompt-list",
        {"model": "all-minilm", "prompt": ["a", "b"]},
        400,
        unmarshal("array", "EmbeddingRequest.prompt", "string"),
    ),
    (
        "model-number",
        {"model": 384, "prompt": "x"},
        400,
        unmarshal("number", "EmbeddingRequest.model", "string"),
    ),
    (
        "keep-alive-no-unit",
        {"model": "all-minilm", "prompt": "x", "keep_alive": "10"},
        400,
        'time: missing unit in duration "10"',
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "message"), [c[1:] for c in LEGACY_ERRORS], ids=[c[0] for c in LEGACY_ERRORS]
)
def test_legacy_embeddings_errors(server, body, status, message):
    assert_error(send(server, EMBEDDINGS, body), status, message)


def test_legacy_embeddings_is_post_only(server):
    resp = requests.get(server.url + EMBEDDINGS, timeout=10)
    assert (resp.status_code, resp.content) == (405, b"405 method not allowed")
