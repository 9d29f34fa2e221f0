"""`RecordedRequest`: one request the stand-in received, and what became of it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ollama_magic.testing.headers import Headers


@dataclass
class RecordedRequest:
    """One request the stand-in received, and what became of it.

    Attributes:
        method: HTTP method.
        path: URL path without the query string.
        headers: request headers; names match whatever their case (`headers["Authorization"]`
            finds an `authorization` header), and iterate as the client spelled them.
        body: the parsed JSON body, or None if it was empty or not JSON.
        raw_body: the body bytes as received.
        status: the response status once known (0 while unknown, or if the connection was reset).
        chunks_sent: NDJSON lines written so far.
        client_disconnected: the client went away before the response was complete.
        finished: set when the server is done with the request, whatever the outcome.
    """

    method: str
    path: str
    headers: Headers
    body: Any
    raw_body: bytes
    status: int = 0
    chunks_sent: int = 0
    client_disconnected: bool = False
    finished: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):  # a plain dict from hand-made records
            self.headers = Headers(self.headers)

    @property
    def model(self) -> str | None:
        """The model named in the body (`model`, or the legacy `name`), if any."""
        if not isinstance(self.body, Mapping):
            return None
        value = self.body.get("model") or self.body.get("name")
        return value if isinstance(value, str) else None

    @property
    def prompt(self) -> str:
        """The text replies are matched against.

        For /api/generate the `prompt`; for /api/chat the content of the last message (the
        user's question, or a tool result after a tool call).
        """
        if not isinstance(self.body, Mapping):
            return ""
        messages = self.body.get("messages")
        if isinstance(messages, list):
            last = messages[-1] if messages else None
            content = last.get("content") if isinstance(last, Mapping) else None
            return content if isinstance(content, str) else ""
        prompt = self.body.get("prompt")
        return prompt if isinstance(prompt, str) else ""
