"""What went wrong on the wire, as an error of the family in :mod:`ollama_magic.errors`.

The one error mapper of the client: HTTP error statuses, ``{"error": …}`` objects (in a body or
as a line of a stream), answers that are not JSON, and requests/urllib3 exceptions all become
an exception here, each with a one-line message and a hint. The functions are pure: what needs
the server (local models with names like a missing one) is looked up by the caller and passed
in as data.
"""

from __future__ import annotations

import difflib
import json
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from ollama_magic.errors import (
    BadRequest,
    ModelNotFound,
    NotOllama,
    OllamaError,
    OllamaTimeout,
    ResponseError,
    ServerError,
    ServerUnreachable,
    StreamError,
    Unauthorized,
)

__all__ = [
    "Origin",
    "error_text",
    "failed_before_response",
    "implied_status",
    "in_band_error",
    "in_band_message",
    "not_json_error",
    "partial_hint",
    "pull_error",
    "request_error",
    "response_error",
    "similar_names",
    "transport_error",
    "wants_similar",
]

# Ollama's wording changed over versions: single or double quotes, ", try pulling it first".
_MODEL_NOT_FOUND = re.compile(r"model ['\"].*['\"] not found")


@dataclass(frozen=True)
class Origin:
    """The server a request went to, as the messages name it.

    Attributes:
        host: The normalised host URL (no credentials).
        host_source: Where the host came from ("OLLAMA_HOST", "--host", …), for the hints.
        timeout: The client's read timeout in seconds; None waits forever.
        connect_timeout: The client's connect timeout in seconds.
    """

    host: str
    host_source: str
    timeout: float | None = None
    connect_timeout: float = 5.0


# -- answers from the server --------------------------------------------------------------------


def response_error(
    origin: Origin,
    status: int | None,
    message: str,
    *,
    path: str = "",
    model: str = "",
    similar: Sequence[str] = (),
) -> ResponseError:
    """Map an error answer (HTTP status, or None inside a stream) to an exception.

    Args:
        origin: The server asked.
        status: The HTTP status, or None for an error line in a 200 stream.
        message: The server's error text.
        path: The API route asked (``/api/pull`` words a missing model differently).
        model: The model asked for.
        similar: Local model names like ``model``, named in a not-found hint (see
            :func:`wants_similar`).
    """
    kwargs: dict[str, Any] = {"status_code": status, "server_message": message}
    host = origin.host
    if path == "/api/pull" and "file does not exist" in message:
        return ModelNotFound(
            f"There is no model {model!r} in the registry.",
            model=model,
            hint="Check the name and tag at https://ollama.com/library.",
            **kwargs,
        )
    # A 404 that does not speak of a model is something else answering.
    model_missing = status == 404 and _MODEL_NOT_FOUND.match(message)
    if model_missing and not model:
        return ModelNotFound(
            "No model name was given.",
            model=model,
            hint="Name a model, e.g. 'llama3.2'; `ollama list` shows the local ones.",
            **kwargs,
        )
    if model_missing:
        hint = f"Download it with `ollama pull {model}`."
        if similar:
            hint += f" Local models with similar names: {', '.join(similar)}."
        return ModelNotFound(
            f"Model {model!r} is not on the Ollama server at {host}.",
            model=model,
            similar=list(similar),
            hint=hint,
            **kwargs,
        )
    if status in (404, 405):
        return NotOllama(
            f"{host} answered {message!r} to {path}: that is not the Ollama API.",
            hint=f"Check {origin.host_source}: the scheme, the port, and any path prefix of a "
            "proxy.",
            **kwargs,
        )
    if status == 403 and (not message or message.startswith("403") or "cloud" in message):
        # Ollama's own 403s: an empty body from its host/origin check, or cloud disabled.
        return Unauthorized(
            f"{host} refused the request (HTTP 403): {message or 'forbidden'}",
            hint="Ollama refuses hosts and origins it does not allow: see OLLAMA_ORIGINS "
            "and OLLAMA_HOST on the server; for cloud models, enable Ollama cloud.",
            **kwargs,
        )
    if status == 429:
        return ServerError(
            f"{host} is rate-limiting requests (HTTP 429): {message}",
            hint="Wait a little and try again.",
            **kwargs,
        )
    if status == 503 and "maximum pending requests" in message:
        # Not a failure: OLLAMA_MAX_QUEUE requests are already waiting for a slot.
        return ServerError(
            f"{host} is busy: its queue of waiting requests is full (HTTP 503): {message}",
            hint="Try again in a moment, or send fewer at once (--concurrency, or raise "
            "OLLAMA_MAX_QUEUE on the server).",
            **kwargs,
        )
    if status == 499:
        return ServerError(
            f"The request was cancelled before the model answered (HTTP 499): {message}",
            hint="Try again; if it keeps happening, a proxy may be timing out.",
            **kwargs,
        )
    if status in (401, 403):
        return Unauthorized(
            f"{host} refused the request (HTTP {status}): {message or 'unauthorized'}",
            hint="Set OLLAMA_API_KEY, or pass the proxy's credentials as "
            "Client(headers={'Authorization': ...}).",
            **kwargs,
        )
    if status is not None and 400 <= status < 500:
        return BadRequest(message, hint=_bad_request_hint(message), **kwargs)
    if status is None:
        return StreamError(
            f"The model failed part-way: {message}",
            hint="Check the server log; the partial answer is kept.",
            **kwargs,
        )
    return ServerError(
        f"The Ollama server failed (HTTP {status}): {message}",
        hint=_server_error_hint(status, message),
        **kwargs,
    )


def wants_similar(status: int | None, message: str, path: str, model: str) -> bool:
    """Whether :func:`response_error` would name local models similar to ``model``.

    Only then is listing them (a request of its own) worth it.
    """
    pulled = path == "/api/pull" and "file does not exist" in message
    return bool(model) and not pulled and status == 404 and bool(_MODEL_NOT_FOUND.match(message))


def similar_names(model: str, names: Iterable[str]) -> list[str]:
    """The names like ``model``, closest first (at most three), for a not-found message.

    >>> similar_names("llama3", ["llama3.2:latest", "qwen3:8b", "lama3:latest"])
    ['llama3.2:latest', 'lama3:latest']
    """
    # Compared without the default tag, so "llama3" finds "llama3.2:latest".
    short = {name.removesuffix(":latest"): name for name in names}
    wanted = model.removesuffix(":latest")
    family = [full for name, full in short.items() if name.split(":")[0].startswith(wanted)]
    close = difflib.get_close_matches(wanted, list(short), n=3, cutoff=0.6)
    return list(dict.fromkeys(family + [short[name] for name in close]))[:3]


def in_band_error(
    origin: Origin,
    message: str,
    *,
    model: str,
    partial: str,
    generated: bool,
    similar: Sequence[str] = (),
) -> ResponseError:
    """The exception for an ``{"error": …}`` line of a 200 stream.

    Before anything was generated it stands for the HTTP error the server did not send (an
    adapter reporting a missing model this way), so it is mapped like one; after, the stream
    failed part-way and the text so far is kept.

    Args:
        origin: The server asked.
        message: The error line's text.
        model: The model asked for.
        partial: The answer text received so far.
        generated: Whether anything (text, reasoning, tool calls) had arrived.
        similar: Local model names like ``model`` (see :func:`wants_similar`, with the status
            :func:`implied_status` gives).
    """
    if generated:
        exc = response_error(origin, None, message, model=model)
        exc.partial = partial
        exc.hint = (
            partial_hint(partial)
            if partial
            else "Only reasoning (or tool calls) had arrived; check the server's log, then "
            "try again."
        )
        return exc
    status = implied_status(message)
    if status is None:
        return StreamError(
            f"{origin.host} answered with an error before any text: {message}",
            server_message=message,
            hint="Check the server's log; trying again may help.",
        )
    exc = response_error(origin, status, message, model=model, similar=similar)
    exc.status_code = None  # the HTTP status said 200; the error line said otherwise
    return exc


def pull_error(origin: Origin, message: str, model: str) -> ResponseError:
    """The exception for an ``{"error": …}`` line of a pull's progress."""
    if "file does not exist" in message:
        return response_error(origin, None, message, path="/api/pull", model=model)
    return StreamError(
        f"Pulling {model} failed: {message}",
        server_message=message,
        hint="Try again; a download resumes where it stopped.",
    )


def not_json_error(origin: Origin, path: str, status: int, text: str | None) -> ServerError:
    """The exception for an answer that should be one JSON object and is not.

    Args:
        origin: The server asked.
        path: The API route asked.
        status: The HTTP status of the answer.
        text: The start of the body when it is not JSON at all; None when it is JSON, but
            not an object.
    """
    what = "something that is not JSON" if text is not None else "JSON that is not an object"
    return ServerError(
        f"{origin.host}{path} answered with {what}.",
        status_code=status,
        server_message=text or "",
        hint=f"Check that {origin.host_source} points at an Ollama server.",
    )


def in_band_message(obj: dict[str, Any]) -> str | None:
    """The error text of an ``{"error": …}`` object (some proxies add ``done: true``)."""
    error = obj.get("error")
    if error:
        if isinstance(error, dict):  # OpenAI-style gateways nest it
            error = error.get("message") or json.dumps(error)
        return str(error)
    return None


def error_text(text: str, status: int, reason: str | None) -> str:
    """The server's message from an error body: JSON ``error``, else short plain text.

    >>> error_text('{"error": "model is required"}', 400, "Bad Request")
    'model is required'
    >>> error_text("<html><title> 502 Bad Gateway </title></html>", 502, "Bad Gateway")
    '502 Bad Gateway'
    >>> error_text("", 503, "Service Unavailable")
    '503 Service Unavailable'
    """
    text = text.strip()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and (error := in_band_message(data)):
        return error
    if "<html" in text[:200].lower():
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = title.group(1).strip() if title else ""
    return text[:300] or f"{status} {reason or ''}".strip()


def implied_status(message: str) -> int | None:
    """The HTTP status an error text stands for, when a server sent it with 200 instead."""
    if _MODEL_NOT_FOUND.match(message):
        return 404
    if "does not support" in message or message == "model is required":
        return 400
    return None


def partial_hint(text: str) -> str:
    """The hint of an error that cut an answer short: what of it is kept."""
    if text:
        return f"The {len(text)} characters received so far are kept (the error's .partial)."
    return "Nothing had arrived yet; try again, and check the server log if it keeps failing."


def _bad_request_hint(message: str) -> str:
    if "does not support thinking" in message:
        return "Leave out think, or use a model that can think (qwen3, deepseek-r1, gpt-oss)."
    if "does not support tools" in message:
        return "Use a model with tool support (its capabilities list 'tools')."
    if "does not support insert" in message:
        return "suffix needs a fill-in-the-middle model (capability 'insert')."
    if "does not support" in message:
        return "Pick a model with that capability (`ollama show MODEL` lists them)."
    if "illegal base64" in message:
        return "Send images as plain base64 or bytes, without a data: URI prefix."
    if message == "model is required":
        return "Name a model, e.g. 'llama3.2'; `ollama list` shows the local ones."
    if "missing unit in duration" in message:
        return "keep_alive takes seconds as a number (-1 keeps the model loaded) or '5m'."
    return "Ollama rejected the request; check the option named above."


def _server_error_hint(status: int, message: str) -> str:
    if status == 503:
        return "The server is busy (or a proxy has no backend): try again in a moment."
    if status in (502, 504):
        return "A proxy in front of Ollama could not reach it: check that Ollama is running."
    if "must be of type" in message:
        return "Fix the option's type (numbers for numeric options, a list for stop)."
    if "invalid format" in message:
        return "format takes 'json' or a JSON schema object."
    return "Check the Ollama server log (`ollama serve` output); trying again may help."


# -- no answer: the transport failed ------------------------------------------------------------


def transport_error(
    origin: Origin, exc: requests.RequestException, partial: str = ""
) -> OllamaError:
    """Map a requests failure (no HTTP answer, or a body cut short) to this package's errors.

    Args:
        origin: The server asked.
        exc: What requests raised.
        partial: The answer text received before the failure ("" if none).
    """
    if isinstance(exc, requests.ConnectTimeout):
        return ServerUnreachable(
            f"Cannot reach Ollama at {origin.host}: no answer within {origin.connect_timeout:g} s.",
            hint=_start_hint(origin.host_source),
        )
    if isinstance(exc, requests.Timeout) or _caused_by(
        exc, (socket.timeout, TimeoutError, urllib3.exceptions.ReadTimeoutError)
    ):
        waited = f"for {origin.timeout:g} s" if origin.timeout is not None else "in time"
        return OllamaTimeout(
            f"Ollama at {origin.host} sent nothing {waited}.",
            hint="A large model may still be loading: try again, or raise the client's "
            "timeout (Client(timeout=...)).",
            partial=partial,
        )
    if not partial and isinstance(exc, requests.ConnectionError) and failed_before_response(exc):
        error: OllamaError | None = ServerError(
            f"{origin.host} closed the connection without answering.",
            hint="The server or a proxy in front of it dropped the request; check its log, "
            "then try again.",
        )
    elif partial or isinstance(exc, requests.exceptions.ChunkedEncodingError):
        error = StreamError(
            f"The connection to {origin.host} broke before the answer was complete.",
            hint=partial_hint(partial),
            partial=partial,
        )
    else:
        error = None
    if error is not None:
        error.lost_connection = True
        return error
    reason = _short_reason(exc)
    return ServerUnreachable(
        f"Cannot reach Ollama at {origin.host} ({reason}).", hint=_start_hint(origin.host_source)
    )


def request_error(origin: Origin, exc: requests.RequestException, url: str) -> OllamaError:
    """Map a request requests refused to send (a bad URL or header) to this package's errors."""
    # requests quotes a bad header's value, often a secret: never show that text.
    reason = "a header is not valid" if _quotes_headers(exc) else str(exc)
    return OllamaError(
        f"Request to {url} failed: {reason}",
        hint=f"Check {origin.host_source} and the headers passed to the client.",
    )


def failed_before_response(exc: requests.ConnectionError) -> bool:
    """Whether a request died on an established connection before any answer byte.

    That is urllib3's ``ProtocolError('Connection aborted.', …)``; a refused or unresolvable
    connection is a ``MaxRetryError`` instead, and retrying that would only double the wait.
    """
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, urllib3.exceptions.ProtocolError)


def _start_hint(host_source: str) -> str:
    return (
        f"Start it with `ollama serve` (or the Ollama app), or point {host_source} at where it "
        "runs. Offline, `python -m ollama_magic.testing` serves a stand-in."
    )


def _quotes_headers(exc: requests.RequestException) -> bool:
    return isinstance(exc, requests.exceptions.InvalidHeader) or "header" in str(exc).lower()


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` or anything in its chain (causes, contexts, args) is one of ``types``."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, types):
            return True
        stack.extend([current.__cause__, current.__context__, *current.args])
        stack.append(getattr(current, "reason", None))
    return False


def _short_reason(exc: BaseException) -> str:
    """'connection refused', 'name not resolved', … from a requests ConnectionError."""
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("getaddrinfo failed", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("SSLError", "TLS error"),
        ("Connection reset", "connection reset"),
        ("Connection aborted", "connection closed"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__
