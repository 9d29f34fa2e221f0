"""Go's `encoding/json` as clients see it: compact output, `%q` quoting, decoder error texts.

The real server is written in Go, so what a client can observe byte for byte (JSON escaping, the
quoting in error messages, the text of a syntax error) is reproduced here the way Go does it.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from typing import Any

# Go's json.Marshal escapes these so JSON can be embedded in HTML; clients see the escapes.
_GO_ESCAPES = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)
# strconv.Quote's one-letter escapes.
_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_json(obj: Any) -> bytes:
    """Encode *obj* like Go's `json.Marshal`: compact, UTF-8, HTML characters escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.translate(_GO_ESCAPES).encode("utf-8", "replace")


def _is_print(char: str) -> bool:
    """Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols, ASCII space."""
    code = ord(char)
    if code <= 0xFF:  # Go special-cases Latin-1 exactly like this
        return 0x20 <= code <= 0x7E or (0xA1 <= code <= 0xFF and code != 0xAD)
    return unicodedata.category(char)[0] in "LMNPS"


def _quote_rune(char: str, quote: str) -> str:
    """One character as `strconv.Quote` writes it inside *quote* marks."""
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        char, code = "\ufffd", 0xFFFD  # a Go string cannot hold a lone surrogate
    if char in (quote, "\\"):
        return "\\" + char
    if _is_print(char):
        return char
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(text: str) -> str:
    """Quote *text* like Go's `%q` (`strconv.Quote`).

    >>> print(go_quote('say "hi"\\n'), go_quote("tab\\there"), go_quote("caf\\u00e9\\x01"))
    "say \\"hi\\"\\n" "tab\\there" "café\\x01"
    """
    return '"' + "".join(_quote_rune(char, '"') for char in text) + '"'


def quote_char(byte: int) -> str:
    """Go's `quoteChar`: one input *byte* as syntax errors show it.

    Go converts the byte itself to a character, so the lead byte of a multi-byte UTF-8
    character shows as a Latin-1 letter: a curly quote (E2 80 9C) is reported as 'â'.

    >>> print(quote_char(ord("x")), quote_char(0x27), quote_char(0x01), quote_char(0xE2))
    'x' '\\'' '\\x01' 'â'
    """
    if byte == 0x27:
        return "'\\''"
    if byte == 0x22:
        return "'\"'"
    return "'" + _quote_rune(chr(byte), '"') + "'"


def json_kind(value: Any) -> str:
    """The JSON kind Go names in `cannot unmarshal <kind> into ...` messages."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def go_type_name(value: Any) -> str:
    """Name of the Go type `encoding/json` decodes *value* into when the target is `any`."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return "<nil>"


# ---------------------------------------------------------------------------------------------
# Syntax errors: encoding/json/scanner.go, ported state for state
# ---------------------------------------------------------------------------------------------

_SPACE = frozenset(b" \t\r\n")
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'bfnrt\\/"')
_OBJECT_KEY, _OBJECT_VALUE, _ARRAY_VALUE = range(3)  # Go's parseState values

State = Callable[[int], str | None]


class _Scanner:
    """Go's JSON scanner. Each state takes the next byte and returns None (fine) or the context
    of an error (e.g. "after object key"); `step` is the current state, as in Go."""

    def __init__(self) -> None:
        self.step: State = self.begin_value
        self.stack: list[int] = []
        self.done = False  # the top-level value is complete

    def begin_value_or_empty(self, c: int) -> str | None:
        """stateBeginValueOrEmpty: after `[`."""
        if c in _SPACE:
            return None
        if c == ord("]"):
            return self.end_value(c)
        return self.begin_value(c)

    def begin_value(self, c: int) -> str | None:
        """stateBeginValue: where any value may start."""
        if c in _SPACE:
            return None
        if c == ord("{"):
            self.stack.append(_OBJECT_KEY)
            self.step = self.begin_string_or_empty
        elif c == ord("["):
            self.stack.append(_ARRAY_VALUE)
            self.step = self.begin_value_or_empty
        elif c == ord('"'):
            self.step = self.in_string
        elif c == ord("-"):
            self.step = self.negative
        elif c == ord("0"):
            self.step = self.zero
        elif c in _DIGITS:
            self.step = self.integer
        elif c in b"tfn":
            word = {ord("t"): "true", ord("f"): "false", ord("n"): "null"}[c]
            self.step = self.literal(word, 1)
        else:
            return "looking for beginning of value"
        return None

    def begin_string_or_empty(self, c: int) -> str | None:
        """stateBeginStringOrEmpty: after `{`."""
        if c in _SPACE:
            return None
        if c == ord("}"):
            self.stack[-1] = _OBJECT_VALUE
            return self.end_value(c)
        return self.begin_string(c)

    def begin_string(self, c: int) -> str | None:
        """stateBeginString: after `,` in an object, where a key must start."""
        if c in _SPACE:
            return None
        if c == ord('"'):
            self.step = self.in_string
            return None
        return "looking for beginning of object key string"

    def end_value(self, c: int) -> str | None:
        """stateEndValue: after a complete value (and stateEndTop at the top level)."""
        if not self.stack:
            self.done = True  # a top-level literal ended before this byte
            return None
        if c in _SPACE:
            self.step = self.end_value
            return None
        top = self.stack[-1]
        if top == _OBJECT_KEY:
            if c == ord(":"):
                self.stack[-1] = _OBJECT_VALUE
                self.step = self.begin_value
                return None
            return "after object key"
        if top == _OBJECT_VALUE:
            if c == ord(","):
                self.stack[-1] = _OBJECT_KEY
                self.step = self.begin_string
                return None
            if c == ord("}"):
                self.pop()
                return None
            return "after object key:value pair"
        if c == ord(","):
            self.step = self.begin_value
            return None
        if c == ord("]"):
            self.pop()
            return None
        return "after array element"

    def pop(self) -> None:
        """popParseState: a container closed."""
        self.stack.pop()
        self.done = not self.stack
        self.step = self.end_value

    def in_string(self, c: int) -> str | None:
        """stateInString: inside a string."""
        if c == ord('"'):
            self.step = self.end_value
        elif c == ord("\\"):
            self.step = self.in_string_escape
        elif c < 0x20:
            return "in string literal"
        return None

    def in_string_escape(self, c: int) -> str | None:
        """stateInStringEsc: after a backslash in a string."""
        if c in _ESCAPES:
            self.step = self.in_string
            return None
        if c == ord("u"):
            self.step = self.unicode_escape(4)
            return None
        return "in string escape code"

    def unicode_escape(self, left: int) -> State:
        """stateInStringEscU...: *left* hex digits of a `\\u` escape to go."""

        def state(c: int) -> str | None:
            if c not in _HEX:
                return "in \\u hexadecimal character escape"
            self.step = self.unicode_escape(left - 1) if left > 1 else self.in_string
            return None

        return state

    def literal(self, word: str, at: int) -> State:
        """stateT, stateTr, ...: inside `true`, `false` or `null`, at letter *at*."""

        def state(c: int) -> str | None:
            expected = ord(word[at])
            if c != expected:
                return f"in literal {word} (expecting {quote_char(expected)})"
            self.step = self.literal(word, at + 1) if at + 1 < len(word) else self.end_value
            return None

        return state

    def negative(self, c: int) -> str | None:
        """stateNeg: after a minus sign."""
        if c == ord("0"):
            self.step = self.zero
        elif c in _DIGITS:
            self.step = self.integer
        else:
            return "in numeric literal"
        return None

    def integer(self, c: int) -> str | None:
        """state1: in the digits of a number not starting with 0."""
        if c in _DIGITS:
            return None
        return self.zero(c)

    def zero(self, c: int) -> str | None:
        """state0: after the integer part (or a leading 0)."""
        if c == ord("."):
            self.step = self.dot
            return None
        if c in b"eE":
            self.step = self.exponent
            return None
        return self.end_value(c)

    def dot(self, c: int) -> str | None:
        """stateDot: after the decimal point."""
        if c in _DIGITS:
            self.step = self.fraction
            return None
        return "after decimal point in numeric literal"

    def fraction(self, c: int) -> str | None:
        """stateDot0: in the digits after the decimal point."""
        if c in _DIGITS:
            return None
        if c in b"eE":
            self.step = self.exponent
            return None
        return self.end_value(c)

    def exponent(self, c: int) -> str | None:
        """stateE: after `e` or `E`."""
        if c in b"+-":
            self.step = self.exponent_sign
            return None
        return self.exponent_sign(c)

    def exponent_sign(self, c: int) -> str | None:
        """stateESign: after the exponent's sign, where a digit must come."""
        if c in _DIGITS:
            self.step = self.exponent_digits
            return None
        return "in exponent of numeric literal"

    def exponent_digits(self, c: int) -> str | None:
        """stateE0: in the digits of the exponent."""
        if c in _DIGITS:
            return None
        return self.end_value(c)


def syntax_error(data: bytes) -> str | None:
    """What Go's `json.Decoder` says about the first JSON value in *data*; None if it is fine.

    Only the first value counts (trailing data is left for a next `Decode`). Input that ends
    inside the value is `unexpected EOF`; input that is all white space is the caller's case.

    >>> syntax_error(b'{"model": "x"} trailing') is None
    True
    >>> syntax_error(b'{"temperature": .5}')
    "invalid character '.' looking for beginning of value"
    >>> syntax_error(b'{"model": "x",')
    'unexpected EOF'
    """
    scanner = _Scanner()
    for byte in data:
        context = scanner.step(byte)
        if context is not None:
            return f"invalid character {quote_char(byte)} {context}"
        if scanner.done:
            return None
    # At EOF Go feeds one space, which completes a top-level number and nothing else.
    if scanner.step(ord(" ")) is None and scanner.done:
        return None
    return "unexpected EOF"
