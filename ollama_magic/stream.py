"""NDJSON answers as they arrive: lines read safely off the socket, and the :class:`Stream` of
chunks that ``/api/generate`` and ``/api/chat`` return.

Nothing here sends a request: the client hands over the open response with what the rules
need (the server's :class:`~ollama_magic.http_errors.Origin`, the longest line accepted, and a
way to look up local model names for a not-found error).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests
import urllib3.exceptions

from ollama_magic.errors import OllamaError, OllamaTimeout, ResponseError, StreamError
from ollama_magic.http_errors import (
    Origin,
    implied_status,
    in_band_error,
    in_band_message,
    partial_hint,
    transport_error,
    wants_similar,
)
from ollama_magic.transport import Cancellation
from ollama_magic.types import Chunk, Metrics, Result, ToolCall

__all__ = ["Recorder", "Replayed", "Stream", "ndjson_objects"]

#: The JSON objects of an answer, as they are read.
Objects = Generator[dict[str, Any], None, None]
#: Wraps the objects of an answer as they are read (to record them).
Tap = Callable[[Objects], Objects]


@dataclass(frozen=True)
class Replayed:
    """An answer that comes from a recording instead of a server (see
    :mod:`ollama_magic.replay`): its objects, paced as recorded, and when it was recorded."""

    objects: Objects
    recorded_at: str


class Recorder(Protocol):
    """What a client consults before sending: :class:`ollama_magic.replay.Replay`."""

    def replay(
        self, path: str, body: dict[str, Any], cancel: Cancellation, *, offline: bool = False
    ) -> Replayed | None:
        """The recorded answer to use instead of sending (None: send). ``offline``: the
        server could not be reached."""

    def tap(self, path: str, body: dict[str, Any]) -> Tap | None:
        """Records a streamed answer about to be asked (None: not recorded)."""

    def record(self, path: str, body: dict[str, Any], answer: dict[str, Any]) -> None:
        """Records a one-object answer."""

    def permit(self, path: str) -> None:
        """Raises when nothing may be sent to the server (strict replay)."""


class _NoConnection:
    """The response of a replayed stream: nothing to release."""

    raw = None

    def close(self) -> None:
        pass


class Stream:
    """The chunks of a ``/api/generate`` or ``/api/chat`` answer, as they arrive.

    Iterate it for :class:`~ollama_magic.types.Chunk` objects. It accumulates what arrived, so
    :attr:`text`, :attr:`thinking` and :attr:`tool_calls` are there even when the stream fails
    (the error then also carries the text as ``partial``). :attr:`result` is the whole answer
    once the final chunk has come.

    Leaving early releases the connection, and Ollama stops generating: ``close()`` (or a
    ``with`` block, or ``break`` on an unreferenced stream). From another thread, ``abort()``
    wakes a read that is blocked waiting for the next token.

    Args:
        response: The open streaming response; None for a request cancelled before the
            server answered (an empty, aborted stream).
        origin: The server asked, as errors name it (its ``timeout`` bounds a trickle).
        max_line_bytes: The longest NDJSON line accepted; a longer one is a StreamError.
        model: The model asked for.
        cancel: The request's cancellation, which :meth:`abort` triggers.
        similar_models: Looks up local model names like a missing one, for the error of a
            stream that reports "model not found" in its first line.
        replayed: A recorded answer to read instead of ``response``.
        tap: Wraps the objects read from ``response`` (a recording).
    """

    def __init__(
        self,
        response: requests.Response | None,
        *,
        origin: Origin,
        max_line_bytes: int,
        model: str = "",
        cancel: Cancellation | None = None,
        similar_models: Callable[[str], Sequence[str]] | None = None,
        replayed: Replayed | None = None,
        tap: Tap | None = None,
    ) -> None:
        self._response: requests.Response | _NoConnection | None = response
        self._origin = origin
        self._model = model
        self._cancel = cancel or Cancellation()
        self._similar_models = similar_models
        self._objects: Objects = _nothing()
        if replayed is not None:
            self._response, self._objects = _NoConnection(), replayed.objects
        elif response is not None:
            self._objects = ndjson_objects(response, origin=origin, max_line_bytes=max_line_bytes)
            if tap is not None:
                self._objects = tap(self._objects)
        self.recorded_at = replayed.recorded_at if replayed is not None else None
        """When a replayed answer was recorded (None: it came from the server)."""
        self._content: list[str] = []
        self._thinking: list[str] = []
        self._tool_calls: list[ToolCall] = []
        self._logprobs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.result: Result | None = None
        """The whole answer, once the final chunk arrived."""
        self.aborted = self._response is None
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
                    f"The connection to {self._origin.host} closed before the answer was complete.",
                    hint=partial_hint(self.text),
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
            raise transport_error(self._origin, exc, partial=self.text) from exc
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
        if "error" in obj:
            error = in_band_message(obj)
            if error is not None:
                self.close()
                raise self._in_band(error)
        chunk = Chunk.from_json(obj)
        self.chunks += 1
        if chunk.content or chunk.thinking:
            self._last_arrival = time.monotonic()
            if not self._arrivals:
                self._first_arrival = self._last_arrival
            self._arrivals += 1
        self._content.append(chunk.content)
        if chunk.thinking:
            self._thinking.append(chunk.thinking)
        if chunk.tool_calls:
            self._tool_calls.extend(chunk.tool_calls)
        if chunk.logprobs:
            self._logprobs.extend(chunk.logprobs)
        if chunk.done:
            self.result = self._result(obj)
            self._cancel._release()  # from now on the connection may serve other requests
        return chunk

    def _in_band(self, error: str) -> ResponseError:
        """The exception for an ``{"error": …}`` line (see :func:`in_band_error`)."""
        generated = bool(self.text or self.thinking or self._tool_calls)
        similar: Sequence[str] = ()
        # Only a "model not found" line before any text is worth a request for similar names.
        status = None if generated else implied_status(error)
        if self._similar_models is not None and wants_similar(status, error, "", self._model):
            similar = self._similar_models(self._model)
        return in_band_error(
            self._origin,
            error,
            model=self._model,
            partial=self.text,
            generated=generated,
            similar=similar,
        )

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
            recorded_at=self.recorded_at,
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


def ndjson_objects(
    response: requests.Response, *, origin: Origin, max_line_bytes: int
) -> Generator[dict[str, Any], None, None]:
    """Yield each JSON object of an NDJSON body as soon as its line is complete.

    Lines are split on bytes and decoded whole, so a UTF-8 character split across network
    reads is never torn. A single JSON object without a final newline (Ollama's load and
    unload replies, even to a streaming request) is one line too.

    Args:
        response: The open streaming response.
        origin: The server asked, for the errors; no complete line for its ``timeout`` is a
            timeout.
        max_line_bytes: The longest line accepted; a longer one is a StreamError, not a
            process out of memory.
    """
    pieces: list[bytes] = []  # the unfinished line, in pieces: joined once, when it ends
    size = 0
    # A server that trickles (a byte now and then) never trips the socket's read timeout;
    # no complete line for the client's timeout is a timeout all the same.
    idle = origin.timeout
    limit = max_line_bytes
    progress = time.monotonic()
    for data in _received(response):
        start = 0
        while (end := data.find(b"\n", start)) >= 0:  # only the new data is searched
            if size + end - start > limit:
                raise _too_long(origin, limit)
            if pieces:
                pieces.append(data[start:end])
                line, pieces, size = b"".join(pieces), [], 0
            else:
                line = data[start:end]  # the usual case: a whole line in one read
            start = end + 1
            if line.strip():
                yield _parse_line(line, origin)
            progress = time.monotonic()  # after the yield: the caller's time is not silence
        if start < len(data):
            pieces.append(data[start:])
            size += len(data) - start
            if size > limit:
                raise _too_long(origin, limit)
            if idle is not None and time.monotonic() - progress > idle:
                raise OllamaTimeout(
                    f"Ollama at {origin.host} sent no complete line for {idle:g} s "
                    "(only a trickle of bytes).",
                    hint="The server or a proxy in front of it is stuck; try again, or raise "
                    "the client's timeout.",
                )
    tail = b"".join(pieces)
    if tail.strip():
        yield _parse_line(tail, origin)


def _nothing() -> Generator[dict[str, Any], None, None]:
    """The objects of a request cancelled before it was answered: none."""
    yield from ()


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
    fp: Any = getattr(raw, "_fp", None)
    catcher: Any = getattr(raw, "_error_catcher", None)
    plain = raw.headers.get("content-encoding", "identity").lower() in ("", "identity")
    # An answer arrives a token per HTTP chunk, so this loop runs once a token. urllib3's
    # read1 wraps each call in its error mapping and decoding (a third of the reading); for
    # a chunked body without content encoding (every Ollama stream) the same reads go to
    # http.client's read1 under urllib3's own error mapping, entered once for the body, which
    # maps errors and releases or closes the connection exactly as read1 would.
    fast = plain and raw.chunked and callable(getattr(fp, "read1", None)) and catcher
    try:
        if fast:
            with catcher():
                while data := fp.read1(65536):
                    yield data
                fp.close()  # the body is over: the connection goes back to the pool
        else:
            # requests opens the body undecoded, and its session asks for gzip: a proxy that
            # compresses the stream must not reach the parser as compressed bytes.
            while data := raw.read1(65536, decode_content=True):
                yield data
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


def _too_long(origin: Origin, limit: int) -> StreamError:
    return StreamError(
        f"{origin.host} sent a line longer than {limit:,} bytes.",
        hint=f"That is not an Ollama answer; check what serves at {origin.host_source}.",
    )


def _parse_line(line: bytes, origin: Origin) -> dict[str, Any]:
    # Invalid UTF-8 in one token should cost that character (U+FFFD), not the answer.
    text = line.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the limit
        text = text.strip()
        raise StreamError(
            f"{origin.host} sent a line that is not JSON: {text[:120]!r}",
            server_message=text,
            hint=f"Check that {origin.host_source} points at an Ollama server (not a web page "
            "or a proxy's login).",
        ) from exc
    if not isinstance(obj, dict):
        raise StreamError(f"{origin.host} sent JSON that is not an object: {obj!r:.120}")
    return obj
