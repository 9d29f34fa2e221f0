"""Planning a generate/chat answer: every token, tool call and fault, before anything is sent.

The plan is a pure function of the request, the registered replies and injected faults, so
the same request always gets the same answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ollama_magic.testing.catalog import ModelSpec
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.replies import (
    Fault,
    Reply,
    as_tokens,
    choose_tool,
    default_fill_in,
    default_json,
    default_text,
    default_thinking,
    normalize_tool_call,
    sampling,
    schema_text,
    tokenize,
    tool_arguments,
    tool_call_id,
    tool_result_text,
)
from ollama_magic.testing.state import ServerState


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
    draw = sampling(context.request.get("options"))
    text = default_text(
        context.model, context.prompt, images=images, draw=draw, system=_model_system(context)
    )
    return text, []


def _model_system(context: Context) -> str:
    """The model's own system prompt, when the request leaves it in effect: generate without
    a `system` of its own; chat unless the first message is a system message (as ChatHandler
    prepends it)."""
    system = context.spec.system
    if not system:
        return ""
    if context.chat:
        first = context.messages[0].get("role") if context.messages else None
        return "" if first == "system" else system
    return "" if context.request.get("system") else system


def prompt_tokens(context: Context) -> list[str]:
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


def make_plan(state: ServerState, record: RecordedRequest, context: Context) -> Plan:
    """Decide the whole answer (deterministically) before sending any of it."""
    reply = state.find_reply(record, context.spec) or Reply()
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
    fault = state.take_fault(path, context.model, http=False) or reply.fault
    fault = state.answer_fault(fault)  # with the server's pace and compat mode
    return Plan(
        thinking=thinking,
        content=content,
        tool_calls=tool_calls,
        done_reason=done_reason,
        final_text_in_done=reply.final_text_in_done,
        fault=fault,
    )
