"""The chat widget notebook executes end to end in a real kernel against the stand-in server.

The widgets' state is saved with the notebook (as JupyterLab does), so the test can read what
the chat showed: the widget's own turn and the one the magic added in a later cell.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "chat_widget.ipynb"
QUESTION = "What is a Jupyter widget, in two sentences?"
FOLLOW_UP = "Give me one example of a widget, as a short list."


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    from ollama_magic.testing import FakeOllama

    with FakeOllama() as server, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OLLAMA_HOST", server.url)  # the kernel inherits the environment
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        NotebookClient(
            notebook,
            timeout=120,
            kernel_name="python3",
            store_widget_state=True,
            resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}},
        ).execute()
        yield notebook, server


def cell_by_source(notebook, start: str):
    return next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(start))


def saved_part(notebook, cell, dom_class: str) -> tuple[dict, Callable[[str], dict]]:
    """The saved state of the part of the chat with ``dom_class``, and the lookup of models.

    Follows model ids from the widget the cell displayed down to that part (the saved state
    also holds widgets that were closed, such as the bubbles of streaming answers).
    """
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]

    def model(ref: str) -> dict:
        return state[ref.removeprefix("IPY_MODEL_")]["state"]

    def find(ref: str) -> dict | None:
        node = model(ref)
        if dom_class in node.get("_dom_classes", ()):
            return node
        return next(filter(None, (find(child) for child in node.get("children", ()))), None)

    root = cell.outputs[0].data["application/vnd.jupyter.widget-view+json"]["model_id"]
    part = find(root)
    assert part is not None, f"the chat's {dom_class} is in the saved state"
    return part, model


def shown_messages(notebook, cell) -> list[str]:
    """The HTML of each message the saved chat widget shows, oldest first."""
    message_list, model = saved_part(notebook, cell, "om-list")
    return [model(child).get("value", "") for child in message_list["children"]]


def test_the_widget_shows_its_turn_and_the_cells_turn(executed):
    notebook, _ = executed
    cell = cell_by_source(notebook, "from ollama_magic import ChatWidget")
    user, answer, follow_up, second_answer = shown_messages(notebook, cell)
    assert QUESTION in user and FOLLOW_UP in follow_up, "the cell's turn shows in the widget"
    for html in (answer, second_answer):
        assert ">Assistant<" in html and "<strong>" in html and "<li>" in html


def test_the_magic_continues_the_widgets_conversation(executed):
    notebook, server = executed
    chats = [r for r in server.requests if r.path == "/api/chat"]
    assert [r.prompt for r in chats] == [QUESTION, FOLLOW_UP]
    history = chats[1].body["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert history[0]["content"] == "You are a concise assistant."
    magic = cell_by_source(notebook, "%%ollama --chat --session demo")
    assert any("<li>" in o.get("data", {}).get("text/html", "") for o in magic.outputs)


def test_messages_and_the_markdown_export(executed):
    notebook, _ = executed
    printed = cell_by_source(notebook, "for message in chat.messages").outputs[0].text
    roles = [line.split(":")[0].strip() for line in printed.splitlines()]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    exported = cell_by_source(notebook, "print(chat.to_markdown())").outputs[0].text
    assert f"**User**\n\n{QUESTION}" in exported
    assert re.search(r"\*\*Assistant\*\*\n\nThis is \*\*llama3\.2", exported)


def test_the_export_button_downloads_what_to_markdown_gives(executed):
    notebook, _ = executed
    cell = cell_by_source(notebook, "from ollama_magic import ChatWidget")
    link, _ = saved_part(notebook, cell, "om-export-box")
    href = re.search(
        r'href="data:text/markdown;charset=utf-8;base64,([A-Za-z0-9+/=]+)"', link["value"]
    )
    assert href and 'download="chat-demo.md"' in link["value"]
    exported = cell_by_source(notebook, "print(chat.to_markdown())").outputs[0].text
    assert base64.b64decode(href.group(1)).decode("utf-8") + "\n" == exported
