"""Small helpers shared by the tests (no sleeps as synchronisation: wait on a condition)."""

from __future__ import annotations

import atexit
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.005) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


@contextlib.contextmanager
def magic_shell() -> Iterator[object]:
    """A real IPython shell with the extension loaded (set OLLAMA_HOST first)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.extension_manager.load_extension("ollama_magic")
    try:
        yield shell
    finally:
        shell.extension_manager.unload_extension("ollama_magic")
        # Each shell registers an atexit hook that collects garbage at exit: hundreds of
        # them made the interpreter's exit take tens of seconds.
        atexit.unregister(shell.atexit_operations)
        InteractiveShell.clear_instance()


def plain(text: str) -> str:
    """Text without ANSI colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class RawServer:
    """A bare TCP server on 127.0.0.1 that hands each connection to ``handle(conn)``: for
    behaviour no well-behaved HTTP server shows (resets, bodies that never end)."""

    def __init__(self, handle) -> None:
        import socket
        import threading

        self._handle = handle
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen()
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections = 0
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        import socket

        # close() alone does not wake the thread blocked in accept() on Linux; shutdown does.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            self._handle(self, conn)

    def read_request(self, conn) -> bytes:
        """Read one request (headers and a Content-Length body) and record it."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            body += conn.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        return data


@dataclass
class Response:
    """A raw HTTP answer of the stand-in, as its tests read it."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[dict[str, Any]]:
        assert self.body.endswith(b"\n"), self.body[-80:]
        return [json.loads(line) for line in self.body.split(b"\n")[:-1]]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")
