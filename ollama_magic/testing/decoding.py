"""Request decoding and field checks, failing with the real server's texts and statuses.

A body goes through gin's `ShouldBindJSON` (`json.NewDecoder(body).Decode(&req)`) into a Go
struct; `options` and `format` are checked later, by the scheduler and the runner. Each step
fails here the way it fails there, first error first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ollama_magic.testing.gojson import go_quote, json_kind, syntax_error
from ollama_magic.testing.wire import JSON_PLAIN, JSON_UTF8, ApiError, keep_alive_ns

THINK_LEVELS = ("high", "medium", "low", "max")
_JSON_SPACE = " \t\n\r"
_INT64 = range(-(2**63), 2**63)  # Go's int on the 64-bit platforms the server runs on


class _BadConstant(ValueError):
    """NaN/Infinity, which Python's json accepts and Go's rejects."""


def _reject_constant(name: str) -> Any:
    """parse_constant hook: NaN and Infinity are not JSON to Go."""
    raise _BadConstant(name)


class _FloatLiteral(float):
    """A JSON number with a fraction or exponent, remembering how it was written: Go reports
    the literal text (`number 2.50`) when one does not fit an integer field."""

    literal: str

    def __new__(cls, literal: str) -> _FloatLiteral:
        number = super().__new__(cls, literal)
        number.literal = literal
        return number


# Request fields keep number literals; recorded bodies (RecordedRequest.body) get plain floats.
_REQUEST_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_FloatLiteral)
_PLAIN_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _decode_first(raw: bytes, decoder: json.JSONDecoder) -> Any:
    """The body's first JSON value, or the ApiError Go's decoder would cause."""
    text = raw.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    if start == len(text):
        raise ApiError(400, "missing request body")
    try:
        value, _ = decoder.raw_decode(text, start)
    except (json.JSONDecodeError, _BadConstant) as exc:
        raise ApiError(400, syntax_error(raw) or str(exc)) from exc
    if not isinstance(value, (dict, list)):
        # Python stops a top-level number where Go would not (`1.` is 1 to Python): ask Go.
        message = syntax_error(raw)
        if message is not None:
            raise ApiError(400, message)
    return value


def parse_json_document(raw: bytes) -> Any:
    """Decode the first JSON value of a body like Go's `json.Decoder` (trailing data ignored).

    Raises:
        ApiError: 400 `missing request body` for an empty body, or Go's syntax error text.
    """
    return _decode_first(raw, _PLAIN_DECODER)


def raw_member(raw: bytes, name: str) -> str | None:
    """The text of member *name* of the body's top-level object, exactly as sent.

    What Go keeps in a `json.RawMessage` field (and quotes in some errors). Keys match
    case-insensitively and the last one wins, as when Go decodes the body.
    """
    text = raw.decode("utf-8", "replace")

    def skip(index: int) -> int:
        """The index of the first non-space character at or after *index*."""
        while index < len(text) and text[index] in _JSON_SPACE:
            index += 1
        return index

    index = skip(0)
    if text[index : index + 1] != "{":
        return None
    found = None
    index = skip(index + 1)
    while text[index : index + 1] == '"':
        key, index = _PLAIN_DECODER.raw_decode(text, index)
        start = skip(skip(index) + 1)  # past the colon
        _, end = _PLAIN_DECODER.raw_decode(text, start)
        if str(key).lower() == name.lower():
            found = text[start:end]
        index = skip(end)
        if text[index : index + 1] != ",":
            break
        index = skip(index + 1)
    return found


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


_MESSAGE_FIELDS = {
    "role": "string",
    "content": "string",
    "thinking": "string",
    "images": "images",
    "tool_calls": "tool_calls",
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


class _Decoder:
    """Checks the fields of one JSON object against a Go struct description.

    Go's decoder keeps the first ordinary error (a type mismatch, bad base64) and goes on;
    an error from a type's own `UnmarshalJSON` (think, keep_alive, a chat message) ends the
    decoding at once. `saved` is that first ordinary error; the others are raised.
    """

    def __init__(self, struct: str, path: str = "") -> None:
        self.struct = struct
        self.path = path  # the enclosing field, for fields of nested structs: "messages."
        self.saved: ApiError | None = None

    def save(self, error: ApiError) -> None:
        """Keep *error* unless an earlier one was kept."""
        if self.saved is None:
            self.saved = error

    def type_error(self, field: str, value: Any, go_type: str) -> None:
        """Save Go's `cannot unmarshal` error for *value* in *field* of type *go_type*."""
        self.save(_type_error(value, f"{self.struct}.{self.path}{field}", go_type))

    def check(self, field: str, kind: str, value: Any) -> Any:
        """Return the decoded value (None when it is not kept), saving or raising errors."""
        if kind == "string":
            if not isinstance(value, str):
                return self.type_error(field, value, "string")
        elif kind == "bool":
            if not isinstance(value, bool):
                return self.type_error(field, value, "bool")
        elif kind == "int":
            return self.integer(field, value)
        elif kind == "[]int":
            if not isinstance(value, list):
                return self.type_error(field, value, "[]int")
            # A null element stays 0; a bad one is saved (and the request fails).
            return [0 if item is None else self.integer(field, item) for item in value]
        elif kind == "object":
            if not isinstance(value, dict):
                return self.type_error(field, value, "map[string]interface {}")
        elif kind == "map[string]string":
            if not isinstance(value, dict):
                return self.type_error(field, value, "map[string]string")
            for item in value.values():
                if item is not None and not isinstance(item, str):
                    self.type_error(field, item, "string")
            return {key: item or "" for key, item in value.items()}  # null decodes to ""
        elif kind == "think":
            return _think(value)
        elif kind == "duration":
            keep_alive_ns(value)  # raises for bad values, as Duration.UnmarshalJSON does
        elif kind == "images":
            return self.images(field, value)
        elif kind == "messages":
            return self.messages(field, value)
        elif kind == "tool_calls":
            if not isinstance(value, list):
                return self.type_error(field, value, "[]api.ToolCall")
        elif kind == "tools" and not (
            isinstance(value, list) and all(isinstance(t, dict) for t in value)
        ):
            return self.type_error(field, value, "api.Tools")
        return value

    def integer(self, field: str, value: Any) -> int | None:
        """An `int` field: Go parses the literal as written, so `2.0` and `1e2` do not fit."""
        if isinstance(value, int) and not isinstance(value, bool) and value in _INT64:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            literal = value.literal if isinstance(value, _FloatLiteral) else repr(value)
            self.save(
                _type_error(value, f"{self.struct}.{self.path}{field}", "int", f"number {literal}")
            )
            return None
        self.type_error(field, value, "int")
        return None

    def images(self, field: str, value: Any) -> Any:
        """`[]ImageData`: base64 strings, checked as Go decodes `[]byte`."""
        if not isinstance(value, list):
            return self.type_error(field, value, "[]api.ImageData")
        for item in value:
            if item is None:
                continue  # null leaves that image empty
            if not isinstance(item, str):
                self.type_error(field, item, "api.ImageData")
                continue
            try:
                check_base64(item)
            except ApiError as exc:  # a decoding error like any other: kept, not raised
                self.save(exc)
        return value

    def messages(self, field: str, value: Any) -> Any:
        """`[]Message`: each message decoded on its own (see `message`)."""
        if not isinstance(value, list):
            return self.type_error(field, value, "[]api.Message")
        return [self.message(field, message) for message in value]

    def message(self, field: str, message: Any) -> dict[str, Any]:
        """One chat message, decoded as `Message.UnmarshalJSON` does (into a local `Alias`)."""
        if message is None:
            return {"role": "", "content": ""}
        if not isinstance(message, dict):
            raise _type_error(message, f"{self.struct}.{self.path}{field}", "api.Alias")
        inner = _Decoder(self.struct, f"{self.path}{field}.")
        out: dict[str, Any] = {}
        for key, item in _fold_keys(message, _MESSAGE_FIELDS).items():
            if item is not None:
                checked = inner.check(key, _MESSAGE_FIELDS[key], item)
                if checked is not None:
                    out[key] = checked
        if inner.saved is not None:
            raise inner.saved  # returned by UnmarshalJSON, so it ends the decoding
        out["role"] = str(out.get("role", "")).lower()  # Message.UnmarshalJSON lower-cases it
        out.setdefault("content", "")
        return out


def _type_error(value: Any, field: str, go_type: str, kind: str | None = None) -> ApiError:
    """Go's `UnmarshalTypeError` text for *value* in struct *field* (`Struct.field`)."""
    kind = kind or json_kind(value)
    return ApiError(
        400, f"json: cannot unmarshal {kind} into Go struct field {field} of type {go_type}"
    )


def _think(value: Any) -> Any:
    """`ThinkValue.UnmarshalJSON`: a bool or a level name."""
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


def decode_request(raw: bytes, struct: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """Decode a request body into a dict of known fields, with Go's error behaviour.

    Args:
        raw: the request body.
        struct: the Go struct name used in messages, e.g. "GenerateRequest".
        fields: JSON field name -> kind ("string", "bool", "int", "[]int", "object",
            "map[string]string", "think", "duration", "images", "messages", "tools", "any").

    Returns:
        The known fields that are present and not null (unknown keys are ignored, like Go).

    Raises:
        ApiError: 400 with the text the real server would send.
    """
    value = _decode_first(raw, _REQUEST_DECODER)
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
    if decoder.saved is not None:
        raise decoder.saved
    return out


# ---------------------------------------------------------------------------------------------
# Checks made after decoding: options (scheduler) and format (runner)
# ---------------------------------------------------------------------------------------------

_INT_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "draft_num_predict",
    }
)
_FLOAT_OPTIONS = frozenset(
    {
        "temperature",
        "top_p",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    }
)
_BOOL_OPTIONS = frozenset({"use_mmap"})


def check_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    """Type-check runner options like `api.Options.FromMap` (unknown keys are ignored).

    Raises:
        ApiError: 500 `option "temperature" must be of type float32` and the like.
    """
    for key, value in options.items():
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = None
        if key in _INT_OPTIONS and not number:
            expected = "type integer"
        elif key in _FLOAT_OPTIONS and not number:
            expected = "type float32"
        elif key in _BOOL_OPTIONS and not isinstance(value, bool):
            expected = "type boolean"
        elif key == "stop":
            if not isinstance(value, list):
                expected = "type array"
            elif not all(isinstance(item, str) for item in value):
                expected = "type an array of strings"
        if expected is not None:
            raise ApiError(500, f"option {go_quote(key)} must be of {expected}")
    return options


def check_format(value: Any, raw: bytes, *, stream: bool) -> Any:
    """Return None, "json" or a schema dict; anything else fails like the runner does.

    Args:
        value: the decoded `format`.
        raw: the request body: the error quotes `format` as sent (a `json.RawMessage`).
        stream: whether the answer streams (it decides the error's content type).
    """
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value
    text = raw_member(raw, "format")
    if text is None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # The runner's error reaches streamResponse before any chunk: plain application/json.
    raise ApiError(
        500,
        f'invalid format: {go_quote(text)}; expected "json" or a valid JSON Schema object',
        JSON_PLAIN if stream else JSON_UTF8,
    )
