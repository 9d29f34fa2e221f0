"""--compare N and -t 0,0.7,1.5: one prompt answered several times, side by side."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from ollama_magic.testing import Reply


def generations(server) -> list[dict]:
    return [r.body for r in server.requests if r.path == "/api/generate"]


def run(shell, line: str, cell: str = "Name a colour."):
    with capture_output() as captured:
        shell.run_cell_magic("ollama", f"llama3.2 {line}", cell)
    return captured


class Columns(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []
        self.tags: list[str] = []
        self._muted = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._muted = "font-size: 0.85em" in dict(attrs).get("style", "")

    def handle_data(self, data):
        if self._muted:
            self.labels.append(data)
            self._muted = False


def test_a_list_of_temperatures_answers_once_for_each_side_by_side(ipython, fake_ollama):
    captured = run(ipython, "-t 0,0.7,1.5 -o colours")
    sent = sorted(body["options"]["temperature"] for body in generations(fake_ollama))
    assert sent == [0.0, 0.7, 1.5]
    assert all(body["stream"] is False for body in generations(fake_ollama))
    (shown,) = [o.data for o in captured.outputs if "text/html" in o.data]
    parser = Columns()
    parser.feed(shown["text/html"])
    assert parser.labels == [
        "Run 1 · temperature 0",
        "Run 2 · temperature 0.7",
        "Run 3 · temperature 1.5",
    ]
    answers = ipython.user_ns["colours"]
    assert len(answers) == 3 and all(isinstance(a, str) and a for a in answers)
    assert shown["text/plain"].startswith("--- Run 1 · temperature 0 ---\n")


def test_compare_n_sends_the_same_options_n_times(ipython, fake_ollama):
    run(ipython, "--compare 3 --seed 7 -o runs")
    bodies = generations(fake_ollama)
    assert len(bodies) == 3 and all(b["options"] == {"seed": 7} for b in bodies)
    assert len(ipython.user_ns["runs"]) == 3


def test_answers_are_rendered_sanitized(ipython, fake_ollama):
    fake_ollama.add_reply("colour", Reply(text="<img src=x onerror=alert(1)> **red**"))
    (shown,) = [o.data for o in run(ipython, "--compare 2").outputs if "text/html" in o.data]
    assert "<img" not in shown["text/html"] and "<strong>red</strong>" in shown["text/html"]


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("--compare 1", "--compare takes 2 or more runs"),
        ("--compare 2 -t 0,1", "pick one"),
        ("--compare 2 --chat", "--chat does not go with comparing"),
        ("-t 0,1 -f json", "--format does not go with comparing"),
        ("-t 0,hot", "-t takes a number or a list"),
    ],
)
def test_what_cannot_be_compared_is_refused_before_sending(ipython, fake_ollama, line, said):
    with pytest.raises(UsageError, match=said):
        run(ipython, line)
    assert generations(fake_ollama) == []
