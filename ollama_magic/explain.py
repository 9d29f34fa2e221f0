"""``%ollama explain [N]``: the model explains why a cell failed, and how to fix it.

While the extension is loaded, the kernel's failing cells are remembered (the last few: the
cell's number and source, the exception, the traceback's last frames). ``%ollama explain``
sends the last one (``explain N``: cell N's) to the model with a teacher's instructions, and
the explanation streams into the output like any answer. Only text is sent; nothing runs.
"""

from __future__ import annotations

import linecache
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError

from ollama_magic.admin import Line
from ollama_magic.core import AnswerView
from ollama_magic.errors import quiet_interrupt
from ollama_magic.views import NotebookView, TextView

__all__ = ["COMMANDS", "Failure", "explain", "watch"]

#: Failing cells remembered per shell.
KEEP = 20
#: Traceback frames sent: the last ones, where the cell's own code usually is.
FRAMES = 4

TEACHER = (
    "You are a patient teacher helping a student whose notebook cell failed. In plain words, "
    "say what the error means, point to the line that caused it, and show the smallest fix as "
    "a short code block. Do not repeat the whole cell. If the cause is outside the cell (a "
    "missing package, a file, a server), say what to check."
)


@dataclass(frozen=True)
class Failure:
    """A cell that raised, as it is described to the model."""

    number: int
    source: str
    kind: str
    message: str
    frames: str
    """The traceback's last frames: file, line, function and the line's text."""

    def prompt(self) -> str:
        return (
            # No cell numbers: the same failure gives the same prompt however many cells ran
            # before it (a lesson's explanation then replays for every student).
            f"This notebook cell failed:\n\n```python\n{self.source}\n```\n\n"
            f"The error: {self.kind}: {self.message}\n\nWhere it happened (last frames):\n"
            f"```\n{self.frames}\n```"
        )


_LOGS: weakref.WeakKeyDictionary[Any, OrderedDict[int, Failure]] = weakref.WeakKeyDictionary()


def watch(shell: Any) -> Callable[[], None]:
    """Remember ``shell``'s failing cells from now on; the function returned stops it."""
    log = _LOGS.setdefault(shell, OrderedDict())

    def remember(result: Any) -> None:
        error = result.error_in_exec
        if error is None or isinstance(error, KeyboardInterrupt):
            return
        number = result.execution_count or 0
        source = result.info.raw_cell if result.info else ""
        log[number] = _failure(number, source, error, getattr(shell, "compile", None))
        while len(log) > KEEP:
            log.popitem(last=False)

    shell.events.register("post_run_cell", remember)
    return lambda: shell.events.unregister("post_run_cell", remember)


def _failure(number: int, source: str, error: BaseException, compiler: Any = None) -> Failure:
    # IPython's own frames (run_code, exec) say nothing about the student's code.
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if "IPython" not in frame.filename.replace("\\", "/").split("/")
    ][-FRAMES:]
    where = "\n".join(
        f"{_place(frame.filename, compiler, number)}, line {frame.lineno}, in {frame.name}: "
        f"{frame.line or ''}"
        for frame in frames
    )
    message = getattr(error, "message", None) or str(error)
    return Failure(number, source.strip(), type(error).__name__, str(message), where)


def _place(filename: str, compiler: Any, number: int) -> str:
    """A frame's file as the student knows it, the same on every machine, in every kernel and
    whatever the cell numbers: "this cell", the cell that starts with a line, or a library
    file from its package (not the kernel's temporary file, nor the site-packages path)."""
    named = compiler.format_code_name(filename) if compiler is not None else None
    if named:
        if named[1] == f"In[{number}]":
            return "In this cell"
        first = linecache.getline(filename, 1).strip()
        return f'In the cell that starts "{first[:60]}"'
    parts = filename.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            filename = "/".join(parts[len(parts) - parts[::-1].index(marker) :])
    return f'File "{filename}"'


def explain(line: Line, rest: list[str]) -> None:
    """``%ollama explain [N]``: explain the last failed cell (or cell N), streamed."""
    from IPython import get_ipython

    log = _LOGS.get(get_ipython(), OrderedDict())
    if len(rest) > 1 or (rest and not rest[0].isdigit()):
        raise UsageError("Usage: %ollama explain [N]   (N: the failed cell's number, In [N])")
    if not log:
        raise UsageError("Nothing to explain: no cell has failed in this kernel yet.")
    if rest:
        number = int(rest[0])
        if number not in log:
            failed = ", ".join(map(str, log)) or "none"
            raise UsageError(f"Cell {number} did not fail (cells that failed: {failed}).")
        failure = log[number]
    else:
        failure = next(reversed(log.values()))
    workspace = line.workspace
    request = workspace.request(failure.prompt(), system=TEACHER)
    view: AnswerView = NotebookView(fps=workspace.fps) if line.rich else TextView()
    outcome = workspace.ask(request, view)
    if outcome.interrupted:
        kept = "the explanation so far is above."
        raise quiet_interrupt(outcome.interruption or KeyboardInterrupt(), kept) from None
    outcome.raise_for_error()


COMMANDS: dict[str, Callable[[Line, list[str]], Any]] = {"explain": explain}
