"""How an answer shows: live markdown in a notebook, plain text in a terminal, or nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ollama_magic.core import Outcome, footer_parts
from ollama_magic.render import DisplaySink, IPythonSink, LiveMarkdown, escape

__all__ = ["NotebookView", "QuietView", "TextView"]

# Muted like JupyterLab's secondary text, with a fallback colour for other frontends.
_MUTED = "color: var(--jp-ui-font-color2, #6e6e6e); font-size: 0.85em"
_FOOTER = f'<div class="ollama-magic-footer" style="{_MUTED}; margin-top: 0.4em">{{}}</div>'
_ERROR = (
    '<div class="ollama-magic-error" style="color: var(--jp-error-color1, #c62828); '
    'font-size: 0.9em; margin-top: 0.4em">{}</div>'
)


def _answer(body: str) -> str:
    return f'<div class="ollama-magic-answer">{body}</div>'


def _thinking(body: str) -> str:
    return (
        f'<details class="ollama-magic-thinking" style="{_MUTED}">'
        f"<summary>Thinking</summary>{body}</details>"
    )


class NotebookView:
    """Live, sanitized markdown in cell outputs, updated in place at a limited frame rate.

    Thinking streams into a collapsed "Thinking" section above the answer, rendered the same
    way; the footer names the model, tokens and speed, and says how the answer ended.
    """

    def __init__(
        self,
        *,
        sink: DisplaySink | None = None,
        fps: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        notes: list[str] | None = None,
    ) -> None:
        sink = sink or IPythonSink()
        self._thinking = LiveMarkdown(sink, fps=fps, clock=clock, wrap=_thinking)
        self._answer = LiveMarkdown(sink, fps=fps, clock=clock, wrap=_answer)
        self._notes = notes or []

    @property
    def frames(self) -> int:
        return self._thinking.frames + self._answer.frames

    @property
    def bytes_sent(self) -> int:
        return self._thinking.bytes_sent + self._answer.bytes_sent

    def thinking(self, text: str) -> None:
        self._thinking.feed(text)

    def content(self, text: str) -> None:
        self._answer.feed(text)

    def finish(self, outcome: Outcome) -> None:
        if outcome.thinking:
            self._thinking.finish()
        facts = " · ".join(footer_parts(outcome) + self._notes)
        footer = _FOOTER.format(escape(facts))
        footer_text = f"\n\n[{facts}]"
        problem = None
        if outcome.error is not None:
            problem = outcome.error.message
        elif outcome.result is not None and not outcome.text and outcome.thinking:
            problem = "The model only thought and gave no answer."
        if problem:
            footer = _ERROR.format(escape(problem)) + footer
            footer_text = f"\n\n[{problem}]{footer_text}"
        metadata = {"ollama_magic": outcome.request.provenance()}
        self._answer.finish(footer, metadata, footer_text=footer_text)


class TextView:
    """Plain text streamed to a terminal (or a notebook's stdout with ``--plain``)."""

    def __init__(self, out: TextIO | None = None, *, notes: list[str] | None = None) -> None:
        self._out = out
        self._thinking_open = False
        self._notes = notes or []

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout  # looked up late: IPython swaps stdout per cell

    def thinking(self, text: str) -> None:
        if not self._thinking_open:
            self.out.write("Thinking: ")
            self._thinking_open = True
        self.out.write(text)
        self.out.flush()

    def content(self, text: str) -> None:
        if self._thinking_open:
            self.out.write("\n\n")
            self._thinking_open = False
        self.out.write(text)
        self.out.flush()

    def finish(self, outcome: Outcome) -> None:
        lines = []
        if outcome.error is not None:
            lines.append(f"[error: {outcome.error.message}]")
        lines.append("[" + " · ".join(footer_parts(outcome) + self._notes) + "]")
        self.out.write("\n\n" + "\n".join(lines) + "\n")
        self.out.flush()


class QuietView:
    """Shows nothing (``-q``: the answer only goes into a variable)."""

    def thinking(self, text: str) -> None:
        pass

    def content(self, text: str) -> None:
        pass

    def finish(self, outcome: Any) -> None:
        pass
