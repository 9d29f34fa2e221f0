"""The chat widget, driven in-process against the stand-in server over real HTTP.

Widgets need no kernel here (comm falls back to a dummy), so each test sets the input's value,
presses Send through ``Button.click()`` and waits on a condition with a deadline.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from html.parser import HTMLParser

import ipywidgets as w
import pytest
from _util import wait_until
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from ollama_magic.conversation import Conversation, ConversationBusy
from ollama_magic.core import Outcome, Request
from ollama_magic.errors import OllamaError
from ollama_magic.testing import Fault, Reply
from ollama_magic.types import Metrics, Result
from ollama_magic.widget import ChatWidget
from ollama_magic.widget_html import close_tree, message_html
from ollama_magic.widget_turn import BubbleView, Question, ending

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def chat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ollama-chat")]


def live_widgets() -> set[str]:
    """The ids of all widgets with a comm open (each is a model in the frontend)."""
    from ipywidgets.widgets import widget

    return set(widget._instances)


@pytest.fixture
def open_widget(fake_ollama):
    """Make chat widgets on the stand-in (each on its own conversation unless told)."""
    made: list[ChatWidget] = []

    def make(*args, **kwargs) -> ChatWidget:
        kwargs.setdefault("host", fake_ollama.url)
        kwargs.setdefault("session", Conversation("test"))
        widget = ChatWidget(*args, **kwargs)
        made.append(widget)
        return widget

    yield make
    for widget in made:
        widget.close()
    assert not chat_threads(), "a chat thread outlived its widget"


def html_values(widget: w.Widget) -> list[str]:
    """Every HTML widget value inside ``widget`` (what the frontend would put in the page)."""
    values = [widget.value] if isinstance(widget, w.HTML) else []
    for child in getattr(widget, "children", ()):
        values += html_values(child)
    return values


def transcript(chat: ChatWidget) -> str:
    """The message list's HTML, as shown."""
    return "".join(html_values(chat.message_list))


def text_of(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def status(chat: ChatWidget) -> str:
    return text_of(chat.status.value)


def send(chat: ChatWidget, text: str) -> None:
    chat.input.value = text
    chat.send_button.click()


def finish(chat: ChatWidget, timeout: float = 10.0) -> None:
    assert chat.wait(timeout), "the answer did not end in time"
    assert not chat.busy


def test_an_answer_streams_into_the_last_message_and_renders_as_markdown(open_widget, fake_ollama):
    answer = "Here is **bold** text.\n\n- first item\n- second item\n- third item\n"
    fake_ollama.add_reply("list please", Reply(text=answer, fault=Fault(delay=0.05)))
    chat = open_widget("llama3.2")
    send(chat, "list please")
    assert chat.input.value == "", "the box empties once the message is on its way"
    assert "list please" in transcript(chat), "the question shows at once"

    snapshots: list[str] = []

    def record() -> bool:
        text = text_of(transcript(chat))
        if not snapshots or snapshots[-1] != text:
            snapshots.append(text)
        return not chat.busy

    wait_until(record, 10)
    partial = [s for s in snapshots if "bold" in s and "third item" not in s]
    assert len(partial) >= 3, f"expected the answer to grow in frames, saw {snapshots}"
    items = [s.count(" item") for s in snapshots]
    assert items == sorted(items) and items[-1] == 3, "the list grows item by item"

    final = chat.message_list.children[-1].value
    assert "<strong>bold</strong>" in final and final.count("<li>") == 3
    assert "om-assistant" in chat.message_list.children[-1]._dom_classes
    assert "om-user" in chat.message_list.children[0]._dom_classes
    assert re.search(r"\d+ tokens · [\d.]+ tokens/s", status(chat))
    assert chat.messages == [
        {"role": "user", "content": "list please"},
        {"role": "assistant", "content": answer},
    ]


def stream_into_bubble(text: str) -> tuple[BubbleView, int, float]:
    """Stream ``text`` into a live bubble at 50 tokens a second of a fake clock.

    Returns the view, the bytes of HTML sent to the frontend, and the seconds it took.
    """
    clock = [0.0]
    view = BubbleView(fps=10, clock=lambda: clock[0])
    sent = [0]
    watched: set[int] = set()

    def count(change):
        sent[0] += len(change["new"].encode())

    def watch(_=None):
        for child in view.bubble.children:
            if id(child) not in watched:
                watched.add(id(child))
                sent[0] += len(child.value.encode())
                child.observe(count, names="value")

    view.bubble.observe(watch, names="children")
    watch()
    for token in (text[i : i + 8] for i in range(0, len(text), 8)):
        clock[0] += 1 / 50
        view.content(token)
    return view, sent[0], clock[0]


def test_one_long_code_block_streams_in_linear_bytes():
    # One unfinished block is resent whole in each frame: frames must be spaced by its size.
    code = "```python\n" + "".join(f"x_{i} = compute({i}, 'value')\n" for i in range(2000)) + "```"
    assert len(code) > 50_000
    view, sent, duration = stream_into_bubble(code)
    shown = "".join(html_values(view.bubble))
    assert "x_1900 = compute(1900" in shown, "the block is on screen as it grows"
    assert view.frames <= duration * 10 + 1, "at most 10 frames a second"
    assert sent < 60 * len(code), f"{sent} bytes for a {len(code)} byte answer"
    half, half_sent, _ = stream_into_bubble(code[: len(code) // 2])
    assert sent / half_sent < 2.6, "twice the block costs about twice the bytes"
    for each in (view, half):
        close_tree(each.bubble)


def test_stop_ends_a_slow_answer_at_once_and_keeps_the_partial_text(open_widget, fake_ollama):
    fake_ollama.add_reply("slow", Reply(text="one two three four", fault=Fault(delay=1.5)))
    chat = open_widget("llama3.2")
    send(chat, "slow")
    wait_until(lambda: "one" in text_of(transcript(chat)), 10)
    worker = chat._turn.thread
    started = time.monotonic()
    chat.stop_button.click()
    worker.join(5)
    latency = time.monotonic() - started
    assert not worker.is_alive()
    assert latency < 0.3, f"Stop took {latency:.3f} s; the next token was 1.5 s away"
    print(f"Stop latency: {latency * 1000:.1f} ms")

    last = chat.message_list.children[-1].value
    assert "one" in last and "two" not in last and "stopped" in last
    assert "stopped" in status(chat)
    assert chat.messages[-1] == {"role": "assistant", "content": "one"}
    request = fake_ollama.last_request("/api/chat")
    assert request.finished.wait(5) and request.client_disconnected, "Ollama stops generating"

    # Ready again at once.
    assert not chat.busy and chat.stop_button.disabled
    fake_ollama.add_reply("again", "Back.")
    send(chat, "again")
    finish(chat)
    assert chat.messages[-1]["content"] == "Back."


def test_send_clicked_before_the_boxs_text_arrives_sends_that_text(open_widget, fake_ollama):
    # In a kernel the click and the box's text come on different comms, which can be handled
    # on different threads (the button's on the main shell, the box's on the widget
    # subshell): the click can be handled before the text the box showed has arrived.
    fake_ollama.add_reply("late", "It arrived.")
    chat = open_widget("llama3.2")
    statuses: list[str] = []
    chat.status.observe(lambda change: statuses.append(text_of(change["new"])), names="value")
    chat.send_button.click()  # the box is still empty in the kernel
    arrives = threading.Thread(target=setattr, args=(chat.input, "value", "the late text"))
    arrives.start()
    arrives.join()
    wait_until(lambda: len(chat.messages) == 2)
    finish(chat)
    assert [m["content"] for m in chat.messages] == ["the late text", "It arrived."]
    assert chat.input.value == ""
    assert not [s for s in statuses if "Nothing to send" in s], statuses

    chat.send_button.click()  # an empty box, and nothing comes: said after a moment
    wait_until(lambda: "Nothing to send" in status(chat), 5)
    assert len(chat.messages) == 2 and not chat.busy


def test_stop_before_the_first_word_gives_the_text_back(open_widget, fake_ollama):
    fake_ollama.add_reply("wait", Reply(text="late", fault=Fault(delay=3.0)))
    chat = open_widget("llama3.2")
    send(chat, "wait for it")
    wait_until(lambda: fake_ollama.last_request("/api/chat"))
    chat.stop()
    finish(chat, 2)
    assert chat.input.value == "wait for it"
    assert chat.messages == [] and "wait for it" not in transcript(chat)
    assert "before the answer began" in status(chat)


def test_stop_while_thinking_keeps_the_reasoning_shown_and_retry_asks_again(
    open_widget, fake_ollama
):
    reasoning = "First I consider the question carefully, then I weigh every option."
    fake_ollama.add_reply(
        "ponder", Reply(text="Forty-two.", thinking=reasoning, fault=Fault(delay=0.4))
    )
    chat = open_widget("qwen3", think=True)
    send(chat, "ponder this")
    wait_until(lambda: "consider" in text_of(transcript(chat)))
    chat.stop()
    finish(chat)
    shown = text_of(transcript(chat))
    assert "First I consider" in shown, "the reasoning the user saw stays on screen"
    assert "stopped while thinking" in shown and "ponder this" in shown
    assert "thinking" in status(chat) and chat.messages == [], "but it is not a turn"

    fake_ollama.add_reply("ponder", Reply(text="Forty-two.", thinking=reasoning))
    chat.retry_button.click()
    finish(chat)
    assert [m["content"] for m in chat.messages] == ["ponder this", "Forty-two."]
    shown = text_of(transcript(chat))
    assert "stopped while thinking" not in shown and shown.count("ponder this") == 1


def test_sending_while_an_answer_streams_is_refused_visibly(open_widget, fake_ollama):
    fake_ollama.add_reply("slow", Reply(text="one two three", fault=Fault(delay=1.5)))
    chat = open_widget("llama3.2")
    send(chat, "slow")
    wait_until(lambda: "one" in text_of(transcript(chat)))
    send(chat, "and another thing")
    assert "still streaming" in status(chat)
    assert chat.input.value == "and another thing", "the refused text stays in the box"
    assert len([r for r in fake_ollama.requests if r.path == "/api/chat"]) == 1
    chat.stop()
    finish(chat)


def test_an_unknown_model_is_one_inline_line_and_retry_sends_again(open_widget, fake_ollama):
    chat = open_widget("no-such-model")
    send(chat, "hello?")
    finish(chat)
    line = status(chat)
    assert "no-such-model" in line and "is not on the Ollama server" in line
    assert "Traceback" not in line and "om-error" in chat.status.value
    assert chat.messages == [], "a failed turn is not part of the conversation"
    assert "hello?" in transcript(chat), "but the question is still on screen"

    chat.model = "llama3.2"
    chat.retry_button.click()
    finish(chat)
    assert [m["role"] for m in chat.messages] == ["user", "assistant"]
    assert chat.messages[0]["content"] == "hello?"
    assert text_of(transcript(chat)).count("hello?") == 2  # asked once, echoed in the answer


def test_a_server_fault_mid_stream_keeps_the_partial_answer_marked_failed(open_widget, fake_ollama):
    fake_ollama.add_reply("fragile", "alpha beta gamma delta epsilon")
    fake_ollama.inject(Fault(error_after=3, error="CUDA out of memory"), endpoint="/api/chat")
    chat = open_widget("llama3.2")
    send(chat, "fragile")
    finish(chat)
    assert "CUDA out of memory" in status(chat)
    last = chat.message_list.children[-1]
    assert "alpha beta" in last.value and "failed" in last.value
    assert "om-failed" in last._dom_classes
    assert chat.messages == []


# -- how a turn ends: decided by one function, without widgets ---------------------------------

QUESTION = {"role": "user", "content": "What is 2 + 2?"}
OLD_TURN = (QUESTION, {"role": "assistant", "content": "Four."})


def outcome(
    text: str = "",
    thinking: str = "",
    *,
    complete: bool = False,
    stopped: bool = False,
    error: OllamaError | None = None,
) -> Outcome:
    """What ``ask`` returns for the question: a complete answer has a result with metrics."""
    request = Request("chat", {"model": "llama3.2", "messages": [QUESTION]})
    metrics = Metrics(eval_count=12, eval_duration=10**9)
    result = Result("llama3.2", text, done_reason="stop", metrics=metrics) if complete else None
    return Outcome(request, text, thinking, result, error=error, stopped=stopped)


def test_a_complete_answer_is_kept_and_the_status_gives_its_speed():
    end = ending(outcome("Four.", complete=True), None, Question(QUESTION, from_input=True))
    assert end.kept and not end.dimmed and end.restore == ()
    assert (end.status, end.kind) == ("llama3.2 · 12 tokens · 12.0 tokens/s", "ok")
    assert end.note == "" and end.partial is None and end.text_back is None


def test_an_answer_stopped_after_some_text_is_kept_marked_stopped():
    end = ending(outcome("Fo", stopped=True), None, Question(QUESTION, from_input=True))
    assert end.kept and not end.dimmed and end.text_back is None
    assert end.note == "■ stopped", "under the answer"
    assert (end.status, end.kind) == ("llama3.2 · stopped", "info")


def test_a_stop_before_the_first_word_puts_the_typed_text_back_in_the_box():
    end = ending(outcome(stopped=True), None, Question(QUESTION, from_input=True))
    assert not end.kept and not end.dimmed and end.partial is None and end.restore == ()
    assert end.text_back == "What is 2 + 2?", "as if it had never been sent"
    assert (end.status, end.kind) == ("Stopped before the answer began.", "info")
    from_code = ending(outcome(stopped=True), None, Question(QUESTION, from_input=False))
    assert from_code.text_back is None, "text sent from code does not land in the box"


def test_a_failure_mid_answer_shows_the_question_and_the_partial_answer_dimmed():
    error = OllamaError("CUDA out of memory", hint="Try a smaller model.")
    end = ending(outcome("Two plus", error=error), None, Question(QUESTION, from_input=True))
    assert not end.kept and end.dimmed and end.restore == () and end.text_back is None
    assert end.partial == {"role": "assistant", "content": "Two plus"}
    shown = message_html(end.partial or {}, end.partial_note, bad=True)
    assert "Two plus" in shown and "✖ failed: not kept" in shown and "om-bad" in shown
    assert end.kind == "error"
    assert end.status == "✖ CUDA out of memory — Try a smaller model. (Retry sends it again)"

    before_a_word = ending(outcome(error=error), None, Question(QUESTION))
    assert before_a_word.dimmed and before_a_word.partial is None, "only the question shows"


def test_a_stop_while_thinking_keeps_the_reasoning_shown_dimmed():
    end = ending(outcome(thinking="Let me add.", stopped=True), None, Question(QUESTION, True))
    assert not end.kept and end.dimmed and end.text_back is None
    assert end.partial == {"role": "assistant", "content": "", "thinking": "Let me add."}
    assert end.partial_note == "■ stopped while thinking: not kept"
    assert end.status == "Stopped while the model was thinking (Retry asks again)."


def test_a_crash_in_the_turn_is_shown_like_a_failure():
    end = ending(outcome(), RuntimeError("the disk is on fire"), Question(QUESTION))
    assert end.dimmed and not end.kept and end.kind == "error"
    assert end.status == "✖ RuntimeError: the disk is on fire (Retry sends it again)"


def test_a_retry_that_fails_or_stops_early_gives_the_old_answer_back():
    retry = Question(QUESTION, from_input=False, undo=OLD_TURN)
    failed = ending(outcome(error=OllamaError("model 'x' not found")), None, retry)
    assert failed.restore == OLD_TURN, "back in the conversation, so back on screen"
    assert not failed.kept and not failed.dimmed and failed.partial is None
    assert (failed.status, failed.kind) == (
        "✖ model 'x' not found (the previous answer is kept)",
        "error",
    )
    stopped = ending(outcome(stopped=True), None, retry)
    assert stopped.restore == OLD_TURN and not stopped.dimmed and stopped.text_back is None
    assert (stopped.status, stopped.kind) == ("Stopped; the previous answer is kept.", "info")
    answered = ending(outcome("4", complete=True), None, retry)
    assert answered.kept and answered.restore == (), "the new answer replaces the old"


class BrokenConversation(Conversation):
    """A conversation whose storage fails when an answer is recorded (a bug, say)."""

    def record(self, messages, **kwargs):
        if any(m.get("role") == "assistant" for m in messages):
            raise RuntimeError("the disk is on fire")
        super().record(messages, **kwargs)


def test_unexpected_errors_show_in_the_widget_not_in_the_log(open_widget, fake_ollama):
    chat = open_widget("llama3.2", session=BrokenConversation("broken"))
    send(chat, "hello")
    finish(chat)
    assert "RuntimeError: the disk is on fire" in status(chat)
    (stderr,) = chat.out.outputs
    assert "Traceback" in stderr["text"] and "the disk is on fire" in stderr["text"]

    chat.conversation.reset = lambda **_: 1 / 0  # a button handler that fails
    chat.clear_button.click()  # must not raise into the frontend's comm handler
    assert "ZeroDivisionError: division by zero" in status(chat)


def test_a_bug_in_the_widgets_redraw_stays_in_the_widget(open_widget, fake_ollama):
    conversation = Conversation("buggy")
    chat = open_widget("llama3.2", session=conversation)
    chat._sync = lambda *args, **kwargs: 1 / 0  # a bug in drawing the messages
    conversation.append({"role": "user", "content": "from a cell"})  # the caller is unharmed
    assert conversation.messages[-1]["content"] == "from a cell"
    assert "ZeroDivisionError" in status(chat)
    assert "Traceback" in chat.out.outputs[-1]["text"]


def test_a_failing_listener_of_someone_else_does_not_upset_the_widget(open_widget, fake_ollama):
    conversation = Conversation("shared with a bad neighbour")

    def broken(_):
        raise RuntimeError("a neighbour's bug")

    conversation.changed.append(broken)
    chat = open_widget("llama3.2", session=conversation)
    conversation.changed.insert(0, broken)  # before and after the widget's own
    fake_ollama.add_reply("hello", "Hi there.")
    send(chat, "hello")
    finish(chat)
    assert "Hi there." in text_of(transcript(chat)) and "tokens/s" in status(chat)
    conversation.append({"role": "user", "content": "typed in a cell"})
    assert "typed in a cell" in text_of(transcript(chat))
    assert chat.out.outputs == (), "nothing of the neighbour's bug shows in the widget"


def test_a_session_is_shared_with_the_magic_both_ways(ipython, fake_ollama):
    fake_ollama.add_reply("first", "Answer one.")
    fake_ollama.add_reply("second", "Answer two.")
    fake_ollama.add_reply("third", "Answer three.")
    with capture_output():
        ipython.run_cell_magic("ollama", "--chat --session s -m qwen3", "first question")
    chat = ChatWidget(session="s")  # finds the shell's magics and their conversations
    try:
        assert "Answer one." in transcript(chat)
        assert chat.model == "qwen3:latest", "continues with the session's model"

        send(chat, "second question")
        finish(chat)
        magics = ipython.magics_manager.registry["OllamaMagics"]
        conversation = magics.workspace.conversations["s"]
        assert chat.conversation is conversation
        assert [m["content"] for m in conversation.messages] == [
            "first question",
            "Answer one.",
            "second question",
            "Answer two.",
        ]

        with capture_output():
            ipython.run_cell_magic("ollama", "--chat --session s", "third question")
        sent = fake_ollama.last_request("/api/chat").body["messages"]
        assert [m["content"] for m in sent][2:] == [
            "second question",
            "Answer two.",
            "third question",
        ]
        shown = text_of(transcript(chat))
        assert "third question" in shown and "Answer three." in shown, "the cell's turn shows"
        assert len(chat.message_list.children) == 6
    finally:
        chat.close()


def test_the_magic_is_refused_while_the_widget_answers_on_its_session(ipython, fake_ollama):
    fake_ollama.add_reply("slow", Reply(text="one two three", fault=Fault(delay=0.5)))
    chat = ChatWidget("llama3.2", session="busy")
    try:
        send(chat, "slow")
        wait_until(lambda: "one" in text_of(transcript(chat)))
        with capture_output(), pytest.raises(ConversationBusy, match="busy"):
            ipython.run_cell_magic("ollama", "--chat --session busy", "cut in")
        assert chat.busy and not chat.stop_button.disabled, "the widget's answer goes on"
        finish(chat)
        assert [m["content"] for m in chat.messages] == ["slow", "one two three"]
        assert [r.prompt for r in fake_ollama.requests if r.path == "/api/chat"] == ["slow"]

        # The other way round: the session is busy while a cell answers.
        chat.conversation.begin_turn()  # a cell's turn, as the magic takes it
        try:
            send(chat, "me now")
            assert "busy with another answer" in status(chat) and chat.input.value == "me now"
        finally:
            chat.conversation.end_turn()
    finally:
        chat.close()


def test_a_cells_system_prompt_survives_the_widgets_next_turn(ipython, fake_ollama):
    chat = ChatWidget("llama3.2", session="pirate")
    try:
        with capture_output():
            ipython.run_cell_magic(
                "ollama", '--chat --session pirate -s "Talk like a pirate."', "ahoy"
            )
        assert chat.system_box.value == "Talk like a pirate.", "the box follows the session"
        send(chat, "and now?")
        finish(chat)
        sent = fake_ollama.last_request("/api/chat").body["messages"]
        assert sent[0] == {"role": "system", "content": "Talk like a pirate."}
        assert chat.conversation.system == "Talk like a pirate."

        chat.system_box.value = "Be brief."  # a prompt typed in the widget replaces it
        send(chat, "once more")
        finish(chat)
        assert fake_ollama.last_request("/api/chat").body["messages"][0]["content"] == "Be brief."
        assert chat.conversation.system == "Be brief."
    finally:
        chat.close()


def test_closing_stops_the_answer_and_leaves_nothing_behind(open_widget, fake_ollama):
    fake_ollama.add_reply("slow", Reply(text="one two three", fault=Fault(delay=1.5)))
    conversation = Conversation("closing")
    before = live_widgets()
    chat = open_widget("llama3.2", session=conversation)
    send(chat, "slow")
    wait_until(lambda: "one" in text_of(transcript(chat)))
    started = time.monotonic()
    chat.close()
    assert time.monotonic() - started < 1.0
    assert not chat_threads()
    assert live_widgets() <= before, "every widget of the chat closed its comm"
    request = fake_ollama.last_request("/api/chat")
    assert request.finished.wait(5) and request.client_disconnected
    assert len(conversation.changed) == 0, "the conversation forgets the closed widget"
    conversation.append({"role": "user", "content": "later"})  # must not touch the widget


def test_each_turn_keeps_only_the_widgets_of_its_two_messages(open_widget, fake_ollama):
    fake_ollama.add_reply("think", Reply(text="Done.", thinking="Hmm, let me see."))
    chat = open_widget("qwen3", think=True)
    opened = live_widgets()
    for question in ("think once", "think twice", "think thrice"):
        send(chat, question)
        finish(chat)
    chat.retry_button.click()  # replaces the last answer: no more widgets
    finish(chat)
    # An HTML message is three widgets (itself, its layout and its style).
    assert len(live_widgets() - opened) == 3 * 2 * 3
    assert len(chat.messages) == 6


def test_several_widgets_stream_at_the_same_time(open_widget, fake_ollama):
    names = ("red", "green", "blue")
    for name in names:
        fake_ollama.add_reply(
            name, Reply(text=f"{name} one two three four", fault=Fault(delay=0.3))
        )
    chats = {name: open_widget("llama3.2", session=Conversation(name)) for name in names}
    for name, chat in chats.items():
        send(chat, name)
    # Every chat shows part of its answer while none has finished: they stream concurrently.
    wait_until(lambda: all("one" in text_of(transcript(c)) for c in chats.values()))
    assert not any("four" in text_of(transcript(c)) for c in chats.values())
    chats["green"].stop()
    for chat in chats.values():
        finish(chat)
    assert chats["red"].messages[-1]["content"] == "red one two three four"
    assert chats["blue"].messages[-1]["content"] == "blue one two three four"
    assert chats["green"].messages[-1]["content"].startswith("green one")
    assert "four" not in chats["green"].messages[-1]["content"]
    assert "stopped" in status(chats["green"])


def test_two_widgets_on_one_session_take_turns(open_widget, fake_ollama):
    fake_ollama.add_reply("slow", Reply(text="one two", fault=Fault(delay=1.0)))
    shared = Conversation("shared")
    first, second = open_widget("llama3.2", session=shared), open_widget("llama3.2", session=shared)
    send(first, "slow")
    wait_until(lambda: "one" in text_of(transcript(first)))
    send(second, "me too")
    assert "another chat" in status(second) and second.input.value == "me too"
    first.stop()
    finish(first)
    assert "one" in text_of(transcript(second)), "the other view shows the same conversation"


def test_the_model_picker_lists_the_servers_models(open_widget, fake_ollama, dead_url):
    chat = open_widget()
    names = [m.name for m in fake_ollama.models]
    assert list(chat.model_picker.options) == names
    assert chat.model == names[0], "without a model, the newest local one"
    fake_ollama.add_model("mistral")
    chat.refresh_button.click()
    assert "mistral:latest" in chat.model_picker.options
    assert chat.model == names[0], "refreshing keeps the choice"

    offline = open_widget("llama3.2", host=dead_url)
    assert offline.model == "llama3.2"
    assert "Could not list the models" in status(offline)


def test_the_default_model_is_never_an_embedding_model(open_widget, fake_ollama):
    chatty = [m.name for m in fake_ollama.models]
    fake_ollama.add_model("embedder", capabilities=("embedding",), family="bert")  # the newest
    chat = open_widget()
    assert "embedder:latest" in chat.model_picker.options
    assert chat.model == chatty[0], "the newest model that can chat"


def test_think_takes_every_level_and_refuses_unknown_values(open_widget, fake_ollama):
    chat = open_widget("qwen3", think="max")
    assert list(chat.think_picker.options) == [
        "model default",
        "on",
        "off",
        "low",
        "medium",
        "high",
        "max",
    ]
    send(chat, "hard problem")
    finish(chat)
    assert fake_ollama.last_request("/api/chat").body["think"] == "max"
    assert open_widget("qwen3", think=False).think is False
    assert open_widget("qwen3", think="HIGH").think == "high"
    default = open_widget("qwen3")
    send(default, "easy problem")
    finish(default)
    assert "think" not in fake_ollama.last_request("/api/chat").body, "the model decides"
    before = live_widgets()
    with pytest.raises(ValueError, match="think must be"):
        ChatWidget("qwen3", host=fake_ollama.url, session=Conversation("x"), think="maximum")
    assert live_widgets() == before, "a refused widget leaves nothing open"


def test_options_and_the_system_prompt_reach_the_request(open_widget, fake_ollama):
    chat = open_widget("qwen3", top_p=0.9, temperature=0.5)
    assert chat.option_fields["temperature"].value == "0.5"
    chat.option_fields["temperature"].value = "0.3"
    chat.option_fields["num_ctx"].value = "8192"
    chat.option_fields["seed"].value = "7"
    chat.think_picker.value = "on"
    chat.system_box.value = "Be brief."
    send(chat, "hi")
    finish(chat)
    body = fake_ollama.last_request("/api/chat").body
    assert body["options"] == {"temperature": 0.3, "num_ctx": 8192, "seed": 7, "top_p": 0.9}
    assert body["think"] is True and body["model"] == "qwen3:latest"
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat.conversation.system == "Be brief."

    chat.option_fields["seed"].value = "seven"
    send(chat, "again")
    assert "seed must be a whole number" in status(chat)
    assert not chat.busy and chat.input.value == "again"


def test_thinking_folds_and_tool_calls_are_compact(open_widget, fake_ollama):
    reasoning = "Let me reason about it, step by step, before I answer."
    fake_ollama.add_reply(
        "think", Reply(text="The answer.", thinking=reasoning, fault=Fault(delay=0.05))
    )
    chat = open_widget("qwen3", think=True)
    send(chat, "think about it")
    live = wait_until(lambda: next((v for v in html_values(chat) if "step by" in v), None))
    assert "<details" not in live, "reasoning shows open while it streams"
    finish(chat)
    answer = chat.message_list.children[-1].value
    assert '<details class="ollama-magic-thinking"><summary>Thinking (' in answer, "folded"
    assert "reason about it" in answer and answer.index("details") < answer.index("The answer.")

    chat.conversation.append(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        }
    )
    chat.conversation.append({"role": "tool", "tool_name": "get_weather", "content": "12 °C"})
    calls, result = (c.value for c in chat.message_list.children[-2:])
    assert "🔧 <code>get_weather(city=&#x27;Oslo&#x27;)</code>" in calls, "as the magic shows it"
    assert "12 °C" in result and "Tool get_weather" in result


def test_model_written_html_never_reaches_an_html_widget(open_widget, fake_ollama):
    evil = (
        '<img src=x onerror="alert(1)"> <script>alert(2)</script> '
        "[click](javascript:alert(3)) <details open ontoggle=alert(4)>x</details> "
        "<svg><animate onbegin=alert(5)></svg>"
    )
    fake_ollama.add_reply("evil", Reply(text=evil.split(" "), thinking=evil))
    fake_ollama.add_reply("slowevil", Reply(text=evil.split(" "), fault=Fault(delay=0.05)))
    chat = open_widget("qwen3", think=True)
    seen: list[str] = []

    def collect() -> bool:
        seen.extend(html_values(chat))
        return not chat.busy

    send(chat, "evil " + evil)  # the user's own text is rendered the same way
    wait_until(collect)
    send(chat, "slowevil")
    wait_until(collect)
    chat.model = evil  # an error message that repeats a hostile model name
    send(chat, "again")
    wait_until(collect)
    chat.conversation.append(
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": evil}}]}
    )
    seen.extend(html_values(chat))
    assert "alert(2)" in "".join(seen), "the hostile text was shown, as text"
    for value in set(seen):
        assert not re.search(r"<(img|script|svg|iframe|animate)\b", value, re.I), value
        assert not re.search(r"<[^>]*\son\w+\s*=", value), value
        assert not re.search(r"(href|src)\s*=\s*[\"']?\s*javascript:", value, re.I), value


def upload(chat: ChatWidget) -> None:
    chat.upload.value = (
        {
            "name": "dot.png",
            "type": "image/png",
            "size": len(PNG),
            "content": memoryview(PNG),
            "last_modified": datetime.now(timezone.utc),
        },
    )


def test_images_go_with_the_message_for_vision_models(open_widget, fake_ollama):
    chat = open_widget("llava")
    upload(chat)
    send(chat, "What is in this picture?")
    finish(chat)
    encoded = base64.b64encode(PNG).decode()
    sent = fake_ollama.last_request("/api/chat").body["messages"][-1]
    assert sent["images"] == [encoded]
    assert "I received 1 image" in chat.messages[-1]["content"]
    assert f'<img src="data:image/png;base64,{encoded}"' in transcript(chat), "a thumbnail"
    assert chat.upload.value == (), "the upload is used once"

    upload(chat)
    chat.ask("From code, without images.")
    finish(chat)
    assert "images" not in fake_ollama.last_request("/api/chat").body["messages"][-1]
    chat.ask("From code, with one.", images=[PNG])
    finish(chat)
    assert fake_ollama.last_request("/api/chat").body["messages"][-1]["images"] == [encoded]
    assert len(chat.upload.value) == 1, "the upload waits for the next message typed"


def test_retry_replaces_the_last_answer(open_widget, fake_ollama):
    count = [0]

    def numbered(request):
        count[0] += 1
        return f"Answer number {count[0]}."

    fake_ollama.add_reply(numbered)
    chat = open_widget("llama3.2")
    send(chat, "question")
    finish(chat)
    chat.retry_button.click()
    finish(chat)
    assert [m["content"] for m in chat.messages] == ["question", "Answer number 2."]
    shown = text_of(transcript(chat))
    assert "Answer number 2." in shown and "Answer number 1." not in shown
    first, second = (r.body["messages"] for r in fake_ollama.requests if r.path == "/api/chat")
    assert first == second, "the same question, with the same history"


def test_a_failing_retry_gives_the_old_answer_back(open_widget, fake_ollama):
    fake_ollama.add_reply("question", "The first answer.")
    chat = open_widget("llama3.2")
    send(chat, "question")
    finish(chat)
    chat.model = "no-such-model"
    chat.retry_button.click()
    finish(chat)
    assert "no-such-model" in status(chat) and "previous answer is kept" in status(chat)
    assert [m["content"] for m in chat.messages] == ["question", "The first answer."]
    shown = text_of(transcript(chat))
    assert shown.count("question") == 1 and "The first answer." in shown


def test_clear_export_and_messages(open_widget, fake_ollama):
    fake_ollama.add_reply("capital", "Paris.")
    chat = open_widget("llama3.2", system="You are terse.")
    send(chat, "The capital of France?")
    finish(chat)
    assert chat.messages[0] == {"role": "system", "content": "You are terse."}
    exported = chat.to_markdown()
    assert "**User**\n\nThe capital of France?" in exported and "Paris." in exported
    chat.clear_button.click()
    assert chat.messages == [{"role": "system", "content": "You are terse."}]
    assert "No messages yet" in transcript(chat)


def test_open_chat_parses_the_line_like_the_other_subcommands(ipython, fake_ollama):
    magics = ipython.magics_manager.registry["OllamaMagics"]

    def open_chat(line):
        return ipython.run_line_magic("ollama", f"chat {line}")

    with capture_output():  # a notebook-like display: widgets show
        chat = open_chat("qwen3 --session notes")
        other = open_chat("--session=notes")
        plain = open_chat("")
    try:
        assert (
            chat.model == "qwen3:latest"
            and chat.conversation is magics.workspace.conversations["notes"]
        )
        assert other.conversation is chat.conversation
        assert plain.conversation is magics.workspace.conversations["default"]
    finally:
        for widget in (chat, other, plain):
            widget.close()
    for bad in ("--session", "a b", "--model x"):
        with pytest.raises(UsageError, match=r"Usage: %ollama chat \[--session NAME\] \[MODEL\]"):
            open_chat(bad)


def test_chat_in_terminal_ipython_says_where_it_works_instead_of_a_widget(
    ipython, fake_ollama, capsys
):
    # The fixture's shell displays as terminal IPython does: text only.
    before = live_widgets()
    assert ipython.run_line_magic("ollama", "chat --session notes") is None
    assert capsys.readouterr().out == (
        "The chat widget needs a notebook frontend (JupyterLab, Notebook 7, VS Code, Colab); "
        "in a terminal, chat with %%ollama --chat [--session NAME].\n"
    )
    assert live_widgets() == before, "no widget was made: no comm opened"
    with pytest.raises(UsageError, match="Usage"):
        ipython.run_line_magic("ollama", "chat a b")  # the arguments are still checked

    with capture_output() as captured:  # as in a kernel: a display that renders widgets
        chat = ipython.run_line_magic("ollama", "chat --session notes")
    try:
        assert isinstance(chat, ChatWidget) and chat.conversation.name == "notes"
        assert "needs a notebook" not in captured.stdout
    finally:
        chat.close()


class _Tags(HTMLParser):
    """The start tags of an HTML fragment and their attributes, as a browser reads them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def export_link(chat: ChatWidget) -> dict[str, str | None]:
    """The attributes of the Export control's link."""
    links = [attrs for tag, attrs in _Tags(chat.export_link.value).tags if tag == "a"]
    assert len(links) == 1, chat.export_link.value
    return links[0]


def downloaded(link: dict[str, str | None]) -> str:
    """What a browser saves when the link is clicked."""
    prefix = "data:text/markdown;charset=utf-8;base64,"
    href = link["href"] or ""
    assert href.startswith(prefix), href[:60]
    return base64.b64decode(href[len(prefix) :], validate=True).decode("utf-8")


def test_export_downloads_the_latest_conversation_as_markdown(open_widget, fake_ollama):
    fake_ollama.add_reply("France", "Paris.")
    fake_ollama.add_reply("Germany", "Berlin, *of course*.")
    chat = open_widget("llama3.2", session=Conversation("geography"))
    assert chat.export_link in chat.children[1].children, "Export is in the toolbar"
    empty = export_link(chat)
    assert "href" not in empty and "nothing to export" in (empty["title"] or "")

    send(chat, "The capital of France?")
    finish(chat)
    link = export_link(chat)
    assert text_of(chat.export_link.value) == "Export"
    assert link["download"] == "chat-geography.md"
    assert "Export" in (link["title"] or "") and "markdown" in (link["title"] or "")
    assert downloaded(link) == chat.to_markdown()
    assert downloaded(link).endswith(
        "**User**\n\nThe capital of France?\n\n---\n\n**Assistant**\n\nParis."
    )

    send(chat, "And of Germany?")
    finish(chat)
    assert downloaded(export_link(chat)).endswith("**Assistant**\n\nBerlin, *of course*.")
    chat.conversation.append({"role": "user", "content": "A turn from a cell."})
    assert downloaded(export_link(chat)) == chat.to_markdown(), "kept current whoever writes"


def test_the_export_link_escapes_everything_it_writes(open_widget, fake_ollama):
    hostile = '"><img src=x onerror=alert(1)>'
    evil = '</a><script>alert(2)</script><img src=x onerror="alert(3)"> "quoted" & more'
    fake_ollama.add_reply("evil", evil)
    chat = open_widget("llama3.2", session=Conversation(hostile))
    send(chat, "evil " + hostile)
    finish(chat)
    value = chat.export_link.value
    assert [tag for tag, _ in _Tags(value).tags] == ["a", "i"], value
    assert not re.search(r"<(img|script)\b", value, re.I) and "alert(2)" not in value
    link = export_link(chat)
    assert set(link) == {"class", "download", "href", "title"}
    assert hostile in (link["title"] or ""), "the session's name, as text"
    assert link["download"] == "chat-img_src_x_onerror_alert_1.md"
    assert downloaded(link) == chat.to_markdown() and evil in downloaded(link)


def test_importing_the_package_does_not_import_ipywidgets():
    code = (
        "import sys, ollama_magic; assert 'ipywidgets' not in sys.modules; "
        "assert ollama_magic.ChatWidget.__name__ == 'ChatWidget'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_cell_runs_while_an_answer_streams_in_a_real_kernel(fake_ollama, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    fake_ollama.add_reply("slow", Reply(text="one two three", fault=Fault(delay=30.0)))
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)  # the kernel inherits it
    cells = [
        "import time\nfrom ollama_magic import ChatWidget\nstarted = time.monotonic()\n"
        'chat = ChatWidget("llama3.2", session="kernel")\nchat.ask("slow please")\nchat',
        'print(f"{time.monotonic() - started:.2f}", chat.busy)',
        "t = time.monotonic()\nchat.stop()\nchat.wait(5)\n"
        'print(f"{time.monotonic() - t:.3f}", chat.busy, chat.messages)',
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        notebook, timeout=60, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    elapsed, busy = notebook.cells[1].outputs[0].text.split()
    assert busy == "True", "the answer was still streaming"
    assert float(elapsed) < 5, "the cells did not wait for the 30 s answer"
    stop_time, busy, *_ = notebook.cells[2].outputs[0].text.split(maxsplit=2)
    assert busy == "False" and float(stop_time) < 1.0
