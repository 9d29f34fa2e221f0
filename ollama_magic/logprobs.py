"""How a model picked its words: an answer's tokens shaded by their probability.

``%%ollama --logprobs [--top-logprobs N]`` shows, under the answer, each token on a background
as strong as the model was unsure of it (a likely token stays plain, an unlikely one stands
out), its probability and the alternatives on hover, and the same as a compact table for
frontends without hover (and as text in a terminal). Tokens are the model's output: escaped
like every other view, attributes included.

>>> rows = table([{"token": "Hi", "logprob": -0.105,
...                "top_logprobs": [{"token": "Hi", "logprob": -0.105},
...                                 {"token": "Hello", "logprob": -2.4}]}])
>>> rows[0]["token"], round(rows[0]["probability"], 2), rows[0]["alternatives"][1]
('Hi', 0.9, ('Hello', 0.0907))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ollama_magic.markdown import escape
from ollama_magic.terminal import printable

__all__ = ["frame", "logprobs_bundle", "table"]

#: Tokens listed in the table; the shaded text shows them all.
TABLE_ROWS = 200


def _probability(logprob: Any) -> float:
    try:
        return math.exp(float(logprob))
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def table(logprobs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each token with its probability and the alternatives (token, probability), likeliest
    first, as the server sent them."""
    rows = []
    for entry in logprobs:
        alternatives = tuple(
            (str(alt.get("token", "")), round(_probability(alt.get("logprob")), 4))
            for alt in entry.get("top_logprobs") or ()
            if isinstance(alt, Mapping)
        )
        rows.append(
            {
                "token": str(entry.get("token", "")),
                "probability": _probability(entry.get("logprob")),
                "logprob": entry.get("logprob"),
                "alternatives": alternatives,
            }
        )
    return rows


def frame(logprobs: Sequence[Mapping[str, Any]]) -> Any:
    """The table as a pandas DataFrame (token, probability, logprob, alternatives), or the
    list of rows without pandas."""
    rows = table(logprobs)
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=["token", "probability", "logprob", "alternatives"])


def _alternatives(row: Mapping[str, Any]) -> str:
    return ", ".join(f"{token!r} {p:.0%}" for token, p in row["alternatives"])


def _shade(probability: float) -> str:
    """A background as strong as the model was unsure (a likely token stays plain)."""
    doubt = 1.0 if math.isnan(probability) else max(0.0, min(1.0, 1.0 - probability))
    return f"background: rgba(255, 140, 0, {doubt * 0.75:.2f})"


def logprobs_bundle(logprobs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The view as a display bundle: shaded tokens and a table (HTML), and text."""
    rows = table(logprobs)
    spans = []
    for row in rows:
        title = f"p = {row['probability']:.1%}"
        if row["alternatives"]:
            title += " · " + _alternatives(row)
        spans.append(
            f'<span style="{_shade(row["probability"])}; border-radius: 2px" '
            f'title="{escape(printable(title))}">'
            f"{escape(printable(row['token']))}</span>"
        )
    cells = "".join(
        f"<tr><td><code>{escape(printable(repr(row['token'])))}</code></td>"
        f"<td>{row['probability']:.1%}</td>"
        f"<td>{escape(printable(_alternatives(row)))}</td></tr>"
        for row in rows[:TABLE_ROWS]
    )
    more = f"<p>… and {len(rows) - TABLE_ROWS} more tokens.</p>" if len(rows) > TABLE_ROWS else ""
    page = (
        '<div class="ollama-magic-logprobs" style="white-space: pre-wrap; line-height: 1.6">'
        f"{''.join(spans)}</div>"
        '<details><summary style="color: var(--jp-ui-font-color2, #6e6e6e)">'
        f"Token probabilities ({len(rows)} tokens; the stronger the colour, the less sure the "
        "model was)</summary><table><tr><th>token</th><th>probability</th>"
        f"<th>alternatives</th></tr>{cells}</table>{more}</details>"
    )
    lines = [
        f"{printable(repr(row['token']))} {row['probability']:.0%}"
        + (f"  ({printable(_alternatives(row))})" if row["alternatives"] else "")
        for row in rows
    ]
    return {"text/html": page, "text/plain": "\n".join(lines)}
