"""%ollama replay: answers recorded in SQLite replay without a server, cell for cell."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from _util import plain, wait_until
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from ollama_magic import ChatWidget, ask
from ollama_magic.errors import OllamaError
from ollama_magic.recording import RecordingError, Recordings
from ollama_magic.replay import NotRecorded
from ollama_magic.testing import FakeOllama
from ollama_magic.workspace import Workspace

SETUP = '''
from pydantic import BaseModel

class Person(BaseModel):
    name: str
    age: int

def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b
'''

CELLS = [
    "%%ollama -o one_shot\nWhy is the sky blue?",
    "%%ollama --chat -s 'You are terse.' -o first\nWhat is a prime number?",
    "%%ollama --chat -o second\nList three of them.",
    "%%ollama -f Person -o person\nAda Lovelace was 36.",
    "%%ollama --tools add -o added\nWhat is 2 + 3?",
    "%%ollama qwen3 --think -o thought\nIs 91 prime?",
    "%%ollama --compare 3 -t 0.9 -o runs\nName a colour.",
    "%%ollama --logprobs --top-logprobs 2 -o probs\nSay hi.",
]
BOUND = ["one_shot", "first", "second", "person", "added", "thought", "runs"]


def run(shell, cell: str) -> list[str]:
    """The cell's outputs as the notebook keeps them (HTML, else text), footers left out:
    a replayed answer's footer says "replayed (recorded …)" on purpose."""
    with capture_output() as captured:
        result = shell.run_cell(cell)
    assert result.error_in_exec is None, (cell, result.error_in_exec)
    shown = [o.data.get("text/html") or o.data.get("text/plain", "") for o in captured.outputs]
    return [re.sub(r'<div class="ollama-magic-footer".*?</div>', "", html) for html in shown]


def test_record_then_replay_with_the_server_stopped_gives_the_same_html_and_objects(
    ipython, fake_ollama, tmp_path
):
    ipython.run_cell(SETUP)
    ipython.run_line_magic("ollama", "config model=llama3.2")
    ipython.run_line_magic("ollama", f"replay on {tmp_path / 'lesson.sqlite'}")
    recorded = [run(ipython, cell) for cell in CELLS]
    objects = {name: ipython.user_ns.pop(name) for name in BOUND}
    probs = ipython.user_ns.pop("probs")
    assert len(set(objects["runs"])) > 1  # sampling at 0.9 without a seed: the runs differ
    asked = len(fake_ollama.requests)

    fake_ollama.stop()
    ipython.run_line_magic("ollama", "reset")  # the chat starts again, as in a new kernel
    ipython.run_line_magic("ollama", "replay strict")
    replayed = [run(ipython, cell) for cell in CELLS]

    assert replayed == recorded
    for name in BOUND:
        assert ipython.user_ns[name] == objects[name], name
    assert type(ipython.user_ns["person"]).__name__ == "Person"
    assert ipython.user_ns["probs"].equals(probs)  # the logprobs DataFrame too
    assert len(fake_ollama.requests) == asked
    with capture_output() as captured:
        ipython.run_cell("%%ollama --compare 3 -t 0.9\nName a colour.")
    note = captured.outputs[-1].data["text/html"]
    assert re.search(r"3 of 3 runs replayed \(recorded 20\d\d-\d\d-\d\d \d\d:\d\d UTC\)", note)


def test_the_footer_says_the_answer_was_replayed_and_when(ipython, fake_ollama, tmp_path):
    ipython.run_line_magic("ollama", f"replay on {tmp_path / 'r.sqlite'}")
    ipython.run_line_magic("ollama", "config model=llama3.2")
    with capture_output() as first:
        ipython.run_cell("%%ollama\nWhy is the sky blue?")
    with capture_output() as second:
        ipython.run_cell("%%ollama\nWhy is the sky blue?")
    assert "replayed" not in first.outputs[-1].data["text/html"]
    footer = second.outputs[-1].data["text/html"]
    assert re.search(r"replayed \(recorded 20\d\d-\d\d-\d\d \d\d:\d\d UTC\)", footer)
    assert sum(r.path == "/api/generate" for r in fake_ollama.requests) == 1


def test_strict_with_an_unrecorded_request_is_one_clear_line(ipython, fake_ollama, tmp_path):
    ipython.run_line_magic("ollama", f"replay on {tmp_path / 'r.sqlite'}")
    ipython.run_line_magic("ollama", "config model=llama3.2")
    run(ipython, "%%ollama\nWhy is the sky blue?")
    ipython.run_line_magic("ollama", "replay strict")
    before = len(fake_ollama.requests)
    with capture_output() as captured:
        ipython.run_cell("%%ollama -t 0.5\nWhy is the sky blue?")
    shown = plain(captured.stdout + captured.stderr)
    assert "NotRecorded: Strict replay: 'Why is the sky blue?' to llama3.2 was never " in shown
    assert "differs in temperature (recorded None, asked 0.5)" in shown
    assert "Traceback" not in shown
    assert len(fake_ollama.requests) == before  # nothing was sent


def test_on_replays_answers_and_asks_the_server_for_new_ones(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("on", str(tmp_path / "r.sqlite"))
    first = ask("Why is the sky blue?", workspace=workspace)
    again = ask("Why is the sky blue?", workspace=workspace)
    other = ask("Why is grass green?", workspace=workspace)
    assert again == first and other != first
    generated = [r.body["prompt"] for r in fake_ollama.requests if r.path == "/api/generate"]
    assert generated == ["Why is the sky blue?", "Why is grass green?"]
    assert workspace.recorder is not None and workspace.recorder.recordings.count() == 2


def test_record_mode_always_asks_and_the_newest_take_replays(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("record", str(tmp_path / "r.sqlite"))
    fake_ollama.add_reply("sky", "First take.")
    ask("Why is the sky blue?", workspace=workspace)
    fake_ollama.clear_replies()
    fake_ollama.add_reply("sky", "Second take.")
    assert ask("Why is the sky blue?", workspace=workspace) == "Second take."
    workspace.set_replay("strict")
    assert ask("Why is the sky blue?", workspace=workspace) == "Second take."


def test_a_recording_replays_on_any_server(fake_ollama, tmp_path):
    """The host is not part of a recording: a lesson recorded on one server replays anywhere."""
    path = str(tmp_path / "r.sqlite")
    recorder = Workspace(host=fake_ollama.url, model="llama3.2")
    recorder.set_replay("on", path)
    answer = ask("Why is the sky blue?", workspace=recorder)
    with FakeOllama() as elsewhere:
        player = Workspace(host=elsewhere.url, model="llama3.2")
        player.set_replay("on", path)
        assert ask("Why is the sky blue?", workspace=player) == answer
        assert not [r for r in elsewhere.requests if r.path == "/api/generate"]


def test_on_falls_back_to_the_recording_when_the_server_is_unreachable(
    fake_ollama, tmp_path, dead_url
):
    """The Wi-Fi is down: in `on` mode the server's state (the model list that picks the
    default model) comes from the file too."""
    path = str(tmp_path / "r.sqlite")
    first = Workspace(host=fake_ollama.url)  # no model: the newest local one is chosen
    first.set_replay("on", path)
    answer = ask("Why is the sky blue?", workspace=first)
    offline = Workspace(host=dead_url)
    offline.set_replay("on", path)
    assert ask("Why is the sky blue?", workspace=offline) == answer


def test_an_interrupted_recording_leaves_no_partial_row(tmp_path):
    with FakeOllama(token_delay=0.02) as server:
        workspace = Workspace(host=server.url, model="llama3.2")
        workspace.set_replay("on", str(tmp_path / "r.sqlite"))
        stop = threading.Event()
        request = workspace.request("Write a long story about the sea.")
        outcome: list = []

        def answer() -> None:
            from ollama_magic.transport import Cancellation

            cancel = Cancellation()
            threading.Thread(target=lambda: (stop.wait(), cancel.cancel()), daemon=True).start()
            outcome.append(workspace.ask(request, stop=cancel))

        worker = threading.Thread(target=answer)
        worker.start()
        wait_until(lambda: any(r.path == "/api/generate" for r in server.requests))
        stop.set()
        worker.join(10)
        assert outcome and outcome[0].stopped and outcome[0].result is None
    recordings = Recordings(tmp_path / "r.sqlite")
    assert recordings.count() == 0  # the half answer was not kept
    with pytest.raises(NotRecorded):
        workspace.set_replay("strict")
        workspace.ask(request).raise_for_error()


def test_two_processes_record_into_one_file(fake_ollama, tmp_path):
    path = tmp_path / "shared.sqlite"
    script = textwrap.dedent(
        f"""
        import sys
        from ollama_magic import ask
        from ollama_magic.workspace import Workspace
        workspace = Workspace(host={fake_ollama.url!r}, model="llama3.2")
        workspace.set_replay("record", {str(path)!r})
        for n in range(15):
            ask(f"Question {{n}} from process {{sys.argv[1]}}", workspace=workspace)
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(n)], stderr=subprocess.PIPE)
        for n in range(2)
    ]
    for process in processes:
        assert process.wait(60) == 0, process.stderr.read() if process.stderr else ""
    recordings = Recordings(path)
    prompts = {entry.prompt for entry in recordings.history()}
    assert len(prompts) == 30
    assert "Question 14 from process 1" in prompts


def test_a_corrupt_file_is_a_clear_error_and_replay_stays_off(ipython, tmp_path):
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OllamaError, match=r"broken\.sqlite cannot be used for recordings: the"):
        ipython.run_line_magic("ollama", f"replay on {broken}")
    magics = ipython.magics_manager.registry["OllamaMagics"]
    assert magics.replay == "off" and magics.workspace.recorder is None
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(RecordingError, match="a SQLite file of another program"):
        Recordings(other)


def test_the_setting_can_be_configured_and_a_bad_file_is_refused(
    ipython, fake_ollama, tmp_path, caplog
):
    magics = ipython.magics_manager.registry["OllamaMagics"]
    ipython.run_line_magic("config", f"OllamaMagics.replay_file = {str(tmp_path / 'r.sqlite')!r}")
    ipython.run_line_magic("config", "OllamaMagics.replay = 'on'")
    assert magics.workspace.recorder is not None
    assert magics.workspace.recorder.recordings.path == tmp_path / "r.sqlite"
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"garbage" * 100)
    ipython.run_line_magic("config", f"OllamaMagics.replay_file = {str(broken)!r}")
    assert "broken.sqlite cannot be used for recordings" in caplog.text  # %config logs it
    assert magics.replay_file == magics.workspace.replay_file == str(tmp_path / "r.sqlite")
    ipython.run_line_magic("config", "OllamaMagics.replay = 'off'")
    assert magics.workspace.recorder is None
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ipython.run_line_magic("config", f"OllamaMagics.replay_file = {str(blocker / 'r.sqlite')!r}")
    ipython.run_line_magic("config", "OllamaMagics.replay = 'on'")
    assert "is not a folder this kernel can write to" in caplog.text
    assert magics.replay == magics.workspace.replay == "off"  # both sides agree


def test_log_lists_what_was_asked_as_a_dataframe_and_searches_it(ipython, fake_ollama, tmp_path):
    ipython.run_line_magic("ollama", f"replay on {tmp_path / 'r.sqlite'}")
    ipython.run_line_magic("ollama", "config model=llama3.2")
    run(ipython, "%%ollama\nWhy is the sky blue?")
    run(ipython, "%%ollama\nWhy is grass green?")
    frame = ipython.run_line_magic("ollama", "log")
    assert list(frame.columns) == [
        "time",
        "model",
        "prompt",
        "tokens",
        "seconds",
        "cell",
        "notebook",
    ]
    assert list(frame["prompt"]) == ["Why is grass green?", "Why is the sky blue?"]
    assert frame["model"][0] == "llama3.2" and frame["tokens"][0] > 0
    assert str(frame["time"].dt.tz) == "UTC"
    found = ipython.run_line_magic("ollama", "history --all --search SKY")
    assert list(found["prompt"]) == ["Why is the sky blue?"]


def test_each_recording_notes_its_cell(ipython, fake_ollama, tmp_path):
    ipython.run_line_magic("ollama", f"replay on {tmp_path / 'r.sqlite'}")
    ipython.run_line_magic("ollama", "config model=llama3.2")
    with capture_output():
        result = ipython.run_cell("%%ollama\nWhy is the sky blue?", store_history=True)
    frame = ipython.run_line_magic("ollama", "log")
    assert frame["cell"][0] == f"In [{result.execution_count}]"


def test_export_and_import_carry_recordings_to_another_machine(fake_ollama, tmp_path):
    teacher = Workspace(host=fake_ollama.url, model="llama3.2")
    teacher.set_replay("on", str(tmp_path / "teacher.sqlite"))
    answer = ask("Why is the sky blue?", workspace=teacher)
    assert teacher.recorder is not None
    assert teacher.recorder.recordings.export(tmp_path / "lesson.sqlite") == 1
    with pytest.raises(RecordingError, match="exists already"):
        teacher.recorder.recordings.export(tmp_path / "lesson.sqlite")
    assert not (tmp_path / "lesson.sqlite-wal").exists()  # one self-contained file

    student = Recordings(tmp_path / "student.sqlite")
    assert student.merge(tmp_path / "lesson.sqlite") == (1, 0)
    assert student.merge(tmp_path / "lesson.sqlite") == (0, 1)  # importing twice adds nothing
    student.close()
    offline = Workspace(host="http://127.0.0.1:9", model="llama3.2")
    offline.set_replay("strict", str(tmp_path / "student.sqlite"))
    assert ask("Why is the sky blue?", workspace=offline) == answer


def test_replay_export_and_import_commands(ipython, fake_ollama, tmp_path):
    ipython.run_line_magic("ollama", f"replay on {tmp_path / 'r.sqlite'}")
    ipython.run_line_magic("ollama", "config model=llama3.2")
    run(ipython, "%%ollama\nWhy is the sky blue?")
    with capture_output() as exported:
        ipython.run_line_magic("ollama", f"replay export {tmp_path / 'out.sqlite'}")
    assert "Exported 1 recorded answer from" in exported.stdout
    ipython.run_line_magic("ollama", f"replay on {tmp_path / 'fresh.sqlite'}")
    with capture_output() as imported:
        ipython.run_line_magic("ollama", f"replay import {tmp_path / 'out.sqlite'}")
    assert "Imported 1 recorded answer from" in imported.stdout
    with pytest.raises(UsageError, match="Usage: %ollama replay"):
        ipython.run_line_magic("ollama", "replay sideways")


def test_the_chat_widget_replays(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("on", str(tmp_path / "r.sqlite"))
    chat = ChatWidget(workspace=workspace)
    chat.ask("What is a prime number?")
    assert chat.wait(10)
    recorded, url = chat.messages, fake_ollama.url
    fake_ollama.stop()
    kernel = Workspace(host=url, model="llama3.2")  # the lesson, another day
    kernel.set_replay("strict", str(tmp_path / "r.sqlite"))
    again = ChatWidget(workspace=kernel)
    again.ask("What is a prime number?")
    assert again.wait(10)
    assert again.messages == recorded
    assert "replayed (recorded" in again.status.value  # the status line under the chat


def test_replay_keeps_the_recorded_pace_unless_fast(tmp_path):
    with FakeOllama(token_delay=0.03) as server:
        workspace = Workspace(host=server.url, model="llama3.2")
        workspace.set_replay("on", str(tmp_path / "r.sqlite"))
        ask("Why is the sky blue?", workspace=workspace)
    assert workspace.recorder is not None
    (entry,) = workspace.recorder.recordings.history()
    assert entry.seconds > 1.0  # ~75 tokens, 30 ms apart
    offsets = [offset for offset, _ in entry.chunks]
    assert offsets == sorted(offsets) and offsets[-1] == entry.seconds
    workspace.set_replay("strict")
    stream = workspace.client().generate("llama3.2", "Why is the sky blue?")
    arrived = []
    started = time.monotonic()
    for _ in stream:
        arrived.append(time.monotonic() - started)
    assert arrived[-1] >= offsets[-1] * 0.95  # each chunk no sooner than it first came
    workspace.set_replay("strict", fast=True)
    started = time.monotonic()
    fast = workspace.client().generate("llama3.2", "Why is the sky blue?", stream=False)
    assert time.monotonic() - started < offsets[-1] / 2
    assert fast.recorded_at == entry.recorded_at


def test_recorded_requests_keep_no_host_and_images_as_digests(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llava")
    workspace.set_replay("on", str(tmp_path / "r.sqlite"))
    png = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGA"
        "WjR9awAAAABJRU5ErkJggg=="
    )
    ask("What is in this picture?", workspace=workspace, images=[png])
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        (stored,) = db.execute("SELECT request FROM recordings WHERE kind = 'answer'").fetchone()
    request = json.loads(stored)
    assert request["images"][0].startswith("sha256:") and png not in stored
    assert fake_ollama.url not in stored and "stream" not in request


def test_naming_a_file_touches_no_other(fake_ollama, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("on", str(tmp_path / "lesson" / "r.sqlite"))
    assert not (tmp_path / ".ollama_magic").exists()  # the default file was never opened
    configured = Workspace(
        host=fake_ollama.url, model="llama3.2", replay="on", replay_file=str(tmp_path / "c.sqlite")
    )
    assert configured.recorder is not None and not (tmp_path / ".ollama_magic").exists()
    ask("Why is the sky blue?", workspace=configured)
    assert Recordings(tmp_path / "c.sqlite").count() == 1


def test_strict_sends_nothing_at_all(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("on", str(tmp_path / "r.sqlite"))
    ask("Why is the sky blue?", workspace=workspace)
    workspace.set_replay("strict")
    before = len(fake_ollama.requests)
    client = workspace.client()
    with pytest.raises(NotRecorded, match="Strict replay sends nothing to a server"):
        list(client.pull("llama3.2"))
    with pytest.raises(NotRecorded):
        client.copy("llama3.2", "backup")
    with pytest.raises(NotRecorded):
        client.delete("llama3.2")
    assert client.is_running() is False
    assert len(fake_ollama.requests) == before


def test_a_strict_file_must_exist_and_is_only_read(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    with pytest.raises(RecordingError, match="does not exist"):
        workspace.set_replay("strict", str(tmp_path / "typo.sqlite"))
    assert not (tmp_path / "typo.sqlite").exists() and workspace.recorder is None
    workspace.set_replay("on", str(tmp_path / "r.sqlite"))
    ask("Why is the sky blue?", workspace=workspace)
    assert workspace.recorder is not None
    workspace.recorder.recordings.export(tmp_path / "lesson.sqlite")
    exported = (tmp_path / "lesson.sqlite").read_bytes()
    workspace.set_replay("strict", str(tmp_path / "lesson.sqlite"))
    ask("Why is the sky blue?", workspace=workspace)
    Recordings(tmp_path / "other.sqlite").merge(tmp_path / "lesson.sqlite")
    assert (tmp_path / "lesson.sqlite").read_bytes() == exported  # replayed, imported: unchanged


def test_a_chat_widget_follows_the_replay_mode_after_the_clients_change(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("on", str(tmp_path / "r.sqlite"))
    chat = ChatWidget(workspace=workspace)
    workspace.timeout = 120  # the workspace makes new clients; the widget keeps its own
    workspace.set_replay("off")
    chat.ask("What is a prime number?")
    assert chat.wait(10)
    assert chat.messages[-1]["role"] == "assistant"  # answered by the server, no closed file
    workspace.set_replay("strict", str(tmp_path / "r.sqlite"))
    chat.ask("Something never recorded")
    assert chat.wait(10)
    assert "Strict replay" in chat.status.value


def test_the_same_temperature_written_two_ways_is_one_request(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("on", str(tmp_path / "r.sqlite"))
    first = ask("Why is the sky blue?", workspace=workspace, options={"temperature": 1})
    workspace.set_replay("strict")
    assert ask("Why is the sky blue?", workspace=workspace, options={"temperature": 1.0}) == first


def test_the_log_names_the_users_question_not_a_tool_result(fake_ollama, tmp_path):
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("on", str(tmp_path / "r.sqlite"))

    def add(a: int, b: int) -> int:
        """Add two numbers.

        Args:
            a: The first.
            b: The second.
        """
        return a + b

    ask("What is 2 + 3?", workspace=workspace, tools=[add])
    assert workspace.recorder is not None
    prompts = {entry.prompt for entry in workspace.recorder.recordings.history()}
    assert prompts == {"What is 2 + 3?"}


def test_strict_names_an_unrecorded_prompt_with_braces_in_one_line(ipython, fake_ollama, tmp_path):
    path = tmp_path / "r.sqlite"
    Recordings(path).close()
    ipython.run_line_magic("ollama", f"replay strict {path}")
    ipython.run_line_magic("ollama", "config model=llama3.2")
    with capture_output() as captured:
        ipython.run_cell('%%ollama --no-interpolate\nReturn JSON like {"city": "Oslo"}')
    shown = plain(captured.stdout + captured.stderr)
    assert 'NotRecorded: Strict replay: \'Return JSON like {"city": "Oslo"}\' to llama3.2' in shown
    assert "Traceback" not in shown


def test_a_file_damaged_inside_is_refused_at_once_and_replay_stays_usable(
    ipython, fake_ollama, tmp_path
):
    path = tmp_path / "r.sqlite"
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("record", str(path))
    for number in range(40):
        ask(f"Question {number} " + "x" * 400, workspace=workspace)
    workspace.set_replay("off")
    data = bytearray(path.read_bytes())
    assert len(data) > 20000
    data[12288:16384] = b"\xff" * 4096  # a page in the middle, the header intact
    path.write_bytes(bytes(data))
    with pytest.raises(OllamaError, match="the file is damaged or not SQLite"):
        ipython.run_line_magic("ollama", f"replay strict {path}")
    magics = ipython.magics_manager.registry["OllamaMagics"]
    assert magics.workspace.recorder is None
    with capture_output() as captured:
        ipython.run_line_magic("ollama", "replay off")
        ipython.run_line_magic("ollama", "replay")
    assert captured.stdout.count("Replay off: every request goes to the server") == 2


def test_the_sqlite_file_alone_holds_everything_once_replay_stops(fake_ollama, tmp_path):
    path = tmp_path / "r.sqlite"
    workspace = Workspace(host=fake_ollama.url, model="llama3.2")
    workspace.set_replay("on", str(path))
    ask("Why is the sky blue?", workspace=workspace)
    workspace.set_replay("off")
    assert (
        not (tmp_path / "r.sqlite-wal").exists() or not (tmp_path / "r.sqlite-wal").stat().st_size
    )
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(path.read_bytes())  # the file alone, as one would attach it to a mail
    assert Recordings(copy, readonly=True).count() == 1


def test_an_empty_copy_says_what_it_is(tmp_path):
    """A .sqlite copied while a kernel was writing, without its -wal: SQLite, but empty."""
    empty = sqlite3.connect(tmp_path / "empty.sqlite")
    empty.execute("PRAGMA user_version = 1")  # writes the header: a valid, empty database
    empty.close()
    with pytest.raises(RecordingError, match="holds no recordings"):
        Recordings(tmp_path / "empty.sqlite", readonly=True)


def test_status_in_strict_says_the_server_is_not_asked(ipython, fake_ollama, tmp_path):
    path = tmp_path / "r.sqlite"
    Recordings(path).close()
    ipython.run_line_magic("ollama", f"replay strict {path}")
    before = len(fake_ollama.requests)
    with capture_output() as captured:
        ipython.run_line_magic("ollama", "status")
    assert "replay: strict, from " in captured.stdout
    assert "nothing is sent to a server, so the server is not asked" in captured.stdout
    assert len(fake_ollama.requests) == before
