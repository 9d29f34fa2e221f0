"""How a batch shows while it runs: a bar in a notebook, one rewritten line in a terminal.

The words come from one place, :func:`status_text` and :func:`summary_lines`; the two views
only lay them out. Labels, answers and a server's reasons for leaving come from the model or
the network, so they are untrusted: control characters go before a terminal sees them, and
everything is escaped before it becomes HTML.

>>> status_text(BatchStatus(total=1000, done=410, failed=2, elapsed=2.64))
'412 / 1,000 rows · 2 failed · 156 rows/s · about 4 s left'
>>> status_text(BatchStatus(total=1000, done=998, failed=2, elapsed=6.4, state="finished"))
'1,000 rows in 6.4 s · 998 answered · 2 failed · 156 rows/s'
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

from ollama_magic.batch import PREVIEW_ROWS, BatchProgress, BatchStatus
from ollama_magic.render import MUTED, DisplayHandle, DisplaySink, IPythonSink, escape
from ollama_magic.terminal import printable

__all__ = [
    "NotebookProgress",
    "TerminalProgress",
    "TransferProgress",
    "format_duration",
    "progress_view",
    "renders_html",
    "status_text",
    "summary_lines",
]

_ANSWER_CHARS = 160
_LABEL_CHARS = 40
_REASON_CHARS = 80
#: Servers named on the host line; more are counted, so the payload stays small.
_HOSTS_SHOWN = 6

_LINE_COLOUR = {
    "interrupted": "color: var(--jp-warn-color1, #ef6c00)",
    "failed": "color: var(--jp-error-color1, #c62828)",
}
_CELL = (
    "text-align: left; padding: 0.1em 0.8em 0.1em 0; white-space: nowrap; overflow: hidden; "
    "text-overflow: ellipsis; max-width: 48em; vertical-align: top"
)


def _one_line(text: str, limit: int) -> str:
    """Untrusted text as one printable line of at most ``limit`` characters."""
    line = " ".join(printable(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _unit(status: BatchStatus, count: int) -> str:
    # "1 row", "2 rows": the unit is given in the plural.
    return status.unit[:-1] if count == 1 and status.unit.endswith("s") else status.unit


def _rate_text(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}"


def format_duration(seconds: float, *, precise: bool = False) -> str:
    """``4 s``, ``1 min 20 s``, ``1 h 3 min``; ``precise`` keeps a tenth under a minute.

    >>> [format_duration(s) for s in (4.2, 80, 3790)], format_duration(6.41, precise=True)
    (['4 s', '1 min 20 s', '1 h 3 min'], '6.4 s')
    """
    if precise and seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = max(1, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def status_text(status: BatchStatus) -> str:
    """Where the batch is, in one line (the same words in every view and in the summary)."""
    total = f"{status.total:,} {_unit(status, status.total)}"
    failed = f"{status.failed:,} failed"
    left = f"{status.left:,} left"
    rate = status.rate
    if status.state in ("interrupted", "failed"):
        interrupted = status.state == "interrupted"
        answered = f"{status.done:,}{f' of {total}' if interrupted else ''} answered"
        counts = ", ".join([answered, *([failed] if status.failed else []), left])
        text = f"Interrupted: {counts}" if interrupted else f"Stopped: no server left; {counts}"
    else:
        if status.state == "finished":
            parts = [f"{total} in {format_duration(status.elapsed, precise=True)}"]
            parts.append(f"{status.done:,} answered")
        else:
            parts = [f"{status.finished:,} / {total}"]
        if status.failed:
            parts.append(failed)
        if rate is not None:
            parts.append(f"{_rate_text(rate)} {status.unit}/s")
        eta = status.eta
        if status.state == "running" and eta is not None and status.left:
            parts.append(f"about {format_duration(eta)} left")
        text = " · ".join(parts)
    if status.skipped:
        text += f" ({status.skipped:,} answered before, not sent again)"
    return text


def _hosts_line(status: BatchStatus) -> str | None:
    """Each server's share, when there are several."""
    if len(status.hosts) < 2:
        return None
    parts = []
    for host in status.hosts[:_HOSTS_SHOWN]:
        name = _one_line(host.host.split("://", 1)[-1], _LABEL_CHARS)
        part = f"{name}: {host.done:,} done"
        if host.failed:
            part += f", {host.failed:,} failed"
        if host.down:
            part += f", down ({_one_line(host.down, _REASON_CHARS)})"
            others_up = any(not other.down for other in status.hosts)
            if host.requeued and others_up:
                moved = _unit(status, host.requeued)
                part += f"; its {host.requeued:,} unfinished {moved} went to the others"
        parts.append(part)
    if len(status.hosts) > _HOSTS_SHOWN:
        parts.append(f"{len(status.hosts) - _HOSTS_SHOWN} more servers")
    return " · ".join(parts)


def summary_lines(status: BatchStatus) -> list[str]:
    """The status line, and each server's share when there are several."""
    hosts = _hosts_line(status)
    return [status_text(status)] + ([hosts] if hosts else [])


def _preview(status: BatchStatus) -> list[tuple[str, str]]:
    """The first answers, each label and answer cut to one short printable line."""
    return [
        (_one_line(label, _LABEL_CHARS), _one_line(answer, _ANSWER_CHARS))
        for label, answer in status.preview[:PREVIEW_ROWS]
    ]


def _bundle(status: BatchStatus) -> dict[str, str]:
    """The whole view as ``text/html`` and ``text/plain``: a few KB, whatever the batch size."""
    lines = summary_lines(status)
    preview = _preview(status)
    # Only numbers go into attributes; every text goes through escape().
    value = status.finished if status.total else 1
    bar = (
        f'<progress max="{max(status.total, 1)}" value="{value}" '
        'style="width: 100%; max-width: 32em; height: 0.9em; margin: 0"></progress>'
    )
    colour = _LINE_COLOUR.get(status.state, "")
    html = [bar, f'<div style="{colour}">{escape(lines[0])}</div>']
    html += [f'<div style="{MUTED}">{escape(line)}</div>' for line in lines[1:]]
    if preview:
        rows = "".join(
            f'<tr><td style="{_CELL}; {MUTED}">{escape(label)}</td>'
            f'<td style="{_CELL}">{escape(answer)}</td></tr>'
            for label, answer in preview
        )
        html.append(
            f'<table style="border-collapse: collapse; margin: 0.3em 0 0 0; font-size: 0.85em">'
            f"<tbody>{rows}</tbody></table>"
        )
    plain = lines + [f"  {label}: {answer}" for label, answer in preview]
    return {
        "text/html": f'<div class="ollama-magic-batch">{"".join(html)}</div>',
        "text/plain": "\n".join(plain),
    }


class NotebookProgress(BatchProgress):
    """A progress bar, the status line and the first answers, in one output updated in place.

    The last update carries the final state, so a saved notebook shows how the batch ended.
    """

    def __init__(self, *, sink: DisplaySink | None = None) -> None:
        self._sink = sink or IPythonSink()
        self._handle: DisplayHandle | None = None
        self._last: dict[str, str] | None = None

    def _show(self, bundle: dict[str, str]) -> None:
        if self._handle is None:
            self._handle = self._sink.display(bundle, {})
        else:
            self._handle.update(bundle, {})
        self._last = bundle

    def update(self, status: BatchStatus) -> None:
        bundle = _bundle(status)
        if bundle != self._last:  # a stalled batch sends nothing new
            self._show(bundle)

    def finish(self, status: BatchStatus) -> None:
        self._show(_bundle(status))


class TerminalProgress(BatchProgress):
    """One line rewritten in place with ``\\r``; the final state, servers and first answers.

    A stream that is not a terminal (a log, a pipe) gets only the final state.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._width = 0  # of the line on screen, for a shorter one to cover

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout  # looked up late: IPython swaps stdout per cell

    def _is_terminal(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            return False

    def _rewrite(self, line: str) -> None:
        self.stream.write("\r" + line + " " * max(0, self._width - len(line)))
        self._width = len(line)

    def update(self, status: BatchStatus) -> None:
        if not self._is_terminal():
            return
        # A line wider than the terminal wraps, and \r would then rewrite only its last part.
        columns = shutil.get_terminal_size().columns
        self._rewrite(printable(status_text(status))[: max(20, columns - 1)])
        self.stream.flush()

    def finish(self, status: BatchStatus) -> None:
        lines = [printable(line) for line in summary_lines(status)]
        lines += [f"  {label}: {answer}" for label, answer in _preview(status)]
        if self._width:
            self._rewrite(lines[0])
            lines[0] = ""
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._width = 0


def progress_view(rich: bool | None, quiet: bool) -> BatchProgress:
    """The view for a batch: none with ``quiet``, a bar where HTML shows, else a text line.

    ``rich`` None: find out from the running IPython, if any (:func:`renders_html`).
    """
    if quiet:
        return BatchProgress()
    if rich is None:
        rich = renders_html()
    return NotebookProgress() if rich else TerminalProgress()


def renders_html() -> bool:
    """Whether displays reach a frontend that renders HTML (not terminal IPython, not Python).

    Terminal IPython's publisher is the base ``DisplayPublisher``, which prints only
    text/plain; kernels (and ``capture_output``) replace it with a subclass.
    """
    if "IPython" not in sys.modules:  # not loaded: do not import it just to find out
        return False
    from IPython import get_ipython
    from IPython.core.displaypub import DisplayPublisher

    shell = get_ipython()
    return shell is not None and type(shell.display_pub) is not DisplayPublisher


class TransferProgress:
    """A progress bar for ``%ollama pull``, ``create``, ``push`` and uploads, updated in place
    (a line rewritten in a terminal)."""

    def __init__(self, verb: str, model: str, *, in_kernel: bool, fps: float) -> None:
        self.verb = verb
        self.model = model
        self.in_kernel = in_kernel
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self.last = float("-inf")
        self.status = "starting"
        self.fraction: float | None = None
        self.handle: DisplayHandle | None = None
        self.last_status = ""

    def update(self, line: Any) -> None:
        self.status = line.status
        self.fraction = line.fraction  # a step without sizes ("writing manifest") has none
        now = time.monotonic()
        if line.status == self.last_status and now - self.last < self.interval:
            return
        self.last, self.last_status = now, line.status
        self._paint()

    def close(self, *, failed: bool = False) -> None:
        if failed:
            self.status = f"{self.status} (stopped)"
        else:
            self.fraction = 1.0  # done: a full bar, not the empty one of a step without sizes
        self._paint()
        if not self.in_kernel:
            sys.stdout.write("\n")

    def _paint(self) -> None:
        percent = f"{self.fraction * 100:5.1f}%" if self.fraction is not None else ""
        text = f"{self.verb} {self.model}: {self.status} {percent}".rstrip()
        if not self.in_kernel:
            # Cut to the terminal's width: a longer line wraps, and \r no longer overwrites it.
            width = max(20, shutil.get_terminal_size().columns - 1)
            line = printable(text)
            line = line if len(line) <= width else line[: width - 1] + "…"
            sys.stdout.write("\r" + line.ljust(min(70, width)))
            sys.stdout.flush()
            return
        value = int((self.fraction or 0) * 1000)
        html = (
            f"<div><code>{escape(self.model)}</code> {escape(self.status)} "
            f'<progress value="{value}" max="1000" style="width: 16em; vertical-align: middle">'
            f"</progress> {percent}</div>"
        )
        bundle = {"text/html": html, "text/plain": printable(text)}
        if self.handle is None:
            self.handle = IPythonSink().display(bundle, {})
        else:
            self.handle.update(bundle, {})
