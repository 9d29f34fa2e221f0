"""The chat widget: a conversation with a local model, in a cell's output.

:class:`ChatWidget` is an ipywidgets composite (a ``VBox``, built like ipywidgets'
``interactive``): a message list, an input box with Send and Stop, a model picker, the system
prompt and a few options. Answers stream in a background thread, so the cell returns at once,
the kernel stays free for other cells, and Stop acts immediately.

It reads and writes the same :class:`~ollama_magic.conversation.Conversation` objects as
``%%ollama --chat --session NAME``: a chat begun in a cell continues in the widget and back.
Everything the model writes is rendered by :mod:`ollama_magic.markdown` (raw HTML escaped,
``javascript:`` links dropped), because an ipywidgets ``HTML`` widget runs whatever event
handlers it is given.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import html
import json
import logging
import os
import secrets
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ipywidgets as w

from ollama_magic.client import Client
from ollama_magic.conversation import DEFAULT_SESSION, Conversation, Conversations
from ollama_magic.core import Outcome, Request, StopSignal, ask, build_request, footer_parts
from ollama_magic.errors import OllamaError
from ollama_magic.images import image_base64
from ollama_magic.markdown import IncrementalMarkdown, make_markdown, render_markdown

__all__ = ["ChatWidget", "open_chat"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Options with their own field in the options panel, and how their text is read.
_PANEL_OPTIONS: dict[str, type] = {"temperature": float, "num_ctx": int, "seed": int}
_THINK_CHOICES = [
    ("model default", "default"),
    ("on", "on"),
    ("off", "off"),
    ("low", "low"),
    ("medium", "medium"),
    ("high", "high"),
]
_THINK_VALUES: dict[str, bool | str | None] = {
    "default": None,
    "on": True,
    "off": False,
    "low": "low",
    "medium": "medium",
    "high": "high",
}

# Conversations for widgets made outside IPython (plain Python, tests without a shell): names
# still mean the same conversation within the process.
_LOCAL_CONVERSATIONS = Conversations()

# Conversations with an answer streaming into them. Two turns at once on one conversation
# would each record themselves over the other, so a second widget on it must wait.
_BUSY: set[int] = set()
_BUSY_LOCK = threading.Lock()


def _shell() -> Any:
    """The running IPython shell, or None (IPython may not even be imported)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return get_ipython()


def _shell_magics() -> Any:
    """The shell's ``OllamaMagics`` (loading the extension if needed), or None outside IPython."""
    shell = _shell()
    if shell is None:
        return None
    registry = shell.magics_manager.registry
    if "OllamaMagics" not in registry:
        shell.extension_manager.load_extension("ollama_magic")
    return registry.get("OllamaMagics")


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _one_line(error: BaseException) -> str:
    """An error as one line: what went wrong, then what to do."""
    if isinstance(error, OllamaError):
        text = f"{error.message} — {error.hint}" if error.hint else error.message
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def _handler(method: F) -> F:
    """Run a button or key handler so its errors show in the widget, not the log console.

    Like ``interactive.update``: inside ``with self.out:``, and ``showtraceback()`` for the
    unexpected ones; an :class:`OllamaError` is one line in the status line.
    """

    @functools.wraps(method)
    def run(self: ChatWidget, *args: Any) -> Any:
        with self.out:
            try:
                return method(self, *args)
            except OllamaError as error:
                self._set_status(_one_line(error), "error")
            except Exception as error:
                self._set_status(_one_line(error), "error")
                shell = _shell()
                if shell is None:
                    log.exception("chat widget handler failed")
                else:
                    shell.showtraceback()
        return None

    return run  # type: ignore[return-value]


# -- how messages look ---------------------------------------------------------------------

_CSS = """
<style>
.ollama-chat {
  --om-accent: var(--jp-brand-color1, #1976d2);
  --om-user-bg: color-mix(in srgb, var(--om-accent) 12%, var(--jp-layout-color1, #fff));
  --om-bot-bg: var(--jp-layout-color2, #f3f4f6);
  --om-muted: var(--jp-ui-font-color2, #6b7280);
  --om-border: var(--jp-border-color2, #e0e0e0);
  max-width: 52rem;
  border: 1px solid var(--om-border);
  border-radius: 10px;
  padding: 8px 10px 6px;
  gap: 6px;
  background: var(--jp-layout-color1, #fff);
  font-size: var(--jp-content-font-size1, 14px);
}
.ollama-chat .om-toolbar { align-items: center; gap: 4px; }
.ollama-chat .om-toolbar .om-title { font-weight: 600; margin-right: 8px; }
.ollama-chat .om-toolbar .om-spacer { flex: 1 1 auto; }
.ollama-chat .om-scroll {
  display: flex; flex-direction: column-reverse;  /* keeps the newest text in view */
  max-height: 32rem; overflow-y: auto; overflow-x: hidden;
  border-top: 1px solid var(--om-border); border-bottom: 1px solid var(--om-border);
  padding: 4px 0;
}
.ollama-chat .om-list { gap: 10px; padding: 6px 4px; flex-shrink: 0; }
.ollama-chat .om-empty { color: var(--om-muted); font-style: italic; padding: 1.5em 0.5em; }
.ollama-chat .om-msg {
  border-radius: 12px; padding: 2px 14px; line-height: 1.55;
  max-width: 88%; width: fit-content; overflow-wrap: anywhere; margin: 0;
  color: var(--jp-content-font-color1, #1f2328);
}
.ollama-chat .om-msg .widget-html-content { line-height: 1.55; }
.ollama-chat .om-user {
  align-self: flex-end; background: var(--om-user-bg);
  border-bottom-right-radius: 4px;
}
.ollama-chat .om-assistant {
  align-self: flex-start; background: var(--om-bot-bg);
  border-bottom-left-radius: 4px;
}
.ollama-chat .om-tool {
  align-self: flex-start; background: transparent; border: 1px dashed var(--om-border);
  font-size: 0.9em; color: var(--om-muted);
}
.ollama-chat .om-failed { opacity: 0.6; }
.ollama-chat .om-role {
  font-size: 0.75em; font-weight: 600; letter-spacing: 0.02em;
  color: var(--om-muted); margin-top: 6px; text-transform: uppercase;
}
.ollama-chat .om-msg p { margin: 0.35em 0; }
.ollama-chat .om-msg ul, .ollama-chat .om-msg ol { margin: 0.35em 0; padding-left: 1.4em; }
.ollama-chat .om-msg pre {
  background: var(--jp-cell-editor-background, #f7f7f7); border: 1px solid var(--om-border);
  border-radius: 6px; padding: 6px 8px; overflow-x: auto; font-size: 0.9em;
}
.ollama-chat .om-msg code { font-size: 0.92em; }
.ollama-chat .om-msg table { border-collapse: collapse; }
.ollama-chat .om-msg th, .ollama-chat .om-msg td {
  border: 1px solid var(--om-border); padding: 2px 6px;
}
.ollama-chat details.om-thinking {
  color: var(--om-muted); font-size: 0.9em; margin: 6px 0 2px;
  border-left: 3px solid var(--om-border); padding-left: 8px;
}
.ollama-chat details.om-thinking summary { cursor: pointer; user-select: none; }
.ollama-chat .om-calls { font-family: var(--jp-code-font-family, monospace); font-size: 0.85em;
  color: var(--om-muted); margin: 4px 0; }
.ollama-chat .om-badge { font-size: 0.8em; color: var(--om-muted); margin: 2px 0 6px; }
.ollama-chat .om-note { font-size: 0.8em; color: var(--om-muted); margin: 2px 0 6px; }
.ollama-chat .om-note.om-bad { color: var(--jp-error-color1, #c62828); }
.ollama-chat .om-waiting::after {
  content: "●●●"; letter-spacing: 2px; color: var(--om-muted);
  animation: om-pulse 1.2s ease-in-out infinite;
}
@keyframes om-pulse { 0%, 100% { opacity: 0.25; } 50% { opacity: 1; } }
.ollama-chat .om-inputrow { align-items: stretch; gap: 6px; }
.ollama-chat .om-input { flex: 1 1 auto; width: auto; height: auto; margin: 0; }
.ollama-chat .om-input textarea {
  height: 100%; border-radius: 8px; padding: 6px 8px; resize: vertical; min-height: 3.2em;
  font-family: inherit; font-size: inherit;
}
.ollama-chat .om-buttons { gap: 4px; }
.ollama-chat .om-buttons .jupyter-button { width: 8.5em; margin: 0; }
.ollama-chat .om-send:not(:disabled) { background: var(--om-accent); color: #fff; }
.ollama-chat .om-status { font-size: 0.85em; color: var(--om-muted); min-height: 1.4em;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.ollama-chat .om-status .om-error { color: var(--jp-error-color1, #c62828); }
.ollama-chat .om-status .om-warn { color: var(--jp-warn-color1, #b26a00); }
.ollama-chat .jupyter-widget-Collapse-header {
  background: transparent; border: none; padding: 2px 4px;
  color: var(--om-muted); font-weight: normal;
}
.ollama-chat .jupyter-widget-Collapse-contents {
  background: transparent; border: 1px solid var(--om-border); border-radius: 8px;
  padding: 6px 8px; margin-bottom: 4px;
}
.ollama-chat .om-options { gap: 12px; flex-wrap: wrap; }
</style>
"""

_EMPTY = '<div class="om-empty">No messages yet. Say hello below.</div>'

# What people type keeps its line breaks (Enter makes a new line in the box); model text is
# plain markdown, where a single newline is a space.
_TYPED = make_markdown()
_TYPED.options["breaks"] = True


def _thinking_html(body: str, *, open_: bool, label: str = "Thinking") -> str:
    state = " open" if open_ else ""
    return (
        f'<details class="om-thinking"{state}><summary>{_escape(label)}</summary>{body}</details>'
    )


def _short_json(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tool_calls_html(calls: Sequence[Any]) -> str:
    """Tool calls, one compact line each: ``⚙ name(key=value, …)``."""
    lines = []
    for call in calls:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        name = str(function.get("name", "?"))
        arguments = function.get("arguments") or {}
        if isinstance(arguments, dict):
            args = ", ".join(f"{k}={_short_json(v)}" for k, v in arguments.items())
        else:
            args = _short_json(arguments)
        lines.append(f"<div>⚙ {_escape(name)}({_escape(args)})</div>")
    return f'<div class="om-calls">{"".join(lines)}</div>'


def _role_label(message: dict[str, Any]) -> str:
    role = message.get("role")
    if role == "user":
        return "You"
    if role == "tool":
        return f"Tool {message.get('tool_name') or ''}".strip()
    return "Assistant"


def message_html(message: dict[str, Any], note: str = "", *, bad: bool = False) -> str:
    """One message as safe HTML: its text as markdown, thinking folded, tool calls compact."""
    role = message.get("role")
    parts = [f'<div class="om-role">{_escape(_role_label(message))}</div>']
    if role == "tool":
        parts.append(f'<div class="om-calls">↩ {_escape(_short(message.get("content")))}</div>')
    else:
        thinking = str(message.get("thinking") or "")
        if thinking:
            parts.append(_thinking_html(render_markdown(thinking), open_=False))
        content = str(message.get("content") or "")
        if content:
            parts.append(render_markdown(content, _TYPED if role == "user" else None))
        if message.get("tool_calls"):
            parts.append(_tool_calls_html(message["tool_calls"]))
        images = message.get("images") or []
        if images:
            noun = "image" if len(images) == 1 else "images"
            parts.append(f'<div class="om-badge">{len(images)} {noun} attached</div>')
    if note:
        parts.append(_note_html(note, bad=bad))
    return "".join(parts)


def _note_html(note: str, *, bad: bool = False) -> str:
    return f'<div class="om-note{" om-bad" if bad else ""}">{_escape(note)}</div>'


def _short(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _role_class(message: dict[str, Any]) -> str:
    role = message.get("role")
    return {"user": "om-user", "tool": "om-tool"}.get(str(role), "om-assistant")


def _message_widget(message: dict[str, Any], note: str = "", *, failed: bool = False) -> w.HTML:
    widget = w.HTML(message_html(message, note, bad=failed))
    widget.add_class("om-msg")
    widget.add_class(_role_class(message))
    if failed:
        widget.add_class("om-failed")
    return widget


def _close_tree(widget: w.Widget) -> None:
    """Close a widget and the widgets inside it (their comms go away in the frontend too)."""
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


# -- the answer while it streams -------------------------------------------------------------


class _LiveAnswer:
    """An :class:`~ollama_magic.core.AnswerView` that streams into an assistant bubble.

    Painting is throttled to ``fps`` frames per second. Finished markdown blocks go out once:
    they are appended to a segment widget that is sealed at ``segment_bytes``, and only the
    unfinished tail (plus the open segment) is resent each frame, so a long answer does not
    resend itself ten times a second. Thinking streams open, and folds once the answer starts.
    """

    def __init__(
        self,
        bubble: w.VBox,
        *,
        fps: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        segment_bytes: int = 4096,
    ) -> None:
        self.bubble = bubble
        self._interval = 1.0 / fps if fps > 0 else 0.0
        self._clock = clock
        self._segment_bytes = segment_bytes
        self._thinking = IncrementalMarkdown()
        self._answer = IncrementalMarkdown()
        self._thinking_widget: w.HTML | None = None
        self._thinking_folded = False
        self._segment: w.HTML | None = None
        self._segment_html = ""
        self._tail = w.HTML('<span class="om-waiting"></span>')
        self._last_paint = float("-inf")
        self.frames = 0
        """How many frames were painted."""
        self.outcome: Outcome | None = None
        bubble.children = (w.HTML('<div class="om-role">Assistant</div>'), self._tail)

    def thinking(self, text: str) -> None:
        self._thinking.feed(text)
        self._maybe_paint()

    def content(self, text: str) -> None:
        if self._thinking.text and not self._thinking_folded:
            self._fold_thinking()
        self._answer.feed(text)
        self._maybe_paint()

    def finish(self, outcome: Outcome) -> None:
        # The widget replaces the bubble with the finished message (one full render).
        self.outcome = outcome

    def _maybe_paint(self) -> None:
        if self._clock() - self._last_paint >= self._interval:
            self.paint()

    def paint(self) -> None:
        """Send one frame: the thinking so far, newly finished blocks, and the tail."""
        self.frames += 1
        self._last_paint = self._clock()
        if self._thinking.text and not self._thinking_folded:
            self._show_thinking(
                _thinking_html(self._recent_thinking(), open_=True, label="Thinking…")
            )
        new_blocks, tail_html = self._answer.update()
        if new_blocks:
            if self._segment is None:
                self._segment, self._segment_html = w.HTML(), ""
                self._insert_before_tail(self._segment)
            self._segment_html += "".join(new_blocks)
            self._segment.value = self._segment_html
            if len(self._segment_html) >= self._segment_bytes:
                self._segment = None  # sealed: never sent again
        if self._answer.text:
            self._tail.value = tail_html

    def _recent_thinking(self) -> str:
        """The latest blocks of the reasoning (about ``window`` bytes), with its unfinished tail.

        Reasoning can run to many thousands of words; resending all of it every frame would
        cost as much as resending a whole answer. It is shown whole once it is over.
        """
        _, tail = self._thinking.update()
        window, shown = 2048, [tail]
        size = len(tail)
        for block in reversed(self._thinking.committed):
            if size + len(block) > window:
                shown.append("<p>…</p>")
                break
            shown.append(block)
            size += len(block)
        return "".join(reversed(shown))

    def _fold_thinking(self) -> None:
        """The thinking is over: show it whole, folded, once (no later update re-folds it)."""
        self._thinking_folded = True
        words = len(self._thinking.text.split())
        label = f"Thought for {words} word{'s' if words != 1 else ''}"
        self._show_thinking(_thinking_html(self._thinking.final_html(), open_=False, label=label))

    def _show_thinking(self, value: str) -> None:
        if self._thinking_widget is None:
            self._thinking_widget = w.HTML(value)
            children = list(self.bubble.children)
            children.insert(1, self._thinking_widget)
            self.bubble.children = tuple(children)
        else:
            self._thinking_widget.value = value

    def _insert_before_tail(self, widget: w.Widget) -> None:
        children = list(self.bubble.children)
        children.insert(len(children) - 1, widget)
        self.bubble.children = tuple(children)


# -- the widget ------------------------------------------------------------------------------


@dataclass
class _Row:
    """A widget in the message list and the conversation message it shows (None: not one)."""

    widget: w.Widget
    message: dict[str, Any] | None = None


@dataclass
class _Turn:
    """One question and its answer while it streams."""

    user: dict[str, Any]
    user_row: _Row
    bubble: w.VBox
    view: _LiveAnswer
    stop: StopSignal = field(default_factory=StopSignal)
    thread: threading.Thread | None = None
    from_input: bool = False
    undo: list[dict[str, Any]] = field(default_factory=list)
    """Messages taken out of the conversation to regenerate; put back if the retry fails."""
    undo_length: int = 0


_KEYS_JS = """
(function () {
  // Shift+Enter or Ctrl/Cmd+Enter in the message box presses Send; Enter alone is a newline.
  // The listener sits on the widget's root in the capture phase, so it runs before the
  // textarea's own handler (which stops every key from reaching JupyterLab's shortcuts).
  var cls = "%(cls)s";
  function attach(root) {
    if (root.getAttribute("data-om-keys")) return;
    root.setAttribute("data-om-keys", "1");
    root.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || !(event.shiftKey || event.ctrlKey || event.metaKey)) return;
      var box = event.target;
      if (!box || box.tagName !== "TEXTAREA" || !box.closest(".om-input")) return;
      event.preventDefault();
      event.stopPropagation();
      // The box syncs on change (continuous_update=False): sync it, then press Send.
      box.dispatchEvent(new Event("change", { bubbles: true }));
      var send = root.querySelector("button.om-send");
      if (send) send.click();
    }, true);
  }
  var tries = 0;
  (function look() {
    var roots = document.querySelectorAll("." + cls);
    for (var i = 0; i < roots.length; i++) attach(roots[i]);
    if (tries++ < 100) setTimeout(look, roots.length ? 1000 : 100);
  })();
})();
"""


class ChatWidget(w.VBox):
    """A chat with a model served by Ollama, in a cell's output.

    Type in the box and press Send (or Shift+Enter, Ctrl+Enter, Cmd+Enter; Enter alone makes
    a new line). The answer streams in as rendered markdown; Stop ends it and keeps what was
    said. The conversation is the one ``%%ollama --chat --session NAME`` uses, so cells and
    the widget can take turns on it.

    Args:
        model: The model; default: the session's last model, the configured one
            (``%ollama config model=…``, ``$OLLAMA_MODEL``), else the newest local model.
        session: A session name (default ``"default"``, as ``%%ollama --chat``) or a
            :class:`~ollama_magic.conversation.Conversation`.
        system: A system prompt for the session (kept in the conversation, as ``-s`` does).
        host: The Ollama server; default: the magics' host, ``$OLLAMA_HOST``, or localhost.
        think: Whether a thinking model thinks (True/False, or "low"/"medium"/"high").
        fps: Display updates per second while an answer streams.
        magics: The ``OllamaMagics`` whose conversations, client and defaults to use (default:
            the running shell's; outside IPython the widget keeps its own).
        **options: Ollama options (``temperature``, ``num_ctx``, ``seed``, ``top_p``, …).

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
        magics: Any = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self._magics = magics if magics is not None else _shell_magics()
        self._lock = threading.RLock()
        self._turn: _Turn | None = None
        self._worker: threading.Thread | None = None  # the latest turn's thread
        self._closed = False
        self._rows: list[_Row] = []
        self._ghost: list[_Row] = []
        self._ghost_user: dict[str, Any] | None = None
        self._fps = float(fps if fps is not None else getattr(self._magics, "fps", 10.0))

        if isinstance(session, Conversation):
            self.conversation = session
        else:
            conversations = (
                self._magics.conversations if self._magics is not None else _LOCAL_CONVERSATIONS
            )
            self.conversation = conversations[session or DEFAULT_SESSION]
        """The conversation shown and continued (shared with the magics)."""
        if system is not None:
            self.conversation.system = system or None

        self._owns_client = self._magics is None
        self.client = (
            self._magics.client(host) if self._magics is not None else Client(host, timeout=300)
        )
        """The connection to Ollama."""

        self._build(think, options)
        self._set_status(
            "Shift+Enter or Ctrl+Enter sends · Enter makes a new line "
            f"· session {self.conversation.name!r}",
            "info",
        )
        self.refresh_models(model)

        # The conversation holds a weak reference: a widget nobody closes can still go away.
        ref = weakref.WeakMethod(self._conversation_changed)
        self._listener: Callable[[Conversation], None] = lambda c: (m := ref()) and m(c)
        self.conversation.changed.append(self._listener)
        self._sync()

    # -- building ------------------------------------------------------------------------------

    def _build(self, think: bool | str | None, options: dict[str, Any]) -> None:
        self._uid = "ollama-chat-" + secrets.token_hex(4)
        self.add_class("ollama-chat")
        self.add_class(self._uid)

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
        title = w.HTML(
            f'<span class="om-title"><i class="fa fa-comments"></i> '
            f"{_escape(self.conversation.name)}</span>"
        )
        spacer = w.Box()
        spacer.add_class("om-spacer")
        toolbar = w.HBox(
            [
                title,
                self.model_picker,
                self.refresh_button,
                spacer,
                self.retry_button,
                self.clear_button,
            ]
        )
        toolbar.add_class("om-toolbar")

        # The options panel: empty fields mean "the model's default" (nothing is sent).
        self.system_box = w.Textarea(
            value=self.conversation.system or "",
            placeholder="System prompt, e.g. You are a concise assistant.",
            description="System",
            rows=2,
            layout=w.Layout(width="100%"),
        )
        self._extra_options = {k: v for k, v in options.items() if k not in _PANEL_OPTIONS}
        self.option_fields: dict[str, w.Text] = {}
        for name in _PANEL_OPTIONS:
            value = options.get(name)
            self.option_fields[name] = w.Text(
                value="" if value is None else str(value),
                placeholder="default",
                description=name,
                style={"description_width": "initial"},
                layout=w.Layout(width="12.5em"),
            )
        think_value = next((k for k, v in _THINK_VALUES.items() if v == think), "default")
        if isinstance(think, bool):
            think_value = "on" if think else "off"
        self.think_picker = w.Dropdown(
            options=_THINK_CHOICES,
            value=think_value,
            description="think",
            style={"description_width": "initial"},
            layout=w.Layout(width="13em"),
        )
        fields = w.HBox([*self.option_fields.values(), self.think_picker])
        fields.add_class("om-options")
        extra = ", ".join(f"{k}={_short_json(v, 40)}" for k, v in self._extra_options.items())
        extra_note = w.HTML(
            f'<div class="om-note">Also sent: {_escape(extra)}</div>' if extra else ""
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
                "data": {"application/javascript": _KEYS_JS % {"cls": self._uid}},
                "metadata": {},
            },
        )
        self.children = [
            w.HTML(_CSS),
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
        options = dict(getattr(self._magics, "options", None) or {})
        options.update(self._extra_options)
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
        return _THINK_VALUES[str(self.think_picker.value)]

    def to_markdown(self) -> str:
        """The conversation as markdown (for a file, or an issue)."""
        return self.conversation.to_markdown()

    def ask(self, text: str | None = None, images: Sequence[Any] | None = None) -> bool:
        """Send a message and stream the answer in the background.

        Args:
            text: The message; default: what is in the input box (which is then emptied).
            images: Images for a vision model (bytes, file paths, base64, PIL images or numpy
                arrays); default: the uploaded ones.

        Returns:
            False (and says why in the status line) when it was not sent: an answer is still
            streaming, there is nothing to send, or an option is invalid.
        """
        from_input = text is None
        text = (self.input.value if text is None else text).strip()
        if images is None:
            images = [bytes(item["content"]) for item in self.upload.value]
        if not text and not images:
            self._set_status("Nothing to send: type a message first.", "warn")
            return False
        # Base64 in the message, as the magics send them: the conversation stays plain JSON.
        user: dict[str, Any] = {"role": "user", "content": text}
        if images:
            user["images"] = [image_base64(image) for image in images]
        started = self._start(user, from_input=from_input)
        if started and from_input:
            self.input.value = ""
        if started and self.upload.value:
            self.upload.value = ()
        return started

    def retry(self) -> bool:
        """Ask again: the failed message, else the last question (its answer is replaced).

        Returns:
            False when there is nothing to retry or an answer is streaming.
        """
        if self._refuse_if_busy():
            return False
        if self._ghost_user is not None:
            return self._start(dict(self._ghost_user))
        messages = self.conversation.messages
        if len(messages) < 2 or messages[-1].get("role") != "assistant":
            self._set_status("Nothing to retry yet.", "warn")
            return False
        if messages[-2].get("role") != "user":
            self._set_status("The last answer does not follow a question of yours.", "warn")
            return False
        # Take the question and the answer out; the question goes again as a new turn.
        answer = self.conversation.pop()
        user = self.conversation.pop()
        started = self._start(user, undo=[user, answer])
        if not started:
            self.conversation.append(user)
            self.conversation.append(answer)
        return started

    def stop(self) -> None:
        """Stop the answer now; what arrived is kept, marked as stopped."""
        turn = self._turn
        if turn is not None:
            turn.stop.stop()
            self._set_status("Stopping…", "info")

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
        with self._lock:
            self._drop_ghost()
        self.conversation.reset(keep_system=True)
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
        wanted = model or self.model or self._default_model(names)
        self._select_model(wanted, names)
        if error is not None:
            self._set_status(f"Could not list the models: {_one_line(error)}", "error")
        return names

    def close(self) -> None:
        """Stop the answer, wait for its thread, and close every part of the widget."""
        if self._closed:
            return
        self.stop()
        self.wait(10)
        self._closed = True
        with contextlib.suppress(ValueError):
            self.conversation.changed.remove(self._listener)
        for child in [*self.children, self._empty]:
            _close_tree(child)
        if self._owns_client:
            self.client.close()
        super().close()

    # -- handlers --------------------------------------------------------------------------------

    @_handler
    def _send_clicked(self, _: Any) -> None:
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

    def _default_model(self, names: list[str]) -> str:
        configured = getattr(self._magics, "model", "") or os.environ.get("OLLAMA_MODEL", "")
        return self.conversation.model or configured or (names[0] if names else "")

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

    def _refuse_if_busy(self) -> bool:
        if not self.busy:
            return False
        self._set_status(
            "Not sent: the answer is still streaming. Press Stop first, or wait.", "warn"
        )
        return True

    def _start(
        self, user: dict[str, Any], *, from_input: bool = False, undo: Sequence[Any] = ()
    ) -> bool:
        """Begin a turn: show the question, start the worker thread."""
        if self._closed:
            raise RuntimeError("This chat widget is closed.")
        if self._refuse_if_busy():
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
        key = id(self.conversation)
        with _BUSY_LOCK:
            if key in _BUSY:
                self._set_status(
                    f"Not sent: another chat on session {self.conversation.name!r} is answering.",
                    "warn",
                )
                return False
            _BUSY.add(key)
        try:
            # Change the conversation before holding our lock: its listeners (other widgets
            # on it) take their own locks.
            system = self.system_box.value.strip() or None
            if system != self.conversation.system:
                self.conversation.system = system
            with self._lock:
                self._drop_ghost()
                keep_alive = getattr(self._magics, "keep_alive", "")
                request = build_request(
                    model,
                    str(user.get("content", "")),
                    conversation=self.conversation,
                    images=user.get("images"),
                    host=self.client.host,
                    options=options or None,
                    think=self.think,
                    keep_alive=_keep_alive(keep_alive) if keep_alive else None,
                )
                user = request.body["messages"][-1]  # exactly what the conversation will keep
                bubble = w.VBox()
                bubble.add_class("om-msg")
                bubble.add_class("om-assistant")
                turn = _Turn(
                    user=user,
                    user_row=_Row(_message_widget(user), dict(user)),
                    bubble=bubble,
                    view=_LiveAnswer(bubble, fps=self._fps),
                    from_input=from_input,
                    undo=list(undo),
                    undo_length=len(self.conversation),
                )
                self._turn = turn
                self._show_rows()
                self.stop_button.disabled = False
                self._set_status(f"{model} is answering… (Stop ends it)", "info")
                # A copy of the context: print/display from the thread land in this cell.
                context = contextvars.copy_context()
                turn.thread = threading.Thread(
                    target=context.run,
                    args=(self._work, turn, request),
                    name=f"ollama-chat:{self.conversation.name}",
                    daemon=True,
                )
                self._worker = turn.thread
                turn.thread.start()
        except BaseException:
            with _BUSY_LOCK:
                _BUSY.discard(key)
            self._turn = None
            raise
        return True

    def _work(self, turn: _Turn, request: Request) -> None:
        """The worker thread: stream the answer, then settle the turn whatever happened."""
        outcome: Outcome | None = None
        crash: BaseException | None = None
        try:
            outcome = ask(self.client, request, turn.view, self.conversation, turn.stop)
        except OllamaError as error:
            outcome = turn.view.outcome or Outcome(request, error=error)
            outcome.error = error
        except BaseException as error:  # a bug: say so in the widget, not only in a log
            crash = error
            outcome = turn.view.outcome or Outcome(request)
        finally:
            try:
                self._end_turn(turn, outcome or Outcome(request), crash)
            finally:
                with _BUSY_LOCK:
                    _BUSY.discard(id(self.conversation))

    def _end_turn(self, turn: _Turn, outcome: Outcome, crash: BaseException | None) -> None:
        """Replace the live bubble by the finished message; say how it went."""
        failed = outcome.error is not None or crash is not None
        # As ask() records it: a complete answer, or a stopped one that said something.
        recorded = not failed and bool(outcome.text or outcome.result is not None)
        if turn.undo and not recorded and len(self.conversation) == turn.undo_length:
            for message in turn.undo:  # a retry that failed: the old answer comes back
                self.conversation.append(message)
        if self._closed:
            self._turn = None
            _close_tree(turn.bubble)
            return
        with self._lock:
            self._turn = None
            self.stop_button.disabled = True
            note = ""
            if outcome.stopped:
                note = "■ stopped"
            if recorded:
                last = self.conversation.messages[-1:] or [{}]
                self._sync(reuse=[turn.user_row], note=(last[0], note))
                status, kind = " · ".join(footer_parts(outcome)), "ok"
                if outcome.stopped:
                    kind = "info"
            elif failed:
                if not turn.undo:
                    # Keep what the user saw, dimmed: it is not in the conversation.
                    partial = {"role": "assistant", "content": outcome.text}
                    if outcome.thinking:
                        partial["thinking"] = outcome.thinking
                    user_row = turn.user_row
                    user_row.widget.add_class("om-failed")
                    self._ghost = [user_row]
                    if outcome.text or outcome.thinking:
                        ghost = _message_widget(partial, "✖ failed: not kept", failed=True)
                        self._ghost.append(_Row(ghost))
                    self._ghost_user = turn.user
                else:
                    _close_tree(turn.user_row.widget)
                self._sync()
                error = crash if crash is not None else outcome.error
                assert error is not None
                status, kind = "✖ " + _one_line(error) + " (Retry sends it again)", "error"
            else:  # stopped before a word: as if never asked; the text goes back to the box
                _close_tree(turn.user_row.widget)
                self._sync()
                if turn.from_input and not self.input.value:
                    self.input.value = str(turn.user.get("content", ""))
                status, kind = "Stopped before the answer began.", "info"
            _close_tree(turn.bubble)
            self._set_status(status, kind)
        if crash is not None:
            self.out.append_stderr(
                "".join(traceback.format_exception(type(crash), crash, crash.__traceback__))
            )

    # -- the message list ------------------------------------------------------------------------

    def _conversation_changed(self, conversation: Conversation) -> None:
        turn = self._turn
        if self._closed or (turn is not None and turn.thread is threading.current_thread()):
            return  # our own answer being recorded: the end of the turn redraws once
        with self._lock:
            self._drop_ghost()  # a failed turn shown last would now be out of place
            self._sync()

    def _sync(
        self,
        reuse: Sequence[_Row] = (),
        note: tuple[dict[str, Any], str] | None = None,
    ) -> None:
        """Show the conversation's messages: keep the widgets of unchanged ones, add the rest.

        ``reuse`` offers rows already drawn for messages that are now in the conversation;
        ``note`` marks the row of one message (e.g. an answer that was stopped).
        """
        with self._lock:
            target = [m for m in self.conversation.messages if m.get("role") != "system"]
            keep = 0
            while (
                keep < len(self._rows)
                and keep < len(target)
                and self._rows[keep].message == target[keep]
            ):
                keep += 1
            spare = list(reuse)
            rows = self._rows[:keep]
            for message in target[keep:]:
                match = next((r for r in spare if r.message == message), None)
                if match is not None:
                    spare.remove(match)
                    rows.append(match)
                elif note is not None and message == note[0] and note[1]:
                    rows.append(_Row(_message_widget(message, note[1]), message))
                else:
                    rows.append(_Row(_message_widget(message), message))
            for row in self._rows[keep:]:
                if all(row is not r for r in rows):
                    _close_tree(row.widget)
            for row in spare:
                _close_tree(row.widget)
            self._rows = rows
            self._show_rows()

    def _show_rows(self) -> None:
        rows = [*self._rows, *self._ghost]
        widgets: list[w.Widget] = [r.widget for r in rows]
        turn = self._turn
        if turn is not None:
            widgets += [turn.user_row.widget, turn.bubble]
        if not widgets:
            widgets = [self._empty]
        if tuple(widgets) != tuple(self.message_list.children):
            self.message_list.children = tuple(widgets)

    def _drop_ghost(self) -> None:
        for row in self._ghost:
            _close_tree(row.widget)
        self._ghost, self._ghost_user = [], None

    def _set_status(self, text: str, kind: str = "info") -> None:
        if self._closed:
            return
        self.status.value = f'<span class="om-{kind}">{_escape(" ".join(text.split()))}</span>'


def _keep_alive(text: str) -> float | str:
    """A number is seconds (Ollama rejects the string "-1"); anything else a duration."""
    try:
        return float(text)
    except ValueError:
        return text


# -- %ollama chat ----------------------------------------------------------------------------

_CHAT_USAGE = "Usage: %ollama chat [MODEL] [--session NAME]"


def open_chat(magics: Any, argv: list[str]) -> ChatWidget:
    """``%ollama chat [MODEL] [--session NAME]``: open a chat widget on the magics' sessions.

    Args:
        magics: The ``OllamaMagics`` instance (its conversations, client and settings).
        argv: The words after ``chat``, already split shell-style.

    Raises:
        UsageError: The arguments do not fit the usage line.
    """
    from IPython.core.error import UsageError

    model: str | None = None
    session: str | None = None
    words = list(argv)
    while words:
        word = words.pop(0)
        if word == "--session" or word.startswith("--session="):
            value = word.partition("=")[2] if "=" in word else (words.pop(0) if words else "")
            if not value or session is not None:
                raise UsageError(_CHAT_USAGE)
            session = value
        elif word.startswith("-"):
            raise UsageError(f"Unknown option {word!r}. {_CHAT_USAGE}")
        elif model is None:
            model = word
        else:
            raise UsageError(f"Too many arguments: {' '.join(argv)}. {_CHAT_USAGE}")
    return ChatWidget(model, session=session, magics=magics)
