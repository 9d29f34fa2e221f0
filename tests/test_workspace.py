"""One Workspace under every front end: the cells, the chat widget and ``ask()`` share its
settings, clients, conversations and default model, and build requests the same way."""

from __future__ import annotations

import pytest
from _util import wait_until
from IPython.utils.capture import capture_output
from test_magics import run
from traitlets import TraitError

import ollama_magic
from ollama_magic import ChatWidget, Conversation, OllamaError
from ollama_magic.testing import Fault, Reply
from ollama_magic.workspace import Workspace, default_workspace


def workspace(ipython) -> Workspace:
    return ipython.magics_manager.registry["OllamaMagics"].workspace


def sent(server, path: str) -> dict:
    return server.last_request(path).body


def test_config_and_the_workspace_are_one_set_of_settings(ipython, fake_ollama):
    ws = workspace(ipython)
    ipython.run_line_magic("config", 'OllamaMagics.model = "qwen3"')
    assert ws.model == "qwen3"
    with capture_output() as shown:
        ipython.run_line_magic("ollama", "config temperature=0.1 keep_alive=10m")
    assert "temperature': 0.1" in shown.stdout
    magics = ipython.magics_manager.registry["OllamaMagics"]
    assert magics.options == {"temperature": 0.1} and magics.keep_alive == "10m"
    ws.fps = 5  # set on the workspace: the magics' trait (what %config shows) follows
    assert magics.fps == 5.0
    run(ipython, "-q", "Hello")
    body = sent(fake_ollama, "/api/generate")
    assert body["model"] == "qwen3" and body["options"] == {"temperature": 0.1}
    assert body["keep_alive"] == "10m"


def test_a_bad_setting_is_refused_by_the_magics_and_the_workspace_alike(ipython):
    ws = workspace(ipython)
    magics = ipython.magics_manager.registry["OllamaMagics"]
    with pytest.raises(TraitError, match="temperature"):
        magics.options = {"temperature": "hot"}
    with pytest.raises(TraitError, match="fps must be above 0"):
        ws.fps = 0
    assert ws.options == {} and ws.fps == 10.0
    with pytest.raises(TraitError, match="temperature"):
        Workspace(options={"temperature": "hot"})


def test_cells_widgets_and_ask_send_the_same_request(ipython, fake_ollama):
    fake_ollama.add_reply("Hi", "Hello there.")
    ipython.run_line_magic("config", "OllamaMagics.options = {'seed': 7}")
    ipython.run_line_magic("config", 'OllamaMagics.keep_alive = "1h"')
    ipython.run_line_magic("config", 'OllamaMagics.model = "qwen3"')

    run(ipython, "-q --chat --session cells", "Hi")
    from_cell = sent(fake_ollama, "/api/chat")
    chat = ChatWidget(session="widget")
    try:
        assert chat.ask("Hi") and chat.wait(10)
        from_widget = sent(fake_ollama, "/api/chat")
    finally:
        chat.close()
    assert ollama_magic.ask("Hi", conversation=Conversation()) == "Hello there."
    from_ask = sent(fake_ollama, "/api/chat")

    for body in (from_cell, from_widget, from_ask):
        # The widget's picker names the model as /api/tags lists it: the same model.
        assert body["model"].removesuffix(":latest") == "qwen3"
        assert body["options"] == {"seed": 7}
        assert body["keep_alive"] == "1h"
        assert body["messages"] == [{"role": "user", "content": "Hi"}]


def test_the_widget_and_ask_default_to_the_kernels_workspace(ipython, fake_ollama):
    ws = workspace(ipython)
    assert default_workspace() is ws
    run(ipython, "-q --chat", "Remember me")
    chat = ChatWidget()
    try:
        assert chat.workspace is ws and chat.conversation is ws.conversations["default"]
        assert chat.client is ws.client()  # one connection pool for the cells and the widget
    finally:
        chat.close()


def test_the_default_model_is_chosen_once_for_every_front_end(ipython, fake_ollama):
    fake_ollama.add_reply("Hi", "Hello there.")
    run(ipython, "-q", "Hi")
    chosen = sent(fake_ollama, "/api/generate")["model"]
    fake_ollama.add_model("zz-newer:latest")  # now the newest local model
    assert ollama_magic.ask("Hi") == "Hello there."
    assert sent(fake_ollama, "/api/generate")["model"] == chosen
    chat = ChatWidget(session="fresh")
    try:
        assert chat.model == chosen
    finally:
        chat.close()


def test_a_workspace_of_ones_own_keeps_its_settings_apart(ipython, fake_ollama):
    mine = Workspace(host=fake_ollama.url, model="qwen3", options={"temperature": 0})
    assert ollama_magic.ask("Hi", workspace=mine, options={"seed": 1})
    body = sent(fake_ollama, "/api/generate")
    assert body["model"] == "qwen3" and body["options"] == {"temperature": 0, "seed": 1}
    assert workspace(ipython).options == {}  # the kernel's settings are untouched
    mine.close()


def test_request_builds_chat_or_generate_as_asked(fake_ollama):
    ws = Workspace(host=fake_ollama.url, model="llama3.2")
    one_shot = ws.request("Hi", system="Be brief.")
    assert one_shot.endpoint == "generate" and one_shot.body["system"] == "Be brief."
    conversation = Conversation()
    conversation.append({"role": "user", "content": "Earlier"})
    conversation.append({"role": "assistant", "content": "Yes"})
    chat = ws.request("Now", conversation=conversation)
    assert chat.endpoint == "chat"
    assert [m["content"] for m in chat.body["messages"]] == ["Earlier", "Yes", "Now"]
    given = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    replay = ws.request(given)
    assert replay.endpoint == "chat" and replay.body["messages"] == given
    with pytest.raises(OllamaError, match=r"Options: .*num_ctx"):
        ws.request("Hi", options={"num_ctx": "large"})


def test_a_dry_request_does_not_ask_the_server_for_a_model(fake_ollama):
    ws = Workspace(host=fake_ollama.url)
    request = ws.request("Hi", choose_model=False)
    assert request.model == "<newest local model>"
    assert fake_ollama.last_request("/api/tags") is None
    assert ws.request("Hi").model == "llama3.2:latest"  # for real: the newest is chosen


def test_ask_returns_the_outcome_of_a_failed_answer_with_its_text(fake_ollama):
    fake_ollama.add_reply(
        "fail", Reply(text="one two three four", fault=Fault(error_after=2, error="boom"))
    )
    ws = Workspace(host=fake_ollama.url, model="llama3.2")
    outcome = ws.ask(ws.request("fail"))
    assert outcome.error is not None and "boom" in outcome.error.message
    assert outcome.text == "one two" and outcome.started and not outcome.ok
    with pytest.raises(OllamaError, match="boom"):
        outcome.raise_for_error()


def test_a_model_gone_from_the_server_is_chosen_afresh(fake_ollama):
    ws = Workspace(host=fake_ollama.url)
    first = ws.request("Hi")
    fake_ollama.remove_model(first.model)
    outcome = ws.ask(first)
    assert outcome.error is not None and ws.default_models == {}
    assert ws.request("Hi").model != first.model


def test_the_cell_magics_help_groups_its_options(ipython):
    with capture_output() as shown:
        ipython.run_cell_magic("ollama", "--help", "x")
    for group in ("The model and the conversation", "Structured output", "Sending and showing"):
        assert f"{group}:" in shown.stdout
    text = shown.stdout
    assert text.index("--format") > text.index("Structured output:") > text.index("--seed")


def test_the_widget_shares_the_cells_session_turn(ipython, fake_ollama):
    fake_ollama.add_reply("slow", Reply(text="a b c", fault=Fault(delay=0.3)))
    chat = ChatWidget(session="shared")
    try:
        assert chat.ask("slow")
        wait_until(lambda: workspace(ipython).conversations["shared"].busy)
        with pytest.raises(OllamaError, match="busy with another answer"):
            run(ipython, "-q --session shared", "Hi")
        assert chat.wait(10)
    finally:
        chat.close()


def test_unloading_the_extension_gives_ask_back_its_own_settings(ipython):
    ws = workspace(ipython)
    ipython.extension_manager.unload_extension("ollama_magic")
    try:
        assert default_workspace() is not ws
    finally:
        ipython.extension_manager.load_extension("ollama_magic")
    assert default_workspace() is workspace(ipython)
