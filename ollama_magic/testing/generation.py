"""`/api/generate` and `/api/chat`: validation in the server's order, then the answer.

The answer is planned first (thinking tokens, content tokens, tool calls, done reason), then
either streamed as NDJSON or accumulated into one object, with any fault applied on the way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ollama_magic.testing import compat
from ollama_magic.testing.catalog import ModelSpec, parse_model_name
from ollama_magic.testing.replies import (
    Fault,
    Reply,
    as_tokens,
    choose_tool,
    count_tokens,
    default_fill_in,
    default_json,
    default_text,
    default_thinking,
    normalize_tool_call,
    schema_text,
    stable_hash,
    token_logprobs,
    tokenize,
    tool_arguments,
    tool_call_id,
    tool_result_text,
)
from ollama_magic.testing.wire import (
    JSON_PLAIN,
    JSON_UTF8,
    ApiError,
    decode_request,
    go_quote,
    keep_alive_ns,
    rfc3339nano,
)

if TYPE_CHECKING:
    from ollama_magic.testing.handler import RequestHandler
    from ollama_magic.testing.server import RecordedRequest

GENERATE_FIELDS = {
    "model": "string",
    "prompt": "string",
    "suffix": "string",
    "system": "string",
    "template": "string",
    "context": "[]int",
    "stream": "bool",
    "raw": "bool",
    "format": "any",
    "keep_alive": "duration",
    "images": "images",
    "options": "object",
    "think": "think",
    "truncate": "bool",
    "shift": "bool",
    "_debug_render_only": "bool",
    "logprobs": "bool",
    "top_logprobs": "int",
}
CHAT_FIELDS = {
    "model": "string",
    "messages": "messages",
    "stream": "bool",
    "format": "any",
    "keep_alive": "duration",
    "tools": "tools",
    "options": "object",
    "think": "think",
    "truncate": "bool",
    "shift": "bool",
    "_debug_render_only": "bool",
    "logprobs": "bool",
    "top_logprobs": "int",
}

_INT_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "draft_num_predict",
    }
)
_FLOAT_OPTIONS = frozenset(
    {
        "temperature",
        "top_p",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    }
)
_BOOL_OPTIONS = frozenset({"use_mmap"})


def check_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    """Type-check runner options like `api.Options.FromMap` (unknown keys are ignored).

    Raises:
        ApiError: 500 `option "temperature" must be of type float32` and the like.
    """
    for key, value in options.items():
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = None
        if key in _INT_OPTIONS and not number:
            expected = "integer"
        elif key in _FLOAT_OPTIONS and not number:
            expected = "float32"
        elif key in _BOOL_OPTIONS and not isinstance(value, bool):
            expected = "boolean"
        elif key == "stop":
            if not isinstance(value, list):
                expected = "array"
            elif not all(isinstance(item, str) for item in value):
                expected = "an array of strings"
        if expected is not None:
            raise ApiError(500, f"option {go_quote(key)} must be of type {expected}")
    return options


def check_format(value: Any, *, stream: bool) -> Any:
    """Return None, "json" or a schema dict; anything else fails like the runner does."""
    if value is None or value == "":
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raw = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # The runner's error reaches streamResponse before any chunk: plain application/json.
    raise ApiError(
        500,
        f'invalid format: {go_quote(raw)}; expected "json" or a valid JSON Schema object',
        JSON_PLAIN if stream else JSON_UTF8,
    )


@dataclass
class Context:
    """A validated generate/chat request."""

    chat: bool
    model: str  # as sent; responses echo it
    spec: ModelSpec
    request: dict[str, Any]
    stream: bool
    think: bool
    format: Any
    keep_alive: int | None
    options: Mapping[str, Any]
    started: int
    loaded: int = 0

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Chat messages (empty for generate)."""
        return self.request.get("messages") or []

    @property
    def tools(self) -> list[dict[str, Any]]:
        """Tools offered (chat)."""
        return self.request.get("tools") or []

    @property
    def prompt(self) -> str:
        """The prompt, or the last chat message's content."""
        if self.chat:
            return str(self.messages[-1].get("content", "")) if self.messages else ""
        return str(self.request.get("prompt", ""))

    @property
    def seed(self) -> str:
        """What makes two requests "the same" for deterministic choices."""
        parts = [self.spec.name, self.prompt, len(self.messages), json.dumps(self.format)]
        return "\x1f".join(str(p) for p in parts)


@dataclass
class Plan:
    """What the answer consists of, before any of it is sent."""

    thinking: list[str]
    content: list[str]
    tool_calls: list[dict[str, Any]]
    done_reason: str
    final_text_in_done: bool
    fault: Fault
    prompt_tokens: list[str] = field(default_factory=list)


def generate(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/generate`."""
    context = _validate(handler, record, started, chat=False)
    if context is not None:
        _answer(handler, record, context)


def chat(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/chat`."""
    context = _validate(handler, record, started, chat=True)
    if context is not None:
        _answer(handler, record, context)


def _single(context_chat: bool, model: str, reason: str) -> dict[str, Any]:
    """The load/unload reply object."""
    out: dict[str, Any] = {"model": model, "created_at": rfc3339nano()}
    if context_chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out["done"] = True
    out["done_reason"] = reason
    return out


def _validate(
    handler: RequestHandler, record: RecordedRequest, started: int, *, chat: bool
) -> Context | None:
    """Check the request in the server's order; answer load/unload requests directly."""
    struct, fields = ("ChatRequest", CHAT_FIELDS) if chat else ("GenerateRequest", GENERATE_FIELDS)
    request = decode_request(record.raw_body, struct, fields)
    top = request.get("top_logprobs", 0)
    if not 0 <= top <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    name = request.get("model", "")
    missing = compat.missing_model_status(handler.fake.compat)
    if not name:
        # generate and chat disagree here on the real server.
        if chat:
            raise ApiError(400, "model is required")
        raise ApiError(missing, "model '' not found")
    spec = local_model(handler, name, missing_status=missing)
    parsed = parse_model_name(name)  # valid: local_model checked it
    keep_alive = keep_alive_ns(request.get("keep_alive"))
    empty = not request.get("messages") if chat else not request.get("prompt")
    if empty and keep_alive == 0:
        handler.fake._unload(spec)
        handler.respond_json(200, _single(chat, name, "unload"))
        return None
    overrides = request.get("template") or request.get("system") or request.get("context")
    if not chat and request.get("raw") and overrides:
        raise ApiError(400, "raw mode does not support template, system, or context")
    think = request.get("think")
    if think is not None and think is not False and not spec.has("thinking"):
        raise ApiError(400, f"{go_quote(name)} does not support thinking")
    if spec.has("embedding") and not spec.has("completion"):
        raise ApiError(400, f"{go_quote(name)} does not support {'chat' if chat else 'generate'}")
    needed = ["completion"]
    if not chat and request.get("suffix"):
        needed.append("insert")
    if chat and request.get("tools"):
        needed.append("tools")
    for capability in needed:
        if not spec.has(capability):
            raise ApiError(400, f"{parsed.canonical} does not support {capability}")
    options = check_options(request.get("options") or {})
    handler.fake._touch_loaded(spec, keep_alive, options.get("num_ctx"))
    if empty:
        handler.respond_json(200, _single(chat, name, "load"))
        return None
    stream = request.get("stream", True)
    return Context(
        chat=chat,
        model=name,
        spec=spec,
        request=request,
        stream=stream,
        think=spec.has("thinking") and think is not False,
        format=check_format(request.get("format"), stream=stream),
        keep_alive=keep_alive,
        options=options,
        started=started,
        loaded=time.perf_counter_ns(),
    )


# -------------------------------------------------------------------------------------------
# Planning
# -------------------------------------------------------------------------------------------


def _truncate(tokens: list[str], limit: int) -> list[str]:
    """Keep the first *limit* characters of the joined tokens."""
    out: list[str] = []
    used = 0
    for token in tokens:
        if used + len(token) >= limit:
            rest = token[: limit - used]
            if rest:
                out.append(rest)
            break
        out.append(token)
        used += len(token)
    return out


def _default_content(context: Context) -> tuple[str, list[tuple[str | None, str, dict[str, Any]]]]:
    """The default answer: a tool call, a tool-result summary, JSON, or markdown text."""
    messages = context.messages
    last_role = messages[-1].get("role") if messages else "user"
    if context.chat and context.tools and last_role == "user":
        function = choose_tool(context.tools, context.prompt)
        if function is not None:
            name = str(function.get("name", ""))
            return "", [(None, name, tool_arguments(function, context.seed))]
    if context.chat and last_role == "tool":
        return tool_result_text(messages), []
    if context.format == "json":
        return default_json(context.model, context.prompt), []
    if isinstance(context.format, dict):
        return schema_text(context.format, context.seed), []
    if context.request.get("suffix"):
        return default_fill_in(), []
    images = len(context.request.get("images") or [])
    if context.chat and messages:
        images = len(messages[-1].get("images") or [])
    return default_text(context.model, context.prompt, images=images), []


def _prompt_tokens(context: Context) -> list[str]:
    """Roughly what the rendered prompt would tokenize to (for counts and `context`)."""
    request = context.request
    if context.chat:
        parts = []
        for message in context.messages:
            parts.append(f"<|{message.get('role', '')}|>\n{message.get('content', '')}\n")
        if context.tools:
            parts.append(json.dumps(context.tools))
        text = "".join(parts) + "<|assistant|>\n"
    elif request.get("raw"):
        text = str(request.get("prompt", ""))
    else:
        text = f"<|system|>\n{request.get('system', '')}\n<|user|>\n{request.get('prompt', '')}"
        text += f"{request.get('suffix', '')}\n<|assistant|>\n"
    tokens = tokenize(text) or [text]
    images = len(request.get("images") or []) + sum(
        len(m.get("images") or []) for m in context.messages
    )
    return tokens + ["<image>"] * (576 * images if context.spec.has("vision") else 0)


def _plan(handler: RequestHandler, record: RecordedRequest, context: Context) -> Plan:
    """Decide the whole answer (deterministically) before sending any of it."""
    reply = handler.fake._find_reply(record, context.spec) or Reply()
    thinking: list[str] = []
    if context.think:
        trace = reply.thinking if reply.thinking is not None else default_thinking(context.prompt)
        thinking = as_tokens(trace)
    calls: list[tuple[str | None, str, dict[str, Any]]]
    if reply.text is not None or reply.tool_calls:
        text: str | Sequence[str] = reply.text if reply.text is not None else ""
        calls = [normalize_tool_call(call) for call in reply.tool_calls or []]
    else:
        text, calls = _default_content(context)
    content = as_tokens(text)
    done_reason = reply.done_reason

    stops = [s for s in context.options.get("stop") or [] if s]
    joined = "".join(content)
    hits = [joined.find(s) for s in stops if s in joined]
    if hits:
        content = _truncate(content, min(hits))
        calls = []
        done_reason = "stop"
    limit = context.options.get("num_predict")
    if isinstance(limit, (int, float)) and limit > 0 and len(thinking) + len(content) > limit:
        # Thinking tokens count against num_predict too: a small limit can leave no answer.
        limit = int(limit)
        thinking = thinking[:limit]
        content = content[: limit - len(thinking)]
        calls = []
        done_reason = "length"

    tool_calls = [
        {
            "id": call_id or tool_call_id(context.seed, index, name),
            "function": {"index": index, "name": name, "arguments": arguments},
        }
        for index, (call_id, name, arguments) in enumerate(calls)
    ]
    path = "/api/chat" if context.chat else "/api/generate"
    fault = handler.fake._take_fault(path, context.model, http=False) or reply.fault
    fault = handler.fake._answer_fault(fault)  # with the server's pace and compat mode
    return Plan(
        thinking=thinking,
        content=content,
        tool_calls=tool_calls,
        done_reason=done_reason,
        final_text_in_done=reply.final_text_in_done,
        fault=fault,
    )


# -------------------------------------------------------------------------------------------
# Sending
# -------------------------------------------------------------------------------------------


@dataclass
class _Timing:
    prompt_count: int
    prompt_ns: int
    first_token: int = 0
    eval_count: int = 0


def _prompt_words(context: Context) -> int:
    """Whitespace-separated words of what the model reads: system and prompt, or messages."""
    if context.chat:
        parts = [str(message.get("content", "")) for message in context.messages]
    else:
        parts = [str(context.request.get(key, "")) for key in ("system", "prompt")]
    return len(" ".join(parts).split())


def _metrics(context: Context, plan: Plan, timing: _Timing) -> dict[str, int]:
    """Final-chunk metrics (nanoseconds), zero values omitted like Go's omitempty."""
    names = (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    )
    fault = plan.fault
    if fault.stats == "omit":
        return {}
    if fault.stats == "zero":
        return dict.fromkeys(names, 0)
    if fault.stats == "words":
        # An adapter counts words of the texts it relays and measures no durations.
        words = {
            "prompt_eval_count": _prompt_words(context),
            "eval_count": len("".join(plan.content).split()),
        }
        return {name: words.get(name, 0) for name in names}
    now = time.perf_counter_ns()
    values = (
        now - context.started,
        context.loaded - context.started,
        timing.prompt_count,
        timing.prompt_ns,
        timing.eval_count,
        now - (timing.first_token or now),
    )
    # Measured durations can be tiny; the real server never reports 0 for work it did.
    return {name: max(1, value) for name, value in zip(names, values, strict=True)}


def _logprobs_wanted(context: Context, fault: Fault) -> bool:
    """Whether answers carry `logprobs`: asked for, and not dropped by the fault."""
    return bool(context.request.get("logprobs")) and "logprobs" not in fault.drop


def _chunk(context: Context, fault: Fault, kind: str, payload: Any) -> dict[str, Any]:
    """A non-final chunk carrying one thinking/content token or one tool call."""
    out: dict[str, Any] = {"model": context.model, "created_at": rfc3339nano()}
    if context.chat:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": payload if kind == "content" else "",
        }
        if kind == "thinking":
            message["thinking"] = payload
        if kind == "tool":
            message["tool_calls"] = [payload]
        out["message"] = message
        out["done"] = False
    else:
        out["response"] = payload if kind == "content" else ""
        if kind == "thinking":
            out["thinking"] = payload
        out["done"] = False
    if kind == "content" and _logprobs_wanted(context, fault):
        out["logprobs"] = [
            token_logprobs(payload, context.request.get("top_logprobs", 0), context.seed)
        ]
    return out


def _final(
    context: Context,
    plan: Plan,
    timing: _Timing,
    *,
    text: str,
    thinking: str,
    tool_calls: list[dict[str, Any]],
    logprobs: list[dict[str, Any]],
) -> dict[str, Any]:
    """The `done: true` object (the last chunk, or the whole `stream: false` answer)."""
    out: dict[str, Any] = {"model": context.model, "created_at": rfc3339nano()}
    metrics = _metrics(context, plan, timing)
    done_reason = {} if "done_reason" in plan.fault.drop else {"done_reason": plan.done_reason}
    if context.chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        out["message"] = message
        out["done"] = True
        out.update(done_reason)
        if logprobs:
            out["logprobs"] = logprobs
        out.update(metrics)
        return out
    out["response"] = text
    if thinking:
        out["thinking"] = thinking
    out["done"] = True
    out.update(done_reason)
    if plan.fault.empty_context:
        out["context"] = []
    elif not context.request.get("raw"):
        ids = list(context.request.get("context") or [])
        ids += [stable_hash("tok", t) % 128_000 + 1 for t in plan.prompt_tokens]
        ids += [stable_hash("tok", t) % 128_000 + 1 for t in [*plan.thinking, *plan.content]]
        out["context"] = ids
    out.update(metrics)
    if tool_calls:
        out["tool_calls"] = tool_calls
    if logprobs:
        out["logprobs"] = logprobs
    return out


def _answer(handler: RequestHandler, record: RecordedRequest, context: Context) -> None:
    """Plan, then stream or accumulate the answer, applying the fault."""
    prompt_started = time.perf_counter_ns()
    plan = _plan(handler, record, context)
    plan.prompt_tokens = _prompt_tokens(context)
    prompt_count = len(plan.prompt_tokens) + len(context.request.get("context") or [])
    timing = _Timing(prompt_count, time.perf_counter_ns() - prompt_started)
    fault = plan.fault
    handler.load(fault.load_delay)
    if fault.is_http_error:
        handler.apply_http_fault(fault)
        return
    if fault.reset_connection:
        handler.reset_pending = True  # answer normally, then reset this keep-alive connection
    # Dropped thinking is still generated (it counts as evaluated tokens) but never sent.
    thinking = [] if "thinking" in fault.drop else plan.thinking
    events: list[tuple[str, Any]] = [("thinking", t) for t in thinking]
    events += [("content", t) for t in plan.content]
    if context.chat:
        events += [("tool", call) for call in plan.tool_calls]
    final_text = ""
    if plan.final_text_in_done and events and events[-1][0] == "content":
        final_text = events.pop()[1]
    call_tokens = sum(count_tokens(json.dumps(c["function"])) for c in plan.tool_calls)
    timing.eval_count = len(plan.thinking) + len(plan.content) + call_tokens
    try:
        if context.stream:
            _stream(handler, context, plan, timing, events, final_text)
        else:
            _collect(handler, context, plan, timing, events, final_text)
    finally:
        _release(handler, context)  # also when the answer failed part way


def _release(handler: RequestHandler, context: Context) -> None:
    """keep_alive 0: unload the model.

    Called before the final chunk is written too, so a client that has the answer sees the
    model gone from /api/ps.
    """
    if context.keep_alive == 0:
        handler.fake._unload(context.spec)


def local_model(
    handler: RequestHandler, name: str, not_found: str | None = None, *, missing_status: int = 404
) -> Any:
    """The local model named ``name``, or the server's 400 (bad name) / 404 (not there).

    ``not_found`` replaces the 404 text where the real server words it differently;
    ``missing_status`` replaces the 404 itself (an adapter answers 200).
    """
    parsed = parse_model_name(name)
    if parsed is None:
        raise ApiError(400, "invalid model name")
    spec = handler.fake._lookup(parsed)
    if spec is None:
        raise ApiError(missing_status, not_found or f"model '{name}' not found")
    return spec


def _paced(
    handler: RequestHandler, fault: Fault, timing: _Timing, events: list[tuple[str, Any]]
) -> Iterator[tuple[str, Any]]:
    """The events at the model's pace (``delay``), up to where a fault ends the answer;
    stops early (ClientGone) when the client has left."""
    stop = min(n for n in (fault.error_after, fault.cut_after, len(events)) if n is not None)
    for event in events[:stop]:
        handler.pause(fault.delay)
        handler.check_client()
        timing.first_token = timing.first_token or time.perf_counter_ns()
        yield event


def _stream(
    handler: RequestHandler,
    context: Context,
    plan: Plan,
    timing: _Timing,
    events: list[tuple[str, Any]],
    final_text: str,
) -> None:
    from ollama_magic.testing.handler import StreamWriter

    fault = plan.fault
    writer = StreamWriter(handler)
    writer.start()
    for kind, payload in _paced(handler, fault, timing, events):
        writer.line(_chunk(context, fault, kind, payload), split_utf8=fault.split_utf8)
    if fault.error_after is not None:
        error: dict[str, Any] = {"error": fault.error_text}
        if fault.error_done:
            error["done"] = True
        writer.line(error)
        writer.end()
        return
    if fault.cut_after is not None:
        handler.cut()
        return
    calls = [] if context.chat else plan.tool_calls  # chat sent them in their own chunks
    logprobs = []
    if final_text and _logprobs_wanted(context, fault):
        logprobs = [
            token_logprobs(final_text, context.request.get("top_logprobs", 0), context.seed)
        ]
    final = _final(
        context, plan, timing, text=final_text, thinking="", tool_calls=calls, logprobs=logprobs
    )
    _release(handler, context)
    writer.line(final, split_utf8=fault.split_utf8)
    writer.end()


def _collect(
    handler: RequestHandler,
    context: Context,
    plan: Plan,
    timing: _Timing,
    events: list[tuple[str, Any]],
    final_text: str,
) -> None:
    """`stream: false`: generate everything, then answer once (errors become HTTP errors)."""
    fault = plan.fault
    for _event in _paced(handler, fault, timing, events):
        pass  # generated at the model's pace, sent all at once below
    if fault.error_after is not None:
        raise ApiError(500, fault.error_text)
    if fault.cut_after is not None:
        handler.cut()
        return
    text = "".join(plan.content)
    logprobs = []
    if _logprobs_wanted(context, fault):
        top = context.request.get("top_logprobs", 0)
        logprobs = [token_logprobs(t, top, context.seed) for t in plan.content]
    # Chat keeps tool calls only when the request offered tools (writeChatResponse).
    keep_calls = not context.chat or bool(context.tools)
    final = _final(
        context,
        plan,
        timing,
        text=text,
        thinking="" if "thinking" in fault.drop else "".join(plan.thinking),
        tool_calls=plan.tool_calls if keep_calls else [],
        logprobs=logprobs,
    )
    _release(handler, context)
    handler.respond_json(200, final)
