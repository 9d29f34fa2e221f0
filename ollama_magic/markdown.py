"""Safe markdown rendering, whole or incremental, for untrusted model output.

Model output is untrusted: a model can be talked into writing ``<img onerror=…>`` or a
``javascript:`` link, and JupyterLab does not sanitize the live output of a cell that just ran.
So HTML comes only from markdown-it-py's ``js-default`` preset (raw HTML off: tags are escaped;
``javascript:``, ``vbscript:``, ``file:`` links dropped, and ``data:`` ones unless plain base64
images), and remote images become plain links, since loading one would send data to whoever
chose its URL.

The incremental renderer keeps streaming cheap: finished top-level blocks are rendered once and
cached, and only the unfinished tail is parsed again as text arrives.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common import normalize_url
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

__all__ = ["IncrementalMarkdown", "escape", "make_markdown", "render_markdown"]


class _SafeMarkdownIt(MarkdownIt):
    """markdown-it with the stricter link check below (it asks ``self.validateLink``)."""

    def validateLink(self, url: str) -> bool:
        return _validate_link(url)


def make_markdown() -> MarkdownIt:
    """A markdown-it parser that is safe for untrusted text (see the module docstring)."""
    md = _SafeMarkdownIt("js-default")
    md.add_render_rule("image", _render_image)
    md.add_render_rule("link_open", _render_link_open)
    return md


# The only data: URIs let through: plain base64 of the image formats browsers show. markdown-it
# admits any ``data:image/png;…`` (parameters, percent-encoded text), which is then neither a
# picture we can vouch for nor a link worth following (tests/test_xss.py checks every URL).
_INLINE_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[a-z0-9+/]*={0,2}", re.I)


def _validate_link(url: str) -> bool:
    """markdown-it's check (no javascript:, vbscript:, file:), and data: only as above."""
    if url.strip()[:5].lower() == "data:":
        return bool(_INLINE_IMAGE.fullmatch(url.strip()))
    return normalize_url.validateLink(url)


def _render_image(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """Inline ``data:`` images render; remote ones become a link (no automatic request)."""
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    if _INLINE_IMAGE.fullmatch(src):
        return self.image(tokens, idx, options, env)
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    href = escape(src)
    return f'<a href="{href}" target="_blank" rel="noopener noreferrer">[image: {escape(alt)}]</a>'


def _render_link_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """Links open in a new tab and do not tell the target where they came from."""
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


def escape(text: str) -> str:
    """HTML-escape text, quotes included, so it is safe in an element and in an attribute."""
    return html.escape(text, quote=True)


_DEFAULT = make_markdown()


def render_markdown(text: str, md: MarkdownIt | None = None) -> str:
    """Render a whole text to safe HTML at once."""
    rendered: str = (md or _DEFAULT).render(text)  # markdown-it types render() as Any
    return rendered


# A line that starts a list item: committing just before it could split a list in two (and
# change a loose list into a tight one), so such a line is never a commit point.
_LIST_MARKER = re.compile(r"(?:[*+-]|\d{1,9}[.)])(?:[ \t]|$)")


class IncrementalMarkdown:
    """Markdown rendered as it grows: finished blocks once, the unfinished tail each time.

    Every top-level block but the last of the uncommitted tail is final: nothing appended later
    can change it. Those are rendered once and committed; the tail restarts at the last block.
    A block is committed only when the next block's first line is complete (``2`` may become
    ``2. item``) and that line is neither indented nor a list item (either may still join the
    block before it). Link reference definitions that come after their use are the one thing
    this cannot get right, so when the text has any, :meth:`final_html` renders it whole once
    more; otherwise it joins the committed blocks and the tail (no second render).

    >>> inc = IncrementalMarkdown()
    >>> inc.feed("# Title\\n\\nSome *text*")
    >>> inc.update()  # the next block's first line is unfinished: nothing final yet
    ([], '<h1>Title</h1>\\n<p>Some <em>text</em></p>\\n')
    >>> inc.feed(" more.\\n")
    >>> inc.update()  # now it is complete: the heading is final
    (['<h1>Title</h1>\\n'], '<p>Some <em>text</em> more.</p>\\n')
    """

    def __init__(self, md: MarkdownIt | None = None) -> None:
        self.md = md or _DEFAULT
        self._parts: list[str] = []  # what was fed, in order (joined only when needed)
        self._length = 0
        self._committed_length = 0
        self._pending_cr = False
        self._references: dict[str, Any] = {}
        self._blocks: list[str] = []  # HTML of the committed blocks, in order
        self._defines_references = False  # the text so far has a link reference definition

    @property
    def text(self) -> str:
        """Everything fed so far (line breaks normalised to ``\\n``)."""
        return self.text_since(0)

    @property
    def committed_length(self) -> int:
        """How many characters of :attr:`text` lie in committed blocks."""
        return self._committed_length

    @property
    def _tail(self) -> str:
        return self.text_since(self._committed_length)

    def text_since(self, offset: int) -> str:
        """The text from ``offset`` on, joining only the parts it needs (cheap near the end)."""
        if offset >= self._length:
            return ""
        parts = self._parts
        head = len(parts[0])  # the folded text so far (or the first piece)
        if offset >= head:
            return "".join(parts[1:])[offset - head :]
        return "".join(parts)[offset:]

    def feed(self, text: str) -> None:
        """Append text; rendering waits for :meth:`update`.

        ``\\r\\n`` and lone ``\\r`` become ``\\n`` (markdown-it counts both as line breaks; the
        commit logic counts lines), also when a ``\\r\\n`` is split between two pieces.
        """
        if self._pending_cr or "\r" in text:
            if self._pending_cr:
                text = "\r" + text
                self._pending_cr = False
            if text.endswith("\r"):
                text, self._pending_cr = text[:-1], True
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if text:
            self._parts.append(text)
            self._length += len(text)
            if len(self._parts) >= 512:
                # Many small pieces cost more memory than the text itself: fold them into one
                # string now and then (each fold copies the text: rare enough to stay cheap).
                self._parts = ["".join(self._parts)]

    @property
    def length(self) -> int:
        """How many characters were fed (without building the text)."""
        return self._length

    def update(self) -> tuple[list[str], str]:
        """Commit what is final; return (HTML of newly committed blocks, HTML of the tail)."""
        env: dict[str, Any] = {"references": dict(self._references)}
        tail = self._tail
        tokens = self.md.parse(tail, env)
        self._defines_references = bool(env.get("references"))
        split = self._commit_point(tokens, tail)
        new: list[str] = []
        if split is not None:
            index, line = split
            new.append(self.md.renderer.render(tokens[:index], self.md.options, env))
            self._blocks.append(new[-1])
            for label, ref in env.get("references", {}).items():
                # Keep only definitions that lie in the committed text (the rest is re-parsed).
                if label not in self._references and (ref.get("map") or [0])[0] < line:
                    self._references[label] = ref
            self._committed_length += _offset_of_line(tail, line)
            tokens = tokens[index:]
        return new, self.md.renderer.render(tokens, self.md.options, env)

    def _commit_point(self, tokens: list[Token], tail: str) -> tuple[int, int] | None:
        """(token index, tail line) where the last committable block boundary is, if any."""
        starts = [
            (i, t.map[0]) for i, t in enumerate(tokens) if t.level == 0 and t.nesting >= 0 and t.map
        ]
        complete_lines = tail.count("\n")
        lines = tail.split("\n")
        for index, line in reversed(starts[1:]):
            if line >= complete_lines:
                continue  # the block's first line is still being written
            first = lines[line]
            if first[:1] in (" ", "\t") or _LIST_MARKER.match(first):
                continue
            return index, line
        return None

    def final_html(self) -> str:
        """The whole text rendered at once: what the incremental frames converge to.

        The stream is over, so a last lone ``\r`` is a line break after all (it joins the text).
        """
        if self._pending_cr:
            self._pending_cr = False
            self.feed("\n")
        _, tail_html = self.update()
        if not self._defines_references:
            # Committed blocks are final, so they and the tail are the one-shot render.
            return "".join(self._blocks) + tail_html
        rendered: str = self.md.render(self.text)  # markdown-it types render() as Any
        return rendered


def _offset_of_line(text: str, line: int) -> int:
    """Character offset where line number ``line`` (0-based) of ``text`` starts."""
    offset = 0
    for _ in range(line):
        offset = text.index("\n", offset) + 1
    return offset
