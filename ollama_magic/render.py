"""Live display of a streaming answer: markdown rendered as it grows, updated in place.

Shaped like rich's ``Live``: :meth:`LiveMarkdown.feed` is cheap and only repaints when a frame
is due (at most ``fps`` per second); :meth:`LiveMarkdown.finish` always paints the last frame.
The clock and the display sink are injected, so tests need neither sleeps nor a frontend.

What goes over the wire stays proportional to the answer's length. An answer is shown as a few
display outputs ("slots") plus one live output at the bottom. Only the live output is updated
each frame: it holds the blocks finished since the last freeze and the unfinished tail. When its
finished part passes ``segment_bytes``, it is frozen into a slot; slots of similar size merge
like a binary counter, so there are only about log2(answer / segment_bytes) of them and each
byte is resent a logarithmic number of times. The final frame puts the whole answer, rendered
at once, into the first output and empties the others, so a saved notebook shows it once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ollama_magic.markdown import IncrementalMarkdown, escape

__all__ = ["MUTED", "DisplayHandle", "DisplaySink", "IPythonSink", "LiveMarkdown", "escape"]

#: Muted lines (footers, notes), like JupyterLab's secondary text, with a fallback colour for
#: other frontends.
MUTED = "color: var(--jp-ui-font-color2, #6e6e6e); font-size: 0.85em"

Bundle = dict[str, str]


class DisplayHandle(Protocol):
    """One output that can be replaced in place."""

    def update(self, bundle: Bundle, metadata: dict[str, Any]) -> None:
        """Replace the output's content."""


class DisplaySink(Protocol):
    """Where outputs go: IPython's display system, or a recorder in tests."""

    def display(self, bundle: Bundle, metadata: dict[str, Any]) -> DisplayHandle:
        """Show a new output below the previous ones and return its handle."""


class _IPythonHandle:
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def update(self, bundle: Bundle, metadata: dict[str, Any]) -> None:
        self._handle.update(bundle, raw=True, metadata=metadata)


class IPythonSink:
    """Outputs through ``IPython.display.display(..., display_id=True)``."""

    def display(self, bundle: Bundle, metadata: dict[str, Any]) -> DisplayHandle:
        from IPython.display import display

        return _IPythonHandle(display(bundle, raw=True, metadata=metadata, display_id=True))


@dataclass
class _Slot:
    """A display output holding a run of finished blocks, [start, end) of the source text."""

    handle: DisplayHandle | None  # None until first painted
    blocks: list[str] = field(default_factory=list)
    start: int = 0
    end: int = 0
    size: int = 0

    def take(self, other: _Slot) -> None:
        """Append another run of blocks (which follows this one in the text)."""
        if not self.blocks:
            self.start = other.start
        self.blocks += other.blocks
        self.end = other.end
        self.size += other.size

    def clear(self, at: int) -> None:
        self.blocks, self.start, self.end, self.size = [], at, at, 0


class LiveMarkdown:
    """Markdown that renders while it streams, in a handful of outputs updated in place.

    Args:
        sink: Where outputs go (:class:`IPythonSink` in a notebook).
        fps: At most this many repaints per second while streaming.
        clock: Monotonic seconds; injected by tests.
        segment_bytes: Finished HTML kept in the live output before it is frozen into a slot.
        byte_rate: Live frames are spaced so that at most about this many bytes per second
            go out, however long the unfinished block at the end is.
        wrap: Turns body HTML into the HTML of one output (a CSS class, say).
    """

    def __init__(
        self,
        sink: DisplaySink,
        *,
        fps: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        segment_bytes: int = 512,
        byte_rate: float = 20_000.0,
        wrap: Callable[[str], str] = lambda body: body,
    ) -> None:
        self._sink = sink
        self._interval = 1.0 / fps if fps > 0 else 0.0
        self._clock = clock
        self._segment_bytes = segment_bytes
        self._byte_rate = byte_rate
        self._wrap = wrap
        self._markdown = IncrementalMarkdown()
        self._slots: list[_Slot] = []
        self._live: _Slot | None = None
        self._last_paint = float("-inf")
        self._wait = self._interval  # until the next repaint; longer after a large frame
        self._last_frame_bytes = 0
        self.frames = 0
        """How many times an output was sent or updated."""
        self.bytes_sent = 0
        """Bytes of HTML and text sent to the frontend in all frames."""

    @property
    def text(self) -> str:
        """All text fed so far."""
        return self._markdown.text

    @property
    def length(self) -> int:
        """How many characters were fed."""
        return self._markdown.length

    @property
    def outputs(self) -> int:
        """How many display outputs this answer uses."""
        return len(self._slots) + (self._live is not None)

    def feed(self, text: str) -> None:
        """Append streamed text; repaint if a frame is due."""
        if not text:
            return
        self._markdown.feed(text)
        if self._clock() - self._last_paint >= self._wait:
            self.refresh()

    def next_frame_in(self) -> float:
        """Seconds until a repaint is due (0: the next text repaints)."""
        return max(0.0, self._last_paint + self._wait - self._clock())

    def refresh(self, suffix_html: str = "") -> None:
        """Repaint the live output now (``suffix_html`` goes under the text, e.g. a status)."""
        new_blocks, tail_html = self._markdown.update()
        live = self._ensure_live()
        if new_blocks:
            run = _Slot(live.handle, new_blocks, live.end, self._markdown.committed_length)
            run.size = sum(len(b) for b in new_blocks)
            live.take(run)
            if live.size >= self._segment_bytes:
                self._freeze()
                live = self._ensure_live()
        body = "".join(live.blocks) + tail_html + suffix_html
        self._paint(live, body, self._markdown.text_since(live.start))
        self._last_paint = self._clock()
        # A long unfinished block (a big code fence, a long list) is parsed and sent whole
        # each frame; spacing frames by their size keeps bytes and CPU per second bounded,
        # so the total stays linear in the answer's length however it is shaped.
        self._wait = max(self._interval, self._last_frame_bytes / self._byte_rate)

    def finish(
        self,
        footer_html: str = "",
        metadata: dict[str, Any] | None = None,
        *,
        body_html: str | None = None,
        footer_text: str = "",
        wrap: Callable[[str], str] | None = None,
    ) -> None:
        """Paint the final frame: the whole answer rendered at once, plus ``footer_html``.

        It goes into the first output; any other output is emptied, so the answer shows once.
        ``footer_text`` ends the text/plain version (what terminals and text exports show);
        ``wrap``, if given, replaces the live frames' wrapper for this last one.
        """
        if wrap is not None:
            self._wrap = wrap
        body = self._markdown.final_html() if body_html is None else body_html
        slots = [*self._slots, *([self._live] if self._live else [])]
        first = slots[0] if slots else _Slot(None)
        text = self._markdown.text + footer_text
        self._paint(first, body + footer_html, text, metadata or {})
        for slot in slots[1:]:
            self._paint(slot, "", "")
        self._slots, self._live = [], None

    def _ensure_live(self) -> _Slot:
        if self._live is None:
            start = self._slots[-1].end if self._slots else 0
            self._live = _Slot(None, start=start, end=start)
        return self._live

    def _freeze(self) -> None:
        """Move the live output's finished blocks into a slot, merging slots of similar size."""
        live = self._live
        assert live is not None
        carry = _Slot(live.handle)
        carry.take(live)
        occupied = [i for i, slot in enumerate(self._slots) if slot.blocks]
        last = occupied[-1] if occupied else -1
        k = last
        while k >= 0 and self._slots[k].size <= 2 * carry.size:
            merged = _Slot(self._slots[k].handle)
            merged.take(self._slots[k])
            merged.take(carry)
            carry = merged
            k -= 1
        target = k + 1
        if target < len(self._slots):
            # An existing slot (emptied by a merge, or merged into) takes the run.
            slot = self._slots[target]
            slot.clear(carry.start)
            slot.take(carry)
            self._paint_slot(slot)
            for emptied in self._slots[target + 1 : last + 1]:
                emptied.clear(carry.end)
                self._paint(emptied, "", "")
            live.clear(carry.end)
        else:
            # No free slot: the live output becomes one, and a new live output opens below.
            self._paint_slot(live)
            self._slots.append(live)
            self._live = None

    def _paint_slot(self, slot: _Slot) -> None:
        text = self._markdown.text_since(slot.start)[: slot.end - slot.start]
        self._paint(slot, "".join(slot.blocks), text)

    def _paint(
        self, slot: _Slot, body_html: str, text: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Show ``slot``'s content: a new output the first time, an in-place update after."""
        bundle = {"text/html": self._wrap(body_html) if body_html else "", "text/plain": text}
        self._last_frame_bytes = sum(len(v) for v in bundle.values())
        self.frames += 1
        self.bytes_sent += sum(len(v.encode()) for v in bundle.values())
        if slot.handle is None:
            slot.handle = self._sink.display(bundle, metadata or {})
        else:
            slot.handle.update(bundle, metadata or {})
