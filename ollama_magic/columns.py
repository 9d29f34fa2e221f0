"""Typed DataFrame columns from a batch's answers: one per field of the schema.

A field's JSON-schema type gives its pandas dtype: ``integer`` → ``Int64``, ``number`` →
``Float64``, ``boolean`` → ``boolean``, ``string`` → ``string``, an enum of strings (a
``Literal`` or an ``Enum``) → ``category`` with the enum's values as its categories (so counts
and bar charts list every class, also those no row got). The nullable dtypes keep a failed row
as ``<NA>`` without turning integers into floats. Anything else stays as Python objects.

>>> schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
>>> columns = result_columns([{"n": 1}, None], OutputFormat(schema, "N"), "answer")
>>> columns["n"].dtype
Int64Dtype()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ollama_magic.structured import OutputFormat, plain_data

__all__ = ["result_columns"]

_DTYPES = {"integer": "Int64", "number": "Float64", "boolean": "boolean", "string": "string"}


def schema_fields(output: OutputFormat | None) -> list[str]:
    """The top-level fields of an object schema (a typed column each), else none."""
    fmt = output.format if output is not None else None
    if isinstance(fmt, dict) and fmt.get("type") == "object":
        return list(fmt.get("properties") or {})
    return []


def result_columns(values: list[Any], output: OutputFormat | None, into: str) -> dict[str, Any]:
    """The columns that hold ``values`` (None for a row without an answer), by name.

    Plain answers go in one text column ``into``; a structured answer with fields gets a column
    per field; any other structured answer (a list, a number) one object column ``into``.
    """
    import pandas as pd

    if output is None:
        return {into: pd.array(values, dtype="string")}
    schema = output.format if isinstance(output.format, dict) else {}
    properties = schema.get("properties") if schema.get("type") == "object" else None
    if not properties:
        return {into: pd.array(values, dtype=object)}
    records = [None if value is None else _record(value) for value in values]
    columns = {}
    for name, spec in properties.items():
        cells = [None if record is None else record.get(name) for record in records]
        columns[name] = _column(cells, _resolve(spec, schema))
    return columns


def _record(value: Any) -> Mapping[str, Any]:
    """A row's answer as a dict (an answer kept from an earlier run already is one)."""
    data = plain_data(value)
    return data if isinstance(data, Mapping) else {}


def _resolve(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """A field's schema with ``$ref`` followed and ``Optional`` (anyOf with null) unwrapped."""
    for _ in range(8):  # references chain rarely; never loop forever on a cyclic one
        if "$ref" in spec:
            name = str(spec["$ref"]).rsplit("/", 1)[-1]
            spec = (schema.get("$defs") or schema.get("definitions") or {}).get(name, {})
            continue
        options = spec.get("anyOf") or spec.get("oneOf")
        if options:
            concrete = [o for o in options if o.get("type") != "null"]
            if len(concrete) == 1:
                spec = concrete[0]
                continue
        break
    return spec


def _column(cells: list[Any], spec: Mapping[str, Any]) -> Any:
    """One field's cells as a typed pandas array (objects when they do not fit the type)."""
    import pandas as pd

    enum = spec.get("enum")
    try:
        if enum and all(isinstance(value, str) for value in enum):
            return pd.Categorical(cells, categories=list(dict.fromkeys(enum)))
        kind = spec.get("type")
        if isinstance(kind, str) and kind in _DTYPES:
            return pd.array(cells, dtype=_DTYPES[kind])  # type: ignore[call-overload]
    except (TypeError, ValueError):
        pass  # a value that does not fit (a kept answer edited by hand): keep it as it is
    return pd.array(cells, dtype=object)
