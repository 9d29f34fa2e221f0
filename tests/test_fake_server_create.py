"""The stand-in's model making: /api/blobs, /api/create and /api/push, over raw HTTP."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
from typing import Any

import pytest
from _util import Response

from ollama_magic.testing import FakeOllama

JSON_UTF8 = "application/json; charset=utf-8"
JSON_PLAIN = "application/json"
NDJSON = "application/x-ndjson"
LAYER = re.compile(r"^(using existing|creating new) layer sha256:[0-9a-f]{64}$")
GGUF = b"GGUF" + bytes(range(256)) * 8  # a tiny "model file": the magic number, then bytes


@pytest.fixture
def server():
    with FakeOllama() as fake:
        yield fake


def call(
    server: FakeOllama, method: str, path: str, body: Any = None, *, raw: Any = None
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data)
        resp = conn.getresponse()
        payload = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload)
    finally:
        conn.close()


def post(server: FakeOllama, path: str, body: Any = None, **kwargs: Any) -> Response:
    return call(server, "POST", path, body, **kwargs)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(server: FakeOllama, data: bytes = GGUF) -> str:
    digest = digest_of(data)
    assert post(server, f"/api/blobs/{digest}", raw=data).status == 201
    return digest


def statuses(lines: list[dict[str, Any]]) -> list[str]:
    return [line.get("status", "") for line in lines]


def tag_names(server: FakeOllama) -> list[str]:
    return [m["name"] for m in call(server, "GET", "/api/tags").json()["models"]]


def answer(server: FakeOllama, model: str, **fields: Any) -> str:
    chat = "messages" in fields
    path = "/api/chat" if chat else "/api/generate"
    resp = post(server, path, {"model": model, "stream": False, **fields})
    assert resp.status == 200, resp.body
    return resp.json()["message"]["content"] if chat else resp.json()["response"]


# ---------------------------------------------------------------------------------------------
# /api/blobs/:digest
# ---------------------------------------------------------------------------------------------


def test_blob_head_before_and_after_upload(server):
    digest = digest_of(GGUF)
    missing = call(server, "HEAD", f"/api/blobs/{digest}")
    assert (missing.status, missing.body, missing.content_type) == (404, b"", JSON_UTF8)
    assert not server.has_blob(digest) and server.blobs == {}
    created = post(server, f"/api/blobs/{digest}", raw=GGUF)
    assert (created.status, created.body) == (201, b"")
    assert "content-type" not in created.headers
    found = call(server, "HEAD", f"/api/blobs/{digest}")
    assert (found.status, found.body) == (200, b"")
    assert server.blobs == {digest: len(GGUF)} and server.has_blob(digest)
    # The file is named sha256-<hex>: both spellings name it.
    assert call(server, "HEAD", f"/api/blobs/sha256-{digest[7:]}").status == 200
    again = post(server, f"/api/blobs/{digest}", raw=GGUF)
    assert (again.status, again.body) == (200, b"")  # already there: not read again
    record = server.last_request(f"/api/blobs/{digest}")
    assert record is not None and (record.method, record.raw_body) == ("POST", b"")


def test_blob_digest_mismatch_is_a_400_and_keeps_the_blob_under_its_own_digest(server):
    claimed = "sha256:" + "0" * 64
    resp = post(server, f"/api/blobs/{claimed}", raw=b"not what was promised")
    actual = digest_of(b"not what was promised")
    assert (resp.status, resp.content_type) == (400, JSON_UTF8)
    assert resp.json() == {"error": f'digest mismatch, expected "{claimed}", got "{actual}"'}
    assert call(server, "HEAD", f"/api/blobs/{claimed}").status == 404
    assert call(server, "HEAD", f"/api/blobs/{actual}").status == 200  # NewLayer wrote it


@pytest.mark.parametrize(
    "digest", ["sha256:abc", "md5:" + "0" * 64, "sha256:" + "g" * 64, "sha256%3A" + "0" * 63]
)
def test_malformed_digest_is_a_400(server, digest):
    resp = post(server, f"/api/blobs/{digest}", raw=b"data")
    assert (resp.status, resp.json()) == (400, {"error": "invalid digest format"})
    assert call(server, "HEAD", f"/api/blobs/{digest}").status == 400
    assert server.blobs == {}


def test_blob_routes_answer_only_head_and_post(server):
    resp = call(server, "GET", f"/api/blobs/{digest_of(b'x')}")
    assert (resp.status, resp.body) == (405, b"405 method not allowed")
    assert call(server, "POST", "/api/blobs/", raw=b"x").body == b"404 page not found"
    assert call(server, "POST", "/api/blobs/a/b", raw=b"x").status == 404


def test_a_large_chunked_upload_is_hashed_as_it_arrives(server):
    pieces = [GGUF] + [bytes([i]) * 1_000_000 for i in range(3)]
    digest = digest_of(b"".join(pieces))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", f"/api/blobs/{digest}", body=iter(pieces))  # chunked
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (201, b"")
        # The same connection goes on, even after an answer given without reading the body.
        conn.request("POST", f"/api/blobs/{digest}", body=b"y" * 2_000_000)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"")
        conn.request("HEAD", f"/api/blobs/{digest}")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"")
    finally:
        conn.close()
    assert server.blobs == {digest: len(GGUF) + 3_000_000}


# ---------------------------------------------------------------------------------------------
# /api/create
# ---------------------------------------------------------------------------------------------


def test_create_from_a_model_streams_its_layers_then_installs_it(server):
    body = {
        "model": "mario",
        "from": "llama3.2",
        "system": "You are Mario from Super Mario Bros.",
        "parameters": {"temperature": 0.7, "num_ctx": 8192},
    }
    resp = post(server, "/api/create", body)
    assert (resp.status, resp.content_type) == (200, NDJSON)
    lines = resp.lines()
    assert all(list(line) == ["status"] for line in lines)
    assert statuses(lines)[-2:] == ["writing manifest", "success"]
    layers = statuses(lines)[:-2]
    assert all(LAYER.match(status) for status in layers), layers
    assert [status.split(" sha256:")[0] for status in layers] == [
        *["using existing layer"] * 3,  # weights, template and license of llama3.2
        *["creating new layer"] * 2,  # the system prompt, the merged parameters
    ]
    system_digest = digest_of(body["system"].encode())
    assert layers[3] == f"creating new layer {system_digest}"
    assert server.has_blob(system_digest)
    assert tag_names(server)[0] == "mario:latest"  # the newest model comes first
    # The same request again finds every blob already there.
    again = statuses(post(server, "/api/create", body).lines())
    assert all(status.startswith("using existing layer") for status in again[:-2])


def test_a_created_model_is_shown_and_answers_with_its_system_prompt(server):
    body = {
        "model": "mario",
        "from": "llama3.2",
        "system": "You are Mario.",
        "template": "{{ .System }} {{ .Prompt }}",
        "parameters": {"temperature": 0.7, "stop": ["<end>", "<stop>"]},
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
        "license": ["MIT", "Extra terms"],
    }
    assert statuses(post(server, "/api/create", body).lines())[-1] == "success"
    shown = post(server, "/api/show", {"model": "mario"}).json()
    assert shown["system"] == "You are Mario."
    assert shown["template"] == "{{ .System }} {{ .Prompt }}"
    assert shown["parameters"].splitlines() == [
        "temperature                    0.7",
        'stop                           "<end>"',
        'stop                           "<stop>"',
    ]  # the request's stop words replace llama3.2's
    assert shown["messages"] == body["messages"]
    assert shown["license"].endswith("MIT\nExtra terms")
    assert shown["license"].startswith("LLAMA 3.2 COMMUNITY LICENSE")
    assert shown["details"]["parent_model"] == "llama3.2:latest"
    assert shown["details"]["family"] == "llama"
    assert shown["capabilities"] == ["completion", "tools"]
    assert 'SYSTEM """You are Mario."""' in shown["modelfile"]
    assert list(shown).index("messages") == list(shown).index("details") + 1
    said = answer(server, "mario", prompt="Who are you?")
    assert "“You are Mario.”" in said and "**mario**" in said
    chat = [{"role": "user", "content": "Who are you?"}]
    assert "“You are Mario.”" in answer(server, "mario", messages=chat)
    # The request's own system prompt takes the model's place.
    assert "You are Mario" not in answer(server, "mario", prompt="x", system="Be brief.")
    own = [{"role": "system", "content": "Be brief."}, *chat]
    assert "You are Mario" not in answer(server, "mario", messages=own)
    # Models without a system prompt answer as before.
    assert "system prompt" not in answer(server, "llama3.2", prompt="Who are you?")


def test_create_without_streaming_answers_only_success(server):
    resp = post(server, "/api/create", {"model": "quiet", "from": "qwen3", "stream": False})
    assert (resp.status, resp.content_type, resp.body) == (200, JSON_PLAIN, b'{"status":"success"}')
    assert tag_names(server)[0] == "quiet:latest"


def test_create_from_uploaded_gguf_files(server):
    digest = upload(server)
    resp = post(server, "/api/create", {"model": "me/tiny", "files": {"tiny.gguf": digest}})
    assert resp.lines() == [
        {"status": "parsing GGUF"},
        {"status": f"using existing layer {digest}"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    shown = post(server, "/api/show", {"model": "me/tiny"}).json()
    assert shown["details"]["quantization_level"] == "F16"
    assert shown["details"]["parent_model"] == "tiny.gguf"
    assert answer(server, "me/tiny", prompt="hi").startswith("This is **me/tiny**")


def test_create_quantizes_an_uploaded_model_with_progress(server):
    digest = upload(server)
    body = {"model": "small", "files": {"model.gguf": digest}, "quantize": "q4_K_M"}
    lines = post(server, "/api/create", body).lines()
    assert lines[0] == {"status": "parsing GGUF"}
    progress = [line for line in lines if line["status"].startswith("quantizing")]
    assert len(progress) >= 4
    for line in progress:
        assert list(line) == ["status", "digest", "total", "completed"]
        assert line["status"] == "quantizing F16 model to Q4_K_M"
        assert (line["digest"], line["total"]) == ("0000000000000000000", len(GGUF))
    completed = [line["completed"] for line in progress]
    assert completed == sorted(completed) and completed[-1] == len(GGUF)
    rest = statuses(lines[len(progress) + 1 :])
    assert rest[0] == "verifying conversion"
    assert rest[1].startswith("creating new layer sha256:") and rest[1] != digest
    assert rest[2:] == ["writing manifest", "success"]
    shown = post(server, "/api/show", {"model": "small"}).json()
    assert shown["details"]["quantization_level"] == "Q4_K_M"


@pytest.mark.parametrize(
    ("asked", "level"),
    [
        ("q8_0", "Q8_0"),
        ("Q4_K_S", "Q4_K_S"),
        ("q2_K", "Q2_K"),
        ("q5_k_m", "Q5_K_M"),
        ("q4_0", "Q4_0"),
    ],
)
def test_quantize_accepts_the_listed_types_whatever_their_case(server, asked, level):
    digest = upload(server)
    body = {"model": "q", "files": {"m.gguf": digest}, "quantize": asked, "stream": False}
    assert post(server, "/api/create", body).json() == {"status": "success"}
    assert (
        post(server, "/api/show", {"model": "q"}).json()["details"]["quantization_level"] == level
    )


def test_an_unknown_quantization_type_fails_after_the_file_is_parsed(server):
    digest = upload(server)
    body = {"model": "q", "files": {"m.gguf": digest}, "quantize": "q9_x"}
    error = (
        "unsupported quantization type Q9_X - supported types are F32, F16, Q4_K_S, Q4_K_M, Q8_0"
    )
    resp = post(server, "/api/create", body)
    assert (resp.status, resp.lines()) == (200, [{"status": "parsing GGUF"}, {"error": error}])
    single = post(server, "/api/create", {**body, "stream": False})
    assert (single.status, single.content_type, single.json()) == (
        500,
        JSON_PLAIN,
        {"error": error},
    )
    assert "q:latest" not in tag_names(server)


def test_quantizing_an_already_quantized_model_is_refused(server):
    resp = post(server, "/api/create", {"model": "q", "from": "llama3.2", "quantize": "q8_0"})
    error = "quantization is only supported for F16, BF16 and F32 models"
    assert (resp.status, resp.content_type, resp.json()) == (500, JSON_PLAIN, {"error": error})


def test_create_from_a_missing_model_fails_as_its_pull_does(server):
    resp = post(server, "/api/create", {"model": "x", "from": "no-such-model"})
    assert resp.status == 200
    assert resp.lines() == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    single = post(server, "/api/create", {"model": "x", "from": "no-such-model", "stream": False})
    assert (single.status, single.json()) == (
        500,
        {"error": "pull model manifest: file does not exist"},
    )
    assert "x:latest" not in tag_names(server)


def test_create_from_a_pullable_model_pulls_it_first(server):
    lines = post(server, "/api/create", {"model": "g", "from": "gemma3:1b"}).lines()
    first_success = statuses(lines).index("success")
    assert statuses(lines)[0] == "pulling manifest"
    assert statuses(lines)[first_success - 1] == "writing manifest"
    assert statuses(lines)[-2:] == ["writing manifest", "success"]
    assert {"gemma3:1b", "g:latest"} <= set(tag_names(server))


def test_create_from_files_that_were_not_uploaded(server):
    digest = "sha256:" + "1" * 64
    body = {"model": "x", "files": {"x.gguf": digest}}
    error = f"open /root/.ollama/models/blobs/sha256-{'1' * 64}: no such file or directory"
    resp = post(server, "/api/create", body)
    assert (resp.status, resp.lines()) == (200, [{"status": "parsing GGUF"}, {"error": error}])
    single = post(server, "/api/create", {**body, "stream": False})
    assert (single.status, single.json()) == (500, {"error": error})


def test_create_from_a_blob_that_is_not_gguf(server):
    digest = upload(server, b"just text")
    body = {"model": "x", "files": {"x.gguf": digest}}
    error = "supplied file was not in GGUF format"
    assert post(server, "/api/create", body).lines() == [
        {"status": "parsing GGUF"},
        {"error": error},
    ]
    single = post(server, "/api/create", {**body, "stream": False})
    assert (single.status, single.json()) == (400, {"error": error})
    unnamed = post(server, "/api/create", {"model": "x", "files": {"weights": digest}})
    assert (unnamed.status, unnamed.json()) == (400, {"error": "unknown type"})


@pytest.mark.parametrize(
    ("body", "status", "content_type", "error"),
    [
        ({"from": "llama3.2"}, 400, JSON_UTF8, "invalid model name"),
        ({"model": "bad name!", "from": "llama3.2"}, 400, JSON_UTF8, "invalid model name"),
        ({"model": "x", "from": "bad name!"}, 400, JSON_PLAIN, "invalid model name"),
        ({"model": "x"}, 400, JSON_PLAIN, "neither 'from' or 'files' was specified"),
        ({"model": "x", "files": {}}, 400, JSON_PLAIN, "unknown type"),
        (
            {"model": "x", "files": {"../x.gguf": "sha256:1"}},
            400,
            JSON_UTF8,
            "file path must be relative",
        ),
        ({"model": "x", "files": {"x.gguf": ""}}, 400, JSON_UTF8, "invalid digest format"),
        (
            {"model": "x", "files": "x.gguf"},
            400,
            JSON_UTF8,
            "json: cannot unmarshal string into Go struct field CreateRequest.files "
            "of type map[string]string",
        ),
        (
            {"model": "x", "from": "llama3.2", "license": 3},
            500,
            JSON_PLAIN,
            "json: cannot unmarshal number into Go value of type []string",
        ),
    ],
)
def test_create_request_errors(server, body, status, content_type, error):
    resp = post(server, "/api/create", body)
    assert (resp.status, resp.content_type, resp.json()) == (status, content_type, {"error": error})
    empty = post(server, "/api/create", raw=b"")
    assert (empty.status, empty.json()) == (400, {"error": "missing request body"})


def test_a_created_model_can_be_copied_and_deleted(server):
    digest = upload(server)
    post(server, "/api/create", {"model": "mine", "files": {"m.gguf": digest}, "system": "Hi!"})
    assert post(server, "/api/copy", {"source": "mine", "destination": "copy"}).status == 200
    tags = {m["name"]: m for m in call(server, "GET", "/api/tags").json()["models"]}
    assert tags["copy:latest"]["digest"] == tags["mine:latest"]["digest"]
    assert "“Hi!”" in answer(server, "copy", prompt="hello")
    assert call(server, "DELETE", "/api/delete", {"model": "mine"}).status == 200
    assert call(server, "HEAD", f"/api/blobs/{digest}").status == 200  # the copy still uses it
    assert call(server, "DELETE", "/api/delete", {"model": "copy"}).status == 200
    assert {"mine:latest", "copy:latest"}.isdisjoint(tag_names(server))
    # Its blobs went with the last model that used them, as the real server prunes them.
    assert call(server, "HEAD", f"/api/blobs/{digest}").status == 404
    gone = post(server, "/api/show", {"model": "mine"})
    assert (gone.status, gone.json()) == (404, {"error": "model 'mine' not found"})


# ---------------------------------------------------------------------------------------------
# /api/push
# ---------------------------------------------------------------------------------------------


def test_push_streams_upload_progress_then_the_model_can_be_pulled(server):
    post(server, "/api/create", {"model": "me/mario", "from": "llama3.2", "system": "Mario"})
    resp = post(server, "/api/push", {"model": "me/mario", "insecure": False})
    assert (resp.status, resp.content_type) == (200, NDJSON)
    lines = resp.lines()
    assert lines[0] == {"status": "retrieving manifest"}
    assert lines[-2:] == [{"status": "pushing manifest"}, {"status": "success"}]
    uploads: dict[str, list[dict[str, Any]]] = {}
    for line in lines[1:-2]:
        uploads.setdefault(line["digest"], []).append(line)
    assert len(uploads) == 6  # weights, template, license, system, params and the config
    for digest, progress in uploads.items():
        start, *moving = progress
        assert start == {"status": "starting upload", "digest": digest, "total": start["total"]}
        assert all(line["status"] == f"pushing {digest[7:19]}" for line in moving)
        completed = [line["completed"] for line in moving]
        assert completed == sorted(completed) and completed[-1] == start["total"]
    # Pushed to the stand-in's registry: gone locally, it can be pulled back.
    call(server, "DELETE", "/api/delete", {"model": "me/mario"})
    assert post(server, "/api/pull", {"model": "me/mario"}).lines()[-1] == {"status": "success"}
    assert "“Mario”" in answer(server, "me/mario", prompt="hi")


def test_push_to_a_namespace_one_does_not_own_is_refused_by_the_registry(server):
    post(server, "/api/create", {"model": "mario", "from": "llama3.2"})
    resp = post(server, "/api/push", {"model": "mario"})
    lines = resp.lines()
    assert resp.status == 200
    assert lines[0] == {"status": "retrieving manifest"}
    assert lines[-2:] == [{"status": "pushing manifest"}, {"error": "unauthorized: access denied"}]
    single = post(server, "/api/push", {"model": "mario", "stream": False})
    assert (single.status, single.json()) == (500, {"error": "unauthorized: access denied"})
    library = post(server, "/api/push", {"model": "library/mario", "stream": False})
    assert library.json() == {"error": "unauthorized: access denied"}


def test_push_of_a_model_that_is_not_installed(server):
    resp = post(server, "/api/push", {"model": "me/nothing"})
    error = (
        "open /root/.ollama/models/manifests/registry.ollama.ai/me/nothing/latest: "
        "no such file or directory"
    )
    assert (resp.status, resp.lines()) == (
        200,
        [
            {"status": "retrieving manifest"},
            {"status": "couldn't retrieve manifest"},
            {"error": error},
        ],
    )
    single = post(server, "/api/push", {"model": "me/nothing", "stream": False})
    assert (single.status, single.json()) == (500, {"error": error})
    invalid = post(server, "/api/push", {"model": "bad name!", "stream": False})
    error = "unqualified name: registry.ollama.ai/library/bad name!:latest"
    assert invalid.json() == {"error": error}
    unnamed = post(server, "/api/push", {"insecure": True})
    assert (unnamed.status, unnamed.content_type) == (400, JSON_UTF8)
    assert unnamed.json() == {"error": "model is required"}


def test_push_is_paced_by_pull_seconds():
    with FakeOllama(pull_seconds=0.5) as server:
        post(server, "/api/copy", {"source": "llama3.2", "destination": "me/llama"})
        started = time.monotonic()
        lines = post(server, "/api/push", {"model": "me/llama"}).lines()
        elapsed = time.monotonic() - started
        assert lines[-1] == {"status": "success"}
        assert 0.5 <= elapsed < 0.5 + 2.0
        started = time.monotonic()
        single = post(server, "/api/push", {"model": "me/llama", "stream": False})
        assert (single.content_type, single.body) == (JSON_PLAIN, b'{"status":"success"}')
        assert time.monotonic() - started >= 0.5  # as long, without the lines
