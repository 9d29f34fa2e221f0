"""A stand-in Ollama server for tests and offline notebooks.

`FakeOllama` speaks the Ollama HTTP API on 127.0.0.1 (streaming NDJSON, errors, model
management) and answers with canned or deterministic default replies, so notebooks and clients
can be exercised without a GPU, a model download, or a network. Faults (HTTP errors, errors in
the middle of a stream, cut connections, slow tokens, split UTF-8) can be injected to see how a
client copes.

Example:

>>> import json, urllib.request
>>> from ollama_magic.testing import FakeOllama
>>> with FakeOllama() as server:
...     server.add_reply("capital of France", "Paris.")
...     body = {"model": "llama3.2", "prompt": "The capital of France?", "stream": False}
...     url = server.url + "/api/generate"
...     with urllib.request.urlopen(url, json.dumps(body).encode()) as response:
...         json.load(response)["response"]
'Paris.'

In pytest, the `fake_ollama` fixture (installed with the package) gives a started server:

    def test_answer(fake_ollama):
        fake_ollama.add_reply("hello", "Hi!")
        ...  # e.g. set OLLAMA_HOST=fake_ollama.url

From a shell, `python -m ollama_magic.testing --port 11434` serves until Ctrl-C. It answers at
a real server's pace (about 25 tokens/s, two-second pulls; `--delay 0 --pull-seconds 0` for
instant answers), whereas `FakeOllama()` and the fixture are instant unless given
`token_delay=` / `pull_seconds=`. `FakeOllama(compat="adapter")` (`--compat adapter`) imitates
an "Ollama-compatible" proxy in front of another engine instead of the real server.
`parallel=`, `answer_delay=` and `max_queue=` (`--parallel`, `--answer-delay`, `--max-queue`)
give it a real server's scheduling, for batch workloads: a limit on the requests in progress,
a fixed cost per answer, and a bounded line of waiting requests (503 "server busy" beyond).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ollama_magic.testing.catalog import ModelSpec
    from ollama_magic.testing.records import RecordedRequest
    from ollama_magic.testing.replies import Fault, Reply
    from ollama_magic.testing.server import FakeOllama

__all__ = ["FakeOllama", "Fault", "ModelSpec", "RecordedRequest", "Reply"]

# Imported on first use, so that loading the pytest plugin (a submodule) stays cheap.
_EXPORTS = {
    "FakeOllama": "ollama_magic.testing.server",
    "RecordedRequest": "ollama_magic.testing.records",
    "Fault": "ollama_magic.testing.replies",
    "Reply": "ollama_magic.testing.replies",
    "ModelSpec": "ollama_magic.testing.catalog",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
