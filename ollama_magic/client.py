"""The HTTP client for the Ollama API: its calls, and sending them over one session.

The rest of the client lives beside it, each module below the one that uses it:
:mod:`ollama_magic.stream` reads NDJSON answers, :mod:`ollama_magic.http_errors` maps what went
wrong to :mod:`ollama_magic.errors`, :mod:`ollama_magic.transport` parses the host and holds
the session and connections, and :mod:`ollama_magic.images` encodes images. Nothing here
imports IPython: the magics and the chat widget are built on top of this module.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, overload

import requests

from ollama_magic import http_errors  # the one error mapper: used as http_errors.<name>
from ollama_magic.errors import OllamaError, ResponseError, ServerUnreachable
from ollama_magic.images import ImageInput, encode_image, wire_message
from ollama_magic.management import ModelManagement, api_fields
from ollama_magic.options import SecretHeaders
from ollama_magic.stream import Recorder, Replayed, Stream
from ollama_magic.transport import (
    DEFAULT_HOST,
    Cancellation,
    Cancelled,
    Session,
    bind,
    parse_host,
    split_credentials,
)
from ollama_magic.types import ModelInfo, Result, RunningModel

# Re-exported from their modules, beside the calls that take or return them (and where code
# written before the split imports them from).
__all__ = [
    "DEFAULT_HOST",
    "MAX_LINE_BYTES",
    "Cancellation",
    "Client",
    "Stream",
    "encode_image",
    "parse_host",
    "split_credentials",
]

#: The longest NDJSON line accepted; a longer one is a StreamError, not a process out of memory.
MAX_LINE_BYTES = 64 * 1024 * 1024

#: A conversation's messages: dicts with ``role`` and ``content`` (see :meth:`Client.chat`).
Messages = Iterable[Mapping[str, Any]]


class Client(ModelManagement):
    """A connection to one Ollama server.

    Args:
        host: Where Ollama listens; default ``$OLLAMA_HOST``, else ``http://127.0.0.1:11434``.
            Parsed by :func:`parse_host`, so ``"gpu-box"``, ``":11435"`` and
            ``"https://proxy.example/ollama"`` all work.
        headers: Extra HTTP headers (a proxy's credentials, say). Without an ``Authorization``
            header, ``Bearer $OLLAMA_API_KEY`` is sent when that variable is set.
        timeout: Seconds to wait for each read (a model loading can take a minute); None waits
            forever.
        connect_timeout: Seconds to wait for the connection itself: short, so a server that is
            not there is reported at once.
        host_source: Where ``host`` came from, for error messages that say what to check
            (default: ``OLLAMA_HOST`` or "the host given to Client()", as the case may be).

    Streaming calls return a :class:`Stream` (iterate it for :class:`~ollama_magic.types.Chunk`
    objects); ``stream=False`` returns the final :class:`~ollama_magic.types.Result`. A Client
    may be shared by threads: each stream holds its own pooled connection.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 300.0,
        connect_timeout: float = 5.0,
        host_source: str | None = None,
    ) -> None:
        env = os.environ.get("OLLAMA_HOST")
        bare, userinfo = split_credentials(host if host is not None else env)
        self.host = parse_host(bare)
        if host_source is None:
            host_source = (
                "the host given to Client()"
                if host is not None
                else "OLLAMA_HOST"
                if env
                else f"the host (OLLAMA_HOST is not set, so {DEFAULT_HOST} is used)"
            )
        self.host_source = host_source
        """Where :attr:`host` came from, named in errors ("OLLAMA_HOST", "--host", …)."""
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._session = Session(headers or {}, userinfo=userinfo)

    max_line_bytes: int | None = None
    """The longest NDJSON line this client accepts (a longer one is a StreamError); None:
    the module's ``MAX_LINE_BYTES``, read when an answer starts to stream."""
    recorder: Recorder | None = None
    """Records answers and replays recorded ones (``%ollama replay``); None: none."""

    def __repr__(self) -> str:
        return f"Client(host={self.host!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    @property
    def headers(self) -> SecretHeaders:
        """The headers sent with every request (a copy whose printed forms mask credentials)."""
        return SecretHeaders(self._session.headers)

    # -- generation ------------------------------------------------------------------------

    @overload
    def generate(
        self, model: str, prompt: str = ..., *, stream: Literal[True] = ..., **fields: Any
    ) -> Stream: ...
    @overload
    def generate(
        self, model: str, prompt: str = ..., *, stream: Literal[False], **fields: Any
    ) -> Result: ...
    def generate(
        self,
        model: str,
        prompt: str = "",
        *,
        suffix: str | None = None,
        system: str | None = None,
        template: str | None = None,
        context: Sequence[int] | None = None,
        raw: bool | None = None,
        format: str | dict[str, Any] | None = None,
        images: Sequence[ImageInput] | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        think: bool | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        stream: bool = True,
        cancel: Cancellation | None = None,
        **extra: Any,
    ) -> Stream | Result:
        """One-shot completion, ``POST /api/generate``.

        Every field of the API is a keyword; ``extra`` passes fields this version does not
        name. An empty prompt loads the model (``done_reason == "load"``); with
        ``keep_alive=0`` it unloads it. ``cancel`` stops the request from another thread,
        even before the first token (while the model loads).
        """
        body = api_fields(
            model=model,
            prompt=prompt,
            suffix=suffix,
            system=system,
            template=template,
            context=list(context) if context is not None else None,
            raw=raw,
            format=format,
            images=[encode_image(i) for i in images] if images else None,
            options=dict(options) if options else None,
            keep_alive=keep_alive,
            think=think,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            stream=stream,
            **extra,
        )
        return self._generation("/api/generate", body, stream, cancel)

    @overload
    def chat(
        self, model: str, messages: Messages = ..., *, stream: Literal[True] = ..., **fields: Any
    ) -> Stream: ...
    @overload
    def chat(
        self, model: str, messages: Messages = ..., *, stream: Literal[False], **fields: Any
    ) -> Result: ...
    def chat(
        self,
        model: str,
        messages: Messages = (),
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        format: str | dict[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        think: bool | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        stream: bool = True,
        cancel: Cancellation | None = None,
        **extra: Any,
    ) -> Stream | Result:
        """A conversation turn, ``POST /api/chat``.

        ``messages`` are dicts with ``role`` and ``content`` (and optionally ``images``,
        ``tool_calls``, ``tool_name``, ``tool_call_id``); images are encoded as in
        :func:`encode_image`. No messages loads the model.
        """
        body = api_fields(
            model=model,
            messages=[wire_message(m) for m in messages],
            tools=list(tools) if tools else None,
            format=format,
            options=dict(options) if options else None,
            keep_alive=keep_alive,
            think=think,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            stream=stream,
            **extra,
        )
        return self._generation("/api/chat", body, stream, cancel)

    def _generation(
        self, path: str, body: dict[str, Any], stream: bool, cancel: Cancellation | None
    ) -> Stream | Result:
        model = str(body.get("model", ""))
        cancel = cancel or Cancellation()
        tap = self.recorder.tap(path, body) if self.recorder else None  # starts its clock now
        answer: requests.Response | Replayed | None = None
        # Cancelled: stopped before the server answered, an empty and aborted stream.
        with contextlib.suppress(Cancelled):
            answer = self._send_or_replay(
                "POST", path, body, stream=True, model=model, cancel=cancel
            )
        replayed = answer if isinstance(answer, Replayed) else None
        result = Stream(
            answer if isinstance(answer, requests.Response) else None,
            origin=self._origin,
            max_line_bytes=self._max_line_bytes,
            model=model,
            cancel=cancel,
            similar_models=self.similar_models,
            replayed=replayed,
            tap=tap,
        )
        return result if stream else result.consume()

    def _send_or_replay(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        stream: bool = False,
        model: str = "",
        cancel: Cancellation | None = None,
    ) -> requests.Response | Replayed:
        """The server's response, or the recorded answer instead: replay has it, or the
        server cannot be reached and it was recorded (see :mod:`ollama_magic.replay`)."""
        recorder = self.recorder
        if recorder is None:
            return self._send(method, path, body, stream=stream, model=model, cancel=cancel)
        stop = cancel or Cancellation()
        replayed = recorder.replay(path, body or {}, stop)
        if replayed is not None:
            return replayed
        try:
            return self._send(method, path, body, stream=stream, model=model, cancel=cancel)
        except ServerUnreachable:
            replayed = recorder.replay(path, body or {}, stop, offline=True)
            if replayed is None:
                raise
            return replayed

    # -- administration -------------------------------------------------------------------

    # From here on, ``list`` in an annotation would name this method: hence builtins.list.
    def list(self) -> builtins.list[ModelInfo]:
        """Local models, most recently modified first (``GET /api/tags``)."""
        data = self._json("GET", "/api/tags")
        return [ModelInfo.from_json(m) for m in data.get("models") or ()]

    def ps(self) -> builtins.list[RunningModel]:
        """Models loaded in memory now (``GET /api/ps``)."""
        data = self._json("GET", "/api/ps")
        return [RunningModel.from_json(m) for m in data.get("models") or ()]

    def show(self, model: str, *, verbose: bool = False) -> dict[str, Any]:
        """A model's details, parameters, template and ``capabilities`` (``POST /api/show``)."""
        body = api_fields(model=model, verbose=verbose or None)
        return self._json("POST", "/api/show", body, model=model)

    def version(self) -> str:
        """The server's version, e.g. ``"0.33.0"`` (``GET /api/version``)."""
        return str(self._json("GET", "/api/version").get("version", ""))

    def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool | None = None,
        dimensions: int | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: float | str | None = None,
        cancel: Cancellation | None = None,
    ) -> builtins.list[builtins.list[float]]:
        """Embedding vectors, one per input (``POST /api/embed``); L2-normalised by the server.

        ``cancel`` stops the request from another thread (a batch that is interrupted).
        """
        body = api_fields(
            model=model,
            input=input if isinstance(input, str) else list(input),
            truncate=truncate,
            dimensions=dimensions,
            options=dict(options) if options else None,
            keep_alive=keep_alive,
        )
        data = self._json("POST", "/api/embed", body, model=model, cancel=cancel)
        return list(data.get("embeddings") or [])

    def is_running(self) -> bool:
        """Whether an Ollama server answers at :attr:`host` (``GET /api/tags``), without raising.

        Not ``HEAD /``: "Ollama-compatible" adapters that serve the API may refuse it (405).
        """
        try:
            if self.recorder is not None:
                self.recorder.permit("/api/tags")
            response = self._session.get(
                self.host + "/api/tags", timeout=(self.connect_timeout, 5.0)
            )
        except (requests.RequestException, OllamaError):
            return False
        with response:
            try:
                data = response.json() if response.ok else None
            except ValueError:
                return False  # a web page, not the API
            return isinstance(data, dict) and "models" in data

    # -- transport -------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        model: str = "",
        cancel: Cancellation | None = None,
    ) -> dict[str, Any]:
        """A request whose answer is one JSON object."""
        response = self._send_or_replay(method, path, body, model=model, cancel=cancel)
        if isinstance(response, Replayed):
            return next(response.objects, {})
        try:
            data = response.json() if response.content else {}
        except (ValueError, RecursionError) as exc:
            raise http_errors.not_json_error(
                self._origin, path, response.status_code, response.text[:200]
            ) from exc
        finally:
            response.close()
        if not isinstance(data, dict):
            raise http_errors.not_json_error(self._origin, path, response.status_code, None)
        error = http_errors.in_band_message(data)
        if error is not None:
            status = response.status_code
            if status < 400:  # an error object with 200: an adapter's way of saying 404 or 400
                status = http_errors.implied_status(error) or 500
            raise self._error(status, error, path, model)
        if self.recorder is not None:
            self.recorder.record(path, body or {}, data)
        return data

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        stream: bool = False,
        model: str = "",
        cancel: Cancellation | None = None,
        data: Any = None,
    ) -> requests.Response:
        """Send a request; raise the mapped error for a failure or an HTTP error status.

        ``body`` is sent as JSON; ``data`` (a file opened for reading) is sent as it is read.

        A pooled keep-alive connection can be dead on reuse (a server or proxy reset it after
        an error). When a request on a *reused* connection fails before any byte of the answer
        arrived, it is sent once more on a fresh connection: the server never saw it. A fresh
        connection failing is not retried, since the server may have acted on the request.
        """
        if self.recorder is not None:
            self.recorder.permit(path)  # strict replay: nothing goes out
        url = self.host + path
        if data is None and body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
        start = data.tell() if hasattr(data, "tell") else None
        for attempt in (1, 2):
            if attempt == 2 and start is not None:
                data.seek(start)  # a file sent again from where it started
            try:
                with bind(cancel) as binding:
                    response = self._session.send_once(
                        method,
                        url,
                        data=data,
                        stream=stream,
                        timeout=(self.connect_timeout, self.timeout),
                    )
                break
            except requests.RequestException as exc:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled from exc
                if (
                    attempt == 1
                    and binding.reused
                    and isinstance(exc, requests.ConnectionError)
                    and http_errors.failed_before_response(exc)
                ):
                    self._session.drop_idle_connections()
                    continue
                if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                    raise self._transport_error(exc) from exc
                raise http_errors.request_error(self._origin, exc, url) from exc
        if response.status_code >= 400:
            try:
                text = response.text
            except requests.RequestException:
                text = ""
            finally:
                response.close()
            message = http_errors.error_text(text, response.status_code, response.reason)
            raise self._error(response.status_code, message, path, model)
        return response

    # -- errors: mapped in http_errors.py; only what needs the server is looked up here ----

    @property
    def _origin(self) -> http_errors.Origin:
        """This client as error messages name it (read at each use: the attributes may change)."""
        return http_errors.Origin(self.host, self.host_source, self.timeout, self.connect_timeout)

    @property
    def _max_line_bytes(self) -> int:
        return self.max_line_bytes or MAX_LINE_BYTES

    def _transport_error(self, exc: requests.RequestException, partial: str = "") -> OllamaError:
        """Map a requests failure (no HTTP answer) to this package's errors."""
        return http_errors.transport_error(self._origin, exc, partial)

    def _error(self, status: int | None, message: str, path: str, model: str) -> ResponseError:
        """Map an error answer (HTTP status, or None inside a stream) to an exception."""
        wanted = http_errors.wants_similar(status, message, path, model)  # costs a request
        similar = self.similar_models(model) if wanted else []
        return http_errors.response_error(
            self._origin, status, message, path=path, model=model, similar=similar
        )

    def similar_models(self, model: str) -> builtins.list[str]:
        """Local model names like ``model``, closest first, for a not-found message (best
        effort: empty when the server cannot list them)."""
        try:
            names = [m.name for m in self.list()]
        except OllamaError:
            return []
        return http_errors.similar_names(model, names)
