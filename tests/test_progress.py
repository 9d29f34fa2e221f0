"""The batch progress views: the words, the notebook output updated in place, the terminal line."""

from __future__ import annotations

import atexit
import io
import threading
from html.parser import HTMLParser

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

from ollama_magic.batch import BatchProgress, BatchStatus, HostStatus, run_batch
from ollama_magic.client import Client
from ollama_magic.progress import (
    NotebookProgress,
    TerminalProgress,
    format_duration,
    progress_view,
    status_text,
    summary_lines,
)

HOSTS = [
    HostStatus("http://127.0.0.1:11434", done=500),
    HostStatus("http://127.0.0.1:11435", done=498, failed=2, down="Connection refused"),
]
HOSTILE = "<img src=x onerror=alert(1)>\x1b[2J\x1b]52;c;ZXZpbA==\x07"


@pytest.fixture
def shell():
    """A real IPython shell: display() goes through it, capture_output() records it."""
    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell.instance(config=config)
    try:
        yield ip
    finally:
        atexit.unregister(ip.atexit_operations)
        InteractiveShell.clear_instance()


class Recorder:
    """A display sink that keeps every bundle sent (first the display, then the updates)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []

    def display(self, bundle, metadata):
        self.sent.append(("display", bundle))
        return self

    def update(self, bundle, metadata):
        self.sent.append(("update", bundle))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _status(**fields) -> BatchStatus:
    fields.setdefault("total", 1000)
    return BatchStatus(**fields)


# -- the words ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"total": 1000}, "0 / 1,000 rows"),
        (
            {"done": 410, "failed": 2, "elapsed": 2.64},
            "412 / 1,000 rows · 2 failed · 156 rows/s · about 4 s left",
        ),
        (
            {"total": 8100, "done": 100, "elapsed": 1.0},
            "100 / 8,100 rows · 100 rows/s · about 1 min 20 s left",
        ),
        (
            {"total": 3880, "done": 100, "elapsed": 100.0},
            "100 / 3,880 rows · 1.0 rows/s · about 1 h 3 min left",
        ),
        ({"total": 10, "done": 1, "elapsed": 4.0}, "1 / 10 rows · 0.25 rows/s · about 36 s left"),
        (
            {"total": 12_000, "done": 2000, "elapsed": 1.0, "unit": "texts"},
            "2,000 / 12,000 texts · 2,000 texts/s · about 5 s left",
        ),
        # Rows answered before a resume took no time: the rate counts only this run's rows.
        (
            {"done": 400, "skipped": 300, "elapsed": 1.0},
            "400 / 1,000 rows · 100 rows/s · about 6 s left (300 answered before, not sent again)",
        ),
        (
            {"done": 998, "failed": 2, "elapsed": 6.4, "state": "finished"},
            "1,000 rows in 6.4 s · 998 answered · 2 failed · 156 rows/s",
        ),
        (
            {"total": 1, "done": 1, "elapsed": 0.5, "state": "finished"},
            "1 row in 0.5 s · 1 answered · 2.0 rows/s",
        ),
        (
            {"total": 100, "done": 100, "elapsed": 200.0, "state": "finished"},
            "100 rows in 3 min 20 s · 100 answered · 0.50 rows/s",
        ),
        (
            {"done": 412, "elapsed": 3.0, "state": "interrupted"},
            "Interrupted: 412 of 1,000 rows answered, 588 left",
        ),
        (
            {"done": 410, "failed": 2, "state": "interrupted"},
            "Interrupted: 410 of 1,000 rows answered, 2 failed, 588 left",
        ),
        (
            {"done": 412, "elapsed": 3.0, "state": "failed"},
            "Stopped: no server left; 412 answered, 588 left",
        ),
        (
            {"done": 412, "skipped": 100, "state": "failed"},
            "Stopped: no server left; 412 answered, 588 left (100 answered before, not sent again)",
        ),
    ],
)
def test_status_text(fields, text):
    assert status_text(_status(**fields)) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "1 s"),
        (4.4, "4 s"),
        (59.6, "1 min"),
        (80, "1 min 20 s"),
        (3600, "1 h"),
        (3790, "1 h 3 min"),
    ],
)
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_summary_names_each_server_only_when_there_are_several():
    one = _status(done=500, elapsed=1.0, state="finished", hosts=HOSTS[:1])
    assert summary_lines(one) == [status_text(one)]
    several = _status(done=998, failed=2, elapsed=1.0, state="finished", hosts=HOSTS)
    assert summary_lines(several)[1] == (
        "127.0.0.1:11434: 500 done · 127.0.0.1:11435: 498 done, 2 failed, down (Connection refused)"
    )


def test_progress_view_chooses_by_frontend():
    assert type(progress_view(rich=True, quiet=True)) is BatchProgress
    assert isinstance(progress_view(rich=True, quiet=False), NotebookProgress)
    assert isinstance(progress_view(rich=False, quiet=False), TerminalProgress)


# -- the notebook view -------------------------------------------------------------------------


def _display_ids(outputs) -> set[str]:
    return {(o.transient or {}).get("display_id") for o in outputs}


def test_a_batch_shows_as_one_output_updated_in_place(shell):
    seen_running = threading.Event()

    class Progress(NotebookProgress):
        def update(self, status):
            super().update(status)
            seen_running.set()

    def send(position, client, stop):
        if position == 0:  # hold the batch until the view has shown it running
            assert seen_running.wait(10)
        return f"answer {position}"

    with capture_output() as captured:
        run = run_batch(
            range(5),
            send,
            [Client("http://127.0.0.1:9")],
            concurrency=1,
            progress=Progress(),
            fps=200,
            preview=lambda i, answer: (f"row {i}", answer),
        )
    assert run.status.state == "finished"
    outputs = captured.outputs
    assert len(outputs) >= 2
    assert not outputs[0].update and all(o.update for o in outputs[1:])
    assert len(_display_ids(outputs)) == 1 and None not in _display_ids(outputs)
    assert "0 / 5 rows" in outputs[0].data["text/plain"]
    final = outputs[-1].data
    assert final["text/plain"].startswith("5 rows in ")
    assert "5 answered" in final["text/html"] and 'value="5"' in final["text/html"]
    assert "row 0: answer 0" in final["text/plain"] and "answer 0" in final["text/html"]


def test_an_interrupted_batch_says_so_and_what_is_left(shell):
    class Progress(NotebookProgress):
        def update(self, status):
            super().update(status)
            if status.done >= 2:
                raise KeyboardInterrupt  # as Ctrl-C arrives in the kernel's main thread

    def send(position, client, stop):
        if position >= 2 and stop.wait(10):
            raise RuntimeError("cut")
        return "ok"

    with capture_output() as captured:
        run = run_batch(
            range(5),
            send,
            [Client("http://127.0.0.1:9")],
            concurrency=1,
            progress=Progress(),
            fps=200,
        )
    assert run.interruption is not None and run.pending == [2, 3, 4]
    final = captured.outputs[-1]
    assert final.update
    assert final.data["text/plain"] == "Interrupted: 2 of 5 rows answered, 3 left"
    assert "Interrupted: 2 of 5 rows answered, 3 left" in final.data["text/html"]


def test_finish_without_updates_displays_once(shell):
    with capture_output() as captured:
        NotebookProgress().finish(_status(done=1000, elapsed=2.0, state="finished"))
    [output] = captured.outputs
    assert not output.update
    assert output.data["text/plain"] == "1,000 rows in 2.0 s · 1,000 answered · 500 rows/s"


def test_unchanged_status_is_not_sent_again():
    sink = Recorder()
    view = NotebookProgress(sink=sink)
    view.update(_status(done=10, elapsed=1.0))
    view.update(_status(done=10, elapsed=1.0))
    view.update(_status(done=20, elapsed=2.0))
    view.finish(_status(done=1000, elapsed=5.0, state="finished"))
    assert [kind for kind, _ in sink.sent] == ["display", "update", "update"]


def test_updates_stay_small_however_large_the_batch():
    status = _status(
        total=100_000,
        done=41_234,
        failed=17,
        elapsed=80.0,
        hosts=[
            HostStatus(f"http://gpu-{n}.example:11434", done=5000, failed=2, down="x" * 5000)
            for n in range(20)
        ],
        preview=[(f"label {n} " * 500, f"answer {n} " + "words " * 10_000) for n in range(50)],
    )
    sink = Recorder()
    NotebookProgress(sink=sink).update(status)
    [(_, bundle)] = sink.sent
    size = sum(len(v.encode()) for v in bundle.values())
    assert size < 8000, size
    assert "answer 0 words" in bundle["text/html"]  # the preview is there, only cut short
    assert "41,251 / 100,000 rows" in bundle["text/plain"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def test_model_and_server_text_is_escaped_in_html_and_stripped_in_text():
    status = _status(
        done=3,
        elapsed=1.0,
        state="finished",
        hosts=[HostStatus("http://a:1", done=3), HostStatus("http://b:1", down=f'">{HOSTILE}')],
        preview=[(f"<script>x</script>{HOSTILE}", HOSTILE)],
    )
    sink = Recorder()
    NotebookProgress(sink=sink).finish(status)
    [(_, bundle)] = sink.sent
    html = bundle["text/html"]
    parser = _Tags()
    parser.feed(html)
    # Only the view's own markup: nothing the model wrote became a tag or an attribute.
    assert parser.tags <= {"div", "progress", "table", "tbody", "tr", "td"}
    assert parser.attributes <= {"class", "style", "max", "value"}
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    for text in (html, bundle["text/plain"]):
        assert "\x1b" not in text and "\x07" not in text

    stream = Terminal()
    view = TerminalProgress(stream)
    view.update(status)
    view.finish(status)
    written = stream.getvalue()
    assert "<img src=x onerror=alert(1)>[2J" in written  # shown as text, its escapes gone
    assert "\x1b" not in written and "\x07" not in written


# -- the terminal view -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # lines are cut to the terminal's width


def test_terminal_rewrites_one_line_in_place():
    stream = Terminal()
    view = TerminalProgress(stream)
    long = _status(done=400, skipped=300, elapsed=1.0)
    short = _status(done=500, elapsed=1.0)
    view.update(long)
    view.update(short)
    frames = stream.getvalue().split("\r")
    assert frames[0] == "" and frames[1] == status_text(long)
    # The shorter line is padded so that nothing of the longer one shows behind it.
    assert frames[2].rstrip(" ") == status_text(short)
    assert len(frames[2]) == len(status_text(long))
    assert "\n" not in stream.getvalue()

    final = _status(done=1000, elapsed=2.0, state="finished", hosts=HOSTS, preview=[("0", "hi")])
    view.finish(final)
    last = stream.getvalue().split("\r")[-1]
    first, *rest = last.split("\n")
    assert first.rstrip(" ") == status_text(final) and len(first) >= len(status_text(short))
    assert rest == [summary_lines(final)[1], "  0: hi", ""]


def test_terminal_line_is_cut_to_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    stream = Terminal()
    TerminalProgress(stream).update(_status(done=410, failed=2, elapsed=2.64))
    assert stream.getvalue() == "\r" + status_text(_status(done=410, failed=2, elapsed=2.64))[:29]


def test_a_log_gets_only_the_final_line():
    stream = io.StringIO()  # not a terminal: a file, a pipe, a CI log
    view = TerminalProgress(stream)
    for done in (10, 20, 30):
        view.update(_status(done=done, elapsed=1.0))
    assert stream.getvalue() == ""
    view.finish(_status(done=1000, elapsed=2.0, state="finished"))
    assert stream.getvalue() == "1,000 rows in 2.0 s · 1,000 answered · 500 rows/s\n"


def test_terminal_view_writes_to_the_current_stdout(capsys):
    # IPython swaps sys.stdout for each cell: the stream is looked up when written to.
    view = TerminalProgress()
    view.finish(_status(done=12, failed=1, state="interrupted"))
    assert capsys.readouterr().out == "Interrupted: 12 of 1,000 rows answered, 1 failed, 987 left\n"


def test_a_server_that_went_away_hands_its_rows_on_only_while_another_serves():
    one_left = BatchStatus(
        total=10,
        done=6,
        state="finished",
        hosts=[
            HostStatus("http://a:1", done=4, requeued=2, down="Cannot reach it"),
            HostStatus("http://b:1", done=2),
        ],
    )
    assert "its 2 unfinished rows went to the others" in summary_lines(one_left)[1]
    none_left = BatchStatus(
        total=10,
        done=4,
        state="failed",
        hosts=[
            HostStatus("http://a:1", done=4, requeued=2, down="Cannot reach it"),
            HostStatus("http://b:1", requeued=1, down="Cannot reach it"),
        ],
    )
    hosts = summary_lines(none_left)[1]
    assert "down (Cannot reach it)" in hosts and "went to the others" not in hosts
