"""The chat widget's turns: claim the conversation, stream an answer in a thread, end it once."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as w  # type: ignore[import-untyped]  # ipywidgets ships no type hints

from ollama_magic.client import Client
from ollama_magic.conversation import Conversation, ConversationBusy
from ollama_magic.core import Outcome, Request, footer_parts
from ollama_magic.errors import OllamaError
from ollama_magic.render import Bundle, DisplayHandle
from ollama_magic.transport import Cancellation
from ollama_magic.views import NotebookView
from ollama_magic.widget_controls import OptionsPanel
from ollama_magic.widget_html import Kind, MessageList, Row, close_tree, message_widget
from ollama_magic.workspace import Workspace

__all__ = ["BubbleView", "Ending", "Question", "Turn", "TurnTaking", "ending", "one_line"]


def one_line(error: BaseException) -> str:
    """An error as one line: what went wrong, then what to do."""
    if isinstance(error, OllamaError):
        text = f"{error.message} — {error.hint}" if error.hint else error.message
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())


# -- how a turn ends (no widgets) ------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """What was asked in a turn."""

    message: dict[str, Any]
    """The user's message, exactly as the conversation will keep it."""
    from_input: bool = False
    """Typed in the input box (not sent from code): it can go back there."""
    undo: tuple[dict[str, Any], ...] = ()
    """A retry: the question and answer taken out to ask again; put back if it fails."""


@dataclass(frozen=True)
class Ending:
    """How a turn ends: what the conversation keeps, what the list shows, what the status says."""

    status: str
    kind: Kind
    kept: bool = False
    """The answer is in the conversation (``ask`` recorded it): the question's row stays."""
    note: str = ""
    """Under the kept answer: how it ended (it was stopped)."""
    restore: tuple[dict[str, Any], ...] = ()
    """Messages to put back in the conversation: the answer a failed retry was to replace."""
    dimmed: bool = False
    """The question stays on screen dimmed, though not in the conversation (Retry resends)."""
    partial: dict[str, Any] | None = None
    """Shown dimmed under the dimmed question: what the model said before the turn failed."""
    partial_note: str = ""
    """Under the partial answer: why it is not kept."""
    text_back: str | None = None
    """For the input box (if it is empty): the question, as if it had never been sent."""


def ending(outcome: Outcome, crash: BaseException | None, question: Question) -> Ending:
    """Decide how a turn ends, from what came of it and what was asked.

    Args:
        outcome: What ``ask`` returned (an empty one if it raised).
        crash: What ``ask`` raised: a bug, shown like an error.
        question: What was asked.
    """
    error = crash or outcome.error
    # As ask() records it: a complete answer, or a stopped one that said something.
    if error is None and (outcome.text or outcome.result is not None):
        footer = " · ".join(footer_parts(outcome))
        if outcome.stopped:
            return Ending(footer, "info", kept=True, note="■ stopped")
        return Ending(footer, "ok", kept=True)
    if question.undo:  # a retry that did not answer: the old answer comes back
        if error is not None:
            status = f"✖ {one_line(error)} (the previous answer is kept)"
            return Ending(status, "error", restore=question.undo)
        return Ending("Stopped; the previous answer is kept.", "info", restore=question.undo)
    if error is None and not outcome.thinking:
        # Stopped before a word: as if never asked; typed text goes back to the box.
        text = str(question.message["content"]) if question.from_input else None
        return Ending("Stopped before the answer began.", "info", text_back=text)
    # Keep what the user saw, dimmed: it is not in the conversation (Retry sends the question
    # again). A stop while thinking keeps the reasoning shown so far.
    partial: dict[str, Any] | None = None
    if outcome.text or outcome.thinking:
        partial = {"role": "assistant", "content": outcome.text}
        if outcome.thinking:
            partial["thinking"] = outcome.thinking
    if error is not None:
        status = f"✖ {one_line(error)} (Retry sends it again)"
        return Ending(
            status, "error", dimmed=True, partial=partial, partial_note="✖ failed: not kept"
        )
    return Ending(
        "Stopped while the model was thinking (Retry asks again).",
        "info",
        dimmed=True,
        partial=partial,
        partial_note="■ stopped while thinking: not kept",
    )


# -- the answer while it streams -------------------------------------------------------------


class _Output:
    """One output of the bubble: an HTML widget whose value is replaced in place."""

    def __init__(self, widget: w.HTML) -> None:
        self.widget = widget

    def update(self, bundle: Bundle, metadata: dict[str, Any]) -> None:
        self.widget.value = bundle.get("text/html", "")


class BubbleView(NotebookView):
    """The magic's live view, streaming into an assistant bubble (a ``DisplaySink``).

    Each output the view makes is an HTML widget appended to the bubble, and each update sets
    its value, so the magic's throttling and block caching apply as they are: frames are spaced
    by their size, and what is sent stays linear in the answer's length. The final frame is not
    painted: the finished message replaces the bubble (one render, as history shows it).
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bubble = w.VBox([w.HTML('<div class="om-role">Assistant</div>')])
        self.bubble.add_class("om-msg")
        self.bubble.add_class("om-assistant")
        self._waiting: w.HTML | None = w.HTML('<span class="om-waiting"></span>')
        self.bubble.children += (self._waiting,)
        super().__init__(sink=self, fps=fps, clock=clock)

    def display(self, bundle: Bundle, metadata: dict[str, Any]) -> DisplayHandle:
        """The sink: a new HTML widget at the end of the bubble (the dots go once text comes)."""
        widget = w.HTML(bundle.get("text/html", ""))
        children = [c for c in self.bubble.children if c is not self._waiting]
        self.bubble.children = (*children, widget)
        if self._waiting is not None:
            close_tree(self._waiting)
            self._waiting = None
        return _Output(widget)

    def finish(self, outcome: Outcome) -> None:
        """Nothing to paint: the end of the turn replaces the bubble by the message."""


class Turn:
    """One question and its answer while it streams: the rows shown, the stop, the thread."""

    def __init__(
        self,
        question: Question,
        request: Request,
        fps: float,
        work: Callable[[Turn], None],
        name: str,
    ) -> None:
        self.question = question
        self.request = request
        self.user_row = Row(message_widget(question.message), question.message)
        """The question, shown; it becomes the message's row if the answer is kept."""
        self.view = BubbleView(fps)
        self.stop = Cancellation()
        # Run in a copy of the context: print/display from the thread land in this cell.
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(work, self), name=name, daemon=True
        )

    @property
    def widgets(self) -> tuple[w.Widget, w.Widget]:
        """What it shows below the conversation: the question, and the answer streaming."""
        return (self.user_row.widget, self.view.bubble)

    def close(self) -> None:
        """Close both of its widgets (the turn ended without showing them again)."""
        close_tree(self.user_row.widget)
        close_tree(self.view.bubble)


# -- the turn lifecycle, in the widget ------------------------------------------------------


class TurnTaking:
    """The turns of :class:`~ollama_magic.widget.ChatWidget`, which mixes this class in.

    A turn claims the conversation (one answer at a time, with cells and other widgets),
    streams in its own thread, and always ends through :meth:`_end_turn`.
    """

    # The widget's, set when it is built. Guarded by _lock: the rows, the turn, the worker.
    workspace: Workspace
    conversation: Conversation
    client: Client
    stop_button: w.Button
    input: w.Textarea
    _lock: threading.RLock
    _closed: bool
    _fps: float
    _list: MessageList
    _panel: OptionsPanel
    _turn: Turn | None
    _worker: threading.Thread | None  # the latest turn's thread

    if TYPE_CHECKING:  # defined by the widget

        @property
        def busy(self) -> bool: ...
        @property
        def model(self) -> str: ...
        @property
        def options(self) -> dict[str, Any]: ...
        @property
        def think(self) -> bool | str | None: ...
        def _set_status(self, text: str, kind: Kind = "info") -> None: ...
        def _show_traceback(self, error: BaseException) -> None: ...
        def _redraw(self) -> None: ...
        def _sync(self, reuse: Sequence[Row] = (), note: str = "") -> None: ...

    def _conversation_changed(self, conversation: Conversation) -> None:
        """The conversation changed: show it, unless our own turn is recording its answer."""
        turn = self._turn
        if self._closed or (turn is not None and turn.thread is threading.current_thread()):
            return  # our own answer being recorded: the end of the turn redraws once
        self._redraw()

    def _show_rows(self) -> None:
        """Put the rows on screen, and below them the turn streaming, if any."""
        turn = self._turn
        self._list.show(turn.widgets if turn is not None else ())

    def _begin(self, user: dict[str, Any] | None, *, from_input: bool = False) -> bool:
        """Claim the conversation's turn and start answering ``user`` (None: retry).

        The turn is claimed before the conversation is touched (a retry takes the last
        answer out), and given back here unless the answer's thread took it over.
        """
        if self._closed:
            raise RuntimeError("This chat widget is closed.")
        if self.busy:
            self._set_status(
                "Not sent: the answer is still streaming. Press Stop first, or wait.", "warn"
            )
            return False
        try:
            options = self.options
        except ValueError as exc:
            self._set_status(f"Options: {exc}", "error")
            return False
        model = self.model
        if not model:
            self._set_status(
                "No model: pull one (%ollama pull llama3.2), then press the refresh button.",
                "error",
            )
            return False
        try:
            self.conversation.begin_turn()
        except ConversationBusy:
            self._set_status(
                f"Not sent: session {self.conversation.name!r} is busy with another answer "
                "(another chat, or a cell). Try again when it is over.",
                "warn",
            )
            return False
        undo: tuple[dict[str, Any], ...] = ()
        started = False
        try:
            if user is None:
                user, undo = self._take_back()
                if user is None:
                    return False
            request = self._request(user, model, options)
            # The question as sent is exactly what the conversation will keep.
            question = Question(request.body["messages"][-1], from_input, undo)
            name = f"ollama-chat:{self.conversation.name}"
            self._launch(Turn(question, request, self._fps, self._work, name), model)
            started = True
        finally:
            if not started:
                for message in undo:
                    self.conversation.append(message)
                self.conversation.end_turn()
        return True

    def _request(self, user: dict[str, Any], model: str, options: dict[str, Any]) -> Request:
        """The request that sends ``user``'s message with the widget's settings."""
        return self.workspace.request(
            str(user.get("content", "")),
            model=model,
            client=self.client,
            conversation=self.conversation,
            system=self._panel.system_sent(),
            images=user.get("images") or (),
            options=options,
            think=self.think,
        )

    def _take_back(self) -> tuple[dict[str, Any] | None, tuple[dict[str, Any], ...]]:
        """The question to ask again, and the messages taken out of the conversation for it."""
        if self._list.ghost_question is not None:
            return dict(self._list.ghost_question), ()
        messages = self.conversation.messages
        if len(messages) < 2 or messages[-1].get("role") != "assistant":
            self._set_status("Nothing to retry yet.", "warn")
            return None, ()
        if messages[-2].get("role") != "user":
            self._set_status("The last answer does not follow a question of yours.", "warn")
            return None, ()
        answer = self.conversation.pop()
        user = self.conversation.pop()
        return user, (user, answer)

    def _launch(self, turn: Turn, model: str) -> None:
        """Show the question and a live bubble, and start the thread that streams the answer."""
        with self._lock:
            self._list.drop_ghost()
            self._turn, self._worker = turn, turn.thread
            self._show_rows()
            self.stop_button.disabled = False
            self._set_status(f"{model} is answering… (Stop ends it)", "info")
        try:
            turn.thread.start()
        except BaseException:
            with self._lock:
                self._turn = None
                self.stop_button.disabled = True
                turn.close()
                self._show_rows()
            raise

    def _work(self, turn: Turn) -> None:
        """The worker thread: stream the answer, then end the turn whatever happened."""
        outcome = Outcome(turn.request)
        crash: BaseException | None = None
        try:
            outcome = self.workspace.ask(
                turn.request,
                turn.view,
                conversation=self.conversation,
                stop=turn.stop,
                claimed=True,
            )
        except BaseException as error:  # a bug: say so in the widget, not only in a log
            crash = error
        finally:
            try:
                self._end_turn(turn, outcome, crash)
            finally:
                self.conversation.end_turn()

    def _end_turn(self, turn: Turn, outcome: Outcome, crash: BaseException | None) -> None:
        """The one way a turn ends: decide how (:func:`ending`), then show it."""
        end = ending(outcome, crash, turn.question)
        # Before the turn is cleared: the conversation's listeners take it as our own change.
        for message in end.restore:
            self.conversation.append(message)
        with self._lock:
            self._turn = None
            if self._closed:
                turn.close()
                return
            self.stop_button.disabled = True
            if end.dimmed:
                turn.user_row.widget.add_class("om-failed")
                ghost = [turn.user_row]
                if end.partial is not None:
                    ghost.append(Row(message_widget(end.partial, end.partial_note, failed=True)))
                self._list.keep_ghost(ghost, turn.question.message)
            elif not end.kept:
                close_tree(turn.user_row.widget)
            self._sync(reuse=[turn.user_row] if end.kept else (), note=end.note)
            if end.text_back is not None and not self.input.value:
                self.input.value = end.text_back
            close_tree(turn.view.bubble)
            self._set_status(end.status, end.kind)
        if crash is not None:
            self._show_traceback(crash)
