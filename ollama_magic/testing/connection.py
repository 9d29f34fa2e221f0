"""HTTP plumbing: the listening server and one connection's requests, framed as Go frames them.

`RequestHandler` reads a request, records it, routes it to an endpoint function and turns
exceptions into the responses the real server would send. Endpoints write through its output
helpers; the routing table and the server state come in from outside (see `server.py`).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ollama_magic.testing.bodies import BodyReader
from ollama_magic.testing.decoding import parse_json_document
from ollama_magic.testing.gojson import go_json
from ollama_magic.testing.headers import Headers
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.replies import Fault
from ollama_magic.testing.state import ServerState
from ollama_magic.testing.wire import JSON_PLAIN, JSON_UTF8, NDJSON, ApiError

logger = logging.getLogger("ollama_magic.testing")


class ClientGone(Exception):
    """The client closed the connection (a write failed or the socket reached EOF)."""


class Aborted(Exception):
    """The server is stopping; abandon the request."""


# An endpoint answers one request: (handler, record, perf_counter_ns when it arrived).
Route = Callable[["RequestHandler", RecordedRequest, int], None]
# path -> HTTP method -> endpoint; a path's last segment may be a parameter, as in gin:
# "/api/blobs/:digest" matches "/api/blobs/sha256:..." (not an empty segment).
Routes = Mapping[str, Mapping[str, Route]]

_READS_OWN_BODY: set[Route] = set()


def reads_own_body(endpoint: Route) -> Route:
    """Mark *endpoint* as reading the request body itself, in pieces (`handler.body`), so a
    large upload is never held whole; what it leaves unread is drained afterwards."""
    _READS_OWN_BODY.add(endpoint)
    return endpoint


def find_methods(routes: Routes, path: str) -> Mapping[str, Route] | None:
    """The endpoints of *path* by method: an exact path, else a pattern ending in a
    `:parameter` segment that matches one non-empty segment."""
    methods = routes.get(path)
    if methods is not None:
        return methods
    for pattern, candidate in routes.items():
        head, colon, _ = pattern.rpartition("/:")
        if colon and path.startswith(head + "/"):
            segment = path[len(head) + 1 :]
            if segment and "/" not in segment:
                return candidate
    return None


class FakeHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its state, its routes and its open connections.

    Args:
        address: (host, port) to listen on.
        state: what the endpoints read and change.
        routes: the endpoints by path and method.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ServerState, routes: Routes) -> None:
        self.state = state
        self.routes = routes
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
        self.received = 0.0  # when the request in hand arrived (time.monotonic)
        self.slot_started = 0.0  # its arrival plus its wait for a slot (time.monotonic)
        self.closed = False
        self.record = RecordedRequest("", "", Headers(), None, b"")
        self.body = BodyReader(self.rfile)

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
    def state(self) -> ServerState:
        """The server state this request reads and changes."""
        return self.server.state

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
        self.received = time.monotonic()
        path = urlsplit(self.path).path
        try:
            length, encoding = self.headers["Content-Length"], self.headers["Transfer-Encoding"]
            self.body = BodyReader(self.rfile, length, encoding)
            raw = b"" if self._reads_own_body(path) else self.body.read_all()
        except (OSError, ValueError):
            self.close_connection = True
            return
        headers = Headers(self.headers.items())
        self.record = record = RecordedRequest(self.command, path, headers, _json_or_none(raw), raw)
        self.state.record(record)
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
            self._finish_body()
            record.finished.set()
            logger.info("%s %s -> %s", self.command, path, record.status or "reset")

    def _reads_own_body(self, path: str) -> bool:
        """Whether the endpoint for this request reads the body itself."""
        methods = find_methods(self.server.routes, path)
        return methods is not None and methods.get(self.command) in _READS_OWN_BODY

    def _finish_body(self) -> None:
        """Drop what an endpoint left of the body, so the connection can go on (as Go's
        server does); a broken body closes the connection instead."""
        if self.body.done or self.close_connection:
            return
        try:
            self.body.drain()
        except (OSError, ValueError):
            self.close_connection = True

    def route(self, record: RecordedRequest, started: int) -> None:
        """Pick the endpoint; apply HTTP-level faults first."""
        methods = find_methods(self.server.routes, record.path)
        if methods is None:
            self.respond_bytes(404, "text/plain", b"404 page not found")
            return
        endpoint = methods.get(self.command)
        if endpoint is None:
            self.respond_bytes(405, "text/plain", b"405 method not allowed")
            return
        fault = self.state.take_fault(record.path, record.model, http=True)
        if fault is not None:
            self.apply_http_fault(fault)
            return
        endpoint(self, record, started)

    # -- output helpers ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write and flush *data*; a failure means the client went away (or we are stopping)."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (OSError, ValueError) as exc:
            if self.state.stopping.is_set():
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
            if self.state.stopping.is_set():
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
        if seconds > 0 and self.state.stopping.wait(seconds):
            raise Aborted

    def load(self, seconds: float) -> None:
        """Wait *seconds* (as a model loads, or a pull downloads); stop early if the client
        leaves (ClientGone) or the server stops (Aborted)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.pause(min(left, 0.02))
            self.check_client()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the server's slots for the work inside, waiting in line for one first.

        Raises:
            ApiError: 503 when the line is full.
            ClientGone: the client left while waiting.
            Aborted: the server is stopping.
        """
        slots = self.state.slots  # released to these, even if the server restarts meanwhile
        asked = time.monotonic()
        if not slots.acquire(self.check_client):
            raise Aborted
        # The answer's fixed cost counts from its arrival, less the time it waited in line.
        self.slot_started = self.received + (time.monotonic() - asked)
        try:
            yield
        finally:
            slots.release()

    def check_client(self) -> None:
        """Raise ClientGone if the client has closed its end (EOF pending on the socket)."""
        if self.state.stopping.is_set():
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
    """The body as JSON for the request log, or None when it is not JSON."""
    try:
        return parse_json_document(raw)
    except ApiError:
        return None
