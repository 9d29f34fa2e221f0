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
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import importlib.resources
import re
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ipywidgets as w

from ollama_magic.conversation import DEFAULT_SESSION, Conversation, ConversationBusy
from ollama_magic.core import Outcome, Request, footer_parts
from ollama_magic.errors import OllamaError
from ollama_magic.images import image_base64, thumbnails_html
from ollama_magic.markdown import make_markdown, render_markdown
from ollama_magic.render import Bundle, DisplayHandle, escape
from ollama_magic.transport import Cancellation
from ollama_magic.views import NotebookView, tool_call_html
from ollama_magic.workspace import Workspace, default_workspace

__all__ = ["ChatWidget"]

F = TypeVar("F", bound=Callable[..., Any])

#: Options with their own field in the options panel, and how their text is read.
_PANEL_OPTIONS: dict[str, type] = {"temperature": float, "num_ctx": int, "seed": int}
#: The think picker: each label and the ``think`` value it sends (None: the model decides).
_THINK: dict[str, bool | str | None] = {
    "model default": None,
    "on": True,
    "off": False,
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
}

#: How long a click on Send waits for the box's text when the box is still empty here (s).
_TEXT_GRACE = 0.5

_EMPTY = '<div class="om-empty">No messages yet. Say hello below.</div>'

# What people type keeps its line breaks (Enter makes a new line in the box); model text is
# plain markdown, where a single newline is a space.
_TYPED = make_markdown()
_TYPED.options["breaks"] = True


@functools.cache
def _resource(name: str) -> str:
    """A file shipped next to this module (the widget's CSS and key handling)."""
    return importlib.resources.files("ollama_magic").joinpath(name).read_text("utf-8")


def _think_label(think: bool | str | None) -> str:
    """The picker label for a ``think`` value (or label).

    Raises:
        ValueError: Not a value the picker offers.
    """
    if isinstance(think, str) and think.lower() in _THINK:
        return think.lower()
    for label, value in _THINK.items():
        if value is think:  # True is not 1 here
            return label
    raise ValueError(
        f"think must be True, False, None or one of {', '.join(_THINK)}; not {think!r}"
    )


def _kernel_workspace() -> Workspace:
    """The kernel's workspace: the magics' (loading the extension in IPython, so that a widget
    and ``%%ollama --chat`` share sessions and settings), else the process's."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and "OllamaMagics" not in shell.magics_manager.registry:
        shell.extension_manager.load_extension("ollama_magic")
    return default_workspace()


def _one_line(error: BaseException) -> str:
    """An error as one line: what went wrong, then what to do."""
    if isinstance(error, OllamaError):
        text = f"{error.message} — {error.hint}" if error.hint else error.message
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def _handler(method: F) -> F:
    """Run a handler so its errors show in the widget, not the log console or the caller.

    Like ``interactive.update``: inside ``with self.out:``; an :class:`OllamaError` is one line
    in the status line, anything else also leaves its traceback in the widget.
    """

    @functools.wraps(method)
    def run(self: ChatWidget, *args: Any) -> Any:
        with self.out:
            try:
                return method(self, *args)
            except Exception as error:
                self._set_status(_one_line(error), "error")
                if not isinstance(error, OllamaError):
                    self._show_traceback(error)
        return None

    return run  # type: ignore[return-value]


# -- how messages look ---------------------------------------------------------------------


def message_html(message: dict[str, Any], note: str = "", *, bad: bool = False) -> str:
    """One message as safe HTML: its text as markdown, thinking folded, tool calls compact."""
    role = message.get("role")
    label = {"user": "You", "tool": f"Tool {message.get('tool_name') or ''}".strip()}
    parts = [f'<div class="om-role">{escape(label.get(str(role), "Assistant"))}</div>']
    if role == "tool":
        result = " ".join(str(message.get("content") or "").split())
        result = result if len(result) <= 200 else result[:199] + "…"
        parts.append(f'<div class="ollama-magic-tool">↩ {escape(result)}</div>')
    else:
        thinking = str(message.get("thinking") or "")
        if thinking:
            summary = f"Thinking ({len(thinking.split())} words)"
            parts.append(
                f'<details class="ollama-magic-thinking"><summary>{summary}</summary>'
                f"{render_markdown(thinking)}</details>"
            )
        if message.get("images"):
            parts.append(thumbnails_html(list(message["images"])))
        content = str(message.get("content") or "")
        if content:
            parts.append(render_markdown(content, _TYPED if role == "user" else None))
        for call in message.get("tool_calls") or ():
            function = call.get("function", {}) if isinstance(call, dict) else {}
            arguments = function.get("arguments")
            arguments = arguments if isinstance(arguments, dict) else {}
            parts.append(tool_call_html(str(function.get("name", "?")), arguments))
    if note:
        parts.append(f'<div class="om-note{" om-bad" if bad else ""}">{escape(note)}</div>')
    return "".join(parts)


def _message_widget(message: dict[str, Any], note: str = "", *, failed: bool = False) -> w.HTML:
    widget = w.HTML(message_html(message, note, bad=failed))
    role = {"user": "om-user", "tool": "om-tool"}.get(str(message.get("role")), "om-assistant")
    for name in ("om-msg", role, *(["om-failed"] if failed else [])):
        widget.add_class(name)
    return widget


def _export_html(session: str, markdown: str) -> str:
    """The Export control: a link that downloads ``markdown`` as ``chat-<session>.md``.

    The markdown holds model output, so it reaches the page only as base64 inside a
    ``data:`` URI, never as markup; every attribute written is escaped. An empty conversation
    gives a link that goes nowhere, shown disabled.
    """
    name = re.sub(r"[^\w.-]+", "_", session).strip("._") or "chat"
    filename = f"chat-{name}.md"
    label = '<i class="fa fa-download"></i>Export'
    if not markdown:
        title = f"Export session {session!r} as markdown: nothing to export yet"
        return (
            f'<a class="jupyter-button om-export om-disabled" aria-disabled="true" '
            f'title="{escape(title)}">{label}</a>'
        )
    payload = base64.b64encode(markdown.encode("utf-8")).decode("ascii")
    title = f"Export: download session {session!r} as markdown ({filename})"
    return (
        f'<a class="jupyter-button om-export" download="{escape(filename)}" '
        f'href="data:text/markdown;charset=utf-8;base64,{payload}" '
        f'title="{escape(title)}">{label}</a>'
    )


def _close_tree(widget: w.Widget) -> None:
    """Close a widget, the widgets inside it, and its layout and style (each has a comm)."""
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, w.Widget):
            part.close()
    widget.close()


# -- the answer while it streams -------------------------------------------------------------


class _Output:
    """One output of the bubble: an HTML widget whose value is replaced in place."""

    def __init__(self, widget: w.HTML) -> None:
        self.widget = widget

    def update(self, bundle: Bundle, metadata: dict[str, Any]) -> None:
        self.widget.value = bundle.get("text/html", "")


class _BubbleView(NotebookView):
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
            _close_tree(self._waiting)
            self._waiting = None
        return _Output(widget)

    def finish(self, outcome: Outcome) -> None:
        """Nothing to paint: the end of the turn replaces the bubble by the message."""


# -- the widget ------------------------------------------------------------------------------


@dataclass
class _Row:
    """A widget in the message list and the conversation message it shows (None: not one)."""

    widget: w.Widget
    message: dict[str, Any] | None = None


@dataclass
class _Turn:
    """One question and its answer while it streams."""

    user_row: _Row
    """The question, shown; its message is exactly what the conversation will keep."""
    view: _BubbleView
    from_input: bool
    undo: list[dict[str, Any]]
    """The question and answer taken out to ask again; put back if the retry fails."""
    stop: Cancellation = field(default_factory=Cancellation)
    thread: threading.Thread | None = None


class ChatWidget(w.VBox):
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
        magics: The ``OllamaMagics`` whose conversations, client and defaults to use (default:
            the running shell's; outside IPython the widget keeps its own).
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
        think_label = _think_label(think)  # before any widget exists: nothing to clean up
        super().__init__()
        self.workspace = workspace if workspace is not None else _kernel_workspace()
        """Settings, clients and conversations, shared with the cells (the kernel's)."""
        # Guards the rows and the turn. Held only around our own widgets and reading the
        # conversation: changing the conversation calls other widgets' listeners.
        self._lock = threading.RLock()
        self._turn: _Turn | None = None
        self._worker: threading.Thread | None = None  # the latest turn's thread
        self._closed = False
        self._rows: list[_Row] = []
        self._ghost: list[_Row] = []  # a question (and partial answer) not in the conversation
        self._ghost_user: dict[str, Any] | None = None
        self._fps = float(fps if fps is not None else self.workspace.fps)
        self._awaiting_text: threading.Timer | None = None  # a click on Send, box still empty

        if isinstance(session, Conversation):
            self.conversation = session
        else:
            self.conversation = self.workspace.conversations[session or DEFAULT_SESSION]
        """The conversation shown and continued (shared with the magics)."""
        if system is not None:
            self.conversation.system = system or None
        self._system_shown = self.conversation.system or ""  # the box, as last synced

        self.client = self.workspace.client(host)
        """The connection to Ollama (the workspace's, shared with the cells)."""

        self._build(think_label, options)
        self._set_status(
            "Shift+Enter or Ctrl+Enter sends · Enter makes a new line "
            f"· session {self.conversation.name!r}",
            "info",
        )
        self.refresh_models(model)
        self.conversation.changed.append(self._conversation_changed)
        self._sync()

    # -- building ------------------------------------------------------------------------------

    def _build(self, think_label: str, options: dict[str, Any]) -> None:
        uid = "ollama-chat-" + secrets.token_hex(4)
        self.add_class("ollama-chat")
        self.add_class(uid)

        self.model_picker = w.Dropdown(description="Model", layout=w.Layout(width="20em"))
        self.model_picker.observe(self._model_changed, names="value")
        self.refresh_button = w.Button(
            icon="refresh", tooltip="List the models again", layout=w.Layout(width="2.6em")
        )
        self.refresh_button.on_click(self._refresh_clicked)
        self.retry_button = w.Button(
            description="Retry", icon="redo", tooltip="Ask again for the last answer"
        )
        self.retry_button.on_click(self._retry_clicked)
        self.clear_button = w.Button(
            description="Clear", icon="trash", tooltip="Forget this conversation (keeps the system)"
        )
        self.clear_button.on_click(self._clear_clicked)
        for button in (self.retry_button, self.clear_button):
            button.layout.width = "6.5em"
        self.export_link = w.HTML()
        """The Export control: downloads the conversation as markdown (kept current)."""
        self.export_link.add_class("om-export-box")
        title = w.HTML(
            f'<span class="om-title"><i class="fa fa-comments"></i> '
            f"{escape(self.conversation.name)}</span>"
        )
        spacer = w.Box()
        spacer.add_class("om-spacer")
        parts = (title, self.model_picker, self.refresh_button, spacer, self.retry_button)
        toolbar = w.HBox([*parts, self.export_link, self.clear_button])
        toolbar.add_class("om-toolbar")

        # The options panel: empty fields mean "the model's default" (nothing is sent).
        self.system_box = w.Textarea(
            value=self._system_shown,
            placeholder="System prompt, e.g. You are a concise assistant.",
            description="System",
            rows=2,
            layout=w.Layout(width="100%"),
        )
        self._extra_options = {k: v for k, v in options.items() if k not in _PANEL_OPTIONS}
        self.option_fields: dict[str, w.Text] = {
            name: w.Text(
                value="" if options.get(name) is None else str(options[name]),
                placeholder="default",
                description=name,
                style={"description_width": "initial"},
                layout=w.Layout(width="12.5em"),
            )
            for name in _PANEL_OPTIONS
        }
        self.think_picker = w.Dropdown(
            options=list(_THINK),
            value=think_label,
            description="think",
            style={"description_width": "initial"},
            layout=w.Layout(width="13em"),
        )
        fields = w.HBox([*self.option_fields.values(), self.think_picker])
        fields.add_class("om-options")
        extra = ", ".join(f"{k}={v!r}" for k, v in self._extra_options.items())
        extra_note = w.HTML(
            f'<div class="om-note">Also sent: {escape(extra)}</div>' if extra else ""
        )
        self.settings = w.Accordion(
            children=[w.VBox([self.system_box, fields, extra_note])],
            titles=("System prompt and options",),
        )

        self.message_list = w.VBox()
        """The messages, oldest first (one widget each)."""
        self.message_list.add_class("om-list")
        self._empty = w.HTML(_EMPTY)
        scroll = w.Box([self.message_list])
        scroll.add_class("om-scroll")

        self.input = w.Textarea(
            placeholder="Message (Shift+Enter to send)",
            rows=3,
            # Synced when it changes (on blur, or by the Send shortcut), not per keystroke:
            # every keystroke would otherwise be a message to the kernel.
            continuous_update=False,
        )
        self.input.add_class("om-input")
        self.input.observe(self._input_changed, names="value")
        self.send_button = w.Button(description="Send", icon="paper-plane", tooltip="Shift+Enter")
        self.send_button.add_class("om-send")
        self.send_button.on_click(self._send_clicked)
        self.stop_button = w.Button(
            description="Stop", icon="stop", disabled=True, tooltip="Stop the answer"
        )
        self.stop_button.add_class("om-stop")
        self.stop_button.on_click(self._stop_clicked)
        self.upload = w.FileUpload(
            accept="image/*", multiple=True, description="Image", tooltip="For vision models"
        )
        buttons = w.VBox([self.send_button, self.stop_button, self.upload])
        buttons.add_class("om-buttons")
        input_row = w.HBox([self.input, buttons])
        input_row.add_class("om-inputrow")

        self.status = w.HTML()
        """One line: tokens/s after an answer, or what went wrong."""
        self.status.add_class("om-status")
        self.out = w.Output()
        """Tracebacks of unexpected errors in the widget's own handlers."""
        keys = w.Output(layout=w.Layout(display="none"))
        keys.outputs = (
            {
                "output_type": "display_data",
                "data": {
                    "application/javascript": _resource("widget.js").replace("__CLASS__", uid)
                },
                "metadata": {},
            },
        )
        self.children = [
            w.HTML(f"<style>{_resource('widget.css')}</style>"),
            toolbar,
            self.settings,
            scroll,
            input_row,
            self.status,
            self.out,
            keys,
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
        self._select_model(name)

    @property
    def options(self) -> dict[str, Any]:
        """The Ollama options the next message is sent with.

        Raises:
            ValueError: A field of the options panel does not hold a number.
        """
        options = {**self.workspace.options, **self._extra_options}
        for name, kind in _PANEL_OPTIONS.items():
            text = self.option_fields[name].value.strip()
            if not text:
                continue
            try:
                options[name] = kind(text)
            except ValueError:
                noun = "a whole number" if kind is int else "a number"
                raise ValueError(f"{name} must be {noun}, not {text!r}") from None
        return options

    @property
    def think(self) -> bool | str | None:
        """The ``think`` field sent (None: the model's default)."""
        return _THINK[str(self.think_picker.value)]

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
        text = (self.input.value if from_input else text).strip()
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
        self._select_model(wanted, names)
        if error is not None:
            self._set_status(f"Could not list the models: {_one_line(error)}", "error")
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
        with self._lock:
            awaiting, self._awaiting_text = self._awaiting_text, None
        if awaiting is not None:
            awaiting.cancel()
        with contextlib.suppress(ValueError):
            self.conversation.changed.remove(self._conversation_changed)
        with self._lock:
            for child in [*self.children, self._empty, *(r.widget for r in self._ghost)]:
                _close_tree(child)
        self.layout.close()
        super().close()

    # -- handlers --------------------------------------------------------------------------------

    @_handler
    def _send_clicked(self, _: Any) -> None:
        # The box's text and the click come on different comms, which the kernel may handle
        # on different threads: ipykernel 7 sends a comm's messages to the subshell it last
        # published from, so the box's go to the frontend's widget subshell and the button's
        # (it never publishes) to the main shell. The click can be handled first, so an empty
        # box waits a moment for its text before saying there is nothing to send.
        with self._lock:
            if self._closed or self.input.value.strip() or self.upload.value:
                awaiting = None
            elif self._awaiting_text is None:
                awaiting = threading.Timer(
                    _TEXT_GRACE, contextvars.copy_context().run, args=(self._text_late,)
                )
                awaiting.daemon = True
                self._awaiting_text = awaiting
            else:
                return  # clicked again while waiting
        if awaiting is None:
            self.ask()
        else:
            awaiting.start()

    def _input_changed(self, change: dict[str, Any]) -> None:
        """The box's text arrived: send it if Send was clicked before it came."""
        if not str(change.get("new") or "").strip():
            return
        with self._lock:
            awaiting, self._awaiting_text = self._awaiting_text, None
        if awaiting is not None:
            awaiting.cancel()
            self._send_awaited()

    @_handler
    def _send_awaited(self) -> None:
        self.ask()

    @_handler
    def _text_late(self) -> None:
        """No text came in time after a click on Send: say so (ask() does)."""
        with self._lock:
            if self._awaiting_text is not threading.current_thread():
                return  # the text came meanwhile, or the widget closed
            self._awaiting_text = None
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
        name = change.get("new") or "the model"
        self.input.placeholder = f"Message {name} (Shift+Enter to send)"

    # -- models ----------------------------------------------------------------------------------

    def _default_model(self, listed: bool) -> str:
        configured = self.workspace.model
        if self.conversation.model or configured or not listed:
            return self.conversation.model or configured
        try:
            return self.workspace.default_model(self.client)  # the cells' choice, kept
        except OllamaError:
            return ""  # only embedding models: sending says what to do

    def _select_model(self, name: str, names: list[str] | None = None) -> None:
        names = list(names if names is not None else self.model_picker.options)
        if name and name not in names:
            if f"{name}:latest" in names:
                name = f"{name}:latest"  # the same model, as /api/tags spells it
            else:
                names.insert(0, name)  # not listed (yet): sending will say so
        self.model_picker.options = names
        self.model_picker.value = name or (names[0] if names else None)

    # -- turns -----------------------------------------------------------------------------------

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
        undo: list[dict[str, Any]] = []
        started = False
        try:
            if user is None:
                user, undo = self._take_back()
                if user is None:
                    return False
            self._launch(user, undo, from_input, model, options)
            started = True
        finally:
            if not started:
                for message in undo:
                    self.conversation.append(message)
                self.conversation.end_turn()
        return True

    def _take_back(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The question to ask again, and the messages taken out of the conversation for it."""
        if self._ghost_user is not None:
            return dict(self._ghost_user), []
        messages = self.conversation.messages
        if len(messages) < 2 or messages[-1].get("role") != "assistant":
            self._set_status("Nothing to retry yet.", "warn")
            return None, []
        if messages[-2].get("role") != "user":
            self._set_status("The last answer does not follow a question of yours.", "warn")
            return None, []
        answer = self.conversation.pop()
        user = self.conversation.pop()
        return user, [user, answer]

    def _launch(
        self,
        user: dict[str, Any],
        undo: list[dict[str, Any]],
        from_input: bool,
        model: str,
        options: dict[str, Any],
    ) -> None:
        """Show the question and a live bubble, and start the thread that streams the answer."""
        system = self.system_box.value.strip()
        request = self.workspace.request(
            str(user.get("content", "")),
            model=model,
            client=self.client,
            conversation=self.conversation,
            # Only a prompt typed here replaces the session's: a cell's -s must survive.
            system=system if system != self._system_shown else None,
            images=user.get("images") or (),
            options=options,
            think=self.think,
        )
        message = request.body["messages"][-1]  # exactly what the conversation will keep
        turn = _Turn(
            _Row(_message_widget(message), message), _BubbleView(self._fps), from_input, undo
        )
        # A copy of the context: print/display from the thread land in this cell.
        turn.thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._work, turn, request),
            name=f"ollama-chat:{self.conversation.name}",
            daemon=True,
        )
        with self._lock:
            self._drop_ghost()
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
                _close_tree(turn.user_row.widget)
                _close_tree(turn.view.bubble)
                self._show_rows()
            raise

    def _work(self, turn: _Turn, request: Request) -> None:
        """The worker thread: stream the answer, then settle the turn whatever happened."""
        outcome = Outcome(request)
        crash: BaseException | None = None
        try:
            outcome = self.workspace.ask(
                request, turn.view, conversation=self.conversation, stop=turn.stop, claimed=True
            )
        except BaseException as error:  # a bug: say so in the widget, not only in a log
            crash = error
        finally:
            try:
                self._end_turn(turn, outcome, crash)
            finally:
                self.conversation.end_turn()

    def _end_turn(self, turn: _Turn, outcome: Outcome, crash: BaseException | None) -> None:
        """Replace the live bubble by the finished message; say how it went."""
        error = crash or outcome.error
        # As ask() records it: a complete answer, or a stopped one that said something.
        recorded = error is None and bool(outcome.text or outcome.result is not None)
        if turn.undo and not recorded:
            for message in turn.undo:  # a retry that did not answer: the old answer comes back
                self.conversation.append(message)
        with self._lock:
            self._turn = None
            if self._closed:
                _close_tree(turn.user_row.widget)
                _close_tree(turn.view.bubble)
                return
            self.stop_button.disabled = True
            if recorded:
                self._sync(reuse=[turn.user_row], note="■ stopped" if outcome.stopped else "")
                status, kind = " · ".join(footer_parts(outcome)), "ok"
                if outcome.stopped:
                    kind = "info"
            elif turn.undo or not (error or outcome.thinking):
                _close_tree(turn.user_row.widget)
                self._sync()
                if error is not None:
                    status, kind = f"✖ {_one_line(error)} (the previous answer is kept)", "error"
                elif turn.undo:
                    status, kind = "Stopped; the previous answer is kept.", "info"
                else:  # stopped before a word: as if never asked; the text goes back to the box
                    if turn.from_input and not self.input.value:
                        self.input.value = str(turn.user_row.message["content"])  # type: ignore[index]
                    status, kind = "Stopped before the answer began.", "info"
            else:
                # Keep what the user saw, dimmed: it is not in the conversation (Retry sends
                # the question again). A stop while thinking keeps the reasoning shown so far.
                turn.user_row.widget.add_class("om-failed")
                self._ghost, self._ghost_user = [turn.user_row], turn.user_row.message
                partial = {"role": "assistant", "content": outcome.text}
                if outcome.thinking:
                    partial["thinking"] = outcome.thinking
                if error is not None:
                    note = "✖ failed: not kept"
                    status, kind = f"✖ {_one_line(error)} (Retry sends it again)", "error"
                else:
                    note = "■ stopped while thinking: not kept"
                    status, kind = (
                        "Stopped while the model was thinking (Retry asks again).",
                        "info",
                    )
                if outcome.text or outcome.thinking:
                    self._ghost.append(_Row(_message_widget(partial, note, failed=True)))
                self._show_rows()
            _close_tree(turn.view.bubble)
            self._set_status(status, kind)
        if crash is not None:
            self._show_traceback(crash)

    # -- the message list ------------------------------------------------------------------------

    def _conversation_changed(self, conversation: Conversation) -> None:
        turn = self._turn
        if self._closed or (turn is not None and turn.thread is threading.current_thread()):
            return  # our own answer being recorded: the end of the turn redraws once
        self._redraw()

    @_handler
    def _redraw(self) -> None:
        """Show the conversation as it is now (whoever changed it must not see our errors)."""
        with self._lock:
            self._drop_ghost()  # a failed turn shown last would now be out of place
            self._sync()

    def _sync(self, reuse: Sequence[_Row] = (), note: str = "") -> None:
        """Show the conversation's messages: keep the widgets of unchanged ones, add the rest.

        ``reuse`` offers rows already drawn for messages that are now in the conversation;
        ``note`` goes under the last message when it is drawn anew (an answer that stopped).
        """
        with self._lock:
            target = [m for m in self.conversation.messages if m.get("role") != "system"]
            keep = 0
            while (
                keep < min(len(self._rows), len(target))
                and self._rows[keep].message == target[keep]
            ):
                keep += 1
            spare = list(reuse)
            rows = self._rows[:keep]
            for index, message in enumerate(target[keep:], keep):
                match = next((r for r in spare if r.message == message), None)
                if match is not None:
                    spare.remove(match)
                    rows.append(match)
                else:
                    last = index == len(target) - 1
                    rows.append(_Row(_message_widget(message, note if last else ""), message))
            for row in [*self._rows[keep:], *spare]:
                if all(row is not r for r in rows):
                    _close_tree(row.widget)
            self._rows = rows
            # The system prompt as the session has it, unless the box holds an unsent edit.
            system = self.conversation.system or ""
            if self.system_box.value.strip() == self._system_shown:
                self.system_box.value = system
            self._system_shown = system
            self._show_rows()
            # The download holds the conversation as it is now (sent only when it changed).
            self.export_link.value = _export_html(self.conversation.name, self.to_markdown())

    def _show_rows(self) -> None:
        widgets: list[w.Widget] = [r.widget for r in [*self._rows, *self._ghost]]
        turn = self._turn
        if turn is not None:
            widgets += [turn.user_row.widget, turn.view.bubble]
        if tuple(widgets or [self._empty]) != tuple(self.message_list.children):
            self.message_list.children = tuple(widgets or [self._empty])

    def _drop_ghost(self) -> None:
        for row in self._ghost:
            _close_tree(row.widget)
        self._ghost, self._ghost_user = [], None

    def _set_status(self, text: str, kind: str = "info") -> None:
        if not self._closed:
            self.status.value = f'<span class="om-{kind}">{escape(" ".join(text.split()))}</span>'

    def _show_traceback(self, error: BaseException) -> None:
        """An unexpected error's traceback, in the widget (handlers run outside any cell)."""
        if not self._closed:
            self.out.append_stderr("".join(traceback.format_exception(error)))
