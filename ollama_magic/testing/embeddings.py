"""Embedding endpoints: /api/embed (vectors for inputs) and the legacy /api/embeddings.

Computing the vectors holds one of the server's slots; a request with nothing to embed
(which only loads the model) does not take one.
"""

from __future__ import annotations

import time

from ollama_magic.testing.catalog import ModelSpec
from ollama_magic.testing.connection import RequestHandler
from ollama_magic.testing.decoding import check_options, decode_request
from ollama_magic.testing.gojson import go_quote
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.replies import count_tokens
from ollama_magic.testing.vectors import embedding, normalize
from ollama_magic.testing.wire import ApiError, keep_alive_ns


def _embedding_model(handler: RequestHandler, name: str) -> ModelSpec:
    """The model an embed request names, or the 400/404 these endpoints answer."""
    if not name:
        raise ApiError(400, "model is required")
    # The embed endpoints still word it the scheduler's way (double quotes, "try pulling").
    not_found = f"model {go_quote(name)} not found, try pulling it first"
    return handler.state.local_model(name, not_found)


def embed(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/embed`: L2-normalised vectors, one per input."""
    fields = {
        "model": "string",
        "input": "any",
        "truncate": "bool",
        "dimensions": "int",
        "keep_alive": "duration",
        "options": "object",
    }
    request = decode_request(record.raw_body, "EmbedRequest", fields)
    value = request.get("input")
    if isinstance(value, str):
        inputs = [value] if value else []
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        inputs = list(value)
    elif value is None:
        inputs = []
    else:
        raise ApiError(400, "invalid input type")
    name = request.get("model", "")
    spec = _embedding_model(handler, name)
    keep_alive = keep_alive_ns(request.get("keep_alive"))
    options = check_options(request.get("options") or {})
    handler.state.touch_loaded(spec, keep_alive, options.get("num_ctx"))
    loaded = time.perf_counter_ns()
    if not inputs:
        handler.respond_json(200, {"model": name, "embeddings": []})
        return
    with handler.slot():
        counts = [count_tokens(text) for text in inputs]
        if request.get("truncate") is False and max(counts) > spec.context_length:
            raise ApiError(400, "the input length exceeds the context length")
        vectors = [embedding(spec.name, text, spec.embedding_length) for text in inputs]
        dimensions = request.get("dimensions", 0)
        if 0 < dimensions < spec.embedding_length:
            vectors = [normalize(vector[:dimensions]) for vector in vectors]
    finished = time.perf_counter_ns()
    handler.respond_json(
        200,
        {
            "model": name,
            "embeddings": vectors,
            "total_duration": max(1, finished - started),
            "load_duration": max(1, loaded - started),
            "prompt_eval_count": sum(counts),
        },
    )


def embeddings(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/embeddings` (legacy): one vector for `prompt`."""
    fields = {"model": "string", "prompt": "string", "keep_alive": "duration", "options": "object"}
    request = decode_request(record.raw_body, "EmbeddingRequest", fields)
    name = request.get("model", "")
    spec = _embedding_model(handler, name)
    keep_alive = keep_alive_ns(request.get("keep_alive"))
    options = check_options(request.get("options") or {})
    handler.state.touch_loaded(spec, keep_alive, options.get("num_ctx"))
    prompt = request.get("prompt", "")
    if not prompt:
        handler.respond_json(200, {"embedding": []})
        return
    with handler.slot():
        vector = embedding(spec.name, prompt, spec.embedding_length)
    handler.respond_json(200, {"embedding": vector})
