"""Nothing piles up: many requests (some failing or interrupted) and many chat widgets leave the
process with as many open files, threads and widget comms as a warm-up left it.

Measured after a warm-up, so that one-time costs (imported modules, the stand-in's listening
socket) are not counted, and once every request the stand-in received is over and the clients
let go of their idle connections. Garbage collected, nothing more may be open than after the
warm-up; before a collection, a connection or two that only garbage still holds is allowed.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable

from _util import wait_until
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from ipywidgets.widgets import widget as widget_module
from test_client import _interrupt_when_blocked_in_recv

from ollama_magic import Cancellation, Client, OllamaError
from ollama_magic.conversation import Conversation
from ollama_magic.testing import Fault, Reply
from ollama_magic.widget import ChatWidget

STORY = " ".join(f"word{i}" for i in range(40))
# Between collections, a connection whose pool only garbage holds stays open: urllib3 2's
# PoolManager.clear() drops its pools without closing them. Two such connections at most (two
# descriptors each here, the client's and the stand-in's, and a stand-in thread each).
FD_SLACK = 4
THREAD_SLACK = 2


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled(server) -> None:
    """Wait until the stand-in is done with every request (its threads then end)."""
    wait_until(lambda: all(r.finished.is_set() for r in server.requests), 10)


def steady(measure: Callable[[], int]) -> int:
    """``measure()`` once it has not changed for 0.1 s: the stand-in's thread for a connection
    the client closed ends a moment later."""
    deadline = time.monotonic() + 5
    value, since = measure(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 0.1:
        time.sleep(0.01)
        now = measure()
        if now != value:
            value, since = now, time.monotonic()
    return value


def collected() -> tuple[int, int]:
    """Open files and threads once garbage is collected: what is really held."""
    gc.collect()
    return steady(open_fds), steady(threading.active_count)


def chat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ollama-chat")]


# -- 500 requests --------------------------------------------------------------------------------


def test_500_requests_100_of_them_failed_or_interrupted_leave_nothing_open(
    fake_ollama, ipython, dead_url, capsys
):
    fake_ollama.add_reply("story", Reply(text=STORY))
    fake_ollama.add_reply("slow", Reply(text=STORY, fault=Fault(delay=0.02)))
    client = Client(fake_ollama.url, timeout=10)
    impatient = Client(fake_ollama.url, timeout=0.2)
    nowhere = Client(dead_url, connect_timeout=1)
    main = threading.get_ident()
    failures: list[str] = []

    def cell(line: str, prompt: str = "story") -> None:
        with capture_output():
            ipython.run_cell_magic("ollama", line, prompt)

    def expect(error_type: type[BaseException], call: Callable[[], object]) -> None:
        try:
            call()
        except error_type as error:
            failures.append(type(error).__name__)
        else:
            raise AssertionError(f"expected {error_type.__name__}")

    def consume_then_interrupt() -> None:
        for _ in client.generate("llama3.2", "story"):
            raise KeyboardInterrupt  # the loop body interrupted, as Ctrl-C in a cell

    def abort_after_first_chunk() -> None:
        stream = client.generate("llama3.2", "slow")
        for _ in stream:
            stream.abort()
        assert stream.aborted
        failures.append("aborted")

    def cancel_from_another_thread() -> None:
        cancel = Cancellation()
        stream = client.chat("llama3.2", [{"role": "user", "content": "slow"}], cancel=cancel)
        next(stream)
        helper = threading.Thread(target=cancel.cancel)
        helper.start()
        helper.join()
        stream.consume()
        failures.append("cancelled")

    def timed_out() -> None:
        fake_ollama.inject(Fault(load_delay=0.3), times=1)  # silent longer than 0.2 s
        expect(OllamaError, lambda: impatient.generate("llama3.2", "story").consume())

    def injected(fault: Fault, error_type: type[BaseException]) -> Callable[[], None]:
        def call() -> None:
            fake_ollama.inject(fault, times=1)
            expect(error_type, lambda: client.generate("llama3.2", "story").consume())

        return call

    def cell_interrupted() -> None:
        before = len(fake_ollama.requests)

        def interrupt() -> None:
            # Two tokens sent and the shell back in recv(): Ctrl-C lands in the blocked read.
            wait_until(
                lambda: (
                    len(fake_ollama.requests) > before
                    and fake_ollama.requests[before].chunks_sent >= 2
                )
            )
            _interrupt_when_blocked_in_recv(main)

        ipython.user_ns.pop("kept", None)
        watcher = threading.Thread(target=interrupt)
        watcher.start()
        expect(KeyboardInterrupt, lambda: cell("llama3.2 -o kept", "slow"))
        watcher.join(10)
        assert ipython.user_ns["kept"].startswith("word0")

    def cell_failing() -> None:
        fake_ollama.inject(Fault(error_after=3, error="model runner stopped"), times=1)
        expect(OllamaError, lambda: cell("llama3.2 --chat"))

    good: list[Callable[[], object]] = [
        lambda: client.generate("llama3.2", "story").consume(),
        lambda: client.generate("llama3.2", "story", stream=False),
        lambda: client.chat("llama3.2", [{"role": "user", "content": "story"}]).consume(),
        lambda: client.chat("qwen3", [{"role": "user", "content": "hi"}], stream=False),
        lambda: client.list(),
        lambda: client.ps(),
        lambda: client.version(),
        lambda: client.show("llama3.2"),
        lambda: client.embed("all-minilm", ["a", "b"]),
        lambda: impatient.generate("llama3.2", "story", stream=False),
        lambda: [chunk for chunk in client.generate("llama3.2", "story")],
        lambda: client.is_running(),
        lambda: cell("llama3.2"),
        lambda: cell("llama3.2 -o answer"),
        lambda: cell("llama3.2 --chat"),
        lambda: cell("llama3.2 --plain"),
        lambda: cell("llama3.2 -q -o quiet"),
        lambda: cell("llama3.2 --no-stream"),
        lambda: cell("llama3.2 -f json", "a JSON object please"),
        lambda: cell("qwen3 --think"),
    ]
    bad: list[Callable[[], object]] = [
        injected(Fault(error_after=2, error="CUDA error"), OllamaError),
        injected(Fault(cut_after=2), OllamaError),
        injected(Fault(status=500, error="runner died"), OllamaError),
        injected(Fault(status=500, error="reset", reset_connection=True), OllamaError),
        lambda: expect(KeyboardInterrupt, consume_then_interrupt),
        abort_after_first_chunk,
        cancel_from_another_thread,
        lambda: expect(OllamaError, lambda: client.generate("no-such-model", "hi").consume()),
        lambda: expect(OllamaError, lambda: nowhere.generate("llama3.2", "hi").consume()),
        lambda: expect(OllamaError, lambda: cell("no-such-model")),
        cell_failing,
        cell_interrupted,
        timed_out,
    ]
    magics = ipython.magics_manager.registry["OllamaMagics"]
    clients = [client, impatient, nowhere, magics.workspace.client()]

    # 20 rounds of 25 requests: the 20 good kinds, and 5 failed or interrupted ones in turn.
    # After each round the pools let go of their idle keep-alive connections (close() keeps a
    # client usable), so what stays open is what leaked, or waits for the garbage collector.
    figures: list[tuple[int, int]] = []
    sent = 0
    for round_ in range(20):
        for call in good + [bad[(round_ * 5 + i) % len(bad)] for i in range(5)]:
            call()
            sent += 1
        magics.workspace.conversations["default"].reset()  # it grows with each --chat: not a leak
        for each in clients:
            each.close()
        settled(fake_ollama)
        figures.append((steady(open_fds), steady(threading.active_count)))
        if round_ == 1:
            fds, threads = collected()  # the floor after a warm-up of two rounds
    assert sent == 500 and len(failures) == 100, (sent, len(failures))
    last_fds, last_threads = collected()
    with capsys.disabled():
        print(
            f"\n500 requests (100 failed or interrupted): fds {fds} -> {last_fds}, threads "
            f"{threads} -> {last_threads}; (fds, threads) after each round {figures}"
        )
    assert last_fds <= fds and last_threads <= threads, "something stays open for good"
    assert max(f for f, _ in figures[2:]) <= fds + FD_SLACK, f"open files grew: {figures}"
    assert max(t for _, t in figures[2:]) <= threads + THREAD_SLACK, f"threads grew: {figures}"


# -- 20 widgets ------------------------------------------------------------------------------------


def live_widgets() -> set[str]:
    """The ids of all widgets with a comm open (each is a model in the frontend)."""
    return set(widget_module._instances)


def shown(widget) -> str:
    """The HTML of every widget inside ``widget``."""
    own = widget.value if isinstance(getattr(widget, "value", None), str) else ""
    return own + "".join(shown(child) for child in getattr(widget, "children", ()))


def use_and_close(server, number: int) -> None:
    """Make a chat widget, have it answer, stop or fail, then close it."""
    chat = ChatWidget("llama3.2", host=server.url, session=Conversation(f"hygiene-{number}"))
    try:
        chat.ask("story")
        assert chat.wait(10)
        assert chat.messages[-1]["content"] == STORY
        if number % 3 == 1:  # stopped part-way: the partial answer is kept
            chat.ask("slow")
            wait_until(lambda: "word1" in shown(chat.message_list), 10)
            chat.stop()
            assert chat.wait(10)
            assert chat.messages[-1]["content"].startswith("word0")
        elif number % 3 == 2:  # a failed turn
            server.inject(Fault(error_after=2, error="model runner stopped"), times=1)
            chat.ask("story")
            assert chat.wait(10)
            assert "model runner stopped" in chat.status.value and len(chat.messages) == 2
    finally:
        chat.close()


def test_20_widgets_created_used_and_closed_leave_no_files_threads_or_comms(fake_ollama, capsys):
    # No shell: each widget makes its own client, and must close it.
    assert not InteractiveShell.initialized(), "a shell left by another test: widgets share it"
    fake_ollama.add_reply("story", Reply(text=STORY))
    fake_ollama.add_reply("slow", Reply(text=STORY, fault=Fault(delay=0.05)))
    for number in range(3):  # warm-up
        use_and_close(fake_ollama, number)
    settled(fake_ollama)
    (fds, threads), comms = collected(), live_widgets()
    for number in range(3, 20):
        use_and_close(fake_ollama, number)
    settled(fake_ollama)
    last_fds, last_threads = steady(open_fds), steady(threading.active_count)
    with capsys.disabled():
        print(
            f"\n20 widgets: fds {fds} -> {last_fds}, threads {threads} -> {last_threads}, "
            f"open widget comms {len(comms)} -> {len(live_widgets())}"
        )
    assert not chat_threads(), "a chat thread outlived its widget"
    assert live_widgets() <= comms, "every widget of every chat closed its comm"
    assert last_fds <= fds + FD_SLACK
    assert last_threads <= threads + THREAD_SLACK
