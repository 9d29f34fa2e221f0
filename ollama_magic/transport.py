"""The transport under :class:`~ollama_magic.client.Client`: connections that report reuse,
and cancellation that can wake a blocked read from another thread.

requests and urllib3 cannot say whether a request went over a reused keep-alive connection,
nor hand out the socket of a request still waiting for its headers; these small subclasses of
urllib3's connections and pools do, and the client's session mounts :class:`Adapter`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, ClassVar

import requests
import requests.adapters
import urllib3
import urllib3.connection

__all__ = ["Adapter", "Binding", "Cancellation", "Cancelled", "bind"]


class Cancellation:
    """Stops a request from another thread at any moment: while it connects, while the server
    loads the model, or while the answer streams.

    A thread blocked in a socket read cannot be woken by closing the response from another
    thread; shutting the socket down wakes it at once. So the socket is caught as soon as the
    connection has one, and :meth:`cancel` shuts it down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Stop the request now (a no-op once its answer is complete)."""
        with self._lock:
            self.cancelled = True
            if self._socket is not None:
                _shutdown(self._socket)

    def _bind(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._socket = sock
            if sock is not None and self.cancelled:
                _shutdown(sock)

    def _release(self) -> None:
        """The answer is complete: its connection may serve another request, hands off."""
        with self._lock:
            self._socket = None


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class Binding:
    """What the connection under the current request reports to its Client (per thread)."""

    def __init__(self, cancel: Cancellation | None) -> None:
        self.cancel = cancel
        self.reused = False


_current = threading.local()


@contextlib.contextmanager
def bind(cancel: Cancellation | None) -> Any:
    """Within this block, the request made on this thread reports to the Binding yielded."""
    binding = _current.binding = Binding(cancel)
    try:
        yield binding
    finally:
        _current.binding = None


class _Tracking:
    """Connection mix-in: says whether a request went over a reused keep-alive connection,
    and hands the socket to the request's Cancellation as soon as it exists."""

    _sent = 0

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        binding = getattr(_current, "binding", None)
        if binding is not None and binding.cancel is not None:
            binding.cancel._bind(self.sock)  # type: ignore[attr-defined]

    def request(self, *args: Any, **kwargs: Any) -> None:
        binding = getattr(_current, "binding", None)
        if binding is not None:
            binding.reused = self._sent > 0
            if binding.cancel is not None and self.sock is not None:  # type: ignore[attr-defined]
                binding.cancel._bind(self.sock)  # type: ignore[attr-defined]
        self._sent += 1
        super().request(*args, **kwargs)  # type: ignore[misc]

    def close(self) -> None:
        self._sent = 0  # a closed connection reconnects fresh
        super().close()  # type: ignore[misc]


class _HTTPConnection(_Tracking, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Tracking, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with pools of tracking connections (direct and through proxies)."""

    _pools: ClassVar[dict[str, type]] = {"http": _HTTPPool, "https": _HTTPSPool}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if hasattr(manager, "pool_classes_by_scheme"):
            manager.pool_classes_by_scheme = self._pools
        return manager


class Cancelled(Exception):
    """Internal: the request was cancelled before any answer arrived."""
