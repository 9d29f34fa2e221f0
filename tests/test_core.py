"""The shared core: ask() with a stop signal, as the chat widget uses it from a thread."""

from __future__ import annotations

import threading

from _util import wait_until

from ollama_magic import Client
from ollama_magic.conversation import Conversation
from ollama_magic.core import Request, StopSignal, ask
from ollama_magic.testing import Fault, Reply


class Collect:
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
    view, stop = Collect(), StopSignal()
    worker = threading.Thread(
        target=ask, args=(Client(fake_ollama.url), request, view, conversation, stop)
    )
    worker.start()
    wait_until(lambda: view.text)  # the first token arrived; the next is 2 s away
    stop.stop()
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
    stop = StopSignal()
    stop.stop()
    request = Request("generate", {"model": "llama3.2", "prompt": "hi", "stream": True})
    outcome = ask(Client(fake_ollama.url), request, Collect(), stop=stop)
    assert outcome.stopped and outcome.result is None
