"""``%ollama replay``: record a lesson's answers and replay them, with or without the server;
``%ollama log`` (also ``%ollama history --all``): what was asked, across kernels and days.

The recordings live in one SQLite file (default ``.ollama_magic/replay.sqlite`` beside the
notebook): see :mod:`ollama_magic.replay`. While the extension is loaded, each recording
notes the cell that asked (``In [3]``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ollama_magic import admin
from ollama_magic.admin import Line, parse_words
from ollama_magic.errors import OllamaError
from ollama_magic.recording import Entry, Recordings
from ollama_magic.replay import MODES, answers
from ollama_magic.terminal import printable
from ollama_magic.workspace import Workspace

__all__ = ["COMMANDS", "history", "log", "replay", "watch"]

USAGE = (
    "Usage: %ollama replay [on|record|strict|off] [PATH] [--fast]   or   "
    "%ollama replay export FILE | import FILE"
)


def watch(shell: Any, workspace: Workspace) -> Callable[[], None]:
    """Note the running cell in ``workspace`` (for recordings); the function returned stops."""

    def started(info: Any) -> None:
        # IPython counts a cell kept in the history before pre_run_cell: it is the one before.
        number = shell.execution_count - (1 if getattr(info, "store_history", False) else 0)
        workspace.cell = f"In [{number}]"

    def ended(result: Any) -> None:
        workspace.cell = None  # a chat widget's turn later is not this cell's

    shell.events.register("pre_run_cell", started)
    shell.events.register("post_run_cell", ended)

    def stop() -> None:
        shell.events.unregister("pre_run_cell", started)
        shell.events.unregister("post_run_cell", ended)

    return stop


def replay(line: Line, rest: list[str]) -> None:
    """``%ollama replay [MODE] [PATH] [--fast]``, ``export FILE``, ``import FILE``."""
    workspace = line.workspace
    words = [word for word in rest if word != "--fast"]
    fast = "--fast" in rest  # each mode command says its pace: without --fast, as recorded
    if not words:
        if fast:
            workspace.set_replay(workspace.replay, fast=True)
        print(_state(workspace))
        return
    command, arguments = words[0], words[1:]
    if command in ("export", "import"):
        if len(arguments) != 1 or fast:
            raise UsageError(USAGE)
        _move(workspace, command, arguments[0])
        return
    if command not in MODES or len(arguments) > 1 or (command == "off" and (arguments or fast)):
        raise UsageError(USAGE)
    workspace.set_replay(command, arguments[0] if arguments else None, fast)
    print(_state(workspace))


def _state(workspace: Workspace) -> str:
    if workspace.recorder is not None:
        return workspace.recorder.describe()
    path = workspace.replay_path
    kept = ""
    if path.is_file():
        try:
            recordings = Recordings(path, readonly=True)
        except OllamaError as exc:  # saying so is enough: replay is off
            kept = f" ({exc.message})"
        else:
            kept = f" ({path} holds {answers(recordings.count())})"
            recordings.close()
    return f"Replay off: every request goes to the server and nothing is recorded{kept}."


def _move(workspace: Workspace, command: str, file: str) -> None:
    recordings, opened = _recordings(workspace, create=command == "import")
    try:
        if command == "export":
            count = recordings.export(file)
            print(f"Exported {answers(count)} from {recordings.path} to {file}.")
        else:
            added, present = recordings.merge(file)
            here = f" ({present} were here already)" if present else ""
            print(f"Imported {answers(added)} from {file} into {recordings.path}{here}.")
    finally:
        if opened:
            recordings.close()


def _recordings(workspace: Workspace, *, create: bool) -> tuple[Recordings, bool]:
    """The replay's recordings, else the file of the replay setting; whether it was opened."""
    if workspace.recorder is not None:
        return workspace.recorder.recordings, False
    path = workspace.replay_path
    if not create and not path.is_file():
        raise UsageError(
            f"Nothing is recorded yet ({path} does not exist). `%ollama replay on` records "
            "every answer from then on."
        )
    return Recordings(path), True


@magic_arguments(name="ollama log")
@argument("--search", metavar="TEXT", help="Only prompts that contain TEXT (any case).")
@argument("--limit", type=int, metavar="N", help="The newest N only.")
@argument("--all", action="store_true", help="Accepted for `%%ollama history --all`.")
def _log_arguments(line: str) -> None:
    """What was asked and answered, newest first, from the recordings (``%ollama replay``)."""


def log(line: Line, rest: list[str]) -> Any:
    """``%ollama log [--search TEXT] [--limit N]``: the recorded requests, as a DataFrame
    (a list of dicts without pandas)."""
    args = parse_words(_log_arguments.parser, rest)
    recordings, opened = _recordings(line.workspace, create=False)
    try:
        entries = recordings.history(args.search, args.limit)
    finally:
        if opened:
            recordings.close()
    rows = [_row(entry) for entry in entries]
    try:
        import pandas as pd
    except ImportError:
        for row in rows:
            print(printable(" · ".join(str(value) for value in row.values() if value)))
        return None
    frame = pd.DataFrame(rows, columns=list(_LOG_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame


_LOG_COLUMNS = ("time", "model", "prompt", "tokens", "seconds", "cell", "notebook")


def _row(entry: Entry) -> dict[str, Any]:
    prompt = " ".join(entry.prompt.split())
    return {
        "time": datetime.datetime.fromisoformat(entry.recorded_at),
        "model": entry.model.removesuffix(":latest"),
        "prompt": prompt if len(prompt) <= 80 else prompt[:79] + "…",
        "tokens": entry.tokens,
        "seconds": round(entry.seconds, 2),
        "cell": entry.cell,
        "notebook": Path(entry.notebook).name if entry.notebook else None,
    }


def history(line: Line, rest: list[str]) -> Any:
    """``%ollama history``: the conversation; with ``--all`` or ``--search``, the log."""
    if "--all" in rest or "--search" in rest:
        if "--session" in rest:  # every session's requests are in the log
            at = rest.index("--session")
            rest = rest[:at] + rest[at + 2 :]
        return log(line, rest)
    return admin.history(line, rest)


COMMANDS: dict[str, Callable[[Line, list[str]], Any]] = {
    "replay": replay,
    "log": log,
    "history": history,
}
