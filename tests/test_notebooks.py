"""The example notebooks execute end to end in a real kernel against the stand-in server."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, fake_ollama, monkeypatch, tmp_path) -> nbformat.NotebookNode:
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)  # the kernel inherits the environment
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    return notebook


def cell_by_source(notebook, start: str):
    return next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(start))


def html_outputs(cell) -> list[str]:
    return [o.data["text/html"] for o in cell.outputs if o.get("data", {}).get("text/html")]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    from ollama_magic.testing import FakeOllama

    with FakeOllama() as server, pytest.MonkeyPatch.context() as monkeypatch:
        notebook = execute("quickstart.ipynb", server, monkeypatch, tmp_path_factory.mktemp("nb"))
        yield notebook, server


def test_quickstart_runs_and_shows_streamed_markdown_answers(quickstart):
    notebook, server = quickstart
    one_shot = cell_by_source(notebook, "%%ollama\nExplain")
    (html,) = html_outputs(one_shot)  # the answer shows once in the saved notebook
    assert html.startswith('<div class="ollama-magic-answer">')
    assert "<ul>" in html and "ollama-magic-footer" in html
    prompts = [r.body["prompt"] for r in server.requests if r.path == "/api/generate"]
    assert "Explain in three short bullet points why the sky is blue." in prompts


def test_quickstart_status_models_and_history(quickstart):
    notebook, _ = quickstart
    status = cell_by_source(notebook, "%ollama status")
    assert "server: Ollama 0.33.0" in status.outputs[0].text
    assert "<table>" in html_outputs(cell_by_source(notebook, "%ollama models"))[0]
    history = cell_by_source(notebook, "%ollama history").outputs[0].data["text/plain"]
    assert "What is a prime number?" in history and "List the first five of them." in history
    assert "You are a concise maths tutor." in history


def test_quickstart_interpolates_a_dataframe_and_binds_the_answer(quickstart):
    notebook, server = quickstart
    prompt = next(
        r.body["prompt"]
        for r in server.requests
        if r.path == "/api/generate" and "temperatures" in r.body["prompt"]
    )
    assert "Oslo" in prompt and "Cairo" in prompt
    printed = cell_by_source(notebook, 'print(f"{len(answer)}').outputs[0].text
    assert "characters, starting:" in printed
    asked = cell_by_source(notebook, "%%ollama -o answer")
    note = asked.outputs[0].data["text/plain"]
    assert note == "{unit} is not defined in the notebook, so sent as typed."


def test_quickstart_dry_run_keeps_json_braces(quickstart):
    notebook, _ = quickstart
    shown = cell_by_source(notebook, "%%ollama --dry-run").outputs[0].data["text/plain"]
    assert (
        '"prompt": "Return 3 rows as JSON like {\\"city\\": \\"...\\", \\"temp_c\\": 0}."' in shown
    )


def test_quickstart_error_is_two_lines(quickstart):
    notebook, _ = quickstart
    (error,) = cell_by_source(notebook, "%%ollama no-such-model").outputs
    assert error.output_type == "error" and error.ename == "ModelNotFound"
    assert len(error.traceback) == 2
    assert "ollama pull no-such-model" in error.traceback[1]
    (refused,) = cell_by_source(notebook, "%ollama config temperature=warm").outputs
    # IPython prints usage errors on stderr, in one line, without a traceback.
    assert refused.output_type == "stream" and refused.name == "stderr"
    assert "UsageError: temperature must be a number, not 'warm'" in refused.text


@pytest.fixture(scope="module")
def structured(tmp_path_factory):
    from ollama_magic.testing import FakeOllama

    with FakeOllama() as server, pytest.MonkeyPatch.context() as monkeypatch:
        path = tmp_path_factory.mktemp("nb")
        yield execute("structured_outputs.ipynb", server, monkeypatch, path), server


def test_structured_outputs_notebook_binds_objects(structured):
    notebook, server = structured
    table = cell_by_source(notebook, "people").outputs[0].data["text/html"]
    assert "<table" in table and "<th>name</th>" in table and "<th>city</th>" in table
    verdict = cell_by_source(notebook, 'verdict["sentiment"]').outputs[0].data["text/plain"]
    assert verdict.startswith(("('positive'", "('neutral'", "('negative'"))
    city = cell_by_source(notebook, "company.address.city").outputs[0].data["text/plain"]
    assert city.startswith("'")
    formats = [r.body["format"] for r in server.requests if (r.body or {}).get("format")]
    assert formats[0]["type"] == "array" and formats[0]["items"]["title"] == "Person"


def test_structured_outputs_notebook_tools_and_thinking(structured):
    notebook, server = structured
    tools_cell = cell_by_source(notebook, "%%ollama --tools convert_temperature")
    assert any("ollama-magic-tool" in html for html in html_outputs(tools_cell))
    tool_messages = [
        m
        for r in server.requests
        if r.path == "/api/chat"
        for m in r.body["messages"]
        if m["role"] == "tool"
    ]
    assert tool_messages and tool_messages[0]["tool_name"] == "convert_temperature"
    thinking = cell_by_source(notebook, "%%ollama qwen3 --think")
    assert any("<summary>Thinking (" in html for html in html_outputs(thinking))


@pytest.fixture(scope="module")
def exploration(tmp_path_factory):
    pytest.importorskip("dask.dataframe")
    from ollama_magic.testing import FakeOllama

    with FakeOllama() as server, pytest.MonkeyPatch.context() as monkeypatch:
        path = tmp_path_factory.mktemp("nb")
        yield execute("data_exploration.ipynb", server, monkeypatch, path), server


def test_data_exploration_classifies_every_row_into_typed_columns(exploration):
    notebook, server = exploration
    generated = [r for r in server.requests if r.path == "/api/generate"]
    prompts = [r.body["prompt"] for r in generated]
    # 250 rows by the magic and 250 by the Dask recipe, each exactly once.
    assert len([p for p in prompts if p.startswith("Classify this support ticket about")]) == 250
    assert len([p for p in prompts if p.startswith("Classify this support ticket: ")]) == 250
    assert all(r.body["format"]["title"] == "Ticket" for r in generated)
    dtypes = cell_by_source(notebook, "labelled.dtypes").outputs[0].data["text/plain"]
    assert re.search(r"category\s+category", dtypes) and re.search(r"urgency\s+Int64", dtypes)
    # The saved progress output is the final summary, not a bar caught half way.
    progress = cell_by_source(notebook, "%%ollama --map tickets -o labelled").outputs
    (final,) = [o.data["text/plain"] for o in progress if "data" in o]
    assert final.startswith("250 rows in") and "250 answered" in final
    summary = cell_by_source(notebook, "summary = ").outputs[0].data["text/plain"]
    for name in ("billing", "bug", "feature"):
        assert name in summary


def test_data_exploration_charts_the_classes_and_dry_runs(exploration):
    notebook, server = exploration
    chart = cell_by_source(notebook, "try:\n    import matplotlib.pyplot").outputs
    pytest.importorskip("matplotlib")
    assert any("image/png" in o.get("data", {}) for o in chart)
    dry = cell_by_source(notebook, "%%ollama --map tickets --into product_guess --dry-run")
    text = dry.outputs[0].data["text/plain"]
    assert "250 requests would go to 1 server" in text
    assert text.count('"prompt": "Which product is this ticket about?') == 3
    guesses = [r for r in server.requests if "Which product" in (r.body or {}).get("prompt", "")]
    assert not guesses  # a dry run sends nothing


def test_data_exploration_finds_the_resent_tickets(exploration):
    notebook, server = exploration
    embeds = [r for r in server.requests if r.path == "/api/embed"]
    assert len(embeds) == 4  # 250 texts in batches of 64
    table = cell_by_source(notebook, "rows, similarity = ").outputs[0].data["text/plain"]
    # The ten pairs most alike are the ten tickets sent twice (ids 1241-1250).
    closest = re.findall(r"^\d+\s+(\d{4})\s+(\d{4})\s+0\.\d+", table, re.MULTILINE)
    assert len(closest) == 10 and all(int(b) >= 1241 for _, b in closest)
    dask_counts = cell_by_source(notebook, "classified = lazy.compute()").outputs[0]
    assert "billing" in dask_counts.data["text/plain"]
