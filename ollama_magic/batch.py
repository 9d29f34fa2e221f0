"""Running many requests at server speed: bounded concurrency over one or more servers.

The engine knows nothing of prompts or DataFrames: it runs ``send(position, client, stop)``
for each position, ``concurrency`` at a time on every server, and keeps what each returned or
the error it raised. Rows are handed out from one queue, so a slower server simply takes
fewer; a server that goes away has its row put back for the others. The caller's thread only
waits and repaints the progress a few times a second, so Ctrl-C reaches it at once.

>>> from ollama_magic.client import Client
>>> run = run_batch([0, 1, 2], lambda i, client, stop: i * 10, [Client("http://127.0.0.1:9")])
>>> run.results, run.status.done
({0: 0, 1: 10, 2: 20}, 3)
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from ollama_magic.client import Client
from ollama_magic.errors import (
    ModelNotFound,
    NotOllama,
    OllamaError,
    ServerError,
    ServerUnreachable,
    Unauthorized,
)
from ollama_magic.transport import Cancellation

__all__ = [
    "SERVER_FAULTS",
    "BatchProgress",
    "BatchRun",
    "BatchStatus",
    "HostStatus",
    "busy",
    "default_concurrency",
    "run_batch",
]

R = TypeVar("R")

#: The first few answers shown under the progress bar while the rest run.
PREVIEW_ROWS = 3


def default_concurrency() -> int:
    """Requests in flight per server when none is configured.

    Ollama does not report its parallelism over the API; when it runs beside the kernel, its
    ``OLLAMA_NUM_PARALLEL`` is usually in the environment. Else 4: enough to keep a server
    with the common settings busy, few enough not to fill a single-slot server's queue.
    """
    import os

    try:
        value = int(os.environ.get("OLLAMA_NUM_PARALLEL", ""))
    except ValueError:
        return 4
    return value if value > 0 else 4


@dataclass
class HostStatus:
    """One server's share of a batch."""

    host: str
    done: int = 0
    failed: int = 0
    requeued: int = 0
    """Rows it was given but could not answer, handed to the other servers."""
    down: str = ""
    """Why it left the batch ("" while it serves)."""
    failing: int = 0
    """Rows it failed in a row (since its last answer)."""


@dataclass
class BatchStatus:
    """Where a batch is: what the progress bar and the summary show."""

    total: int
    done: int = 0
    """Rows answered."""
    failed: int = 0
    """Rows whose request failed (kept with their error)."""
    elapsed: float = 0.0
    state: Literal["running", "finished", "interrupted", "failed"] = "running"
    hosts: list[HostStatus] = field(default_factory=list)
    preview: list[tuple[str, str]] = field(default_factory=list)
    """(label, answer) of the first rows answered."""
    skipped: int = 0
    """Rows already answered by an earlier run (a resume), not sent again."""
    unit: str = "rows"

    @property
    def finished(self) -> int:
        """Rows answered or failed."""
        return self.done + self.failed

    @property
    def left(self) -> int:
        """Rows not (yet) answered or failed."""
        return self.total - self.finished

    @property
    def rate(self) -> float | None:
        """Rows finished per second by this run (None before the first): rows answered
        before a resume took no time."""
        sent = self.finished - self.skipped
        return sent / self.elapsed if sent > 0 and self.elapsed > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds until the last row, at the rate so far."""
        rate = self.rate
        return self.left / rate if rate else None


class BatchProgress:
    """Shows a batch as it runs. This base shows nothing (``--quiet``)."""

    def update(self, status: BatchStatus) -> None:
        """The batch moved on (called a few times a second from the caller's thread)."""

    def finish(self, status: BatchStatus) -> None:
        """The batch is over: show its final state (finished, interrupted or failed)."""


@dataclass
class BatchRun(Generic[R]):
    """What came of a batch: results and errors by position, and what is left."""

    status: BatchStatus
    results: dict[int, R] = field(default_factory=dict)
    errors: dict[int, BaseException] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)
    """Positions never answered: the batch was interrupted, or every server went away."""
    interruption: KeyboardInterrupt | None = field(default=None, repr=False)
    error: OllamaError | None = None
    """Why the batch stopped early (every server went away), if it did."""


def _dropped(error: BaseException) -> bool:
    """A connection that broke while the server stayed up."""
    return isinstance(error, OllamaError) and error.lost_connection


def busy(error: BaseException) -> bool:
    """HTTP 503 (Ollama's queue is full, or a proxy's backend is busy): the row waits and goes
    again, to this server or another."""
    return isinstance(error, ServerError) and error.status_code == 503


#: Times in a row a server may answer 503 before its rows count as failed (about a minute of
#: waiting, doubling up to 2 s): a proxy that always answers 503 must not stall the batch.
MAX_BUSY = 30

#: Errors that say more about the server than about the row: with other servers in the batch,
#: the row goes to one of them, and a server that fails this many rows in a row leaves (else
#: a server that fails fast would take most of the rows, failing each).
SERVER_FAULTS = (ServerError, Unauthorized, NotOllama, ModelNotFound)
MAX_SERVER_FAULTS = 3


class _Runner(Generic[R]):
    """The shared state of one batch: the queue, the results, the servers' shares."""

    def __init__(
        self,
        positions: Sequence[int],
        send: Callable[[int, Client, Cancellation], R],
        clients: Sequence[Client],
        preview: Callable[[int, R], tuple[str, str] | None] | None,
        status: BatchStatus,
        size: Callable[[int], int],
        fail_fast: bool,
    ) -> None:
        self.positions = list(positions)
        self.queue = collections.deque(positions)
        self.tried: dict[int, set[int]] = {}
        """Per row, the servers whose failure sent it on to another (by id of the status)."""
        self.dropped: set[int] = set()
        """Rows whose connection broke while the server that answered them stayed up."""
        self.size = size
        self.send = send
        self.preview = preview
        self.status = status
        self.run: BatchRun[R] = BatchRun(status)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        """Notified when a row goes back in the queue or one in flight ends: an idle worker
        waits for that rather than leave while another server's rows may still come back."""
        self.ended = threading.Event()
        """Set when the last worker returned (the main thread waits on it, not on each row:
        a wake-up per row would cost the kernel more than the row's own bookkeeping)."""
        self.working = 0
        self.stopping = threading.Event()
        self.in_flight: dict[int, Cancellation] = {}
        self.hosts = {id(client): HostStatus(client.host) for client in clients}
        status.hosts = list(self.hosts.values())
        self.last_host_error: OllamaError | None = None
        self.fail_fast = fail_fast
        self.halted = False
        """A row failed and the batch fails fast: no more rows are handed out."""

    def take(self, host: HostStatus) -> tuple[int, Cancellation] | None:
        """The next position for a worker of ``host``, registered as in flight (None: stop)."""
        with self.lock:
            while not self.queue:
                if not self.in_flight or self.stopping.is_set():
                    return None  # all done (or stopping)
                self.changed.wait()
            if self.stopping.is_set() or self.halted or host.down:
                return None
            position = self.queue.popleft()
            # Registered here, under the lock stop() takes: no row starts unseen by a stop.
            stop = self.in_flight[position] = Cancellation()
            return position, stop

    def worker(self, client: Client) -> None:
        try:
            self._work(client)
        finally:
            with self.lock:
                self.working -= 1
                if not self.working:
                    self.ended.set()

    def _work(self, client: Client) -> None:
        host = self.hosts[id(client)]
        busy_waits = 0
        while (taken := self.take(host)) is not None:
            position, stop = taken
            try:
                value = self.send(position, client, stop)
            except Exception as error:
                waits = busy(error) and busy_waits < MAX_BUSY
                # A lost connection: is the server gone, or did only this answer break?
                gone = _dropped(error)
                if gone and not isinstance(error, ServerUnreachable) and not stop.cancelled:
                    gone = not client.is_running()
                self._failed(position, host, error, stop, waits=waits, gone=gone)
                if waits:
                    busy_waits += 1
                    # The server's queue is full: wait (longer each time), then go on.
                    self.stopping.wait(min(2.0, 0.05 * 2**busy_waits) * random.uniform(0.5, 1))
            else:
                busy_waits = 0
                self._answered(position, host, value)
            finally:
                with self.lock:
                    self.in_flight.pop(position, None)
                    self.changed.notify_all()

    def _answered(self, position: int, host: HostStatus, value: R) -> None:
        shown = None
        if self.preview is not None and len(self.status.preview) < PREVIEW_ROWS:
            shown = self.preview(position, value)
        weight = self.size(position)
        with self.lock:
            host.failing = 0
            self.run.results[position] = value
            host.done += weight
            self.status.done += weight
            if shown is not None and len(self.status.preview) < PREVIEW_ROWS:
                self.status.preview.append(shown)

    def _failed(
        self,
        position: int,
        host: HostStatus,
        error: Exception,
        stop: Cancellation,
        *,
        waits: bool,
        gone: bool,
    ) -> None:
        with self.lock:
            if stop.cancelled or self.stopping.is_set():
                self.queue.appendleft(position)  # interrupted, not failed: it is still to do
            elif waits:
                self.queue.appendleft(position)  # for this server a little later, or another
            elif gone:
                self.queue.appendleft(position)  # the server went away: for the others
                host.requeued += self.size(position)
                assert isinstance(error, OllamaError)
                self._leave(host, error, error.message)
            elif self._elsewhere(position, host, error):
                self.queue.appendleft(position)  # another server may answer it
                host.requeued += self.size(position)
                host.failing += 1
                if host.failing >= MAX_SERVER_FAULTS:
                    assert isinstance(error, OllamaError)
                    why = f"{host.failing} rows failed in a row: {error.message}"
                    self._leave(host, error, why)
            elif _dropped(error) and position not in self.dropped:
                # The server is up, but the connection broke while it answered: once more (a
                # row that breaks it twice is the row's problem).
                self.dropped.add(position)
                self.queue.appendleft(position)
            else:
                if isinstance(error, SERVER_FAULTS):
                    host.failing += 1  # the row's own errors (invalid JSON, 400) do not count
                self._record(position, host, error)
                if self.fail_fast:
                    self.halted = True

    def _elsewhere(self, position: int, host: HostStatus, error: Exception) -> bool:
        """Whether the row should go to another server: the error is the server's, and one
        that serves has not failed this row yet (the lock is held)."""
        if not isinstance(error, SERVER_FAULTS) and not busy(error) and not _dropped(error):
            return False
        tried = self.tried.setdefault(position, set())
        tried.add(id(host))
        return any(not other.down and id(other) not in tried for other in self.hosts.values())

    def _leave(self, host: HostStatus, error: OllamaError, why: str) -> None:
        """``host`` leaves the batch (the lock is held)."""
        if not host.down:
            host.down = why
            self.last_host_error = error

    def _record(self, position: int, host: HostStatus, error: Exception) -> None:
        """The row failed: keep its error (the lock is held)."""
        self.run.errors[position] = error
        weight = self.size(position)
        host.failed += weight
        self.status.failed += weight

    def stop(self) -> None:
        """Stop handing out rows and cut the requests in flight (their rows stay to do)."""
        self.stopping.set()
        with self.lock:
            cancellations = list(self.in_flight.values())
            self.changed.notify_all()
        for stop in cancellations:
            stop.cancel()


def run_batch(
    positions: Sequence[int],
    send: Callable[[int, Client, Cancellation], R],
    clients: Sequence[Client],
    *,
    concurrency: int = 4,
    progress: BatchProgress | None = None,
    fps: float = 4.0,
    preview: Callable[[int, R], tuple[str, str] | None] | None = None,
    skipped: int = 0,
    unit: str = "rows",
    fail_fast: bool = False,
    size: Callable[[int], int] | None = None,
) -> BatchRun[R]:
    """Run ``send`` for every position, ``concurrency`` at a time on each client's server.

    ``send`` raises for a failed row (kept in ``errors``, the batch goes on). A server that
    cannot be reached leaves the batch and its row goes to the others; when none is left, the
    rest stay ``pending`` and ``run.error`` says why. Ctrl-C in the caller's thread stops the
    batch: rows in flight are cut and stay pending, and ``run.interruption`` holds the
    interrupt for the caller to raise once it kept the results. With ``fail_fast``, the first
    failed row stops the handing out of rows (the rest stay pending). ``size(position)`` is
    what a position counts for in the progress and the summary (the texts of a batch of
    embeddings; default 1).

    Nothing is raised here; results come back whatever happened.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    weigh = size or (lambda position: 1)
    total = sum(map(weigh, positions)) + skipped
    status = BatchStatus(total=total, skipped=skipped, unit=unit)
    status.done = skipped
    runner = _Runner(positions, send, clients, preview, status, weigh, fail_fast)
    progress = progress or BatchProgress()
    threads = [
        threading.Thread(
            target=runner.worker, args=(client,), name=f"ollama-batch-{n}", daemon=True
        )
        # Interleaved, so that even a batch smaller than the slots reaches every server.
        for n in range(concurrency)
        for client in clients
    ]
    started = time.monotonic()
    runner.working = len(threads)
    try:
        for thread in threads:
            thread.start()
        frame = 1.0 / fps
        # Repaint fps times a second until the last worker ends (noticed at once).
        while not runner.ended.wait(frame):
            status.elapsed = time.monotonic() - started
            progress.update(status)
        for thread in threads:
            thread.join()
    except KeyboardInterrupt as interruption:
        runner.run.interruption = interruption
        runner.stop()
        deadline = time.monotonic() + 5.0
        try:
            for thread in threads:
                # The requests were cut, so the workers return at once; bounded all the same.
                if thread.ident is not None:
                    thread.join(timeout=max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting, but keep what was answered
    status.elapsed = time.monotonic() - started
    run = runner.run
    with runner.lock:
        # Every row neither answered nor failed, also one a worker still holds.
        done = run.results.keys() | run.errors.keys()
        run.pending = sorted(set(runner.positions) - done)
    if run.interruption is not None:
        status.state = "interrupted"
    elif run.pending and not runner.halted:
        status.state = "failed"
        last = runner.last_host_error
        several = len(status.hosts) > 1
        why = last.message.rstrip(".") if last else "unreachable"
        run.error = OllamaError(
            f"No server is left to send the last {sum(map(weigh, run.pending))} {unit} to"
            + (
                f" ({len(status.hosts)} went away; the last said: {why})."
                if several
                else f": {why}."
            ),
            hint="What was answered is kept; start the server again and run with --resume "
            "(or map(..., resume=the result)) to do only the rest.",
        )
    else:
        status.state = "finished"
    progress.finish(status)
    return run
