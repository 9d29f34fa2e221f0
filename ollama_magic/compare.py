"""``%%ollama --compare N`` and ``-t 0,0.7,1.5``: one prompt answered several times, side by side.

The classic lesson on sampling: the same prompt N times (without ``--seed`` the answers
differ; with it they agree), or once per temperature. The runs go out together through the
batch engine and show as columns of rendered markdown (sections in a terminal); ``-o`` gets
the answers as a list, in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from IPython.display import display

from ollama_magic.batch import run_batch
from ollama_magic.client import Client
from ollama_magic.errors import OllamaError, quiet_interrupt
from ollama_magic.markdown import render_markdown
from ollama_magic.render import MUTED, escape
from ollama_magic.rows import error_text
from ollama_magic.terminal import printable
from ollama_magic.transport import Cancellation
from ollama_magic.workspace import Workspace

__all__ = ["compare", "temperatures"]

_COLUMN = (
    "flex: 1 1 0; min-width: 12em; padding: 0 0.8em; "
    "border-left: 3px solid var(--jp-border-color2, #e0e0e0)"
)


def temperatures(text: str | None) -> list[float]:
    """``-t``'s value: one temperature, or a comma-separated list to compare.

    >>> temperatures("0, 0.7,1.5"), temperatures("0.2"), temperatures(None)
    ([0.0, 0.7, 1.5], [0.2], [])

    Raises:
        ValueError: A value that is not a number.
    """
    if text is None:
        return []
    try:
        return [float(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"-t takes a number or a list like 0,0.7,1.5, not {text!r}") from None


def compare(
    workspace: Workspace,
    prompt: str,
    variants: Sequence[Mapping[str, Any]],
    *,
    model: str | None,
    host: str | None,
    fields: Mapping[str, Any],
    rich: bool,
) -> list[str | None]:
    """Ask ``prompt`` once per variant (options over the cell's), show the answers side by
    side, and return them (None for a run that failed, whose error shows in its column)."""
    client = workspace.client(host)
    options = dict(fields.get("options") or {})
    rest = {key: value for key, value in fields.items() if key != "options"}
    requests = [
        workspace.request(
            prompt,
            model=model,
            client=client,
            stream=False,
            options={**options, **variant},
            **rest,
        )
        for variant in variants
    ]
    for number, request in enumerate(requests):
        request.take = f"run {number + 1}"  # identical runs each replay their own answer

    recorded: dict[int, str] = {}

    def send(position: int, sender: Client, stop: Cancellation) -> str:
        outcome = workspace.ask(requests[position], stop=stop)
        outcome.raise_for_error()
        if outcome.result is not None and outcome.result.recorded_at:
            recorded[position] = outcome.result.recorded_at
        return outcome.text

    run = run_batch(range(len(requests)), send, [client], concurrency=len(requests))
    answers: list[str | None] = [run.results.get(n) for n in range(len(requests))]
    labels = [_label(n, variant) for n, variant in enumerate(variants)]
    errors = {n: error_text(error) for n, error in run.errors.items()}
    note = ""
    if recorded:  # a teacher must see that the runs were not asked live
        when = min(recorded.values())[:16].replace("T", " ")
        note = f"{len(recorded)} of {len(answers)} runs replayed (recorded {when} UTC)"
    _show(labels, answers, errors, rich, note)
    if run.interruption is not None:
        done = sum(answer is not None for answer in answers)
        raise quiet_interrupt(run.interruption, f"{done} of {len(answers)} runs answered.")
    if run.error is not None:
        raise run.error
    if len(errors) == len(answers):
        first = run.errors[0]
        raise first if isinstance(first, OllamaError) else OllamaError(str(first))
    return answers


def _label(number: int, variant: Mapping[str, Any]) -> str:
    said = ", ".join(f"{key} {value:g}" for key, value in variant.items())
    return f"Run {number + 1}" + (f" · {said}" if said else "")


def _show(
    labels: list[str],
    answers: list[str | None],
    errors: dict[int, str],
    rich: bool,
    note: str = "",
) -> None:
    texts = []
    for n, label in enumerate(labels):
        answer = answers[n]
        body = answer if answer is not None else f"(failed: {errors.get(n, 'stopped')})"
        texts.append(f"--- {label} ---\n{printable(body)}")
    plain = "\n\n".join(texts) + (f"\n\n[{note}]" if note else "")
    if not rich:
        print(plain)
        return
    columns = []
    for n, label in enumerate(labels):
        answer = answers[n]
        body = (
            render_markdown(answer)  # sanitized: raw HTML off, unsafe links dropped
            if answer is not None
            else f"<p><em>{escape(errors.get(n, 'stopped'))}</em></p>"
        )
        columns.append(
            f'<div style="{_COLUMN}"><div style="{MUTED}">{escape(label)}</div>{body}</div>'
        )
    html = f'<div style="display: flex; gap: 0.5em; flex-wrap: wrap">{"".join(columns)}</div>'
    if note:
        html += (
            f'<div class="ollama-magic-footer" style="{MUTED}; margin-top: 0.4em">'
            f"{escape(note)}</div>"
        )
    display({"text/html": html, "text/plain": plain}, raw=True)
