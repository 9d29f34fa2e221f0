"""The stand-in's server-side concurrency: slots (OLLAMA_NUM_PARALLEL), the line for a slot and
its limit (OLLAMA_MAX_QUEUE), the fixed cost per answer, and the command-line flags.

Everything goes over real HTTP. Nothing sleeps to synchronise: requests held inside the server
by a reply callable (which runs while the request holds its slot) are waited for with deadlines,
and the only timing assertions are lower bounds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _util import wait_until

import ollama_magic
from ollama_magic.testing import FakeOllama, Fault, RecordedRequest, Reply
from ollama_magic.testing.__main__ import main, parse_args, server_from_args

REPO = Path(__file__).resolve().parents[1]
JSON_UTF8 = "application/json; charset=utf-8"
QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"
DEADLINE = 20.0  # seconds: generous, only reached when something hangs


def post(server: FakeOllama | str, path: str, body: dict[str, Any], **kwargs: Any) -> Any:
    url = server if isinstance(server, str) else server.url
    return requests.post(url + path, json=body, timeout=kwargs.pop("timeout", DEADLINE), **kwargs)


def ask(prompt: str, **fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "prompt": prompt, "stream": False, **fields}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


class Fired:
    """One request sent from its own thread; `result` is the response or the exception."""

    def __init__(self, send: Any) -> None:
        self.result: Any = None
        self._send = send
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._send()
        except Exception as exc:  # kept for the test to look at
            self.result = exc

    def join(self, timeout: float = DEADLINE) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request did not finish in time"
        return self.result


def fire(server: FakeOllama, path: str, body: dict[str, Any]) -> Fired:
    return Fired(lambda: post(server, path, body))


class Gate:
    """A reply callable that holds each request inside the server (in its slot) until opened,
    and notes which prompts got in, in order, and how many were in at once."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered: list[str] = []
        self.inside = 0
        self.most_inside = 0
        self._lock = threading.Lock()

    def __call__(self, record: RecordedRequest) -> str:
        with self._lock:
            self.entered.append(record.prompt)
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.opened.wait(DEADLINE)
        finally:
            with self._lock:
                self.inside -= 1
        return f"answer to {record.prompt}"


@pytest.fixture
def gate() -> Iterator[Gate]:
    held = Gate()
    yield held
    held.opened.set()  # never leave a server thread waiting


def make(gate: Gate | None = None, **options: Any) -> FakeOllama:
    server = FakeOllama(**options)
    if gate is not None:
        server.add_reply(gate)
    return server


# ---------------------------------------------------------------------------------------------
# Arguments and properties
# ---------------------------------------------------------------------------------------------


def test_defaults_keep_no_limit_and_no_delay():
    server = FakeOllama()
    assert (server.parallel, server.answer_delay, server.max_queue) == (None, 0.0, 512)
    assert (server.peak_running, server.waiting) == (0, 0)
    configured = FakeOllama(parallel=8, answer_delay=0.05, max_queue=3)
    assert (configured.parallel, configured.answer_delay, configured.max_queue) == (8, 0.05, 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"parallel": 0}, "parallel must be at least 1"),
        ({"parallel": -2}, "parallel must be at least 1"),
        ({"answer_delay": -0.1}, "must not be negative"),
        ({"max_queue": -1}, "max_queue must not be negative"),
    ],
)
def test_bad_arguments_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        FakeOllama(**options)


# ---------------------------------------------------------------------------------------------
# Slots: how many at once, and in what order the others get in
# ---------------------------------------------------------------------------------------------


def test_parallel_limits_the_requests_in_progress(gate):
    with make(gate, parallel=2, answer_delay=0.01) as server:
        fired = [fire(server, "/api/generate", ask(f"row {i}")) for i in range(6)]
        wait_until(lambda: len(gate.entered) == 2 and server.waiting == 4, timeout=DEADLINE)
        assert server.peak_running == 2
        gate.opened.set()
        responses = [f.join() for f in fired]
    assert [r.status_code for r in responses] == [200] * 6
    answers = sorted(r.json()["response"] for r in responses)
    assert answers == sorted(f"answer to row {i}" for i in range(6))
    assert server.peak_running == 2 and gate.most_inside == 2


def test_chat_and_embed_share_the_slots(gate):
    with make(gate, parallel=1) as server:
        held = fire(server, "/api/chat", {"model": "llama3.2", "messages": [user("hold")]})
        wait_until(lambda: gate.entered == ["hold"], timeout=DEADLINE)
        embed = fire(server, "/api/embed", {"model": "all-minilm", "input": ["a", "b"]})
        legacy = fire(server, "/api/embeddings", {"model": "all-minilm", "prompt": "c"})
        wait_until(lambda: server.waiting == 2, timeout=DEADLINE)
        # Loading (no input) and unloading compute nothing, so they do not wait.
        assert post(server, "/api/embed", {"model": "all-minilm"}).json()["embeddings"] == []
        loaded = post(server, "/api/generate", {"model": "llama3.2"}).json()
        unloaded = post(server, "/api/chat", {"model": "llama3.2", "keep_alive": 0}).json()
        assert (loaded["done_reason"], unloaded["done_reason"]) == ("load", "unload")
        assert server.waiting == 2
        gate.opened.set()
        assert held.join().status_code == 200
        assert len(embed.join().json()["embeddings"]) == 2
        assert len(legacy.join().json()["embedding"]) == 384
    assert server.peak_running == 1


def test_waiting_requests_get_their_slot_in_arrival_order(gate):
    with make(gate, parallel=1) as server:
        fired = [fire(server, "/api/generate", ask("first"))]
        wait_until(lambda: gate.entered == ["first"], timeout=DEADLINE)
        for n, prompt in enumerate(["second", "third", "fourth", "fifth"], start=1):
            fired.append(fire(server, "/api/generate", ask(prompt)))
            wait_until(lambda n=n: server.waiting == n, timeout=DEADLINE)
        gate.opened.set()
        assert all(f.join().status_code == 200 for f in fired)
    assert gate.entered == ["first", "second", "third", "fourth", "fifth"]


def test_without_a_limit_nothing_waits_but_the_peak_is_counted(gate):
    with make(gate) as server:
        fired = [fire(server, "/api/generate", ask(f"row {i}")) for i in range(3)]
        wait_until(lambda: len(gate.entered) == 3, timeout=DEADLINE)
        assert (server.peak_running, server.waiting) == (3, 0)
        gate.opened.set()
        assert all(f.join().status_code == 200 for f in fired)
        wait_until(lambda: all(r.finished.is_set() for r in server.requests), timeout=DEADLINE)
        server.reset()
        assert server.peak_running == 0
        post(server, "/api/generate", ask("one more"))
        assert server.peak_running == 1


# ---------------------------------------------------------------------------------------------
# The line's limit: 503 "server busy"
# ---------------------------------------------------------------------------------------------


def test_a_full_line_answers_503_server_busy(gate):
    with make(gate, parallel=1, max_queue=2) as server:
        fired = [fire(server, "/api/generate", ask("running"))]
        wait_until(lambda: gate.entered == ["running"], timeout=DEADLINE)
        fired += [fire(server, "/api/chat", {"model": "llama3.2", "messages": [user("w1")]})]
        fired += [fire(server, "/api/embed", {"model": "all-minilm", "input": "w2"})]
        wait_until(lambda: server.waiting == 2, timeout=DEADLINE)
        for path, body in [
            ("/api/generate", ask("turned away")),
            ("/api/generate", ask("streamed", stream=True)),
            ("/api/chat", {"model": "llama3.2", "messages": [user("turned away")]}),
            ("/api/embed", {"model": "all-minilm", "input": ["x"]}),
        ]:
            busy = post(server, path, body)
            assert (busy.status_code, busy.headers["Content-Type"]) == (503, JSON_UTF8)
            assert busy.content == json.dumps({"error": QUEUE_FULL}, separators=(",", ":")).encode()
        # The client maps it to one of its errors, saying the server is busy.
        with (
            ollama_magic.Client(server.url, timeout=DEADLINE) as client,
            pytest.raises(ollama_magic.OllamaError) as caught,
        ):
            client.generate("llama3.2", "turned away", stream=False)
        assert isinstance(caught.value, ollama_magic.ResponseError)
        assert caught.value.status_code == 503 and "busy" in str(caught.value)
        assert server.waiting == 2  # the ones turned away took no place in line
        gate.opened.set()
        assert [f.join().status_code for f in fired] == [200, 200, 200]
        # With the line empty again, requests are taken again.
        assert post(server, "/api/generate", ask("later")).status_code == 200


def test_max_queue_zero_turns_away_whatever_cannot_start_at_once(gate):
    with make(gate, parallel=1, max_queue=0) as server:
        running = fire(server, "/api/generate", ask("running"))
        wait_until(lambda: gate.entered == ["running"], timeout=DEADLINE)
        busy = post(server, "/api/generate", ask("next"))
        assert (busy.status_code, busy.json()) == (503, {"error": QUEUE_FULL})
        gate.opened.set()
        assert running.join().status_code == 200


# ---------------------------------------------------------------------------------------------
# The fixed cost per answer
# ---------------------------------------------------------------------------------------------


def test_answer_delay_comes_before_the_first_token_as_prompt_evaluation():
    with FakeOllama(answer_delay=0.2) as server:
        started = time.monotonic()
        whole = post(server, "/api/generate", ask("Hi"))
        assert time.monotonic() - started >= 0.2
        assert whole.json()["prompt_eval_duration"] >= 200_000_000
        started = time.monotonic()
        with post(
            server, "/api/chat", {"model": "llama3.2", "messages": [user("Hi")]}, stream=True
        ) as streamed:
            lines = (json.loads(line) for line in streamed.iter_lines() if line)
            first = next(lines)
            assert time.monotonic() - started >= 0.2
            assert first["done"] is False
            final = list(lines)[-1]
        assert final["done"] is True and final["prompt_eval_duration"] >= 200_000_000


def test_answer_delay_spares_load_unload_and_embeddings():
    # A 60 s delay would outlast the request timeout: these answer without it.
    with FakeOllama(answer_delay=60) as server:
        loaded = post(server, "/api/generate", {"model": "llama3.2"})
        assert loaded.json()["done_reason"] == "load"
        unloaded = post(server, "/api/chat", {"model": "llama3.2", "keep_alive": 0})
        assert unloaded.json()["done_reason"] == "unload"
        embedded = post(server, "/api/embed", {"model": "all-minilm", "input": "x"}).json()
        assert len(embedded["embeddings"]) == 1
        assert server.answer_delay == 60


# ---------------------------------------------------------------------------------------------
# Slots are always handed back; stop() ends every wait
# ---------------------------------------------------------------------------------------------


def test_stop_wakes_requests_waiting_for_a_slot_and_in_their_answer_delay():
    server = FakeOllama(parallel=1, answer_delay=60).start()
    try:
        delayed = fire(server, "/api/generate", ask("delayed"))
        wait_until(lambda: server.peak_running == 1, timeout=DEADLINE)
        waiting = [fire(server, "/api/chat", {"model": "llama3.2", "messages": [user("w")]})]
        waiting.append(fire(server, "/api/embed", {"model": "all-minilm", "input": "w"}))
        wait_until(lambda: server.waiting == 2, timeout=DEADLINE)
    finally:
        server.stop()
    # Far sooner than the 60 s delay: every request ended, none answered.
    for fired in [delayed, *waiting]:
        assert isinstance(fired.join(), requests.ConnectionError)
    assert all(record.finished.is_set() for record in server.requests)
    assert server.waiting == 0


def test_a_client_that_leaves_hands_its_slot_on():
    with FakeOllama(parallel=1) as server:
        server.add_reply("slow", Reply(text="late", fault=Fault(load_delay=60)))
        conn = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps(ask("slow")).encode()
        head = f"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)
        wait_until(lambda: server.peak_running == 1, timeout=DEADLINE)
        queued = fire(server, "/api/generate", ask("next"))
        wait_until(lambda: server.waiting == 1, timeout=DEADLINE)
        conn.close()
        assert queued.join().status_code == 200  # long before the 60 s load delay
        slow = server.requests[0]
        wait_until(slow.finished.is_set, timeout=DEADLINE)
        assert slow.client_disconnected


def test_a_waiting_client_that_leaves_gives_up_its_place(gate):
    with make(gate, parallel=1) as server:
        running = fire(server, "/api/generate", ask("running"))
        wait_until(lambda: gate.entered == ["running"], timeout=DEADLINE)
        conn = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps(ask("gone")).encode()
        head = f"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        conn.sendall(head.encode() + body)
        wait_until(lambda: server.waiting == 1, timeout=DEADLINE)
        conn.close()
        wait_until(lambda: server.waiting == 0, timeout=DEADLINE)
        gate.opened.set()
        assert running.join().status_code == 200
    assert gate.entered == ["running"]  # the one that left never ran


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/generate", ask("breaks", stream=True), 200),  # an error line after a chunk
        ("/api/generate", ask("breaks"), 500),
        ("/api/chat", {"model": "llama3.2", "messages": [user("breaks")], "stream": False}, 500),
        ("/api/generate", ask("cut"), None),
        ("/api/generate", ask("raises"), 500),
        ("/api/embed", {"model": "all-minilm", "input": "x " * 600, "truncate": False}, 400),
    ],
)
def test_a_failed_answer_hands_its_slot_back(path, body, status):
    def raises(record: RecordedRequest) -> str | None:
        if record.prompt == "raises":
            raise RuntimeError("boom")
        return None

    with FakeOllama(parallel=1, max_queue=0) as server:
        server.add_reply("breaks", Reply(text="a b c", fault=Fault(error_after=1)))
        server.add_reply("cut", Reply(text="a b c", fault=Fault(cut_after=1)))
        server.add_reply(raises)
        for _ in range(2):  # the second would find the only slot taken, with no room in line
            try:
                answered = post(server, path, body)
            except requests.ConnectionError:
                answered = None
            assert (answered.status_code if answered is not None else None) == status
            # The client can have the answer a moment before the server is done with it.
            wait_until(server.requests[-1].finished.is_set, timeout=DEADLINE)
        assert post(server, "/api/generate", ask("fine")).status_code == 200
        assert server.waiting == 0


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_cli_flags_configure_the_server():
    args = parse_args(["--parallel", "8", "--answer-delay", "0.05", "--max-queue", "16"])
    server = server_from_args(args)
    assert (server.parallel, server.answer_delay, server.max_queue) == (8, 0.05, 16)
    defaults = server_from_args(parse_args([]))
    assert (defaults.parallel, defaults.answer_delay, defaults.max_queue) == (None, 0.0, 512)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--parallel", "0"], "--parallel must be at least 1"),
        (["--parallel", "two"], "invalid int value: 'two'"),
        (["--answer-delay", "-1"], "--answer-delay must not be negative"),
        (["--max-queue", "-1"], "--max-queue must not be negative"),
    ],
)
def test_cli_rejects_bad_scheduling_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help_names_the_scheduling_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--parallel N" in text and "OLLAMA_NUM_PARALLEL" in text
    assert "--answer-delay SECONDS" in text and "--max-queue N" in text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_cli_serves_one_answer_at_a_time_with_parallel_1():
    port = free_port()
    command = [
        *(sys.executable, "-m", "ollama_magic.testing", "--port", str(port)),
        *("--delay", "0", "--pull-seconds", "0", "--quiet"),
        *("--parallel", "1", "--answer-delay", "0.3"),
    ]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], DEADLINE)
        assert ready, "no start-up line"
        banner = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner, proc.stderr.read()
        assert "1 request at a time, up to 512 more waiting; 300 ms per answer" in banner
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        fired = [Fired(lambda i=i: post(url, "/api/generate", ask(f"row {i}"))) for i in range(3)]
        responses = [f.join() for f in fired]
        # One at a time, 0.3 s each: three answers cannot take less than 0.9 s.
        assert time.monotonic() - started >= 0.9
        assert [r.status_code for r in responses] == [200] * 3
        assert all(r.json()["prompt_eval_duration"] >= 300_000_000 for r in responses)
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


# ---------------------------------------------------------------------------------------------
# Embeddings: the fast computation gives the values of the plain element-wise one
# ---------------------------------------------------------------------------------------------


def reference_embedding(model: str, text: str, dims: int) -> list[float]:
    """The embedding as the plain formulas give it: gauss() per element, sums element by
    element, and each value's shortest float32 decimal found digit count by digit count."""
    total = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()) or [text]:
        rng = random.Random(int.from_bytes(sha_embed(model, word), "big"))
        for i in range(dims):
            total[i] += rng.gauss(0.0, 1.0)
    return reference_normalize(total)


def sha_embed(model: str, word: str) -> bytes:
    return hashlib.sha256("\x1f".join(["embed", model, word]).encode()).digest()[:8]


def reference_normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    out = []
    for x in vector:
        exact = struct.unpack("f", struct.pack("f", x / norm))[0]
        for digits in range(6, 10):
            short = float(f"{exact:.{digits}g}")
            if struct.unpack("f", struct.pack("f", short))[0] == exact:
                exact = short
                break
        out.append(exact)
    return out


def bits(values: list[float]) -> list[str]:
    return [value.hex() for value in values]


def test_embeddings_are_the_element_wise_values_bit_for_bit():
    from ollama_magic.testing.vectors import embedding

    rng = random.Random(3)
    words = ["the", "cat", "Row", "42", "naïve", "café", "x", "données", "-", "mat"]
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(40)]
    texts += ["", "!!!", "Hello, World", " ".join(words * 20)]  # and a long one: 200 words
    for text in texts:
        expected = reference_embedding("all-minilm:latest", text, 384)
        assert bits(embedding("all-minilm:latest", text, 384)) == bits(expected), text
    with FakeOllama(parallel=2) as server:
        body = {"model": "all-minilm", "input": texts[:8], "dimensions": 100}
        served = post(server, "/api/embed", body).json()["embeddings"]
    for text, vector in zip(texts[:8], served, strict=True):
        full = reference_embedding("all-minilm:latest", text, 384)
        assert bits(vector) == bits(reference_normalize(full[:100]))
