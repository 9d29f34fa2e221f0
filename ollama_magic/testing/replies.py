"""What the stand-in answers: canned replies, faults, and deterministic default text.

Everything here is a pure function of the request, so the same request always gets the same
answer (tests can compare runs, notebooks re-execute identically).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.schema_instance import schema_instance

DEFAULT_ERROR = "an error was encountered while running the model"
STATS = ("omit", "zero", "words")
DROPPABLE = ("logprobs", "thinking", "done_reason")


@dataclass
class Fault:
    """A failure to inject into responses; every field is optional.

    Attributes:
        status: answer this HTTP status before any chunk, with body `{"error": error}` and
            `Content-Type: application/json` (or *body* when given). With 200 the body is one
            NDJSON line, `{"error": error}` and a newline, as `application/x-ndjson`: how some
            "Ollama-compatible" adapters report errors such as a missing model.
        error: error text for *status* and *error_after* (default: the runner's generic text).
        body: a non-JSON error body (a proxy's plain-text page) sent with *status* (default 502).
        content_type: the content type of *body*.
        error_after: after this many streamed chunks, send `{"error": ...}` on the 200 stream
            and end the body without a `done` chunk (`stream:false`: an HTTP 500 instead).
        error_done: the in-band error object also carries `"done": true` (non-conforming).
        cut_after: after this many streamed chunks, cut the connection (no terminating chunk).
        delay: seconds to wait before each token (a slow model), on top of the server's own
            pace (`FakeOllama(token_delay=...)`).
        split_utf8: write every NDJSON line that contains a multi-byte character as two HTTP
            chunks split inside that character, flushed separately with a short pause.
        stats: `"omit"` (no metrics in the final chunk), `"zero"` (metrics present but 0), or
            `"words"` (as an adapter in front of another engine reports them: `eval_count` and
            `prompt_eval_count` are the numbers of whitespace-separated words of the answer and
            of the prompt, every duration is 0).
        drop: fields the answer leaves out, from `"logprobs"` (even when asked for),
            `"thinking"` (the trace is generated but not sent; the answer text still is) and
            `"done_reason"` (absent from the final chunk); e.g. `drop=("logprobs",)`.
        empty_context: the final generate chunk carries `"context": []`.
        reset_connection: keep the connection open after responding, then reset it (RST, no
            byte sent) when the client sends its next request on it.
        load_delay: seconds before the response starts, as while a model loads: no byte, not
            even the headers, is sent meanwhile (a client that leaves is noticed).
    """

    status: int | None = None
    error: str | None = None
    body: str | None = None
    content_type: str = "text/plain"
    error_after: int | None = None
    error_done: bool = False
    cut_after: int | None = None
    delay: float = 0.0
    split_utf8: bool = False
    stats: str | None = None
    drop: Sequence[str] = ()
    empty_context: bool = False
    reset_connection: bool = False
    load_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.stats is not None and self.stats not in STATS:
            raise ValueError(f"stats must be None, 'omit', 'zero' or 'words', not {self.stats!r}")
        # One name on its own is accepted too, rather than read as a sequence of letters.
        self.drop = (self.drop,) if isinstance(self.drop, str) else tuple(self.drop)
        unknown = [name for name in self.drop if name not in DROPPABLE]
        if unknown:
            raise ValueError(f"drop takes names from {DROPPABLE}, not {unknown[0]!r}")
        if self.body is not None and self.status is None:
            self.status = 502  # a plain-text body is what a proxy sends when the upstream fails
        if self.delay < 0 or self.load_delay < 0:
            raise ValueError("delays must not be negative")

    @property
    def is_http_error(self) -> bool:
        """True for faults answered with their own status (an error status, or 200 with an
        error line) before any chunk."""
        return self.status is not None

    @property
    def error_text(self) -> str:
        """The error message to send."""
        return self.error if self.error is not None else DEFAULT_ERROR


@dataclass
class Reply:
    """A canned answer.

    Attributes:
        text: the answer; a string is split into word-ish tokens, a sequence of strings is
            sent one element per chunk. None: the default answer (or nothing, with tool calls).
        thinking: the reasoning trace, sent before the text when thinking is on for the request
            (thinking model, `think` not false). None: a default trace; `""`: none.
        tool_calls: calls to make, as `{"name": ..., "arguments": {...}}` (or the wire form
            `{"function": {...}}`, optionally with an `id`).
        done_reason: `done_reason` of the final chunk.
        fault: a fault to apply to this answer.
        final_text_in_done: send the last token in the final (`done: true`) chunk, as newer
            runners do, instead of leaving the final chunk's text empty.
    """

    text: str | Sequence[str] | None = None
    thinking: str | Sequence[str] | None = None
    tool_calls: Sequence[Mapping[str, Any]] | None = None
    done_reason: str = "stop"
    fault: Fault | None = None
    final_text_in_done: bool = False


ReplyCallable = Callable[[RecordedRequest], str | Reply | None]


@dataclass
class ReplyRule:
    """A registered reply: a pattern or callable, an answer, and an optional model filter."""

    matcher: re.Pattern[str] | ReplyCallable
    reply: Reply | None = None
    model_key: str | None = None


def stable_hash(*parts: object) -> int:
    """A 64-bit hash that is the same in every process (unlike `hash()`)."""
    data = "\x1f".join(str(p) for p in parts).encode("utf-8", "replace")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


_TOKEN = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    """Split *text* into word-ish tokens; joining them gives *text* back.

    >>> tokenize("Hi, there!\\n")
    ['Hi', ',', ' there', '!', '\\n']
    """
    return _TOKEN.findall(text)


def as_tokens(value: str | Sequence[str]) -> list[str]:
    """Tokens of a reply text (a string is tokenized, a sequence is taken as the tokens)."""
    if isinstance(value, str):
        return tokenize(value)
    return [str(token) for token in value]


def count_tokens(text: str) -> int:
    """A rough token count used for `prompt_eval_count`."""
    return len(tokenize(text))


def snippet(text: str, limit: int = 60) -> str:
    """The start of *text* on one line, shortened with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


_POINTS = [
    "at temperature 0 it answers the same way every time, so tests can rely on it",
    "no real model runs here; the text is derived from your prompt",
    "it streams one word-ish token per chunk, like the real server",
    "metrics in the final chunk are measured, in nanoseconds",
    "structured outputs are generated from the JSON schema you send",
    "tools are called when you offer them, with arguments from their schema",
    "faults can be injected to test how a client copes with errors",
]


def sampling(options: Mapping[str, Any] | None) -> object:
    """What a default answer's wording depends on besides the model and the prompt.

    As a model samples: above temperature 0 each answer is a fresh draw, unless a ``seed``
    makes it repeatable (the same seed and temperature, the same answer). At temperature 0,
    and when no temperature is asked for, the stand-in answers one way only (where Ollama
    would sample at 0.8), so that tests and lessons stay reproducible: None.
    """
    options = options or {}
    temperature = options.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        return None
    if temperature <= 0:
        return None
    seed = options.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:  # -1: random
        return ("seed", seed, float(temperature))
    return random.random()


def default_text(
    model: str, prompt: str, *, images: int = 0, draw: object = None, system: str = ""
) -> str:
    """The default markdown answer: names the model, quotes the prompt (and the model's own
    *system* prompt, when one is in effect), lists a few points (which, and in what order,
    depends on ``draw``: see :func:`sampling`)."""
    if draw is None:
        start = stable_hash(model, prompt) % len(_POINTS)
        points = [_POINTS[(start + i) % len(_POINTS)] for i in range(3)]
    else:
        points = random.Random(stable_hash(model, prompt, draw)).sample(_POINTS, 3)
    quoted = snippet(prompt) or "(an empty prompt)"
    lines = [f"This is **{model}** on a stand-in Ollama server. You asked: “{quoted}”", ""]
    if system:
        lines += [f"Following my system prompt: “{snippet(system)}”", ""]
    if images:
        lines += [f"I received {images} image{'s' if images != 1 else ''}.", ""]
    lines += ["A few points:", "", *[f"- {p[0].upper()}{p[1:]}." for p in points]]
    return "\n".join(lines)


def default_thinking(prompt: str) -> str:
    """The default reasoning trace of thinking models."""
    return (
        f"The user wrote “{snippet(prompt, 40) or 'nothing'}”. "
        "I should answer briefly and clearly, with a short list."
    )


def default_fill_in() -> str:
    """The default fill-in-the-middle completion (generate with `suffix`)."""
    return "    # completed by the stand-in\n    return result\n"


def default_json(model: str, prompt: str) -> str:
    """The default answer for `format: "json"`: a small JSON object."""
    obj = {"answer": f"A stand-in answer to: {snippet(prompt, 40)}", "model": model}
    return json.dumps(obj, ensure_ascii=False)


def schema_text(schema: Mapping[str, Any] | bool, seed: str) -> str:
    """The answer for a JSON-schema `format`: an instance of the schema as JSON text."""
    if isinstance(schema, Mapping) and not schema:
        return json.dumps({"answer": "A stand-in answer."})
    return json.dumps(schema_instance(schema, seed), ensure_ascii=False)


def tool_call_id(*parts: object) -> str:
    """A deterministic `call_` id with 8 characters from [a-z0-9], like the server's."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    value = stable_hash("tool-call", *parts)
    chars = []
    for _ in range(8):
        value, digit = divmod(value, len(alphabet))
        chars.append(alphabet[digit])
    return "call_" + "".join(chars)


def normalize_tool_call(call: Mapping[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    """Accept `{"name", "arguments"}` or the wire form `{"id"?, "function": {...}}`."""
    function = call.get("function")
    source = function if isinstance(function, Mapping) else call
    name = str(source.get("name", ""))
    arguments = source.get("arguments") or {}
    if isinstance(arguments, str):
        arguments = json.loads(arguments)  # OpenAI-style string arguments
    call_id = call.get("id")
    return (str(call_id) if call_id else None, name, dict(arguments))


def choose_tool(tools: Sequence[Mapping[str, Any]], prompt: str) -> Mapping[str, Any] | None:
    """The tool a "model" calls: the one named in the prompt, else the first."""
    functions = [t.get("function") for t in tools if isinstance(t.get("function"), Mapping)]
    lowered = prompt.lower()
    for function in functions:
        assert isinstance(function, Mapping)
        name = str(function.get("name", "")).lower()
        if name and (name in lowered or name.replace("_", " ") in lowered):
            return function
    return functions[0] if functions else None


def tool_arguments(function: Mapping[str, Any], seed: str) -> dict[str, Any]:
    """Arguments generated from a tool's parameter schema."""
    parameters = function.get("parameters")
    if not isinstance(parameters, Mapping):
        return {}
    value = schema_instance(parameters, seed)
    return value if isinstance(value, dict) else {}


def tool_result_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """An answer that uses the trailing `tool` messages of a conversation."""
    results = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.append(message)
    results.reverse()
    # Names come from tool_name, else from the assistant message that made the calls.
    called: list[str] = []
    for message in reversed(messages[: len(messages) - len(results)]):
        if message.get("role") == "assistant" and message.get("tool_calls"):
            called = [normalize_tool_call(c)[1] for c in message["tool_calls"]]
            break
    lines = ["Here is what the tools returned:", ""]
    for i, message in enumerate(results):
        name = message.get("tool_name") or (called[i] if i < len(called) else "the tool")
        lines.append(f"- **{name}**: {snippet(str(message.get('content', '')), 120)}")
    lines += ["", "That should answer your question."]
    return "\n".join(lines)


def token_logprobs(token: str, top: int, seed: object) -> dict[str, Any]:
    """A deterministic `logprobs` entry for *token* (with *top* alternatives)."""
    logprob = -round((stable_hash("lp", seed, token) % 2000) / 1000 + 0.001, 6)
    entry: dict[str, Any] = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
    if top > 0:
        alternatives = [token, token.strip().upper() or "_", token + "s", " the", " a", "."]
        tops = []
        for rank in range(top):
            alt = alternatives[rank] if rank < len(alternatives) else f"<alt{rank}>"
            value = logprob if rank == 0 else round(logprob - 1.5 * rank - 0.25, 6)
            tops.append({"token": alt, "logprob": value, "bytes": list(alt.encode())})
        entry["top_logprobs"] = tops
    return entry
