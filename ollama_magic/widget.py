"""The chat widget: a conversation with a local model, in a cell's output.

:class:`ChatWidget` is an ipywidgets composite (a ``VBox``, built like ipywidgets'
``interactive``): a message list, an input box with Send and Stop, a model picker, the system
prompt and a few options. Answers stream in a background thread, so the cell returns at once,
the kernel stays free for other cells, and Stop acts immediately.

It reads and writes the same :class:`~ollama_magic.conversation.Conversation` objects as
``%%ollama --chat --session NAME``, and takes the conversation's turn as the magic does: a chat
begun in a cell continues in the widget and back, one answer at a time. The answer streams
through the magic's own :class:`~ollama_magic.views.NotebookView`, into HTML widgets instead of
cell outputs. Everything the model writes is rendered by :mod:`ollama_magic.markdown` (raw HTML
escaped, ``javascript:`` links dropped), because an ipywidgets ``HTML`` widget runs whatever
event handlers it is given.

This module holds the layout and the public API; :mod:`ollama_magic.widget_turn` runs the
turns and :mod:`ollama_magic.widget_html` draws the messages.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec

import ipywidgets as w  # type: ignore[import-untyped]  # ipywidgets ships no type hints

from ollama_magic.conversation import DEFAULT_SESSION, Conversation, ConversationBusy
from ollama_magic.errors import OllamaError
from ollama_magic.images import image_base64
from ollama_magic.widget_controls import InputRow, OptionsPanel, Toolbar, think_label
from ollama_magic.widget_html import (
    Kind,
    MessageList,
    Row,
    close_tree,
    export_html,
    key_handling,
    status_html,
    stylesheet,
)
from ollama_magic.widget_turn import Turn, TurnTaking, one_line
from ollama_magic.workspace import Workspace, default_workspace

__all__ = ["ChatWidget"]

_P = ParamSpec("_P")


def _kernel_workspace() -> Workspace:
    """The kernel's workspace: the magics' (loading the extension in IPython, so that a widget
    and ``%%ollama --chat`` share sessions and settings), else the process's."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and "OllamaMagics" not in shell.magics_manager.registry:
        shell.extension_manager.load_extension("ollama_magic")
    return default_workspace()


def _handler(
    method: Callable[Concatenate[ChatWidget, _P], None],
) -> Callable[Concatenate[ChatWidget, _P], None]:
    """Run a handler so its errors show in the widget, not the log console or the caller.

    Like ``interactive.update``: inside ``with self.out:``; an :class:`OllamaError` is one line
    in the status line, anything else also leaves its traceback in the widget.
    """

    @functools.wraps(method)
    def run(self: ChatWidget, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        with self.out:
            try:
                method(self, *args, **kwargs)
            except Exception as error:
                self._set_status(one_line(error), "error")
                if not isinstance(error, OllamaError):
                    self._show_traceback(error)

    return run


class ChatWidget(TurnTaking, w.VBox):  # type: ignore[misc]  # VBox is untyped (Any)
    """A chat with a model served by Ollama, in a cell's output.

    Type in the box and press Send (or Shift+Enter, Ctrl+Enter, Cmd+Enter; Enter alone makes
    a new line). The answer streams in as rendered markdown; Stop ends it and keeps what was
    said. Export downloads the conversation as markdown (``chat-<session>.md``, as
    :meth:`to_markdown` writes it). The conversation is the one ``%%ollama --chat --session
    NAME`` uses, so cells and the widget can take turns on it (one answer at a time: while one
    streams, the other is refused with a message).

    Call :meth:`close` when done: until then the conversation (which tells the widget about
    changes) and ipywidgets (which keeps every open widget) hold it, displayed or not.

    Args:
        model: The model; default: the session's last model, the configured one
            (``%ollama config model=…``, ``$OLLAMA_MODEL``), else the newest local model
            that can chat (not an embedding model).
        session: A session name (default ``"default"``, as ``%%ollama --chat``) or a
            :class:`~ollama_magic.conversation.Conversation`.
        system: A system prompt for the session (kept in the conversation, as ``-s`` does).
        host: The Ollama server; default: the magics' host, ``$OLLAMA_HOST``, or localhost.
        think: Whether a thinking model thinks: True/False, "low", "medium", "high", "max",
            or None (the model's default).
        fps: Display updates per second while an answer streams.
        workspace: The settings, clients and conversations to use (default: the kernel's,
            shared with ``%%ollama``; outside IPython, the process's).
        **options: Ollama options (``temperature``, ``num_ctx``, ``seed``, ``top_p``, …).

    Raises:
        ValueError: ``think`` is not one of the values above.

    Example::

        from ollama_magic import ChatWidget
        chat = ChatWidget("llama3.2", session="notes", temperature=0.2)
        chat
    """

    def __init__(
        self,
        model: str | None = None,
        session: str | Conversation | None = None,
        system: str | None = None,
        host: str | None = None,
        *,
        think: bool | str | None = None,
        fps: float | None = None,
        workspace: Workspace | None = None,
        **options: Any,
    ) -> None:
        think = think_label(think)  # before any widget exists: nothing to clean up
        super().__init__()
        self.workspace = workspace if workspace is not None else _kernel_workspace()
        """Settings, clients and conversations, shared with the cells (the kernel's)."""
        # Guards the rows and the turn. Held only around our own widgets and reading the
        # conversation: changing the conversation calls other widgets' listeners.
        self._lock = threading.RLock()
        self._turn: Turn | None = None
        self._worker: threading.Thread | None = None  # the latest turn's thread
        self._closed = False
        self._fps = float(fps if fps is not None else self.workspace.fps)

        if isinstance(session, Conversation):
            self.conversation = session
        else:
            self.conversation = self.workspace.conversations[session or DEFAULT_SESSION]
        """The conversation shown and continued (shared with the magics)."""
        if system is not None:
            self.conversation.system = system or None

        self.client = self.workspace.client(host)
        """The connection to Ollama (the workspace's, shared with the cells)."""

        self._build(think, options)
        self._set_status(
            "Shift+Enter or Ctrl+Enter sends · Enter makes a new line "
            f"· session {self.conversation.name!r}",
            "info",
        )
        self.refresh_models(model)
        self.conversation.changed.append(self._conversation_changed)
        self._sync()

    # -- building ------------------------------------------------------------------------------

    def _build(self, think: str, options: dict[str, Any]) -> None:
        """Make the parts (see :mod:`ollama_magic.widget_controls`) and connect their handlers."""
        uid = "ollama-chat-" + secrets.token_hex(4)
        self.add_class("ollama-chat")
        self.add_class(uid)

        bar = self._toolbar = Toolbar(self.conversation.name)
        self.model_picker, self.refresh_button = bar.model_picker, bar.refresh_button
        self.retry_button, self.clear_button = bar.retry_button, bar.clear_button
        self.export_link = bar.export_link
        """The Export control: downloads the conversation as markdown (kept current)."""
        self.model_picker.observe(self._model_changed, names="value")
        self.refresh_button.on_click(self._refresh_clicked)
        self.retry_button.on_click(self._retry_clicked)
        self.clear_button.on_click(self._clear_clicked)

        panel = self._panel = OptionsPanel(self.conversation.system or "", think, options)
        self.settings = panel.widget
        """The system prompt and options, folded."""
        self.system_box = panel.system_box
        self.option_fields, self.think_picker = panel.option_fields, panel.think_picker

        self._list = MessageList()  # the rows shown, kept in step with the conversation
        self.message_list = self._list.box
        """The messages, oldest first (one widget each)."""
        scroll = w.Box([self.message_list])
        scroll.add_class("om-scroll")

        inputs = self._inputs = InputRow(send=self._send_awaited)
        self.input, self.upload = inputs.input, inputs.upload
        self.send_button, self.stop_button = inputs.send_button, inputs.stop_button
        self.send_button.on_click(self._send_clicked)
        self.stop_button.on_click(self._stop_clicked)

        self.status = w.HTML()
        """One line: tokens/s after an answer, or what went wrong."""
        self.status.add_class("om-status")
        self.out = w.Output()
        """Tracebacks of unexpected errors in the widget's own handlers."""
        self.children = [
            stylesheet(),
            bar.widget,
            self.settings,
            scroll,
            inputs.widget,
            self.status,
            self.out,
            key_handling(uid),
        ]

    # -- public API ------------------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation's messages (a copy), as ``/api/chat`` takes them."""
        return self.conversation.messages

    @property
    def busy(self) -> bool:
        """Whether an answer is streaming (or its thread is still finishing up)."""
        return self._turn is not None or bool(self._worker and self._worker.is_alive())

    @property
    def model(self) -> str:
        """The model the next message goes to."""
        return str(self.model_picker.value or "")

    @model.setter
    def model(self, name: str) -> None:
        self._toolbar.select_model(name)

    @property
    def options(self) -> dict[str, Any]:
        """The Ollama options the next message is sent with.

        Raises:
            ValueError: A field of the options panel does not hold a number.
        """
        return self._panel.options(self.workspace.options)

    @property
    def think(self) -> bool | str | None:
        """The ``think`` field sent (None: the model's default)."""
        return self._panel.think

    def to_markdown(self) -> str:
        """The conversation as markdown (for a file, or an issue)."""
        return self.conversation.to_markdown()

    def ask(self, text: str | None = None, images: Sequence[Any] | None = None) -> bool:
        """Send a message and stream the answer in the background.

        Args:
            text: The message; default: what is in the input box (which is then emptied), with
                the images uploaded in the widget.
            images: Images for a vision model (bytes, file paths, base64, PIL images or numpy
                arrays). The widget's uploads go only with the input box's text.

        Returns:
            False (and says why in the status line) when it was not sent: an answer is still
            streaming, there is nothing to send, or an option is invalid.
        """
        from_input = text is None
        if text is None:
            text = str(self.input.value)
        text = text.strip()
        uploaded = from_input and images is None
        if uploaded:
            images = [bytes(item["content"]) for item in self.upload.value]
        if not text and not images:
            self._set_status("Nothing to send: type a message first.", "warn")
            return False
        # Base64 in the message, as the magics send them: the conversation stays plain JSON.
        user: dict[str, Any] = {"role": "user", "content": text}
        if images:
            user["images"] = [image_base64(image) for image in images]
        started = self._begin(user, from_input=from_input)
        if started and from_input:
            self.input.value = ""
        if started and uploaded and self.upload.value:
            self.upload.value = ()
        return started

    def retry(self) -> bool:
        """Ask again: the failed message, else the last question (its answer is replaced).

        Returns:
            False when there is nothing to retry or an answer is streaming.
        """
        return self._begin(None)

    def stop(self) -> None:
        """Stop the answer now; what arrived is kept, marked as stopped."""
        turn = self._turn
        if turn is not None and not turn.stop.cancelled:
            self._set_status("Stopping…", "info")  # first: the turn's end says how it went
            turn.stop.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current answer is over; False if ``timeout`` seconds passed first."""
        thread = self._worker
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def clear(self) -> None:
        """Stop any answer and forget the conversation (the system prompt stays)."""
        self.stop()
        self.wait(10)
        try:
            with self.conversation.turn():
                self.conversation.reset(keep_system=True)
        except ConversationBusy:
            self._set_status("Not cleared: the session is busy with another answer.", "warn")
            return
        self._set_status("Cleared.", "info")

    def refresh_models(self, model: str | None = None) -> list[str]:
        """Fill the model picker from ``/api/tags``; select ``model`` (or keep the current).

        Returns:
            The names listed. If the server cannot be reached, the picker keeps the chosen
            model and the status line says what went wrong.
        """
        names: list[str] = []
        error: OllamaError | None = None
        try:
            names = [m.name for m in self.client.list()]
        except OllamaError as exc:
            error = exc
        wanted = model or self.model or self._default_model(bool(names))
        self._toolbar.select_model(wanted, names)
        if error is not None:
            self._set_status(f"Could not list the models: {one_line(error)}", "error")
        return names

    def close(self) -> None:
        """Stop the answer, wait for its thread, and close every part of the widget.

        The widget stops listening to its conversation, and every widget it made (layouts
        and styles too) closes its comm, so nothing is left in the kernel or the frontend.
        """
        if getattr(self, "_closed", True):  # closed, or never built (a refused argument)
            return
        self.stop()
        self.wait(10)
        self._closed = True
        self._inputs.close()
        with contextlib.suppress(ValueError):
            self.conversation.changed.remove(self._conversation_changed)
        with self._lock:
            for child in [*self.children, self._list.empty, *(r.widget for r in self._list.ghost)]:
                close_tree(child)
        self.layout.close()
        super().close()

    # -- handlers --------------------------------------------------------------------------------

    @_handler
    def _send_clicked(self, _: Any) -> None:
        self._inputs.send_clicked()  # now, or once the box's text has come

    @_handler
    def _send_awaited(self) -> None:
        self.ask()

    @_handler
    def _stop_clicked(self, _: Any) -> None:
        self.stop()

    @_handler
    def _retry_clicked(self, _: Any) -> None:
        self.retry()

    @_handler
    def _clear_clicked(self, _: Any) -> None:
        self.clear()

    @_handler
    def _refresh_clicked(self, _: Any) -> None:
        names = self.refresh_models()
        if names:
            self._set_status(f"{len(names)} models on {self.client.host}.", "info")

    def _model_changed(self, change: dict[str, Any]) -> None:
        """The box's placeholder names the model that will answer."""
        name = change.get("new") or "the model"
        self.input.placeholder = f"Message {name} (Shift+Enter to send)"

    # -- models ----------------------------------------------------------------------------------

    def _default_model(self, listed: bool) -> str:
        """The session's model, the configured one, else the newest that can chat (if listed)."""
        configured = self.workspace.model
        if self.conversation.model or configured or not listed:
            return self.conversation.model or configured
        try:
            return self.workspace.default_model(self.client)  # the cells' choice, kept
        except OllamaError:
            return ""  # only embedding models: sending says what to do

    # -- the message list ------------------------------------------------------------------------

    @_handler
    def _redraw(self) -> None:
        """Show the conversation as it is now (whoever changed it must not see our errors)."""
        with self._lock:
            self._list.drop_ghost()  # a failed turn shown last would now be out of place
            self._sync()

    def _sync(self, reuse: Sequence[Row] = (), note: str = "") -> None:
        """Show the conversation as it is: its messages (see :meth:`MessageList.sync`), its
        system prompt in the box, and its markdown behind the Export link."""
        with self._lock:
            self._list.sync(self.conversation.messages, reuse, note)
            self._panel.show_system(self.conversation.system or "")
            self._show_rows()
            # The download holds the conversation as it is now (sent only when it changed).
            self.export_link.value = export_html(self.conversation.name, self.to_markdown())

    def _set_status(self, text: str, kind: Kind = "info") -> None:
        """Say ``text`` in the status line (one line, coloured by ``kind``)."""
        if not self._closed:
            self.status.value = status_html(text, kind)

    def _show_traceback(self, error: BaseException) -> None:
        """An unexpected error's traceback, in the widget (handlers run outside any cell)."""
        if not self._closed:
            self.out.append_stderr("".join(traceback.format_exception(error)))
