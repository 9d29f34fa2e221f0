"""What the Ollama API sends back, as small frozen dataclasses.

Each keeps the JSON object it was built from in ``raw``, so fields this package does not model
(new server versions add some) stay reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chunk", "Metrics", "ModelInfo", "Progress", "Result", "RunningModel", "ToolCall"]


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for."""

    name: str
    """The function's name, as the model wrote it."""
    arguments: dict[str, Any]
    """Arguments, a JSON object (Ollama sends an object, not a string as OpenAI does)."""
    id: str | None = None
    """``call_xxxxxxxx`` (servers >= 0.12.10); goes back as a tool message's ``tool_call_id``."""
    index: int | None = None
    """Position of the call within the answer."""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ToolCall:
        """Build from ``{"id": …, "function": {"index": …, "name": …, "arguments": …}}``."""
        function = obj.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        index = function.get("index")
        return cls(
            name=str(function.get("name", "")),
            arguments=arguments if isinstance(arguments, dict) else {},
            id=_text(obj.get("id")) or None,
            index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The wire shape, for sending the call back in a conversation's history."""
        function: dict[str, Any] = {"name": self.name, "arguments": self.arguments}
        if self.index is not None:
            function = {"index": self.index, **function}
        return {"id": self.id, "function": function} if self.id else {"function": function}


_METRIC_FIELDS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


@dataclass(frozen=True)
class Metrics:
    """Timings (nanoseconds) and token counts from a final chunk.

    Ollama omits zero values, and servers that only imitate Ollama send zeros or nothing, so
    every field is ``None`` when unknown.
    """

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Metrics:
        """Read the metric fields of a final chunk; zero, absent or malformed become None."""
        values: dict[str, int | None] = {}
        for name in _METRIC_FIELDS:
            value = obj.get(name)
            # Infinity and NaN parse as JSON floats here; neither is a duration or a count.
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[name] = int(value) if 0 < value < 2**63 else None
            else:
                values[name] = None
        return cls(**values)

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed, ``eval_count / eval_duration`` (None when either is unknown)."""
        if self.eval_count and self.eval_duration:
            return self.eval_count / self.eval_duration * 1e9
        return None


@dataclass(frozen=True)
class Chunk:
    """One object of a ``/api/generate`` or ``/api/chat`` stream."""

    model: str
    content: str
    """New answer text (generate's ``response``, chat's ``message.content``)."""
    thinking: str = ""
    """New reasoning text from a thinking model."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls in this chunk (chat sends them in non-final chunks)."""
    done: bool = False
    done_reason: str | None = None
    """``stop``, ``length``, ``load`` or ``unload`` on the final chunk."""
    logprobs: tuple[dict[str, Any], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Chunk:
        """Build from either endpoint's chunk shape."""
        # Every field is checked for its type: a server (or a proxy) may send anything.
        message = obj.get("message")
        if isinstance(message, dict):
            source, text = message, message.get("content")
        else:
            source, text = obj, obj.get("response")
        model = obj.get("model")
        if (
            obj.get("done") is False
            and type(text) is str
            and type(model) is str
            and "thinking" not in source
            and "tool_calls" not in source
            and "tool_calls" not in obj
            and "logprobs" not in obj
        ):
            # The usual chunk, one a token: a piece of text and nothing else. Filling
            # __dict__ at once skips the frozen dataclass's per-field object.__setattr__,
            # which cost more than parsing the JSON line.
            chunk = object.__new__(cls)
            object.__setattr__(
                chunk, "__dict__", {**_TOKEN_DEFAULTS, "model": model, "content": text, "raw": obj}
            )
            return chunk
        calls = _list(source.get("tool_calls")) or _list(obj.get("tool_calls"))
        logprobs = _list(obj.get("logprobs"))
        reason = obj.get("done_reason")
        chunk = object.__new__(cls)
        chunk.__dict__.update(
            model=_text(model),
            content=_text(text),
            thinking=_text(source.get("thinking")),
            tool_calls=tuple(ToolCall.from_json(c) for c in calls if isinstance(c, dict))
            if calls
            else (),
            done=obj.get("done") is True,
            done_reason=reason if reason and isinstance(reason, str) else None,
            logprobs=tuple(p for p in logprobs if isinstance(p, dict)) if logprobs else (),
            raw=obj,
        )
        return chunk


#: A token chunk's fields that are not in its JSON (see Chunk.from_json).
_TOKEN_DEFAULTS: dict[str, Any] = {
    "thinking": "",
    "tool_calls": (),
    "done": False,
    "done_reason": None,
    "logprobs": (),
}


def _text(value: Any) -> str:
    """A string field's value, or "" for anything that is not a string."""
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    """A list field's value, or [] for anything that is not a list."""
    return value if isinstance(value, list) else []


# No local model generates this fast; a figure above it comes from broken timings.
_MAX_TOKENS_PER_SECOND = 20_000


@dataclass(frozen=True)
class Result:
    """A whole answer: the text, reasoning and tool calls of every chunk, and the final metrics."""

    model: str
    content: str
    thinking: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    done_reason: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    context: tuple[int, ...] | None = None
    """Generate only: tokens to pass back as ``context`` to continue (deprecated by Ollama)."""
    logprobs: tuple[dict[str, Any], ...] = ()
    created_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The final chunk (or the whole non-streamed reply) as sent."""
    chunks: int = 0
    """How many chunks brought text or reasoning (streamed answers; about one token each)."""
    measured_tokens_per_second: float | None = None
    """The speed measured here from the chunks' arrival times (streamed answers)."""
    recorded_at: str | None = None
    """When the answer was recorded, if it was replayed from a recording (ISO 8601)."""

    def __str__(self) -> str:
        return self.content

    @property
    def count_plausible(self) -> bool:
        """Whether the server's token count can be believed.

        Ollama sends one chunk per token at most (a chunk can hold several). Servers that only
        imitate it send zero, nothing, or a word count: fewer "tokens" than chunks received.
        """
        return bool(self.metrics.eval_count) and (self.metrics.eval_count or 0) >= self.chunks

    @property
    def stats_plausible(self) -> bool:
        """Whether the server's token count and its timing (nanoseconds) can be believed."""
        rate = self.metrics.tokens_per_second
        return self.count_plausible and rate is not None and rate <= _MAX_TOKENS_PER_SECOND

    @property
    def speed(self) -> tuple[float, bool] | None:
        """Tokens per second, and whether it was measured here rather than by the server.

        The server's own figure when its stats are plausible, else the one measured from the
        chunks' arrival (None when neither is known, e.g. an unstreamed answer).
        """
        if self.stats_plausible and self.metrics.tokens_per_second is not None:
            return self.metrics.tokens_per_second, False
        measured = self.measured_tokens_per_second
        if measured and measured <= _MAX_TOKENS_PER_SECOND:  # not a burst from a buffer
            return measured, True
        return None

    @property
    def message(self) -> dict[str, Any]:
        """The answer as an assistant message, ready to append to a chat history."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.thinking:
            message["thinking"] = self.thinking
        if self.tool_calls:
            message["tool_calls"] = [call.to_json() for call in self.tool_calls]
        return message


@dataclass(frozen=True)
class Progress:
    """One status line of ``/api/pull``."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Progress:
        """Build from a progress object (zero fields are omitted on the wire)."""
        return cls(
            status=str(obj.get("status", "")),
            digest=obj.get("digest"),
            total=obj.get("total"),
            completed=obj.get("completed"),
        )

    @property
    def fraction(self) -> float | None:
        """Share of this layer downloaded, 0..1 (None for lines without sizes)."""
        if self.total:
            return min(1.0, (self.completed or 0) / self.total)
        return None


@dataclass(frozen=True)
class ModelInfo:
    """A local model, as ``/api/tags`` lists it."""

    name: str
    size: int = 0
    """Bytes on disk."""
    modified_at: str = ""
    digest: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""
    capabilities: tuple[str, ...] = ()
    """Only on newer servers; use ``Client.show`` for the authoritative list."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelInfo:
        """Build from one entry of ``/api/tags``."""
        details = obj.get("details") or {}
        return cls(
            name=str(obj.get("name") or obj.get("model") or ""),
            size=int(obj.get("size") or 0),
            modified_at=str(obj.get("modified_at") or ""),
            digest=str(obj.get("digest") or ""),
            family=str(details.get("family") or ""),
            parameter_size=str(details.get("parameter_size") or ""),
            quantization_level=str(details.get("quantization_level") or ""),
            capabilities=tuple(obj.get("capabilities") or ()),
            raw=obj,
        )


@dataclass(frozen=True)
class RunningModel:
    """A model loaded in memory, as ``/api/ps`` lists it."""

    name: str
    size: int = 0
    size_vram: int = 0
    expires_at: str = ""
    context_length: int | None = None
    parameter_size: str = ""
    quantization_level: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunningModel:
        """Build from one entry of ``/api/ps``."""
        details = obj.get("details") or {}
        return cls(
            name=str(obj.get("name") or obj.get("model") or ""),
            size=int(obj.get("size") or 0),
            size_vram=int(obj.get("size_vram") or 0),
            expires_at=str(obj.get("expires_at") or ""),
            context_length=obj.get("context_length"),
            parameter_size=str(details.get("parameter_size") or ""),
            quantization_level=str(details.get("quantization_level") or ""),
            raw=obj,
        )
