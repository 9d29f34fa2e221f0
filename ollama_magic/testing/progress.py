"""Sending a model-management job's progress: NDJSON status lines, or one object at the end.

A job (create, push) is planned as a list of steps before anything is sent; each step waits,
then sends a status line, does something (installs the model), or fails. Sending follows the
real server's `streamResponse` and `waitForStream` (server/routes.go): a failure before any
line is an HTTP error; after one, an `{"error": ...}` line ends the stream; without streaming,
the job runs at the same pace and its last status (`{"status":"success"}`) or its failure is
the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ollama_magic.testing.connection import RequestHandler
from ollama_magic.testing.streaming import StreamWriter
from ollama_magic.testing.wire import JSON_PLAIN, ApiError


@dataclass(frozen=True)
class Failure:
    """The job fails here with *message*; *status* is the HTTP status when no line has been
    sent yet (`gin.H{"error": ..., "status": ...}`; 500 when the server gives none)."""

    message: str
    status: int = 500


Action = dict[str, Any] | Failure | Callable[[], None]
Step = tuple[float, Action]  # (seconds to wait first, what to do)


def send_progress(handler: RequestHandler, steps: Iterable[Step], *, stream: bool) -> None:
    """Run *steps* at their pace, answering as the real server does (see the module doc).

    Raises:
        ApiError: a failure before the first line, or any failure without streaming.
    """
    writer: StreamWriter | None = None
    latest: dict[str, Any] = {}
    for pause, action in steps:
        handler.load(pause)
        if callable(action):
            handler.check_client()  # a client that has left gets nothing done
            action()
        elif isinstance(action, Failure):
            if writer is None:
                raise ApiError(action.status, action.message, JSON_PLAIN)
            writer.line({"error": action.message})
            writer.end()
            return
        elif stream:
            if writer is None:
                writer = StreamWriter(handler)
                writer.start()
            writer.line(action)
        else:
            latest = action
    if writer is not None:
        writer.end()
    else:
        handler.respond_json(200, latest, JSON_PLAIN)
