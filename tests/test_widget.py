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

import ipywidgets as w
import pytest
from _util import wait_until
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from ollama_magic.conversation import Conversation
from ollama_magic.testing import Fault, Reply
from ollama_magic.widget import ChatWidget, _LiveAnswer, open_chat

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def chat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ollama-chat")]


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


def test_frames_are_throttled_and_finished_blocks_are_not_resent():
    clock = [0.0]
    bubble = w.VBox()
    view = _LiveAnswer(bubble, fps=10, clock=lambda: clock[0], segment_bytes=2048)
    sent = [0]

    def count(change):
        sent[0] += len(change["new"])

    watched: set[int] = set()

    def watch(_=None):
        for child in bubble.children:
            if id(child) not in watched:
                watched.add(id(child))
                child.observe(count, names="value")

    bubble.observe(watch, names="children")
    watch()
    paragraph = "A sentence of a long answer that goes on for a while. " * 4 + "\n\n"
    tokens = [paragraph[i : i + 4] for i in range(0, len(paragraph), 4)] * 100  # ~22 KB
    for token in tokens:
        clock[0] += 0.002  # 500 tokens per second
        view.content(token)
    duration = clock[0]
    assert view.frames <= duration * 10 + 1, "at most 10 frames a second"
    shown = "".join(html_values(bubble))
    assert shown.count("<p>") >= 99, "everything but the unfinished tail is on screen"
    answer_html = len(shown)
    # Resending the whole answer every frame would cost frames * size / 2 on average.
    resend_everything = view.frames * answer_html / 2  # the whole answer in every frame
    assert sent[0] < resend_everything / 5, (sent[0], answer_html, view.frames)


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
    assert (
        "no-such-model" in line
        and "is not on the Ollama server" in line
        and "\n" not in chat.status.value
    )
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
    assert "CUDA out of memory" in status(chat) and "\n" not in chat.status.value
    last = chat.message_list.children[-1]
    assert "alpha beta" in last.value and "failed" in last.value
    assert "om-failed" in last._dom_classes
    assert chat.messages == []


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
    assert "\n" not in chat.status.value
    (stderr,) = chat.out.outputs
    assert "Traceback" in stderr["text"] and "the disk is on fire" in stderr["text"]

    chat.conversation.reset = lambda **_: 1 / 0  # a button handler that fails
    chat.clear_button.click()  # must not raise into the frontend's comm handler
    assert "ZeroDivisionError: division by zero" in status(chat)


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
        conversation = magics.conversations["s"]
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


def test_closing_stops_the_answer_and_leaves_nothing_behind(open_widget, fake_ollama):
    fake_ollama.add_reply("slow", Reply(text="one two three", fault=Fault(delay=1.5)))
    conversation = Conversation("closing")
    chat = open_widget("llama3.2", session=conversation)
    send(chat, "slow")
    wait_until(lambda: "one" in text_of(transcript(chat)))
    started = time.monotonic()
    chat.close()
    assert time.monotonic() - started < 1.0
    assert not chat_threads()
    assert chat.comm is None and all(c.comm is None for c in chat.message_list.children)
    request = fake_ollama.last_request("/api/chat")
    assert request.finished.wait(5) and request.client_disconnected
    assert len(conversation.changed) == 0, "the conversation forgets the closed widget"
    conversation.append({"role": "user", "content": "later"})  # must not touch the widget


def test_several_widgets_stream_independently(open_widget, fake_ollama):
    for name in ("red", "green", "blue"):
        fake_ollama.add_reply(name, Reply(text=f"{name} one two three", fault=Fault(delay=0.2)))
    names = ("red", "green", "blue")
    chats = {name: open_widget("llama3.2", session=Conversation(name)) for name in names}
    for name, chat in chats.items():
        send(chat, name)
    assert all(chat.busy for chat in chats.values()), "all three stream at the same time"
    wait_until(lambda: "green" in text_of(transcript(chats["green"])).split("green", 1)[1])
    chats["green"].stop()
    for chat in chats.values():
        finish(chat)
    assert chats["red"].messages[-1]["content"] == "red one two three"
    assert chats["blue"].messages[-1]["content"] == "blue one two three"
    assert chats["green"].messages[-1]["content"].startswith("green")
    assert "stopped" in status(chats["green"])
    assert not chat_threads()


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
    assert "Could not list the models" in status(offline) and "\n" not in offline.status.value


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
    live = wait_until(lambda: next((v for v in html_values(chat) if "Thinking…" in v), None))
    assert '<details class="om-thinking" open>' in live, "reasoning shows while it streams"
    finish(chat)
    answer = chat.message_list.children[-1].value
    assert '<details class="om-thinking"><summary>' in answer, "folded, not open"
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
    assert "⚙ get_weather(city=&quot;Oslo&quot;)" in calls
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


def test_images_go_with_the_message_for_vision_models(open_widget, fake_ollama):
    chat = open_widget("llava")
    chat.upload.value = (
        {
            "name": "dot.png",
            "type": "image/png",
            "size": len(PNG),
            "content": memoryview(PNG),
            "last_modified": datetime.now(timezone.utc),
        },
    )
    send(chat, "What is in this picture?")
    finish(chat)
    sent = fake_ollama.last_request("/api/chat").body["messages"][-1]
    assert sent["images"] == [base64.b64encode(PNG).decode()]
    assert "I received 1 image" in chat.messages[-1]["content"]
    assert "1 image attached" in transcript(chat)
    assert chat.upload.value == (), "the upload is used once"


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
    chat = open_chat(magics, ["qwen3", "--session", "notes"])
    other = open_chat(magics, ["--session=notes"])
    plain = open_chat(magics, [])
    try:
        assert chat.model == "qwen3:latest" and chat.conversation is magics.conversations["notes"]
        assert other.conversation is chat.conversation
        assert plain.conversation is magics.conversations["default"]
    finally:
        for widget in (chat, other, plain):
            widget.close()
    for bad in (["--session"], ["a", "b"], ["--model", "x"], ["--session", "a", "--session=b"]):
        with pytest.raises(UsageError, match="Usage: %ollama chat"):
            open_chat(magics, bad)


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
