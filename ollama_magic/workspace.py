"""The one core every front end plugs into: settings, clients, conversations, requests.

A :class:`Workspace` holds what a kernel's cells, chat widgets and Python calls share: the
settings (traitlets, so ``%config`` reaches them), a client per server, the conversations by
name, the default model chosen per server, and :meth:`Workspace.request`, the one place a
request is built. The magics own the kernel's workspace; :func:`default_workspace` returns it
(or one made from the environment outside IPython), so ``ask()`` and ``ChatWidget`` share the
cells' settings and sessions without reading the magics.

>>> from ollama_magic.workspace import Workspace
>>> ws = Workspace(model="llama3.2", options={"temperature": 0})
>>> ws.request("Hi", host="http://127.0.0.1:9").body
{'model': 'llama3.2', 'options': {'temperature': 0}, 'prompt': 'Hi', 'stream': True}
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from traitlets import TraitError, observe

from ollama_magic.batch import default_concurrency
from ollama_magic.client import Client
from ollama_magic.conversation import Conversation, Conversations
from ollama_magic.core import (
    AnswerView,
    Outcome,
    Request,
    ask,
    build_request,
)
from ollama_magic.errors import ModelNotFound, OllamaError
from ollama_magic.options import check_options, keep_alive_value, think_value
from ollama_magic.recording import Recordings
from ollama_magic.replay import Replay, ReplaySwitch, take
from ollama_magic.settings import MAX_CONCURRENCY, Settings, recordings_path
from ollama_magic.structured import OutputFormat
from ollama_magic.tools import Toolbox
from ollama_magic.transport import DEFAULT_HOST, Cancellation, parse_host, split_credentials

__all__ = [
    "Settings",
    "Workspace",
    "default_workspace",
    "keep_alive_value",
    "newest_model",
    "think_value",
    "use_workspace",
]


_EMBEDDING_FAMILIES = {"bert", "nomic-bert", "jina-bert", "xlm-roberta"}


def newest_model(client: Client) -> str:
    """The most recently modified local model that can answer (not an embedding model).

    Servers list capabilities with each model since about v0.20; older ones only the family,
    so embedding families are recognised by name.
    """
    models = client.list()
    for model in models:
        if model.capabilities:
            if "completion" in model.capabilities:
                return model.name
        elif model.family not in _EMBEDDING_FAMILIES and "embed" not in model.name:
            return model.name
    what = "no models yet" if not models else "only embedding models"
    raise OllamaError(
        f"The Ollama server at {client.host} has {what}.",
        hint="Download one with `%ollama pull llama3.2` (or `ollama pull llama3.2`).",
    )


class Workspace(Settings):
    """Settings, clients, conversations and the request builder that front ends share."""

    def __init__(self, **kwargs: Any) -> None:
        self._clients: dict[tuple[str, str, str], Client] = {}
        self._lock = threading.Lock()  # widgets ask for clients from their threads
        self.default_models: dict[str, str] = {}
        """The model chosen for each host when none is configured (kept for the kernel)."""
        self.cell: str | None = None
        """The notebook cell running now ("In [3]"), which recordings note; None: none."""
        self._switch = ReplaySwitch()  # every client holds it; set before the settings load
        self._replaying = False
        super().__init__(**kwargs)
        self.conversations = Conversations()
        """Conversations by name; ``%%ollama --chat`` and a chat widget use ``"default"``."""
        self.last_context: list[int] | None = None
        """The ``context`` of the last one-shot answer (``/api/generate``), which
        ``%%ollama --continue`` sends so that the next prompt follows on from it."""

    @observe("host", "timeout", "headers")
    def _forget_clients(self, change: Any) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    @observe("host", "model")
    def _forget_default_model(self, change: Any) -> None:
        self.default_models.clear()  # a new server or setting: choose the default afresh

    def close(self) -> None:
        """Close the clients' connections (the workspace stays usable)."""
        self._forget_clients(None)

    # -- recording and replay ------------------------------------------------------------------

    @property
    def recorder(self) -> Replay | None:
        """Records and replays answers (the ``replay`` setting); None when it is off."""
        return self._switch.active

    @property
    def replay_path(self) -> Path:
        """The recordings file the replay setting uses."""
        return recordings_path(self.replay_file)

    @contextlib.contextmanager
    def _settings_only(self) -> Iterator[None]:
        """Change replay settings without the observer opening the file (already done)."""
        self._replaying = True
        try:
            yield
        finally:
            self._replaying = False

    def set_replay(self, mode: str, file: str | None = None, fast: bool | None = None) -> None:
        """Turn recording and replay on (``on``, ``record``, ``strict``) or ``off``.

        Raises:
            OllamaError: The file cannot be used; nothing changed.
        """
        fast = self.replay_fast if fast is None else fast
        path = Path(file).expanduser() if file else self.replay_path
        self._use_recorder(mode, path, fast)  # raises before anything changes
        with self._settings_only():
            if file:  # the file first: the mode's check reads it
                self.replay_file = str(file)
            self.replay_fast, self.replay = fast, mode

    @observe("replay", "replay_file", "replay_fast")
    def _replay_changed(self, change: Any) -> None:
        if self._replaying:
            return  # set_replay opened the file already
        try:
            self._use_recorder(self.replay, self.replay_path, self.replay_fast)
        except OllamaError as exc:
            self._use_recorder("off", self.replay_path, False)
            with self._settings_only():
                self.replay = "off"
            raise TraitError(exc.message) from None

    def _use_recorder(self, mode: str, path: Path, fast: bool) -> None:
        current, recorder = self.recorder, None
        if mode != "off":
            # Strict only reads: a lesson in a read-only folder replays, a mistyped path is
            # an error rather than an empty new file.
            readonly = mode == "strict"
            if current is not None and current.recordings.opened_as(path, readonly=readonly):
                recordings = current.recordings
            else:
                recordings = Recordings(path, readonly=readonly)
            recorder = Replay(recordings, mode, fast=fast, where=self._where)
        self._switch.active = recorder  # every client, a chat widget's included, follows
        if current is not None and (
            recorder is None or recorder.recordings is not current.recordings
        ):
            current.recordings.close()

    def _where(self) -> tuple[str | None, str | None]:
        # Jupyter Server names the notebook of a kernel's session; VS Code sets a variable.
        return self.cell, os.environ.get("JPY_SESSION_NAME") or None

    # -- servers and models -------------------------------------------------------------------

    def client(self, host: str | None = None, *, source: str | None = None) -> Client:
        """The client for ``host`` (default: the configured one), reused across requests;
        ``source`` says where the host came from, for errors (default: ``--host``)."""
        given = host or self.host or None
        # The credentials in the host are part of the key: another user:password@ for the
        # same server must not reuse the first one's client.
        origin = source if host and source else self.host_source(host)
        key = (parse_host(given), origin, split_credentials(given)[1] or "")
        with self._lock:
            if key not in self._clients:
                # The host as given, so that user:password@ in it still reaches the client.
                client = Client(
                    given, headers=self.headers, timeout=self.timeout, host_source=key[1]
                )
                client.recorder = self._switch
                self._clients[key] = client
            return self._clients[key]

    def host_source(self, host: str | None = None) -> str:
        """Where the host comes from, so that errors say what to check."""
        if host:
            return "--host"
        if self.host and self.host != os.environ.get("OLLAMA_HOST", ""):
            return "the host setting (%ollama config host=…)"
        if self.host:
            return "OLLAMA_HOST"
        return f"the host (OLLAMA_HOST is not set, so {DEFAULT_HOST} is used)"

    def resolve_model(self, explicit: str | None, client: Client) -> tuple[str, list[str]]:
        """The model to use and a note on how it was chosen (for the footer).

        With no model named or configured, the newest local model is chosen once per server
        and kept: pulling another model later must not silently switch the cells' model.
        """
        if explicit:
            return explicit, []
        if self.model:
            return self.model, []
        if client.host in self.default_models:
            return self.default_models[client.host], []
        name = newest_model(client)
        self.default_models[client.host] = name
        return name, [
            f"{name} was chosen as the newest local model and stays the default in this "
            "kernel (%ollama config model=NAME picks another)"
        ]

    def default_model(self, client: Client | None = None) -> str:
        """The model a request without one uses on ``client``'s server (chosen once)."""
        return self.resolve_model(None, client or self.client())[0]

    def has_model(self, client: Client) -> bool:
        """Whether a request without a model needs no server call to choose one."""
        return bool(self.model or client.host in self.default_models)

    def batch_clients(self, hosts: Sequence[str] = ()) -> list[Client]:
        """The clients a batch spreads over: ``hosts``, else the hosts setting, else the host."""
        chosen = list(hosts) or list(self.hosts)
        if not chosen:
            return [self.client()]
        source = "--host" if hosts else "the hosts setting (%ollama config hosts=…)"
        clients: list[Client] = []
        for host in chosen:
            client = self.client(host, source=source)
            if all(c is not client for c in clients):  # the same server twice is one
                clients.append(client)
        return clients

    def batch_concurrency(self, concurrency: int | None = None) -> int:
        """Requests in flight per server: ``concurrency``, else the setting, else automatic."""
        if concurrency is not None:
            if not 1 <= concurrency <= MAX_CONCURRENCY:
                raise OllamaError(
                    f"concurrency must be from 1 to {MAX_CONCURRENCY}, not {concurrency}."
                )
            return concurrency
        if self.concurrency:
            return self.concurrency
        return default_concurrency()

    # -- requests --------------------------------------------------------------------------------

    def request(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        host: str | None = None,
        client: Client | None = None,
        conversation: Conversation | None = None,
        system: str | None = None,
        tools: Toolbox | None = None,
        images: Sequence[str] = (),
        output: OutputFormat | None = None,
        stream: bool = True,
        options: Mapping[str, Any] | None = None,
        keep_alive: str | float | None = None,
        think: bool | str | None = None,
        choose_model: bool = True,
        **fields: Any,
    ) -> Request:
        """The request for one question, as every front end builds it.

        Args:
            prompt: The question, or chat messages to send after the conversation's.
            model: Default: the ``model`` setting, else the newest local model (chosen once
                per server and kept).
            host: Default: the ``host`` setting, else $OLLAMA_HOST.
            client: A client of the caller's to send with (instead of ``host``).
            conversation: Continue it over ``/api/chat`` (its messages go first).
            system: The system prompt; in a chat it replaces the conversation's ("" removes
                it) when the turn succeeds.
            tools: Functions the model may call (the request goes to ``/api/chat``).
            images: Base64 images for the question.
            output: A structured-output format (its schema is sent as ``format``).
            stream: Stream the answer.
            options: Ollama options over the ``options`` setting.
            keep_alive: Default: the ``keep_alive`` setting.
            think: ``think`` as sent (None: the model's default).
            choose_model: False: do not ask the server for the newest model (a dry run).
            fields: Further API fields (``logprobs``, ``suffix``, ``raw``, …); None is not sent.

        Raises:
            OllamaError: An option is invalid, or no model is set and none can be chosen.
        """
        client = client or self.client(host)
        if model or choose_model or self.has_model(client):
            model, notes = self.resolve_model(model, client)
        else:
            model, notes = "<newest local model>", ["The model is chosen when the request is sent."]
        common: dict[str, Any] = {  # the API fields; None is not sent
            "tools": tools,
            "output": output,
            "stream": stream,
            "host": client.host,
            **self.sent_settings(options, keep_alive),
            "think": think,
            **fields,
        }
        text, messages = (prompt, ()) if isinstance(prompt, str) else (None, prompt)
        request = build_request(
            model,
            text,
            messages=messages,
            conversation=conversation,
            system=system,
            images=list(images) or None,
            **common,
        )
        request.notes = notes
        request.client = client
        return request

    def sent_settings(
        self, options: Mapping[str, Any] | None = None, keep_alive: str | float | None = None
    ) -> dict[str, Any]:
        """``options`` and ``keep_alive`` as a request sends them: the given ones over the
        settings, checked (None: the server's default).

        Raises:
            OllamaError: An option has a value of the wrong type.
        """
        try:
            merged = check_options({**self.options, **(options or {})})
        except ValueError as exc:
            raise OllamaError(f"Options: {exc}") from None
        keep = keep_alive if keep_alive is not None else self.keep_alive
        return {"options": merged or None, "keep_alive": keep_alive_value(keep)}

    def ask(
        self,
        request: Request,
        view: AnswerView | None = None,
        *,
        conversation: Conversation | None = None,
        stop: Cancellation | None = None,
        output: OutputFormat | None = None,
        retries: int = 0,
        tools: Toolbox | None = None,
        max_tool_rounds: int = 5,
        claimed: bool = False,
    ) -> Outcome:
        """Send ``request`` and return its :class:`Outcome`, whatever happened.

        Nothing is raised for a failed or interrupted answer (not even for Ctrl-C): call
        ``outcome.raise_for_error()`` to raise as a cell does, after showing what arrived.

        The conversation's turn is claimed for the answer (``claimed``: the caller holds it);
        :class:`~ollama_magic.conversation.ConversationBusy` is raised if another has it.
        A model the server does not have is no longer the chosen default.
        """
        client = request.client or self.client(request.host or None)
        turn = (
            conversation.turn()
            if conversation is not None and not claimed
            else contextlib.nullcontext()
        )
        with turn, take(request.take):
            outcome = ask(
                client,
                request,
                view or AnswerView(),
                conversation,
                stop,
                output=output,
                retries=retries,
                tools=tools,
                max_tool_rounds=max_tool_rounds,
            )
        result = outcome.result
        if request.endpoint == "generate" and outcome.ok and result and result.context:
            self.last_context = list(result.context)
        gone = isinstance(outcome.error, ModelNotFound)
        if gone and self.default_models.get(client.host) == request.model:
            del self.default_models[client.host]  # gone from the server: choose again
        return outcome


_default: Workspace | None = None
_default_lock = threading.Lock()


def default_workspace() -> Workspace:
    """The kernel's workspace (the magics' once the extension is loaded), else a process-wide
    one configured from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Workspace()
        return _default


def use_workspace(workspace: Workspace | None) -> None:
    """Make ``workspace`` the default (the magics do when the extension loads; None: unset)."""
    global _default
    with _default_lock:
        _default = workspace
