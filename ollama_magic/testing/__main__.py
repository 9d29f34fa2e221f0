"""Command line: serve a stand-in Ollama server on 127.0.0.1 until Ctrl-C.

Usage: `python -m ollama_magic.testing [--port 11434] [--delay SECONDS]
[--pull-seconds SECONDS] [--compat {ollama,adapter}] [--parallel N] [--answer-delay SECONDS]
[--max-queue N] [--quiet]`.

Unlike `FakeOllama()`, which answers instantly as tests want, the command line serves at the
pace of a real server by default (about 25 tokens/s, two-second pulls), so a person watching a
notebook sees answers stream and pulls progress; `--delay 0 --pull-seconds 0` makes it instant.
`--parallel` and `--answer-delay` add a real server's scheduling, for batch workloads:
`--delay 0 --pull-seconds 0 --parallel 8 --answer-delay 0.05` works on 8 requests at a time,
50 ms each.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ollama_magic.testing.compat import ADAPTER, MODES, OLLAMA
from ollama_magic.testing.server import HOST, FakeOllama, port_is_free
from ollama_magic.testing.slots import DEFAULT_MAX_QUEUE

DEFAULT_DELAY = 0.04  # seconds per token: about 25 tokens/s, a small model on a laptop
DEFAULT_PULL_SECONDS = 2.0  # long enough to watch the progress, short enough not to bore


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's options (exits with status 2 and a usage message on bad ones)."""
    parser = argparse.ArgumentParser(
        prog="python -m ollama_magic.testing",
        description="Serve a stand-in Ollama API (canned replies, no real model) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=11434, help="port (default 11434; 0: any)")
    parser.add_argument(
        "--delay",
        type=float,
        default=DEFAULT_DELAY,
        metavar="SECONDS",
        help=f"seconds to wait before each generated token (default {DEFAULT_DELAY}, about "
        f"{1 / DEFAULT_DELAY:.0f} tokens/s; 0: instant answers)",
    )
    parser.add_argument(
        "--pull-seconds",
        type=float,
        default=DEFAULT_PULL_SECONDS,
        metavar="SECONDS",
        help=f"about how long pulling a model takes, with progress along the way "
        f"(default {DEFAULT_PULL_SECONDS:g}; 0: instant pulls)",
    )
    parser.add_argument(
        "--compat",
        choices=MODES,
        default=OLLAMA,
        help="behave like the real Ollama server (default), or like an 'Ollama-compatible' "
        "adapter: no HEAD / or /api/version, missing models as 200 with an error line, word "
        "counts and no durations, no logprobs, thinking or done_reason",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="like OLLAMA_NUM_PARALLEL: work on at most N generate, chat and embed requests "
        "at once, the others waiting for a slot in arrival order (default: no limit)",
    )
    parser.add_argument(
        "--answer-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds each generate or chat answer takes before its first token, as prompt "
        "evaluation does, on top of --delay (default 0)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        metavar="N",
        help="like OLLAMA_MAX_QUEUE: with --parallel, a request that finds N others waiting "
        f"gets 503 'server busy' (default {DEFAULT_MAX_QUEUE})",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error("--delay must not be negative")
    if args.pull_seconds < 0:
        parser.error("--pull-seconds must not be negative")
    if args.parallel is not None and args.parallel < 1:
        parser.error("--parallel must be at least 1")
    if args.answer_delay < 0:
        parser.error("--answer-delay must not be negative")
    if args.max_queue < 0:
        parser.error("--max-queue must not be negative")
    return args


def server_from_args(args: argparse.Namespace) -> FakeOllama:
    """The (not yet started) server the parsed options describe."""
    return FakeOllama(
        port=args.port,
        token_delay=args.delay,
        pull_seconds=args.pull_seconds,
        compat=args.compat,
        parallel=args.parallel,
        answer_delay=args.answer_delay,
        max_queue=args.max_queue,
    )


def describe_pace(token_delay: float, pull_seconds: float) -> str:
    """How fast the server answers, for the start-up line.

    >>> describe_pace(0.04, 2.0)
    'about 25 tokens/s, pulls take about 2 s; --delay 0 --pull-seconds 0 for instant answers'
    >>> describe_pace(0.04, 0)
    'about 25 tokens/s; --delay 0 for instant answers'
    >>> describe_pace(0, 0)
    'instant answers'
    """
    parts, flags = [], []
    if token_delay:
        rate = 1 / token_delay
        parts.append(f"about {rate:.0f} tokens/s" if rate >= 10 else f"about {rate:.2g} tokens/s")
        flags.append("--delay 0")
    if pull_seconds:
        parts.append(f"pulls take about {pull_seconds:g} s")
        flags.append("--pull-seconds 0")
    if not parts:
        return "instant answers"
    return f"{', '.join(parts)}; {' '.join(flags)} for instant answers"


def describe_scheduling(parallel: int | None, answer_delay: float, max_queue: int) -> str:
    """The limits on concurrent work, for the start-up line ("" when there are none).

    >>> describe_scheduling(8, 0.05, 512)
    '; 8 requests at a time, up to 512 more waiting; 50 ms per answer'
    >>> describe_scheduling(None, 1.5, 512)
    '; 1.5 s per answer'
    >>> describe_scheduling(None, 0, 512)
    ''
    """
    parts = []
    if parallel is not None:
        requests = "1 request" if parallel == 1 else f"{parallel} requests"
        parts.append(f"{requests} at a time, up to {max_queue} more waiting")
    if answer_delay:
        per = f"{answer_delay * 1000:.3g} ms" if answer_delay < 1 else f"{answer_delay:g} s"
        parts.append(f"{per} per answer")
    return "".join(f"; {part}" for part in parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the stand-in until Ctrl-C (or SIGTERM); returns the exit status."""
    args = parse_args(argv)
    if args.port and not port_is_free(args.port):
        print(
            f"error: port {args.port} on {HOST} is already in use "
            "(is a real Ollama server running?); choose another with --port",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = server_from_args(args)
    try:
        server.start()
    except OSError as exc:  # lost a race for the port
        print(f"error: cannot listen on {HOST}:{args.port}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    kind = "'Ollama-compatible' adapter" if args.compat == ADAPTER else "Ollama server"
    print(
        f"Stand-in {kind} (canned replies, no real model) listening on {server.url}"
        f" ({describe_pace(args.delay, args.pull_seconds)})"
        f"{describe_scheduling(args.parallel, args.answer_delay, args.max_queue)}"
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
