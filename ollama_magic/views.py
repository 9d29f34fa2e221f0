"""How an answer shows: live markdown in a notebook, plain text in a terminal, or nothing."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ollama_magic.core import AnswerView, Outcome, footer_parts
from ollama_magic.errors import OllamaError
from ollama_magic.render import MUTED, DisplaySink, IPythonSink, LiveMarkdown, escape
from ollama_magic.structured import plain_data
from ollama_magic.terminal import printable
from ollama_magic.types import ToolCall

__all__ = ["NotebookView", "QuietView", "TextView", "note_html", "tool_call_html", "value_html"]

_FOOTER = f'<div class="ollama-magic-footer" style="{MUTED}; margin-top: 0.4em">{{}}</div>'
_ERROR = (
    '<div class="ollama-magic-error" style="color: var(--jp-error-color1, #c62828); '
    'font-size: 0.9em; margin-top: 0.4em">{}</div>'
)


#: Seconds into an answer after which reading may pause until the next frame (see pause()).
_PAUSE_AFTER = 1.0


def note_html(text: str) -> str:
    """One muted line of text (a note above an answer), escaped."""
    return f'<div class="ollama-magic-note" style="{MUTED}">{escape(text)}</div>'


def _answer(body: str) -> str:
    return f'<div class="ollama-magic-answer">{body}</div>'


def _thinking_live(body: str) -> str:
    # Open while it streams: a collapsed section that redraws each frame would snap shut
    # whenever the user opened it.
    return (
        f'<div class="ollama-magic-thinking" style="{MUTED}; border-left: 3px solid '
        f'var(--jp-border-color2, #ccc); padding-left: 0.7em">{body}</div>'
    )


def _thinking_done(text: str) -> Callable[[str], str]:
    words = len(text.split())

    def wrap(body: str) -> str:
        return (
            f'<details class="ollama-magic-thinking" style="{MUTED}">'
            f"<summary>Thinking ({words} words)</summary>{body}</details>"
        )

    return wrap


class NotebookView(AnswerView):
    """Live, sanitized markdown in cell outputs, updated in place at a limited frame rate.

    Thinking streams above the answer in an open muted box, rendered the same way, and folds
    into a collapsed "Thinking (N words)" section when the answer begins; tool calls show as
    compact collapsible lines; the footer names the model, tokens and
    speed, and says how the answer ended. With ``structured``, the JSON shows as code while it
    streams and as a table or a tree once parsed.
    """

    def __init__(
        self,
        *,
        sink: DisplaySink | None = None,
        fps: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        notes: list[str] | None = None,
        structured: bool = False,
    ) -> None:
        self._sink = sink or IPythonSink()
        self._fps = fps
        self._since: float | None = None
        self._clock = clock
        self._notes = notes or []
        self._structured = structured
        self._done: list[LiveMarkdown] = []  # finished segments (before tool calls, retries)
        self._new_segments()

    def _new_segments(self) -> None:
        """Fresh thinking and answer outputs, below everything shown so far."""
        self._thinking = LiveMarkdown(
            self._sink, fps=self._fps, clock=self._clock, wrap=_thinking_live
        )
        self._answer = LiveMarkdown(self._sink, fps=self._fps, clock=self._clock, wrap=_answer)
        self._answering = False  # the answer's text has begun in this segment
        self._thinking_folded = False

    @property
    def frames(self) -> int:
        return sum(s.frames for s in (*self._done, self._thinking, self._answer))

    @property
    def bytes_sent(self) -> int:
        return sum(s.bytes_sent for s in (*self._done, self._thinking, self._answer))

    def thinking(self, text: str) -> None:
        self._thinking.feed(text)

    def content(self, text: str) -> None:
        if self._answering:  # once a token: nothing to decide any more
            self._answer.feed(text)
            return
        if self._thinking.length:
            self._finish_thinking()  # the answer begins: fold the reasoning away
        if self._structured:
            self._answer.feed("```json\n")  # raw JSON reads best as code while it grows
        self._answer.feed(text)
        self._answering = self._answer.length > 0

    def pause(self) -> float:
        # Nothing shows before the next frame: tokens may wait in the socket until then. Not
        # in the first second, so that a short answer ends without the wait.
        now = self._clock()
        if self._since is None:
            self._since = now  # the first token read (a model may load long before it)
        if now - self._since < _PAUSE_AFTER:
            return 0.0
        segment = self._answer if self._answering else self._thinking
        return segment.next_frame_in()  # ask() caps it (Stop, the end: never long)

    def tool_call(self, call: ToolCall, result: str, failed: bool) -> None:
        """Close what streamed so far and show the call and its result as one line."""
        self._close_segments()
        arguments, short = _call_summary(call.arguments, result)
        html = tool_call_html(call.name, call.arguments, result, failed)
        text = f"[{'⚠' if failed else '🔧'} {call.name}({arguments}) -> {short}]\n"
        self._sink.display({"text/html": html, "text/plain": text}, {})

    def _finish_thinking(self) -> None:
        if self._thinking.length and not self._thinking_folded:
            # The text/plain form (terminals, text exports) ends with a blank line, so the
            # answer does not run on from the reasoning.
            self._thinking.finish(wrap=_thinking_done(self._thinking.text), footer_text="\n\n")
            self._thinking_folded = True

    def retry(self, error: OllamaError, attempt: int, retries: int) -> None:
        """Close the invalid answer with what was wrong, and start the next attempt below."""
        note = f"{error.message} Asking again ({attempt}/{retries})."
        self._answer.finish(_ERROR.format(escape(note)), footer_text=f"\n\n[{note}]")
        self._done += [self._thinking, self._answer]
        self._new_segments()

    def _close_segments(self) -> None:
        self._finish_thinking()
        if self._answer.length:
            self._answer.finish()
        self._done += [self._thinking, self._answer]
        self._new_segments()

    def finish(self, outcome: Outcome) -> None:
        self._finish_thinking()
        facts = " · ".join(footer_parts(outcome) + self._notes)
        footer = _FOOTER.format(escape(facts))
        footer_text = f"\n\n[{facts}]"
        problem = None
        if outcome.error is not None:
            problem = outcome.error.message
        elif outcome.result is not None and not outcome.text and self._thinking.length:
            problem = (
                "The model only thought and gave no answer"
                + (
                    " before the token limit (raise -n)"
                    if outcome.result.done_reason == "length"
                    else ""
                )
                + "; --no-think turns thinking off."
            )
        if problem:
            footer = _ERROR.format(escape(problem)) + footer
            footer_text = f"\n\n[{problem}]{footer_text}"
        metadata = {"ollama_magic": outcome.request.provenance()}
        body = None
        if self._structured and outcome.error is None and outcome.result is not None:
            body = value_html(outcome.value)
        self._answer.finish(footer, metadata, body_html=body, footer_text=footer_text)


def tool_call_html(
    name: str, arguments: dict[str, Any], result: str | None = None, failed: bool = False
) -> str:
    """A tool call as one muted line; its result, when known, folded beneath it."""
    args, short = _call_summary(arguments, result or "")
    head = f"{'⚠' if failed else '🔧'} <code>{escape(name)}({escape(args)})</code>"
    if result is None:
        return f'<div class="ollama-magic-tool" style="{MUTED}">{head}</div>'
    return (
        f'<details class="ollama-magic-tool" style="{MUTED}"><summary>{head} → '
        f"{escape(short)}</summary>"
        f'<pre style="white-space: pre-wrap">{escape(result)}</pre></details>'
    )


def _call_summary(arguments: dict[str, Any], result: str) -> tuple[str, str]:
    """``a=1, b='x'`` and the result cut to one line's length."""
    args = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return args, result if len(result) <= 80 else result[:77] + "…"


def value_html(value: Any) -> str:
    """A readable view of a structured answer: a table for records, else a collapsible tree."""
    data = plain_data(value)
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        try:
            import pandas as pd
        except ImportError:
            return _records_table(data)
        return str(pd.DataFrame(data).to_html(index=False, border=0, escape=True))
    return _tree(data)


def _records_table(records: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in records for k in r))
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(_scalar(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in records
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _tree(data: Any) -> str:
    if isinstance(data, dict):
        items = "".join(f"<li><b>{escape(str(k))}</b>: {_tree(v)}</li>" for k, v in data.items())
        return f"<details open><summary>{{…}} {len(data)} keys</summary><ul>{items}</ul></details>"
    if isinstance(data, list):
        items = "".join(f"<li>{_tree(v)}</li>" for v in data)
        summary = f"<summary>[…] {len(data)} items</summary>"
        return f'<details open>{summary}<ol start="0">{items}</ol></details>'
    return f"<code>{escape(json.dumps(data, ensure_ascii=False))}</code>"


class TextView(AnswerView):
    """Plain text streamed to a terminal (or a notebook's stdout with ``--plain``)."""

    def __init__(self, out: TextIO | None = None, *, notes: list[str] | None = None) -> None:
        self._out = out
        self._thinking_open = False
        self._notes = notes or []
        self._last: str | None = None  # the last character written, for line breaks
        self._cr = False  # a \r held back (it may be half of a \r\n)

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout  # looked up late: IPython swaps stdout per cell

    def thinking(self, text: str) -> None:
        if not self._thinking_open:
            self._paragraph()  # a later round's reasoning starts on a line of its own
            self.out.write("Thinking: ")
            self._thinking_open = True
        self._write(text)

    def content(self, text: str) -> None:
        if self._thinking_open:
            self._paragraph()  # the answer never runs on from the reasoning
            self._thinking_open = False
        self._write(text)

    def _write(self, text: str) -> None:
        # A \r\n may arrive split over two tokens: hold a last \r until the next write.
        text = ("\r" if self._cr else "") + text
        self._cr = text.endswith("\r")
        text = printable(text[:-1] if self._cr else text)  # no OSC 52, no title changes
        if text:
            self.out.write(text)
            self.out.flush()
            self._last = text[-1]

    def _paragraph(self) -> None:
        """A blank line, unless nothing was written yet or the text already ends with one."""
        if self._last is not None:
            self.out.write("\n\n" if self._last != "\n" else "\n")
            self._last = "\n"

    def tool_call(self, call: ToolCall, result: str, failed: bool) -> None:
        arguments, short = _call_summary(call.arguments, result)
        kind = "error in" if failed else "tool"
        self._write(f"\n[{kind} {call.name}({arguments}) -> {short}]\n")

    def retry(self, error: OllamaError, attempt: int, retries: int) -> None:
        self._write(f"\n[{error.message} Asking again ({attempt}/{retries}).]\n")

    def finish(self, outcome: Outcome) -> None:
        lines = []
        if outcome.error is not None:
            lines.append(f"[error: {outcome.error.message}]")
        lines.append("[" + " · ".join(footer_parts(outcome) + self._notes) + "]")
        self.out.write("\n\n" + printable("\n".join(lines)) + "\n")
        self.out.flush()


class QuietView(AnswerView):
    """Shows nothing (``-q``: the answer only goes into a variable)."""
