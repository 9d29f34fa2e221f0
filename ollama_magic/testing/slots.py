"""Request slots: how many requests the server works on at once, and the line for a slot.

Like `OLLAMA_NUM_PARALLEL`, at most `parallel` answers and embeddings are in progress at once;
the others wait for a slot in arrival order, and, like `OLLAMA_MAX_QUEUE`, a request that finds
`max_queue` already waiting is turned away with 503. Without a limit nothing waits, but the
requests in progress are still counted, so a test can see how many ran at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ollama_magic.testing.wire import ApiError

__all__ = ["DEFAULT_MAX_QUEUE", "QUEUE_FULL", "Slots"]

DEFAULT_MAX_QUEUE = 512  # OLLAMA_MAX_QUEUE's default
# ErrMaxQueue in server/sched.go, two spaces included.
QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"
# How often a waiting request looks whether its client has left (a slot or a stop wakes it
# at once; only a client leaving is polled for).
POLL_SECONDS = 0.1


@dataclass(eq=False)
class _Ticket:
    """A place in the line; `granted` (under the lock) once a slot is handed to it."""

    ready: threading.Event = field(default_factory=threading.Event)
    granted: bool = False


class Slots:
    """The slots of one serving run of a stand-in server.

    Args:
        parallel: at most this many requests in progress at once (None: no limit).
        max_queue: at most this many requests waiting for a slot; one more gets 503.
    """

    def __init__(self, parallel: int | None = None, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.parallel = parallel
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._line: deque[_Ticket] = deque()
        self._running = 0
        self._peak = 0
        self._closed = False

    @property
    def running(self) -> int:
        """Requests holding a slot now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._line)

    @property
    def peak(self) -> int:
        """The most requests that held a slot at once since this run began or `reset_peak()`."""
        return self._peak

    def reset_peak(self) -> None:
        """Count the peak afresh, from the requests in progress now."""
        with self._lock:
            self._peak = self._running

    def acquire(self, check: Callable[[], None]) -> bool:
        """Take a slot, waiting in line for one if all are taken.

        Args:
            check: called while waiting; raises to give up (the client has left, say). Its
                exception propagates, and the place in line is given up.

        Returns:
            True with a slot held (hand it back with `release()`); False if the server is
            stopping, without one.

        Raises:
            ApiError: 503 when `max_queue` requests are waiting already.
        """
        with self._lock:
            if self._closed:
                return False
            if self.parallel is None or (self._running < self.parallel and not self._line):
                self._running += 1
                self._peak = max(self._peak, self._running)
                return True
            if len(self._line) >= self.max_queue:
                raise ApiError(503, QUEUE_FULL)
            ticket = _Ticket()
            self._line.append(ticket)
        try:
            while True:
                ticket.ready.wait(POLL_SECONDS)
                with self._lock:
                    if ticket.granted:
                        return True
                    if self._closed:
                        return False
                check()
        except BaseException:
            with self._lock:
                if ticket.granted:  # handed a slot just as the wait was given up: pass it on
                    self._release_locked()
                elif ticket in self._line:
                    self._line.remove(ticket)
            raise

    def release(self) -> None:
        """Hand back a slot: to the longest-waiting request, if any."""
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        if self._line:
            # The slot passes straight to the next in line, so a newcomer cannot take it first.
            ticket = self._line.popleft()
            ticket.granted = True
            ticket.ready.set()
        else:
            self._running -= 1

    def close(self) -> None:
        """The server is stopping: wake every waiting request (without a slot), and let no
        other wait."""
        with self._lock:
            self._closed = True
            waiting = list(self._line)
            self._line.clear()
        for ticket in waiting:
            ticket.ready.set()
