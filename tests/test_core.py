"""The shared core: ask() with a stop signal, as the chat widget uses it from a thread."""

from __future__ import annotations

import threading

import pytest
from _util import wait_until

from ollama_magic import Client
from ollama_magic.client import Cancellation
from ollama_magic.conversation import Conversation, ConversationBusy
from ollama_magic.core import AnswerView, Request, ask
from ollama_magic.testing import Fault, Reply


class Collect(AnswerView):
    def __init__(self) -> None:
        self.text = ""
        self.outcome = None

    def thinking(self, text):
        pass

    def content(self, text):
        self.text += text

    def finish(self, outcome):
        self.outcome = outcome


def test_stop_from_another_thread_ends_the_answer_and_keeps_the_partial_text(fake_ollama):
    fake_ollama.add_reply("slow", Reply(text="one two three four five", fault=Fault(delay=2.0)))
    conversation = Conversation()
    messages = [{"role": "user", "content": "slow"}]
    request = Request("chat", {"model": "llama3.2", "messages": messages, "stream": True})
    view, stop = Collect(), Cancellation()
    worker = threading.Thread(
        target=ask, args=(Client(fake_ollama.url), request, view, conversation, stop)
    )
    worker.start()
    wait_until(lambda: view.text)  # the first token arrived; the next is 2 s away
    stop.cancel()
    worker.join(1.5)
    assert not worker.is_alive(), "Stop must wake the read, not wait for the next token"
    assert view.outcome.stopped and view.text == "one"
    assert conversation.messages == [
        {"role": "user", "content": "slow"},
        {"role": "assistant", "content": "one"},
    ]
    request_log = fake_ollama.last_request("/api/chat")
    assert request_log.finished.wait(5) and request_log.client_disconnected


def test_a_stop_before_the_stream_starts_stops_it_at_once(fake_ollama):
    stop = Cancellation()
    stop.cancel()
    request = Request("generate", {"model": "llama3.2", "prompt": "hi", "stream": True})
    outcome = ask(Client(fake_ollama.url), request, Collect(), stop=stop)
    assert outcome.stopped and outcome.result is None


def test_one_turn_at_a_time_on_a_conversation(ipython, fake_ollama):
    magics = ipython.magics_manager.registry["OllamaMagics"]
    conversation = magics.workspace.conversations["default"]
    conversation.begin_turn()  # as a chat widget streaming on it does
    try:
        with pytest.raises(ConversationBusy, match="busy with another answer"):
            ipython.run_cell_magic("ollama", "llama3.2 --chat -q", "hi")
        assert fake_ollama.last_request("/api/chat") is None
    finally:
        conversation.end_turn()
    ipython.run_cell_magic("ollama", "llama3.2 --chat -q", "hi")
    assert len(conversation) == 2 and not conversation.busy


def test_a_failing_listener_does_not_fail_the_turn(fake_ollama, caplog):
    conversation = Conversation()
    conversation.changed.append(lambda c: 1 / 0)
    seen = []
    conversation.changed.append(lambda c: seen.append(len(c)))
    request = Request(
        "chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    )
    outcome = ask(Client(fake_ollama.url), request, Collect(), conversation)
    assert outcome.result is not None and len(conversation) == 2
    assert seen == [2], "the other listeners still hear of the change"
    assert "a conversation listener failed" in caplog.text


def test_recording_a_system_prompt_notifies_outside_the_lock():
    # A listener (a widget) takes its own lock; another thread holding that lock reads the
    # conversation. Notifying while the conversation is locked would deadlock the two.
    conversation = Conversation()
    widget_lock = threading.Lock()
    holding, listening = threading.Event(), threading.Event()

    def listener(c):
        listening.set()
        with widget_lock:
            pass

    def widget_thread():
        with widget_lock:
            holding.set()
            listening.wait(5)
            _ = conversation.messages  # needs the conversation's lock

    conversation.changed.append(listener)
    reader = threading.Thread(target=widget_thread, daemon=True)
    reader.start()
    holding.wait(5)
    writer = threading.Thread(
        target=conversation.record,
        args=([{"role": "user", "content": "q"}],),
        kwargs={"system": "Be brief."},
        daemon=True,
    )
    writer.start()
    writer.join(5)
    reader.join(5)
    assert not writer.is_alive() and not reader.is_alive(), "deadlock"
    assert conversation.system == "Be brief." and len(conversation) == 2


class Pausing(Collect):
    """A view that, like the notebook's, lets tokens gather until its next frame."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.pauses = seconds, 0

    def pause(self):
        self.pauses += 1
        return self.seconds


def test_a_view_that_pauses_between_frames_still_gets_every_token_in_order(fake_ollama):
    words = [f" w{i}" for i in range(60)]
    fake_ollama.add_reply("paced", Reply(text=words, fault=Fault(delay=0.002)))
    view = Pausing(0.03)
    request = Request("generate", {"model": "llama3.2", "prompt": "paced", "stream": True})
    outcome = ask(Client(fake_ollama.url), request, view)
    assert outcome.text == view.text == "".join(words) and outcome.result is not None
    # Tokens that gathered during a pause were read in one go, without pausing again.
    assert 0 < view.pauses < len(words) // 2


def test_the_notebook_view_pauses_reading_only_after_its_first_second_until_a_frame():
    from ollama_magic.views import NotebookView

    class Sink:
        def display(self, bundle, metadata):
            return self

        def update(self, bundle, metadata):
            pass

    now = [100.0]
    view = NotebookView(sink=Sink(), fps=4, clock=lambda: now[0])
    now[0] += 30  # the model loaded for 30 s: the first second counts from the first token
    view.content("Hello")
    assert view.pause() == 0.0  # a short answer ends without waiting
    now[0] += 1.5
    view.content(" world")  # a frame is painted now
    assert view.pause() == pytest.approx(0.25)
    now[0] += 0.1
    assert view.pause() == pytest.approx(0.15)
    now[0] += 0.5
    assert view.pause() == 0.0  # a frame is due: read at once


def test_stop_wakes_a_paused_read_at_once(fake_ollama):
    words = [f" w{i}" for i in range(400)]
    fake_ollama.add_reply("long", Reply(text=words, fault=Fault(delay=0.005)))
    view, stop = Pausing(30.0), Cancellation()  # a view that would pause for ever
    request = Request("generate", {"model": "llama3.2", "prompt": "long", "stream": True})
    worker = threading.Thread(target=ask, args=(Client(fake_ollama.url), request, view, None, stop))
    worker.start()
    wait_until(lambda: view.pauses)
    stop.cancel()
    worker.join(1.0)
    assert not worker.is_alive(), "Stop must end a paused answer at once"
    assert view.outcome.stopped and view.text and len(view.text) < len("".join(words))
