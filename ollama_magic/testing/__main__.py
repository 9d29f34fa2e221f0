"""Command line: `python -m ollama_magic.testing [--port 11434] [--delay SECONDS]`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ollama_magic.testing.replies import Fault
from ollama_magic.testing.server import HOST, FakeOllama, port_is_free


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the stand-in until Ctrl-C (or SIGTERM); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m ollama_magic.testing",
        description="Serve a stand-in Ollama API (canned replies, no real model) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=11434, help="port (default 11434; 0: any)")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds to wait before each streamed token"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error("--delay must not be negative")

    if args.port and not port_is_free(args.port):
        print(
            f"error: port {args.port} on {HOST} is already in use "
            "(is a real Ollama server running?); choose another with --port",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = FakeOllama(port=args.port)
    if args.delay:
        server.inject(Fault(delay=args.delay))
    try:
        server.start()
    except OSError as exc:  # lost a race for the port
        print(f"error: cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"Stand-in Ollama server (canned replies, no real model) listening on {server.url}"
        " - press Ctrl-C to stop",
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
