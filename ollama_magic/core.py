"""Asking a model: the request, the stream, the conversation, whatever shows the answer.

The magics and the chat widget both go through :func:`ask`. It sends a :class:`Request`,
feeds what streams in to an :class:`AnswerView` (live markdown in a notebook, plain text in a
terminal, a widget's message list), keeps the conversation right when the turn succeeds, fails
or is interrupted, and returns an :class:`Outcome` with the text, even a partial one.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ollama_magic.client import Client, Stream
from ollama_magic.conversation import Conversation
from ollama_magic.errors import OllamaError
from ollama_magic.types import Result

__all__ = ["AnswerView", "Outcome", "Request", "StopSignal", "ask", "footer_parts"]


@dataclass
class Request:
    """One request to ``/api/generate`` or ``/api/chat``, exactly as it will be sent."""

    endpoint: Literal["generate", "chat"]
    body: dict[str, Any]
    """The JSON body (``model``, ``prompt`` or ``messages``, ``options``, ``stream``, …)."""
    host: str = ""
    notes: list[str] = field(default_factory=list)
    """Why a value was chosen (e.g. the model picked as the newest local one)."""

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", True))

    def describe(self) -> dict[str, Any]:
        """The request as data: host, path and body (for ``--dry-run``)."""
        return {"host": self.host, "path": f"/api/{self.endpoint}", "body": self.body}

    def provenance(self) -> dict[str, Any]:
        """What produced an answer, for output metadata: images are summarised, not copied."""
        body = copy.deepcopy(self.body)
        for holder in [body, *body.get("messages", [])]:
            if holder.get("images"):
                holder["images"] = f"<{len(holder['images'])} images>"
        return {
            "model": self.model,
            "host": self.host,
            "path": f"/api/{self.endpoint}",
            "options": body.get("options", {}),
            "request": body,
        }

    def to_json(self) -> str:
        return json.dumps(self.describe(), indent=2, ensure_ascii=False)


@dataclass
class Outcome:
    """What came of a request."""

    request: Request
    text: str = ""
    thinking: str = ""
    result: Result | None = None
    """The whole answer when it completed."""
    error: OllamaError | None = None
    interrupted: bool = False
    """Stopped by a kernel interrupt (KeyboardInterrupt)."""
    stopped: bool = False
    """Stopped by :meth:`StopSignal.stop` (a Stop button)."""

    @property
    def complete(self) -> bool:
        return self.result is not None


class StopSignal:
    """Stops a running :func:`ask` from another thread, at once.

    A thread blocked reading the next token cannot be woken by closing the response; the
    stream's :meth:`~ollama_magic.client.Stream.abort` shuts its socket down, which does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: Stream | None = None
        self.stopped = False

    def attach(self, stream: Stream) -> None:
        """Called by :func:`ask` when the stream starts (stops it at once if already asked)."""
        with self._lock:
            self._stream = stream
            if self.stopped:
                stream.abort()

    def stop(self) -> None:
        """Stop the answer: the reader wakes, and the partial answer is kept."""
        with self._lock:
            self.stopped = True
            if self._stream is not None:
                self._stream.abort()


class AnswerView(Protocol):
    """Shows an answer while it streams."""

    def thinking(self, text: str) -> None:
        """More reasoning text arrived."""

    def content(self, text: str) -> None:
        """More answer text arrived."""

    def finish(self, outcome: Outcome) -> None:
        """The answer is over (complete, failed or interrupted): paint the final state."""


def ask(
    client: Client,
    request: Request,
    view: AnswerView,
    conversation: Conversation | None = None,
    stop: StopSignal | None = None,
) -> Outcome:
    """Send ``request``, stream the answer into ``view``, and keep ``conversation`` in step.

    For a chat, ``request.body["messages"]`` must end with the new user message(s), and the
    conversation must hold the earlier ones: after a complete answer the new messages and the
    answer are appended. An interrupted turn is kept with its partial answer (the user saw it
    and may say "go on"), as is one stopped through ``stop``; a failed turn is not recorded, so
    asking again does not repeat it.

    Errors propagate after the view has shown what arrived (``outcome.error`` has it too),
    and a KeyboardInterrupt after the partial answer was drawn, so "Run All" stops.
    """
    outcome = Outcome(request)
    before = len(conversation) if conversation is not None else 0
    body = dict(request.body)
    stream_wanted = body.pop("stream", True)
    call = client.chat if request.endpoint == "chat" else client.generate
    stream = None
    try:
        if stream_wanted:
            stream = call(**body, stream=True)
            if stop is not None:
                stop.attach(stream)
            for chunk in stream:
                if chunk.thinking:
                    outcome.thinking += chunk.thinking
                    view.thinking(chunk.thinking)
                if chunk.content:
                    outcome.text += chunk.content
                    view.content(chunk.content)
            outcome.result = stream.result
            outcome.stopped = stream.aborted
        else:
            result = call(**body, stream=False)
            outcome.result = result
            outcome.text, outcome.thinking = result.content, result.thinking
            if result.thinking:
                view.thinking(result.thinking)
            if result.content:
                view.content(result.content)
    except KeyboardInterrupt:
        outcome.interrupted = True
        _record(conversation, request, before, outcome)
        view.finish(outcome)
        raise
    except OllamaError as error:
        outcome.error = error
        if stream is not None:
            view.finish(outcome)
        raise
    finally:
        if stream is not None:
            stream.close()
    _record(conversation, request, before, outcome)
    view.finish(outcome)
    return outcome


def _record(
    conversation: Conversation | None, request: Request, before: int, outcome: Outcome
) -> None:
    """Append the turn's new messages and the answer to the conversation."""
    if conversation is None or request.endpoint != "chat":
        return
    if (outcome.interrupted or outcome.stopped) and not outcome.text:
        return  # nothing was said: as if the turn never happened
    conversation.truncate(before)
    sent = request.body.get("messages", [])
    for message in sent[before:]:
        if message.get("role") != "system":
            conversation.append(message)
    if outcome.result is not None:
        conversation.append(outcome.result.message)
    else:
        conversation.append({"role": "assistant", "content": outcome.text})
    conversation.model = request.model


def footer_parts(outcome: Outcome) -> list[str]:
    """Short facts for an answer's footer: model, tokens, speed, load time, how it ended."""
    parts = [outcome.request.model or "?"]
    result = outcome.result
    if result is not None:
        metrics = result.metrics
        if metrics.eval_count:
            parts.append(f"{metrics.eval_count} tokens")
        if metrics.tokens_per_second:
            parts.append(f"{metrics.tokens_per_second:.1f} tokens/s")
        if metrics.load_duration and metrics.load_duration >= 100_000_000:
            parts.append(f"load {metrics.load_duration / 1e9:.1f} s")
        if result.done_reason == "length":
            parts.append("truncated at the token limit (raise -n/--num-predict or --ctx)")
    if outcome.interrupted:
        parts.append("interrupted")
    elif outcome.stopped:
        parts.append("stopped")
    elif outcome.error is not None:
        parts.append("failed")
    return parts
