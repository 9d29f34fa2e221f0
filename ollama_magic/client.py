"""The HTTP client for the Ollama API: one ``requests.Session``, NDJSON streams, mapped errors.

Nothing here imports IPython: the magics and the chat widget are built on top of this module.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import ipaddress
import json
import os
import platform
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import requests
import urllib3.exceptions

from ollama_magic._version import __version__
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
from ollama_magic.options import SecretHeaders, check_headers, mask_host
from ollama_magic.transport import Adapter, Cancellation, Cancelled, bind
from ollama_magic.types import Chunk, Metrics, ModelInfo, Progress, Result, RunningModel, ToolCall

# Cancellation is defined in transport.py and re-exported here, beside the calls that take it.
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

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434

#: Anything accepted as an image: raw bytes, a file path, or base64 text.
ImageInput = bytes | bytearray | memoryview | str | os.PathLike


def parse_host(host: str | None) -> str:
    """Normalise an Ollama host the way the official clients read ``OLLAMA_HOST``.

    The rules are ollama-python's (``_parse_host``): default port 11434, or 80/443 when an
    http/https scheme is given; the path is kept; IPv6 addresses are bracketed. Like the Go
    client (and unlike ollama-python) it also trims spaces and quotes, and connects to loopback
    for the listen-on-everything addresses ``0.0.0.0`` and ``::``, which are server settings.

    >>> parse_host(None)
    'http://127.0.0.1:11434'
    >>> parse_host('')
    'http://127.0.0.1:11434'
    >>> parse_host('1.2.3.4')
    'http://1.2.3.4:11434'
    >>> parse_host(':56789')
    'http://127.0.0.1:56789'
    >>> parse_host('http://1.2.3.4')
    'http://1.2.3.4:80'
    >>> parse_host('https://1.2.3.4')
    'https://1.2.3.4:443'
    >>> parse_host('https://1.2.3.4:56789')
    'https://1.2.3.4:56789'
    >>> parse_host('example.com')
    'http://example.com:11434'
    >>> parse_host('example.com:56789/path/')
    'http://example.com:56789/path'
    >>> parse_host('https://example.com/ollama/api/')
    'https://example.com:443/ollama/api'
    >>> parse_host('[0001:002:003:0004::1]')
    'http://[0001:002:003:0004::1]:11434'
    >>> parse_host('[0001:002:003:0004::1]:56789')
    'http://[0001:002:003:0004::1]:56789'
    >>> parse_host('https://[0001:002:003:0004::1]:56789/path')
    'https://[0001:002:003:0004::1]:56789/path'
    >>> parse_host('  "localhost:11434"  ')
    'http://localhost:11434'
    >>> parse_host('0.0.0.0')
    'http://127.0.0.1:11434'
    >>> parse_host('[::]:8080')
    'http://[::1]:8080'
    >>> parse_host('https://ada:s3cret@example.com/ollama')  # credentials: see split_credentials
    'https://example.com:443/ollama'
    """
    host, _ = split_credentials(host)
    port = DEFAULT_PORT
    scheme, _, hostport = host.partition("://")
    if not hostport:
        scheme, hostport = "http", host
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    split = urllib.parse.urlsplit(f"{scheme}://{hostport}")
    try:
        port = split.port or port
    except ValueError:
        # Masked: a password with an unencoded "/" is not split off, and must not show.
        # Nor the exception's text, which quotes the would-be port (part of the password).
        hint = "Use a form like http://127.0.0.1:11434 (OLLAMA_HOST, or the host argument)."
        if "@" in host:
            hint += " In a password, write / @ : as %2F %40 %3A."
        raise OllamaError(
            f"{mask_host(host)!r} is not a valid Ollama host: the port is not a number from 0 "
            "to 65535.",
            hint=hint,
        ) from None
    name = split.hostname or "127.0.0.1"
    # 0.0.0.0 and :: mean "listen everywhere" to the server; a client cannot connect there
    # everywhere (Windows refuses), so do as Go's envconfig.ConnectableHost does.
    name = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(name, name)
    try:
        if isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address):
            name = f"[{name}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{name}:{port}/{path}" if path else f"{scheme}://{name}:{port}"


def split_credentials(host: str | None) -> tuple[str, str | None]:
    """A host without its ``user:password@`` part, and that part (percent-decoded), if any.

    Browsers and curl send such credentials as HTTP Basic authentication; so does
    :class:`Client`. They are never part of the host shown in messages.

    >>> split_credentials("https://ada:s%40cret@proxy.example/ollama")
    ('https://proxy.example/ollama', 'ada:s@cret')
    >>> split_credentials(" localhost:11434 ")
    ('localhost:11434', None)
    """
    host = (host or "").strip().strip("\"'").strip()
    scheme, sep, rest = host.rpartition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        return host, None
    return f"{scheme}{sep}{hostport}{slash}{path}", urllib.parse.unquote(userinfo)


def encode_image(image: ImageInput) -> str:
    """Turn an image into the base64 text Ollama wants (standard alphabet, no ``data:`` prefix).

    Accepts bytes, a path to a file (``str`` or ``Path``), base64 text, or a ``data:`` URI
    (whose prefix the server would reject with ``illegal base64 data at input byte 4``).

    >>> encode_image(b"GIF89a")
    'R0lGODlh'
    >>> encode_image("data:image/png;base64,R0lGODlh")
    'R0lGODlh'
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(image)).decode("ascii")
    if isinstance(image, os.PathLike):
        return _read_image_file(Path(image))
    if not isinstance(image, str):
        raise OllamaError(
            f"Cannot send a {type(image).__name__} as an image.",
            hint="Pass bytes, a file path, or base64 text.",
        )
    text = image.strip()
    uri = text.startswith("data:") and ";base64," in text[:100]
    if uri:
        text = text.split(";base64,", 1)[1]
    elif len(text) < 4096 and _is_file(text):
        return _read_image_file(Path(text).expanduser())
    try:
        # Decoded strictly and encoded again: what goes on (into a request, or into a
        # thumbnail's src) is base64 alone, never the quotes or markup a string can carry.
        return base64.b64encode(base64.b64decode(text, validate=True)).decode("ascii")
    except (binascii.Error, ValueError):
        if uri:
            raise OllamaError(
                "The image's data: URI does not hold valid base64.",
                hint="Pass the image's bytes or its file instead.",
            ) from None
        if re.search(r"[/\\]|\.[A-Za-z]{2,5}$", text[-300:]):
            raise OllamaError(
                f"Image file not found: {text}", hint="Check the path (relative to the notebook)."
            ) from None
        raise OllamaError(
            "Image is neither a file nor base64 text.",
            hint="Pass bytes, an existing file path, or base64 text.",
        ) from None


def _is_file(text: str) -> bool:
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):  # a name too long, or a NUL byte
        return False


def _read_image_file(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except FileNotFoundError as exc:
        raise OllamaError(
            f"Image file not found: {path}", hint="Check the path (relative to the notebook)."
        ) from exc


class Client:
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
        try:
            given = check_headers(headers or {})
            api_key = check_headers({"OLLAMA_API_KEY": os.environ.get("OLLAMA_API_KEY", "")})
        except ValueError as exc:  # it names the header, never its value
            raise OllamaError(
                str(exc), hint="Remove the line break (a key read from a file ends with one)."
            ) from None
        merged = {key.lower(): value for key, value in given.items()}
        if userinfo and "authorization" not in merged:
            # user:password, as RFC 7617 has it (a user alone is "user:", as curl sends it).
            pair = userinfo if ":" in userinfo else f"{userinfo}:"
            basic = base64.b64encode(pair.encode()).decode("ascii")
            merged["authorization"] = f"Basic {basic}"
        if api_key["OLLAMA_API_KEY"] and "authorization" not in merged:
            merged["authorization"] = f"Bearer {api_key['OLLAMA_API_KEY']}"
        self._session = _Session(private=set(merged))
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, Adapter())
        merged.update(
            {
                "content-type": "application/json",
                "accept": "application/json",
                "user-agent": (
                    f"ollama-magic/{__version__} ({platform.machine()} "
                    f"{platform.system().lower()}) Python/{platform.python_version()}"
                ),
            }
        )
        self._session.headers.update(merged)

    max_line_bytes: int | None = None
    """The longest NDJSON line this client accepts (a longer one is a StreamError); None:
    the module's ``MAX_LINE_BYTES``, read when a line comes."""

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
        body = _body(
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
        self,
        model: str,
        messages: Iterable[Mapping[str, Any]] = ...,
        *,
        stream: Literal[True] = ...,
        **fields: Any,
    ) -> Stream: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Iterable[Mapping[str, Any]] = ...,
        *,
        stream: Literal[False],
        **fields: Any,
    ) -> Result: ...
    def chat(
        self,
        model: str,
        messages: Iterable[Mapping[str, Any]] = (),
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
        body = _body(
            model=model,
            messages=[_wire_message(m) for m in messages],
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
        try:
            response = self._send("POST", path, body, stream=True, model=model, cancel=cancel)
        except Cancelled:
            response = None  # stopped before the server answered: an empty, aborted stream
        result = Stream(self, response, model=model, cancel=cancel)
        return result if stream else result.consume()

    # -- administration -------------------------------------------------------------------

    def list(self) -> list[ModelInfo]:
        """Local models, most recently modified first (``GET /api/tags``)."""
        data = self._json("GET", "/api/tags")
        return [ModelInfo.from_json(m) for m in data.get("models") or ()]

    def ps(self) -> list[RunningModel]:
        """Models loaded in memory now (``GET /api/ps``)."""
        data = self._json("GET", "/api/ps")
        return [RunningModel.from_json(m) for m in data.get("models") or ()]

    def show(self, model: str, *, verbose: bool = False) -> dict[str, Any]:
        """A model's details, parameters, template and ``capabilities`` (``POST /api/show``)."""
        body = _body(model=model, verbose=verbose or None)
        return self._json("POST", "/api/show", body, model=model)

    @overload
    def pull(
        self, model: str, *, insecure: bool = ..., stream: Literal[True] = ...
    ) -> Iterator[Progress]: ...
    @overload
    def pull(self, model: str, *, insecure: bool = ..., stream: Literal[False]) -> Progress: ...
    def pull(
        self, model: str, *, insecure: bool = False, stream: bool = True
    ) -> Iterator[Progress] | Progress:
        """Download a model (``POST /api/pull``); streaming yields progress lines as they come."""
        body = _body(model=model, insecure=insecure or None, stream=stream)
        if not stream:
            return Progress.from_json(self._json("POST", "/api/pull", body, model=model))
        response = self._send("POST", "/api/pull", body, stream=True, model=model)
        return self._pull_progress(response, model)

    def _pull_progress(self, response: requests.Response, model: str) -> Iterator[Progress]:
        with response:
            for obj in _ndjson_objects(response, self):
                error = _in_band_error(obj)
                if error is not None:
                    if "file does not exist" in error:
                        raise self._error(None, error, "/api/pull", model)
                    raise StreamError(
                        f"Pulling {model} failed: {error}",
                        server_message=error,
                        hint="Try again; a download resumes where it stopped.",
                    )
                yield Progress.from_json(obj)

    def delete(self, model: str) -> None:
        """Delete a local model (``DELETE /api/delete``)."""
        self._send("DELETE", "/api/delete", {"model": model}, model=model).close()

    def copy(self, source: str, destination: str) -> None:
        """Copy a local model under a new name (``POST /api/copy``)."""
        body = {"source": source, "destination": destination}
        self._send("POST", "/api/copy", body, model=source).close()

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
    ) -> list[list[float]]:
        """Embedding vectors, one per input (``POST /api/embed``); L2-normalised by the server."""
        body = _body(
            model=model,
            input=input if isinstance(input, str) else list(input),
            truncate=truncate,
            dimensions=dimensions,
            options=dict(options) if options else None,
            keep_alive=keep_alive,
        )
        return list(self._json("POST", "/api/embed", body, model=model).get("embeddings") or [])

    def is_running(self) -> bool:
        """Whether an Ollama server answers at :attr:`host` (``GET /api/tags``), without raising.

        Not ``HEAD /``: "Ollama-compatible" adapters that serve the API may refuse it (405).
        """
        try:
            response = self._session.get(
                self.host + "/api/tags", timeout=(self.connect_timeout, 5.0)
            )
        except requests.RequestException:
            return False
        with response:
            try:
                data = response.json() if response.ok else None
            except ValueError:
                return False  # a web page, not the API
            return isinstance(data, dict) and "models" in data

    # -- transport -------------------------------------------------------------------------

    def _json(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, model: str = ""
    ) -> dict[str, Any]:
        """A request whose answer is one JSON object."""
        response = self._send(method, path, body, model=model)
        try:
            data = response.json() if response.content else {}
        except (ValueError, RecursionError) as exc:
            raise ServerError(
                f"{self.host}{path} answered with something that is not JSON.",
                status_code=response.status_code,
                server_message=response.text[:200],
                hint=f"Check that {self.host_source} points at an Ollama server.",
            ) from exc
        finally:
            response.close()
        if not isinstance(data, dict):
            raise ServerError(
                f"{self.host}{path} answered with JSON that is not an object.",
                status_code=response.status_code,
                hint=f"Check that {self.host_source} points at an Ollama server.",
            )
        error = _in_band_error(data)
        if error is not None:
            status = response.status_code
            if status < 400:  # an error object with 200: an adapter's way of saying 404 or 400
                status = _implied_status(error) or 500
            raise self._error(status, error, path, model)
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
    ) -> requests.Response:
        """Send a request; raise the mapped error for a failure or an HTTP error status.

        A pooled keep-alive connection can be dead on reuse (a server or proxy reset it after
        an error). When a request on a *reused* connection fails before any byte of the answer
        arrived, it is sent once more on a fresh connection: the server never saw it. A fresh
        connection failing is not retried, since the server may have acted on the request.
        """
        url = self.host + path
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        for attempt in (1, 2):
            try:
                with bind(cancel) as binding:
                    response = self._session.request(
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
                    and _failed_before_response(exc)
                ):
                    self._drop_idle_connections()
                    continue
                if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                    raise self._transport_error(exc) from exc
                # requests quotes a bad header's value, often a secret: never show that text.
                reason = "a header is not valid" if _quotes_headers(exc) else str(exc)
                raise OllamaError(
                    f"Request to {url} failed: {reason}",
                    hint=f"Check {self.host_source} and the headers passed to the client.",
                ) from exc
        if response.status_code >= 400:
            try:
                text = response.text
            except requests.RequestException:
                text = ""
            finally:
                response.close()
            raise self._error(response.status_code, _error_text(text, response), path, model)
        return response

    def _drop_idle_connections(self) -> None:
        """Forget idle pooled connections so the retry opens a new one.

        ``PoolManager.clear`` closes only connections waiting in the pools; a stream another
        thread is reading keeps its own.
        """
        for adapter in self._session.adapters.values():
            poolmanager = getattr(adapter, "poolmanager", None)
            if poolmanager is not None:
                poolmanager.clear()

    def _transport_error(self, exc: requests.RequestException, partial: str = "") -> OllamaError:
        """Map a requests failure (no HTTP answer) to this package's errors."""
        if isinstance(exc, requests.ConnectTimeout):
            return ServerUnreachable(
                f"Cannot reach Ollama at {self.host}: no answer within {self.connect_timeout:g} s.",
                hint=_start_hint(self.host_source),
            )
        if isinstance(exc, requests.Timeout) or _caused_by(
            exc, (socket.timeout, TimeoutError, urllib3.exceptions.ReadTimeoutError)
        ):
            waited = f"for {self.timeout:g} s" if self.timeout is not None else "in time"
            return OllamaTimeout(
                f"Ollama at {self.host} sent nothing {waited}.",
                hint="A large model may still be loading: try again, or raise the client's "
                "timeout (Client(timeout=...)).",
                partial=partial,
            )
        if (
            not partial
            and isinstance(exc, requests.ConnectionError)
            and _failed_before_response(exc)
        ):
            return ServerError(
                f"{self.host} closed the connection without answering.",
                hint="The server or a proxy in front of it dropped the request; check its log, "
                "then try again.",
            )
        if partial or isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return StreamError(
                f"The connection to {self.host} broke before the answer was complete.",
                hint=_partial_hint(partial),
                partial=partial,
            )
        reason = _short_reason(exc)
        return ServerUnreachable(
            f"Cannot reach Ollama at {self.host} ({reason}).", hint=_start_hint(self.host_source)
        )

    def _error(self, status: int | None, message: str, path: str, model: str) -> ResponseError:
        """Map an error answer (HTTP status, or None inside a stream) to an exception."""
        kwargs: dict[str, Any] = {"status_code": status, "server_message": message}
        if path == "/api/pull" and "file does not exist" in message:
            return ModelNotFound(
                f"There is no model {model!r} in the registry.",
                model=model,
                hint="Check the name and tag at https://ollama.com/library.",
                **kwargs,
            )
        # Ollama's wording changed over versions (single or double quotes, "try pulling it
        # first"); a 404 that does not speak of a model is something else answering.
        model_missing = status == 404 and _MODEL_NOT_FOUND.match(message)
        if model_missing and not model:
            return ModelNotFound(
                "No model name was given.",
                model=model,
                hint="Name a model, e.g. 'llama3.2'; `ollama list` shows the local ones.",
                **kwargs,
            )
        if model_missing:
            similar = self.similar_models(model)
            hint = f"Download it with `ollama pull {model}`."
            if similar:
                hint += f" Local models with similar names: {', '.join(similar)}."
            return ModelNotFound(
                f"Model {model!r} is not on the Ollama server at {self.host}.",
                model=model,
                similar=similar,
                hint=hint,
                **kwargs,
            )
        if status in (404, 405):
            return NotOllama(
                f"{self.host} answered {message!r} to {path}: that is not the Ollama API.",
                hint=f"Check {self.host_source}: the scheme, the port, and any path prefix of a "
                "proxy.",
                **kwargs,
            )
        if status == 403 and (not message or message.startswith("403") or "cloud" in message):
            # Ollama's own 403s: an empty body from its host/origin check, or cloud disabled.
            return Unauthorized(
                f"{self.host} refused the request (HTTP 403): {message or 'forbidden'}",
                hint="Ollama refuses hosts and origins it does not allow: see OLLAMA_ORIGINS "
                "and OLLAMA_HOST on the server; for cloud models, enable Ollama cloud.",
                **kwargs,
            )
        if status == 429:
            return ServerError(
                f"{self.host} is rate-limiting requests (HTTP 429): {message}",
                hint="Wait a little and try again.",
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
                f"{self.host} refused the request (HTTP {status}): {message or 'unauthorized'}",
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

    def similar_models(self, model: str) -> list[str]:
        """Local model names like ``model``, closest first, for a not-found message (best
        effort: empty when the server cannot list them)."""
        try:
            names = [m.name for m in self.list()]
        except OllamaError:
            return []
        # Compare without the default tag, so "llama3" finds "llama3.2:latest".
        short = {name.removesuffix(":latest"): name for name in names}
        wanted = model.removesuffix(":latest")
        family = [full for name, full in short.items() if name.split(":")[0].startswith(wanted)]
        close = difflib.get_close_matches(wanted, list(short), n=3, cutoff=0.6)
        return list(dict.fromkeys(family + [short[name] for name in close]))[:3]


# Ollama's wording changed over versions: single or double quotes, ", try pulling it first".
_MODEL_NOT_FOUND = re.compile(r"model ['\"].*['\"] not found")


def _start_hint(host_source: str) -> str:
    return (
        f"Start it with `ollama serve` (or the Ollama app), or point {host_source} at where it "
        "runs. Offline, `python -m ollama_magic.testing` serves a stand-in."
    )


class Stream:
    """The chunks of a ``/api/generate`` or ``/api/chat`` answer, as they arrive.

    Iterate it for :class:`~ollama_magic.types.Chunk` objects. It accumulates what arrived, so
    :attr:`text`, :attr:`thinking` and :attr:`tool_calls` are there even when the stream fails
    (the error then also carries the text as ``partial``). :attr:`result` is the whole answer
    once the final chunk has come.

    Leaving early releases the connection, and Ollama stops generating: ``close()`` (or a
    ``with`` block, or ``break`` on an unreferenced stream). From another thread, ``abort()``
    wakes a read that is blocked waiting for the next token.
    """

    def __init__(
        self,
        client: Client,
        response: requests.Response | None,
        *,
        model: str = "",
        cancel: Cancellation | None = None,
    ) -> None:
        self._client = client
        self._response = response
        self._model = model
        self._cancel = cancel or Cancellation()
        self._objects = _ndjson_objects(response, client) if response is not None else iter(())
        self._content: list[str] = []
        self._thinking: list[str] = []
        self._tool_calls: list[ToolCall] = []
        self._logprobs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.result: Result | None = None
        """The whole answer, once the final chunk arrived."""
        self.aborted = response is None
        """True once :meth:`abort` (or the Cancellation given) stopped the stream."""
        self.chunks = 0
        """How many chunks arrived."""
        self._arrivals = 0  # chunks that brought text or reasoning, and when the first/last came
        self._first_arrival = self._last_arrival = 0.0

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Chunk:
        if self._response is None:
            raise StopIteration
        if self.result is not None:
            self._finish_body()
            raise StopIteration
        try:
            obj = next(self._objects)
        except StopIteration:
            self.close()
            self.aborted = self.aborted or self._cancel.cancelled
            if self.result is None and not self.aborted:
                raise StreamError(
                    f"The connection to {self._client.host} closed before the answer was complete.",
                    hint=_partial_hint(self.text),
                    partial=self.text,
                ) from None
            raise
        except requests.RequestException as exc:
            self.close()
            self.aborted = self.aborted or self._cancel.cancelled
            if self.aborted or self.result is not None:
                # Stopped on purpose, or the answer was complete and only the end of the
                # body went wrong (a server that keeps the stream open after "done").
                raise StopIteration from None
            raise self._client._transport_error(exc, partial=self.text) from exc
        except OllamaError as exc:  # a line that is not JSON
            self.close()
            exc.partial = self.text
            raise
        except BaseException as exc:
            # KeyboardInterrupt, GeneratorExit: release the connection so Ollama stops
            # generating, then let it propagate. A socket error after abort() is the abort.
            self.close()
            self.aborted = self.aborted or self._cancel.cancelled
            if self.aborted and isinstance(exc, Exception):
                raise StopIteration from None
            raise
        error = _in_band_error(obj)
        if error is not None:
            self.close()
            raise self._in_band(error)
        chunk = Chunk.from_json(obj)
        self.chunks += 1
        if chunk.content or chunk.thinking:
            now = time.monotonic()
            self._first_arrival = self._first_arrival or now
            self._last_arrival = now
            self._arrivals += 1
        self._content.append(chunk.content)
        if chunk.thinking:
            self._thinking.append(chunk.thinking)
        self._tool_calls.extend(chunk.tool_calls)
        self._logprobs.extend(chunk.logprobs)
        if chunk.done:
            self.result = self._result(obj)
            self._cancel._release()  # from now on the connection may serve other requests
        return chunk

    def _in_band(self, error: str) -> ResponseError:
        """The exception for an ``{"error": …}`` line of a 200 stream.

        Before anything was generated it stands for the HTTP error the server did not send
        (an adapter reporting a missing model this way), so it is mapped like one; after, the
        stream failed part-way and the text so far is kept.
        """
        if self.text or self.thinking or self._tool_calls:
            exc = self._client._error(None, error, "", self._model)
            exc.partial = self.text
            exc.hint = (
                _partial_hint(self.text)
                if self.text
                else "Only reasoning (or tool calls) had arrived; check the server's log, then "
                "try again."
            )
            return exc
        status = _implied_status(error)
        if status is None:
            return StreamError(
                f"{self._client.host} answered with an error before any text: {error}",
                server_message=error,
                hint="Check the server's log; trying again may help.",
            )
        exc = self._client._error(status, error, "", self._model)
        exc.status_code = None  # the HTTP status said 200; the error line said otherwise
        return exc

    def _finish_body(self) -> None:
        """After the final chunk: read the end of the body so the connection can be reused.

        Ollama ends the body right after ``done``; a server that keeps it open gets a second,
        then the half-read connection is closed instead of reused.
        """
        connection = getattr(self._response.raw, "connection", None) if self._response else None
        sock = getattr(connection, "sock", None)
        try:
            if isinstance(sock, socket.socket):
                sock.settimeout(1.0)  # urllib3 sets the read timeout again on reuse
            for _ in self._objects:
                pass
        except Exception:
            pass  # close() below then drops the connection
        finally:
            self.close()

    def _result(self, final: dict[str, Any]) -> Result:
        context = final.get("context")
        span = self._last_arrival - self._first_arrival
        # n chunks arrive over n-1 intervals; the first one's wait is the prompt's, not speed.
        measured = (self._arrivals - 1) / span if self._arrivals > 2 and span > 0 else None
        return Result(
            model=_text_field(final.get("model")) or self._model,
            content=self.text,
            thinking=self.thinking,
            tool_calls=tuple(self._tool_calls),
            done_reason=_text_field(final.get("done_reason")) or None,
            metrics=Metrics.from_json(final),
            context=tuple(context) if isinstance(context, list) else None,
            logprobs=tuple(self._logprobs),
            created_at=_text_field(final.get("created_at")) or None,
            raw=final,
            chunks=self._arrivals,
            measured_tokens_per_second=measured,
        )

    @property
    def text(self) -> str:
        """The answer text received so far."""
        return "".join(self._content)

    @property
    def thinking(self) -> str:
        """The reasoning text received so far."""
        return "".join(self._thinking)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """Tool calls received so far (they may come in several chunks)."""
        return tuple(self._tool_calls)

    @property
    def closed(self) -> bool:
        """Whether the connection has been released."""
        return self._response is None

    def consume(self) -> Result:
        """Read the rest of the stream and return the whole answer."""
        for _ in self:
            pass
        if self.result is None:  # aborted
            return Result(
                model=self._model,
                content=self.text,
                thinking=self.thinking,
                tool_calls=tuple(self._tool_calls),
                done_reason=None,
            )
        return self.result

    def close(self) -> None:
        """Release the connection; a server still generating stops when it notices."""
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            self._cancel._release()
            # ValueError: "generator already executing", when closed from another thread.
            with contextlib.suppress(ValueError):
                self._objects.close()
            response.close()

    def abort(self) -> None:
        """Stop the stream from any thread, waking a read blocked on the next token.

        The reading thread then ends its iteration normally (no error), with :attr:`aborted`
        set and the partial text in :attr:`text`. Once the answer is complete it does nothing:
        its connection may already serve another request.
        """
        if self._response is None or self.result is not None:
            return
        self.aborted = True
        self._cancel.cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped half-read must not keep a connection (and a busy model) alive.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        state = "done" if self.result else "aborted" if self.aborted else "open"
        return f"<Stream {self._model} {state}, {self.chunks} chunks, {len(self.text)} chars>"


def _ndjson_objects(response: requests.Response, client: Client) -> Iterator[dict[str, Any]]:
    """Yield each JSON object of an NDJSON body as soon as its line is complete.

    Lines are split on bytes and decoded whole, so a UTF-8 character split across network
    reads is never torn. A single JSON object without a final newline (Ollama's load and
    unload replies, even to a streaming request) is one line too.
    """
    pieces: list[bytes] = []  # the unfinished line, in pieces: joined once, when it ends
    size = 0
    # A server that trickles (a byte now and then) never trips the socket's read timeout;
    # no complete line for the client's timeout is a timeout all the same.
    idle = client.timeout
    limit = client.max_line_bytes or MAX_LINE_BYTES
    progress = time.monotonic()
    for data in _received(response):
        start = 0
        while (end := data.find(b"\n", start)) >= 0:  # only the new data is searched
            if size + end - start > limit:
                raise _too_long(client, limit)
            pieces.append(data[start:end])
            line, pieces, size = b"".join(pieces), [], 0
            start = end + 1
            if line.strip():
                yield _parse_line(line, client)
            progress = time.monotonic()  # after the yield: the caller's time is not silence
        if start < len(data):
            pieces.append(data[start:])
            size += len(data) - start
            if size > limit:
                raise _too_long(client, limit)
            if idle is not None and time.monotonic() - progress > idle:
                raise OllamaTimeout(
                    f"Ollama at {client.host} sent no complete line for {idle:g} s "
                    "(only a trickle of bytes).",
                    hint="The server or a proxy in front of it is stuck; try again, or raise "
                    "the client's timeout.",
                )
    tail = b"".join(pieces)
    if tail.strip():
        yield _parse_line(tail, client)


def _text_field(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _received(response: requests.Response) -> Iterator[bytes]:
    """The body's bytes as they arrive, each read at most one socket read.

    Not ``iter_content``: urllib3 returns a body without chunked framing only once it ends,
    and a declared chunk only once it is complete, so a server trickling bytes (or sending a
    huge line) would be read whole before any rule here could look at it. Errors are mapped
    as requests maps them, so callers see the usual exceptions.
    """
    raw = response.raw
    try:
        while data := raw.read1(65536):
            yield data
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


def _too_long(client: Client, limit: int) -> StreamError:
    return StreamError(
        f"{client.host} sent a line longer than {limit:,} bytes.",
        hint=f"That is not an Ollama answer; check what serves at {client.host_source}.",
    )


def _parse_line(line: bytes, client: Client) -> dict[str, Any]:
    # Invalid UTF-8 in one token should cost that character (U+FFFD), not the answer.
    text = line.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the limit
        text = text.strip()
        raise StreamError(
            f"{client.host} sent a line that is not JSON: {text[:120]!r}",
            server_message=text,
            hint=f"Check that {client.host_source} points at an Ollama server (not a web page or "
            "a proxy's login).",
        ) from exc
    if not isinstance(obj, dict):
        raise StreamError(f"{client.host} sent JSON that is not an object: {obj!r:.120}")
    return obj


def _in_band_error(obj: dict[str, Any]) -> str | None:
    """The error text of an ``{"error": …}`` object (some proxies add ``done: true``)."""
    error = obj.get("error")
    if error:
        if isinstance(error, dict):  # OpenAI-style gateways nest it
            error = error.get("message") or json.dumps(error)
        return str(error)
    return None


def _error_text(text: str, response: requests.Response) -> str:
    """The server's message from an error body: JSON ``error``, else short plain text."""
    text = text.strip()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and (error := _in_band_error(data)):
        return error
    if "<html" in text[:200].lower():
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = title.group(1).strip() if title else ""
    return text[:300] or f"{response.status_code} {response.reason or ''}".strip()


class _Session(requests.Session):
    """A session that keeps the user's headers from other hosts.

    requests drops only ``Authorization`` when a redirect leaves the host; a proxy's
    ``X-Api-Key`` (or any header the user configured) would follow a 307 elsewhere, body and
    all. Here every such header is dropped whenever requests would drop ``Authorization``.
    """

    def __init__(self, private: set[str]) -> None:
        super().__init__()
        self._private = {name.lower() for name in private}

    def rebuild_auth(self, prepared_request: Any, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if response.request.url and self.should_strip_auth(
            response.request.url, prepared_request.url
        ):
            for name in list(prepared_request.headers):
                if name.lower() in self._private:
                    del prepared_request.headers[name]


def _quotes_headers(exc: requests.RequestException) -> bool:
    return isinstance(exc, requests.exceptions.InvalidHeader) or "header" in str(exc).lower()


def _implied_status(message: str) -> int | None:
    """The HTTP status an error text stands for, when a server sent it with 200 instead."""
    if _MODEL_NOT_FOUND.match(message):
        return 404
    if "does not support" in message or message == "model is required":
        return 400
    return None


def _body(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left as None (the server's defaults apply)."""
    return {key: value for key, value in fields.items() if value is not None}


def _wire_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A chat message as the server wants it: images base64, tool calls as JSON."""
    out = {key: value for key, value in message.items() if value is not None}
    if out.get("images"):
        out["images"] = [encode_image(i) for i in out["images"]]
    if out.get("tool_calls"):
        out["tool_calls"] = [
            c.to_json() if isinstance(c, ToolCall) else c for c in out["tool_calls"]
        ]
    out.setdefault("content", "")
    return out


def _failed_before_response(exc: requests.ConnectionError) -> bool:
    """Whether a request died on an established connection before any answer byte.

    That is urllib3's ``ProtocolError('Connection aborted.', …)``; a refused or unresolvable
    connection is a ``MaxRetryError`` instead, and retrying that would only double the wait.
    """
    cause = exc.args[0] if exc.args else None
    return isinstance(cause, urllib3.exceptions.ProtocolError)


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
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


def _partial_hint(text: str) -> str:
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
