"""Compatibility modes: the real Ollama server, or an "Ollama-compatible" adapter.

An adapter is a third-party proxy that speaks (most of) the Ollama API in front of another
engine. Clients meet them in the wild, so the stand-in can imitate their usual deviations:

- no `HEAD /` (405) and no `/api/version` (404);
- a missing model on `/api/generate` and `/api/chat` reported with HTTP 200, as one NDJSON
  line `{"error": "model 'NAME' not found"}`;
- word counts instead of token counts, and no durations (all 0);
- no `logprobs`, no `thinking`, and no `done_reason` in the final chunk.

The answer-level deviations are the Fault options `stats="words"` and `drop=(...)`, so a test can
also switch them on one at a time against a normal stand-in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

from ollama_magic.testing.replies import DROPPABLE, Fault

OLLAMA = "ollama"
ADAPTER = "adapter"
MODES = (OLLAMA, ADAPTER)

R = TypeVar("R")


def check_mode(compat: str) -> str:
    """*compat* if it names a mode.

    Raises:
        ValueError: for anything but "ollama" or "adapter".
    """
    if compat not in MODES:
        raise ValueError(f"compat must be 'ollama' or 'adapter', not {compat!r}")
    return compat


def adapter_routes(routes: Mapping[str, Mapping[str, R]]) -> dict[str, dict[str, R]]:
    """The real server's routes less what adapters leave out: `HEAD /` and `/api/version`.

    What is missing then gets the router's plain-text 405 (known path) or 404 (unknown path).
    """
    adapted = {path: dict(methods) for path, methods in routes.items() if path != "/api/version"}
    adapted["/"].pop("HEAD", None)
    return adapted


def missing_model_status(compat: str) -> int:
    """The HTTP status of "model not found" on /api/generate and /api/chat.

    Adapters answer 200 and put the error in the body, where only an in-band check finds it.
    """
    return 200 if compat == ADAPTER else 404


def answer_fault(fault: Fault | None, *, token_delay: float, compat: str) -> Fault:
    """*fault* (injected or from a Reply) on top of the server's own pace and mode.

    The server's pace adds to the fault's `delay`; the mode supplies `stats` unless the fault
    sets its own, and its dropped fields join the fault's. So a fault injected into a paced
    adapter still applies, and the pace and the deviations still apply along with it.
    """
    fault = fault or Fault()
    stats, drop = ("words", DROPPABLE) if compat == ADAPTER else (None, ())
    if not token_delay and not stats:
        return fault
    return dataclasses.replace(
        fault,
        delay=fault.delay + token_delay,
        stats=fault.stats if fault.stats is not None else stats,
        drop=tuple(dict.fromkeys((*drop, *fault.drop))),
    )
