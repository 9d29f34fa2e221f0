"""What a stand-in server knows and remembers: models, replies, faults, slots, request log.

`FakeOllama` configures one `ServerState`; the request handlers read and change it. Every method
takes the state's lock, because each connection is served by its own thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from ollama_magic.testing.catalog import (
    ModelName,
    ModelSpec,
    default_models,
    default_remote_models,
    parse_model_name,
)
from ollama_magic.testing.compat import answer_fault
from ollama_magic.testing.layers import layers_for
from ollama_magic.testing.records import RecordedRequest
from ollama_magic.testing.replies import Fault, Reply, ReplyRule
from ollama_magic.testing.slots import DEFAULT_MAX_QUEUE, Slots
from ollama_magic.testing.wire import ApiError, rfc3339nano

logger = logging.getLogger("ollama_magic.testing")

DEFAULT_KEEP_ALIVE_NS = 5 * 60 * 1_000_000_000  # OLLAMA_KEEP_ALIVE default: 5m
DEFAULT_NUM_CTX = 4096
STREAM_FAULT_PATHS = ("/api/generate", "/api/chat")


@dataclass
class FaultRule:
    """An injected fault and which requests it applies to."""

    fault: Fault
    model_key: str | None
    endpoint: str | None
    remaining: int | None


@dataclass
class Blob:
    """A blob the server holds: uploaded to /api/blobs, or written by /api/create."""

    size: int
    gguf: bool = False  # starts with the GGUF magic number


@dataclass
class _Loaded:
    """A loaded model as /api/ps lists it."""

    spec: ModelSpec
    expires_ns: int
    context_length: int


class ServerState:
    """The models, replies, faults and requests of one stand-in server.

    Args:
        token_delay: seconds before each generated token (the server's own pace).
        pull_seconds: about how long a pull of a missing model takes.
        compat: "ollama" or "adapter" (already checked).
        parallel: at most this many answers and embeddings at once (None: no limit).
        answer_delay: seconds of prompt evaluation before each answer's first token.
        max_queue: at most this many requests waiting for a slot.
    """

    def __init__(
        self,
        *,
        token_delay: float,
        pull_seconds: float,
        compat: str,
        parallel: int | None = None,
        answer_delay: float = 0.0,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.token_delay = token_delay
        self.pull_seconds = pull_seconds
        self.compat = compat
        self.parallel = parallel
        self.answer_delay = answer_delay
        self.answer_overhead = 0.0
        """Seconds the stand-in itself spends on an answer after its fixed cost (a running
        average), taken off the next answers' delay so that the cost is what was asked for."""
        self.max_queue = max_queue
        self.lock = threading.RLock()
        # Set while the server stops: waits end early and handlers abandon their requests.
        self.stopping = threading.Event()
        self.slots = Slots(parallel, max_queue)
        self.reset()

    def open_slots(self) -> None:
        """Fresh slots for a serving run (a request left over from an earlier run, still
        finishing, hands its slot back to the old ones)."""
        self.slots = Slots(self.parallel, self.max_queue)

    def reset(self) -> None:
        """Back to a fresh server: default models, no replies or faults, empty request log."""
        with self.lock:
            self._models = {m.parsed.key: m for m in default_models()}
            self._remote = {m.parsed.key: m for m in default_remote_models()}
            self._replies: list[ReplyRule] = []
            self._faults: list[FaultRule] = []
            self._requests: list[RecordedRequest] = []
            self._loaded: dict[str, _Loaded] = {}
            self._blobs: dict[str, Blob] = {}
        self.slots.reset_peak()

    # -- configuration ---------------------------------------------------------------------

    def install(self, spec: ModelSpec) -> None:
        """Install *spec* locally (replacing a model of the same name)."""
        with self.lock:
            self._models[spec.parsed.key] = spec

    def add_remote(self, spec: ModelSpec) -> None:
        """Make *spec* available to /api/pull."""
        with self.lock:
            self._remote[spec.parsed.key] = spec

    def delete(self, name: ModelName) -> bool:
        """Uninstall (and unload) a model; False if it was not installed.

        Its blobs that no other model uses go too, as `Manifest.RemoveLayers` removes them
        (an uploaded blob a created model was made from included).
        """
        with self.lock:
            self._loaded.pop(name.key, None)
            spec = self._models.pop(name.key, None)
            if spec is None:
                return False
            in_use = {
                layer.digest for other in self._models.values() for layer in layers_for(other)
            }
            for layer in layers_for(spec):
                if layer.digest not in in_use:
                    self._blobs.pop(layer.digest, None)
            return True

    @property
    def models(self) -> list[ModelSpec]:
        """Installed models, most recently modified first (the order of /api/tags)."""
        with self.lock:
            specs = list(self._models.values())
        return sorted(specs, key=lambda s: s.modified_at, reverse=True)

    def add_reply(self, rule: ReplyRule) -> None:
        """Register an answer rule (the most recent matching one wins)."""
        with self.lock:
            self._replies.append(rule)

    def clear_replies(self) -> None:
        """Forget all registered replies."""
        with self.lock:
            self._replies.clear()

    def add_fault(self, rule: FaultRule) -> None:
        """Inject a fault (the earliest matching one applies)."""
        with self.lock:
            self._faults.append(rule)

    def clear_faults(self) -> None:
        """Remove all injected faults."""
        with self.lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, in arrival order (a copy of the list)."""
        with self.lock:
            return list(self._requests)

    # -- blobs ---------------------------------------------------------------------------

    def add_blob(self, digest: str, blob: Blob) -> None:
        """Hold *blob* under *digest* (`sha256:<hex>`)."""
        with self.lock:
            self._blobs[digest] = blob

    def blob(self, digest: str) -> Blob | None:
        """The uploaded or created blob *digest*, if held."""
        with self.lock:
            return self._blobs.get(digest)

    def has_blob(self, digest: str) -> bool:
        """Whether the server holds blob *digest*: uploaded, created, or a layer of an
        installed model."""
        with self.lock:
            if digest in self._blobs:
                return True
            models = list(self._models.values())
        return any(layer.digest == digest for spec in models for layer in layers_for(spec))

    @property
    def blobs(self) -> dict[str, int]:
        """Uploaded and created blobs: digest -> size in bytes."""
        with self.lock:
            return {digest: blob.size for digest, blob in self._blobs.items()}

    # -- used by the request handlers --------------------------------------------------------

    def record(self, record: RecordedRequest) -> None:
        """Append a request to the log."""
        with self.lock:
            self._requests.append(record)

    def lookup(self, name: ModelName) -> ModelSpec | None:
        """The installed model *name*, if any."""
        with self.lock:
            return self._models.get(name.key)

    def remote_lookup(self, name: ModelName) -> ModelSpec | None:
        """The pullable model *name*, if any."""
        with self.lock:
            return self._remote.get(name.key)

    def local_model(
        self, name: str, not_found: str | None = None, *, missing_status: int = 404
    ) -> ModelSpec:
        """The local model named *name*, or the server's 400 (bad name) / 404 (not there).

        Args:
            name: the model as the request names it.
            not_found: replaces the 404 text where the real server words it differently.
            missing_status: replaces the 404 itself (an adapter answers 200).
        """
        parsed = parse_model_name(name)
        if parsed is None:
            raise ApiError(400, "invalid model name")
        spec = self.lookup(parsed)
        if spec is None:
            raise ApiError(missing_status, not_found or f"model '{name}' not found")
        return spec

    def take_fault(self, path: str, model: str | None, *, http: bool) -> Fault | None:
        """Pop the first matching fault of the requested kind (counting down `times`)."""
        if not http and path not in STREAM_FAULT_PATHS:
            return None
        parsed = parse_model_name(model) if model else None
        key = parsed.key if parsed else None
        with self.lock:
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

    def answer_fault(self, fault: Fault | None) -> Fault:
        """The fault an answer gets: *fault* on top of this server's pace and mode."""
        return answer_fault(fault, token_delay=self.token_delay, compat=self.compat)

    def find_reply(self, record: RecordedRequest, spec: ModelSpec) -> Reply | None:
        """The registered answer for *record*, or None for the default answer."""
        with self.lock:
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

    def touch_loaded(self, spec: ModelSpec, keep_alive_ns: int | None, num_ctx: Any) -> None:
        """Record that *spec* is loaded, expiring after *keep_alive_ns* (0: unload now)."""
        if keep_alive_ns == 0:
            self.unload(spec)
            return
        keep = DEFAULT_KEEP_ALIVE_NS if keep_alive_ns is None else keep_alive_ns
        if isinstance(num_ctx, (int, float)) and not isinstance(num_ctx, bool) and num_ctx > 0:
            context = int(num_ctx)
        else:
            context = min(spec.context_length, DEFAULT_NUM_CTX)
        with self.lock:
            self._loaded[spec.parsed.key] = _Loaded(spec, time.time_ns() + keep, context)

    def unload(self, spec: ModelSpec) -> None:
        """Unload *spec* (no error if it was not loaded)."""
        with self.lock:
            self._loaded.pop(spec.parsed.key, None)

    def ps_entries(self) -> list[dict[str, Any]]:
        """The `models` of /api/ps: loaded and not expired, latest expiry first."""
        now = time.time_ns()
        with self.lock:
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
