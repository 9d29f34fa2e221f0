"""``{name}`` interpolation of prompts from the notebook namespace, leaving everything else alone.

Prompts are full of braces that are not fields: JSON, dict literals, code, LaTeX. Python's
``str.format`` would fail on them (the trouble of jupyter-ai's ``%%ai``), so only a brace pair
holding a well-formed field whose name exists in the namespace is replaced, and only when it
formats without error. ``{{`` and ``}}`` give literal braces as in ``str.format``, except that a
``}`` closing a literal ``{`` stays itself, so nested JSON such as ``{"a": {"b": 1}}`` survives.
A format spec may not start with a space, so ``{i: 0}`` stays a dict literal even when ``i`` is
a variable (write ``{i:>5}``, not ``{i: >5}``).

>>> interpolate("Hi {name}! {n:.2f} {xs[0]} {name!r}", {"name": "Ada", "n": 2, "xs": [7]})
"Hi Ada! 2.00 7 'Ada'"
>>> interpolate('JSON {"a": {"b": 1}} and {missing} and \\\\frac{1}{2}', {})
'JSON {"a": {"b": 1}} and {missing} and \\\\frac{1}{2}'
>>> interpolate("{{name}} is literal", {"name": "Ada"})
'{name} is literal'
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Interpolation", "interpolate", "interpolate_report"]

# A replacement field: a name, then .attr / [index] parts, an optional !conversion and :spec.
_FIELD = re.compile(
    r"""\{
    (?P<field>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[[^\[\]{}]+\])*)
    (?:!(?P<conversion>[rsa]))?
    (?::(?P<spec>[^{}\s][^{}]*))?  # a spec starting with a space is a dict literal: {i: 0}
    \}""",
    re.VERBOSE,
)
_FORMATTER = string.Formatter()
# A brace after a LaTeX command and its earlier arguments (\frac{a}{b}, \sqrt[3]{x}) is an
# argument, not a field, whatever variables the notebook has.
_LATEX_ARGUMENT = re.compile(r"\\[A-Za-z]+\*?(?:\[[^\]{}]*\])?(?:\{[^{}]*\})*$")
# Braces after these are math (x^{n}, a_{k}), shell or JavaScript (${HOME}) or a regex
# quantifier ([a-z]{n}): filled when the name exists, but an undefined one is not worth a note.
_NOT_NOTED_AFTER = ("$", "^", "_", "]")
_LOOKBEHIND = 100  # characters searched for a LaTeX command, so the cost stays linear


@dataclass(frozen=True)
class Interpolation:
    """A filled prompt, and which ``{fields}`` were filled or named nothing defined."""

    text: str
    filled: tuple[str, ...] = ()
    """The fields replaced by values, as written (``name``, ``df.shape``), first use order."""
    undefined: tuple[str, ...] = ()
    """Fields whose name is not defined in the namespace: sent as typed."""
    unformatted: tuple[str, ...] = ()
    """Fields whose name is defined but that did not fill (``{row.typo}``, ``{xs[9]}``)."""


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    """Fill ``{field}`` from ``namespace``; anything that is not such a field stays as typed."""
    return interpolate_report(text, namespace).text


def interpolate_report(text: str, namespace: Mapping[str, Any]) -> Interpolation:
    """:func:`interpolate`, also saying which fields were filled and which named nothing.

    >>> r = interpolate_report("{topic} for {audience}, \\\\frac{a}{b}", {"topic": "E", "a": 1})
    >>> r.text, r.filled, r.undefined
    ('E for {audience}, \\\\frac{a}{b}', ('topic',), ('audience',))
    """
    filled: dict[str, None] = {}
    undefined: dict[str, None] = {}
    unformatted: dict[str, None] = {}
    out: list[str] = []
    opened: list[bool] = []  # for each open literal brace: was it written "{{"?
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "{":
            if text.startswith("{{", i):
                opened.append(True)
                out.append("{")
                i += 2
                continue
            match = _FIELD.match(text, i)
            if match and _LATEX_ARGUMENT.search(text, max(0, i - _LOOKBEHIND), i):
                match = None
            value = _format(match, namespace) if match else None
            if match and value is not None:
                filled[match.group("field")] = None
                out.append(value)
                i = match.end()
                continue
            if match and _root(match) not in namespace and not text[:i].endswith(_NOT_NOTED_AFTER):
                undefined[match.group("field")] = None
            elif match and _root(match) in namespace:
                unformatted[match.group("field")] = None
            opened.append(False)
            out.append("{")
            i += 1
        elif char == "}":
            if opened and not opened[-1]:
                opened.pop()  # closes a literal "{": keep it as typed
                out.append("}")
                i += 1
            elif text.startswith("}}", i):
                if opened:
                    opened.pop()
                out.append("}")
                i += 2
            else:
                out.append("}")
                i += 1
        else:
            start = i
            while i < n and text[i] not in "{}":
                i += 1
            out.append(text[start:i])
    return Interpolation("".join(out), tuple(filled), tuple(undefined), tuple(unformatted))


def _root(match: re.Match[str]) -> str:
    """The variable a field starts from: ``df`` in ``{df.shape[0]}``."""
    return re.split(r"[.\[]", match.group("field"), maxsplit=1)[0]


def _format(match: re.Match[str], namespace: Mapping[str, Any]) -> str | None:
    """The formatted field, or None when it names nothing or does not format."""
    field = match.group("field")
    if _root(match) not in namespace:
        return None
    try:
        value, _ = _FORMATTER.get_field(field, (), namespace)
        value = _FORMATTER.convert_field(value, match.group("conversion"))
        formatted: str = _FORMATTER.format_field(value, match.group("spec") or "")
        return formatted
    except Exception:  # a spec that does not fit, an index out of range: not a field after all
        return None
