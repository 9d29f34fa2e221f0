"""notebooks/classroom.ipynb: recorded against the stand-in, then replayed in `strict` mode
with the server stopped, cell for cell the same."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ollama_magic.testing import FakeOllama

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "classroom.ipynb"
FOOTER = re.compile(r'<div class="ollama-magic-footer".*?</div>|\n\[[^\n]*\]\n?$')


def execute(notebook, directory: Path) -> None:
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(directory)}},
    ).execute()


def shown(cell) -> list[str]:
    """What a cell shows, as saved (the footer aside, which says "replayed" on replay)."""
    texts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            texts.append(output.text)
        elif output.output_type == "error":
            texts.append(f"{output.ename}: {output.evalue}")
        else:
            data = output.get("data", {})
            texts.append(FOOTER.sub("", data.get("text/html") or data.get("text/plain", "")))
    return texts


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    directory = tmp_path_factory.mktemp("classroom")
    original = nbformat.read(NOTEBOOK, as_version=4)
    recorded, replayed = copy.deepcopy(original), copy.deepcopy(original)
    with pytest.MonkeyPatch.context() as monkeypatch:
        server = FakeOllama().start()
        monkeypatch.setenv("OLLAMA_HOST", server.url)  # the kernels inherit it
        try:
            execute(recorded, directory)
            asked = [request.path for request in server.requests]
        finally:
            server.stop()
        (mode,) = [c for c in replayed.cells if c.source == "%ollama replay on"]
        mode.source = "%ollama replay strict"  # what the teacher types when the server is down
        execute(replayed, directory)
    return recorded, replayed, asked


def test_the_lesson_replays_with_no_server_cell_for_cell(lesson):
    recorded, replayed, _ = lesson
    compared = 0
    for before, after in zip(recorded.cells, replayed.cells, strict=True):
        if before.cell_type != "code" or before.source == "%ollama replay on":
            continue
        assert shown(after) == shown(before), before.source
        compared += 1
    assert compared == 14


def test_the_replayed_answers_say_so_and_the_recording_did_not(lesson):
    recorded, replayed, _ = lesson
    footers = [
        output.data["text/html"]
        for cell in replayed.cells
        for output in cell.get("outputs", [])
        if "ollama-magic-footer" in output.get("data", {}).get("text/html", "")
    ]
    assert len(footers) >= 3 and all("replayed (recorded 20" in f for f in footers)
    first = nbformat.writes(recorded)
    assert "replayed (recorded" not in first


def test_the_lesson_teaches_what_it_says(lesson):
    recorded, _, asked = lesson
    cells = {
        cell.source.split("\n")[0]: cell for cell in recorded.cells if cell.cell_type == "code"
    }
    load = "".join(shown(cells["%ollama load --keep-alive 30m"]))
    assert "llama3.2 is loaded on" in load and "unloads at" in load
    unseeded = cells["%%ollama --compare 3 -t 0.8"].outputs[0].data["text/plain"]
    runs = [run.strip() for run in re.split(r"--- Run \d ---", unseeded)[1:]]
    assert len(runs) == 3 and len(set(runs)) > 1  # sampling: the answers differ
    seeded = cells["%%ollama --compare 3 -t 0.8 --seed 42"].outputs[0].data["text/plain"]
    assert len({run.strip() for run in re.split(r"--- Run \d ---", seeded)[1:]}) == 1  # a seed
    assert "probability" in "".join(shown(cells['probs[["token", "probability"]].head(8)']))
    failed = cells["temperatures = [12.5, 14.0, 9.5]"]
    assert shown(failed)[-1] == "IndexError: list index out of range"
    assert asked.count("/api/generate") >= 12  # load, 9 sampled runs, probabilities, quiz, explain
