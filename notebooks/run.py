"""Execute example notebooks end to end and write rendered HTML copies beside them.

Against the Ollama server at ``$OLLAMA_HOST`` (default http://127.0.0.1:11434) when one
answers, otherwise against the built-in stand-in server, and it says loudly which.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from ollama_magic import Client, OllamaError
from ollama_magic.terminal import printable
from ollama_magic.testing import FakeOllama

HERE = Path(__file__).resolve().parent


class EchoingClient(NotebookClient):
    """Executes a notebook and echoes its output to the terminal as it arrives.

    Answers stream into displays updated in place; the terminal gets what each update adds
    to the visible text, so answers stream here too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._displays: dict[str, str] = {}  # display id -> its text, in display order
        self._printed = ""

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        kind = msg["msg_type"]
        content = msg.get("content", {})
        if kind == "execute_input":
            print(f"\n\033[2mIn [{cell_index}]: {content['code'].splitlines()[0]}\033[0m")
            self._displays, self._printed = {}, ""
        elif kind == "stream":
            sys.stdout.write(printable(content["text"]))
        elif kind in ("display_data", "update_display_data", "execute_result"):
            text = content.get("data", {}).get("text/plain", "")
            display_id = content.get("transient", {}).get("display_id")
            if display_id is None:
                print(printable(text))
            else:
                self._displays[display_id] = text
                self._echo_visible()
        elif kind == "error":
            print(printable(f"{content['ename']}: {content['evalue']}"))
        sys.stdout.flush()
        return super().process_message(msg, cell, cell_index)

    def _echo_visible(self) -> None:
        visible = "".join(self._displays.values())
        if visible.startswith(self._printed):
            # Model text, echoed to a terminal: no control sequences (see ollama_magic.terminal).
            sys.stdout.write(printable(visible[len(self._printed) :]))
            self._printed = visible


def banner(text: str) -> None:
    line = "=" * min(100, max(len(t) for t in text.splitlines()))
    print(f"\n{line}\n{text}\n{line}\n", flush=True)


def run(path: Path) -> Path:
    notebook = nbformat.read(path, as_version=4)
    started = time.monotonic()
    EchoingClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    html_path = path.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(notebook)
    html_path.write_text(body, encoding="utf-8")
    print(f"\nExecuted {path.name} in {time.monotonic() - started:.1f} s; wrote {html_path}")
    return html_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="*", default=[str(HERE / "quickstart.ipynb")])
    args = parser.parse_args()

    client = Client()
    stand_in = None
    if client.is_running():
        try:
            what = f"Ollama {client.version()}"
        except OllamaError:  # an "Ollama-compatible" server may lack /api/version
            what = "an Ollama-compatible server"
        banner(f"Using the REAL server at {client.host} ({what}).")
    else:
        # Token by token, as a real model streams (faster than the command line's default).
        stand_in = FakeOllama(token_delay=0.02, pull_seconds=1.0).start()
        os.environ["OLLAMA_HOST"] = stand_in.url  # the kernel inherits it
        banner(
            f"No Ollama server answered at {client.host}.\n"
            f"Using the BUILT-IN STAND-IN at {stand_in.url}: canned answers, no real model.\n"
            "Start Ollama (`ollama serve`) or set OLLAMA_HOST to use a real one."
        )
    try:
        for name in args.notebooks:
            run(Path(name).resolve())
    finally:
        if stand_in is not None:
            stand_in.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
