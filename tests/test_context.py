"""One-shot cells that follow on: --continue sends the last answer's context, --context a list."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output


def generations(server) -> list[dict]:
    return [r.body for r in server.requests if r.path == "/api/generate"]


def cell(shell, line: str, text: str = "Tell me more.") -> None:
    with capture_output():
        shell.run_cell_magic("ollama", f"llama3.2 {line}", text)


def workspace(shell):
    return shell.magics_manager.registry["OllamaMagics"].workspace


def test_continue_sends_the_context_of_the_last_one_shot_answer(ipython, fake_ollama):
    cell(ipython, "", "Name a colour.")
    assert "context" not in generations(fake_ollama)[0]
    previous = workspace(ipython).last_context
    assert previous and all(isinstance(token, int) for token in previous)
    cell(ipython, "--continue", "Why that one?")
    assert generations(fake_ollama)[1]["context"] == previous
    # And the chain goes on: the next --continue sends the second answer's context.
    assert workspace(ipython).last_context != previous


def test_context_sends_a_list_from_the_notebook(ipython, fake_ollama):
    ipython.user_ns["primer"] = [101, 102, 103]
    cell(ipython, "--context primer")
    assert generations(fake_ollama)[0]["context"] == [101, 102, 103]


def test_a_dry_run_shortens_a_long_context(ipython, fake_ollama):
    ipython.user_ns["long"] = list(range(5000))
    with capture_output() as captured:
        ipython.run_cell_magic("ollama", "llama3.2 --context long --dry-run", "Go on.")
    text = captured.outputs[0].data["text/plain"]
    assert "(5000 tokens)" in text and "4999" not in text
    assert generations(fake_ollama) == []


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("--continue", "no one-shot answer to follow on from yet"),
        ("--context nothing", "nothing is not a list of token ids"),
        ("--context words", "words is not a list of token ids"),
        ("--continue --context words", "pick one"),
        ("--chat --continue", "--continue works with one-shot prompts"),
        ("--map items -o out --context words", "--context"),
        ("--map items -o out --continue", "--continue does not go with --map"),
    ],
)
def test_what_cannot_follow_on_is_refused_before_sending(ipython, fake_ollama, line, said):
    ipython.user_ns.update(words=["a", "b"], items=["x"])
    with pytest.raises(UsageError, match=said):
        cell(ipython, line)
    assert generations(fake_ollama) == []
