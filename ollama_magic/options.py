"""Settings checked when they are set, not when the server refuses them cells later.

Ollama ignores options it does not know and answers a wrongly typed one with an HTTP 500
(``option "temperature" must be of type float32``) on every request. So the option types of
Ollama's ``api.Options`` are checked here, once, where the user sets them; this module imports
nothing from IPython.

>>> check_options({"temperature": "0.2", "stop": "###"})
{'temperature': 0.2, 'stop': ['###']}
>>> check_options({"num_ctx": "big"})
Traceback (most recent call last):
...
ValueError: num_ctx must be a whole number, not 'big'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "OLLAMA_OPTIONS",
    "THINK_LEVELS",
    "SecretHeaders",
    "SecretHost",
    "check_duration",
    "check_headers",
    "check_options",
    "keep_alive_value",
    "mask_headers",
    "mask_host",
    "think_value",
]

_INT_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "draft_num_predict",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
    }
)
_FLOAT_OPTIONS = frozenset(
    {
        "top_p",
        "min_p",
        "typical_p",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    }
)
_BOOL_OPTIONS = frozenset({"use_mmap"})

#: The options Ollama's server accepts (api/types.go); it silently ignores any other.
OLLAMA_OPTIONS = _INT_OPTIONS | _FLOAT_OPTIONS | _BOOL_OPTIONS | {"stop"}


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options with known ones checked (and numbers given as text converted).

    Raises:
        ValueError: an option of Ollama's has a value of the wrong type; the message names it.
    """
    return {key: _check_option(key, value) for key, value in options.items()}


def _check_option(key: str, value: Any) -> Any:
    if value is None or key not in OLLAMA_OPTIONS:
        return value  # None is "not set"; unknown keys pass through on purpose (options.NAME)
    if key == "stop":
        if isinstance(value, str):
            return [value]  # one stop sequence, as a user types it on the command line
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError(f"stop must be a string or a list of strings, not {value!r}")
    if key in _BOOL_OPTIONS:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be true or false, not {value!r}")
    number = _number(value)
    if key in _INT_OPTIONS:
        if number is None or number != int(number):
            raise ValueError(f"{key} must be a whole number, not {value!r}")
        return int(number)
    if number is None:
        raise ValueError(f"{key} must be a number, not {value!r}")
    return number


def _number(value: Any) -> float | None:
    """A finite number from a number or its text; None for anything else (booleans, NaN,
    infinities and numbers too large to send included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eEnN") else int(value)
        except ValueError:
            return None
    if isinstance(value, int):
        return value if abs(value) < 2**63 else None  # what Go's int64 can take
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


# Go's time.ParseDuration: one or more numbers with units ("1h30m", "0.5s", "-1m").
_GO_DURATION = re.compile(r"-?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+")
_SECONDS = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


def check_duration(text: str) -> str:
    """A keep-alive value as typed: seconds (``300``, ``-1``) or a duration (``"5m"``).

    >>> check_duration(" 10m ")
    '10m'
    >>> check_duration("forever")
    Traceback (most recent call last):
    ...
    ValueError: keep_alive takes seconds (300, -1 keeps the model loaded) or a duration like '5m' or '1h30m', not 'forever'
    """  # noqa: E501
    text = text.strip()
    if text and not (_SECONDS.fullmatch(text) or _GO_DURATION.fullmatch(text)):
        raise ValueError(
            "keep_alive takes seconds (300, -1 keeps the model loaded) or a duration like "
            f"'5m' or '1h30m', not {text!r}"
        )
    return text


_CREDENTIAL = re.compile(r"auth|key|token|secret|password|cookie|session|signature", re.I)


def check_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Header values as sent: text, surrounding whitespace stripped (a key read from a file
    ends with a newline).

    Raises:
        ValueError: a value holds a line break or another control character; the message
            names the header, never its value (it is often a secret).

    >>> check_headers({"X-Api-Key": " sk-123\\n"})
    {'X-Api-Key': 'sk-123'}
    >>> check_headers({"X-Api-Key": "sk-1\\r\\nX-Evil: 1"})
    Traceback (most recent call last):
    ...
    ValueError: The header X-Api-Key has a line break or control character in its value.
    """
    out = {}
    for key, value in headers.items():
        text = str(value).strip()
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError(
                f"The header {key} has a line break or control character in its value."
            )
        if not text.isascii() and not all(ord(c) < 256 for c in text):
            # HTTP sends header values as Latin-1; the encoding error would quote the value.
            raise ValueError(f"The header {key} has characters HTTP cannot send in its value.")
        out[str(key)] = text
    return out


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers with credential values masked, for anything a person or a notebook sees.

    >>> mask_headers({"Authorization": "Bearer sk-12345678", "X-Api-Key": "k", "Accept": "*/*"})
    {'Authorization': 'Bearer ****', 'X-Api-Key': '****', 'Accept': '*/*'}
    """
    return {key: _mask(key, value) for key, value in headers.items()}


def _mask(key: str, value: str) -> str:
    if not _CREDENTIAL.search(key):
        return value
    scheme, _, secret = str(value).partition(" ")
    # "Bearer …"/"Basic …" keep the scheme, which helps debugging and reveals nothing.
    return f"{scheme} ****" if secret and scheme.isalpha() else "****"


class SecretHeaders(dict[str, str]):
    """HTTP headers whose printed forms (repr, ``%config``, a cell's Out) mask credentials.

    The values themselves are kept, since they must be sent; only what is shown is masked.

    >>> SecretHeaders({"Authorization": "Bearer sk-secret"})
    {'Authorization': 'Bearer ****'}
    """

    def __repr__(self) -> str:
        return repr(mask_headers(self))

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def mask_host(host: str) -> str:
    """``host`` with everything between the scheme and its last ``@`` masked but the user.

    Greedy on purpose: a password with an unencoded ``/`` or ``@`` must not show in part.

    >>> mask_host("https://ada:pa/s@s@proxy.example/ollama")
    'https://ada:****@proxy.example/ollama'
    >>> mask_host("gpu-box:11434")
    'gpu-box:11434'
    """
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "", host
    userinfo, at, tail = rest.rpartition("@")
    if not at:
        return host
    user = userinfo.split(":", 1)[0] if ":" in userinfo else "****"
    return f"{scheme}{sep}{user}:****@{tail}"


class SecretHost(str):
    """A host whose printed forms (repr, ``%config``) mask the password of ``user:password@``.

    The text itself is kept, since the client sends the credentials.

    >>> SecretHost("https://ada:s3cret@proxy.example/ollama")
    'https://ada:****@proxy.example/ollama'
    >>> str(SecretHost("gpu-box:11434")) == "gpu-box:11434"
    True
    """

    def __repr__(self) -> str:
        return repr(mask_host(str(self)))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def keep_alive_value(value: Any) -> float | str | None:
    """A keep-alive setting as sent: numbers as seconds (Ollama rejects the string "-1"),
    anything else as a duration ("5m"); None or "" (the server's default): None. 0 is a
    value ("unload now")."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return str(value)


THINK_LEVELS = ("low", "medium", "high", "max")


def think_value(value: bool | str | None) -> bool | str | None:
    """``think`` as sent: True, False, None (the model's default) or a level.

    Raises:
        ValueError: Anything else (a level is checked here, not by the server mid-turn).
    """
    if value is None or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("true", "false"):
        return word == "true"
    if word not in THINK_LEVELS:
        levels = ", ".join(THINK_LEVELS)
        raise ValueError(f"think takes True, False or one of {levels}, not {value!r}")
    return word
