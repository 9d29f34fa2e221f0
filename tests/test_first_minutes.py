"""What a new user meets in the first minutes: each path says the right thing.

Magics run through a real IPython shell, the client over real HTTP to the stand-in.
"""

from __future__ import annotations

import threading

import pytest
from _util import magic_shell, plain
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from test_magics import _interrupt_after_first_token, final_html, last_body, line, run
from traitlets import TraitError

from ollama_magic import Client, ModelNotFound, NotOllama
from ollama_magic.core import Outcome, Request
from ollama_magic.magics import OllamaMagics
from ollama_magic.testing import Fault, Reply
from ollama_magic.types import Result
from ollama_magic.views import NotebookView, TextView


def magics(ipython) -> OllamaMagics:
    return ipython.magics_manager.registry["OllamaMagics"]


# -- 1. -f list[NAME] ----------------------------------------------------------------------------


def test_format_list_of_a_notebook_class_binds_a_dataframe(ipython, fake_ollama):
    ipython.run_cell(
        "from pydantic import BaseModel\nclass Person(BaseModel):\n    name: str\n    age: int\n"
    )
    run(ipython, "llama3.2 -f list[Person] -o people --as-dataframe", "Extract: Ada 36, Alan 41")
    people = ipython.user_ns["people"]
    assert list(people.columns) == ["name", "age"]
    schema = last_body(fake_ollama)["format"]
    assert schema["type"] == "array" and schema["items"]["required"] == ["name", "age"]


def test_format_list_of_a_schema_dict(ipython, fake_ollama):
    ipython.user_ns["city"] = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    }
    run(ipython, "llama3.2 -f list[city] -o cities", "Three cities")
    assert last_body(fake_ollama)["format"] == {"type": "array", "items": ipython.user_ns["city"]}
    assert isinstance(ipython.user_ns["cities"], list)
    assert all("name" in c for c in ipython.user_ns["cities"])


def test_format_list_of_an_undefined_name_says_which(ipython):
    with pytest.raises(Exception, match="No variable 'Persn' for the format"):
        run(ipython, "llama3.2 -f list[Persn]", "x")


# -- 2. show names the missing model ---------------------------------------------------------


def test_show_of_a_missing_model_is_model_not_found(ipython, client):
    with pytest.raises(ModelNotFound) as info:
        client.show("llama3")
    assert info.value.model == "llama3"
    assert "llama3.2:latest" in info.value.similar
    with pytest.raises(ModelNotFound) as info:
        line(ipython, "show nosuch")
    assert "'nosuch' is not on the Ollama server" in info.value.message
    assert "ollama pull nosuch" in info.value.hint


# -- 3. Ctrl-C: one line, and Run All still stops --------------------------------------------


def test_an_interrupt_shows_one_line_and_still_fails_the_cell(ipython, fake_ollama):
    fake_ollama.add_reply(
        "slow", Reply(text="alpha beta gamma delta epsilon", fault=Fault(delay=0.3))
    )
    watcher = threading.Thread(
        target=_interrupt_after_first_token, args=(fake_ollama, threading.get_ident())
    )
    watcher.start()
    with capture_output() as captured:
        result = ipython.run_cell("%%ollama llama3.2 -c -o partial\nslow")
    watcher.join(10)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)  # "Run All" stops here
    shown = plain(captured.stdout).strip()
    kept = len(ipython.user_ns["partial"])
    assert shown == f"Interrupted: the partial answer is kept ({kept} characters, also in partial)."
    assert "Traceback" not in captured.stdout and "socket" not in captured.stdout


# -- 4. usage line -------------------------------------------------------------------------


def test_a_bad_argument_shows_the_usage_line(ipython):
    with pytest.raises(UsageError) as info:
        run(ipython, "--bogus", "hi")
    message = str(info.value)
    assert message.startswith("unrecognized arguments: --bogus\nUsage: %%ollama [-m MODEL]")
    assert "[--dry-run]" in message


# -- 5. settings checked when set ------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("temperature=abc", "temperature must be a number, not 'abc'"),
        ("num_ctx=1.5", "num_ctx must be a whole number"),
        ("keep_alive=forever", "keep_alive takes seconds"),
        ("host=http://x:notaport", "not a valid Ollama host"),
    ],
)
def test_config_refuses_a_bad_value_and_changes_nothing(ipython, fake_ollama, setting, says):
    line(ipython, "config temperature=0.5")
    with pytest.raises(UsageError, match=says):
        line(ipython, f"config seed=7 {setting}")
    assert magics(ipython).options == {"temperature": 0.5}  # seed=7 was not applied either
    run(ipython, "llama3.2", "hi")
    assert last_body(fake_ollama)["options"] == {"temperature": 0.5}


def test_config_trait_and_option_flag_are_checked_too(ipython, caplog):
    ipython.run_line_magic("config", "OllamaMagics.options = {'seed': 'x'}")
    assert "seed must be a whole number, not 'x'" in caplog.text  # %config logs the error
    assert magics(ipython).options == {}
    with pytest.raises(TraitError, match="seed must be a whole number"):
        magics(ipython).options = {"seed": "x"}
    with pytest.raises(UsageError, match="--option: top_k must be a whole number"):
        run(ipython, "llama3.2 --option top_k=many", "hi")


def test_config_numbers_as_text_are_sent_as_numbers(ipython, fake_ollama):
    ipython.run_line_magic("config", "OllamaMagics.options = {'temperature': '0.2'}")
    line(ipython, "config stop=###")
    run(ipython, "llama3.2", "hi")
    assert last_body(fake_ollama)["options"] == {"temperature": 0.2, "stop": ["###"]}


def test_config_warns_at_once_about_a_model_the_server_lacks(ipython):
    text = line(ipython, "config model=llama3").stdout
    assert text.startswith("Warning: llama3 is not on the server at ")
    assert "`%ollama pull llama3` downloads it. The setting is kept." in text
    assert "llama3.2" in text  # a similar local name
    assert magics(ipython).model == "llama3"
    assert "Warning" not in line(ipython, "config model=qwen3").stdout


def test_config_model_with_the_server_down_is_kept_with_a_warning(ipython, dead_url):
    text = line(ipython, f"config host={dead_url} model=llama3.2").stdout
    assert text.startswith("Warning: could not check that llama3.2 is on the server: Cannot reach")
    assert magics(ipython).model == "llama3.2"


# -- 6. the default model is chosen once -----------------------------------------------------


def test_the_default_model_stays_after_a_pull(ipython, fake_ollama):
    first = final_html(run(ipython, "", "hi"))
    assert "llama3.2:latest was chosen as the newest local model" in first
    line(ipython, "pull mistral")
    assert fake_ollama.models[0].name == "mistral:latest"  # now the newest
    again = final_html(run(ipython, "", "hi"))
    assert last_body(fake_ollama)["model"] == "llama3.2:latest"
    assert "newest local model" not in again  # said once
    line(ipython, "config model=qwen3")
    line(ipython, "config model=")  # a config change chooses afresh
    assert "mistral:latest was chosen" in final_html(run(ipython, "", "hi"))


def test_a_default_model_deleted_from_the_server_is_chosen_again(ipython, fake_ollama):
    run(ipython, "", "hi")
    fake_ollama.remove_model("llama3.2")
    with pytest.raises(ModelNotFound):
        run(ipython, "", "hi")
    run(ipython, "", "hi")
    assert last_body(fake_ollama)["model"] == "qwen3:latest"


# -- 8. placeholders -------------------------------------------------------------------------


def test_the_help_example_uses_a_variable_not_a_call():
    doc = OllamaMagics.ollama_cell.__doc__ or ""
    assert "{df.describe()}" not in doc.replace("``{df.describe()}``", "")
    assert "{stats}" in doc


def test_undefined_placeholders_are_named_in_a_muted_line(ipython, fake_ollama):
    ipython.user_ns["topic"] = "entropy"
    captured = run(ipython, "llama3.2", "Explain {topic} to {audience}; \\frac{a}{b}")
    note = captured.outputs[0]
    assert note.data["text/plain"] == "{audience} is not defined in the notebook, so sent as typed."
    assert 'class="ollama-magic-note"' in note.data["text/html"]
    assert last_body(fake_ollama)["prompt"] == "Explain entropy to {audience}; \\frac{a}{b}"
    ipython.user_ns["audience"] = "a child"
    captured = run(ipython, "llama3.2", 'Explain {topic} to {audience}: {"json": 1}')
    assert not any("not defined" in o.data.get("text/plain", "") for o in captured.outputs)


def test_dry_run_lists_the_filled_placeholders(ipython):
    ipython.user_ns.update(topic="entropy", df={"rows": 3})
    captured = run(ipython, "llama3.2 --dry-run", "{topic} {df[rows]} {audience}")
    for shown in captured.outputs[0].data.values():  # the HTML, and the text form terminals get
        assert "Filled from the notebook: {topic}, {df[rows]}." in shown
        assert "{audience} is not defined in the notebook, so sent as typed." in shown


# -- 9. where the host came from ---------------------------------------------------------------


def test_not_ollama_names_where_the_host_came_from(ipython, fake_ollama, monkeypatch):
    wrong = fake_ollama.url + "/wrong"
    with pytest.raises(NotOllama) as info:
        run(ipython, f"llama3.2 --host {wrong}", "hi")
    assert info.value.hint.startswith("Check --host:")
    line(ipython, f"config host={wrong}")
    with pytest.raises(NotOllama) as info:
        run(ipython, "llama3.2", "hi")
    assert info.value.hint.startswith("Check the host setting (%ollama config host=…):")
    monkeypatch.setenv("OLLAMA_HOST", wrong)
    with pytest.raises(NotOllama) as info:
        Client().list()
    assert info.value.hint.startswith("Check OLLAMA_HOST:")


# -- 10. thinking never runs into the answer -------------------------------------------------


def _outcome(text: str, thinking: str) -> Outcome:
    request = Request("generate", {"model": "qwen3", "prompt": "hi"})
    result = Result(model="qwen3", content=text, thinking=thinking, done_reason="stop")
    return Outcome(request, text=text, thinking=thinking, result=result)


def test_terminal_text_breaks_lines_around_the_reasoning():
    import io

    out = io.StringIO()
    view = TextView(out)
    view.thinking("Let me see.")
    view.content("First answer.")
    view.thinking("Again.")  # a later round (after a tool call, say)
    view.content("Second.")
    view.finish(_outcome("Second.", "Again."))
    assert out.getvalue().startswith(
        "Thinking: Let me see.\n\nFirst answer.\n\nThinking: Again.\n\nSecond."
    )


def test_the_notebook_text_form_separates_reasoning_and_answer():
    shown: dict[int, str] = {}

    class Sink:
        def display(self, bundle, metadata):
            key = len(shown)
            shown[key] = bundle["text/plain"]

            class Handle:
                def update(self, bundle, metadata):
                    shown[key] = bundle["text/plain"]

            return Handle()

    view = NotebookView(sink=Sink(), fps=1000)
    view.thinking("Let me see.")
    view.content("The answer.")
    view.finish(_outcome("The answer.", "Let me see."))
    assert "".join(shown.values()).startswith("Let me see.\n\nThe answer.")


# -- 11. credentials are masked wherever they are printed ------------------------------------


def test_config_prints_headers_masked(ipython):
    secret = "sk-verysecret-123456"
    ipython.run_line_magic(
        "config", f"OllamaMagics.headers = {{'X-Api-Key': '{secret}', 'X-Team': 'physics'}}"
    )
    with capture_output() as captured:
        ipython.run_cell("%config OllamaMagics")
        ipython.run_cell("%config OllamaMagics.headers")
        shown = ipython.run_line_magic("config", "OllamaMagics.headers")
    printed = captured.stdout + "".join(str(o.data) for o in captured.outputs) + repr(shown)
    assert secret not in printed
    assert "'X-Api-Key': '****'" in printed and "physics" in printed
    assert secret not in line(ipython, "config").stdout
    # The value is still what is sent.
    assert magics(ipython).workspace.client().headers["x-api-key"] == secret


# -- 12-15. "Ollama-compatible" adapters -----------------------------------------------------


@pytest.fixture
def adapter(monkeypatch):
    """The stand-in imitating an Ollama-compatible adapter, and a shell pointed at it."""
    from ollama_magic.testing import FakeOllama

    with FakeOllama(compat="adapter") as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        with magic_shell() as shell:
            yield shell, server


def test_status_of_an_adapter_that_refuses_head_says_what_it_is(adapter):
    shell, server = adapter
    text = line(shell, "status").stdout
    assert text.startswith(f"host: {server.url}, from OLLAMA_HOST\n")
    assert "not reachable" not in text
    assert "server: an Ollama-compatible server, not Ollama itself (it has no /api/version)" in text
    assert f"local models: {len(server.models)}" in text
    assert Client(server.url).is_running()


def test_status_of_something_that_is_not_ollama(ipython, fake_ollama):
    line(ipython, f"config host={fake_ollama.url}/wrong")
    text = line(ipython, "status").stdout
    assert "server: answers, but not as Ollama does" in text
    assert "Check the host setting (%ollama config host=…)" in text


def test_an_error_line_before_any_token_is_mapped_like_its_http_error(adapter):
    shell, server = adapter
    with pytest.raises(ModelNotFound) as info:
        run(shell, "nosuch", "hi")
    assert info.value.status_code is None  # the server said 200
    assert "ollama pull nosuch" in info.value.hint and "partial" not in str(info.value)
    client = Client(server.url)
    with pytest.raises(ModelNotFound):
        client.generate("nosuch", "hi", stream=False)
    with pytest.raises(ModelNotFound):
        list(client.chat("nosuch", [{"role": "user", "content": "hi"}]))


def test_an_unknown_error_before_any_token_does_not_speak_of_a_partial_answer(client, fake_ollama):
    from ollama_magic import StreamError

    fake_ollama.inject(Fault(error_after=0, error="the engine is busy"), times=1)
    with pytest.raises(StreamError) as info:
        list(client.generate("llama3.2", "hi"))
    assert info.value.message.endswith("answered with an error before any text: the engine is busy")
    assert "part-way" not in str(info.value) and "kept" not in str(info.value)


def test_the_footer_says_what_the_server_dropped(adapter):
    shell, _ = adapter
    html = final_html(run(shell, "qwen3 --think --logprobs", "hi"))
    assert "the server returned no log-probabilities" in html
    assert "the server returned no thinking" in html
    assert "the server did not say why the answer ended (no done_reason)" in html
    assert shell.user_ns["_ollama_logprobs"] == []


def test_the_footer_names_what_was_dropped_one_by_one(ipython, fake_ollama):
    ipython.user_ns["_ollama_logprobs"] = ["from an earlier cell"]
    fake_ollama.inject(Fault(drop=("logprobs",)), times=1)
    html = final_html(run(ipython, "llama3.2 --logprobs", "hi"))
    assert "the server returned no log-probabilities" in html
    assert "no thinking" not in html and "no done_reason" not in html
    assert ipython.user_ns["_ollama_logprobs"] == []
    html = final_html(run(ipython, "llama3.2 --logprobs", "hi"))
    assert "returned no log-probabilities" not in html
    assert len(ipython.user_ns["_ollama_logprobs"]) > 3


def test_implausible_stats_give_the_speed_measured_here(ipython, fake_ollama):
    import re

    fake_ollama.inject(Fault(stats="words", delay=0.02), times=1)
    text = run(ipython, "llama3.2 --plain", "hi").stdout
    footer = text.strip().splitlines()[-1]
    match = re.search(r"≈(\d+) tokens · ≈([\d.]+) tokens/s \(measured here\)", footer)
    assert match, footer
    assert 10 < float(match.group(2)) < 60  # one chunk every 20 ms at most: under 50/s
    fake_ollama.inject(Fault(delay=0.02), times=1)
    footer = run(ipython, "llama3.2 --plain", "hi").stdout.strip().splitlines()[-1]
    assert re.search(r"· \d+ tokens · [\d.]+ tokens/s", footer) and "≈" not in footer, footer


# -- what a second read found ------------------------------------------------------------------


def test_latex_math_and_shell_braces_are_not_fields(ipython, fake_ollama):
    ipython.user_ns.update(a=1)
    captured = run(ipython, "llama3.2", "\\frac{a}{b} $x^{n}$ ${HOME} [a-z]{k} \\sqrt[3]{x} {a}")
    # A LaTeX argument is never filled; {a} on its own is.
    assert last_body(fake_ollama)["prompt"] == (
        "\\frac{a}{b} $x^{n}$ ${HOME} [a-z]{k} \\sqrt[3]{x} 1"
    )
    # Undefined names in math, shell or regex braces are not worth a note.
    assert not any("not defined" in o.data.get("text/plain", "") for o in captured.outputs)


def test_format_list_of_a_builtin_type(ipython, fake_ollama):
    run(ipython, "llama3.2 -f list[str] -o words", "Three words")
    assert last_body(fake_ollama)["format"] == {"type": "array", "items": {"type": "string"}}
    assert all(isinstance(w, str) for w in ipython.user_ns["words"])


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e999"])
def test_config_refuses_numbers_that_cannot_be_sent(ipython, value):
    with pytest.raises(UsageError, match="temperature must be a number"):
        line(ipython, f"config temperature={value}")
    with pytest.raises(UsageError, match="num_ctx must be a whole number"):
        run(ipython, f"llama3.2 --option num_ctx={value}", "hi")


def test_a_refused_config_change_keeps_the_chosen_default_model(ipython, fake_ollama):
    run(ipython, "", "hi")
    line(ipython, "pull mistral")
    with pytest.raises(UsageError):
        line(ipython, "config model=qwen3 fps=abc")
    captured = run(ipython, "", "hi")
    assert last_body(fake_ollama)["model"] == "llama3.2:latest"
    assert "newest local model" not in final_html(captured)


def test_a_key_with_a_trailing_newline_works_and_never_shows(client, fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-SECRET-42\n")
    with Client(fake_ollama.url) as keyed:
        keyed.list()
        assert "sk-SECRET-42" not in repr(keyed.headers)
    sent = fake_ollama.last_request("/api/tags").headers["Authorization"]
    assert sent == "Bearer sk-SECRET-42"


def test_a_header_with_a_line_break_is_refused_by_name_not_value(ipython, monkeypatch):
    from ollama_magic import OllamaError

    with pytest.raises(OllamaError) as info:
        Client(headers={"X-Api-Key": "sk-SECRET\r\nX-Evil: 1"})
    assert "X-Api-Key" in str(info.value) and "SECRET" not in str(info.value)
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-SECRET\nmore")
    with pytest.raises(OllamaError) as info:
        Client()
    assert "OLLAMA_API_KEY" in str(info.value) and "SECRET" not in str(info.value)
    with pytest.raises(TraitError, match="X-Api-Key") as info:
        magics(ipython).headers = {"X-Api-Key": "sk-SECRET\nx"}
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize("name", ["X-Access-Key", "Ocp-Apim-Subscription-Key", "Cookie"])
def test_other_credential_headers_are_masked(fake_ollama, name):
    with Client(fake_ollama.url, headers={name: "s3cr3t-value"}) as keyed:
        assert "s3cr3t-value" not in repr(keyed.headers)
        assert keyed.headers[name.lower()] == "s3cr3t-value"


def test_status_behind_a_proxy_that_wants_credentials(ipython, fake_ollama):
    fake_ollama.inject(Fault(status=401, error="unauthorized"), endpoint="/api/version")
    text = line(ipython, "status").stdout
    assert "server: answers: " in text and "(HTTP 401)" in text
    assert "OLLAMA_API_KEY" in text  # what to do, not "check the port"


def test_an_adapter_error_draws_no_answer_and_leaves_the_variable(adapter):
    shell, _ = adapter
    shell.user_ns["kept"] = "from before"
    with capture_output() as captured, pytest.raises(ModelNotFound):
        shell.run_cell_magic("ollama", "nosuch -o kept", "hi")
    assert captured.outputs == []  # only the error's own lines
    assert shell.user_ns["kept"] == "from before"


def test_thinking_before_a_tool_call_counts_as_thinking(ipython, fake_ollama):
    def clock() -> str:
        """The time."""
        return "noon"

    def reply(request):
        if request.body["messages"][-1]["role"] == "tool":
            return Reply(text="It is noon.", thinking="")  # no reasoning in the last round
        return Reply(tool_calls=[{"name": "clock", "arguments": {}}], thinking="I'll ask.")

    fake_ollama.add_reply(reply)
    ipython.user_ns["clock"] = clock
    html = final_html(run(ipython, "qwen3 --think --tools clock", "time?"))
    assert "It is noon." in html and "returned no thinking" not in html


def test_the_chat_widget_uses_the_default_model_the_cells_chose(ipython, fake_ollama):
    run(ipython, "", "hi")
    line(ipython, "pull mistral")  # now the newest local model
    with capture_output():  # a notebook-like frontend, where %ollama chat makes a widget
        chat = ipython.run_line_magic("ollama", "chat --session other")
    try:
        assert chat.model == "llama3.2:latest"
    finally:
        chat.close()


def test_a_dry_run_shows_the_default_model_once_chosen(ipython, fake_ollama):
    shown = run(ipython, "--dry-run", "hi").outputs[0].data["text/plain"]
    assert '"model": "<newest local model>"' in shown
    assert shown.endswith("The model is chosen when the request is sent.")
    run(ipython, "", "hi")
    shown = run(ipython, "--dry-run", "hi").outputs[0].data["text/plain"]
    assert '"model": "llama3.2:latest"' in shown
