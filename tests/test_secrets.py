"""Credentials never show: not in a repr, a printed setting, an error, a traceback, a dry run,
nor in a saved notebook; and a value filled into a prompt is not saved in output metadata.

Each credential is set where a user sets it (``OLLAMA_API_KEY``, ``OllamaMagics.headers``,
``Client(headers=...)``, ``user:password@`` in the host), each test first checks that the
stand-in received it (so it was in play), then searches everything produced for it.
"""

from __future__ import annotations

import base64
import json
import traceback

import pytest
from _util import magic_shell
from IPython.lib.pretty import pretty
from IPython.utils.capture import capture_output
from traitlets import TraitError

from ollama_magic import Client, OllamaError
from ollama_magic.errors import ServerUnreachable, Unauthorized
from ollama_magic.testing import Fault

KEY = "sk-ZEBRAKEY-7781"  # OLLAMA_API_KEY
MAGIC_HEADER = "MAGICHDR-4417"  # OllamaMagics.headers = {"X-Api-Key": ...}
CLIENT_HEADER = "CLIENTHDR-2093"  # Client(headers={"X-Api-Key": ...})
USER, PASSWORD = "ada", "PASSWORT-6620"  # http://ada:PASSWORT-6620@host
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (KEY, MAGIC_HEADER, CLIENT_HEADER, PASSWORD, BASIC)
TOKEN = "NBTOKEN-5150"  # a notebook variable filled into a prompt as {token}


def leaks(text: str) -> list[str]:
    """The credentials found in ``text``."""
    return [secret for secret in SECRETS if secret in text]


def everything_about(error: BaseException) -> str:
    """An error as every form shows it: message, repr, IPython's lines, the full traceback."""
    forms = [str(error), repr(error), "".join(traceback.format_exception(error))]
    if isinstance(error, OllamaError):
        forms += [*error._render_traceback_(), error.hint, error.partial]
    return "\n".join(forms)


def raised(call) -> BaseException:
    try:
        call()
    except BaseException as error:  # whatever it is, it must not tell
        return error
    raise AssertionError("expected an error")


def with_password(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{PASSWORD}@")


# -- the client -------------------------------------------------------------------------------


def test_the_client_shows_no_credential_in_reprs_headers_or_errors(
    fake_ollama, monkeypatch, dead_url
):
    monkeypatch.setenv("OLLAMA_API_KEY", KEY + "\n")  # as read from a file: stripped
    fake_ollama.add_reply("story", "one two three four five")
    client = Client(fake_ollama.url, headers={"X-Api-Key": CLIENT_HEADER})
    client.version()
    sent = fake_ollama.last_request("/api/version").headers
    assert sent["Authorization"] == f"Bearer {KEY}" and sent["X-Api-Key"] == CLIENT_HEADER

    shown = [repr(client), str(client.headers), repr(client.headers), pretty(client.headers)]
    for fault in (
        Fault(status=401, error="unauthorized"),
        Fault(status=403, error="forbidden by the proxy"),
        Fault(status=500, error="boom"),
        Fault(error_after=2, error="runner died"),
        Fault(cut_after=2),
    ):
        fake_ollama.inject(fault, times=1)
        error = raised(lambda: client.generate("llama3.2", "story").consume())
        assert isinstance(error, OllamaError)
        shown.append(everything_about(error))
    shown.append(everything_about(raised(lambda: client.generate("nope", "story").consume())))
    nowhere = Client(dead_url, headers={"X-Api-Key": CLIENT_HEADER})
    unreachable = raised(lambda: nowhere.generate("llama3.2", "hi").consume())
    assert isinstance(unreachable, ServerUnreachable)
    shown.append(everything_about(unreachable))
    assert not leaks("\n".join(shown))


def test_credentials_in_the_host_are_basic_auth_and_never_echoed(fake_ollama, dead_url):
    client = Client(with_password(fake_ollama.url))
    client.version()
    assert fake_ollama.last_request("/api/version").headers["Authorization"] == f"Basic {BASIC}"
    shown = [repr(client), client.host, str(client.headers), pretty(client.headers)]

    invalid = raised(lambda: Client(f"http://{USER}:{PASSWORD}@127.0.0.1:99999"))
    assert isinstance(invalid, OllamaError) and "not a valid Ollama host" in invalid.message
    down = Client(with_password(dead_url))
    unreachable = raised(lambda: down.generate("llama3.2", "hi").consume())
    assert isinstance(unreachable, ServerUnreachable)
    fake_ollama.inject(Fault(status=401, error="unauthorized"), times=1)
    refused = raised(lambda: client.generate("llama3.2", "hi").consume())
    assert isinstance(refused, Unauthorized)
    shown += [everything_about(e) for e in (invalid, unreachable, refused)]
    assert not leaks("\n".join(shown))


@pytest.mark.parametrize(
    "value", ["sk-ZEBRAKEY\r\nX-Evil: 1", "sk-ZEBRA\x00KEY", "sk-\x1bZEBRAKEY"]
)
def test_header_values_with_control_characters_are_refused_by_name(
    value, fake_ollama, monkeypatch, ipython, caplog
):
    error = raised(lambda: Client(fake_ollama.url, headers={"X-Api-Key": value}))
    assert isinstance(error, OllamaError) and "X-Api-Key" in error.message
    shown = [everything_about(error)]
    if "\x00" not in value:  # an environment variable cannot hold a NUL
        monkeypatch.setenv("OLLAMA_API_KEY", value)
        from_env = raised(lambda: Client(fake_ollama.url))
        assert isinstance(from_env, OllamaError) and "OLLAMA_API_KEY" in from_env.message
        shown.append(everything_about(from_env))
        monkeypatch.delenv("OLLAMA_API_KEY")

    config = raised(lambda: setattr(magics_of(ipython), "headers", {"X-Api-Key": value}))
    assert isinstance(config, TraitError) and "X-Api-Key" in str(config)
    with capture_output() as captured:  # %config logs what it refused
        ipython.run_cell(f"%config OllamaMagics.headers = {{'X-Api-Key': {value!r}}}")
    said = captured.stdout + captured.stderr + caplog.text
    assert "X-Api-Key" in said and magics_of(ipython).headers == {}
    for text in [*shown, str(config), said]:
        assert "ZEBRA" not in text, "the refused value was shown"
    assert fake_ollama.requests == [], "nothing was sent"


# -- the magics -------------------------------------------------------------------------------


def magics_of(shell):
    return shell.magics_manager.registry["OllamaMagics"]


def shown_by(shell, source: str) -> str:
    """Run a cell as a user would; everything it printed or displayed, metadata included."""
    with capture_output() as captured:
        shell.run_cell(source)
    outputs = [[o.data, o.metadata] for o in captured.outputs]
    return "\n".join([captured.stdout, captured.stderr, json.dumps(outputs, ensure_ascii=False)])


def leaks_by_cell(shown: dict[str, str]) -> dict[str, list[str]]:
    return {source: leaks(text) for source, text in shown.items() if leaks(text)}


def test_the_magics_show_no_credential_anywhere(ipython, fake_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    fake_ollama.add_reply("story", "one two three four five")
    shown: dict[str, str] = {}
    for source in [
        f"%config OllamaMagics.headers = {{'X-Api-Key': {MAGIC_HEADER!r}}}",
        "%config OllamaMagics",
        "%config OllamaMagics.headers",
        "%ollama config",
        "%ollama status",
        "get_ipython().magics_manager.registry['OllamaMagics'].headers",
        "get_ipython().magics_manager.registry['OllamaMagics'].workspace.client()",
        "%%ollama llama3.2\nstory",
        "%%ollama llama3.2 --chat -o kept\nstory",
        "%%ollama llama3.2 --dry-run\nstory",
        "%%ollama llama3.2 --chat --dry-run\nstory",
        "%ollama history",
        "%%ollama no-such-model\nstory",
        "%ollama traceback",
    ]:
        shown[source] = shown_by(ipython, source)
    sent = fake_ollama.last_request("/api/chat").headers
    assert sent["Authorization"] == f"Bearer {KEY}" and sent["X-Api-Key"] == MAGIC_HEADER

    for fault in (Fault(status=401, error="unauthorized"), Fault(error_after=2, error="died")):
        fake_ollama.inject(fault, times=1)
        shown[f"{fault}"] = shown_by(ipython, "%%ollama llama3.2\nstory")
        shown[f"%ollama traceback after {fault}"] = shown_by(ipython, "%ollama traceback")
    monkeypatch.setattr(OllamaError, "show_traceback", True)  # OLLAMA_MAGIC_TRACEBACK=1
    fake_ollama.inject(Fault(status=401, error="unauthorized"), times=1)
    shown["401, full traceback"] = shown_by(ipython, "%%ollama llama3.2\nstory")
    everything = "\n".join(shown.values())
    assert "Traceback (most recent call last)" in everything, "the tracebacks were searched"
    assert "Unauthorized" in everything and "Dry run" in everything
    assert not leaks_by_cell(shown)


def test_credentials_in_ollama_host_are_never_echoed_by_the_magics(
    fake_ollama, monkeypatch, dead_url, _clean_environment
):
    monkeypatch.setenv("OLLAMA_HOST", with_password(fake_ollama.url))
    fake_ollama.add_reply("story", "one two three four five")
    shown: dict[str, str] = {}
    with magic_shell() as shell:
        for source in [
            "%config OllamaMagics",
            "%ollama config",
            "%ollama status",
            "get_ipython().magics_manager.registry['OllamaMagics'].workspace.client()",
            "%%ollama llama3.2\nstory",
            "%%ollama llama3.2 --dry-run\nstory",
            "%ollama pull no-such-model",
            "%%ollama no-such-model\nstory",
            "%ollama traceback",
            f"%%ollama llama3.2 --host {USER}:{PASSWORD}@127.0.0.1:99999\nstory",
            f"%%ollama llama3.2 --host {with_password(dead_url)}\nstory",
            f"%%ollama llama3.2 --dry-run --host {with_password(fake_ollama.url)}\nstory",
        ]:
            shown[source] = shown_by(shell, source)
        fake_ollama.inject(Fault(status=401, error="unauthorized"), times=1)
        shown["401"] = shown_by(shell, "%%ollama llama3.2\nstory")
        shown["%ollama traceback after 401"] = shown_by(shell, "%ollama traceback")
    sent = fake_ollama.last_request("/api/generate").headers
    assert sent["Authorization"] == f"Basic {BASIC}"
    everything = "\n".join(shown.values())
    assert "not a valid Ollama host" in everything and "Cannot reach Ollama" in everything
    assert "Traceback (most recent call last)" in everything
    assert not leaks_by_cell(shown)


# -- a saved notebook -----------------------------------------------------------------------------


def notebook_cells() -> list[str]:
    """A small notebook as a careful user writes it: credentials come from the environment
    (so the file's sources hold none), the token is typed in."""
    return [
        "import os\n%load_ext ollama_magic",
        "%config OllamaMagics.headers = {'X-Api-Key': os.environ['PROXY_KEY']}",
        f"token = {TOKEN!r}",
        "%%ollama llama3.2 -o answer\nSummarise the ticket of {token} in a sentence.",
        "%%ollama llama3.2 --chat\nWho owns {token}?",
        "%%ollama llama3.2 --dry-run\nWhat is a ticket?",
        "%config OllamaMagics",
        "%ollama config",
        "get_ipython().run_cell_magic('ollama', 'llama3.2 --host ' + os.environ['PROXY_URL'], "
        "'And via the proxy?')",
        "%config OllamaMagics.host = os.environ['PROXY_URL']",
        "%config OllamaMagics",
        "%ollama config",
        "%ollama status",
        "%config OllamaMagics.host = ''",
        "from ollama_magic import Client\n"
        "client = Client(headers={'X-Api-Key': os.environ['CLIENT_KEY']})\n"
        "client.version()\n"
        "client",
        "client.headers",
        "%%ollama llama3.2 --no-such-option\nhi",
        "%%ollama no-such-model\nhi",
        "%ollama traceback",
        "from ollama_magic import ChatWidget\n"
        "chat = ChatWidget('llama3.2')\n"
        "chat.ask('Hello there')\n"
        "assert chat.wait(30)\n"
        "chat",
    ]


def test_a_saved_notebook_holds_no_credential_and_no_filled_value_in_metadata(
    fake_ollama, monkeypatch, tmp_path
):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)  # the kernel inherits the environment
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    monkeypatch.setenv("PROXY_KEY", MAGIC_HEADER)
    monkeypatch.setenv("CLIENT_KEY", CLIENT_HEADER)
    monkeypatch.setenv("PROXY_URL", with_password(fake_ollama.url))
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in notebook_cells()]
    NotebookClient(
        notebook,
        timeout=60,
        kernel_name="python3",
        allow_errors=True,
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    saved = tmp_path / "saved.ipynb"
    nbformat.write(notebook, saved)
    text = saved.read_text()

    # Every credential was in play, and the token was sent...
    requests = fake_ollama.requests
    assert any(r.headers.get("Authorization") == f"Bearer {KEY}" for r in requests)
    assert any(r.headers.get("Authorization") == f"Basic {BASIC}" for r in requests)
    assert any(r.headers.get("X-Api-Key") == MAGIC_HEADER for r in requests)
    assert any(r.headers.get("X-Api-Key") == CLIENT_HEADER for r in requests)
    assert any(TOKEN in r.prompt for r in requests)
    errors = [o.ename for c in notebook.cells for o in c.outputs if o.output_type == "error"]
    assert errors == ["ModelNotFound"], errors
    assert "Traceback (most recent call last)" in text, "%ollama traceback was saved"
    assert "widgets" in notebook.metadata, "the chat's state was saved"

    # ... yet the token is in no output's metadata (the prompt is kept as written)...
    for cell in notebook.cells:
        for output in cell.outputs:
            assert TOKEN not in json.dumps(output.get("metadata", {})), cell.source
    provenance = [
        o.metadata["ollama_magic"]
        for c in notebook.cells
        for o in c.outputs
        if "ollama_magic" in o.get("metadata", {})
    ]
    assert any(
        p.get("prompt") == "Summarise the ticket of {token} in a sentence." for p in provenance
    )
    assert any(p.get("filled") == ["token"] for p in provenance)
    # ... and no credential is anywhere in the file.
    assert not leaks(text), f"saved in {saved}"
