"""`/api/generate` and `/api/chat`: the request checked in the server's order, then answered.

Load and unload requests are answered here; anything else becomes a `Context` that
`planning` turns into a plan and `answering` sends, holding one of the server's slots.
"""

from __future__ import annotations

import time
from typing import Any

from ollama_magic.testing.answering import answer
from ollama_magic.testing.catalog import parse_model_name
from ollama_magic.testing.compat import missing_model_status
from ollama_magic.testing.connection import RequestHandler
from ollama_magic.testing.decoding import check_format, check_options, decode_request
from ollama_magic.testing.gojson import go_quote
from ollama_magic.testing.planning import Context
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.wire import ApiError, keep_alive_ns, rfc3339nano

# The JSON fields of api.GenerateRequest / api.ChatRequest and how each decodes (decoding.py).
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


def generate(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/generate`."""
    context = _validate(handler, record, started, chat=False)
    if context is not None:
        with handler.slot():
            answer(handler, record, context)


def chat(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/chat`."""
    context = _validate(handler, record, started, chat=True)
    if context is not None:
        with handler.slot():
            answer(handler, record, context)


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
    missing = missing_model_status(handler.state.compat)
    if not name:
        # generate and chat disagree here on the real server.
        if chat:
            raise ApiError(400, "model is required")
        raise ApiError(missing, "model '' not found")
    spec = handler.state.local_model(name, missing_status=missing)
    parsed = parse_model_name(name)
    assert parsed is not None  # local_model has already rejected invalid names
    keep_alive = keep_alive_ns(request.get("keep_alive"))
    empty = not request.get("messages") if chat else not request.get("prompt")
    if empty and keep_alive == 0:
        handler.state.unload(spec)
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
    handler.state.touch_loaded(spec, keep_alive, options.get("num_ctx"))
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
        format=check_format(request.get("format"), record.raw_body, stream=stream),
        keep_alive=keep_alive,
        options=options,
        started=started,
        loaded=time.perf_counter_ns(),
    )
