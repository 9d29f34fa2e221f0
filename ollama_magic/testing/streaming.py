"""Streaming a body: NDJSON lines in chunked transfer encoding, one line per chunk."""

from __future__ import annotations

from typing import Any

from ollama_magic.testing.connection import RequestHandler
from ollama_magic.testing.gojson import go_json
from ollama_magic.testing.wire import NDJSON

SPLIT_PAUSE = 0.02  # between the two halves of a split UTF-8 line, so reads see the split


class StreamWriter:
    """Writes an NDJSON body with chunked transfer encoding, one line per chunk."""

    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler

    def start(self) -> None:
        """Send the 200 status line and headers of a stream."""
        self.handler.start_response(
            200, [("Content-Type", NDJSON), ("Transfer-Encoding", "chunked")]
        )

    def line(self, obj: Any, *, split_utf8: bool = False) -> None:
        """Write one JSON object and a newline as one chunk (or two, split inside a character)."""
        data = go_json(obj) + b"\n"
        split = _split_point(data) if split_utf8 else None
        if split is None:
            self.handler.write(_chunk(data))
        else:
            self.handler.write(_chunk(data[:split]))
            self.handler.pause(SPLIT_PAUSE)
            self.handler.write(_chunk(data[split:]))
        self.handler.record.chunks_sent += 1

    def end(self) -> None:
        """Write the terminating zero-length chunk."""
        self.handler.write(b"0\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    """*data* framed as one chunk of chunked transfer encoding."""
    return f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n"


def _split_point(data: bytes) -> int | None:
    """An offset inside the first multi-byte UTF-8 character of *data*, if there is one."""
    for offset, byte in enumerate(data):
        if byte >= 0xC0:  # a lead byte: the character continues after it
            return offset + 1
    return None
