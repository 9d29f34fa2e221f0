"""Batch benchmarks: one prompt over 1,000 rows, several servers, embeddings (run by run.py).

- batch throughput: 1,000 rows through ``ollama_magic.map`` against a stand-in in a process of
  its own that answers each request in a fixed 50 ms with 8 slots (``--parallel 8
  --answer-delay 0.05``), at concurrency 8 and 1. Ideal: slots / 50 ms (160 and 20 rows/s);
  also printed, the same rows sent by bare ``requests.post`` threads (the floor this machine
  allows).
- two servers: the same 1,000 rows over two such stand-ins, against one.
- kernel CPU per row: the kernel process's CPU time (``time.process_time``, every thread) for
  the concurrency-8 run, per row. In all, against the floor: the same rows sent by bare
  ``requests.post`` threads (on a slow machine that floor alone can pass 1 ms). And the
  batch's own work (fill the template, build the request, parse, validate, collect) against
  1 ms: in all, less the same rows sent as bare ``Client.generate`` calls in as many threads.
- memory per row: what a finished row keeps (traced with tracemalloc), above its answer's text.
- embeddings: 10,000 texts in batches of 64 through ``ollama_magic.embed``: the request count
  must be ceil(10,000 / 64), and the throughput is reported.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests

import ollama_magic
from ollama_magic import Workspace
from ollama_magic.testing import FakeOllama

ROWS = 1000
SLOTS = 8
ANSWER_SECONDS = 0.05
MIN_SHARE = 0.90  # of the ideal throughput at concurrency 8
MIN_SERIAL_SHARE = 0.95  # of the ideal at concurrency 1 (within 5 %)
MIN_TWO_SERVERS = 1.8  # times one server
MAX_CPU_MS = 1.0  # kernel CPU per row
MAX_ROW_BYTES = 1024  # kept per finished row beyond its answer's text
EMBED_TEXTS = 10_000
EMBED_BATCH = 64

_SERVE = """
import sys
from ollama_magic.testing import FakeOllama
with FakeOllama(parallel={slots}, answer_delay={delay}) as server:
    server.add_reply("Row", "Yes.")
    print(server.url, flush=True)
    sys.stdin.read()  # until the benchmark closes stdin
"""


@contextmanager
def stand_in() -> Iterator[str]:
    """A stand-in with 8 slots and 50 ms per answer, in a process of its own (as Ollama is)."""
    code = _SERVE.format(slots=SLOTS, delay=ANSWER_SECONDS)
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        yield server.stdout.readline().strip()
    finally:
        server.stdin.close()
        server.wait(10)


def _map(workspace: Workspace, rows: int, **kwargs: Any) -> tuple[float, float, Any]:
    """Seconds and kernel CPU seconds for ``rows`` rows through ollama_magic.map."""
    items = [f"Row {n}: is this a row?" for n in range(rows)]
    cpu, started = time.process_time(), time.perf_counter()
    result = ollama_magic.map(
        "{item}", items, workspace=workspace, progress=False, namespace={}, **kwargs
    )
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    assert not result.errors and all(answer == "Yes." for answer in result), result.errors
    return elapsed, used, result


def _bare(url: str, rows: int, threads: int) -> tuple[float, float]:
    """The same rows sent by bare requests.post threads: seconds and CPU seconds."""
    sessions = threading.local()

    def send(n: int) -> None:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        body = {"model": "llama3.2", "prompt": f"Row {n}", "stream": False}
        response = sessions.session.post(f"{url}/api/generate", json=body, timeout=30)
        assert response.json()["response"] == "Yes."

    return _threads(send, rows, threads)


def _exchange(workspace: Workspace, rows: int, threads: int) -> tuple[float, float]:
    """The same rows as bare Client.generate calls (the HTTP exchange alone, without the
    batch's template, request building, validation or collecting): seconds, CPU seconds."""
    client = workspace.client()

    def send(n: int) -> None:
        assert client.generate("llama3.2", f"Row {n}", stream=False).content == "Yes."

    return _threads(send, rows, threads)


def _threads(send: Callable[[int], None], rows: int, threads: int) -> tuple[float, float]:
    """``send(n)`` for every row from ``threads`` threads: seconds and CPU seconds."""
    todo = iter(range(rows))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                n = next(todo, None)
            if n is None:
                return
            send(n)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    cpu, started = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started, time.process_time() - cpu


def bench_batch(verdict: Callable[[bool, str], str]) -> None:
    """Print the batch figures; ``verdict(passed, target)`` records and words each one."""
    with stand_in() as url, stand_in() as second:
        workspace = Workspace(host=url, model="llama3.2")
        _map(workspace, 50, concurrency=SLOTS)  # connections and imports, not measured
        ideal = SLOTS / ANSWER_SECONDS
        seconds, cpu, _ = _map(workspace, ROWS, concurrency=SLOTS)
        one_server = ROWS / seconds
        bare_seconds, bare_cpu = _bare(url, ROWS, SLOTS)
        print(
            f"batch, concurrency {SLOTS}: {ROWS:,} rows in {seconds:.2f} s = {one_server:.0f} "
            f"rows/s = {one_server / ideal:.0%} of the ideal {ideal:.0f} (bare requests: "
            f"{ROWS / bare_seconds:.0f} rows/s)  "
            + verdict(one_server >= MIN_SHARE * ideal, f">= {MIN_SHARE:.0%} of ideal")
        )
        serial_rows = 200  # 10 s at the ideal 20 rows/s
        serial_ideal = 1 / ANSWER_SECONDS
        serial_seconds, _, _ = _map(workspace, serial_rows, concurrency=1)
        serial = serial_rows / serial_seconds
        print(
            f"batch, concurrency 1: {serial_rows} rows in {serial_seconds:.2f} s = {serial:.1f} "
            f"rows/s = {serial / serial_ideal:.1%} of the ideal {serial_ideal:.0f}  "
            + verdict(serial >= MIN_SERIAL_SHARE * serial_ideal, "within 5 % of ideal")
        )
        both = Workspace(hosts=[url, second], model="llama3.2")
        _map(both, 50, concurrency=SLOTS)
        two_seconds, _, _ = _map(both, ROWS, concurrency=SLOTS)
        two = ROWS / two_seconds
        print(
            f"batch, two servers: {ROWS:,} rows in {two_seconds:.2f} s = {two:.0f} rows/s = "
            f"{two / one_server:.2f}x one server ({one_server:.0f} rows/s)  "
            + verdict(two >= MIN_TWO_SERVERS * one_server, f">= {MIN_TWO_SERVERS:g}x")
        )
        _, exchange_cpu = _exchange(workspace, ROWS, SLOTS)
        per_row, exchange, bare = (x / ROWS * 1000 for x in (cpu, exchange_cpu, bare_cpu))
        print(
            f"batch, kernel CPU per row: {per_row:.2f} ms in all = {per_row / bare:.2f}x bare "
            f"requests.post + json.loads in {SLOTS} threads ({bare:.2f} ms)  "
            + verdict(per_row <= bare, "<= 1x bare requests")
        )
        own = per_row - exchange
        print(
            f"batch, kernel CPU per row for the batch's own work (template, request, parse, "
            f"validate, collect): {own:.2f} ms (in all {per_row:.2f} ms, less the HTTP "
            f"exchange alone, Client.generate in {SLOTS} threads: {exchange:.2f} ms)  "
            + verdict(own <= MAX_CPU_MS, "<= 1 ms")
        )
        bench_memory(workspace, verdict)
    bench_embed(verdict)


def bench_memory(workspace: Workspace, verdict: Callable[[bool, str], str]) -> None:
    """Bytes a finished row keeps, above its answer: nothing per row but the answer's slot."""
    kept = []
    for rows in (ROWS, 3 * ROWS):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        _, _, result = _map(workspace, rows, concurrency=SLOTS)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        answers = sum(sys.getsizeof(answer) for answer in result)
        kept.append((after - before - answers, rows))
        del result
    # The slope between the two sizes: what one more row costs, whatever is fixed per batch.
    (small, small_rows), (large, large_rows) = kept
    per_row = (large - small) / (large_rows - small_rows)
    print(
        f"batch, memory per finished row beyond its answer: {per_row:.0f} B (a list slot is "
        f"8 B)  " + verdict(per_row <= MAX_ROW_BYTES, f"<= {MAX_ROW_BYTES} B")
    )


def bench_embed(verdict: Callable[[bool, str], str]) -> None:
    """10,000 texts in batches: the request count, and the throughput."""
    texts = [
        f"ticket {n}: the printer on floor {n % 7} is broken again" for n in range(EMBED_TEXTS)
    ]
    with FakeOllama() as server:
        workspace = Workspace(host=server.url)
        started = time.perf_counter()
        vectors = ollama_magic.embed(
            texts, model="all-minilm", batch_size=EMBED_BATCH, workspace=workspace, progress=False
        )
        seconds = time.perf_counter() - started
        sent = sum(1 for r in server.requests if r.path == "/api/embed")
    expected = math.ceil(EMBED_TEXTS / EMBED_BATCH)
    print(
        f"embeddings: {EMBED_TEXTS:,} texts in {sent} requests of {EMBED_BATCH} in "
        f"{seconds:.2f} s = {EMBED_TEXTS / seconds:,.0f} texts/s, {vectors.shape[0]} x "
        f"{vectors.shape[1]} {vectors.dtype} (stand-in in this process)  "
        + verdict(sent == expected and vectors.shape[0] == EMBED_TEXTS, f"{expected} requests")
    )
