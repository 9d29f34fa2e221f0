"""JSON schemas from Python types: dataclasses, TypedDicts, pydantic models, plain hints.

Structured outputs send them as Ollama's ``format``; tools describe their parameters with them.
pydantic models use their own ``model_json_schema()``; everything else is converted here so that
pydantic stays optional.

>>> from dataclasses import dataclass
>>> @dataclass
... class City:
...     name: str
...     population: int
...     country: typing.Optional[str] = None
...     kind: typing.Literal["town", "city"] = "city"
>>> json_schema(City)["required"]
['name', 'population']
>>> json_schema(list[int])
{'type': 'array', 'items': {'type': 'integer'}}
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import inspect
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

__all__ = ["is_pydantic_model", "is_typeddict", "json_schema", "strip_optional"]

_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    decimal.Decimal: {"type": "number"},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
    datetime.time: {"type": "string", "format": "time"},
    uuid.UUID: {"type": "string", "format": "uuid"},
    bytes: {"type": "string"},
}


def is_pydantic_model(tp: Any) -> bool:
    """Whether ``tp`` is a pydantic model class (without importing pydantic)."""
    return (
        isinstance(tp, type) and hasattr(tp, "model_json_schema") and hasattr(tp, "model_validate")
    )


def is_typeddict(tp: Any) -> bool:
    """Whether ``tp`` is a TypedDict class."""
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def strip_optional(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` / ``X | None`` -> (X, True); anything else -> (tp, False)."""
    if _is_union(tp):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return tp, False


def _is_union(tp: Any) -> bool:
    return get_origin(tp) is Union or isinstance(tp, types.UnionType)


def json_schema(tp: Any, _seen: frozenset[Any] = frozenset()) -> dict[str, Any]:
    """A JSON schema for a Python type (inline: no ``$ref``, which small models follow badly)."""
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if tp in _SIMPLE:
        return dict(_SIMPLE[tp])
    origin, args = get_origin(tp), get_args(tp)
    schema: dict[str, Any]
    if origin is typing.Annotated:
        schema = json_schema(args[0], _seen)
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if _is_union(tp):
        inner, optional = strip_optional(tp)
        if optional and not _is_union(inner):
            return {"anyOf": [json_schema(inner, _seen), {"type": "null"}]}
        return {"anyOf": [json_schema(a, _seen) for a in args]}
    if origin is Literal:
        values = list(args)
        schema = {"enum": values}
        kinds = {type(v) for v in values}
        if len(kinds) == 1 and (kind := kinds.pop()) in _SIMPLE:
            schema = {**_SIMPLE[kind], "enum": values}
        return schema
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [member.value for member in tp]
        return {**json_schema(type(values[0]), _seen), "enum": values} if values else {}
    if origin in (list, set, frozenset, Sequence) or tp in (list, set, frozenset):
        schema = {"type": "array"}
        if args:
            schema["items"] = json_schema(args[0], _seen)
        if origin in (set, frozenset):
            schema["uniqueItems"] = True
        return schema
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": json_schema(args[0], _seen)}
        items = [json_schema(a, _seen) for a in args]
        return {
            "type": "array",
            "prefixItems": items,
            "minItems": len(items),
            "maxItems": len(items),
        }
    if origin in (dict, Mapping) or tp is dict:
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = json_schema(args[1], _seen)
        return schema
    if tp in _seen:
        return {"type": "object"}  # a recursive type: stop here rather than loop
    if is_pydantic_model(tp):
        return _inline_refs(tp.model_json_schema())
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = get_type_hints(tp, include_extras=True)
        required = [
            f.name
            for f in dataclasses.fields(tp)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        return _object(tp, {f.name: hints[f.name] for f in dataclasses.fields(tp)}, required, _seen)
    if is_typeddict(tp):
        hints = get_type_hints(tp, include_extras=True)
        required = [k for k in hints if k in tp.__required_keys__]
        return _object(tp, hints, required, _seen)
    raise TypeError(f"cannot describe {tp!r} as a JSON schema")


def _object(
    tp: type, fields: dict[str, Any], required: list[str], seen: frozenset[Any]
) -> dict[str, Any]:
    properties = {}
    for name, hint in fields.items():
        properties[name] = json_schema(_unwrap_required(hint), seen | {tp})
    schema = {"type": "object", "properties": properties, "required": required}
    if tp.__doc__ and not tp.__doc__.startswith(f"{tp.__name__}("):  # dataclasses' default doc
        schema["description"] = inspect.cleandoc(tp.__doc__)
    return {"title": tp.__name__, **schema}


def _unwrap_required(hint: Any) -> Any:
    """``Required[X]`` / ``NotRequired[X]`` (TypedDict) -> X."""
    origin = get_origin(hint)
    if origin is not None and getattr(origin, "_name", "") in ("Required", "NotRequired"):
        return get_args(hint)[0]
    return hint


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic puts nested models in ``$defs``; resolve local refs so the schema is flat.

    Ollama accepts ``$defs``, but a self-contained schema is easier for the model and for
    anyone reading ``--dry-run``. Recursive models keep their ``$ref``.
    """
    defs = schema.get("$defs", {})

    def resolve(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.split("/")[-1]
                if name in defs and name not in stack:
                    extra = {k: v for k, v in node.items() if k != "$ref"}
                    return {**resolve(defs[name], (*stack, name)), **extra}
                return node
            return {k: resolve(v, stack) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v, stack) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema, ())
    if "$ref" in str(resolved):
        return schema  # recursive: keep the definitions
    return resolved
