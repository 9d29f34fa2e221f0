"""notebooks/api_tour.ipynb: every example of the Ollama API docs has its cell, and each sends
the request the example is about (checked on the stand-in's request log)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ollama_magic.testing import FakeOllama

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "api_tour.ipynb"


def generate(**wanted):
    return "/api/generate", wanted


def chat(**wanted):
    return "/api/chat", wanted


#: Each example of the API pages: the cell that covers it (its first line), and the request
#: it must send (the path, and fields of the body; ... means "present").
EXAMPLES = {
    "generate, streaming": ("%%ollama\nWhy is the sky blue?", generate(stream=True)),
    "generate, no streaming": ("%%ollama --no-stream", generate(stream=False)),
    "generate, suffix": ("%%ollama qwen2.5-coder --suffix", generate(suffix=...)),
    "generate, structured outputs": ("%%ollama -f Country", generate(format=dict)),
    "generate, JSON mode": ("%%ollama -f json", generate(format="json")),
    "generate, images": ("%%ollama llava -i picture", generate(images=...)),
    "generate, raw": ("%%ollama --raw", generate(raw=True)),
    "generate, reproducible": ("%%ollama --seed 123", generate(options={"seed": 123})),
    "generate, options": ("%%ollama --ctx 8192", generate(options={"num_ctx": 8192})),
    "generate, load": ("%ollama load llama3.2", generate(prompt=None, keep_alive=None)),
    "generate, unload": ("%ollama unload llama3.2", generate(keep_alive=0)),
    "chat, streaming": ("%%ollama --chat\nWhy is the sky blue?", chat(stream=True)),
    "chat, history": ("%%ollama --chat\nHow is that", chat(messages=3)),
    "chat, no streaming": ("%%ollama --chat --session plain", chat(stream=False)),
    "chat, structured outputs": ("%%ollama --chat --session friends", chat(format=dict)),
    "chat, images": ("%%ollama llava --chat", chat(messages=...)),
    "chat, reproducible": ("%%ollama --chat --session seeded", chat(options={"seed": 101})),
    "chat, tools": ("%%ollama --chat --session tools", chat(tools=...)),
    "chat, load": ('client.chat("llama3.2", [], stream=False)', chat(messages=0)),
    "chat, unload": ('client.chat("llama3.2", [], keep_alive=0', chat(keep_alive=0)),
    "create a model": ("%%ollama_create mario", ("/api/create", {"from": "llama3.2"})),
    "create from a GGUF file": ("%ollama create tiny --gguf", ("/api/create", {"files": ...})),
    "push a blob": ("%ollama create tiny --gguf", ("/api/blobs/", {})),
    "check a blob exists": ("from ollama_magic.management", ("/api/blobs/", {})),
    "quantize a model": ("%ollama create tiny:q4", ("/api/create", {"quantize": "q4_K_M"})),
    "copy a model": ("%ollama cp llama3.2", ("/api/copy", {"source": "llama3.2"})),
    "delete a model": ("%ollama rm llama3-backup", ("/api/delete", {"model": "llama3-backup"})),
    "pull a model": ("%ollama pull llama3.2", ("/api/pull", {"model": "llama3.2"})),
    "push a model": ("%ollama push me/mario", ("/api/push", {"model": "me/mario"})),
    "embed, one input": ('len(client.embed("all-minilm"', ("/api/embed", {"input": str})),
    "embed, several inputs": ("%ollama embed all-minilm", ("/api/embed", {"input": list})),
    "list running models": ("%ollama ps", ("/api/ps", {})),
    "version": ("client.version()", ("/api/version", {})),
    "show model information": ("%ollama show llama3.2", ("/api/show", {"model": "llama3.2"})),
    "list local models": ("%ollama models", ("/api/tags", {})),
}


def matches(request, path: str, wanted: dict) -> bool:
    if not request.path.startswith(path):
        return False
    body = request.body if isinstance(request.body, dict) else {}
    for key, value in wanted.items():
        have = body.get(key)
        if value is ...:
            ok = key in body
        elif value is None:
            ok = not have
        elif value in (dict, list, str):
            ok = isinstance(have, value)
        elif key == "messages" and isinstance(value, int):
            ok = isinstance(have, list) and len(have) == value
        elif isinstance(value, dict):
            ok = isinstance(have, dict) and all(have.get(k) == v for k, v in value.items())
        else:
            ok = have == value
        if not ok:
            return False
    return True


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    directory = tmp_path_factory.mktemp("tour")
    asked: dict[int, list] = {}
    with FakeOllama() as server, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        client = NotebookClient(
            notebook,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(directory)}},
        )
        with client.setup_kernel():
            for index, cell in enumerate(notebook.cells):
                before = len(server.requests)
                client.execute_cell(cell, index)
                asked[index] = server.requests[before:]
    return notebook, asked


def test_every_cell_runs_without_an_error(tour):
    notebook, _ = tour
    for cell in notebook.cells:
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        assert not errors, (cell.source, errors)


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_each_api_example_has_its_cell_and_sends_its_request(tour, example):
    notebook, asked = tour
    start, (path, wanted) = EXAMPLES[example]
    index = next(
        i
        for i, c in enumerate(notebook.cells)
        if c.cell_type == "code" and c.source.startswith(start)
    )
    assert any(matches(request, path, wanted) for request in asked[index]), (
        example,
        [(r.path, r.body) for r in asked[index]],
    )
    # One line of prose says what the example shows (before it, or before its setup cell).
    assert "markdown" in {notebook.cells[index - 1].cell_type, notebook.cells[index - 2].cell_type}


def test_a_created_model_answers_with_its_system_prompt(tour):
    notebook, _ = tour
    (cell,) = [c for c in notebook.cells if c.source.startswith("%%ollama mario")]
    assert "You are Mario from Super Mario Bros." in cell.outputs[-1].data["text/plain"]
