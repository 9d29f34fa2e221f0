"""Structured outputs: a schema goes out as ``format``, a validated Python object comes back.

A format can be ``"json"`` (any JSON), a JSON-schema dict (or its text), a pydantic model, a
dataclass, a TypedDict, or a list of one of those (``list[Person]``). The answer is parsed and
validated: by the pydantic model itself, by jsonschema for the rest, and dataclasses are then
built from the validated data, nested ones included.

>>> from dataclasses import dataclass
>>> @dataclass
... class Point:
...     x: int
...     y: int
>>> fmt = output_format(list[Point])
>>> fmt.format["type"], fmt.name
('array', 'list[Point]')
>>> fmt.parse('[{"x": 1, "y": 2}]')
[Point(x=1, y=2)]
>>> fmt.parse('[{"x": 1}]')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ollama_magic.errors.ModelOutputError: The answer does not match list[Point]: at $[0]: 'y' is a...
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import re
import types
from collections.abc import Mapping
from typing import Any, get_args, get_origin, get_type_hints

from ollama_magic.errors import ModelOutputError, OllamaError
from ollama_magic.schema import is_pydantic_model, is_typeddict, json_schema, strip_optional

__all__ = ["OutputFormat", "output_format", "plain_data"]


class OutputFormat:
    """What an answer must be, and how to turn its text into a Python value.

    Attributes:
        format: What goes in the request's ``format`` (``"json"`` or a schema dict).
        name: A short name for messages (``"Person"``, ``"list[Person]"``, ``"JSON"``).
        target: The Python type the value is built as (None for plain JSON data).
    """

    def __init__(self, format: str | dict[str, Any], name: str, target: Any = None) -> None:
        self.format = format
        self.name = name
        self.target = target

    def __repr__(self) -> str:
        return f"<OutputFormat {self.name}>"

    def parse(self, text: str) -> Any:
        """The answer as a value; :class:`ModelOutputError` says what is wrong with it."""
        try:
            data = json.loads(_unfence(text))
        except ValueError as exc:
            raise ModelOutputError(
                f"The answer is not valid JSON ({exc}).", raw=text, hint=_RAW_HINT
            ) from None
        return self.validate(data, text)

    def validate(self, data: Any, raw: str = "") -> Any:
        """Check already-parsed data and build the value."""
        target, origin = self.target, get_origin(self.target)
        element = get_args(self.target)[0] if origin is list else None
        if is_pydantic_model(target) or is_pydantic_model(element):
            return _pydantic(target, element, data, self.name, raw)
        if isinstance(self.format, dict):
            problem = schema_problem(self.format, data)
            if problem:
                raise ModelOutputError(
                    f"The answer does not match {self.name}: {problem}", raw=raw, hint=_RAW_HINT
                )
        return _build(target, data) if target is not None else data

    def describe(self) -> str:
        """The format as text, for telling a model what it got wrong."""
        if isinstance(self.format, dict):
            return json.dumps(self.format, ensure_ascii=False)
        return "JSON"


_BUILTINS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_LIST_OF = re.compile(r"(?:list|List|typing\.List)\[\s*(.+?)\s*\]")

_RAW_HINT = "The raw answer is kept (error.raw); --retries N asks again, saying what was wrong."


def output_format(spec: Any, namespace: Mapping[str, Any] | None = None) -> OutputFormat:
    """An :class:`OutputFormat` from what a user names as the format.

    ``spec`` may be ``"json"``, the name of a variable in ``namespace`` holding a schema or a
    type, JSON-schema text, a schema dict, or a type (``Person``, ``list[Person]``).
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == "json":
            return OutputFormat("json", "JSON")
        if namespace is not None and text in namespace:
            return output_format(namespace[text])
        if text in _BUILTINS:  # as an element: list[str]
            return output_format(_BUILTINS[text])
        element = _LIST_OF.fullmatch(text)
        if element:
            # `-f list[Person]` names a list of what the variable holds, as list[Person]
            # does in Python (ask(format=list[Person])); a schema dict becomes its array.
            inner = output_format(element.group(1), namespace)
            if inner.target is not None:
                return output_format(types.GenericAlias(list, (inner.target,)))
            if isinstance(inner.format, dict):
                array = {"type": "array", "items": inner.format}
                return OutputFormat(array, f"list[{inner.name}]")
            return OutputFormat({"type": "array"}, "list[JSON]")
        if text.startswith("{"):
            try:
                return output_format(json.loads(text))
            except ValueError as exc:
                raise OllamaError(
                    f"The format is not valid JSON: {exc}.",
                    hint="Pass 'json', a variable holding a schema or a class, or schema text.",
                ) from None
        raise OllamaError(
            f"No variable {text!r} for the format.",
            hint="Define it first (a JSON-schema dict, a pydantic model, a dataclass or a "
            "TypedDict), or pass --format json.",
        )
    if isinstance(spec, dict):
        _check_schema(spec)
        return OutputFormat(spec, str(spec.get("title") or "the schema"))
    try:
        schema = json_schema(spec)
    except TypeError:
        raise OllamaError(
            f"Cannot use {spec!r} as a format.",
            hint="Use a JSON-schema dict, a pydantic model, a dataclass, a TypedDict, or a "
            "list of one of those.",
        ) from None
    return OutputFormat(schema, _type_name(spec), spec)


def _check_schema(schema: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise OllamaError(
            f"The format is not a valid JSON schema: {exc.message}.",
            hint="See https://json-schema.org/understanding-json-schema for the keywords.",
        ) from None


def _type_name(tp: Any) -> str:
    if get_origin(tp) is list and get_args(tp):
        return f"list[{_type_name(get_args(tp)[0])}]"
    return getattr(tp, "__name__", None) or str(tp)


def _unfence(text: str) -> str:
    """Answers sometimes come wrapped in a markdown code fence; unwrap it."""
    match = re.fullmatch(r"\s*```(?:json|JSON)?\s*\n(.*?)\n?```\s*", text, re.DOTALL)
    return match.group(1) if match else text


def schema_problem(schema: dict[str, Any], data: Any) -> str | None:
    """The most relevant violation of ``schema`` by ``data``, as one line (None if valid)."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(
        schema, format_checker=jsonschema.FormatChecker()
    )
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return None
    return f"at {_path(error.absolute_path)}: {error.message}"


def _path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _pydantic(target: Any, element: Any, data: Any, name: str, raw: str) -> Any:
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(target).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _path(first.get("loc", ()))
        raise ModelOutputError(
            f"The answer does not match {name}: at {where}: {first.get('msg')}",
            raw=raw,
            hint=_RAW_HINT,
        ) from None


def _build(tp: Any, data: Any) -> Any:
    """Build ``tp`` from JSON data already validated against its schema."""
    tp, _ = strip_optional(tp)
    if data is None:
        return None
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: _build(hints[k], v) for k, v in data.items() if k in names})
    if origin in (list, set, frozenset, tuple) and isinstance(data, list):
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(_build(a, v) for a, v in zip(args, data, strict=False))
        items = [_build(args[0], v) for v in data] if args else data
        return origin(items) if origin is not list else items
    if origin is dict and isinstance(data, dict) and len(get_args(tp)) == 2:
        return {k: _build(get_args(tp)[1], v) for k, v in data.items()}
    if is_typeddict(tp) and isinstance(data, dict):
        hints = get_type_hints(tp)
        return {k: _build(hints[k], v) if k in hints else v for k, v in data.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    if tp is datetime.datetime and isinstance(data, str):
        return datetime.datetime.fromisoformat(data.replace("Z", "+00:00"))
    if tp is datetime.date and isinstance(data, str):
        return datetime.date.fromisoformat(data)
    return data


def plain_data(value: Any) -> Any:
    """A value as plain JSON-like data (pydantic models and dataclasses become dicts)."""
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_data(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain_data(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value
