"""Model management from a notebook: create (from a model, a Modelfile cell, a GGUF file,
quantized), cp, rm and push, and the blobs a created model is made of."""

from __future__ import annotations

import hashlib

import pytest
from _util import plain
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from ollama_magic import Client
from ollama_magic.errors import OllamaError
from ollama_magic.management import file_digest
from ollama_magic.modelfile import parse_modelfile

MODELFILE = '''
# A tutor for the physics class
FROM llama3.2
SYSTEM """You are a patient physics tutor.
Answer in two sentences."""
PARAMETER temperature 0.3
PARAMETER num_ctx 4096
PARAMETER stop "<|end|>"
PARAMETER stop User:
MESSAGE user What is a joule?
MESSAGE assistant "The energy of one newton over one metre."
LICENSE MIT
'''


def bodies(server, path: str) -> list[dict]:
    return [r.body for r in server.requests if r.path == path]


def line(ipython, text: str) -> str:
    """What the command printed, and the progress it displayed (as text)."""
    with capture_output() as captured:
        ipython.run_line_magic("ollama", text)
    shown = [o.data.get("text/plain", "") for o in captured.outputs]
    return plain("\n".join([*shown, captured.stdout]))


def test_a_modelfile_becomes_the_apis_fields():
    spec = parse_modelfile(MODELFILE)
    assert spec.fields == {
        "from": "llama3.2",
        "system": "You are a patient physics tutor.\nAnswer in two sentences.",
        "parameters": {"temperature": 0.3, "num_ctx": 4096, "stop": ["<|end|>", "User:"]},
        "messages": [
            {"role": "user", "content": "What is a joule?"},
            {"role": "assistant", "content": "The energy of one newton over one metre."},
        ],
        "license": "MIT",
    }
    assert spec.files == []


def test_a_modelfile_from_a_local_file_is_uploaded_not_named(tmp_path):
    spec = parse_modelfile("FROM ./weights.gguf\nADAPTER lora.gguf", base=tmp_path)
    assert spec.files == [tmp_path / "weights.gguf"] and "from" not in spec.fields
    assert spec.adapters == [tmp_path / "lora.gguf"]


def test_modelfile_values_are_read_as_ollamas_parser_reads_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = parse_modelfile(
        'FROM\t~/weights.gguf\nMESSAGE user """two\nlines"""\nPARAMETER stop """\nUser:"""\n'
        'PARAMETER stop true\nPARAMETER stop "007"\nPARAMETER stop 1e3\n'
        'SYSTEM "say \\"yes\\""\nRENDERER qwen3-coder\n',
        base=tmp_path / "elsewhere",
    )
    assert spec.files == [tmp_path / "weights.gguf"]  # ~ expanded, not under base
    assert spec.fields["messages"] == [{"role": "user", "content": "two\nlines"}]
    assert spec.fields["parameters"] == {
        "stop": ["\nUser:", "true", "007", "1e3"],  # stop strings as written
    }
    assert spec.fields["system"] == 'say \\"yes\\"'  # backslashes kept, as Ollama keeps them
    assert spec.fields["renderer"] == "qwen3-coder"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FORM llama3.2", "Line 1: 'FORM' is not a Modelfile instruction"),
        ('FROM x\nSYSTEM """never closed', 'Line 2: the """ opened here is never closed'),
        ("FROM x\nMESSAGE robot hi", "Line 2: MESSAGE takes a role"),
        ("FROM x\nPARAMETER temperature", "Line 2: PARAMETER takes a name and a value"),
        ("FROM x\nPARAMETER temprature 0.3", "'temprature' is not a parameter Ollama knows. Did"),
        ("FROM x\nPARAMETER temperature hot", "Line 2: temperature must be a number, not 'hot'"),
        ("FROM x\nPARAMETER num_ctx inf", "Line 2: num_ctx must be a whole number"),
    ],
)
def test_a_bad_modelfile_line_is_one_clear_error(text, message):
    with pytest.raises(OllamaError, match=message.replace("(", r"\(")):
        parse_modelfile(text)


def test_file_digest_reads_in_pieces_and_matches_sha256(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 9000  # over two megabytes: several reads
    path.write_bytes(data)
    assert file_digest(path) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_cp_copies_and_rm_removes_and_says_what(ipython, fake_ollama):
    said = line(ipython, "cp llama3.2 tutor-backup")
    assert said.strip() == f"Copied llama3.2 to tutor-backup on {fake_ollama.url}."
    assert bodies(fake_ollama, "/api/copy") == [
        {"source": "llama3.2", "destination": "tutor-backup"}
    ]
    assert "tutor-backup:latest" in [m.name for m in Client(fake_ollama.url).list()]
    said = line(ipython, "rm tutor-backup")
    assert said.strip() == f"Removed tutor-backup from {fake_ollama.url}."  # no space claimed
    assert bodies(fake_ollama, "/api/delete") == [{"model": "tutor-backup"}]
    assert "tutor-backup:latest" not in [m.name for m in Client(fake_ollama.url).list()]


def test_rm_of_a_missing_model_is_one_line(ipython, fake_ollama):
    with capture_output() as captured:
        ipython.run_cell("%ollama rm no-such-model")
    shown = plain(captured.stdout + captured.stderr)
    assert f"no-such-model is not a model on {fake_ollama.url}; nothing was removed." in shown
    assert "`%ollama models` lists the local models." in shown and "Traceback" not in shown
    with capture_output() as captured:
        ipython.run_cell("%ollama cp no-such-model other")
    assert "nothing was copied" in plain(captured.stdout + captured.stderr)


def test_create_needs_a_source_and_a_known_quantization(ipython, fake_ollama):
    with pytest.raises(UsageError, match="needs what it starts from"):
        ipython.run_line_magic("ollama", "create tutor")
    with pytest.raises(UsageError, match="--quantize takes one of q4_K_M, q8_0"):
        ipython.run_line_magic("ollama", "create tutor --from llama3.2 --quantize q7_X")
    assert bodies(fake_ollama, "/api/create") == []  # nothing was sent


GGUF = b"GGUF" + bytes(range(256)) * 16


def test_create_from_a_model_with_a_system_prompt_then_it_answers_so(ipython, fake_ollama):
    said = line(ipython, "create tutor --from llama3.2 -s 'You are a patient tutor.'")
    assert bodies(fake_ollama, "/api/create") == [
        {
            "model": "tutor",
            "from": "llama3.2",
            "system": "You are a patient tutor.",
            "stream": True,
        }
    ]
    assert said.splitlines()[-1] == f"Created tutor from llama3.2 on {fake_ollama.url}."
    assert "create tutor: success" in said  # the progress, as pull shows it (terminal here)
    answer = Client(fake_ollama.url).generate("tutor", "Who are you?", stream=False).content
    assert "You are a patient tutor." in answer
    shown = line(ipython, "show tutor")
    assert "**System prompt**" in shown and "You are a patient tutor." in shown


def test_a_modelfile_cell_creates_the_model_it_describes(ipython, fake_ollama):
    with capture_output():
        result = ipython.run_cell_magic("ollama_create", "physics", MODELFILE)
    assert result is None
    (body,) = bodies(fake_ollama, "/api/create")
    assert body == {"model": "physics", **parse_modelfile(MODELFILE).fields, "stream": True}
    shown = Client(fake_ollama.url).show("physics")
    assert shown["system"] == "You are a patient physics tutor.\nAnswer in two sentences."
    assert Client(fake_ollama.url).list()[0].name == "physics:latest"  # the newest first


def test_create_from_a_gguf_file_uploads_it_once(ipython, fake_ollama, tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(GGUF)
    digest = "sha256:" + hashlib.sha256(GGUF).hexdigest()
    said = line(ipython, f"create tiny --gguf {path}")
    assert f"upload tiny.gguf: sending {len(GGUF):,} bytes 100.0%" in said
    uploads = [r for r in fake_ollama.requests if r.path == f"/api/blobs/{digest}"]
    assert [r.method for r in uploads] == ["HEAD", "POST"]
    assert bodies(fake_ollama, "/api/create")[-1]["files"] == {"tiny.gguf": digest}
    said = line(ipython, f"create tiny2 --gguf {path}")
    assert "the server has it already" in said  # checked with HEAD, not sent again
    assert [r.method for r in fake_ollama.requests if r.path == f"/api/blobs/{digest}"] == [
        "HEAD",
        "POST",
        "HEAD",
    ]


def test_create_quantized_shows_progress_and_refuses_an_already_quantized_source(
    ipython, fake_ollama, tmp_path
):
    path = tmp_path / "weights.gguf"
    path.write_bytes(GGUF)
    line(ipython, f"create weights --gguf {path}")
    said = line(ipython, "create weights:q4 --from weights --quantize q4_K_M")
    assert bodies(fake_ollama, "/api/create")[-1]["quantize"] == "q4_K_M"
    assert said.splitlines()[-1].startswith("Created weights:q4 from weights")
    with capture_output() as captured:
        ipython.run_cell("%ollama create small --from llama3.2 --quantize q8_0")
    shown = plain(captured.stdout + captured.stderr)
    assert "quantization is only supported for F16, BF16 and F32 models" in shown
    assert "Traceback" not in shown


def test_create_from_a_missing_model_is_one_line(ipython, fake_ollama):
    with capture_output() as captured:
        ipython.run_cell("%ollama create tutor --from no-such-model")
    shown = plain(captured.stdout + captured.stderr)
    assert "Creating tutor failed: no-such-model is neither a local model nor one the " in shown
    assert "Traceback" not in shown
    assert "tutor:latest" not in [m.name for m in Client(fake_ollama.url).list()]


def test_push_blob_hashes_while_streaming_and_a_wrong_digest_is_refused(fake_ollama, tmp_path):
    client = Client(fake_ollama.url)
    path = tmp_path / "blob.gguf"
    path.write_bytes(GGUF)
    digest = client.push_blob(path)
    assert digest == "sha256:" + hashlib.sha256(GGUF).hexdigest()
    assert client.blob_exists(digest) and fake_ollama.blobs[digest] == len(GGUF)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(OllamaError, match="digest mismatch"):
        client.push_blob(path, wrong)
    assert not client.blob_exists(wrong)


def test_push_streams_progress_and_a_name_without_namespace_is_one_line(ipython, fake_ollama):
    line(ipython, "cp llama3.2 me/tutor")
    said = line(ipython, "push me/tutor")
    assert "push me/tutor: success" in said
    assert said.splitlines()[-1] == f"Pushed me/tutor from {fake_ollama.url}."
    assert bodies(fake_ollama, "/api/push") == [{"model": "me/tutor", "stream": True}]
    with capture_output() as captured:
        ipython.run_cell("%ollama push llama3.2")
    shown = plain(captured.stdout + captured.stderr)
    assert "Pushing llama3.2 failed: unauthorized: access denied" in shown
    assert "NAMESPACE/model" in shown and "Traceback" not in shown


def test_create_and_push_from_python_yield_progress(fake_ollama):
    client = Client(fake_ollama.url)
    statuses = [p.status for p in client.create("mario", from_="llama3.2", system="Mario.")]
    assert statuses[-2:] == ["writing manifest", "success"]
    assert client.create("luigi", from_="llama3.2", stream=False).status == "success"
    client.copy("mario", "me/mario")
    assert [p.status for p in client.push("me/mario")][-1] == "success"


def test_create_errors_answered_with_an_http_status_are_one_line_too(fake_ollama):
    client = Client(fake_ollama.url)
    with pytest.raises(OllamaError) as caught:
        client.create("q", from_="llama3.2", quantize="q4_K_M", stream=False)
    assert caught.value.message == (
        "Creating q failed: quantization is only supported for F16, BF16 and F32 models"
    )
    assert "F16, BF16 or F32" in caught.value.hint and "server log" not in caught.value.hint
    with pytest.raises(OllamaError, match=r"Pushing llama3\.2 failed: unauthorized"):
        client.push("llama3.2", stream=False)


def test_a_blob_that_was_never_uploaded_says_to_upload_it(fake_ollama):
    client = Client(fake_ollama.url)
    with pytest.raises(OllamaError) as caught:
        list(client.create("x", files={"x.gguf": "sha256:" + "0" * 64}))
    assert caught.value.hint.startswith("Upload the file again")


def test_from_a_model_and_a_file_at_once_is_refused_before_any_upload(
    ipython, fake_ollama, tmp_path
):
    path = tmp_path / "big.gguf"
    path.write_bytes(GGUF)
    with pytest.raises(UsageError, match="from a model or from a file, not both"):
        ipython.run_line_magic("ollama", f"create both --from llama3.2 --gguf {path}")
    assert not [r for r in fake_ollama.requests if r.path.startswith("/api/blobs/")]


def test_an_upload_shows_its_progress_and_sends_the_file_in_pieces(ipython, fake_ollama, tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(GGUF * 200)  # about 800 KB
    with capture_output() as captured:
        ipython.run_line_magic("ollama", f"create big --gguf {path}")
    bars = [
        o.data["text/html"] for o in captured.outputs if "<progress" in o.data.get("text/html", "")
    ]
    assert any("weights.gguf" in bar and "sending" in bar for bar in bars)
    assert any("reading" in bar for bar in bars)  # hashing shows progress too
    upload = next(r for r in fake_ollama.requests if r.method == "POST" and "/blobs/" in r.path)
    assert int(upload.headers["Content-Length"]) == len(GGUF) * 200


def test_a_file_that_is_not_gguf_is_refused_before_it_is_uploaded(ipython, fake_ollama, tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_bytes(b"these are my notes")
    with pytest.raises(UsageError, match="is not a GGUF file"):
        ipython.run_line_magic("ollama", f"create notes --gguf {path}")
    assert not [r for r in fake_ollama.requests if r.path.startswith("/api/blobs/")]
