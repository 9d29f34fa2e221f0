r"""A Modelfile's lines as the fields of ``POST /api/create``.

Ollama's current API takes JSON fields, not a Modelfile; notebook users know the Modelfile.
So ``FROM``, ``SYSTEM``, ``TEMPLATE``, ``PARAMETER``, ``MESSAGE``, ``ADAPTER`` and
``LICENSE`` lines are read as Ollama's parser reads them (instructions in any case, ``#``
comments, values in triple quotes over several lines, or in quotes) and mapped to the fields.

>>> spec = parse_modelfile(
...     'FROM llama3.2\nSYSTEM "You are a tutor."\nPARAMETER temperature 0.3\n'
...     'PARAMETER stop "<|end|>"\nPARAMETER stop "User:"'
... )
>>> spec.fields["from"], spec.fields["system"]
('llama3.2', 'You are a tutor.')
>>> spec.fields["parameters"]
{'temperature': 0.3, 'stop': ['<|end|>', 'User:']}
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_magic.errors import OllamaError
from ollama_magic.options import OLLAMA_OPTIONS, check_options

__all__ = ["ModelSpec", "parse_modelfile"]

_INSTRUCTIONS = ("from", "system", "template", "parameter", "message", "adapter", "license")
#: Newer instructions (``ollama show --modelfile`` prints some): sent as fields of their name.
_PASSED = ("renderer", "parser", "requires")
_ROLES = ("system", "user", "assistant")
#: Parameters that are lists: repeated lines add to them.
_LISTS = ("stop",)


@dataclass
class ModelSpec:
    """What a Modelfile asks for: the API's fields, and the local files to upload first."""

    fields: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    """``FROM ./model.gguf``: uploaded as blobs, then sent as ``files``."""
    adapters: list[Path] = field(default_factory=list)
    """``ADAPTER ./lora.gguf``: uploaded, then sent as ``adapters``."""


@dataclass(frozen=True)
class _Line:
    number: int
    instruction: str
    name: str
    """MESSAGE's role, PARAMETER's name; "" otherwise."""
    value: str
    quoted: bool


def parse_modelfile(text: str, base: Path | None = None) -> ModelSpec:
    """Read a Modelfile; local paths are resolved against ``base`` (the working directory).

    Raises:
        OllamaError: A line that is not an instruction, or a bad ``MESSAGE`` or ``PARAMETER``.
    """
    spec = ModelSpec()
    base = base or Path.cwd()
    for line in _lines(text):
        instruction, value = line.instruction, line.value
        if instruction == "from":
            if _is_file(value, base):
                spec.files.append(_path(value, base))
            else:
                spec.fields["from"] = value
        elif instruction in ("system", "template", *_PASSED):
            spec.fields[instruction] = value
        elif instruction == "license":
            spec.fields.setdefault("license", []).append(value)
        elif instruction == "adapter":
            spec.adapters.append(_path(value, base))
        elif instruction == "message":
            if line.name not in _ROLES:  # lower case only, as Ollama accepts them
                raise OllamaError(
                    f"Line {line.number}: MESSAGE takes a role (system, user or assistant) and "
                    f"the text, not {line.name!r}."
                )
            message = {"role": line.name, "content": value}
            spec.fields.setdefault("messages", []).append(message)
        else:  # parameter
            parameters = spec.fields.setdefault("parameters", {})
            if line.name in _LISTS:
                parameters.setdefault(line.name, []).append(value)  # as written, always text
            else:
                parameters[line.name] = _parameter(line, value if line.quoted else _value(value))
    if "license" in spec.fields and len(spec.fields["license"]) == 1:
        spec.fields["license"] = spec.fields["license"][0]
    return spec


def _parameter(line: _Line, value: Any) -> Any:
    """A parameter's value, checked as Ollama checks it (a name it knows, a value of its type)."""
    if line.name not in OLLAMA_OPTIONS:
        close = difflib.get_close_matches(line.name, sorted(OLLAMA_OPTIONS), n=1)
        maybe = f" Did you mean {close[0]}?" if close else ""
        raise OllamaError(
            f"Line {line.number}: {line.name!r} is not a parameter Ollama knows.{maybe}"
        )
    try:
        return check_options({line.name: value})[line.name]
    except ValueError as exc:
        raise OllamaError(f"Line {line.number}: {exc}.") from None


def _lines(text: str) -> list[_Line]:
    """Each instruction with its value, as Ollama's parser (parser/parser.go) reads them: a
    value runs to the end of its line, or on over more lines until it ends with the quote it
    began with (triple or single double quotes), which are then removed, nothing else."""
    found: list[_Line] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        word, rest = _split(line)
        instruction = word.lower()
        if instruction not in _INSTRUCTIONS + _PASSED:
            known = ", ".join(word.upper() for word in _INSTRUCTIONS + _PASSED)
            raise OllamaError(f"Line {number}: {word!r} is not a Modelfile instruction ({known}).")
        name = ""
        if instruction in ("parameter", "message"):
            name, rest = _split(rest)
            if not rest:
                what = "a name and a value" if instruction == "parameter" else "a role and text"
                raise OllamaError(f"Line {number}: {word.upper()} takes {what}: {line!r}.")
        while _unquoted(rest) is None and index < len(lines):
            rest += "\n" + lines[index]
            index += 1
        value = _unquoted(rest.strip())
        if value is None:
            quote = '"""' if rest.startswith('"""') else '"'
            raise OllamaError(f"Line {number}: the {quote} opened here is never closed.")
        found.append(_Line(number, instruction, name, value, rest.startswith('"')))
    return found


def _unquoted(text: str) -> str | None:
    """The value without its quotes; None while a quote it began with is not closed."""
    text = text.strip()
    if text.startswith('"""'):
        return text[3:-3] if len(text) >= 6 and text.endswith('"""') else None
    if text.startswith('"'):
        return text[1:-1] if len(text) >= 2 and text.endswith('"') else None
    return text


def _split(text: str) -> tuple[str, str]:
    """The first word and the rest (a tab separates as a space does)."""
    parts = text.split(None, 1)
    return (parts[0], parts[1].strip()) if len(parts) == 2 else (text.strip(), "")


def _value(text: str) -> Any:
    """A parameter's value: a number or a boolean when it reads as one, else the text."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _is_file(value: str, base: Path) -> bool:
    """Whether ``FROM`` names a local file rather than a model."""
    if value.startswith(("./", "../", "/", "~")) or value.endswith((".gguf", ".safetensors")):
        return True
    return (base / value).is_file()
