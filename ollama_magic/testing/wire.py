"""Wire basics: content types, `ApiError`, and Go's timestamp and duration formats."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any

from ollama_magic.testing.gojson import go_type_name

JSON_UTF8 = "application/json; charset=utf-8"
JSON_PLAIN = "application/json"
NDJSON = "application/x-ndjson"

# time.Duration(math.MaxInt64): what a negative keep_alive turns into.
MAX_DURATION_NS = 2**63 - 1


class ApiError(Exception):
    """An error answered as `{"error": message}` with an HTTP status.

    Attributes:
        status: HTTP status code.
        message: the text of the `error` field.
        content_type: `application/json; charset=utf-8` for handler errors (gin `c.JSON`),
            `application/json` for errors raised by the model runner before the first chunk.
    """

    def __init__(self, status: int, message: str, content_type: str = JSON_UTF8) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.content_type = content_type


def rfc3339nano(ns: int | None = None) -> str:
    """Format a Unix time in nanoseconds like Go's `time.RFC3339Nano` in UTC.

    Trailing zeros of the fraction are trimmed, so its length varies, as on the real server.
    """
    if ns is None:
        ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def datetime_ns(value: datetime) -> int:
    """Convert an aware (or UTC-naive) datetime to Unix nanoseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_NUMBER = re.compile(r"([0-9]*)(?:\.([0-9]*))?")  # ASCII digits only, as in Go
_DURATION_UNIT = re.compile(r"[^0-9.]*")


def _time_quote(text: str) -> str:
    """Quote *text* as package time does in its errors: unlike `%q`, every byte of a non-ASCII
    or control character is written as `\\xHH`.

    >>> print(_time_quote('5\u00bdh'), _time_quote('a"b'))
    "5\\xc2\\xbdh" "a\\"b"
    """
    out: list[str] = []
    for char in text:
        if 0xD800 <= ord(char) <= 0xDFFF:
            char = "\ufffd"  # what Go decoded a lone surrogate escape into
        if ord(char) >= 0x80 or ord(char) < 0x20:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
        else:
            out.append("\\" + char if char in '"\\' else char)
    return '"' + "".join(out) + '"'


def parse_go_duration(text: str) -> int:
    """Parse a Go duration string ("5m", "1h30m", "-1m", "0") into nanoseconds.

    Raises:
        ValueError: with Go's `time.ParseDuration` message, e.g. for "-1" (no unit).
    """
    original = text
    quoted = _time_quote(original)
    negative = False
    if text[:1] in ("+", "-"):
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0
    while text:
        match = _DURATION_NUMBER.match(text)
        assert match is not None  # the pattern matches the empty string
        whole, fraction = match.group(1), match.group(2)
        if not whole and not fraction:
            raise ValueError(f"time: invalid duration {quoted}")
        text = text[match.end() :]
        unit_match = _DURATION_UNIT.match(text)
        unit = unit_match.group(0) if unit_match else ""
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"time: unknown unit {_time_quote(unit)} in duration {quoted}")
        text = text[len(unit) :]
        scale = _DURATION_UNITS[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(int(fraction) * scale / 10 ** len(fraction))
    return -total if negative else total


def keep_alive_ns(value: Any) -> int | None:
    """Turn a decoded `keep_alive` value into nanoseconds (None: server default).

    Raises:
        ApiError: 400 with Go's message for a unit-less string or an unsupported type.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, f"Unsupported type: '{go_type_name(value)}'")
    if isinstance(value, str):
        try:
            ns = parse_go_duration(value)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
    else:
        if value < 0:
            return MAX_DURATION_NS
        ns = int(value * 1_000_000_000)
    return MAX_DURATION_NS if ns < 0 else ns
