"""Record answers as they stream and replay them later, with the server or without one.

A :class:`Replay` is what a :class:`~ollama_magic.client.Client` consults before it sends
(its ``recorder``): a request already recorded is answered from the
:class:`~ollama_magic.recording.Recordings` file, object for object, at the pace it first
came (or at once, ``fast``); a new one goes to the server and its answer is recorded when it
is complete. Requests are matched on their canonical form: the model, prompt or messages,
options, format, tools and image digests, never the host, so a lesson recorded on one server
replays anywhere.

Two kinds of request are recorded:

- answers (``/api/generate``, ``/api/chat``, ``/api/embed``), which depend only on the
  request: replayed whenever recorded;
- the server's state (its models, what is loaded, a load or unload): always asked live while
  the server answers, replayed only in ``strict`` mode or when the server cannot be reached.

Modes: ``on`` (replay what is recorded, record the rest), ``record`` (ask the server every
time and record, so the newest take replays), ``strict`` (answer only from the file; an
unrecorded request is a :class:`NotRecorded` error and nothing is sent).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from ollama_magic.errors import OllamaError
from ollama_magic.recording import Entry, RecordingError, Recordings
from ollama_magic.stream import Objects, Replayed, Tap
from ollama_magic.transport import Cancellation

__all__ = ["MODES", "NotRecorded", "Replay", "ReplaySwitch", "canonical", "take"]

MODES = ("off", "on", "record", "strict")

Kind = Literal["answer", "state"]

_ANSWERS = ("/api/generate", "/api/chat", "/api/embed")
_STATE = ("/api/tags", "/api/ps", "/api/show", "/api/version")

_TAKE: contextvars.ContextVar[str] = contextvars.ContextVar("ollama_magic_take", default="")


class NotRecorded(OllamaError):
    """Strict replay: the request was never recorded, so there is nothing to answer with."""


@contextlib.contextmanager
def take(name: str) -> Iterator[None]:
    """Tell identical requests apart in this thread (``--compare 3`` asks the same thing
    three times; each run replays its own answer)."""
    token = _TAKE.set(name)
    try:
        yield
    finally:
        _TAKE.reset(token)


def answers(count: int) -> str:
    """ "1 recorded answer", "3 recorded answers"."""
    return f"{count} recorded answer{'' if count == 1 else 's'}"


def kind_of(path: str, body: Mapping[str, Any]) -> Kind | None:
    """Whether a request is recorded, and as what (None: never, e.g. a pull)."""
    if path in ("/api/generate", "/api/chat"):
        asked = body.get("prompt") or body.get("messages") or body.get("suffix")
        return "answer" if asked else "state"  # no prompt: a load or an unload
    if path in _ANSWERS:
        return "answer"
    return "state" if path in _STATE else None


def canonical(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The request as it is matched and stored: without ``stream`` (the answer is the same),
    with the model's implicit ``:latest``, images as SHA-256 digests, and without the
    keep-alive of an answer (it changes how long the model stays, not what it says)."""
    request: dict[str, Any] = {"path": path}
    for key, value in body.items():
        if key == "stream" or (key == "keep_alive" and kind_of(path, body) == "answer"):
            continue
        if key == "images" and isinstance(value, list):
            value = [_digest(image) for image in value]
        elif key == "messages" and isinstance(value, list):
            value = [
                {**m, "images": [_digest(i) for i in m["images"]]}
                if isinstance(m, dict) and isinstance(m.get("images"), list)
                else m
                for m in value
            ]
        request[key] = value
    model = request.get("model")
    if isinstance(model, str) and model and ":" not in model.rsplit("/", 1)[-1]:
        request["model"] = f"{model}:latest"
    if isinstance(request.get("options"), dict):  # -t 1 and temperature=1.0 are one request
        request["options"] = {
            name: int(value) if isinstance(value, float) and value.is_integer() else value
            for name, value in request["options"].items()
        }
    return request


def _digest(image: Any) -> str:
    return "sha256:" + hashlib.sha256(str(image).encode()).hexdigest()


def _key(request: Mapping[str, Any], name: str) -> str:
    text = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{text}\n{name}".encode()).hexdigest()


def prompt_of(request: Mapping[str, Any]) -> str:
    """What was asked, in words: the prompt, the last message, the input, or the action."""
    path = str(request.get("path", ""))
    messages = request.get("messages")
    if isinstance(messages, list) and messages:
        # The user's question, not a tool's result or a retry's note after it.
        asked = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        last = asked[-1] if asked else messages[-1]
        return str(last.get("content") or "") if isinstance(last, dict) else ""
    if request.get("prompt"):
        return str(request["prompt"])
    given = request.get("input")
    if isinstance(given, list):
        more = f" (+{len(given) - 1} more)" if len(given) > 1 else ""
        return (str(given[0]) if given else "") + more
    if given is not None:
        return str(given)
    if path in ("/api/generate", "/api/chat"):
        return "unload" if request.get("keep_alive") in (0, "0", "0s") else "load"
    return path


class Replay:
    """Records and replays requests through a :class:`Recordings` file (see the module).

    Args:
        recordings: The file.
        mode: ``on``, ``record`` or ``strict``.
        fast: Replay at once instead of at the recorded pace.
        where: Returns the notebook cell and the notebook being run, for each recording.
    """

    def __init__(
        self,
        recordings: Recordings,
        mode: str = "on",
        *,
        fast: bool = False,
        where: Callable[[], tuple[str | None, str | None]] | None = None,
    ) -> None:
        if mode not in MODES[1:]:
            raise ValueError(f"replay mode must be on, record or strict, not {mode!r}")
        self.recordings = recordings
        self.mode = mode
        self.fast = fast
        self._where = where or (lambda: (None, None))

    def __repr__(self) -> str:
        pace = ", fast" if self.fast else ""
        return f"Replay({self.mode}{pace}, {str(self.recordings.path)!r})"

    def describe(self) -> str:
        """The mode in one sentence, for ``%ollama replay``."""
        path, count = self.recordings.path, self.recordings.count()
        pace = "at once" if self.fast else "at their recorded pace"
        what = {
            "on": f"recorded answers are replayed {pace}; new requests go to the server and "
            "are recorded",
            "record": "every request goes to the server and its answer is recorded (the "
            "newest take replays)",
            "strict": f"answers come only from the file, {pace}; nothing is sent to a server",
        }[self.mode]
        return f"Replay {self.mode}: {what}. {path} holds {answers(count)}."

    # -- the client's hooks ------------------------------------------------------------------

    def replay(
        self,
        path: str,
        body: Mapping[str, Any],
        cancel: Cancellation,
        *,
        offline: bool = False,
    ) -> Replayed | None:
        """The recorded answer to send instead of the request, or None to send it.

        ``offline``: the server could not be reached (``on`` then replays the server's state
        too).

        Raises:
            NotRecorded: ``strict``, and the request was never recorded.
            RecordingError: The file cannot be read.
        """
        kind = kind_of(path, body)
        if kind is None:
            return None
        live = self.mode == "record" or (self.mode == "on" and kind == "state" and not offline)
        if live:
            return None
        request = canonical(path, body)
        entry = self.recordings.find(_key(request, _TAKE.get()))
        if entry is None:
            if self.mode == "strict":
                raise self._not_recorded(request)
            return None
        chunks = _at_once(entry.chunks) if self.fast else entry.chunks
        return Replayed(_paced(chunks, cancel), entry.recorded_at)

    def tap(self, path: str, body: Mapping[str, Any]) -> Tap | None:
        """A wrapper for the objects of the answer about to be asked, which records them once
        the last has come (None: not recorded). Called before the request goes out: the
        first object's time includes the wait for the model."""
        if kind_of(path, body) is None or self.mode == "strict":
            return None
        started = time.monotonic()

        def recording(objects: Objects) -> Objects:
            chunks: list[tuple[float, dict[str, Any]]] = []
            try:
                for obj in objects:
                    chunks.append((round(time.monotonic() - started, 4), obj))
                    if obj.get("done") is True:
                        self._save(path, body, chunks)  # complete: now, in one transaction
                    yield obj
            finally:
                objects.close()

        return recording

    def permit(self, path: str) -> None:
        """Called before anything goes to the server.

        Raises:
            NotRecorded: ``strict``: nothing is sent to a server (a pull, a copy, …).
        """
        if self.mode == "strict":
            raise NotRecorded(
                f"Strict replay sends nothing to a server, so {path} was not asked.",
                hint="`%ollama replay on` (or `off`) lets requests reach the server again.",
            )

    def record(self, path: str, body: Mapping[str, Any], answer: dict[str, Any]) -> None:
        """Record a one-object answer (``/api/embed``, ``/api/tags``, …)."""
        if kind_of(path, body) is not None and self.mode != "strict":
            self._save(path, body, [(0.0, answer)])

    # -- internals -----------------------------------------------------------------------------

    def _save(self, path: str, body: Mapping[str, Any], chunks: list[Any]) -> None:
        request = canonical(path, body)
        final = chunks[-1][1]
        tokens = final.get("eval_count")
        cell, notebook = self._where()
        entry = Entry(
            key=_key(request, _TAKE.get()),
            kind=kind_of(path, body) or "answer",
            path=path,
            model=str(request.get("model", "")),
            request=request,
            prompt=prompt_of(request),
            chunks=chunks,
            tokens=tokens if isinstance(tokens, int) else None,
            seconds=chunks[-1][0],
            recorded_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            cell=cell,
            notebook=notebook,
        )
        try:
            self.recordings.add(entry)
        except RecordingError as exc:
            # The answer itself is fine: it shows, and the failure to keep it is said once.
            warnings.warn(f"The answer was not recorded: {exc.message}", stacklevel=2)

    def _not_recorded(self, request: dict[str, Any]) -> NotRecorded:
        asked = prompt_of(request)
        model = str(request.get("model", "")).removesuffix(":latest")
        what = _STATE_WORDS.get(str(request["path"]), "").replace("{model}", model)
        if kind_of(str(request["path"]), request) == "state" and not what:
            what = f"{asked}ing {model}"  # a load or an unload
        elif not what:
            short = asked if len(asked) <= 60 else asked[:57] + "…"
            what = f"{short!r} to {model}"
        message = (
            f"Strict replay: {what} was never recorded in "
            f"{self.recordings.path.name}, and nothing is sent to a server."
        )
        near = self.recordings.like(str(request["path"]), asked)
        if near is not None:
            differences = _differences(near.request, request)
            if differences:
                message += f" A recording of that prompt differs in {differences}."
        return NotRecorded(
            message,
            hint="Record it with `%ollama replay on` while the server is reachable, or "
            "`%ollama replay off`.",
        )


_STATE_WORDS = {
    "/api/tags": "the server's list of models",
    "/api/ps": "the list of models in memory",
    "/api/show": "the details of {model}",
    "/api/version": "the server's version",
}


def _differences(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> str:
    """What differs between two canonical requests, in a few words."""
    parts = []
    for key in sorted(set(recorded) | set(asked)):
        was, now = recorded.get(key), asked.get(key)
        if was == now:
            continue
        if key == "options" and isinstance(was or {}, dict) and isinstance(now or {}, dict):
            was, now = was or {}, now or {}
            for name in sorted(set(was) | set(now)):
                if was.get(name) != now.get(name):
                    parts.append(f"{name} (recorded {was.get(name)}, asked {now.get(name)})")
        elif key in ("model", "think", "seed", "format") and not isinstance(now, (dict, list)):
            parts.append(f"{key} (recorded {was}, asked {now})")
        else:
            parts.append(key)
    return ", ".join(parts[:4])


def _at_once(chunks: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict[str, Any]]]:
    return [(0.0, obj) for _, obj in chunks]


def _paced(chunks: list[tuple[float, dict[str, Any]]], cancel: Cancellation) -> Objects:
    """The objects at their recorded times; a cancel (Stop) ends them at once."""
    started = time.monotonic()
    for offset, obj in chunks:
        delay = offset - (time.monotonic() - started)
        if delay > 0 and cancel.wait(delay):
            return
        if cancel.cancelled:
            return
        yield obj


class ReplaySwitch:
    """The recorder every client of a workspace holds: whatever replay is now (None: off).

    Clients outlive a change of mode (a chat widget keeps its client), so they hold this
    switch rather than a :class:`Replay`: turning replay off or strict reaches them all.
    """

    def __init__(self) -> None:
        self.active: Replay | None = None

    def replay(
        self, path: str, body: dict[str, Any], cancel: Cancellation, *, offline: bool = False
    ) -> Replayed | None:
        active = self.active
        return active.replay(path, body, cancel, offline=offline) if active else None

    def tap(self, path: str, body: dict[str, Any]) -> Tap | None:
        active = self.active
        return active.tap(path, body) if active else None

    def record(self, path: str, body: dict[str, Any], answer: dict[str, Any]) -> None:
        active = self.active
        if active is not None:
            active.record(path, body, answer)

    def permit(self, path: str) -> None:
        active = self.active
        if active is not None:
            active.permit(path)
