"""The chat widget's messages: safe HTML for each, and the rows shown kept in step with them."""

from __future__ import annotations

import base64
import functools
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ipywidgets as w  # type: ignore[import-untyped]  # ipywidgets ships no type hints

from ollama_magic.images import thumbnails_html
from ollama_magic.markdown import make_markdown, render_markdown
from ollama_magic.render import escape
from ollama_magic.views import tool_call_html

__all__ = [
    "Kind",
    "MessageList",
    "Row",
    "close_tree",
    "export_html",
    "key_handling",
    "message_html",
    "message_widget",
    "resource",
    "status_html",
    "stylesheet",
]

Kind = Literal["ok", "info", "warn", "error"]
"""How a status line reads (its colour): each is a CSS class ``om-<kind>`` in widget.css."""

EMPTY = '<div class="om-empty">No messages yet. Say hello below.</div>'

# What people type keeps its line breaks (Enter makes a new line in the box); model text is
# plain markdown, where a single newline is a space.
_TYPED = make_markdown()
_TYPED.options["breaks"] = True


@functools.cache
def resource(name: str) -> str:
    """A file shipped in the package (the widget's CSS and key handling)."""
    return importlib.resources.files("ollama_magic").joinpath(name).read_text("utf-8")


def stylesheet() -> w.HTML:
    """The widget's stylesheet, as a ``<style>`` element."""
    return w.HTML(f"<style>{resource('widget.css')}</style>")


def key_handling(uid: str) -> w.Output:
    """The keys of the input box (Shift+Enter sends), as a script in a hidden output.

    Args:
        uid: The widget's own CSS class: the script finds its input box by it.
    """
    keys = w.Output(layout=w.Layout(display="none"))
    keys.outputs = (
        {
            "output_type": "display_data",
            "data": {"application/javascript": resource("widget.js").replace("__CLASS__", uid)},
            "metadata": {},
        },
    )
    return keys


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


def message_widget(message: dict[str, Any], note: str = "", *, failed: bool = False) -> w.HTML:
    """One message as an HTML widget, classed by role (and dimmed when ``failed``)."""
    widget = w.HTML(message_html(message, note, bad=failed))
    role = {"user": "om-user", "tool": "om-tool"}.get(str(message.get("role")), "om-assistant")
    for name in ("om-msg", role, *(["om-failed"] if failed else [])):
        widget.add_class(name)
    return widget


def status_html(text: str, kind: Kind) -> str:
    """The status line: one line of text, escaped, coloured by ``kind``."""
    return f'<span class="om-{kind}">{escape(" ".join(text.split()))}</span>'


def export_html(session: str, markdown: str) -> str:
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


def close_tree(widget: w.Widget) -> None:
    """Close a widget, the widgets inside it, and its layout and style (each has a comm)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, w.Widget):
            part.close()
    widget.close()


@dataclass
class Row:
    """A widget in the message list and the conversation message it shows (None: not one)."""

    widget: w.Widget
    message: dict[str, Any] | None = None


class MessageList:
    """The message list: a row per conversation message, then a failed turn kept dimmed.

    Not thread-safe: the widget calls it under its lock.
    """

    def __init__(self) -> None:
        self.box = w.VBox()
        """The messages, oldest first (one widget each)."""
        self.box.add_class("om-list")
        self.empty = w.HTML(EMPTY)
        """Shown instead of the rows while there are none."""
        self.rows: list[Row] = []
        """The conversation's messages, as shown (system prompt aside)."""
        self.ghost: list[Row] = []
        """A question (and partial answer) shown after the rows but not in the conversation."""
        self.ghost_question: dict[str, Any] | None = None
        """The question of the ghost, as Retry sends it again."""

    def sync(
        self, messages: Sequence[dict[str, Any]], reuse: Sequence[Row] = (), note: str = ""
    ) -> None:
        """Make the rows show ``messages``: keep the widgets of unchanged ones, add the rest.

        ``reuse`` offers rows already drawn for messages that are now in the conversation;
        ``note`` goes under the last message when it is drawn anew (an answer that stopped).
        Rows no longer shown are closed. Call :meth:`show` to put them on screen.
        """
        target = [m for m in messages if m.get("role") != "system"]
        keep = 0
        while keep < min(len(self.rows), len(target)) and self.rows[keep].message == target[keep]:
            keep += 1
        spare = list(reuse)
        rows = self.rows[:keep]
        for index, message in enumerate(target[keep:], keep):
            match = next((r for r in spare if r.message == message), None)
            if match is not None:
                spare.remove(match)
                rows.append(match)
            else:
                last = index == len(target) - 1
                rows.append(Row(message_widget(message, note if last else ""), message))
        for row in [*self.rows[keep:], *spare]:
            if all(row is not r for r in rows):
                close_tree(row.widget)
        self.rows = rows

    def show(self, live: Sequence[w.Widget] = ()) -> None:
        """Put the rows, the ghost and ``live`` (a turn streaming) in the box, if that changed."""
        widgets: list[w.Widget] = [r.widget for r in [*self.rows, *self.ghost]]
        widgets += live
        shown = tuple(widgets or [self.empty])
        # Sent to the frontend only when different: every assignment is a message.
        if shown != tuple(self.box.children):
            self.box.children = shown

    def keep_ghost(self, rows: Sequence[Row], question: dict[str, Any]) -> None:
        """Show ``rows`` after the conversation's: ``question`` failed, Retry asks it again."""
        self.drop_ghost()
        self.ghost, self.ghost_question = list(rows), question

    def drop_ghost(self) -> None:
        """Forget the failed turn shown last (a new turn, or the conversation moved on)."""
        for row in self.ghost:
            close_tree(row.widget)
        self.ghost, self.ghost_question = [], None
