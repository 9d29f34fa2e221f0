"""The ``%ollama`` subcommands: models, ps, show, pull, status, config, history, reset, …

Each takes a :class:`Line` (the workspace: client, settings, conversations; whether the
frontend renders HTML; the magics' usage text) and the words after the subcommand. The magics
pass one; nothing here reads the magics.
"""

from __future__ import annotations

import difflib
import inspect
import json
import shlex
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import TraitError

from ollama_magic.client import Client
from ollama_magic.conversation import DEFAULT_SESSION
from ollama_magic.errors import (
    NotOllama,
    OllamaError,
    OllamaTimeout,
    ServerUnreachable,
    quiet_interrupt,
)
from ollama_magic.markdown import render_markdown
from ollama_magic.options import OLLAMA_OPTIONS, mask_headers, mask_host
from ollama_magic.progress import TransferProgress
from ollama_magic.render import escape
from ollama_magic.terminal import printable
from ollama_magic.workspace import Workspace

__all__ = ["COMMANDS", "Line", "follow", "key_values", "parse_words", "split_words"]


@dataclass
class Line:
    """What a ``%ollama`` subcommand works with."""

    workspace: Workspace
    rich: bool
    """Whether displays reach a frontend that renders HTML (not terminal IPython)."""
    usage: str = ""
    """The magics' usage text, for ``%ollama help``."""


def split_words(line: str) -> list[str]:
    """A magic's line split with shell quoting (IPython's ``parse_argstring`` keeps quotes)."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc} in: {line}") from None


def parse_words(parser: Any, words: list[str]) -> Any:
    """Parse with a magic's argument parser; a usage error carries the usage line."""
    try:
        return parser.parse_args(words)
    except UsageError as error:
        usage = " ".join(parser.format_usage().replace("::", "").split())
        raise UsageError(f"{error}\nUsage: {usage}") from None


def _value(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, lists, true), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def key_values(pairs: list[str], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` words as a dict (VALUE parsed as JSON when it parses)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = _value(value.strip())
    return out


_STANDARD_HEADERS = {"content-type", "accept", "accept-encoding", "connection", "user-agent"}


def help_command(line: Line, rest: list[str]) -> None:
    """``%ollama help``: the usage of both magics."""
    print(inspect.cleandoc(line.usage))


def models(line: Line, rest: list[str]) -> None:
    """``%ollama models``: local models as a table."""
    _no_arguments("models", rest)
    client = line.workspace.client()
    models = client.list()
    if not models:
        print(f"No local models on {client.host}. Download one: %ollama pull llama3.2")
        return
    rows = [
        [m.name, _size(m.size), m.parameter_size, m.quantization_level, m.modified_at[:10]]
        for m in models
    ]
    _table(["name", "size", "parameters", "quantization", "modified"], rows)


def ps(line: Line, rest: list[str]) -> None:
    """``%ollama ps``: models loaded in memory now."""
    _no_arguments("ps", rest)
    client = line.workspace.client()
    running = client.ps()
    if not running:
        print(f"No model is loaded on {client.host}.")
        return
    rows = [
        [
            m.name,
            _size(m.size),
            _size(m.size_vram),
            str(m.context_length or ""),
            m.expires_at[:19],
        ]
        for m in running
    ]
    _table(["name", "size", "in GPU memory", "context", "unloads at"], rows)


def show(line: Line, rest: list[str]) -> None:
    """``%ollama show MODEL``: capabilities, details, parameters and template."""
    if len(rest) != 1:
        raise UsageError("Usage: %ollama show MODEL")
    info = line.workspace.client().show(rest[0])
    details = info.get("details") or {}
    lines = [
        f"# {rest[0]}",
        "",
        f"**Capabilities:** {', '.join(info.get('capabilities') or []) or 'unknown'}",
        "",
        f"**Family:** {details.get('family', '?')} · **parameters:** "
        f"{details.get('parameter_size', '?')} · **quantization:** "
        f"{details.get('quantization_level', '?')}",
    ]
    if info.get("system"):
        lines += ["", "**System prompt**", "", "```", str(info["system"]).strip(), "```"]
    if info.get("parameters"):
        lines += ["", "**Parameters**", "", "```", info["parameters"].strip(), "```"]
    if info.get("template"):
        lines += ["", "**Template**", "", "```", info["template"].strip(), "```"]
    text = "\n".join(lines)
    display({"text/html": render_markdown(text), "text/plain": printable(text)}, raw=True)


def pull(line: Line, rest: list[str]) -> None:
    """``%ollama pull MODEL``: download with a progress bar updated in place."""
    if len(rest) != 1:
        raise UsageError("Usage: %ollama pull MODEL")
    model = rest[0]
    stopped = f"the download stopped; `%ollama pull {model}` again resumes it."
    follow(line, "pull", model, lambda: line.workspace.client().pull(model), stopped)


def follow(
    line: Line, verb: str, name: str, start: Callable[[], Iterable[Any]], stopped: str
) -> None:
    """Send a pull, create or push and show its progress lines as a bar until it ends;
    ``stopped`` is the line an interrupt leaves."""
    progress = TransferProgress(verb, name, in_kernel=line.rich, fps=line.workspace.fps)
    try:
        for event in start():
            progress.update(event)
    except KeyboardInterrupt as interrupt:
        progress.close(failed=True)
        raise quiet_interrupt(interrupt, stopped) from None
    except OllamaError:
        progress.close(failed=True)
        raise
    progress.close()


def status(line: Line, rest: list[str]) -> None:
    """``%ollama status``: what answers at the host, its version, whether the model is there.

    Anything that answers HTTP is reachable; what it is comes from ``/api/version`` and
    ``/api/tags`` (not ``HEAD /``, which "Ollama-compatible" adapters may refuse with 405).
    """
    _no_arguments("status", rest)
    client = line.workspace.client()
    lines = [f"host: {client.host}, from {client.host_source}"]
    recorder = line.workspace.recorder
    if recorder is not None and recorder.mode == "strict":
        lines.append(
            f"replay: strict, from {recorder.recordings.path}: nothing is sent to a server, so "
            "the server is not asked (`%ollama replay off` asks it again)"
        )
        print(printable("\n".join(lines)))
        return
    try:
        version: str | None = client.version()
    except NotOllama:
        version = None  # something answers; /api/tags says whether it speaks the API
    except OllamaError as exc:  # unreachable, silent, or refused (credentials): say which
        reachable = not isinstance(exc, (ServerUnreachable, OllamaTimeout))
        lines.append(f"server: {'answers' if reachable else 'not reachable'}: {exc.message}")
        lines.append(exc.hint)
        print(printable("\n".join(lines)))
        return
    try:
        models = client.list()
    except OllamaError as exc:
        lines.append(f"server: answers, but not as Ollama does: {exc.message}")
        lines.append(f"Check {client.host_source}: the port, and any path prefix of a proxy.")
        print(printable("\n".join(lines)))
        return
    if version:
        lines.append(f"server: Ollama {version}")
    else:
        lines.append(
            "server: an Ollama-compatible server, not Ollama itself (it has no /api/version); "
            "some features may be missing"
        )
    names = [m.name for m in models]
    try:
        loaded: list[str] | None = [m.name for m in client.ps()]
    except OllamaError:
        loaded = None  # adapters often lack /api/ps
    lines.append(_model_line(line.workspace, client.host, names, loaded or []))
    loaded_text = "unknown (no /api/ps)" if loaded is None else ", ".join(loaded) or "none"
    lines.append(f"local models: {len(names)}; loaded now: {loaded_text}")
    print(printable("\n".join(lines)))


def _model_line(workspace: Workspace, host: str, names: list[str], loaded: list[str]) -> str:
    model = workspace.model
    if not model:
        chosen = workspace.default_models.get(host)
        if chosen:
            return f"model: not set; cells use {chosen} (the newest local model when chosen)"
        newest = names[0] if names else "none: %ollama pull llama3.2"
        return f"model: not set; the newest local model will be used ({newest})"
    present = _on_server(model, names)
    where = "present" if present else f"NOT pulled: %ollama pull {model}"
    is_loaded = _on_server(model, loaded)
    return f"model: {model} ({where}{', loaded' if is_loaded else ''})"


def _on_server(model: str, names: list[str]) -> bool:
    return model in names or f"{model}:latest" in names


def config(line: Line, rest: list[str]) -> None:
    """``%ollama config [KEY=VALUE ...]``: change settings, then show them all.

    Values are checked by type as they are set: a bad one is a usage error and changes
    nothing. A model the server does not have is kept (the server may be down) with a warning.
    """
    workspace = line.workspace
    traits = ["host", "hosts", "model", "keep_alive", "fps", "timeout", "concurrency"]
    before = {name: workspace.trait_values()[name] for name in [*traits, "options"]}
    chosen = dict(workspace.default_models)
    changes = key_values(rest, "%ollama config")
    try:
        for key, value in changes.items():
            _set(workspace, key, value, traits)
    except UsageError:
        changed = {k: v for k, v in before.items() if workspace.trait_values()[k] != v}
        for name, value in changed.items():  # all or nothing
            setattr(workspace, name, value)
        workspace.default_models.update(chosen)  # nothing changed: keep the chosen default
        raise
    client = workspace.client()
    if "model" in changes and workspace.model:
        _check_model(workspace.model, client)
    headers = mask_headers(client.headers)
    settings = {
        "host": client.host,
        "model": workspace.model or "(the newest local model)",
        "options": workspace.options,
        "keep_alive": workspace.keep_alive or "(server default, 5m)",
        "fps": workspace.fps,
        "timeout": workspace.timeout,
        "hosts": ", ".join(mask_host(host) for host in workspace.hosts) or "(the host alone)",
        "concurrency": workspace.concurrency or f"(automatic: {workspace.batch_concurrency()})",
        # Only what the user or OLLAMA_API_KEY added, not requests' own defaults.
        "headers": {k: v for k, v in headers.items() if k.lower() not in _STANDARD_HEADERS},
    }
    width = max(map(len, settings))
    print("\n".join(f"{key:<{width}}  {value}" for key, value in settings.items()))


def _set(workspace: Workspace, key: str, value: Any, traits: list[str]) -> None:
    """Set one setting, or raise UsageError saying why it cannot be."""
    option = key.removeprefix("options.")
    try:
        if key in traits:
            if key == "hosts":  # hosts=a,b (or a JSON list)
                value = value if isinstance(value, list) else str(value).split(",")
                value = [str(host).strip() for host in value if str(host).strip()]
            elif key not in ("fps", "timeout", "concurrency"):
                value = str(value)
            setattr(workspace, key, value)
        elif option in OLLAMA_OPTIONS or key.startswith("options."):
            # Ollama ignores options it does not know, so a typo would pass silently;
            # "options.NAME=" sends one this list does not know on purpose.
            workspace.options = {**workspace.options, option: value}
        else:
            close = difflib.get_close_matches(key, [*traits, *OLLAMA_OPTIONS], n=1)
            suggestion = f" Did you mean {close[0]}?" if close else ""
            raise UsageError(
                f"Unknown setting {key!r}.{suggestion} Settings: {', '.join(sorted(traits))};"
                " or an Ollama option (temperature, num_ctx, seed, …; options.NAME for others)."
            )
    except TraitError as exc:
        text = str(exc) if str(exc).startswith(option) else f"{key}: {exc}"
        raise UsageError(f"{text} (the setting is unchanged)") from None


def _check_model(model: str, client: Client) -> None:
    """Warn at once when the configured model is not on the server (the setting stays)."""
    try:
        names = [m.name for m in client.list()]
    except OllamaError as exc:
        print(printable(f"Warning: could not check that {model} is on the server: {exc.message}"))
        return
    if _on_server(model, names):
        return
    similar = client.similar_models(model)
    also = f" Local models with similar names: {', '.join(similar)}." if similar else ""
    print(
        printable(
            f"Warning: {model} is not on the server at {client.host}; `%ollama pull {model}` "
            f"downloads it. The setting is kept.{also}"
        )
    )


def _session_arg(rest: list[str], command: str) -> str:
    if not rest:
        return DEFAULT_SESSION
    if len(rest) == 2 and rest[0] == "--session":
        return rest[1]
    raise UsageError(f"Usage: %ollama {command} [--session NAME]")


def history(line: Line, rest: list[str]) -> None:
    """``%ollama history [--session NAME]``: the conversation as markdown."""
    name = _session_arg(rest, "history")
    conversation = line.workspace.conversations[name]
    if not len(conversation):
        print(f"The conversation {name!r} is empty. Start one with %%ollama --chat.")
        return
    text = conversation.to_markdown()
    display({"text/html": render_markdown(text), "text/plain": printable(text)}, raw=True)


def reset(line: Line, rest: list[str]) -> None:
    """``%ollama reset [--session NAME]``: forget the conversation."""
    name = _session_arg(rest, "reset")
    conversation = line.workspace.conversations[name]
    count = len(conversation)
    conversation.reset(keep_system=False)
    print(f"Forgot {count} messages of the conversation {name!r}.")


@magic_arguments(name="ollama chat")
@argument("model", nargs="?", metavar="MODEL", help="The model (default: the session's).")
@argument("--session", metavar="NAME", help="The conversation (default: %%ollama --chat's).")
def _chat_arguments(line: str) -> None:
    """Open a chat widget on a conversation."""


#: What ``%ollama chat`` says where a widget cannot show (terminal IPython).
NEEDS_NOTEBOOK = (
    "The chat widget needs a notebook frontend (JupyterLab, Notebook 7, VS Code, Colab); "
    "in a terminal, chat with %%ollama --chat [--session NAME]."
)


def chat(line: Line, rest: list[str]) -> Any:
    """``%ollama chat [MODEL] [--session NAME]``: a chat widget on a conversation.

    In terminal IPython, which shows only text, no widget is made (it would print as a repr
    full of CSS): one line says where the widget works and what to use instead.
    """
    args = parse_words(_chat_arguments.parser, rest)
    if not line.rich:
        print(NEEDS_NOTEBOOK)
        return None
    # Imported here: ipywidgets is needed only once a chat widget is opened.
    from ollama_magic.widget import ChatWidget

    return ChatWidget(args.model, session=args.session, workspace=line.workspace)


def traceback_command(line: Line, rest: list[str]) -> None:
    """``%ollama traceback``: the full traceback of the last error."""
    _no_arguments("traceback", rest)
    error = getattr(sys, "last_value", None)
    if error is None:
        print("No error yet.")
        return
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    print(printable("".join(lines)))  # messages quote the server


def _no_arguments(command: str, rest: list[str]) -> None:
    if rest:
        raise UsageError(f"%ollama {command} takes no arguments")


def _size(size: int) -> str:
    if not size:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Show a table as HTML with a text fallback."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    text = "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in [header, *rows]
    )
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    display({"text/html": html, "text/plain": printable(text)}, raw=True)


COMMANDS: dict[str, Callable[[Line, list[str]], Any]] = {
    "models": models,
    "list": models,
    "ps": ps,
    "show": show,
    "pull": pull,
    "status": status,
    "config": config,
    "history": history,
    "reset": reset,
    "chat": chat,
    "traceback": traceback_command,
    "tb": traceback_command,
    "help": help_command,
}
