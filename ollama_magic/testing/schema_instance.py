"""Deterministic, plausible JSON instances of JSON Schemas (structured outputs, tool arguments).

A real model constrained by a grammar produces JSON that fits the schema; the stand-in does the
same without a model. Values are chosen from the property names (a `city` is a city, an `email`
an address), vary between array items so tables look real, and are checked with `jsonschema`.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping
from typing import Any

_MAX_DEPTH = 24  # hard stop for recursive schemas
_SHALLOW_DEPTH = 6  # past this, produce only what the schema requires
_RECORDS = 3  # array length when the schema allows it

_NAMES = ["Alice Martin", "Bob Chen", "Carla Diaz", "Dmitri Ivanov"]
_FIRST = ["Alice", "Bob", "Carla", "Dmitri"]
_LAST = ["Martin", "Chen", "Diaz", "Ivanov"]
_CITIES = ["Paris", "Tokyo", "Lima", "Nairobi"]
_COUNTRIES = ["France", "Japan", "Peru", "Kenya"]
_SENTENCES = [
    "A short, clear answer.",
    "It depends on the context.",
    "Mostly yes, with one caveat.",
    "Here is a brief summary.",
]
_WORDS: dict[str, list[str]] = {
    "name": _NAMES,
    "full_name": _NAMES,
    "author": _NAMES,
    "first_name": _FIRST,
    "last_name": _LAST,
    "city": _CITIES,
    "location": _CITIES,
    "capital": _CITIES,
    "country": _COUNTRIES,
    "title": ["A quiet morning", "Notes on rivers", "The last lighthouse", "Small wonders"],
    "color": ["red", "green", "blue", "amber"],
    "colour": ["red", "green", "blue", "amber"],
    "language": ["Python", "Rust", "Go", "Julia"],
    "category": ["alpha", "beta", "gamma", "delta"],
    "kind": ["alpha", "beta", "gamma", "delta"],
    "type": ["alpha", "beta", "gamma", "delta"],
    "status": ["active", "pending", "done", "paused"],
    "unit": ["celsius", "celsius", "fahrenheit", "celsius"],
    "currency": ["EUR", "USD", "JPY", "GBP"],
    "genre": ["mystery", "science fiction", "poetry", "history"],
    "sentiment": ["positive", "neutral", "negative", "positive"],
    "animal": ["otter", "heron", "fox", "lynx"],
    "fruit": ["apple", "pear", "plum", "fig"],
}
_TEXT_KEYS = ("description", "summary", "answer", "reason", "explanation", "text", "content")


def _hash(*parts: object) -> int:
    data = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


class _Generator:
    """Walks a schema and builds one instance; *attempt* varies the choices made."""

    def __init__(self, root: Any, seed: str, attempt: int) -> None:
        self.root = root
        self.seed = seed
        self.attempt = attempt

    # -- helpers -----------------------------------------------------------------------------

    def pick(self, path: str, count: int, index: int = 0) -> int:
        return (_hash(self.seed, path) + index + self.attempt) % count if count else 0

    def resolve(self, schema: Any) -> Any:
        """Follow `$ref` (JSON pointers into the root, e.g. pydantic's `#/$defs/X`)."""
        seen = 0
        while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and seen < 32:
            target = self.pointer(schema["$ref"])
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if isinstance(target, Mapping) else target
            seen += 1
        return schema

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}  # remote references cannot be fetched offline
        node: Any = self.root
        for token in ref[1:].split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return {}
        return node

    @staticmethod
    def merge(schemas: list[Any]) -> dict[str, Any]:
        """Combine `allOf` members: union of properties/required, other keywords overlaid."""
        merged: dict[str, Any] = {}
        for schema in schemas:
            if not isinstance(schema, Mapping):
                continue
            for key, value in schema.items():
                if key == "properties" and isinstance(value, Mapping):
                    merged.setdefault("properties", {}).update(value)
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                else:
                    merged[key] = value
        return merged

    @staticmethod
    def type_of(schema: Mapping[str, Any]) -> str:
        declared = schema.get("type")
        if isinstance(declared, str) and "," in declared:
            # ollama-python's convert_function_to_tool joins union types with commas.
            declared = [part.strip() for part in declared.split(",")]
        if isinstance(declared, list):
            non_null = [t for t in declared if t != "null"]
            return str(non_null[0]) if non_null else "null"
        if isinstance(declared, str):
            return declared
        if any(k in schema for k in ("properties", "required", "additionalProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
            return "number"
        return "string"

    # -- generation --------------------------------------------------------------------------

    def value(self, schema: Any, name: str, index: int, depth: int, path: str) -> Any:
        schema = self.resolve(schema)
        if schema is True or schema is None:
            schema = {}
        if schema is False or depth > _MAX_DEPTH:
            return None
        if not isinstance(schema, Mapping):
            return None
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[self.pick(path, len(enum), index)]
        if isinstance(schema.get("allOf"), list):
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            members = [self.resolve(s) for s in schema["allOf"]]
            return self.value(self.merge([*members, rest]), name, index, depth + 1, path)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.choice(schema, key, options, name, index, depth, path)
        kind = self.type_of(schema)
        if kind == "object":
            return self.object(schema, name, index, depth, path)
        if kind == "array":
            return self.array(schema, name, index, depth, path)
        if kind == "integer":
            return self.integer(schema, name, index, path)
        if kind == "number":
            return self.number(schema, name, index, path)
        if kind == "boolean":
            return (index + self.pick(path, 2)) % 2 == 0
        if kind == "null":
            return None
        return self.string(schema, name, index, path)

    def choice(
        self,
        schema: Mapping[str, Any],
        key: str,
        options: list[Any],
        name: str,
        index: int,
        depth: int,
        path: str,
    ) -> Any:
        resolved = [self.resolve(option) for option in options]
        non_null = [o for o in resolved if not (isinstance(o, Mapping) and o.get("type") == "null")]
        if depth >= _SHALLOW_DEPTH and len(non_null) < len(resolved):
            return None  # deep in a recursive schema: stop where the schema allows it
        candidates = non_null or resolved
        chosen = candidates[self.attempt % len(candidates)]
        rest = {k: v for k, v in schema.items() if k not in (key, "default")}
        if rest and isinstance(chosen, Mapping):
            chosen = self.merge([rest, chosen])
        return self.value(chosen, name, index, depth + 1, f"{path}|{key}")

    def object(
        self, schema: Mapping[str, Any], name: str, index: int, depth: int, path: str
    ) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        shallow = depth >= _SHALLOW_DEPTH
        out: dict[str, Any] = {}
        for key, sub in properties.items():
            if shallow and key not in required:
                continue
            out[key] = self.value(sub, key, index, depth + 1, f"{path}.{key}")
        extra = schema.get("additionalProperties")
        extra_schema = extra if isinstance(extra, Mapping) else {}
        for key in required:
            if key not in out:
                out[key] = self.value(extra_schema, key, index, depth + 1, f"{path}.{key}")
        wanted = schema.get("minProperties", 0)
        if not properties and isinstance(extra, Mapping) and not shallow:
            wanted = max(wanted, 2)
        limit = schema.get("maxProperties")
        if isinstance(limit, int):
            wanted = min(wanted, limit)
        item = _singular(name) or "key"
        counter = 1
        while len(out) < wanted:
            key = f"{item}_{counter}"
            counter += 1
            if key not in out:
                out[key] = self.value(extra_schema, item, len(out), depth + 1, f"{path}.*")
        return out

    def array(
        self, schema: Mapping[str, Any], name: str, index: int, depth: int, path: str
    ) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        count = low if depth >= _SHALLOW_DEPTH else max(low, _RECORDS)
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        if items is False:
            count = min(count, len(prefix))  # no items beyond the tuple positions
        if isinstance(high, int):
            count = min(count, high)
        item_name = _singular(name)
        out = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            out.append(self.value(sub, item_name, i, depth + 1, f"{path}[]"))
        return out

    def integer(self, schema: Mapping[str, Any], name: str, index: int, path: str) -> int:
        key = name.lower()
        if "age" in key:
            base = 27 + 9 * ((index + self.pick(path, 4)) % 4)
        elif "year" in key:
            base = 2019 + index + self.pick(path, 4)
        elif key in ("id", "index", "rank", "position") or key.endswith("_id"):
            base = index + 1
        elif any(w in key for w in ("rating", "score", "stars")):
            base = 3 + (index + self.pick(path, 3)) % 3
        elif "population" in key:
            base = 2_100_000 + 350_000 * index
        else:
            base = 2 + (self.pick(path, 9) + 3 * index) % 11
        value = float(base)
        return int(self.clamp(schema, value, integer=True))

    def number(self, schema: Mapping[str, Any], name: str, index: int, path: str) -> float:
        key = name.lower()
        if any(w in key for w in ("confidence", "probability", "ratio", "share")):
            base = round(0.91 - 0.07 * ((index + self.pick(path, 5)) % 5), 2)
        elif "price" in key or "cost" in key or "amount" in key:
            base = round(9.99 + 5 * index + self.pick(path, 7), 2)
        elif "temp" in key:
            base = 18.5 + 1.5 * ((index + self.pick(path, 6)) % 6)
        elif "lat" in key:
            base = 48.8566 - 10 * index
        elif "lon" in key or "lng" in key:
            base = 2.3522 + 10 * index
        elif "score" in key or "rating" in key:
            base = 4.5 - 0.5 * (index % 3)
        else:
            base = round(1.5 + (self.pick(path, 20) + 2.25 * index) % 20, 2)
        return self.clamp(schema, base, integer=False)

    @staticmethod
    def clamp(schema: Mapping[str, Any], value: float, *, integer: bool) -> float:
        """Move *value* inside the numeric bounds of *schema* (inclusive and exclusive)."""
        low, high = schema.get("minimum"), schema.get("maximum")
        ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        step = 1.0 if integer else 0.5
        lower = -math.inf
        upper = math.inf
        if isinstance(low, (int, float)) and not isinstance(low, bool):
            lower = max(lower, float(low))
        if isinstance(ex_low, (int, float)) and not isinstance(ex_low, bool):
            lower = max(lower, float(ex_low) + (1 if integer else min(step, 1e-3)))
        if isinstance(high, (int, float)) and not isinstance(high, bool):
            upper = min(upper, float(high))
        if isinstance(ex_high, (int, float)) and not isinstance(ex_high, bool):
            upper = min(upper, float(ex_high) - (1 if integer else min(step, 1e-3)))
        if integer:
            lower = lower if math.isinf(lower) else math.ceil(lower)
            upper = upper if math.isinf(upper) else math.floor(upper)
        if lower > upper:
            return lower
        if value < lower or value > upper:
            # Land inside the range, deterministically, without always hitting an edge.
            if math.isinf(lower):
                value = upper
            elif math.isinf(upper):
                value = lower
            else:
                value = lower + (upper - lower) * 0.5
        multiple = schema.get("multipleOf")
        if isinstance(multiple, (int, float)) and not isinstance(multiple, bool) and multiple > 0:
            snapped = math.ceil(value / multiple) * multiple
            if snapped > upper:
                snapped = math.floor(value / multiple) * multiple
            value = snapped
        if integer:
            return math.floor(value)
        return round(value, 6)

    def string(self, schema: Mapping[str, Any], name: str, index: int, path: str) -> str:
        fmt = schema.get("format")
        n = index + self.pick(path, 4)
        slug = (_singular(name) or "item").lower().replace(" ", "-")
        if fmt == "date":
            text = f"2024-{1 + n % 12:02d}-{10 + 3 * index % 18:02d}"
        elif fmt == "date-time":
            text = f"2024-{1 + n % 12:02d}-{10 + 3 * index % 18:02d}T09:{15 * (index % 4):02d}:00Z"
        elif fmt == "time":
            text = f"{9 + index % 9:02d}:{15 * (n % 4):02d}:00Z"
        elif fmt == "duration":
            text = f"PT{1 + n % 9}H"
        elif fmt in ("email", "idn-email"):
            text = f"{_FIRST[n % len(_FIRST)].lower()}@example.com"
        elif fmt in ("uri", "url", "iri", "uri-reference", "iri-reference"):
            text = f"https://example.com/{slug}/{index + 1}"
        elif fmt == "uuid":
            text = str(uuid.UUID(int=_hash(self.seed, path, index) << 64 | index, version=4))
        elif fmt == "ipv4":
            text = f"192.0.2.{index + 1}"
        elif fmt == "ipv6":
            text = f"2001:db8::{index + 1}"
        elif fmt in ("hostname", "idn-hostname"):
            text = f"host{index + 1}.example.com"
        else:
            text = self.word(name, n, index)
        return self.fit_length(schema, text)

    @staticmethod
    def word(name: str, n: int, index: int) -> str:
        key = name.lower()
        candidates = _WORDS.get(key) or _WORDS.get(_singular(key))
        if candidates is None:
            for suffix, words in _WORDS.items():
                if key.endswith("_" + suffix):
                    candidates = words
                    break
        if candidates is not None:
            return candidates[n % len(candidates)]
        if key in ("email", "mail") or key.endswith("_email"):
            return f"{_FIRST[n % len(_FIRST)].lower()}@example.com"
        if key in ("url", "link", "website", "homepage"):
            return f"https://example.com/{index + 1}"
        if key.endswith("date") or key == "date":
            return f"2024-{1 + n % 12:02d}-{10 + index % 18:02d}"
        if any(key.startswith(t) or key.endswith(t) for t in _TEXT_KEYS):
            return _SENTENCES[n % len(_SENTENCES)]
        if not key:
            return "example"
        label = key.replace("_", " ").strip().capitalize()
        return f"{label} {index + 1}"

    @staticmethod
    def fit_length(schema: Mapping[str, Any], text: str) -> str:
        low = schema.get("minLength")
        high = schema.get("maxLength")
        if isinstance(low, int) and len(text) < low:
            text = (text + " " + "x" * low)[: max(low, len(text))]
            text = text.ljust(low, "x")
        if isinstance(high, int) and len(text) > high:
            text = text[:high].rstrip() if high else ""
            if isinstance(low, int) and len(text) < low:
                text = text.ljust(low, "x")
        return text


def _validator(schema: Any) -> Any:
    """A jsonschema validator for *schema*, or None if it is not a valid schema."""
    try:
        import jsonschema
        from jsonschema.exceptions import SchemaError
    except ImportError:  # pragma: no cover - jsonschema is a dependency of the package
        return None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError:
        return None  # e.g. ollama-python's "integer, string" types: generate, don't validate
    return cls(schema)


def schema_instance(schema: Mapping[str, Any] | bool, seed: str = "") -> Any:
    """Return a deterministic instance of *schema*, validated with jsonschema when possible.

    Args:
        schema: a JSON Schema (dict) such as `Model.model_json_schema()` from pydantic.
        seed: varies the choices deterministically (the same seed gives the same instance).

    >>> row = {"type": "object", "properties": {"city": {"type": "string"},
    ...                                          "founded": {"type": "string", "format": "date"}}}
    >>> schema_instance({"type": "array", "items": row, "maxItems": 2})
    [{'city': 'Nairobi', 'founded': '2024-04-10'}, {'city': 'Paris', 'founded': '2024-05-13'}]
    """
    validator = _validator(schema)
    first: Any = None
    for attempt in range(4):
        generator = _Generator(schema, seed, attempt)
        candidate = generator.value(schema, "", 0, 0, "$")
        if attempt == 0:
            first = candidate
        if validator is None or validator.is_valid(candidate):
            return candidate
    return first
