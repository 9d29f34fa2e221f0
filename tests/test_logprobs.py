"""--logprobs: tokens shaded by probability, alternatives on hover and in a table, -o a table."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from ollama_magic.testing import Reply

HOSTILE = 'Hi <img src=x onerror=alert(1)> " onmouseover="alert(2) \x1b[2J'


def run(shell, line: str, cell: str = "hi"):
    with capture_output() as captured:
        shell.run_cell_magic("ollama", f"llama3.2 {line}", cell)
    return captured


def view_of(captured):
    (bundle,) = [
        o.data for o in captured.outputs if "ollama-magic-logprobs" in o.data.get("text/html", "")
    ]
    return bundle


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_each_token_is_shaded_with_its_alternatives_on_hover_and_in_a_table(ipython, fake_ollama):
    bundle = view_of(run(ipython, "--top-logprobs 2"))
    tokens = ipython.user_ns["_ollama_logprobs"]
    parser = Tags()
    parser.feed(bundle["text/html"])
    spans = [attrs for tag, attrs in parser.tags if tag == "span"]
    assert len(spans) == len(tokens)
    assert all(re.fullmatch(r"p = \d+\.\d% · .+", attrs["title"]) for attrs in spans)
    assert all("rgba(255, 140, 0," in attrs["style"] for attrs in spans)
    assert "<details>" in bundle["text/html"] and "<th>alternatives</th>" in bundle["text/html"]
    first = bundle["text/plain"].splitlines()[0]
    assert re.fullmatch(r"'.*' \d+%  \(.+\)", first)  # a terminal gets the same as text


def test_o_with_logprobs_binds_a_table_of_tokens(ipython, fake_ollama):
    run(ipython, "--top-logprobs 3 -o probs")
    probs = ipython.user_ns["probs"]
    assert isinstance(probs, pd.DataFrame)
    assert list(probs.columns) == ["token", "probability", "logprob", "alternatives"]
    assert probs["probability"].between(0, 1).all()
    assert all(len(alternatives) == 3 for alternatives in probs["alternatives"])
    text = "".join(ipython.user_ns["_ollama_logprobs"][i]["token"] for i in range(len(probs)))
    assert "".join(probs["token"]) == text


def test_model_text_in_the_view_is_escaped(ipython, fake_ollama):
    fake_ollama.add_reply("hostile", Reply(text=HOSTILE))
    bundle = view_of(run(ipython, "--top-logprobs 1", "hostile"))
    parser = Tags()
    parser.feed(bundle["text/html"])
    tags = {tag for tag, _ in parser.tags}
    assert tags <= {"div", "span", "details", "summary", "table", "tr", "th", "td", "code", "p"}
    assert not any(name.startswith("on") for _, attrs in parser.tags for name in attrs)
    assert "\x1b" not in bundle["text/html"] and "\x1b" not in bundle["text/plain"]


def test_ollama_logprobs_shows_the_last_answers_again(ipython, fake_ollama):
    with pytest.raises(UsageError, match="ask with %%ollama --logprobs first"):
        ipython.run_line_magic("ollama", "logprobs")
    run(ipython, "--logprobs")
    with capture_output() as captured:
        ipython.run_line_magic("ollama", "logprobs")
    assert "ollama-magic-logprobs" in captured.outputs[0].data["text/html"]
