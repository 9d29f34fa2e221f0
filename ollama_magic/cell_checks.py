"""What a ``%%ollama`` cell's flags allow together, what they name, and what ``-o`` binds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError

from ollama_magic.compare import temperatures
from ollama_magic.errors import OllamaError
from ollama_magic.structured import OutputFormat, plain_data
from ollama_magic.tools import Toolbox, is_tool_name

__all__ = ["check_arguments", "context_from", "result_value", "toolbox"]


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
    try:
        args.temperatures = temperatures(args.temperature)  # parsed once, here
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    several = len(args.temperatures) > 1
    if args.compare is not None and args.compare < 2:
        raise UsageError(f"--compare takes 2 or more runs, not {args.compare}.")
    if args.compare and several:
        raise UsageError("--compare N or -t with a list of values: pick one.")
    if args.compare or several:
        for value, name in (
            (args.chat or args.session, "--chat"),
            (args.tools, "--tools"),
            (args.format, "--format"),
            (args.map, "--map"),
            (args.image, "--image"),
        ):
            if value:
                raise UsageError(f"{name} does not go with comparing runs side by side.")
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


def toolbox(names: str | None, namespace: Mapping[str, Any]) -> Toolbox | None:
    """The notebook functions named by --tools."""
    if not names:
        return None
    functions: dict[str, Any] = {}
    for name in (n.strip() for n in names.split(",") if n.strip()):
        function = namespace.get(name)
        if not callable(function):
            raise UsageError(f"--tools: there is no function named {name!r} in the notebook.")
        # A function's own name, unless it has none that a model can call (a partial, a
        # callable object, a lambda) or another tool has it: then the notebook's name.
        own = getattr(function, "__name__", "")
        key = own if is_tool_name(own) and own not in functions else name
        if key in functions:
            raise UsageError(
                f"--tools: two tools would be named {key!r}; give one of them another name "
                "(def NAME(...) or NAME = the function)."
            )
        functions[key] = function
    try:
        return Toolbox(functions)
    except ValueError as exc:
        raise UsageError(f"--tools: {exc}") from None


def context_from(
    args: Any, last: list[int] | None, namespace: Mapping[str, Any]
) -> list[int] | None:
    """The ``context`` that ``--continue`` or ``--context NAME`` sends (None: none)."""
    if args.continue_:
        if last is None:
            raise UsageError(
                "--continue: there is no one-shot answer to follow on from yet in this "
                "kernel (or its server sent no context)."
            )
        return list(last)
    if args.context is None:
        return None
    value = namespace.get(args.context)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(token, int) and not isinstance(token, bool) for token in value
    ):
        raise UsageError(f"--context: {args.context} is not a list of token ids (ints).")
    return list(value)
