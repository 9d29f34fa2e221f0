"""`FakeOllama`: a local stand-in for the Ollama HTTP API, with canned replies and faults."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ollama_magic.testing import compat as compat_modes
from ollama_magic.testing.catalog import (
    ModelName,
    ModelSpec,
    default_models,
    default_remote_models,
    parse_model_name,
)
from ollama_magic.testing.headers import Headers
from ollama_magic.testing.replies import Fault, Reply, ReplyCallable, ReplyRule
from ollama_magic.testing.wire import ApiError, rfc3339nano

logger = logging.getLogger("ollama_magic.testing")

HOST = "127.0.0.1"
DEFAULT_KEEP_ALIVE_NS = 5 * 60 * 1_000_000_000  # OLLAMA_KEEP_ALIVE default: 5m
DEFAULT_NUM_CTX = 4096


@dataclass
class RecordedRequest:
    """One request the stand-in received, and what became of it.

    Attributes:
        method: HTTP method.
        path: URL path without the query string.
        headers: request headers; names match whatever their case (`headers["Authorization"]`
            finds an `authorization` header), and iterate as the client spelled them.
        body: the parsed JSON body, or None if it was empty or not JSON.
        raw_body: the body bytes as received.
        status: the response status once known (0 while unknown, or if the connection was reset).
        chunks_sent: NDJSON lines written so far.
        client_disconnected: the client went away before the response was complete.
        finished: set when the server is done with the request, whatever the outcome.
    """

    method: str
    path: str
    headers: Headers
    body: Any
    raw_body: bytes
    status: int = 0
    chunks_sent: int = 0
    client_disconnected: bool = False
    finished: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):  # a plain dict from hand-made records
            self.headers = Headers(self.headers)

    @property
    def model(self) -> str | None:
        """The model named in the body (`model`, or the legacy `name`), if any."""
        if not isinstance(self.body, Mapping):
            return None
        value = self.body.get("model") or self.body.get("name")
        return value if isinstance(value, str) else None

    @property
    def prompt(self) -> str:
        """The text replies are matched against.

        For /api/generate the `prompt`; for /api/chat the content of the last message (the
        user's question, or a tool result after a tool call).
        """
        if not isinstance(self.body, Mapping):
            return ""
        messages = self.body.get("messages")
        if isinstance(messages, list):
            last = messages[-1] if messages else None
            content = last.get("content") if isinstance(last, Mapping) else None
            return content if isinstance(content, str) else ""
        prompt = self.body.get("prompt")
        return prompt if isinstance(prompt, str) else ""


@dataclass
class _FaultRule:
    fault: Fault
    model_key: str | None
    endpoint: str | None
    remaining: int | None


@dataclass
class _Loaded:
    spec: ModelSpec
    expires_ns: int
    context_length: int


STREAM_FAULT_PATHS = ("/api/generate", "/api/chat")


class FakeOllama:
    """A stand-in Ollama server on 127.0.0.1, for tests and offline notebooks.

    Use it as a context manager (or call `start()` / `stop()`):

        with FakeOllama() as server:
            server.add_reply("capital of France", "Paris.")
            ...  # point a client at server.url

    By default it answers instantly, as tests want. `token_delay` and `pull_seconds` give it the
    pace of a real server (the command line does: about 25 tokens/s, two-second pulls), so
    streaming and progress can be watched; faults injected later apply on top of that pace.

    Args:
        port: TCP port to listen on; 0 picks a free one.
        token_delay: seconds to wait before each generated token (thinking, text or tool call),
            streamed or not; 0.04 is about 25 tokens/s. An injected `Fault(delay=...)` adds to it.
        pull_seconds: about how long a streamed `/api/pull` of a model not yet installed takes,
            its progress lines spread over that time (a `stream: false` pull waits as long
            before answering); the model is installed when the pull completes.
        compat: "ollama" (the real server) or "adapter", to imitate an "Ollama-compatible"
            proxy in front of another engine: `HEAD /` answers 405 and `/api/version` 404; a
            missing model on /api/generate and /api/chat is HTTP 200 with one NDJSON line
            `{"error": "model 'NAME' not found"}`; answers carry `Fault(stats="words")` and
            `Fault(drop=("logprobs", "thinking", "done_reason"))` (an injected fault's own
            `stats` wins, its `drop` adds to these).

    Raises:
        ValueError: for a negative delay or duration, or an unknown *compat*.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        token_delay: float = 0.0,
        pull_seconds: float = 0.0,
        compat: str = compat_modes.OLLAMA,
    ) -> None:
        if token_delay < 0 or pull_seconds < 0:
            raise ValueError("token_delay and pull_seconds must not be negative")
        self._port = port
        self._token_delay = float(token_delay)
        self._pull_seconds = float(pull_seconds)
        self._compat = compat_modes.check_mode(compat)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: Any = None
        self._thread: threading.Thread | None = None
        self._reset_state()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOllama:
        """Start serving in a daemon thread; returns self.

        Raises:
            OSError: if the port is already in use.
        """
        from ollama_magic.testing.handler import FakeHTTPServer

        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = FakeHTTPServer((HOST, self._port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_until,
            args=(self._stopping,),
            name=f"FakeOllama:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and cut in-flight connections, so nothing hangs.

        Args:
            timeout: how long to wait for request threads to notice.
        """
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()  # interrupts token delays and ends streams
        # Wake the accept loop; it sees the event and exits.
        with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1.0):
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        httpd.server_close()
        httpd.close_connections()
        deadline = time.monotonic() + timeout
        for record in self.requests:
            record.finished.wait(max(0.0, deadline - time.monotonic()))
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The port the server listens on (the requested port before `start()`)."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        return self._port

    @property
    def token_delay(self) -> float:
        """Seconds waited before each generated token (0: instant)."""
        return self._token_delay

    @property
    def pull_seconds(self) -> float:
        """About how long a pull takes (0: instant)."""
        return self._pull_seconds

    @property
    def compat(self) -> str:
        """The mode: "ollama" (the real server) or "adapter" (an "Ollama-compatible" proxy)."""
        return self._compat

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321`.

        Raises:
            RuntimeError: before `start()`.
        """
        if self._httpd is None:
            raise RuntimeError("FakeOllama is not started")
        return f"http://{HOST}:{self.port}"

    # -- models ----------------------------------------------------------------------------

    def add_model(self, name: str | ModelSpec, **details: Any) -> ModelSpec:
        """Install a model (replacing one of the same name).

        Args:
            name: e.g. "mymodel" (meaning "mymodel:latest") or a ready ModelSpec.
            **details: ModelSpec fields: capabilities, family, parameter_size,
                quantization_level, size, digest, modified_at, context_length,
                embedding_length, template, system, license, parameters.

        Returns:
            The installed ModelSpec.
        """
        spec = name if isinstance(name, ModelSpec) else ModelSpec(name=name, **details)
        with self._lock:
            self._models[spec.parsed.key] = spec
        return spec

    def remove_model(self, name: str) -> None:
        """Uninstall a model (no error if it is not installed)."""
        parsed = _parse_or_raise(name)
        with self._lock:
            self._models.pop(parsed.key, None)
            self._loaded.pop(parsed.key, None)

    def add_remote_model(self, name: str | ModelSpec, **details: Any) -> ModelSpec:
        """Make a model available to `/api/pull` (same arguments as `add_model`)."""
        spec = name if isinstance(name, ModelSpec) else ModelSpec(name=name, **details)
        with self._lock:
            self._remote[spec.parsed.key] = spec
        return spec

    @property
    def models(self) -> list[ModelSpec]:
        """Installed models, most recently modified first (the order of /api/tags)."""
        with self._lock:
            specs = list(self._models.values())
        return sorted(specs, key=lambda s: s.modified_at, reverse=True)

    # -- replies and faults ----------------------------------------------------------------

    def add_reply(
        self,
        pattern: str | re.Pattern[str] | ReplyCallable,
        reply: str | Reply | None = None,
        model: str | None = None,
    ) -> None:
        """Register an answer. The most recently added matching rule wins.

        Args:
            pattern: a regular expression searched (`re.search`) in the prompt (generate) or
                the last message (chat); or a callable taking the RecordedRequest and returning
                a str, a Reply, or None to fall through to other rules.
            reply: the answer (text or Reply) for a pattern; not used with a callable.
            model: only for this model (None: any model).
        """
        if callable(pattern) and not isinstance(pattern, (str, re.Pattern)):
            if reply is not None:
                raise TypeError("a callable computes the reply; do not pass one as well")
            rule = ReplyRule(matcher=pattern, model_key=_key_or_none(model))
        else:
            if reply is None:
                raise TypeError("add_reply(pattern, reply): the reply is missing")
            answer = Reply(text=reply) if isinstance(reply, str) else reply
            compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
            rule = ReplyRule(matcher=compiled, reply=answer, model_key=_key_or_none(model))
        with self._lock:
            self._replies.append(rule)

    def clear_replies(self) -> None:
        """Forget all registered replies (default answers remain)."""
        with self._lock:
            self._replies.clear()

    def inject(
        self,
        fault: Fault,
        model: str | None = None,
        endpoint: str | None = None,
        times: int | None = None,
    ) -> None:
        """Make matching requests fail in the way *fault* describes.

        Faults with a `status` apply to any endpoint they match, before the request is
        validated; the others apply to /api/generate and /api/chat answers. When several
        faults match, the earliest injected one applies.

        Args:
            fault: what goes wrong.
            model: only requests for this model (None: any).
            endpoint: only this path, e.g. "/api/chat" (None: any).
            times: apply to the next N matching requests, then expire (None: until cleared).
        """
        if endpoint is not None and not endpoint.startswith("/"):
            raise ValueError(f"endpoint must be a path like '/api/chat', not {endpoint!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults.append(_FaultRule(fault, _key_or_none(model), endpoint, times))

    def clear_faults(self) -> None:
        """Remove all injected faults."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Back to a fresh server: default models, no replies or faults, empty request log."""
        with self._lock:
            self._reset_state()

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._requests)

    def last_request(self, path: str | None = None) -> RecordedRequest | None:
        """The most recent request (optionally the most recent one for *path*)."""
        with self._lock:
            for record in reversed(self._requests):
                if path is None or record.path == path:
                    return record
        return None

    def loaded_models(self) -> list[str]:
        """Names of the models /api/ps would list now."""
        return [entry["name"] for entry in self._ps_entries()]

    # -- used by the request handler -------------------------------------------------------

    def _reset_state(self) -> None:
        self._models: dict[str, ModelSpec] = {m.parsed.key: m for m in default_models()}
        self._remote: dict[str, ModelSpec] = {m.parsed.key: m for m in default_remote_models()}
        self._replies: list[ReplyRule] = []
        self._faults: list[_FaultRule] = []
        self._requests: list[RecordedRequest] = []
        self._loaded: dict[str, _Loaded] = {}

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _lookup(self, name: ModelName) -> ModelSpec | None:
        with self._lock:
            return self._models.get(name.key)

    def _remote_lookup(self, name: ModelName) -> ModelSpec | None:
        with self._lock:
            return self._remote.get(name.key)

    def _install(self, spec: ModelSpec) -> None:
        with self._lock:
            self._models[spec.parsed.key] = spec

    def _delete(self, name: ModelName) -> bool:
        with self._lock:
            self._loaded.pop(name.key, None)
            return self._models.pop(name.key, None) is not None

    def _take_fault(self, path: str, model: str | None, *, http: bool) -> Fault | None:
        """Pop the first matching fault of the requested kind (counting down `times`)."""
        if not http and path not in STREAM_FAULT_PATHS:
            return None
        parsed = parse_model_name(model) if model else None
        key = parsed.key if parsed else None
        with self._lock:
            for rule in self._faults:
                if rule.fault.is_http_error != http:
                    continue
                if rule.endpoint is not None and rule.endpoint != path:
                    continue
                if rule.model_key is not None and rule.model_key != key:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._faults.remove(rule)
                return rule.fault
        return None

    def _answer_fault(self, fault: Fault | None) -> Fault:
        """The fault an answer gets: *fault* on top of this server's pace and mode."""
        return compat_modes.answer_fault(fault, token_delay=self._token_delay, compat=self._compat)

    def _find_reply(self, record: RecordedRequest, spec: ModelSpec) -> Reply | None:
        """The registered answer for *record*, or None for the default answer."""
        with self._lock:
            rules = list(reversed(self._replies))
        text = record.prompt
        key = spec.parsed.key
        for rule in rules:
            if rule.model_key is not None and rule.model_key != key:
                continue
            if isinstance(rule.matcher, re.Pattern):
                if rule.matcher.search(text):
                    return rule.reply
                continue
            try:
                result = rule.matcher(record)
            except Exception as exc:  # a test's callback failing should show up as an error
                logger.exception("reply callable failed")
                raise ApiError(500, f"reply callable failed: {exc!r}") from exc
            if result is None:
                continue
            return Reply(text=result) if isinstance(result, str) else result
        return None

    def _touch_loaded(self, spec: ModelSpec, keep_alive_ns: int | None, num_ctx: Any) -> None:
        """Record that *spec* is loaded, expiring after *keep_alive_ns* (0: unload now)."""
        key = spec.parsed.key
        if keep_alive_ns == 0:
            self._unload(spec)
            return
        keep = DEFAULT_KEEP_ALIVE_NS if keep_alive_ns is None else keep_alive_ns
        if isinstance(num_ctx, (int, float)) and not isinstance(num_ctx, bool) and num_ctx > 0:
            context = int(num_ctx)
        else:
            context = min(spec.context_length, DEFAULT_NUM_CTX)
        with self._lock:
            self._loaded[key] = _Loaded(spec, time.time_ns() + keep, context)

    def _unload(self, spec: ModelSpec) -> None:
        with self._lock:
            self._loaded.pop(spec.parsed.key, None)

    def _ps_entries(self) -> list[dict[str, Any]]:
        now = time.time_ns()
        with self._lock:
            loaded = [entry for entry in self._loaded.values() if entry.expires_ns > now]
        loaded.sort(key=lambda entry: entry.expires_ns, reverse=True)
        return [
            {
                "name": entry.spec.name,
                "model": entry.spec.name,
                "size": entry.spec.size,
                "digest": entry.spec.digest,
                "details": entry.spec.details(),
                "expires_at": rfc3339nano(entry.expires_ns),
                "size_vram": entry.spec.size,
                "context_length": entry.context_length,
            }
            for entry in loaded
        ]


def _parse_or_raise(name: str) -> ModelName:
    parsed = parse_model_name(name)
    if parsed is None:
        raise ValueError(f"invalid model name: {name!r}")
    return parsed


def _key_or_none(name: str | None) -> str | None:
    return None if name is None else _parse_or_raise(name).key


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:*port* (and we may bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True
