"""%ollama explain: a failed cell, its error and its last frames go to the model; nothing runs."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output


def asked(server) -> list[dict]:
    return [r.body for r in server.requests if r.path == "/api/generate"]


def test_explain_sends_the_cell_the_error_and_its_frames(ipython, fake_ollama):
    fake_ollama.add_reply("ZeroDivisionError", "You divided by zero on line 2.")
    ipython.run_line_magic("config", "OllamaMagics.model = 'llama3.2'")
    ipython.run_cell("def ratio(a, b):\n    return a / b\n")
    failed = ipython.run_cell("total = 3\nratio(total, 0)\n", store_history=True)
    assert failed.error_in_exec is not None
    with capture_output() as captured:
        ipython.run_line_magic("ollama", "explain")
    (body,) = asked(fake_ollama)
    prompt = body["prompt"]
    assert "total = 3\nratio(total, 0)" in prompt  # the cell's source
    assert "ZeroDivisionError: division by zero" in prompt
    assert "in ratio: return a / b" in prompt  # where it happened
    assert "run_code" not in prompt  # IPython's own frames are left out
    assert body["system"].startswith("You are a patient teacher")
    shown = "".join(o.data.get("text/plain", "") for o in captured.outputs)
    assert "You divided by zero on line 2." in shown


def test_explain_n_picks_that_cell_and_names_the_ones_that_failed(ipython, fake_ollama):
    ipython.run_line_magic("config", "OllamaMagics.model = 'llama3.2'")
    first = ipython.run_cell("undefined_name", store_history=True)
    ipython.run_cell("int('x')", store_history=True)
    number = first.execution_count
    with capture_output():
        ipython.run_line_magic("ollama", f"explain {number}")
    assert "NameError" in asked(fake_ollama)[0]["prompt"]
    with pytest.raises(UsageError, match=f"cells that failed: {number}, {number + 1}"):
        ipython.run_line_magic("ollama", "explain 9999")


def test_nothing_to_explain_is_one_line_and_nothing_is_sent(ipython, fake_ollama):
    ipython.run_cell("x = 1")
    with pytest.raises(UsageError, match="no cell has failed in this kernel yet"):
        ipython.run_line_magic("ollama", "explain")
    assert asked(fake_ollama) == []


def test_explaining_runs_nothing(ipython, fake_ollama):
    ipython.run_line_magic("config", "OllamaMagics.model = 'llama3.2'")
    ipython.user_ns["ran"] = 0
    ipython.run_cell("ran += 1\nraise ValueError('bad value')")
    assert ipython.user_ns["ran"] == 1
    with capture_output():
        ipython.run_line_magic("ollama", "explain")
    assert ipython.user_ns["ran"] == 1  # the failed cell was described, never run again


def test_the_prompt_names_cells_by_content_not_numbers_or_temporary_files(ipython, fake_ollama):
    """The same failure gives the same prompt in every kernel, however many cells ran before
    (so a lesson's explanation replays), and names no temporary file."""
    ipython.run_line_magic("config", "OllamaMagics.model = 'llama3.2'")
    prompts = []
    for extra in (0, 2):
        for _ in range(extra):
            ipython.run_cell("x = 1", store_history=True)
        ipython.run_cell("def ratio(a, b):\n    return a / b\n", store_history=True)
        ipython.run_cell("ratio(1, 0)", store_history=True)
        with capture_output():
            ipython.run_line_magic("ollama", "explain")
        prompts.append(asked(fake_ollama)[-1]["prompt"])
    assert prompts[0] == prompts[1]
    assert 'In the cell that starts "def ratio(a, b):", line 2, in ratio' in prompts[0]
    assert "In this cell, line 1, in <module>: ratio(1, 0)" in prompts[0]
    assert "ipykernel_" not in prompts[0] and "<ipython-input" not in prompts[0]
