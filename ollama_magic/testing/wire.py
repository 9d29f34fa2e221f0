"""Wire-level helpers: Go-compatible JSON, timestamps, durations and request decoding.

The real server is written in Go, so everything a client can observe byte for byte (JSON
escaping, timestamp format, the text of decoding errors) is reproduced here the way Go does it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

JSON_UTF8 = "application/json; charset=utf-8"
JSON_PLAIN = "application/json"
NDJSON = "application/x-ndjson"

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

# time.Duration(math.MaxInt64): what a negative keep_alive turns into.
MAX_DURATION_NS = 2**63 - 1

THINK_LEVELS = ("high", "medium", "low", "max")


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


def go_json(obj: Any) -> bytes:
    """Encode *obj* like Go's `json.Marshal`: compact, UTF-8, HTML characters escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.translate(_GO_ESCAPES).encode("utf-8", "replace")


def go_quote(text: str) -> str:
    """Quote *text* like Go's `%q` (close enough for error messages)."""
    return json.dumps(text, ensure_ascii=False)


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
_DURATION_NUMBER = re.compile(r"(\d*)(?:\.(\d*))?")
_DURATION_UNIT = re.compile(r"[^\d.]*")


def parse_go_duration(text: str) -> int:
    """Parse a Go duration string ("5m", "1h30m", "-1m", "0") into nanoseconds.

    Raises:
        ValueError: with Go's `time.ParseDuration` message, e.g. for "-1" (no unit).
    """
    original = text
    quoted = go_quote(original)
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
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {quoted}")
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


# ---------------------------------------------------------------------------------------------
# Request decoding (gin's ShouldBindJSON: json.NewDecoder(body).Decode(&req))
# ---------------------------------------------------------------------------------------------


class _BadConstant(ValueError):
    """NaN/Infinity, which Python's json accepts and Go's rejects."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.char = name.lstrip("-")[:1]


def _reject_constant(name: str) -> Any:
    raise _BadConstant(name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_JSON_SPACE = " \t\n\r"


def _go_quote_char(char: str) -> str:
    """Go's `quoteChar` used in syntax error messages."""
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + json.dumps(char, ensure_ascii=False)[1:-1] + "'"


def _innermost_container(text: str, pos: int) -> str:
    """Return "{" or "[" for the container open at *pos* (strings skipped)."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else "{"


def _syntax_message(exc: json.JSONDecodeError) -> str:
    """Translate a Python JSON syntax error into the Go decoder's wording."""
    text, pos, msg = exc.doc, exc.pos, exc.msg
    if pos >= len(text) or msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = _go_quote_char(text[pos])
    if msg.startswith("Expecting property name"):
        return f"invalid character {char} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {char} after object key"
    if msg.startswith("Expecting ','"):
        if _innermost_container(text, pos) == "[":
            return f"invalid character {char} after array element"
        return f"invalid character {char} after object key:value pair"
    if msg.startswith("Invalid control character"):
        return f"invalid character {char} in string literal"
    if msg.startswith("Invalid \\"):
        escape = text[pos + 1] if text[pos] == "\\" and pos + 1 < len(text) else text[pos]
        return f"invalid character {_go_quote_char(escape)} in string escape code"
    literal = {"t": "true", "f": "false", "n": "null"}.get(text[pos])
    if literal is not None:
        # Go reports the first character that breaks a true/false/null literal.
        for offset, expected in enumerate(literal):
            if pos + offset >= len(text):
                return "unexpected EOF"
            if text[pos + offset] != expected:
                bad = _go_quote_char(text[pos + offset])
                return f"invalid character {bad} in literal {literal} (expecting '{expected}')"
    return f"invalid character {char} looking for beginning of value"


def parse_json_document(raw: bytes) -> Any:
    """Decode the first JSON value of a body like Go's `json.Decoder` (trailing data ignored).

    Raises:
        ApiError: 400 `missing request body` for an empty body, or Go's syntax error text.
    """
    text = raw.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    if start == len(text):
        raise ApiError(400, "missing request body")
    try:
        value, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise ApiError(400, _syntax_message(exc)) from exc
    except _BadConstant as exc:
        raise ApiError(
            400, f"invalid character {_go_quote_char(exc.char)} looking for beginning of value"
        ) from exc
    return value


def check_base64(text: str) -> None:
    """Validate a standard, padded base64 string the way Go's `encoding/base64` does.

    Raises:
        ApiError: 400 `illegal base64 data at input byte N`.
    """
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    significant: list[int] = []  # input offsets of the characters that are not \r or \n
    for offset, char in enumerate(text):
        if char in "\r\n":
            continue
        if char not in alphabet and char != "=":
            raise ApiError(400, f"illegal base64 data at input byte {offset}")
        significant.append(offset)
    chars = "".join(text[i] for i in significant)
    pad = chars.find("=")
    if pad >= 0:
        tail = chars[pad:]
        if tail.strip("=") or len(tail) > 2 or pad % 4 < 2 or len(chars) % 4:
            raise ApiError(400, f"illegal base64 data at input byte {significant[pad]}")
    elif len(chars) % 4:
        quantum = len(chars) - len(chars) % 4
        raise ApiError(400, f"illegal base64 data at input byte {quantum}")


class _Decoder:
    """Checks the fields of one request object against a Go struct description."""

    def __init__(self, struct: str) -> None:
        self.struct = struct
        self.first_type_error: ApiError | None = None

    def type_error(self, field: str, value: Any, go_type: str) -> None:
        # Go's decoder remembers the first type mismatch and keeps going; errors from custom
        # unmarshalers (think, keep_alive, base64) abort at once. Mimic both.
        if self.first_type_error is None:
            kind = json_kind(value)
            if kind == "number" and isinstance(value, float) and go_type == "int":
                kind = f"number {value!r}"
            self.first_type_error = ApiError(
                400,
                f"json: cannot unmarshal {kind} into Go struct field "
                f"{self.struct}.{field} of type {go_type}",
            )

    def check(self, field: str, kind: str, value: Any) -> Any:
        """Return the decoded value, recording type errors or raising decoder errors."""
        if kind == "string":
            if not isinstance(value, str):
                return self.type_error(field, value, "string")
        elif kind == "bool":
            if not isinstance(value, bool):
                return self.type_error(field, value, "bool")
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return self.type_error(field, value, "int")
            if isinstance(value, float) and not value.is_integer():
                return self.type_error(field, value, "int")
            return int(value)
        elif kind == "[]int":
            if not isinstance(value, list):
                return self.type_error(field, value, "[]int")
            for item in value:
                if isinstance(item, bool) or not isinstance(item, int):
                    return self.type_error(field, item, "int")
        elif kind == "object":
            if not isinstance(value, dict):
                return self.type_error(field, value, "map[string]interface {}")
        elif kind == "think":
            return self.think(value)
        elif kind == "duration":
            keep_alive_ns(value)  # raises for bad values
        elif kind == "images":
            return self.images(field, value)
        elif kind == "messages":
            return self.messages(field, value)
        elif kind == "tools" and not (
            isinstance(value, list) and all(isinstance(t, dict) for t in value)
        ):
            return self.type_error(field, value, "api.Tools")
        return value

    def think(self, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value in THINK_LEVELS:
                return value
            raise ApiError(
                400,
                f"invalid think value: {go_quote(value)} "
                '(must be "high", "medium", "low", "max", true, or false)',
            )
        raise ApiError(
            400,
            'think must be a boolean or string ("high", "medium", "low", "max", true, or false)',
        )

    def images(self, field: str, value: Any) -> Any:
        if not isinstance(value, list):
            return self.type_error(field, value, "[]api.ImageData")
        for item in value:
            if not isinstance(item, str):
                return self.type_error(field, item, "api.ImageData")
            check_base64(item)
        return value

    def messages(self, field: str, value: Any) -> Any:
        if not isinstance(value, list):
            return self.type_error(field, value, "[]api.Message")
        decoded = []
        for message in value:
            if message is None:
                decoded.append({"role": "", "content": ""})
                continue
            if not isinstance(message, dict):
                self.type_error(field, message, "api.Message")
                continue
            out: dict[str, Any] = {}
            for key, item in _fold_keys(message, _MESSAGE_FIELDS).items():
                if item is None:
                    continue
                kind = _MESSAGE_FIELDS[key]
                if kind == "images":
                    self.images(field, item)
                elif kind == "list":
                    if not isinstance(item, list):
                        self.type_error(field, item, "[]api.ToolCall")
                        continue
                elif not isinstance(item, str):
                    # Message has its own UnmarshalJSON, so Go reports the outer field name.
                    self.type_error(field, item, "string")
                    continue
                out[key] = item
            # Message.UnmarshalJSON lower-cases the role.
            out["role"] = str(out.get("role", "")).lower()
            out.setdefault("content", "")
            decoded.append(out)
        return decoded


_MESSAGE_FIELDS = {
    "role": "string",
    "content": "string",
    "thinking": "string",
    "images": "images",
    "tool_calls": "list",
    "tool_name": "string",
    "tool_call_id": "string",
}


def _fold_keys(obj: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """Map JSON keys to struct fields; Go matches names case-insensitively, exact match first."""
    lowered = {name.lower(): name for name in fields}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in fields else lowered.get(key.lower())
        if name is not None:
            out[name] = value
    return out


def decode_request(raw: bytes, struct: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """Decode a request body into a dict of known fields, with Go's error behaviour.

    Args:
        raw: the request body.
        struct: the Go struct name used in messages, e.g. "GenerateRequest".
        fields: JSON field name -> kind ("string", "bool", "int", "[]int", "object", "think",
            "duration", "images", "messages", "tools", "any").

    Returns:
        The known fields that are present and not null (unknown keys are ignored, like Go).

    Raises:
        ApiError: 400 with the text the real server would send.
    """
    value = parse_json_document(raw)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(
            400, f"json: cannot unmarshal {json_kind(value)} into Go value of type api.{struct}"
        )
    decoder = _Decoder(struct)
    out: dict[str, Any] = {}
    for name, item in _fold_keys(value, fields).items():
        if item is None:
            continue
        checked = decoder.check(name, fields[name], item)
        if checked is not None:
            out[name] = checked
    if decoder.first_type_error is not None:
        raise decoder.first_type_error
    return out
