"""Text that is safe to print to a terminal.

Model output, server error texts and model names are untrusted. A terminal obeys control
sequences in what it prints: OSC 52 writes the clipboard, others change the title, hide text or
move the cursor over what was written. So before anything untrusted reaches a terminal, C0 and
C1 control characters other than newline and tab go, and so do the bidirectional overrides
that make text read differently from what it is.

>>> printable("ok\\x1b]52;c;ZXZpbA==\\x07 \\x9b31m red\\r\\nnext\\u202e")
'ok]52;c;ZXZpbA== 31m red\\nnext'
"""

from __future__ import annotations

import re

__all__ = ["printable"]

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` without control characters, carriage returns turned into newlines."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
