"""The transport under :class:`~ollama_magic.client.Client`: where the server is, and how
requests get there.

- :func:`parse_host` and :func:`split_credentials` read a host as the official clients read
  ``OLLAMA_HOST``;
- :class:`Session` sends the user's headers and credentials, and keeps them from other hosts;
- :class:`Adapter` gives it connections that report reuse, and :class:`Cancellation` stops a
  request from another thread, even one blocked in a read.

requests and urllib3 cannot say whether a request went over a reused keep-alive connection,
nor hand out the socket of a request still waiting for its headers; the small subclasses of
urllib3's connections and pools here do.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import platform
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import requests
import requests.adapters
import requests.cookies
import urllib3
import urllib3.connection

from ollama_magic._version import __version__
from ollama_magic.errors import OllamaError
from ollama_magic.options import check_headers, mask_host

__all__ = [
    "DEFAULT_HOST",
    "Adapter",
    "Binding",
    "Cancellation",
    "Cancelled",
    "Session",
    "bind",
    "parse_host",
    "split_credentials",
]

# -- hosts -------------------------------------------------------------------------------------

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434


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
    :class:`~ollama_magic.client.Client`. They are never part of the host shown in messages.

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


# -- cancellation and connections -------------------------------------------------------------


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
        self._event = threading.Event()
        self.cancelled = False

    def cancel(self) -> None:
        """Stop the request now (a no-op once its answer is complete)."""
        with self._lock:
            self.cancelled = True
            self._event.set()
            if self._socket is not None:
                _shutdown(self._socket)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking at once on :meth:`cancel`; whether it was called."""
        return self._event.wait(seconds)

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
def bind(cancel: Cancellation | None) -> Iterator[Binding]:
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


# -- the session --------------------------------------------------------------------------------


#: The variables besides *_proxy that requests reads for a request (certificates to trust).
_CA_VARIABLES = frozenset({"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"})


class Session(requests.Session):
    """The session of one client: its headers and credentials, over :class:`Adapter`.

    Credentials, first found first: an ``Authorization`` header in ``headers``; the host's
    ``user:password@`` (``userinfo``), as HTTP Basic, as browsers and curl send it; then
    ``Bearer $OLLAMA_API_KEY``.

    requests drops only ``Authorization`` when a redirect leaves the host; a proxy's
    ``X-Api-Key`` (or any header the user configured) would follow a 307 elsewhere, body and
    all. Here every such header is dropped whenever requests would drop ``Authorization``.

    Raises:
        OllamaError: A header's value holds a line break (the header is named, never shown).
    """

    def __init__(self, headers: Mapping[str, str], *, userinfo: str | None = None) -> None:
        super().__init__()
        try:
            given = check_headers(headers)
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
        self._private = set(merged)  # the user's: kept from other hosts
        self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._prepared: dict[tuple[str, str], requests.PreparedRequest] = {}
        for prefix in ("http://", "https://"):
            # A batch keeps up to 64 requests in flight per server; with requests' default
            # of 10 pooled connections the rest would be closed after each answer (and
            # urllib3 would log a warning into the notebook for each).
            self.mount(prefix, Adapter(pool_maxsize=64))
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
        self.headers.update(merged)

    def send_once(
        self, method: str, url: str, *, data: Any, stream: bool, timeout: Any
    ) -> requests.Response:
        """``Session.request`` without the work a client of one server repeats for nothing.

        The request is prepared once per method and URL (headers, credentials, a .netrc
        entry) and sent with the adapter, as ``Session.send`` would; a redirect is followed
        as ``Session.send`` follows it (private headers kept from other hosts), and once a
        proxy sets a cookie, requests go the full way so that it is sent back. It saves about
        a third of a small request's CPU, which a batch of thousands feels.
        """
        if self.cookies:
            return self.request(method, url, data=data, stream=stream, timeout=timeout)
        key = (method, url)
        template = self._prepared.get(key)
        if template is None:
            template = self.prepare_request(requests.Request(method, url))
            self._prepared[key] = template
        prepared = template.copy()
        prepared.prepare_body(data, None)
        settings = self.merge_environment_settings(url, {}, stream, None, None)
        response = self.get_adapter(url).send(prepared, timeout=timeout, **settings)
        if not stream:
            response.content  # noqa: B018  # read now, as Session.send does: its errors are the call's
        if "set-cookie" in response.headers:
            requests.cookies.extract_cookies_to_jar(self.cookies, prepared, response.raw)
        if response.is_redirect:
            # Followed as Session.send does (rebuild_auth drops private headers per hop).
            hops = list(self.resolve_redirects(response, prepared, timeout=timeout, **settings))
            if hops:
                *history, response = [response, *hops]
                response.history = history
        return response

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        """requests' proxy and CA settings from the environment, worked out again only when
        the variables they come from change.

        requests scans and parses the environment twice per request (proxies and their
        bypass list): about as much CPU as the rest of a small request, and a batch sends
        thousands. Reading the few variables that matter is a fraction of that, and a
        ``%env HTTPS_PROXY=…`` or ``NO_PROXY`` set later still applies to the next request.
        """
        given = url.decode() if isinstance(url, bytes) else url or ""
        parts = urllib.parse.urlsplit(given)
        environment = tuple(
            (name, value)
            for name, value in os.environ.items()
            if name[-6:].lower() == "_proxy" or name in _CA_VARIABLES
        )
        key = (parts.scheme, parts.netloc, repr(proxies), stream, verify, cert, environment)
        settings = self._environment.get(key)
        if settings is None:
            settings = super().merge_environment_settings(given, proxies, stream, verify, cert)
            if len(self._environment) > 64:  # the environment changed many times: start over
                self._environment.clear()
            self._environment[key] = settings
        return dict(settings)

    def rebuild_auth(self, prepared_request: Any, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if response.request.url and self.should_strip_auth(
            response.request.url, prepared_request.url
        ):
            for name in list(prepared_request.headers):
                if name.lower() in self._private:
                    del prepared_request.headers[name]

    def drop_idle_connections(self) -> None:
        """Forget idle pooled connections, so that the next request opens a new one.

        ``PoolManager.clear`` closes only connections waiting in the pools; a stream another
        thread is reading keeps its own.
        """
        for adapter in self.adapters.values():
            poolmanager = getattr(adapter, "poolmanager", None)
            if poolmanager is not None:
                poolmanager.clear()
