"""%ollama load and %ollama unload: the API's own requests, then what is in memory."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output


def generations(server) -> list[dict]:
    return [r.body for r in server.requests if r.path == "/api/generate"]


@pytest.fixture
def shell(ipython, fake_ollama):
    ipython.run_line_magic("config", f"OllamaMagics.host = '{fake_ollama.url}'")
    return ipython


def test_load_sends_an_empty_prompt_with_the_keep_alive_and_shows_it_loaded(shell, fake_ollama):
    with capture_output() as captured:
        shell.run_line_magic("ollama", "load llama3.2 --keep-alive 30m")
    assert generations(fake_ollama) == [
        {"model": "llama3.2", "prompt": "", "keep_alive": "30m", "stream": False}
    ]
    assert "llama3.2:latest" in fake_ollama.loaded_models()
    said = captured.stdout.splitlines()[0]
    assert said.startswith("llama3.2 is loaded on ") and said.endswith("for 30m.")
    # Then %ollama ps, as a table (a display in a notebook, text in a terminal).
    shown = captured.stdout + "".join(o.data.get("text/plain", "") for o in captured.outputs)
    assert "in GPU memory" in shown and "llama3.2:latest" in shown


def test_load_until_unloaded_and_unload_frees_it(shell, fake_ollama):
    with capture_output() as captured:
        shell.run_line_magic("ollama", "load llama3.2 --keep-alive -1")
        shell.run_line_magic("ollama", "unload llama3.2")
    assert generations(fake_ollama)[-1] == {
        "model": "llama3.2",
        "prompt": "",
        "keep_alive": 0,
        "stream": False,
    }
    assert fake_ollama.loaded_models() == []
    assert "stays loaded until it is unloaded." in captured.stdout
    assert "llama3.2 is unloaded from" in captured.stdout
    assert f"No model is loaded on {fake_ollama.url}." in captured.stdout


def test_load_without_a_model_uses_the_cells_model(shell, fake_ollama):
    shell.run_line_magic("config", "OllamaMagics.model = 'qwen3'")
    with capture_output():
        shell.run_line_magic("ollama", "load")
    assert generations(fake_ollama)[-1]["model"] == "qwen3"


def test_a_bad_keep_alive_is_a_usage_error_and_sends_nothing(shell, fake_ollama):
    with pytest.raises(UsageError, match="--keep-alive: keep_alive takes seconds"):
        shell.run_line_magic("ollama", "load llama3.2 --keep-alive forever")
    assert generations(fake_ollama) == []
