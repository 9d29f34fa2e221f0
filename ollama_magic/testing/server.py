"""`FakeOllama`: a local stand-in for the Ollama HTTP API, with canned replies and faults."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from types import TracebackType
from typing import Any

from ollama_magic.testing.catalog import ModelName, ModelSpec, parse_model_name
from ollama_magic.testing.compat import OLLAMA, check_mode
from ollama_magic.testing.connection import FakeHTTPServer
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.replies import Fault, Reply, ReplyCallable, ReplyRule
from ollama_magic.testing.routes import ROUTES_BY_COMPAT
from ollama_magic.testing.slots import DEFAULT_MAX_QUEUE
from ollama_magic.testing.state import FaultRule, ServerState

__all__ = ["HOST", "FakeOllama", "RecordedRequest", "port_is_free"]

HOST = "127.0.0.1"


class FakeOllama:
    """A stand-in Ollama server on 127.0.0.1, for tests and offline notebooks.

    Use it as a context manager (or call `start()` / `stop()`):

        with FakeOllama() as server:
            server.add_reply("capital of France", "Paris.")
            ...  # point a client at server.url

    By default it answers instantly, as tests want. `token_delay` and `pull_seconds` give it the
    pace of a real server (the command line does: about 25 tokens/s, two-second pulls), so
    streaming and progress can be watched; faults injected later apply on top of that pace.
    `parallel`, `answer_delay` and `max_queue` give it a real server's scheduling: a fixed cost
    per answer, a limit on requests in progress, and a bounded line of requests waiting.

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
        parallel: like `OLLAMA_NUM_PARALLEL`: at most this many /api/generate, /api/chat,
            /api/embed and /api/embeddings requests are worked on at once; the others wait
            for a slot in arrival order (None: no limit, nothing waits). Load and unload
            requests (no prompt) take no slot.
        answer_delay: seconds each /api/generate and /api/chat answer (streamed or not) takes
            from getting its slot to its first token, as prompt evaluation does (the
            stand-in's own work counts in it); 0.05 is a fixed 50 ms per answer, on top of
            `token_delay`. Not for load or unload requests.
        max_queue: like `OLLAMA_MAX_QUEUE`: a request that arrives while this many wait for a
            slot gets 503 `server busy, please try again.  maximum pending requests exceeded`
            (only with *parallel*).

    Raises:
        ValueError: for a negative delay or duration, an unknown *compat*, a *parallel* below
            1, or a negative *max_queue*.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        token_delay: float = 0.0,
        pull_seconds: float = 0.0,
        compat: str = OLLAMA,
        parallel: int | None = None,
        answer_delay: float = 0.0,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        if token_delay < 0 or pull_seconds < 0 or answer_delay < 0:
            raise ValueError("token_delay, pull_seconds and answer_delay must not be negative")
        if parallel is not None and parallel < 1:
            raise ValueError(f"parallel must be at least 1 (or None for no limit), not {parallel}")
        if max_queue < 0:
            raise ValueError(f"max_queue must not be negative, not {max_queue}")
        self._port = port
        self._state = ServerState(
            token_delay=float(token_delay),
            pull_seconds=float(pull_seconds),
            compat=check_mode(compat),
            parallel=parallel,
            answer_delay=float(answer_delay),
            max_queue=max_queue,
        )
        self._httpd: FakeHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeOllama:
        """Start serving in a daemon thread; returns self.

        Raises:
            OSError: if the port is already in use.
        """
        if self._httpd is not None:
            return self
        state = self._state
        state.stopping.clear()
        state.open_slots()
        self._httpd = FakeHTTPServer((HOST, self._port), state, ROUTES_BY_COMPAT[state.compat])
        self._thread = threading.Thread(
            target=self._httpd.serve_until,
            args=(state.stopping,),
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
        self._state.stopping.set()  # interrupts token delays and ends streams
        self._state.slots.close()  # and sends requests waiting for a slot away
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
        return self._state.token_delay

    @property
    def pull_seconds(self) -> float:
        """About how long a pull takes (0: instant)."""
        return self._state.pull_seconds

    @property
    def parallel(self) -> int | None:
        """At most this many answers and embeddings at once (None: no limit)."""
        return self._state.parallel

    @property
    def answer_delay(self) -> float:
        """Seconds each answer takes before its first token (0: none)."""
        return self._state.answer_delay

    @property
    def max_queue(self) -> int:
        """At most this many requests wait for a slot; one more gets 503."""
        return self._state.max_queue

    @property
    def peak_running(self) -> int:
        """The most answers and embeddings that were in progress at once, since `start()` or
        `reset()`."""
        return self._state.slots.peak

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return self._state.slots.waiting

    @property
    def compat(self) -> str:
        """The mode: "ollama" (the real server) or "adapter" (an "Ollama-compatible" proxy)."""
        return self._state.compat

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
        self._state.install(spec)
        return spec

    def remove_model(self, name: str) -> None:
        """Uninstall a model (no error if it is not installed)."""
        self._state.delete(_parse_or_raise(name))

    def add_remote_model(self, name: str | ModelSpec, **details: Any) -> ModelSpec:
        """Make a model available to `/api/pull` (same arguments as `add_model`)."""
        spec = name if isinstance(name, ModelSpec) else ModelSpec(name=name, **details)
        self._state.add_remote(spec)
        return spec

    @property
    def models(self) -> list[ModelSpec]:
        """Installed models, most recently modified first (the order of /api/tags)."""
        return self._state.models

    # -- blobs -----------------------------------------------------------------------------

    @property
    def blobs(self) -> dict[str, int]:
        """Blobs uploaded to /api/blobs or written by /api/create: digest -> size in bytes.

        Only digests and sizes are kept, never the contents. Deleting a model drops the blobs
        no other model uses, as the real server does.
        """
        return self._state.blobs

    def has_blob(self, digest: str) -> bool:
        """Whether `HEAD /api/blobs/<digest>` would answer 200: an uploaded or created blob,
        or a layer of an installed model.

        Raises:
            ValueError: for a digest that is not `sha256:<64 hex digits>`.
        """
        if not re.match(r"^sha256[:-][0-9a-fA-F]{64}$", digest):
            raise ValueError(f"invalid digest: {digest!r}")
        return self._state.has_blob("sha256:" + digest[7:])

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
        self._state.add_reply(rule)

    def clear_replies(self) -> None:
        """Forget all registered replies (default answers remain)."""
        self._state.clear_replies()

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
        self._state.add_fault(FaultRule(fault, _key_or_none(model), endpoint, times))

    def clear_faults(self) -> None:
        """Remove all injected faults."""
        self._state.clear_faults()

    def reset(self) -> None:
        """Back to a fresh server: default models, no blobs, replies or faults, empty request
        log, `peak_running` counted afresh."""
        self._state.reset()

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, in arrival order (a copy of the list)."""
        return self._state.requests

    def last_request(self, path: str | None = None) -> RecordedRequest | None:
        """The most recent request (optionally the most recent one for *path*)."""
        for record in reversed(self._state.requests):
            if path is None or record.path == path:
                return record
        return None

    def loaded_models(self) -> list[str]:
        """Names of the models /api/ps would list now."""
        return [entry["name"] for entry in self._state.ps_entries()]


def _parse_or_raise(name: str) -> ModelName:
    """The parsed model *name*; a ValueError for the caller's mistake otherwise."""
    parsed = parse_model_name(name)
    if parsed is None:
        raise ValueError(f"invalid model name: {name!r}")
    return parsed


def _key_or_none(name: str | None) -> str | None:
    """The lookup key of an optional model filter."""
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
