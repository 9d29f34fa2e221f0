"""Conversations kept in the kernel: the one model of a chat, shared by magics and widget.

A :class:`Conversation` is a list of messages in the ``/api/chat`` shape plus the system prompt
and the model it last used. :class:`Conversations` holds them by name; ``%%ollama --chat`` uses
the one named ``"default"``. The chat widget reads and writes the same objects, so a chat begun
in a cell continues in a widget and back. Threads may append (the widget streams in one), so
changes take a lock and readers get copies.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ollama_magic.errors import OllamaError

__all__ = ["DEFAULT_SESSION", "Conversation", "ConversationBusy", "Conversations"]

DEFAULT_SESSION = "default"
_log = logging.getLogger(__name__)


class ConversationBusy(OllamaError):
    """Another turn is running on the conversation (a widget streaming, say)."""


class Conversation:
    """The messages of one chat, oldest first.

    Attributes:
        name: The session name.
        model: The model the last turn used (None before the first).
    """

    def __init__(self, name: str = DEFAULT_SESSION, system: str | None = None) -> None:
        self.name = name
        self.model: str | None = None
        self._messages: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._turn = threading.Lock()  # a plain Lock: the turn may end on another thread
        self.changed: list[Callable[[Conversation], object]] = []
        """Callbacks ``f(conversation)`` run after every change (the widget redraws on them)."""
        if system:
            self.system = system

    def __repr__(self) -> str:
        return f"<Conversation {self.name!r}: {len(self)} messages>"

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.messages)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """A copy of the messages, ready to send as ``/api/chat``'s ``messages``."""
        with self._lock:
            return [dict(m) for m in self._messages]

    @property
    def system(self) -> str | None:
        """The system prompt (the first message when its role is ``system``)."""
        with self._lock:
            if self._messages and self._messages[0].get("role") == "system":
                return str(self._messages[0].get("content", ""))
            return None

    @system.setter
    def system(self, text: str | None) -> None:
        with self._lock:
            self._set_system(text)
        self._notify()

    def _set_system(self, text: str | None) -> None:
        """Replace the system message (the caller holds the lock)."""
        if self._messages and self._messages[0].get("role") == "system":
            del self._messages[0]
        if text:
            self._messages.insert(0, {"role": "system", "content": text})

    def append(self, message: dict[str, Any]) -> None:
        """Add a message (``role`` and ``content`` at least)."""
        if "role" not in message:
            raise ValueError("a message needs a 'role'")
        with self._lock:
            self._messages.append(dict(message))
        self._notify()

    def record(
        self, messages: list[dict[str, Any]], *, system: str | None = None, model: str | None = None
    ) -> None:
        """Append a whole turn at once (and set the system prompt it used, if given).

        One lock for the turn: a widget and a cell appending at the same time interleave
        whole turns, never lose one.
        """
        with self._lock:
            if system is not None:
                self._set_system(system)
            self._messages.extend(dict(m) for m in messages)
            if model:
                self.model = model
        self._notify()

    def pop(self) -> dict[str, Any]:
        """Remove and return the last message."""
        with self._lock:
            message = self._messages.pop()
        self._notify()
        return message

    def reset(self, *, keep_system: bool = True) -> None:
        """Forget the messages (the system prompt stays unless ``keep_system`` is False)."""
        with self._lock:
            system = self.system if keep_system else None
            self._messages.clear()
            if system:
                self._messages.append({"role": "system", "content": system})
        self._notify()

    def to_markdown(self) -> str:
        """The conversation as markdown, one section per message."""
        parts = []
        for message in self.messages:
            role = str(message.get("role", "")).capitalize()
            body = str(message.get("content", "")).strip()
            if message.get("tool_calls"):
                calls = ", ".join(
                    f"`{c.get('function', {}).get('name')}`" for c in message["tool_calls"]
                )
                body = (body + "\n\n" if body else "") + f"*Called {calls}*"
            parts.append(f"**{role}**\n\n{body or '*(empty)*'}")
        return "\n\n---\n\n".join(parts)

    def _notify(self) -> None:
        """Tell the listeners; never while holding the lock (a listener may take its own),
        and one failing listener neither stops the others nor fails the change."""
        for callback in list(self.changed):
            try:
                callback(self)
            except Exception:
                _log.exception("a conversation listener failed")

    # -- one turn at a time ------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a turn (a cell or a widget asking) is running on this conversation."""
        return self._turn.locked()

    def begin_turn(self) -> None:
        """Claim the conversation for a turn, or raise :class:`ConversationBusy` at once.

        Two turns at the same time would each answer without seeing the other; a cell and a
        chat widget on one session must take turns. Any thread may call :meth:`end_turn`.
        """
        if not self._turn.acquire(blocking=False):
            raise ConversationBusy(
                f"The conversation {self.name!r} is busy with another answer.",
                hint="Wait for it to finish, or stop it (the widget's Stop button).",
            )

    def end_turn(self) -> None:
        """Release the conversation after :meth:`begin_turn`."""
        with contextlib.suppress(RuntimeError):  # not claimed: nothing to release
            self._turn.release()

    @contextlib.contextmanager
    def turn(self) -> Iterator[Conversation]:
        """``with conversation.turn():`` — :meth:`begin_turn` … :meth:`end_turn`."""
        self.begin_turn()
        try:
            yield self
        finally:
            self.end_turn()


class Conversations:
    """Conversations by name, created on first use."""

    def __init__(self) -> None:
        self._by_name: dict[str, Conversation] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Conversation:
        with self._lock:
            if name not in self._by_name:
                self._by_name[name] = Conversation(name)
            return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._by_name))

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"<Conversations {sorted(self._by_name)}>"
