"""Speed and size benchmarks, each printed as a ratio against a floor measured in the same run.

Run:  .venv/bin/python benchmarks/run.py   (after tests/run or notebooks/run made .venv)

- render: a 2,000-paragraph answer streamed at 50 tokens/s and 10 frames/s through the live
  display. Floor: the answer's final HTML and text, sent once. Compared with re-sending the
  whole answer every frame, which is what a plain ``DisplayHandle.update(Markdown(text))``
  loop does.
- stream: 20,000 chunks from the stand-in server through ``Client.generate``. Floor: the same
  HTTP response read with ``requests`` and each line parsed with ``json.loads``, nothing else.

- magic stream: 20,000 tokens (words, paragraphs, lists, ``code``; about 90 KB) through
  ``%%ollama`` in a real IPython shell with live markdown as in a notebook (the cell runs under
  ``capture_output``, whose display publisher is a subclass, so the magic renders HTML and
  updates it in place at the default 10 fps). The stand-in serves them from a process of its
  own, as Ollama does, a token per HTTP chunk every 0.2 ms: a model's pace, only faster, so
  that each token is read as it comes (a wake-up, a read, a parse), as in a real notebook.
  Kernel CPU: ``time.thread_time()`` of the reading thread. Floor: the same stream read with
  ``requests`` and each line parsed with ``json.loads``. Also printed, without a target:
  ``Client.generate`` alone (no rendering). Best of 3 runs each, alternating. Waking for each
  token is most of the cost; after its first second the magic reads the tokens that gathered
  between two frames in one go, which is why it can cost less than the bare loops.

- long line: one 5 MB NDJSON line sent in 100-byte HTTP chunks (a server that answers with a
  huge object, slowly). Floor: the same body read with ``requests`` and parsed once. A client
  that re-scans what it has for each piece is quadratic here.

- batch (benchmarks/batch.py): one prompt over 1,000 rows against stand-ins with 8 slots and
  50 ms per answer, at concurrency 8 and 1 and over two servers; the kernel's CPU and memory
  per row; 10,000 texts embedded in batches. Each against its ideal or floor.

Each figure ends with PASS or FAIL against its target (a multiple of the floor, or a share of
the ideal); the command exits with status 1 when any fails.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import re
import tempfile
import time
import tracemalloc
from typing import Any

import requests

from ollama_magic import Client
from ollama_magic.markdown import render_markdown
from ollama_magic.render import LiveMarkdown
from ollama_magic.testing import FakeOllama, Reply

RESULTS: list[bool] = []

# Targets, as multiples of the floor measured in the same run.
MAX_BYTES = 30.0  # bytes sent while streaming, against the answer sent once
MAX_CPU = 30.0  # CPU while streaming, against one render of the whole answer
MAX_MEMORY = 20.0  # peak memory while streaming, against the answer's text
MAX_STREAM = 2.0  # Client.generate, against requests + json.loads
# %%ollama with live markdown, against requests + json.loads: kernel CPU of the same stream.
MAX_MAGIC_STREAM = 1.3
# One 5 MB line in 100-byte HTTP chunks, against requests + one json.loads: the client reads
# each chunk as it comes (read1, one call per chunk, so that a trickle inside a chunk is seen),
# which costs about 2-3x here; a quadratic parser costs 90x and more.
MAX_LONG_LINE = 5.0


def verdict(ratio: float, target: float) -> str:
    """PASS or FAIL for a ratio against its target, remembered for the exit status."""
    return check(ratio <= target, f"<= {target:g}x")


def check(passed: bool, target: str) -> str:
    """PASS or FAIL, remembered for the exit status, with the target in words."""
    RESULTS.append(passed)
    return f"{'PASS' if passed else 'FAIL'} (target {target})"


class _Sink:
    def display(self, bundle: dict[str, str], metadata: dict[str, Any]) -> _Sink:
        return self

    def update(self, bundle: dict[str, str], metadata: dict[str, Any]) -> None:
        pass


def bench_render(
    paragraphs: int = 2000, tokens_per_second: float = 50.0, fps: float = 10.0
) -> None:
    text = "\n\n".join(
        f"Paragraph {i}: the *model* writes about topic {i % 17}, with `code` and naïve café."
        for i in range(paragraphs)
    )
    tokens = re.findall(r"\s*\S+|\s+", text)

    def stream_through_live(measure_memory: bool) -> tuple[LiveMarkdown, list[int], int, int]:
        now = 0.0
        live = LiveMarkdown(_Sink(), fps=fps, clock=lambda: now)
        frame_lengths = []  # text length at each repaint, to price the whole-answer way
        outputs = peak = 0
        if measure_memory:
            tracemalloc.start()
        for token in tokens:
            now += 1 / tokens_per_second
            before = live.frames
            live.feed(token)
            if live.frames != before:
                frame_lengths.append(live.length)
                outputs = max(outputs, live.outputs)
        if measure_memory:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        live.finish()
        return live, frame_lengths, outputs, peak

    started = time.perf_counter()
    live, frame_lengths, outputs, _ = stream_through_live(measure_memory=False)
    ours_seconds = time.perf_counter() - started
    *_, peak = stream_through_live(measure_memory=True)

    started = time.perf_counter()
    final_html = render_markdown(text)
    floor_seconds = time.perf_counter() - started
    floor_bytes = len(final_html.encode()) + len(text.encode())

    # Whole-answer re-render at the same frames: render a sample of frames for real, and
    # scale (rendering all of them takes minutes, which is the point).
    step = max(1, len(frame_lengths) // 40)
    sample_bytes = sample_seconds = 0.0
    for length in frame_lengths[::step]:
        t0 = time.perf_counter()
        html = render_markdown(text[:length])
        sample_seconds += time.perf_counter() - t0
        sample_bytes += len(html.encode()) + len(text[:length].encode())
    scale = len(frame_lengths) / len(frame_lengths[::step])
    whole_bytes, whole_seconds = sample_bytes * scale, sample_seconds * scale

    print(f"render: {paragraphs} paragraphs, {len(tokens)} tokens, {len(text) / 1000:.0f} KB text")
    print(
        f"  frames: {live.frames} updates in {outputs} outputs (whole-answer: "
        f"{len(frame_lengths)} updates in 1 output)"
    )
    print(
        f"  bytes sent: {live.bytes_sent / 1e6:.1f} MB = {live.bytes_sent / floor_bytes:.1f}x "
        f"floor ({floor_bytes / 1e3:.0f} KB); whole-answer re-render: {whole_bytes / 1e6:.0f} MB"
        f" = {whole_bytes / floor_bytes:.0f}x floor  "
        + verdict(live.bytes_sent / floor_bytes, MAX_BYTES)
    )
    print(
        f"  CPU: {ours_seconds:.2f} s = {ours_seconds / floor_seconds:.0f}x one-shot render "
        f"({floor_seconds * 1e3:.0f} ms); whole-answer re-render: ~{whole_seconds:.0f} s = "
        f"{whole_seconds / floor_seconds:.0f}x  " + verdict(ours_seconds / floor_seconds, MAX_CPU)
    )

    text_bytes = len(text.encode())
    print(
        f"  memory while streaming: peak {peak / 1e6:.2f} MB for {text_bytes / 1e6:.2f} MB of "
        f"text = {peak / text_bytes:.1f}x the text  " + verdict(peak / text_bytes, MAX_MEMORY)
    )


def best_of(times: int, run: Any) -> tuple[float, tuple[Any]]:
    """The fastest of a few runs (seconds) and that run's result."""
    best: tuple[float, tuple[Any]] | None = None
    for _ in range(times):
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[0]:
            best = (elapsed, (result,))
    assert best is not None
    return best


def bench_stream(chunks: int = 20000) -> None:
    words = " ".join(f"w{i % 1000}" for i in range(chunks))
    with FakeOllama() as server:
        server.add_reply("bench", Reply(text=words))
        body = {"model": "llama3.2", "prompt": "bench"}
        # Warm up both paths (connections, caches).
        Client(server.url).generate("llama3.2", "bench").consume()

        def floor_run() -> int:
            with requests.post(
                server.url + "/api/generate", data=json.dumps(body), stream=True
            ) as r:
                return sum(1 for line in r.iter_lines() if line and json.loads(line))

        def ours_run() -> Any:
            stream = Client(server.url).generate("llama3.2", "bench")
            return stream, sum(1 for _ in stream)

        floor, (floor_chunks,) = best_of(3, floor_run)
        ours, ((stream, ours_chunks),) = best_of(3, ours_run)
    assert stream.text == words and ours_chunks == floor_chunks
    print(
        f"stream: {ours_chunks} chunks in {ours:.2f} s ({ours_chunks / ours:,.0f} chunks/s) = "
        f"{ours / floor:.2f}x floor (requests + json.loads: {floor:.2f} s)  "
        + verdict(ours / floor, MAX_STREAM)
    )


_VOCABULARY = (
    "a an the of to in on is it as at by for and or but not we you they this that with from "
    "heat cold gas state energy order chance model data time rate sum mean value bits sign "
    "system measure entropy disorder particle"
)


def answer_tokens(count: int, seed: int = 0) -> list[str]:
    """``count`` tokens of a plausible markdown answer: sentences of words (some ``code`` and
    *emphasis*) in paragraphs, and now and then a list. Joined, they are the answer."""
    rng = random.Random(seed)
    words = _VOCABULARY.split()
    tokens: list[str] = []
    block = 0
    while len(tokens) < count:
        if block % 5 == 3:
            for k in range(rng.randint(3, 6)):
                tokens += ["-", " The", f" {rng.choice(words)}", " of", f" `x{k}`", "\n"]
            tokens.append("\n")
        else:
            for sentence in range(rng.randint(2, 5)):
                for k in range(rng.randint(6, 16)):
                    word = rng.choice(words)
                    if k == 0:
                        word = word.capitalize()
                    elif rng.random() < 0.06:
                        word = f"`{word}()`"
                    elif rng.random() < 0.04:
                        word = f"*{word}*"
                    tokens.append((" " if k or sentence else "") + word)
                tokens.append(".")
            tokens.append("\n\n")
        block += 1
    return tokens[:count]


def _waits() -> int:
    """How many times this thread has waited so far (for a socket, a lock, the GIL: voluntary
    context switches), or -1 where unknown."""
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw  # Linux only
    except (ImportError, AttributeError):
        return -1


def thread_cpu(run: Any) -> tuple[float, int, Any]:
    """CPU seconds of the calling thread while ``run()`` runs, how many times it blocked
    waiting (-1 where unknown), and ``run()``'s result."""
    waits = _waits()
    started = time.thread_time()
    result = run()
    seconds = time.thread_time() - started
    return seconds, _waits() - waits if waits >= 0 else -1, result


#: The magic stream's pace: a token every 0.2 ms (5,000 tokens/s, faster than any local model,
#: so a run takes seconds), each in its own HTTP chunk as Ollama sends them.
MAGIC_STREAM_PACE = 0.0002

_SERVE = """
import sys
sys.path.insert(0, {benchmarks!r})
from run import answer_tokens
from ollama_magic.testing import FakeOllama, Reply
with FakeOllama(token_delay={pace!r}) as server:
    server.add_reply({prompt!r}, Reply(text=answer_tokens({count!r})))
    print(server.url, flush=True)
    sys.stdin.read()  # until the benchmark closes stdin
"""


def bench_magic_stream(count: int = 20000, repeats: int = 3) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config

    tokens = answer_tokens(count)
    text = "".join(tokens)
    prompt = "magic stream bench"
    code = _SERVE.format(
        benchmarks=str(Path(__file__).resolve().parent),
        pace=MAGIC_STREAM_PACE,
        prompt=prompt,
        count=count,
    )
    # The server in a process of its own, as Ollama is: the kernel's CPU is the readers' only.
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdin is not None
    url = server.stdout.readline().strip()
    saved = {name: os.environ.get(name) for name in ("OLLAMA_HOST", "IPYTHONDIR")}
    with tempfile.TemporaryDirectory(prefix="bench-ipython-") as home:
        os.environ["OLLAMA_HOST"] = url
        os.environ["IPYTHONDIR"] = home  # the shell's profile: not the user's
        config = Config()
        config.HistoryManager.enabled = False
        shell = InteractiveShell.instance(config=config)
        shell.extension_manager.load_extension("ollama_magic")
        session = requests.Session()
        client = Client(url)

        def floor_run(question: str = prompt) -> int:
            body = json.dumps({"model": "llama3.2", "prompt": question})
            with session.post(url + "/api/generate", data=body, stream=True) as r:
                return sum(1 for line in r.iter_lines() if line and json.loads(line))

        def client_run(question: str = prompt) -> str:
            stream = client.generate("llama3.2", question)
            for _ in stream:
                pass
            return stream.text

        def magic_run(question: str = prompt) -> Any:
            # capture_output's publisher is a subclass of the terminal's, so the magic takes
            # the notebook path: HTML, one live display updated in place.
            with capture_output() as captured:
                shell.run_cell_magic("ollama", "-m llama3.2", question)
            return captured

        try:
            runs = {"floor": floor_run, "client": client_run, "magic": magic_run}
            for run in runs.values():
                run("Hi")  # warm up: imports, connections
            results: dict[str, Any] = {}
            best = dict.fromkeys(runs, float("inf"))
            for _ in range(repeats):  # alternating, the best of each: the least disturbed
                for name, run in runs.items():
                    seconds, _, results[name] = thread_cpu(run)
                    best[name] = min(best[name], seconds)
        finally:
            shell.extension_manager.unload_extension("ollama_magic")
            atexit.unregister(shell.atexit_operations)
            InteractiveShell.clear_instance()
            client.close()
            session.close()
            server.stdin.close()
            server.wait(10)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    outputs = results["magic"].outputs
    assert results["floor"] == count + 1 and results["client"] == text
    assert any(o.update for o in outputs), "the answer should have been updated in place"
    assert any("text/html" in o.data for o in outputs), "the magic should have rendered HTML"
    assert any(o.data.get("text/plain", "").startswith(text) for o in outputs)
    floor, ours, bare = best["floor"], best["magic"], best["client"]
    print(
        f"magic stream: {count} tokens ({len(text) / 1000:.0f} KB) through %%ollama with live "
        f"markdown in {ours:.2f} s of kernel CPU = {ours / floor:.2f}x floor (requests + "
        f"json.loads: {floor:.2f} s)  " + verdict(ours / floor, MAX_MAGIC_STREAM)
    )
    print(
        f"  Client.generate alone (no rendering, each token read as it comes): {bare:.2f} s = "
        f"{bare / floor:.2f}x floor"
    )


def bench_long_line(megabytes: int = 5, piece: int = 100) -> None:
    import socket
    import threading

    text = "x" * (megabytes * 1_000_000)
    body = json.dumps({"model": "m", "response": text, "done": True}).encode() + b"\n"
    framed = b"".join(
        f"{len(body[i : i + piece]):x}\r\n".encode() + body[i : i + piece] + b"\r\n"
        for i in range(0, len(body), piece)
    )
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
    head += b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:  # read the whole request before answering
                    request += conn.recv(65536)
                headers, _, sent = request.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", headers)
                while length and len(sent) < int(length.group(1)):
                    sent += conn.recv(65536)
                conn.sendall(head + framed + b"0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()

    def floor_run() -> int:
        with requests.post(url + "/api/generate", data=b"{}", stream=True) as r:
            data = b"".join(r.iter_content(chunk_size=None))
        return len(json.loads(data)["response"])

    def ours_run() -> int:
        with Client(url) as client:
            return len(client.generate("m", "x", stream=False).content)

    floor, (floor_length,) = best_of(3, floor_run)
    ours, (ours_length,) = best_of(3, ours_run)
    listener.close()
    assert ours_length == floor_length == len(text)
    print(
        f"long line: {megabytes} MB in {piece}-byte pieces in {ours:.2f} s = {ours / floor:.2f}x "
        f"floor (requests + json.loads: {floor:.2f} s)  " + verdict(ours / floor, MAX_LONG_LINE)
    )


if __name__ == "__main__":
    bench_render()
    bench_stream()
    bench_magic_stream()
    bench_long_line()
    from batch import bench_batch  # beside this file

    bench_batch(check)
    from replay import bench_replay  # beside this file

    bench_replay(check)
    print(f"{sum(RESULTS)} passed, {len(RESULTS) - sum(RESULTS)} failed")
    raise SystemExit(0 if all(RESULTS) else 1)
