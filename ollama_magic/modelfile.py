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

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_magic.errors import OllamaError

__all__ = ["ModelSpec", "parse_modelfile"]

_INSTRUCTIONS = ("from", "system", "template", "parameter", "message", "adapter", "license")
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


def parse_modelfile(text: str, base: Path | None = None) -> ModelSpec:
    """Read a Modelfile; local paths are resolved against ``base`` (the working directory).

    Raises:
        OllamaError: A line that is not an instruction, or a bad ``MESSAGE`` or ``PARAMETER``.
    """
    spec = ModelSpec()
    base = base or Path.cwd()
    for number, instruction, value in _instructions(text):
        if instruction == "from":
            if _is_file(value, base):
                spec.files.append(base / value)
            else:
                spec.fields["from"] = value
        elif instruction in ("system", "template"):
            spec.fields[instruction] = value
        elif instruction == "license":
            licenses = spec.fields.setdefault("license", [])
            licenses.append(value)
        elif instruction == "adapter":
            spec.adapters.append(base / value)
        elif instruction == "message":
            role, _, content = value.partition(" ")
            if role.lower() not in _ROLES:
                raise OllamaError(
                    f"Line {number}: MESSAGE takes a role (system, user or assistant) and the "
                    f"text, not {value!r}."
                )
            message = {"role": role.lower(), "content": _unquote(content.strip())}
            spec.fields.setdefault("messages", []).append(message)
        else:  # parameter
            name, _, raw = value.partition(" ")
            if not raw.strip():
                raise OllamaError(f"Line {number}: PARAMETER takes a name and a value: {value!r}.")
            parameters = spec.fields.setdefault("parameters", {})
            parsed = _value(_unquote(raw.strip()))
            if name in _LISTS:
                parameters.setdefault(name, []).append(str(parsed))
            else:
                parameters[name] = parsed
    if "license" in spec.fields and len(spec.fields["license"]) == 1:
        spec.fields["license"] = spec.fields["license"][0]
    return spec


def _instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, instruction, value) for each instruction; multi-line values joined."""
    found: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instruction = word.lower()
        if instruction not in _INSTRUCTIONS:
            known = ", ".join(word.upper() for word in _INSTRUCTIONS)
            raise OllamaError(f"Line {number}: {word!r} is not a Modelfile instruction ({known}).")
        rest = rest.strip()
        if rest.startswith('"""'):
            body = rest[3:]
            while '"""' not in body and index < len(lines):
                body += "\n" + lines[index]
                index += 1
            if '"""' not in body:
                raise OllamaError(f'Line {number}: the """ opened here is never closed.')
            rest = body[: body.index('"""')]
        else:
            rest = rest if instruction in ("parameter", "message") else _unquote(rest)
        found.append((number, instruction, rest))
    return found


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return str(json.loads(text))
        except ValueError:
            return text[1:-1]
    return text


def _value(text: str) -> Any:
    """A parameter's value: a number or a boolean when it reads as one, else the text."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _is_file(value: str, base: Path) -> bool:
    """Whether ``FROM`` names a local file rather than a model."""
    if value.startswith(("./", "../", "/", "~")) or value.endswith((".gguf", ".safetensors")):
        return True
    return (base / value).is_file()
