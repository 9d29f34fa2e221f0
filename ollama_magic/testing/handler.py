"""The HTTP side of the stand-in: connections, framing, routing and the simple endpoints."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ollama_magic.testing import compat, generation
from ollama_magic.testing.catalog import PULL_SHARES, parse_model_name, pull_progress
from ollama_magic.testing.headers import Headers
from ollama_magic.testing.replies import Fault, count_tokens, embedding, normalize
from ollama_magic.testing.server import RecordedRequest
from ollama_magic.testing.wire import (
    JSON_PLAIN,
    JSON_UTF8,
    NDJSON,
    ApiError,
    decode_request,
    go_json,
    go_quote,
    keep_alive_ns,
    parse_json_document,
)

if TYPE_CHECKING:
    from ollama_magic.testing.server import FakeOllama

logger = logging.getLogger("ollama_magic.testing")

VERSION = "0.33.0"
SPLIT_PAUSE = 0.02  # between the two halves of a split UTF-8 line, so reads see the split


class ClientGone(Exception):
    """The client closed the connection (a write failed or the socket reached EOF)."""


class Aborted(Exception):
    """The server is stopping; abandon the request."""


class FakeHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its FakeOllama and its open connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeOllama) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def serve_until(self, stopping: threading.Event) -> None:
        """Accept connections until *stopping* is set (then a wake-up connection arrives).

        Unlike `serve_forever`, nothing polls: `stop()` sets the event and connects once, so
        stopping is immediate.
        """
        while not stopping.is_set():
            try:
                request, client_address = self.get_request()
            except OSError:
                break  # the listening socket was closed
            if stopping.is_set():
                request.close()
                break
            try:
                self.process_request(request, client_address)  # one thread per connection
            except Exception:
                self.handle_error(request, client_address)
                self.shutdown_request(request)

    def track(self, connection: socket.socket) -> None:
        """Remember an open connection so `close_connections` can cut it."""
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a connection that has been closed."""
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down every open connection: blocked reads return, pending writes fail."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            # Already closed by the client or the handler: nothing to do.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request are normal here; keep stderr quiet.
        logger.debug("error while handling a request from %s", client_address, exc_info=True)


class StreamWriter:
    """Writes an NDJSON body with chunked transfer encoding, one line per chunk."""

    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler

    def start(self) -> None:
        """Send the 200 status line and headers of a stream."""
        self.handler.start_response(
            200, [("Content-Type", NDJSON), ("Transfer-Encoding", "chunked")]
        )

    def line(self, obj: Any, *, split_utf8: bool = False) -> None:
        """Write one JSON object and a newline as one chunk (or two, split inside a character)."""
        data = go_json(obj) + b"\n"
        split = _split_point(data) if split_utf8 else None
        if split is None:
            self.handler.write(_chunk(data))
        else:
            self.handler.write(_chunk(data[:split]))
            self.handler.pause(SPLIT_PAUSE)
            self.handler.write(_chunk(data[split:]))
        self.handler.record.chunks_sent += 1

    def end(self) -> None:
        """Write the terminating zero-length chunk."""
        self.handler.write(b"0\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n"


def _split_point(data: bytes) -> int | None:
    """An offset inside the first multi-byte UTF-8 character of *data*, if there is one."""
    for offset, byte in enumerate(data):
        if byte >= 0xC0:  # a lead byte: the character continues after it
            return offset + 1
    return None


Route = Callable[["RequestHandler", RecordedRequest, int], None]


class RequestHandler(BaseHTTPRequestHandler):
    """Handles the requests of one connection (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    # A response goes out in several small writes (headers, then chunks); with Nagle's
    # algorithm each request on a kept-alive connection would wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: FakeHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)
        self.reset_pending = False  # a reset_connection fault: reset on the next request
        self.closed = False
        self.record = RecordedRequest("", "", Headers(), None, b"")

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)

    @property
    def fake(self) -> FakeOllama:
        """The FakeOllama whose state this request reads and changes."""
        return self.server.fake

    # -- request loop ----------------------------------------------------------------------

    def handle_one_request(self) -> None:
        """Read one request and answer it (the stdlib loop, with our error handling)."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (OSError, ValueError):
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        try:
            if not self.parse_request():
                return
        except OSError:
            self.close_connection = True
            return
        self.dispatch()
        if self.closed:
            self.close_connection = True
            return
        try:
            self.wfile.flush()
        except (OSError, ValueError):
            self.close_connection = True

    def dispatch(self) -> None:
        """Record the request, route it, and turn exceptions into responses."""
        started = time.perf_counter_ns()
        path = urlsplit(self.path).path
        try:
            raw = self.read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        headers = Headers(self.headers.items())
        self.record = record = RecordedRequest(self.command, path, headers, _json_or_none(raw), raw)
        self.fake._record(record)
        self.response_started = False
        try:
            if self.reset_pending:
                self.reset_connection()
                return
            self.route(record, started)
        except ApiError as exc:
            if not self.response_started:
                self.respond_error(exc.status, exc.message, exc.content_type)
        except ClientGone:
            record.client_disconnected = True
            self.close_connection = True
        except (Aborted, OSError):
            self.close_connection = True
        except Exception as exc:  # a bug here should answer 500, not kill the connection
            logger.exception("stand-in failed on %s %s", self.command, path)
            if not self.response_started:
                self.respond_error(500, f"stand-in server error: {exc!r}", JSON_UTF8)
        finally:
            record.finished.set()
            logger.info("%s %s -> %s", self.command, path, record.status or "reset")

    def route(self, record: RecordedRequest, started: int) -> None:
        """Pick the endpoint; apply HTTP-level faults first."""
        methods = ROUTES_BY_COMPAT[self.fake.compat].get(record.path)
        if methods is None:
            self.respond_bytes(404, "text/plain", b"404 page not found")
            return
        endpoint = methods.get(self.command)
        if endpoint is None:
            self.respond_bytes(405, "text/plain", b"405 method not allowed")
            return
        fault = self.fake._take_fault(record.path, record.model, http=True)
        if fault is not None:
            self.apply_http_fault(fault)
            return
        endpoint(self, record, started)

    def read_body(self) -> bytes:
        """The request body (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- output helpers ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write and flush *data*; a failure means the client went away (or we are stopping)."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (OSError, ValueError) as exc:
            if self.fake._stopping.is_set():
                raise Aborted from exc
            raise ClientGone from exc

    def start_response(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the status line and headers (no `Server` header: Go does not send one)."""
        self.record.status = status
        self.response_started = True
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        for name, value in headers:
            self.send_header(name, value)
        try:
            self.end_headers()
        except (OSError, ValueError) as exc:
            if self.fake._stopping.is_set():
                raise Aborted from exc
            raise ClientGone from exc

    def respond_bytes(self, status: int, content_type: str | None, body: bytes) -> None:
        """A complete response with Content-Length (no body for HEAD)."""
        headers = [("Content-Type", content_type)] if content_type else []
        headers.append(("Content-Length", str(len(body))))
        self.start_response(status, headers)
        if self.command != "HEAD" and body:
            self.write(body)

    def respond_json(self, status: int, obj: Any, content_type: str = JSON_UTF8) -> None:
        """A single JSON object, compact and without a trailing newline (gin `c.JSON`)."""
        self.respond_bytes(status, content_type, go_json(obj))

    def respond_error(self, status: int, message: str, content_type: str = JSON_UTF8) -> None:
        """`{"error": message}` with *status*.

        With 200 (how some adapters report errors) it is one NDJSON line instead, as it would
        come on a stream: a client finds the error only by reading the body.
        """
        if status == 200:
            self.respond_bytes(200, NDJSON, go_json({"error": message}) + b"\n")
            return
        self.respond_json(status, {"error": message}, content_type)

    def apply_http_fault(self, fault: Fault) -> None:
        """Answer with the fault's status (JSON error, NDJSON error line for 200, or a body)."""
        assert fault.status is not None
        if fault.body is not None:
            self.respond_bytes(fault.status, fault.content_type, fault.body.encode("utf-8"))
        else:
            self.respond_error(fault.status, fault.error_text, JSON_PLAIN)
        if fault.reset_connection:
            self.reset_pending = True

    # -- connection control ----------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Wait *seconds*, returning early (with Aborted) if the server stops."""
        if seconds > 0 and self.fake._stopping.wait(seconds):
            raise Aborted

    def load(self, seconds: float) -> None:
        """Wait *seconds* (as a model loads, or a pull downloads); stop early if the client
        leaves (ClientGone) or the server stops (Aborted)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.pause(min(left, 0.02))
            self.check_client()

    def check_client(self) -> None:
        """Raise ClientGone if the client has closed its end (EOF pending on the socket)."""
        if self.fake._stopping.is_set():
            raise Aborted
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                raise ClientGone
        except (OSError, ValueError) as exc:
            raise ClientGone from exc

    def cut(self) -> None:
        """Drop the connection mid-response (FIN, no terminating chunk)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def reset_connection(self) -> None:
        """Reset the connection (RST, nothing sent): SO_LINGER 0, then close."""
        self.close_connection = True
        self.closed = True
        connection = self.connection
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The socket closes for real only when the buffered reader lets go of it too.
        self.rfile.close()
        self.wfile.close()
        connection.close()


def _json_or_none(raw: bytes) -> Any:
    try:
        return parse_json_document(raw)
    except ApiError:
        return None


# -------------------------------------------------------------------------------------------
# Simple endpoints
# -------------------------------------------------------------------------------------------


def root(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`GET|HEAD /`."""
    handler.respond_bytes(200, "text/plain; charset=utf-8", b"Ollama is running")


def version(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`GET|HEAD /api/version`."""
    handler.respond_json(200, {"version": VERSION})


def tags(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`GET|HEAD /api/tags`: installed models, most recently modified first."""
    handler.respond_json(200, {"models": [spec.tags_entry() for spec in handler.fake.models]})


def ps(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`GET /api/ps`: loaded models, latest expiry first."""
    handler.respond_json(200, {"models": handler.fake._ps_entries()})


def show(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/show`."""
    fields = {
        "model": "string",
        "name": "string",
        "system": "string",
        "template": "string",
        "verbose": "bool",
        "options": "object",
    }
    request = decode_request(record.raw_body, "ShowRequest", fields)
    name = request.get("model") or request.get("name") or ""
    if not name:
        raise ApiError(400, "model is required")
    handler.respond_json(200, generation.local_model(handler, name).show())


def pull(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/pull`: progress lines (at the server's `pull_seconds` pace), then the model
    is installed."""
    fields = {
        "model": "string",
        "name": "string",
        "insecure": "bool",
        "stream": "bool",
        "username": "string",
        "password": "string",
    }
    request = decode_request(record.raw_body, "PullRequest", fields)
    name = request.get("model") or request.get("name") or ""
    parsed = parse_model_name(name)
    if parsed is None:
        raise ApiError(400, "invalid model name")
    stream = request.get("stream", True)
    remote = handler.fake._remote_lookup(parsed)
    if remote is None:
        message = "pull model manifest: file does not exist"
        if not stream:
            raise ApiError(500, message, JSON_PLAIN)
        writer = StreamWriter(handler)
        writer.start()
        writer.line({"status": "pulling manifest"})
        writer.line({"error": message})
        writer.end()
        return
    local = handler.fake._lookup(parsed)
    present = local is not None and local.digest == remote.digest
    seconds = handler.fake.pull_seconds
    plan = pull_progress(remote, present, seconds)
    last_pause = PULL_SHARES[-1] * seconds  # writing the manifest, before "success"
    if not stream:
        handler.load(sum(pause for pause, _ in plan) + last_pause)  # as long, without lines
        handler.fake._install(remote.renamed(parsed.display))
        handler.respond_json(200, {"status": "success"}, JSON_PLAIN)
        return
    writer = StreamWriter(handler)
    writer.start()
    for pause, line in plan:
        handler.load(pause)
        handler.check_client()
        writer.line(line)
    handler.load(last_pause)
    # Installed only once complete: a client that leaves part way gets no model.
    handler.fake._install(remote.renamed(parsed.display))
    writer.line({"status": "success"})
    writer.end()


def delete(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`DELETE /api/delete`: 200 with an empty body."""
    request = decode_request(
        record.raw_body, "DeleteRequest", {"model": "string", "name": "string"}
    )
    name = request.get("model") or request.get("name") or ""
    parsed = parse_model_name(name)
    if parsed is None:
        raise ApiError(400, f"name {go_quote(name)} is invalid")
    if not handler.fake._delete(parsed):
        raise ApiError(404, f"model '{name}' not found")
    handler.respond_bytes(200, None, b"")


def copy(handler: RequestHandler, record: RecordedRequest, started: int) -> None:
    """`POST /api/copy`: 200 with an empty body."""
    request = decode_request(
        record.raw_body, "CopyRequest", {"source": "string", "destination": "string"}
    )
    source = request.get("source", "")
    destination = request.get("destination", "")
    parsed_source = parse_model_name(source)
    if parsed_source is None:
        raise ApiError(400, f"source {go_quote(source)} is invalid")
    parsed_destination = parse_model_name(destination)
    if parsed_destination is None:
        raise ApiError(400, f"destination {go_quote(destination)} is invalid")
    spec = handler.fake._lookup(parsed_source)
    if spec is None:
        raise ApiError(404, f"model {go_quote(source)} not found")
    handler.fake._install(spec.renamed(parsed_destination.display))
    handler.respond_bytes(200, None, b"")


def _embedding_model(handler: RequestHandler, name: str) -> Any:
    if not name:
        raise ApiError(400, "model is required")
    # The embed endpoints still word it the scheduler's way (double quotes, "try pulling").
    not_found = f"model {go_quote(name)} not found, try pulling it first"
    return generation.local_model(handler, name, not_found)


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
    options = generation.check_options(request.get("options") or {})
    handler.fake._touch_loaded(spec, keep_alive, options.get("num_ctx"))
    loaded = time.perf_counter_ns()
    if not inputs:
        handler.respond_json(200, {"model": name, "embeddings": []})
        return
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
    options = generation.check_options(request.get("options") or {})
    handler.fake._touch_loaded(spec, keep_alive, options.get("num_ctx"))
    prompt = request.get("prompt", "")
    vector = embedding(spec.name, prompt, spec.embedding_length) if prompt else []
    handler.respond_json(200, {"embedding": vector})


ROUTES: dict[str, dict[str, Route]] = {
    "/": {"GET": root, "HEAD": root},
    "/api/version": {"GET": version, "HEAD": version},
    "/api/tags": {"GET": tags, "HEAD": tags},
    "/api/ps": {"GET": ps},
    "/api/show": {"POST": show},
    "/api/generate": {"POST": generation.generate},
    "/api/chat": {"POST": generation.chat},
    "/api/embed": {"POST": embed},
    "/api/embeddings": {"POST": embeddings},
    "/api/pull": {"POST": pull},
    "/api/delete": {"DELETE": delete},
    "/api/copy": {"POST": copy},
}

# An adapter has no HEAD / and no /api/version: the router answers 405 and 404 instead.
ROUTES_BY_COMPAT = {compat.OLLAMA: ROUTES, compat.ADAPTER: compat.adapter_routes(ROUTES)}
