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

from ollama_magic import Client
from ollama_magic.testing import FakeOllama

HERE = Path(__file__).resolve().parent


class EchoingClient(NotebookClient):
    """Executes a notebook and echoes each cell's text output to the terminal as it arrives."""

    def output(self, outs: list[Any], msg: dict[str, Any], display_id: str, cell_index: int) -> Any:
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "stream":
            sys.stdout.write(content["text"])
            sys.stdout.flush()
        elif kind in ("execute_result", "display_data"):
            text = content.get("data", {}).get("text/plain", "")
            if text:
                print(text)
        elif kind == "error":
            print(f"{content['ename']}: {content['evalue']}")
        return super().output(outs, msg, display_id, cell_index)


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
        banner(f"Using the REAL Ollama server at {client.host} (version {client.version()}).")
    else:
        stand_in = FakeOllama(delay=0.02).start()
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
