"""Replay figures: what recording costs a streamed answer, and how fast a recording replays.

Run by benchmarks/run.py; each figure against a floor measured in the same run.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from ollama_magic import Client
from ollama_magic.recording import Recordings
from ollama_magic.replay import Replay, ReplaySwitch
from ollama_magic.testing import FakeOllama, Reply

#: Recording a streamed answer, against the same stream not recorded.
MAX_RECORDING = 1.5
#: A --fast replay from the file, against requests + json.loads of the live stream.
MAX_REPLAY = 1.0


def _best(times: int, run: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def bench_replay(check: Callable[[bool, str], str], chunks: int = 20000) -> None:
    words = " ".join(f"w{i % 1000}" for i in range(chunks))
    with tempfile.TemporaryDirectory() as folder, FakeOllama() as server:
        server.add_reply("bench", Reply(text=words))
        body = {"model": "llama3.2", "prompt": "bench"}
        plain = Client(server.url)
        recorded = Client(server.url)
        switch = ReplaySwitch()
        recorded.recorder = switch
        recordings = Recordings(Path(folder) / "r.sqlite")
        switch.active = Replay(recordings, "record")
        plain.generate("llama3.2", "bench").consume()  # warm up connections and caches

        def floor_run() -> None:
            with requests.post(
                server.url + "/api/generate", data=json.dumps(body), stream=True
            ) as response:
                assert sum(1 for line in response.iter_lines() if line and json.loads(line))

        live = _best(3, lambda: plain.generate("llama3.2", "bench").consume())
        recording = _best(3, lambda: recorded.generate("llama3.2", "bench").consume())
        floor = _best(3, floor_run)
        switch.active = Replay(recordings, "strict", fast=True)
        answer = recorded.generate("llama3.2", "bench", stream=False)
        assert answer.content == words and answer.recorded_at
        replay = _best(3, lambda: recorded.generate("llama3.2", "bench").consume())
        size = (Path(folder) / "r.sqlite").stat().st_size
        recordings.close()
    print(
        f"replay, recording a {chunks}-chunk answer: {recording:.2f} s = "
        f"{recording / live:.2f}x the same stream unrecorded ({live:.2f} s)  "
        + check(recording / live <= MAX_RECORDING, f"<= {MAX_RECORDING:g}x")
    )
    print(
        f"replay, --fast from the file: {replay:.2f} s = {replay / floor:.2f}x floor "
        f"(requests + json.loads of the live stream: {floor:.2f} s); file "
        f"{size / 1e6:.1f} MB for 3 takes, {size / 3 / chunks:.0f} B a chunk  "
        + check(replay / floor <= MAX_REPLAY, f"<= {MAX_REPLAY:g}x")
    )
