"""Errors read as one or two lines in IPython, never a traceback (unless asked for)."""

from __future__ import annotations

import pytest
from _util import plain
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from ollama_magic import ModelNotFound, OllamaError, ServerUnreachable, StreamError


@pytest.fixture(scope="module")
def shell():
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    yield shell
    InteractiveShell.clear_instance()


def test_an_unreachable_server_shows_two_lines_in_ipython(shell, dead_url, capsys):
    shell.run_cell(f"from ollama_magic import Client; Client({dead_url!r}).version()")
    out = plain(capsys.readouterr().out).strip().splitlines()
    assert len(out) == 2, out
    assert out[0].endswith(
        f"ServerUnreachable: Cannot reach Ollama at {dead_url} (connection refused)."
    )
    assert "ollama serve" in out[1]
    assert "Traceback" not in "\n".join(out)


def test_a_model_not_found_shows_the_pull_command(shell, fake_ollama, capsys):
    shell.run_cell(
        f"from ollama_magic import Client; Client({fake_ollama.url!r}).generate('llama3', 'hi')"
    )
    out = plain(capsys.readouterr().out)
    assert "ModelNotFound: Model 'llama3' is not on the Ollama server" in out
    assert "ollama pull llama3" in out
    assert "Traceback" not in out


def test_the_full_traceback_on_demand(shell, dead_url, capsys, monkeypatch):
    monkeypatch.setattr(OllamaError, "show_traceback", True)
    shell.run_cell(f"from ollama_magic import Client; Client({dead_url!r}).version()")
    out = plain(capsys.readouterr().out)
    assert "Traceback (most recent call last)" in out
    assert "requests.exceptions.ConnectionError" in out, "the cause is kept, not dropped"


def test_errors_share_one_base_and_carry_what_arrived():
    error = StreamError("cut", partial="half an answer")
    assert isinstance(error, OllamaError) and error.partial == "half an answer"
    assert str(ModelNotFound("m", model="x", hint="pull it")) == "m\npull it"
    assert ServerUnreachable("down")._render_traceback_()[-1].endswith("down")
