"""The one exception family of ollama-magic.

Every error the package raises on purpose derives from :class:`OllamaError`. Each says what went
wrong in one line and what to do next in a second one, and IPython shows exactly those lines
instead of a traceback (``_render_traceback_``). For the full traceback, set
``OllamaError.show_traceback = True`` (or the environment variable ``OLLAMA_MAGIC_TRACEBACK=1``).
"""

from __future__ import annotations

import os
import sys
from typing import ClassVar

from ollama_magic.terminal import printable

__all__ = [
    "BadRequest",
    "ModelNotFound",
    "ModelOutputError",
    "NotOllama",
    "OllamaError",
    "OllamaTimeout",
    "ResponseError",
    "ServerError",
    "ServerUnreachable",
    "StreamError",
    "Unauthorized",
    "quiet_interrupt",
]


class OllamaError(Exception):
    """Base class of every ollama-magic error.

    Attributes:
        message: What went wrong, one line.
        hint: What to do next, one line (may be empty).
        partial: Text the model had already streamed when the error struck ("" if none).
    """

    #: Whether the server went away (refused, or cut the connection): a batch moves the
    #: row to another server instead of keeping it as failed.
    lost_connection: bool = False

    #: Set to True to see full tracebacks in IPython instead of the short form.
    show_traceback: ClassVar[bool] = bool(os.environ.get("OLLAMA_MAGIC_TRACEBACK"))

    def __init__(self, message: str, *, hint: str = "", partial: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.partial = partial

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message

    def _render_traceback_(self) -> list[str]:
        """Lines IPython shows instead of a traceback (see ``InteractiveShell.showtraceback``)."""
        if OllamaError.show_traceback:
            import traceback

            lines = traceback.format_exception(type(self), self, self.__traceback__)
            return [printable(line) for line in lines]
        red, reset = ("\x1b[31m", "\x1b[0m") if _colour() else ("", "")
        # Messages quote the server and the model; only our own colour codes may drive a
        # terminal.
        lines = [f"{red}{type(self).__name__}{reset}: {printable(self.message)}"]
        if self.hint:
            lines.append(printable(self.hint))
        return lines


def _colour() -> bool:
    """Colour the error name as IPython colours its own, unless its colours are off or NO_COLOR."""
    if "NO_COLOR" in os.environ or "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and str(getattr(shell, "colors", "nocolor")).lower() != "nocolor"


class ServerUnreachable(OllamaError):
    """Nothing answered at the Ollama host (connection refused, DNS failure, proxy down)."""

    lost_connection = True


class OllamaTimeout(OllamaError):
    """The server accepted the connection but did not answer in time."""


class ResponseError(OllamaError):
    """The server answered with an error.

    Attributes:
        status_code: The HTTP status, or None for an error reported inside a 200 stream.
        server_message: The server's own error text, verbatim.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        server_message: str = "",
        hint: str = "",
        partial: str = "",
    ) -> None:
        super().__init__(message, hint=hint, partial=partial)
        self.status_code = status_code
        self.server_message = server_message or message


class ModelNotFound(ResponseError):
    """The model is not on the server (HTTP 404 ``model 'x' not found``).

    Attributes:
        model: The name that was asked for.
        similar: Local model names that look like it, closest first.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        similar: list[str] | None = None,
        status_code: int | None = 404,
        server_message: str = "",
        hint: str = "",
    ) -> None:
        super().__init__(message, status_code=status_code, server_message=server_message, hint=hint)
        self.model = model
        self.similar = list(similar or [])


class BadRequest(ResponseError):
    """The server refused the request (HTTP 400): a bad field, or a capability the model lacks."""


class Unauthorized(ResponseError):
    """The server or a proxy in front of it wants credentials (HTTP 401/403)."""


class NotOllama(ResponseError):
    """Something answered at the host, but not the Ollama API (404/405 on an API route)."""


class ServerError(ResponseError):
    """The server failed (HTTP 5xx, or any other unexpected status)."""


class StreamError(ResponseError):
    """A stream failed part-way: an error line from the server, or the connection was cut.

    ``partial`` holds the text received before the failure.
    """


class ModelOutputError(OllamaError):
    """The model's answer is not what was asked for: not JSON, or not valid for the schema.

    Attributes:
        raw: The answer's text, kept for inspection.
    """

    def __init__(self, message: str, *, raw: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.raw = raw


def quiet_interrupt(interrupt: BaseException, message: str) -> BaseException:
    """Make IPython show ``message`` for a Ctrl-C that was handled, instead of its traceback.

    The interrupt still propagates (so "Run All" stops), but its traceback runs through
    requests, urllib3 and the socket: noise after the partial answer was kept. IPython's
    ``showtraceback`` honours ``_render_traceback_`` on the exception it is given.
    """

    def render() -> list[str]:
        if OllamaError.show_traceback:
            import traceback

            lines = traceback.format_exception(type(interrupt), interrupt, interrupt.__traceback__)
            return [printable(line) for line in lines]
        red, reset = ("\x1b[31m", "\x1b[0m") if _colour() else ("", "")
        return [f"{red}Interrupted{reset}: {message}"]

    # The hook is not an attribute BaseException declares: it goes into the instance's dict.
    vars(interrupt)["_render_traceback_"] = render
    return interrupt
