"""The items of a batch: a list, a pandas Series or a DataFrame's rows, and the results back.

:class:`Rows` fills a prompt template for each item (``{item}`` and ``{index}``; for a
DataFrame ``{row.column}``, ``{row[name with spaces]}`` and ``{column}``) and puts results back
in the input's shape: a list for a list, a Series on the same index for a Series, new columns
for a DataFrame (typed from a schema's fields). Failed rows keep their error: in an ``error``
column, or ``.errors`` of the list (``attrs["errors"]`` of a Series, by label, and
``attrs["error_positions"]``, by position, since labels can repeat).

>>> rows = Rows.of(["red", "green"])
>>> rows.prompt("Is {item} warm? ({index})", 1, {})
'Is green warm? (1)'
>>> out = rows.assemble({0: "yes"}, {1: "ServerError: boom"})
>>> out, out.errors
(['yes', None], {1: 'ServerError: boom'})
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from ollama_magic.columns import result_columns, schema_fields
from ollama_magic.errors import OllamaError
from ollama_magic.interpolate import interpolate_report
from ollama_magic.structured import OutputFormat

__all__ = ["NOT_RUN", "Answers", "Row", "Rows", "error_text", "lookup"]

#: The error kept for a row the batch never got to (interrupted, or no server left).
NOT_RUN = "not sent: the batch stopped before this row; run again with --resume / resume="


def lookup(expression: str, namespace: Mapping[str, Any]) -> Any:
    """A batch's items named in a magic's line: a variable, an attribute or an item of one
    (``df.text``, ``df[text]``, ``df['a column']``), as ``{fields}`` are filled.

    >>> lookup("d['k']", {"d": {"k": [1, 2]}})
    [1, 2]

    Raises:
        KeyError: The expression names nothing (the message says what).
    """
    # str.format's field syntax takes keys unquoted; a notebook user writes them quoted.
    unquoted = re.sub(r"\[\s*(['\"])(.*?)\1\s*\]", r"[\2]", expression.strip())
    try:
        value, _ = _FIELDS.get_field(unquoted, (), namespace)
    except (KeyError, AttributeError, IndexError, ValueError, TypeError):
        raise KeyError(
            f"{expression!r} is not a notebook variable (or an attribute or item of one)"
        ) from None
    return value


_FIELDS = string.Formatter()


def error_text(error: BaseException) -> str:
    """A failed row's error as kept with it: one line, the error's name first."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {' '.join(str(message).split())}"


class Answers(list):  # type: ignore[type-arg]  # holds whatever the rows' answers are
    """The answers for a list of items, in order; a failed item's answer is None.

    Attributes:
        errors: Position → the error of each failed or unfinished item.
    """

    def __init__(self, values: Iterable[Any] = (), errors: Mapping[int, str] | None = None) -> None:
        super().__init__(values)
        self.errors: dict[int, str] = dict(errors or {})

    @property
    def failures(self) -> list[tuple[int, str]]:
        """(position, error) of each item without an answer."""
        return sorted(self.errors.items())


class Row(dict):  # type: ignore[type-arg]
    """A DataFrame row for templates: ``{row.column}`` and ``{row[any column name]}``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Rows:
    """A batch's input, row by row, and how its results go back."""

    def __init__(
        self,
        kind: Literal["list", "series", "frame"],
        source: Any,
        labels: list[Any],
        values: list[Any],
        columns: list[Any] | None = None,
    ) -> None:
        self.kind = kind
        self.source = source
        self.labels = labels
        self.values = values
        """The items (a DataFrame: each row's values as a tuple, in column order)."""
        self.columns = columns or []

    @classmethod
    def of(cls, items: Any) -> Rows:
        """The rows of a list (any iterable), a Series or a DataFrame.

        Raises:
            OllamaError: ``items`` is a string, a dict or not iterable.
        """
        kind = _pandas_kind(items)
        if kind == "frame":
            columns = list(items.columns)
            values = list(items.itertuples(index=False, name=None))
            return cls("frame", items, list(items.index), values, columns)
        if kind == "series":
            return cls("series", items, list(items.index), items.tolist())
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
            raise OllamaError(
                f"A batch runs over a list, a pandas Series or a DataFrame, not a "
                f"{type(items).__name__}.",
                hint="Wrap a single text in a list: [text].",
            )
        values = list(items)
        return cls("list", items, list(range(len(values))), values)

    def __len__(self) -> int:
        return len(self.values)

    def item(self, position: int) -> Any:
        """What a callable template gets: the item, or a DataFrame's row as a :class:`Row`."""
        value = self.values[position]
        return Row(zip(self.columns, value, strict=True)) if self.kind == "frame" else value

    def fields(self, position: int) -> dict[str, Any]:
        """The names a template can use for this row."""
        label = self.labels[position]
        if self.kind != "frame":
            return {"item": self.values[position], "index": label}
        row = self.item(position)
        named = {str(k): v for k, v in row.items() if str(k).isidentifier()}
        return {**named, "row": row, "index": label}

    def prompt(
        self, template: str | Callable[[Any], str], position: int, namespace: Mapping[str, Any]
    ) -> str:
        """The prompt for one row: the template filled from the row, then the notebook."""
        if callable(template):
            return str(template(self.item(position)))
        # The notebook's namespace is looked through, never copied (it may be large).
        scope = collections.ChainMap(self.fields(position), namespace)  # type: ignore[arg-type]
        return interpolate_report(template, scope).text

    def check_template(self, template: str, namespace: Mapping[str, Any]) -> None:
        """Refuse a template whose field names nothing the rows or the notebook have
        (``{colum}``, ``{row.typo}``): it would be sent as typed to every row.

        Raises:
            OllamaError: Saying which fields, and what the rows offer.
        """
        if not self.values:
            return
        fields = self.fields(0)
        scope = collections.ChainMap(fields, namespace)  # type: ignore[arg-type]
        report = interpolate_report(template, scope)
        missing = [*report.undefined, *report.unformatted]
        if not missing:
            return
        names = ", ".join(f"{{{name}}}" for name in missing)
        offered = [f"{{{name}}}" for name in list(fields)[:12]]
        if self.kind == "frame":
            offered.append("{row[" + "column name" + "]}")
        verb = "names" if len(missing) == 1 else "name"
        raise OllamaError(
            f"{names} {verb} nothing in the rows or the notebook (rows offer "
            f"{', '.join(offered)}).",
            hint="Fix the name, or write {{ and }} to send braces as typed.",
        )

    def check_columns(self, into: str, output: OutputFormat | None) -> None:
        """Refuse result columns that would overwrite the DataFrame's own.

        Raises:
            OllamaError: Naming the columns, and how to avoid them.
        """
        if self.kind != "frame":
            return
        names = schema_fields(output) or [into]
        taken = [name for name in [*names, "error"] if name in self.columns]
        if taken:
            listed = ", ".join(map(repr, taken))
            raise OllamaError(
                f"The DataFrame already has the column {listed}, which the results would "
                "overwrite.",
                hint="Name the answer column with --into (into=), or rename the DataFrame's "
                "column first (df.rename(columns={...})).",
            )

    def assemble(
        self,
        results: Mapping[int, Any],
        errors: Mapping[int, str],
        *,
        into: str = "answer",
        output: OutputFormat | None = None,
    ) -> Any:
        """The results in the input's shape (see the module's docstring)."""
        n = len(self.values)
        values = [results.get(position) for position in range(n)]
        if self.kind == "list":
            return Answers(values, errors)
        import pandas as pd

        error_column = [errors.get(position) for position in range(n)]
        index = self.source.index
        if self.kind == "series" and not schema_fields(output):
            # Plain answers are text: the string dtype (missing rows as NA).
            dtype = "string" if output is None else None
            series = pd.Series(values, index=index, name=into, dtype=dtype)
            series.attrs["errors"] = {self.labels[p]: text for p, text in errors.items()}
            # By position too: labels repeat (after pd.concat), positions do not.
            series.attrs["error_positions"] = dict(sorted(errors.items()))
            return series
        columns = result_columns(values, output, into)
        frame = self.source.copy() if self.kind == "frame" else pd.DataFrame(index=index)
        for name, column in columns.items():
            frame[name] = pd.Series(column, index=index)
        frame["error"] = pd.Series(error_column, index=index, dtype=object)
        return frame

    def resume(
        self, previous: Any, *, into: str = "answer", output: OutputFormat | None = None
    ) -> tuple[dict[int, Any], set[int]]:
        """From an earlier (partial) result for the same items: the answers to keep, by
        position, and the positions still to do (failed or never run).

        Raises:
            OllamaError: ``previous`` is not a result for these items.
        """
        n = len(self.values)
        mismatch = OllamaError(
            "The result to resume from is not for these rows (its length or index differs).",
            hint="Pass the result of the same batch over the same items (or drop --resume).",
        )
        if self.kind == "list":
            if not isinstance(previous, Answers) or len(previous) != n:
                raise mismatch
            todo = set(previous.errors)
            return {p: previous[p] for p in range(n) if p not in todo}, todo
        kind = _pandas_kind(previous)
        if kind is None or len(previous) != n or list(previous.index) != self.labels:
            raise mismatch
        if kind == "series":
            positions = previous.attrs.get("error_positions")
            if positions is not None:
                todo = set(positions)
            elif "errors" in previous.attrs:  # from an older result: by label
                failed = previous.attrs["errors"]
                todo = {p for p, label in enumerate(self.labels) if label in failed}
            else:  # a Series that lost its attrs on the way: the missing answers are to do
                todo = {p for p, missing in enumerate(previous.isna().tolist()) if missing}
            answers = previous.tolist()
            return {p: answers[p] for p in range(n) if p not in todo}, todo
        fields = schema_fields(output)
        needed = [*(fields or [into]), "error"]
        absent = [name for name in needed if name not in previous.columns]
        if absent:
            raise OllamaError(
                f"The result to resume from has no {', '.join(map(repr, absent))} column, "
                "so it is not this batch's result.",
                hint="Resume with the same --into and --format as the first run.",
            )
        errors = previous["error"].tolist()
        todo = {p for p, error in enumerate(errors) if isinstance(error, str)}
        if fields:
            records = previous[fields].to_dict("records")
            return {p: records[p] for p in range(n) if p not in todo}, todo
        answers = previous[into].tolist()
        return {p: answers[p] for p in range(n) if p not in todo}, todo


def _pandas_kind(items: Any) -> str | None:
    """ "frame" or "series" for pandas objects (pandas imported only when given one)."""
    module = type(items).__module__
    if not module.startswith("pandas"):
        return None
    import pandas as pd

    if isinstance(items, pd.DataFrame):
        return "frame"
    if isinstance(items, pd.Series):
        return "series"
    return None
