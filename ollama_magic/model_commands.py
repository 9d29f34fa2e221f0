"""``%ollama load`` / ``unload`` (a model in memory, or out of it, before a lesson) and
``%ollama logprobs`` (the last answer's token probabilities again).

Both are the API's own requests: ``/api/generate`` with no prompt loads the model (the answer
says ``done_reason: "load"``), and with ``keep_alive: 0`` unloads it. Each prints what the
server said and then the models in memory (``%ollama ps``), so the first cell of a lesson can
warm the model and show that it is ready.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ollama_magic import admin
from ollama_magic.admin import Line, parse_words
from ollama_magic.logprobs import logprobs_bundle
from ollama_magic.options import check_duration
from ollama_magic.terminal import printable
from ollama_magic.workspace import keep_alive_value

__all__ = ["COMMANDS", "load", "logprobs", "unload"]


@magic_arguments(name="ollama load")
@argument("model", nargs="?", metavar="MODEL", help="Default: the cells' model.")
@argument(
    "--keep-alive",
    metavar="DURATION",
    help="How long it stays loaded: '30m', 3600 (seconds), -1 (until unloaded). Default: the "
    "keep_alive setting, else the server's (5m).",
)
def _load_arguments(line: str) -> None:
    """Load a model into memory now, so that the first answer does not wait for it."""


@magic_arguments(name="ollama unload")
@argument("model", nargs="?", metavar="MODEL", help="Default: the cells' model.")
def _unload_arguments(line: str) -> None:
    """Unload a model from memory now (its keep-alive is not waited for)."""


def load(line: Line, rest: list[str]) -> None:
    """``%ollama load [MODEL] [--keep-alive D]``: load the model now, then show ``ps``."""
    args = parse_words(_load_arguments.parser, rest)
    workspace = line.workspace
    client = workspace.client()
    model = args.model or workspace.default_model(client)
    given = args.keep_alive if args.keep_alive is not None else workspace.keep_alive
    try:
        keep = keep_alive_value(check_duration(str(given)) if given is not None else None)
    except ValueError as exc:
        raise UsageError(f"--keep-alive: {exc}") from None
    started = time.monotonic()
    result = client.generate(model, "", stream=False, keep_alive=keep)
    took = time.monotonic() - started
    said = result.done_reason or "nothing about loading"
    stays = "" if keep is None else f"; it stays loaded {_for(keep)}"
    if result.done_reason == "load":
        print(printable(f"{model} is loaded on {client.host} ({took:.1f} s){stays}."))
    else:  # an "Ollama-compatible" server may answer otherwise
        print(printable(f"{client.host} answered the load of {model} with: {said}."))
    admin.ps(line, [])


def unload(line: Line, rest: list[str]) -> None:
    """``%ollama unload [MODEL]``: free the model's memory now, then show ``ps``."""
    args = parse_words(_unload_arguments.parser, rest)
    workspace = line.workspace
    client = workspace.client()
    model = args.model or workspace.default_model(client)
    result = client.generate(model, "", stream=False, keep_alive=0)
    if result.done_reason == "unload":
        print(printable(f"{model} is unloaded from {client.host}."))
    else:
        said = result.done_reason or "nothing about unloading"
        print(printable(f"{client.host} answered the unload of {model} with: {said}."))
    admin.ps(line, [])


def _for(keep: float | str) -> str:
    """A keep-alive as words: "for 30m", "for 300 s", "until it is unloaded"."""
    if isinstance(keep, str):
        return f"for {keep}"
    return "until it is unloaded" if keep < 0 else f"for {keep:g} s"


def logprobs(line: Line, rest: list[str]) -> None:
    """``%ollama logprobs``: show the last ``--logprobs`` answer's token probabilities again."""
    from IPython import get_ipython
    from IPython.display import display

    if rest:
        raise UsageError("Usage: %ollama logprobs")
    shell = get_ipython()
    last = shell.user_ns.get("_ollama_logprobs") if shell is not None else None
    if not last:
        raise UsageError("No token probabilities yet: ask with %%ollama --logprobs first.")
    bundle = logprobs_bundle(last)
    if line.rich:
        display(bundle, raw=True)
    else:
        print(bundle["text/plain"])


COMMANDS: dict[str, Callable[[Line, list[str]], Any]] = {
    "load": load,
    "unload": unload,
    "logprobs": logprobs,
}
