"""What a ``%%ollama`` cell's flags allow together, and what ``-o`` binds."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

from ollama_magic.errors import OllamaError
from ollama_magic.structured import OutputFormat, plain_data

__all__ = ["check_arguments", "result_value"]


def check_arguments(args: Any, cell: str) -> None:
    """Combinations that cannot work, as usage errors before anything is sent."""
    if not cell.strip():
        raise UsageError("The cell is empty: write the prompt in the cell, under %%ollama.")
    if args.model_name and args.model:
        raise UsageError("Give the model once: as MODEL or with -m, not both.")
    if args.quiet and args.plain:
        raise UsageError("--quiet shows nothing and --plain shows text: pick one.")
    if args.think is not None and args.no_think:
        raise UsageError("--think and --no-think contradict each other.")
    if args.as_dataframe and not args.format:
        raise UsageError("--as-dataframe goes with --format (a list of records).")
    if args.retries and not args.format:
        raise UsageError("--retries goes with --format: it re-asks when the JSON is invalid.")
    if args.continue_ and args.context:
        raise UsageError("--continue and --context both give the context: pick one.")
    if args.chat or args.session or args.tools:
        for value, name in (
            (args.raw, "--raw"),
            (args.suffix, "--suffix"),
            (args.template, "--template"),
            (args.continue_, "--continue"),
            (args.context, "--context"),
        ):
            if value:
                raise UsageError(f"{name} works with one-shot prompts, not --chat or --tools.")


def result_value(outcome: Any, output: OutputFormat | None, as_dataframe: bool) -> Any:
    """What -o binds: the answer text, or the parsed object (or a DataFrame of it)."""
    if output is None:
        return outcome.text
    if not as_dataframe:
        return outcome.value
    try:
        import pandas as pd
    except ImportError:
        raise OllamaError(
            "--as-dataframe needs pandas.",
            hint="Install it (pip install pandas), or drop the flag.",
        ) from None
    data = plain_data(outcome.value)
    return pd.DataFrame(data if isinstance(data, list) else [data])
