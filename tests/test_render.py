"""Live markdown display: throttled, in place, few outputs, bytes linear in the answer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ollama_magic.markdown import render_markdown
from ollama_magic.render import LiveMarkdown


@dataclass
class Output:
    bundle: dict
    metadata: dict
    updates: int = 0


@dataclass
class Recorder:
    """A display sink that keeps what a frontend would show."""

    outputs: list[Output] = field(default_factory=list)

    def display(self, bundle, metadata):
        output = Output(bundle, metadata)
        self.outputs.append(output)
        return Handle(output)

    def visible_html(self) -> str:
        return "".join(o.bundle["text/html"] for o in self.outputs)

    def visible_text(self) -> str:
        return "".join(o.bundle["text/plain"] for o in self.outputs)


@dataclass
class Handle:
    output: Output

    def update(self, bundle, metadata):
        self.output.bundle = bundle
        self.output.metadata = metadata
        self.output.updates += 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+", text)


def mixed_answer(paragraphs: int) -> str:
    parts = []
    for i in range(paragraphs):
        kind = i % 5
        if kind == 0:
            parts.append(f"## Section {i}\n\nSome **bold** text and `code` number {i}.\n")
        elif kind == 1:
            parts.append(f"- item {i}\n- item {i} again\n")
        elif kind == 2:
            parts.append(f"```python\nx = {i}\nprint(x < {i + 1})\n```\n")
        elif kind == 3:
            parts.append(f"| n | square |\n|---|---|\n| {i} | {i * i} |\n")
        else:
            parts.append(
                f"Paragraph {i}: naïve café 東京 🎉, *emphasis* and [a link](https://x.org/{i}).\n"
            )
    return "\n".join(parts)


def stream(text: str, *, fps: float = 10.0, tokens_per_second: float = 50.0, **kwargs):
    sink, clock = Recorder(), Clock()
    live = LiveMarkdown(sink, fps=fps, clock=clock, **kwargs)
    frames = []
    for token in tokens(text):
        clock.now += 1 / tokens_per_second
        before = live.frames
        live.feed(token)
        if live.frames != before:
            frames.append((live.text, sink.visible_html(), sink.visible_text()))
    return live, sink, frames


def test_every_frame_shows_the_text_so_far_rendered():
    text = mixed_answer(60)
    _live, _sink, frames = stream(text)
    assert len(frames) > 20
    for so_far, visible_html, visible_text in frames:
        assert visible_html == render_markdown(so_far)
        assert visible_text == so_far


def test_updates_are_throttled_to_the_frame_rate():
    text = mixed_answer(40)
    live, _sink, frames = stream(text, fps=10, tokens_per_second=100)
    seconds = len(tokens(text)) / 100
    # At most one repaint per 0.1 s of stream (plus the occasional freeze of a segment).
    assert len(frames) <= seconds * 10 + 2
    assert live.frames <= seconds * 10 * 1.5 + 5


def test_the_final_frame_shows_the_whole_answer_once_with_metadata():
    text = mixed_answer(300)
    live, sink, _ = stream(text, segment_bytes=2048)
    assert live.outputs > 2, "a long answer should have been split into slots"
    live.finish('<div class="footer">llama3.2</div>', {"ollama_magic": {"model": "llama3.2"}})
    first, *rest = sink.outputs
    assert first.bundle["text/html"] == render_markdown(text) + '<div class="footer">llama3.2</div>'
    assert first.bundle["text/plain"] == text
    assert first.metadata == {"ollama_magic": {"model": "llama3.2"}}
    assert all(o.bundle == {"text/html": "", "text/plain": ""} for o in rest)


def paragraphs(n: int) -> str:
    return "\n\n".join(
        f"Paragraph {i} says something about topic {i % 17}, naïvely." for i in range(n)
    )


def test_a_2000_paragraph_answer_uses_few_outputs_and_linear_bytes():
    text = paragraphs(2000)
    live, sink, _ = stream(text)
    live.finish()
    assert len(sink.outputs) <= 24
    # Re-sending the whole answer each frame at the same frame rate costs about
    # frames * answer / 2; finished blocks must not be resent like that.
    answer_bytes = len(render_markdown(text).encode()) + len(text.encode())
    assert live.bytes_sent < live.frames * answer_bytes / 2 / 20
    # Twice the answer costs about twice the bytes (quadratic growth would be four times).
    half, _, _ = stream(paragraphs(1000))
    half.finish()
    assert live.bytes_sent / half.bytes_sent < 2.6


def test_an_empty_answer_still_gets_its_footer():
    sink = Recorder()
    live = LiveMarkdown(sink, clock=Clock())
    live.finish("<i>no answer</i>")
    assert [o.bundle["text/html"] for o in sink.outputs] == ["<i>no answer</i>"]


def test_untrusted_html_in_a_stream_is_escaped_in_every_frame():
    text = "Hello <img src=x onerror=alert(1)> and <script>alert(2)</script>\n\nMore text here.\n"
    live, sink, frames = stream(text, fps=1000)
    live.finish()
    for _, visible_html, _ in frames:
        assert "<img" not in visible_html and "<script" not in visible_html
    assert "&lt;script&gt;" in sink.outputs[0].bundle["text/html"]


def test_one_long_code_block_or_list_still_costs_linear_bytes():
    # A single unfinished block cannot be committed in parts: frames are spaced by size.
    code = (
        "```python\n" + "".join(f"x_{i} = compute({i}, 'value')\n" for i in range(1000)) + "```\n"
    )
    items = "".join(f"- item number {i} of a long list\n" for i in range(1000))
    for text in (code, items):
        live, _, _ = stream(text)
        live.finish()
        answer_bytes = len(render_markdown(text).encode()) + len(text.encode())
        assert live.bytes_sent < 60 * answer_bytes
        half, _, _ = stream(text[: len(text) // 2])
        half.finish()
        assert live.bytes_sent / half.bytes_sent < 2.6, "twice the block, about twice the bytes"
