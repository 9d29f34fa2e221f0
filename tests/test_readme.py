"""Every code example in README.md runs, so the README cannot drift from the product.

Python blocks run in order in one real IPython shell (magics included) against the stand-in
server, as a reader would paste them into a notebook; shell commands are run or checked.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

import requests
from IPython.utils.capture import capture_output

from ollama_magic.magics import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[tuple[int, str]]:
    """The README's fenced blocks in ``language``: (line number, code)."""
    return [
        (README.count("\n", 0, match.start()) + 1, match.group(2))
        for match in _BLOCK.finditer(README)
        if match.group(1) == language
    ]


def test_the_readme_has_examples_of_each_kind():
    assert len(blocks("python")) >= 8
    assert blocks("bash") and blocks("text")


def test_every_python_example_in_the_readme_runs(ipython, fake_ollama, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a reader's notebook folder: recordings go there
    widgets = []
    try:
        for number, code in blocks("python"):
            with capture_output() as captured:
                result = ipython.run_cell(code)
            error = result.error_before_exec or result.error_in_exec
            assert error is None, f"README.md line {number}: {error!r}\n{captured.stdout}"
            assert "Traceback" not in captured.stdout, f"README.md line {number}"
            widgets += [v for v in ipython.user_ns.values() if type(v).__name__ == "ChatWidget"]
    finally:
        for widget in widgets:
            widget.close()
    # What the examples promise, checked on what they left behind.
    namespace = ipython.user_ns
    assert list(namespace["people"].columns) == ["name", "age"]
    tutor = ipython.magics_manager.registry["OllamaMagics"].workspace.conversations["default"]
    assert [m["role"] for m in tutor.messages] == ["system", "user", "assistant"]
    prompts = [r.body.get("prompt") for r in fake_ollama.requests if r.path == "/api/generate"]
    assert "Explain entropy in three bullet points." in prompts
    assert (tmp_path / ".ollama_magic" / "replay.sqlite").is_file()  # the lesson was recorded


def test_the_from_python_example_ends_each_answer_on_its_own_line(ipython, fake_ollama):
    fake_ollama.add_reply("sky", "Rayleigh scattering.")
    fake_ollama.add_reply("Hi", "Hello!")
    (code,) = [c for _, c in blocks("python") if '"content": "Hi!"' in c]
    with capture_output() as captured:
        ipython.run_cell(code)
    lines = captured.stdout.splitlines()
    assert lines[0] == "Rayleigh scattering."
    assert lines[1].startswith("Hello! ")  # not run on from the first answer


def test_the_readme_shell_commands_run():
    for number, code in blocks("bash"):
        for command in code.splitlines():
            command = command.split("#")[0].strip()
            if not command:
                continue
            if command.startswith("python -m ollama_magic.testing"):
                _serve_briefly(command, number)
            else:
                script = ROOT / command.split()[0]
                assert script.is_file() and os.access(script, os.X_OK), f"line {number}"


def _serve_briefly(command: str, number: int) -> None:
    """Start the stand-in as the README says (on a free port), ask it something, stop it."""
    argv = [sys.executable, *command.split()[1:]]
    argv[argv.index("--port") + 1] = "0"
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        # Wait for the line saying where it listens, with a deadline rather than forever.
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, f"README.md line {number}: the stand-in said nothing within 30 s"
        first = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert url, f"README.md line {number}: {first!r}"
        assert requests.get(url.group(0) + "/api/tags", timeout=10).json()["models"]
    finally:
        server.terminate()
        server.wait(10)


def test_the_readme_ollama_commands_exist():
    for number, code in blocks("text"):
        for command in re.findall(r"%ollama (\w+)|\| (\w+)", code):
            name = command[0] or command[1]
            assert name in COMMANDS, f"README.md line {number}: %ollama {name}"
