"""Asking a model: the request, the stream, the conversation, whatever shows the answer.

The magics and the chat widget both go through :func:`ask`. It sends a :class:`Request`,
feeds what streams in to an :class:`AnswerView` (live markdown in a notebook, plain text in a
terminal, a widget's message list), keeps the conversation right when the turn succeeds, fails
or is interrupted, and returns an :class:`Outcome` with the text, even a partial one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ollama_magic.client import Client
from ollama_magic.conversation import Conversation
from ollama_magic.errors import ModelOutputError, OllamaError
from ollama_magic.structured import OutputFormat
from ollama_magic.tools import MAX_CALLS_PER_ROUND, Toolbox
from ollama_magic.transport import Cancellation
from ollama_magic.types import Result, ToolCall

__all__ = [
    "AnswerView",
    "Outcome",
    "Request",
    "ask",
    "build_request",
    "footer_parts",
]


@dataclass
class Request:
    """One request to ``/api/generate`` or ``/api/chat``, exactly as it will be sent."""

    endpoint: Literal["generate", "chat"]
    body: dict[str, Any]
    """The JSON body (``model``, ``prompt`` or ``messages``, ``options``, ``stream``, …)."""
    host: str = ""
    notes: list[str] = field(default_factory=list)
    """Why a value was chosen (e.g. the model picked as the newest local one)."""
    new_messages: list[dict[str, Any]] | None = None
    """Chat: the messages this turn adds to its conversation (the user's, usually)."""
    system: str | None = None
    """Chat: the system prompt the conversation keeps if the turn succeeds ("" removes it)."""
    template: str | None = None
    """The prompt as written, before ``{fields}`` were filled (what provenance keeps)."""
    filled: tuple[str, ...] = ()
    """The fields filled from the notebook, by name."""
    client: Client | None = field(default=None, repr=False, compare=False)
    """The client that sends it (the workspace's for ``host``); None: the caller's."""
    take: str = ""
    """Tells identical requests apart when replayed (``--compare``'s runs)."""

    @property
    def model(self) -> str:
        """The model the request names."""
        return str(self.body.get("model", ""))

    def describe(self) -> dict[str, Any]:
        """The request as data, for ``--dry-run``: host, path and body, images abbreviated."""
        body = copy.deepcopy(self.body)
        for holder in [body, *body.get("messages", [])]:
            if holder.get("images"):
                holder["images"] = [f"{i[:12]}… ({len(i)} base64 chars)" for i in holder["images"]]
        context = body.get("context")
        if isinstance(context, list) and len(context) > 8:  # token ids: thousands, unreadable
            body["context"] = [*context[:3], f"… ({len(context)} tokens)"]
        return {"host": self.host, "path": f"/api/{self.endpoint}", "body": body}

    def provenance(self) -> dict[str, Any]:
        """What produced an answer, for the output's metadata.

        Small on purpose: the model, server, options and the prompt of this turn, not the
        whole history (which would make each answer of a chat bigger than the last) nor
        images or tool schemas. The prompt is kept as written, with the names of the fields
        filled, never their values: a ``{token}`` would otherwise be saved in the notebook,
        unseen.
        """
        body = self.body
        messages = body.get("messages", [])
        prompt = messages[-1].get("content", "") if messages else body.get("prompt", "")
        if self.template is not None:
            prompt = self.template
        fmt = body.get("format")
        info: dict[str, Any] = {
            "model": self.model,
            "host": self.host,
            "path": f"/api/{self.endpoint}",
            "options": body.get("options", {}),
            "prompt": prompt,
        }
        if self.filled:
            info["filled"] = list(self.filled)
        if messages:
            info["history_messages"] = len(messages) - 1
        if fmt is not None:
            info["format"] = fmt if isinstance(fmt, str) else fmt.get("title", "JSON schema")
        for key in ("system", "think", "keep_alive", "raw", "suffix"):
            if key in body:
                info[key] = body[key]
        if body.get("tools"):
            info["tools"] = [t.get("function", {}).get("name") for t in body["tools"]]
        return info

    def to_json(self) -> str:
        return json.dumps(self.describe(), indent=2, ensure_ascii=False)

    def with_messages(self, messages: list[dict[str, Any]]) -> Request:
        """The same chat request with other messages (the next round of a tool loop)."""
        return dataclasses.replace(self, body={**self.body, "messages": messages})


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
    """Stopped through a :class:`~ollama_magic.transport.Cancellation` (a Stop button)."""
    value: Any = None
    """The parsed answer, when a format was asked for."""
    tool_results: list[tuple[ToolCall, str, bool]] = field(default_factory=list)
    """Each tool call run: (call, the text sent back, whether it failed)."""
    tools_not_run: int = 0
    """Tool calls refused because a round asked for more than ``MAX_CALLS_PER_ROUND``."""
    started: bool = False
    """Whether the answer began: a chunk arrived, so the view has something to finish.

    An error before that (a 404, or an error line first thing) is only an error."""
    thought: bool = False
    """Whether reasoning arrived in any round of the turn (``thinking`` holds the last's)."""
    interruption: KeyboardInterrupt | None = field(default=None, repr=False)
    """The interrupt, with its traceback (for ``%ollama traceback``)."""

    @property
    def ok(self) -> bool:
        """Whether the answer completed (or was stopped on purpose) without an error."""
        return self.error is None and not self.interrupted

    def raise_for_error(self) -> None:
        """Raise the turn's error, or KeyboardInterrupt if it was interrupted: what a caller
        that does not show partial answers does."""
        if self.error is not None:
            raise self.error
        if self.interrupted:
            raise self.interruption or KeyboardInterrupt()


def build_request(
    model: str,
    prompt: str | None,
    *,
    messages: Sequence[Mapping[str, Any]] = (),
    conversation: Conversation | None = None,
    system: str | None = None,
    tools: Toolbox | None = None,
    images: list[str] | None = None,
    output: OutputFormat | None = None,
    stream: bool = True,
    host: str = "",
    **fields: Any,
) -> Request:
    """The request for one question: ``/api/chat`` in a conversation, with tools or given
    ``messages``, else ``/api/generate``.

    Front ends call :meth:`~ollama_magic.workspace.Workspace.request`, which adds the
    settings and the model choice and calls this. ``fields`` are further API fields
    (``options``, ``think``, ``keep_alive``, ``suffix``, …); those left as None are not sent,
    so the server's defaults apply. In a chat, ``system`` replaces the conversation's system
    message ("" removes it); the conversation keeps it only when the turn succeeds.
    """
    body: dict[str, Any] = {"model": model, **fields, "format": output.format if output else None}
    if conversation is not None or tools or prompt is None:
        history = conversation.messages if conversation is not None else []
        if system is not None:
            history = [m for m in history if m.get("role") != "system"]
            if system:
                history.insert(0, {"role": "system", "content": system})
        if prompt is None:
            new = [dict(message) for message in messages]
        else:
            user: dict[str, Any] = {"role": "user", "content": prompt}
            if images:
                user["images"] = images
            new = [user]
        body.update(messages=[*history, *new], tools=tools.schemas if tools else None)
        body = {key: value for key, value in body.items() if value is not None}
        body["stream"] = stream
        return Request("chat", body, host, new_messages=new, system=system)
    body.update(prompt=prompt, system=system or None, images=images or None)
    body = {key: value for key, value in body.items() if value is not None}
    body["stream"] = stream
    return Request("generate", body, host)


class AnswerView:
    """Shows an answer while it streams. This base shows nothing (``-q``, ``ask()``)."""

    def thinking(self, text: str) -> None:
        """More reasoning text arrived."""

    def content(self, text: str) -> None:
        """More answer text arrived."""

    def tool_call(self, call: ToolCall, result: str, failed: bool) -> None:
        """A tool the model called has run (``result`` goes back to the model)."""

    def retry(self, error: ModelOutputError, attempt: int, retries: int) -> None:
        """The structured answer was invalid; the model is asked again."""

    def finish(self, outcome: Outcome) -> None:
        """The answer is over (complete, failed or interrupted): paint the final state."""

    def pause(self) -> float:
        """Seconds the answer may wait unread, because nothing would show it sooner.

        A view that repaints at a few frames a second returns the time to its next frame:
        tokens gather in the socket meanwhile and are then read in one go, instead of the
        kernel waking for each (the cost of a streamed answer is mostly those wake-ups).
        """
        return 0.0


def ask(
    client: Client,
    request: Request,
    view: AnswerView,
    conversation: Conversation | None = None,
    stop: Cancellation | None = None,
    *,
    output: OutputFormat | None = None,
    retries: int = 0,
    tools: Toolbox | None = None,
    max_tool_rounds: int = 5,
) -> Outcome:
    """Send ``request``, stream the answer into ``view``, keep ``conversation`` in step, and
    return the :class:`Outcome` whatever happened: the caller decides what to raise.

    For a chat, ``request.body["messages"]`` must end with the new message(s), and the
    conversation must hold the earlier ones: after a complete answer the new messages, any tool
    exchange and the answer are appended. An interrupted turn is kept with its partial answer
    (the user saw it and may say "go on"), as is one stopped through ``stop``; a failed turn is
    not recorded, so asking again does not repeat it.

    With ``tools``, calls the model makes are run (only those functions) and their results sent
    back, until an answer without calls, for at most ``max_tool_rounds`` rounds. With
    ``output``, the answer is parsed into ``outcome.value``; an invalid one is asked for again
    up to ``retries`` times, saying what was wrong, and then is ``outcome.error`` (a
    ModelOutputError with the raw answer).

    A KeyboardInterrupt ends the turn with ``outcome.interrupted`` set, after the partial
    answer was drawn; a caller in a cell re-raises it, so "Run All" stops.
    """
    outcome = Outcome(request)
    exchange: list[dict[str, Any]] = []  # tool calls and results this turn adds
    current, attempt, rounds = request, 0, 0
    try:
        while True:
            result = _stream(client, current, view, stop, outcome)
            if result is None or outcome.stopped:
                break
            if result.tool_calls and tools:
                if rounds >= max_tool_rounds:
                    raise OllamaError(
                        f"The model was still calling tools after {max_tool_rounds} rounds.",
                        hint="Raise --max-tool-rounds, or make the tools' results clearer.",
                    )
                rounds += 1
                messages = [result.message, *_run_tools(tools, result.tool_calls, view, outcome)]
                exchange += messages
                current = current.with_messages([*current.body["messages"], *messages])
                continue
            if output is not None:
                try:
                    outcome.value = output.parse(outcome.text)
                except ModelOutputError as error:
                    if attempt >= retries:
                        raise
                    attempt += 1
                    view.retry(error, attempt, retries)
                    current = _correction(current, outcome.text, error, output)
                    continue
            break
    except KeyboardInterrupt as interruption:
        outcome.interrupted, outcome.interruption = True, interruption
        _record(conversation, request, outcome, exchange)
        view.finish(outcome)
        return outcome
    except OllamaError as error:
        outcome.error = error
        if outcome.started:
            view.finish(outcome)
        return outcome
    _record(conversation, request, outcome, exchange)
    view.finish(outcome)
    return outcome


def _stream(
    client: Client, request: Request, view: AnswerView, stop: Cancellation | None, outcome: Outcome
) -> Result | None:
    """One request: feed what arrives to ``view`` and ``outcome``; the final Result or None."""
    body = dict(request.body)
    streaming = body.pop("stream", True)
    call = client.chat if request.endpoint == "chat" else client.generate
    outcome.text = outcome.thinking = ""
    outcome.result = None
    if stop is not None and stop.cancelled:
        outcome.stopped = True  # a later round of a stopped turn: send nothing more
        return None
    if not streaming:
        result = call(**body, stream=False, cancel=stop)
        outcome.started = True
        outcome.text, outcome.thinking = result.content, result.thinking
        outcome.thought = outcome.thought or bool(result.thinking)
        if result.thinking:
            view.thinking(result.thinking)
        if result.content:
            view.content(result.content)
        if stop is not None and stop.cancelled and result.done_reason is None:
            outcome.stopped = True
            return None
        outcome.result = result
        return result
    stream = call(**body, stream=True, cancel=stop)
    # The stream keeps the text (one list of its pieces); the loop only hands them on.
    content, thinking, pause = view.content, view.thinking, view.pause
    clock, chunks = time.monotonic, iter(stream)
    try:
        while True:
            asked = clock()
            chunk = next(chunks, None)
            waited = clock() - asked > _WAITED
            if chunk is None:
                break
            if not outcome.started:
                outcome.started = True
            if chunk.thinking:
                outcome.thought = True
                thinking(chunk.thinking)
            if chunk.content:
                content(chunk.content)
            if waited and not chunk.done:
                # That read waited for the server, so nothing more is buffered: until the
                # view's next frame, let tokens gather (read in one go afterwards).
                rest = min(pause(), _MAX_PAUSE)
                if rest > 0:
                    if stop is None:
                        time.sleep(rest)  # a cell: Ctrl-C wakes it
                    else:
                        stop.wait(rest)  # Stop wakes it; the next read finds it stopped
        outcome.stopped = stream.aborted
        outcome.result = stream.result
        return stream.result
    finally:
        # Also on an error or an interrupt: the outcome keeps what arrived.
        outcome.text, outcome.thinking = stream.text, stream.thinking
        stream.close()


#: A read that took longer than this waited for the server (a buffered one takes microseconds).
_WAITED = 0.0005
#: The longest pause between reads, whatever the frame rate: Stop and the end of an answer
#: never wait longer than this for it.
_MAX_PAUSE = 0.05


def _run_tools(
    tools: Toolbox, calls: tuple[ToolCall, ...], view: AnswerView, outcome: Outcome
) -> list[dict[str, Any]]:
    """Run the calls; the tool messages that carry their results back.

    At most ``MAX_CALLS_PER_ROUND`` run; the model hears that the others did not.
    """
    messages = []
    for number, call in enumerate(calls):
        if number < MAX_CALLS_PER_ROUND:
            text, failed = tools.call(call)
            outcome.tool_results.append((call, text, failed))
            view.tool_call(call, text, failed)
        else:
            text = f"Error: not run: at most {MAX_CALLS_PER_ROUND} tool calls run in one round."
            outcome.tools_not_run += 1
        message = {"role": "tool", "content": text, "tool_name": call.name}
        if call.id:
            message["tool_call_id"] = call.id
        messages.append(message)
    return messages


def _correction(
    request: Request, answer: str, error: ModelOutputError, output: OutputFormat
) -> Request:
    """The request again, telling the model what was wrong with its answer."""
    note = (
        f"That answer was not valid: {error.message} Reply again with only JSON that matches "
        f"this schema: {output.describe()}"
    )
    if request.endpoint == "chat":
        extra = [{"role": "assistant", "content": answer}, {"role": "user", "content": note}]
        return request.with_messages([*request.body["messages"], *extra])
    return Request(
        request.endpoint,
        {**request.body, "prompt": f"{request.body.get('prompt', '')}\n\n{note}"},
        request.host,
        request.notes,
    )


def _record(
    conversation: Conversation | None,
    request: Request,
    outcome: Outcome,
    exchange: list[dict[str, Any]],
) -> None:
    """Append the turn (its new messages, tool exchange and answer) to the conversation."""
    if conversation is None or request.endpoint != "chat":
        return
    if (outcome.interrupted or outcome.stopped) and not outcome.text and not exchange:
        return  # nothing was said: as if the turn never happened
    new = request.new_messages
    if new is None:  # a request not made by build_request: its last message is the new one
        new = request.body.get("messages", [])[-1:]
    if outcome.result is not None:
        answer = outcome.result.message
    else:
        answer = {"role": "assistant", "content": outcome.text}
    conversation.record([*new, *exchange, answer], system=request.system, model=request.model)


def footer_parts(outcome: Outcome) -> list[str]:
    """Short facts for an answer's footer: model, tokens, speed, load time, how it ended."""
    parts = [outcome.request.model or "?"]
    result = outcome.result
    if result is not None:
        metrics = result.metrics
        if result.count_plausible:
            parts.append(f"{metrics.eval_count} tokens")
        elif result.chunks:
            parts.append(f"≈{result.chunks} tokens")  # about one token a chunk
        speed = result.speed
        if speed is not None:
            rate, measured = speed
            parts.append(
                f"≈{rate:.1f} tokens/s (measured here)" if measured else f"{rate:.1f} tokens/s"
            )
        if metrics.load_duration and metrics.load_duration >= 100_000_000:
            parts.append(f"load {metrics.load_duration / 1e9:.1f} s")
        if result.logprobs:
            parts.append(f"log-probabilities of {len(result.logprobs)} tokens in _ollama_logprobs")
        if result.done_reason == "length":
            parts.append("truncated at the token limit (raise -n/--num-predict or --ctx)")
        parts += _dropped_features(outcome, result)
    if result is not None and result.recorded_at:
        parts.append(f"replayed (recorded {result.recorded_at[:16].replace('T', ' ')} UTC)")
    if outcome.tools_not_run:
        parts.append(
            f"{outcome.tools_not_run} tool calls not run (at most {MAX_CALLS_PER_ROUND} a round)"
        )
    if outcome.interrupted:
        parts.append("interrupted")
    elif outcome.stopped:
        parts.append("stopped")
    elif outcome.error is not None:
        parts.append("failed")
    return parts


def _dropped_features(outcome: Outcome, result: Result) -> list[str]:
    """What was asked for but did not come back: servers that imitate Ollama drop fields."""
    body = outcome.request.body
    notes = []
    if body.get("logprobs") and not result.logprobs and outcome.text:
        notes.append("the server returned no log-probabilities")
    if body.get("think") not in (None, False) and not (outcome.thought or result.thinking):
        notes.append("the server returned no thinking")
    if result.done_reason is None and not (outcome.stopped or outcome.interrupted):
        notes.append("the server did not say why the answer ended (no done_reason)")
    return notes
