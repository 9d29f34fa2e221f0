"""Sending a planned answer: NDJSON chunks or one object, with metrics, logprobs and faults.

Whatever the plan's fault does happens on the way: the pace of tokens, an error after N chunks
(an in-band line, or HTTP 500 without streaming), a cut connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ollama_magic.testing.connection import RequestHandler
from ollama_magic.testing.planning import Context, Plan, make_plan, prompt_tokens
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.replies import Fault, count_tokens, stable_hash, token_logprobs
from ollama_magic.testing.streaming import StreamWriter
from ollama_magic.testing.wire import ApiError, rfc3339nano


@dataclass
class _Timing:
    """Token counts and clock readings gathered while answering, for the metrics."""

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


def answer(handler: RequestHandler, record: RecordedRequest, context: Context) -> None:
    """Plan, then stream or accumulate the answer, applying the fault."""
    prompt_started = time.perf_counter_ns()
    plan = make_plan(handler.state, record, context)
    plan.prompt_tokens = prompt_tokens(context)
    prompt_count = len(plan.prompt_tokens) + len(context.request.get("context") or [])
    prompt_ns = time.perf_counter_ns() - prompt_started
    fault = plan.fault
    handler.load(fault.load_delay)
    if fault.is_http_error:
        handler.apply_http_fault(fault)
        return
    # The server's fixed cost per answer, as prompt evaluation (a client leaving ends it).
    # Counted from the request's arrival (less its wait in line), so that the stand-in's own
    # work is inside it, as a real server's (microseconds in Go) would be: "50 ms per answer"
    # is 50 ms.
    evaluating = time.perf_counter_ns()
    # The work after it (building and writing the answer) is measured and left out too.
    state = handler.state
    spent = time.monotonic() - handler.slot_started if handler.slot_started else 0.0
    handler.load(state.answer_delay - spent - state.answer_overhead)
    evaluated_at = time.monotonic()
    evaluated = prompt_ns + time.perf_counter_ns() - evaluating
    # The fixed cost is the prompt's evaluation, however much of it the stand-in's work took.
    timing = _Timing(prompt_count, max(evaluated, int(handler.state.answer_delay * 1e9)))
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
        if state.answer_delay and not state.token_delay and not fault.delay:
            # A running average, capped: one slow write must not shorten the next answers.
            spent_after = min(time.monotonic() - evaluated_at, state.answer_delay / 4)
            state.answer_overhead += (spent_after - state.answer_overhead) * 0.2
    finally:
        release(handler, context)  # also when the answer failed part way


def release(handler: RequestHandler, context: Context) -> None:
    """keep_alive 0: unload the model.

    Called before the final chunk is written too, so a client that has the answer sees the
    model gone from /api/ps.
    """
    if context.keep_alive == 0:
        handler.state.unload(context.spec)


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
    """`stream: true` (the default): one NDJSON chunk per event, then the final chunk."""
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
    release(handler, context)
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
    release(handler, context)
    handler.respond_json(200, final)
