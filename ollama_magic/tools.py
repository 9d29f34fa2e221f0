"""Python functions offered to a model as tools: their schemas, and running the calls.

The schema comes from the signature, the type hints and a Google-style docstring. Unlike
ollama-python's converter, defaults make a parameter optional, ``Literal`` and ``Enum`` become
``enum`` lists, and list item types are kept. Ollama drops JSON-schema keywords it does not
model (``default`` among them), so a default is also written into the description.

>>> import typing
>>> def get_weather(city: str, unit: typing.Literal["c", "f"] = "c") -> str:
...     '''Current weather for a city.
...
...     Args:
...         city: The city's name.
...         unit: Temperature unit.
...     '''
...     return f"{city}: 21 {unit}"
>>> tool = function_tool(get_weather)
>>> tool["function"]["parameters"]["required"]
['city']
>>> tool["function"]["parameters"]["properties"]["unit"]
{'type': 'string', 'enum': ['c', 'f'], 'description': "Temperature unit. (default: 'c')"}
>>> Toolbox([get_weather]).call(ToolCall("get_weather", {"city": "Oslo"}))
('Oslo: 21 c', False)
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, get_type_hints

from ollama_magic.schema import json_schema, strip_optional
from ollama_magic.structured import plain_data, schema_problem
from ollama_magic.types import ToolCall

__all__ = ["MAX_CALLS_PER_ROUND", "Toolbox", "function_tool", "is_tool_name", "parse_docstring"]


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {argument: description}) from a Google-style docstring.

    >>> parse_docstring('''Add numbers.
    ...
    ...     Args:
    ...         a (int): The first,
    ...             continued here.
    ...         b: The second.
    ...
    ...     Returns:
    ...         The sum.
    ...     ''')
    ('Add numbers.', {'a': 'The first, continued here.', 'b': 'The second.'})
    """
    text = inspect.cleandoc(doc or "")
    description: list[str] = []
    args: dict[str, str] = {}
    section = "description"
    current: str | None = None
    for line in text.splitlines():
        header = re.fullmatch(r"(\w[\w ]*):\s*", line)
        if header and not line.startswith(" "):
            section = header.group(1).lower()
            current = None
            continue
        if section == "description":
            description.append(line)
        elif section in ("args", "arguments", "parameters", "params"):
            entry = re.match(r"\s{0,8}(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", line)
            if entry and (current is None or _indent(line) <= _indent_of_entries(text, section)):
                current = entry.group(1).lstrip("*")
                args[current] = entry.group(2).strip()
            elif current and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(description).strip(), args


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indent_of_entries(text: str, section: str) -> int:
    """The indentation of the first entry under a section header."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower().rstrip(":") == section and i + 1 < len(lines):
            return _indent(lines[i + 1])
    return 0


def function_tool(func: Callable[..., Any], tool_name: str | None = None) -> dict[str, Any]:
    """The ``tools`` entry describing ``func`` to the model, as ``tool_name`` (default its
    own name)."""
    # A partial describes the function it wraps (its own __doc__ is partial's).
    documented = func.func if isinstance(func, functools.partial) else func
    description, arg_docs = parse_docstring(documented.__doc__)
    try:
        hints = get_type_hints(func, include_extras=True)
    except (NameError, TypeError):  # a hint that does not resolve: describe without it
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, parameter in inspect.signature(func).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        hint = hints.get(name, parameter.annotation)
        inner, optional = strip_optional(hint)
        try:
            schema = json_schema(inner)
        except TypeError:
            schema = {}
        if not schema:  # no hint (or Any): a string, as ollama-python does
            schema = {"type": "string"}
        notes = arg_docs.get(name, "")
        if parameter.default is not parameter.empty:
            default = parameter.default
            notes = f"{notes} (default: {default!r})".strip()
        elif not optional:
            required.append(name)
        if notes:
            schema["description"] = notes
        properties[name] = schema
    return {
        "type": "function",
        "function": {
            "name": tool_name or func.__name__,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


#: Tool calls run in one round at most; a model asking for more hears that the rest were not.
MAX_CALLS_PER_ROUND = 16

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def is_tool_name(name: str) -> bool:
    """Whether ``name`` can name a tool: ASCII letters, digits, ``_`` and ``-``."""
    return bool(_NAME.fullmatch(name))


class Toolbox:
    """The functions a model may call, by name. Nothing else can ever run.

    Functions are named by their ``__name__``, or by the keys of a mapping (a
    ``functools.partial``, a callable object or a lambda has no usable name of its own).

    Raises:
        ValueError: a function has no usable name, or two share one; the message says how
            to name them.
    """

    def __init__(
        self, functions: Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]]
    ) -> None:
        named = (
            list(functions.items())
            if isinstance(functions, Mapping)
            else [(getattr(f, "__name__", ""), f) for f in functions]
        )
        self.functions: dict[str, Callable[..., Any]] = {}
        for name, function in named:
            if not callable(function):
                raise ValueError(f"The tool {name!r} is not a function.")
            if not is_tool_name(name):
                raise ValueError(
                    f"A tool needs a name of letters, digits and _ (this one is {name!r}): "
                    "define it with def, or pass tools as a dict {name: function}."
                )
            if name in self.functions:
                raise ValueError(
                    f"Two tools are named {name!r}: give each its own name (def, or a dict "
                    "{name: function})."
                )
            self.functions[name] = function

    def __bool__(self) -> bool:
        return bool(self.functions)

    @property
    def schemas(self) -> list[dict[str, Any]]:
        """The ``tools`` field of a chat request."""
        return [function_tool(f, name) for name, f in self.functions.items()]

    def call(self, call: ToolCall) -> tuple[str, bool]:
        """Run one call; return (text for the model, whether it failed).

        A failure (unknown tool, bad arguments, an exception) goes back to the model as text,
        so it can correct itself; it does not stop the conversation.
        """
        function = self.functions.get(call.name)
        if function is None:
            known = ", ".join(self.functions) or "none"
            return f"Error: there is no tool named {call.name!r}. Available tools: {known}.", True
        parameters = function_tool(function, call.name)["function"]["parameters"]
        problem = schema_problem(parameters, call.arguments)
        if problem:
            return f"Error: bad arguments for {call.name}: {problem}.", True
        try:
            bound = inspect.signature(function).bind(**call.arguments)
        except TypeError as exc:
            return f"Error: bad arguments for {call.name}: {exc}.", True
        try:
            result = function(*bound.args, **bound.kwargs)
        except Exception as exc:  # the model should hear about it, not the notebook crash
            return f"Error: {call.name} raised {type(exc).__name__}: {exc}", True
        return _as_text(result), False


def _as_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(plain_data(result), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)
