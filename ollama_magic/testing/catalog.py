"""Model names, model descriptions, the stand-in's default and pullable models, pull progress."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, NamedTuple

from ollama_magic.testing.wire import datetime_ns, rfc3339nano

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,349}(:\d{1,5})?$")


class ModelName(NamedTuple):
    """A parsed model reference (`[host/][namespace/]model[:tag]`)."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def display(self) -> str:
        """The short name `ollama list` prints, e.g. `llama3.2:latest`."""
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def canonical(self) -> str:
        """The fully qualified name used in capability errors."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def key(self) -> str:
        """Lookup key: model names are case-insensitive on the real server."""
        return self.canonical.lower()


def parse_model_name(name: str) -> ModelName | None:
    """Parse *name*, filling in the defaults; None if it is not a valid model name.

    >>> parse_model_name("llama3.2").display
    'llama3.2:latest'
    >>> parse_model_name("bad name!") is None
    True
    """
    if not name:
        return None
    rest, tag = name, DEFAULT_TAG
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        rest, tag = name[:colon], name[colon + 1 :]
    parts = rest.split("/")
    if len(parts) > 3:
        return None
    model = parts[-1]
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    host = parts[-3] if len(parts) == 3 else DEFAULT_HOST
    if not (_PART.match(model) and _PART.match(namespace) and _PART.match(tag)):
        return None
    if not _HOST.match(host):
        return None
    return ModelName(host, namespace, model, tag)


def sha256_hex(text: str) -> str:
    """Hex SHA-256 of *text*: deterministic digests for models and layers."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Layer(NamedTuple):
    """One blob of a model's manifest."""

    digest: str
    size: int
    media: str = "model"  # the media type after `application/vnd.ollama.image.`


@dataclass(frozen=True)
class ModelSpec:
    """A model the stand-in knows about (installed locally or pullable).

    Attributes:
        name: display name with tag, e.g. `llama3.2:latest`.
        capabilities: e.g. `("completion", "tools", "thinking")`; `embedding` for embedders.
        family: architecture family (`details.family`, `general.architecture`).
        families: `details.families`; defaults to `(family,)`.
        parameter_size: e.g. `"3.2B"`.
        quantization_level: e.g. `"Q4_K_M"`.
        size: size on disk in bytes.
        digest: 64 hex characters; derived from the name when not given.
        modified_at: when the model was pulled/created (UTC).
        context_length: maximum context the model supports.
        embedding_length: size of the model's embedding vectors.
        template: the Go chat template shown by /api/show.
        system: default system prompt (empty: none).
        license: license text shown by /api/show.
        parameters: Modelfile parameters as (key, value) pairs.
        messages: Modelfile messages as (role, content) pairs, shown by /api/show.
        layers: the manifest's layers, for a model made by /api/create (empty: derived).
        parent_model: what /api/show gives as `details.parent_model` (the model or file
            a created model was made from).
    """

    name: str
    capabilities: tuple[str, ...] = ("completion",)
    family: str = "llama"
    families: tuple[str, ...] = ()
    parameter_size: str = "7B"
    quantization_level: str = "Q4_K_M"
    size: int = 4_000_000_000
    digest: str = ""
    modified_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    context_length: int = 4096
    embedding_length: int = 4096
    template: str = ""
    system: str = ""
    license: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    messages: tuple[tuple[str, str], ...] = ()
    layers: tuple[Layer, ...] = ()
    parent_model: str = ""

    def __post_init__(self) -> None:
        parsed = parse_model_name(self.name)
        if parsed is None:
            raise ValueError(f"invalid model name: {self.name!r}")
        # Frozen dataclass: normalise through object.__setattr__.
        object.__setattr__(self, "name", parsed.display)
        object.__setattr__(self, "capabilities", tuple(self.capabilities))
        if not self.families:
            object.__setattr__(self, "families", (self.family,))
        if not self.digest:
            object.__setattr__(self, "digest", sha256_hex(f"model:{parsed.display}"))
        if not self.template:
            object.__setattr__(self, "template", _template_for(self.family, self.capabilities))
        if self.modified_at.tzinfo is None:
            object.__setattr__(self, "modified_at", self.modified_at.replace(tzinfo=timezone.utc))

    @property
    def parsed(self) -> ModelName:
        """The parsed name."""
        parsed = parse_model_name(self.name)
        assert parsed is not None  # validated in __post_init__
        return parsed

    def has(self, capability: str) -> bool:
        """Whether the model has *capability*."""
        return capability in self.capabilities

    def details(self) -> dict[str, Any]:
        """The `details` object of /api/tags, /api/ps and /api/show (Go field order)."""
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": list(self.families),
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def tags_entry(self) -> dict[str, Any]:
        """One entry of `GET /api/tags`."""
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": rfc3339nano(datetime_ns(self.modified_at)),
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
            "capabilities": list(self.capabilities),
        }

    def parameter_count(self) -> int:
        """Parameter count derived from `parameter_size` ("3.2B" -> about 3.2e9)."""
        match = re.match(r"^([\d.]+)\s*([KMB]?)", self.parameter_size.upper())
        if not match:
            return 0
        scale = {"K": 1e3, "M": 1e6, "B": 1e9, "": 1}[match.group(2)]
        jitter = int(sha256_hex(self.name)[:4], 16)  # real counts are never round
        return int(float(match.group(1)) * scale) + jitter

    def model_info(self) -> dict[str, Any]:
        """The `model_info` map of /api/show; Go marshals map keys sorted."""
        arch = self.family.replace("-", "_")
        file_type = {"Q4_K_M": 15, "Q4_0": 2, "Q8_0": 7, "F16": 1, "BF16": 32}
        info: dict[str, Any] = {
            "general.architecture": arch,
            "general.basename": self.parsed.model,
            "general.file_type": file_type.get(self.quantization_level.upper(), 15),
            "general.parameter_count": self.parameter_count(),
            "general.quantization_version": 2,
            f"{arch}.attention.head_count": max(1, self.embedding_length // 128),
            f"{arch}.block_count": 28 if self.embedding_length >= 2048 else 12,
            f"{arch}.context_length": self.context_length,
            f"{arch}.embedding_length": self.embedding_length,
            "tokenizer.ggml.model": "bert" if self.has("embedding") else "gpt2",
        }
        return dict(sorted(info.items()))

    def parameters_text(self) -> str:
        """The `parameters` string of /api/show (key padded to 30 columns, as the server does)."""
        lines = []
        for key, value in self.parameters:
            shown = f'"{value}"' if key == "stop" else value
            lines.append(f"{key:<30} {shown}")
        return "\n".join(lines)

    def modelfile(self) -> str:
        """The `modelfile` string of /api/show."""
        lines = [
            '# Modelfile generated by "ollama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {self.name}",
            "",
            f"FROM /root/.ollama/models/blobs/sha256-{sha256_hex('blob:' + self.digest)}",
            f'TEMPLATE """{self.template}"""',
        ]
        if self.system:
            lines.append(f'SYSTEM """{self.system}"""')
        lines += [f"PARAMETER {key} {value}" for key, value in self.parameters]
        lines += [f"MESSAGE {role} {_modelfile_quote(text)}" for role, text in self.messages]
        if self.license:
            lines.append(f'LICENSE """{self.license}"""')
        return "\n".join(lines) + "\n"

    def show(self) -> dict[str, Any]:
        """The /api/show response (Go `ShowResponse` field order; `model_info` always present)."""
        out: dict[str, Any] = {}
        if self.license:
            out["license"] = self.license
        out["modelfile"] = self.modelfile()
        if self.parameters:
            out["parameters"] = self.parameters_text()
        out["template"] = self.template
        if self.system:
            out["system"] = self.system
        out["details"] = {**self.details(), "parent_model": self.parent_model}
        if self.messages:
            out["messages"] = [{"role": role, "content": text} for role, text in self.messages]
        out["model_info"] = self.model_info()
        out["capabilities"] = list(self.capabilities)
        out["modified_at"] = rfc3339nano(datetime_ns(self.modified_at))
        return out

    def renamed(self, name: str, *, modified_at: datetime | None = None) -> ModelSpec:
        """A copy under another name (pull and copy)."""
        return replace(self, name=name, modified_at=modified_at or datetime.now(timezone.utc))


def _modelfile_quote(text: str) -> str:
    """A Modelfile argument: as is, or in triple quotes when it spans lines or has edges."""
    if "\n" in text or text != text.strip():
        return f'"""{text}"""'
    return text


_LLAMA_TEMPLATE = (
    "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
    "{{- end }}\n{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>\n{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
_FIM_TEMPLATE = (
    "{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
    "{{- else }}" + _CHATML_TEMPLATE + "{{- end }}"
)
_VICUNA_TEMPLATE = "{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT: "


def _template_for(family: str, capabilities: Iterable[str]) -> str:
    caps = set(capabilities)
    if "embedding" in caps:
        return "{{ .Prompt }}"
    if "insert" in caps:
        return _FIM_TEMPLATE
    if family.startswith("qwen"):
        return _CHATML_TEMPLATE
    if "vision" in caps:
        return _VICUNA_TEMPLATE
    return _LLAMA_TEMPLATE


_LLAMA_LICENSE = (
    "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\nLlama 3.2 Version Release Date: September 25, 2024\n"
)
_APACHE = "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/\n"
_LLAMA_STOPS = (
    ("stop", "<|start_header_id|>"),
    ("stop", "<|end_header_id|>"),
    ("stop", "<|eot_id|>"),
)
_CHATML_STOPS = (("stop", "<|im_start|>"), ("stop", "<|im_end|>"))


def _utc(year: int, month: int, day: int, hour: int) -> datetime:
    return datetime(year, month, day, hour, 12, 7, 414671, tzinfo=timezone.utc)


def _spec(name: str, **kwargs: Any) -> ModelSpec:
    return ModelSpec(name=name, **kwargs)


def default_models() -> list[ModelSpec]:
    """The models installed on a fresh stand-in, most recently modified first."""
    return [
        _spec(
            "llama3.2:latest",
            capabilities=("completion", "tools"),
            family="llama",
            parameter_size="3.2B",
            quantization_level="Q4_K_M",
            size=2_019_393_189,
            digest="a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            modified_at=_utc(2025, 6, 2, 9),
            context_length=131_072,
            embedding_length=3072,
            license=_LLAMA_LICENSE,
            parameters=_LLAMA_STOPS,
        ),
        _spec(
            "qwen3:latest",
            capabilities=("completion", "tools", "thinking"),
            family="qwen3",
            parameter_size="8.2B",
            quantization_level="Q4_K_M",
            size=5_225_388_164,
            modified_at=_utc(2025, 5, 20, 16),
            context_length=40_960,
            embedding_length=4096,
            license=_APACHE,
            parameters=(
                ("repeat_penalty", "1"),
                *_CHATML_STOPS,
                ("temperature", "0.6"),
                ("top_k", "20"),
                ("top_p", "0.95"),
            ),
        ),
        _spec(
            "llava:latest",
            capabilities=("completion", "vision"),
            family="llama",
            families=("llama", "clip"),
            parameter_size="7B",
            quantization_level="Q4_0",
            size=4_733_363_377,
            modified_at=_utc(2025, 4, 11, 8),
            context_length=32_768,
            embedding_length=4096,
            license=_APACHE,
            parameters=(("stop", "[INST]"), ("stop", "[/INST]")),
        ),
        _spec(
            "qwen2.5-coder:latest",
            capabilities=("completion", "insert"),
            family="qwen2",
            parameter_size="7.6B",
            quantization_level="Q4_K_M",
            size=4_683_087_519,
            modified_at=_utc(2025, 3, 3, 14),
            context_length=32_768,
            embedding_length=3584,
            license=_APACHE,
            parameters=_CHATML_STOPS,
        ),
        _spec(
            "all-minilm:latest",
            capabilities=("embedding",),
            family="bert",
            parameter_size="23M",
            quantization_level="F16",
            size=45_960_996,
            modified_at=_utc(2025, 2, 14, 10),
            context_length=512,
            embedding_length=384,
            license=_APACHE,
        ),
    ]


def default_remote_models() -> list[ModelSpec]:
    """Models `/api/pull` can fetch: the default models plus a few well-known ones."""
    extra = [
        _spec(
            "gemma3:latest",
            capabilities=("completion", "vision"),
            family="gemma3",
            parameter_size="4.3B",
            size=3_338_801_804,
            context_length=131_072,
            embedding_length=2560,
        ),
        _spec(
            "gemma3:1b",
            capabilities=("completion",),
            family="gemma3",
            parameter_size="999.89M",
            size=815_319_791,
            context_length=32_768,
            embedding_length=1152,
        ),
        _spec(
            "mistral:latest",
            capabilities=("completion", "tools"),
            family="llama",
            parameter_size="7.2B",
            quantization_level="Q4_0",
            size=4_113_301_824,
            context_length=32_768,
        ),
        _spec(
            "phi4:latest",
            capabilities=("completion",),
            family="phi3",
            parameter_size="14.7B",
            size=9_053_116_391,
            context_length=16_384,
            embedding_length=5120,
        ),
        _spec(
            "deepseek-r1:latest",
            capabilities=("completion", "thinking"),
            family="qwen3",
            parameter_size="8.2B",
            size=5_225_376_047,
            context_length=131_072,
        ),
        _spec(
            "nomic-embed-text:latest",
            capabilities=("embedding",),
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="F16",
            size=274_302_450,
            context_length=2048,
            embedding_length=768,
        ),
    ]
    return [*default_models(), *extra]
