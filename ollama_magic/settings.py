"""The settings a workspace holds: traitlets, so ``%config OllamaMagics.<name>`` reaches them,
each checked when it is set (not by the server on every later request)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from ollama_magic.errors import OllamaError
from ollama_magic.options import (
    SecretHeaders,
    SecretHost,
    check_duration,
    check_headers,
    check_options,
)
from ollama_magic.recording import Recordings, is_open
from ollama_magic.replay import MODES
from ollama_magic.transport import parse_host

__all__ = ["MAX_CONCURRENCY", "REPLAY_FILE", "Settings", "recordings_path"]

_T = TypeVar("_T")

#: Requests in flight per server at most (each holds a pooled connection).
MAX_CONCURRENCY = 64

#: Where recordings go by default: beside the notebook (a kernel's working directory).
REPLAY_FILE = ".ollama_magic/replay.sqlite"


def _checked(check: Callable[[Any], _T], value: Any) -> _T:
    """``check(value)``, its ValueError as the TraitError that %config and setattr report."""
    try:
        return check(value)
    except ValueError as exc:
        raise TraitError(str(exc)) from None


class Settings(Configurable):
    """The settings, checked when set (not by the server on every later request)."""

    host = Unicode(help="The Ollama server. Empty: $OLLAMA_HOST, else http://127.0.0.1:11434.").tag(
        config=True
    )
    model = Unicode(
        help="The default model. Empty: $OLLAMA_MODEL, else the newest local model."
    ).tag(config=True)
    options = Dict(
        help="Ollama options sent with every request, e.g. {'temperature': 0.2, 'num_ctx': 8192}."
    ).tag(config=True)
    keep_alive = Unicode(
        help="How long Ollama keeps the model loaded after a request ('5m', '-1' forever, '0')."
    ).tag(config=True)
    fps = Float(10.0, help="Display updates per second while an answer streams.").tag(config=True)
    timeout = Float(
        300.0, help="Seconds to wait for the server to send something (a model may be loading)."
    ).tag(config=True)
    headers = Dict(
        help="Extra HTTP headers for a proxy in front of Ollama (OLLAMA_API_KEY is sent as a "
        "bearer token without this)."
    ).tag(config=True)

    hosts = List(
        Unicode(),
        help="Servers that a batch (--map, embed) spreads its rows over. Empty: the host "
        "setting alone.",
    ).tag(config=True)
    concurrency = Int(
        0,
        help="Requests a batch keeps in flight per server. 0: $OLLAMA_NUM_PARALLEL when set "
        "(Ollama does not report it over the API), else 4.",
    ).tag(config=True)

    replay = Enum(
        list(MODES),
        "off",
        help="Record answers and replay them: 'on' replays what is recorded and records the "
        "rest, 'record' asks the server every time and records, 'strict' answers only from "
        "the file (no server), 'off'.",
    ).tag(config=True)
    replay_file = Unicode(
        help=f"The recordings file (SQLite). Empty: {REPLAY_FILE} in the working directory."
    ).tag(config=True)
    replay_fast = Bool(
        False, help="Replay recorded answers at once instead of at their recorded pace."
    ).tag(config=True)

    @default("host")
    def _default_host(self) -> str:
        return SecretHost(os.environ.get("OLLAMA_HOST", ""))

    @default("model")
    def _default_model(self) -> str:
        return os.environ.get("OLLAMA_MODEL", "")

    @validate("options")
    def _valid_options(self, proposal: Any) -> dict[str, Any]:
        # Checked here, not by the server on every later cell (HTTP 500 "must be of type").
        return _checked(check_options, proposal["value"])

    @validate("keep_alive")
    def _valid_keep_alive(self, proposal: Any) -> str:
        return _checked(check_duration, str(proposal["value"]))

    @validate("host")
    def _valid_host(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value:
            try:
                parse_host(value)
            except OllamaError as exc:
                raise TraitError(exc.message) from None
        return SecretHost(value)  # %config prints it: a password in it shows masked

    @validate("hosts")
    def _valid_hosts(self, proposal: Any) -> list[str]:
        hosts: list[str] = []
        for value in proposal["value"]:
            value = str(value).strip()
            try:
                parse_host(value)
            except OllamaError as exc:
                raise TraitError(exc.message) from None
            hosts.append(SecretHost(value))
        return hosts

    @validate("concurrency")
    def _valid_concurrency(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if not 0 <= value <= MAX_CONCURRENCY:
            raise TraitError(
                f"concurrency must be from 1 to {MAX_CONCURRENCY} (0: automatic), not {value}"
            )
        return value

    @validate("headers")
    def _valid_headers(self, proposal: Any) -> SecretHeaders:
        # Printed by %config and saved with a notebook's outputs: credentials show masked.
        return SecretHeaders(_checked(check_headers, proposal["value"]))

    @validate("fps")
    def _valid_fps(self, proposal: Any) -> float:
        # Jupyter drops output above 1000 messages/s; a few updates per second read best.
        value = float(proposal["value"])
        if not 0 < value <= 60:
            raise TraitError(f"fps must be above 0 and at most 60, not {value:g}")
        return value

    @validate("timeout")
    def _valid_timeout(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(f"timeout must be a positive number of seconds, not {value:g}")
        return value

    @validate("replay")
    def _valid_replay(self, proposal: Any) -> str:
        if proposal["value"] != "off":
            _check_recordings(self.replay_file)
        return str(proposal["value"])

    @validate("replay_file")
    def _valid_replay_file(self, proposal: Any) -> str:
        if self.replay != "off":
            _check_recordings(proposal["value"])
        return str(proposal["value"])


def recordings_path(file: str) -> Path:
    """The recordings file a ``replay_file`` setting names."""
    return Path(file or REPLAY_FILE).expanduser()


def _check_recordings(file: str) -> None:
    """Refuse an existing file that is not a recording, before the setting changes (a file
    that does not exist yet is created, or refused, when replay starts)."""
    path = recordings_path(file)
    if is_open(path):
        return  # checked when it was opened (set_replay opens it before the setting changes)
    if path.is_file():
        try:
            Recordings(path, readonly=True).close()
        except OllamaError as exc:
            raise TraitError(exc.message) from None
        return
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise TraitError(
            f"{path} cannot be created for recordings: {folder} is not a folder "
            "this kernel can write to."
        )
