"""One prompt over every row: ``ollama_magic.map`` and what ``%%ollama --map`` runs.

Each row's prompt is built by the workspace like any cell's, sent without streaming (nothing
shows a row's tokens, and one JSON answer costs the kernel far less than a stream), checked
against the schema with ``retries`` per row, and collected; the batch engine keeps
``concurrency`` requests in flight on every server.

>>> import ollama_magic
>>> ollama_magic.map("Translate to French: {item}", ["cat", "dog"],
...                  dry_run=True, workspace=Workspace(model="llama3.2"))  # doctest: +ELLIPSIS
[Request(endpoint='generate', body={'model': 'llama3.2', 'prompt': 'Translate to French: cat', ...
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ollama_magic.batch import BatchProgress, BatchRun, run_batch
from ollama_magic.client import Client
from ollama_magic.core import Request
from ollama_magic.errors import ModelNotFound, OllamaError, quiet_interrupt
from ollama_magic.progress import progress_view
from ollama_magic.rows import NOT_RUN, Rows, error_text
from ollama_magic.structured import OutputFormat, output_format, plain_data
from ollama_magic.transport import Cancellation
from ollama_magic.workspace import Workspace, default_workspace, think_value

__all__ = ["Batch", "current_shell", "map"]

#: Prompts a dry run shows.
DRY_RUN_ROWS = 3


class _NotFinished(Exception):
    """A row's request was stopped (the batch is ending): it stays to do."""


@dataclass
class Batch:
    """One prompt template over rows: how each row's request is built, sent and kept."""

    workspace: Workspace
    rows: Rows
    template: str | Callable[[Any], str]
    output: OutputFormat | None = None
    retries: int = 0
    into: str = "answer"
    model: str | None = None
    hosts: Sequence[str] = ()
    concurrency: int | None = None
    namespace: Mapping[str, Any] = field(default_factory=dict)
    request_fields: dict[str, Any] = field(default_factory=dict)
    """``system``, ``options``, ``think``, ``keep_alive`` and further API fields."""

    def __post_init__(self) -> None:
        self.clients = self.workspace.batch_clients(self.hosts)
        self.rows.check_columns(self.into, self.output)
        if isinstance(self.template, str):
            self.rows.check_template(self.template, self.namespace)
            if len(self.rows):
                # Bad options or fields fail here, once, not in every row's worker.
                self.request(0, self.clients[0], choose_model=False)

    def request(self, position: int, client: Client, *, choose_model: bool = True) -> Request:
        """The request for one row, built by the workspace as a cell's is."""
        prompt = self.rows.prompt(self.template, position, self.namespace)
        return self.workspace.request(
            prompt,
            model=self.model,
            client=client,
            output=self.output,
            stream=False,
            choose_model=choose_model,
            **self.request_fields,
        )

    def send(self, position: int, client: Client, stop: Cancellation) -> Any:
        """Ask for one row; its answer (or the validated object), or raise its error."""
        request = self.request(position, client)
        outcome = self.workspace.ask(request, stop=stop, output=self.output, retries=self.retries)
        if outcome.error is not None:
            raise outcome.error
        if outcome.stopped or outcome.interrupted:
            raise _NotFinished()
        return outcome.value if self.output is not None else outcome.text

    def check_servers(self) -> None:
        """Choose the model once, and make sure every server has it, before any row goes.

        Raises:
            OllamaError: A server is unreachable or lacks the model (all are named).
        """
        self.model = self.workspace.resolve_model(self.model, self.clients[0])[0]
        problems = []
        unreachable = False
        for client in self.clients:
            try:
                client.show(self.model)
            except ModelNotFound:
                problems.append(f"{client.host} does not have {self.model}")
            except OllamaError as error:
                problems.append(error.message.rstrip("."))
                unreachable = True
        if problems:
            several = len(self.clients) > 1
            if unreachable:
                hint = "Check that the server runs" + (
                    ", or leave it out of --host / the hosts setting." if several else "."
                )
            else:
                hint = f"Pull it there (%ollama pull {self.model} with that host), " + (
                    "or leave that server out of --host / the hosts setting."
                    if several
                    else "or pick another model with -m."
                )
            raise OllamaError("Nothing was sent: " + "; ".join(problems) + ".", hint=hint)

    def dry_run(self, resume: Any = None) -> tuple[list[Request], int]:
        """The first requests, as they would be sent, and how many there would be (with
        ``resume``: only the rows that result lacks)."""
        positions = self.todo(resume)[1]
        return [
            self.request(position, self.clients[0], choose_model=False)
            for position in positions[:DRY_RUN_ROWS]
        ], len(positions)

    def todo(self, resume: Any = None) -> tuple[dict[int, Any], list[int]]:
        """The answers kept from ``resume`` by position, and the positions still to send."""
        if resume is None:
            return {}, list(builtins.range(len(self.rows)))
        kept, missing = self.rows.resume(resume, into=self.into, output=self.output)
        return kept, sorted(missing)

    def run(
        self,
        progress: BatchProgress,
        *,
        resume: Any = None,
        fps: float = 4.0,
        check_servers: bool = True,
    ) -> tuple[Any, BatchRun[Any]]:
        """Run every row (only the missing ones when resuming); the result in the input's
        shape and the run. Unfinished rows are marked in the result, never raised here."""
        kept, positions = self.todo(resume)
        if positions and check_servers:
            self.check_servers()
        run = run_batch(
            positions,
            self.send,
            self.clients,
            concurrency=self.workspace.batch_concurrency(self.concurrency),
            progress=progress,
            fps=fps,
            preview=self._preview,
            skipped=len(kept),
        )
        errors = {p: error_text(e) for p, e in run.errors.items()}
        errors.update(dict.fromkeys(run.pending, NOT_RUN))
        result = self.rows.assemble(
            {**kept, **run.results}, errors, into=self.into, output=self.output
        )
        return result, run

    def _preview(self, position: int, value: Any) -> tuple[str, str]:
        text = value if isinstance(value, str) else repr(plain_data(value))
        return str(self.rows.labels[position]), text


def map(  # ollama_magic.map, as the product names it
    template: str | Callable[[Any], str],
    items: Any,
    *,
    model: str | None = None,
    format: Any = None,
    retries: int = 0,
    into: str = "answer",
    concurrency: int | None = None,
    hosts: Sequence[str] = (),
    system: str | None = None,
    options: Mapping[str, Any] | None = None,
    think: bool | str | None = None,
    keep_alive: str | float | None = None,
    resume: Any = None,
    progress: bool = True,
    dry_run: bool = False,
    workspace: Workspace | None = None,
    namespace: Mapping[str, Any] | None = None,
    check_servers: bool = True,
    **fields: Any,
) -> Any:
    """Ask once per item and return the answers aligned with ``items``.

    Args:
        template: The prompt, with ``{item}`` and ``{index}`` (a DataFrame: ``{column}``,
            ``{row.column}``, ``{row[name]}``) and the notebook's variables; or a function of
            the item (a DataFrame: of the row, a dict with attribute access).
        items: A list (or any iterable), a pandas Series or a DataFrame.
        model: Default: the workspace's model, else the newest local one.
        format: A schema (as for ``ask``): answers are validated objects, and a DataFrame gets a
            typed column per field.
        retries: Per row: ask again this many times when the answer does not match ``format``.
        into: The column (or a Series' name) for plain answers.
        concurrency: Requests in flight per server (default: the concurrency setting).
        hosts: Servers to spread the rows over (default: the hosts setting, else the host).
        resume: An earlier result of this call (partial, or with failed rows): only the rows
            without an answer are sent.
        progress: Show a progress bar (a notebook) or line (a terminal) and the summary.
        dry_run: Return the first three requests; send nothing.
        workspace: Default: the kernel's (the magics').
        namespace: Variables the template may use besides the row (default: the notebook's,
            and then an interrupted or stopped batch leaves its result in ``_ollama_partial``).
        check_servers: False: the model is known to be on every server (checked once by a
            caller that runs many batches, as the Dask partitions do).
        fields: Further API fields (``suffix``, ``raw``, ``logprobs``, …).

    Returns:
        A list (with ``.errors``) for a list; a Series on the same index (``attrs["errors"]``
        by label, ``attrs["error_positions"]`` by position)
        for a Series; for a DataFrame, a copy with the ``into`` column (or the schema's
        fields) and an ``error`` column. Failed rows hold None / NA and keep their error.

    Raises:
        OllamaError: Before anything is sent (no server has the model, a template field names
            nothing, bad options), or when every server went away (after keeping the rows).
        KeyboardInterrupt: On Ctrl-C, after the rows answered so far were kept in
            ``_ollama_partial`` (and on the exception as ``.partial``).
    """
    workspace = workspace or default_workspace()
    # Only a call that uses the notebook's variables leaves a partial result among them.
    shell = current_shell() if namespace is None else None
    if namespace is None:
        namespace = shell.user_ns if shell is not None else {}
    try:
        think = think_value(think)
    except ValueError as exc:
        raise OllamaError(str(exc)) from None
    batch = Batch(
        workspace,
        Rows.of(items),
        template,
        output=output_format(format, namespace) if format is not None else None,
        retries=retries,
        into=into,
        model=model,
        hosts=hosts,
        concurrency=concurrency,
        namespace=namespace,
        request_fields={
            "system": system,
            "options": options,
            "think": think,
            "keep_alive": keep_alive,
            **fields,
        },
    )
    if dry_run:
        return batch.dry_run(resume)[0]
    view = progress_view(rich=None, quiet=not progress)
    result, run = batch.run(
        view, resume=resume, fps=min(workspace.fps, 4.0), check_servers=check_servers
    )
    if run.interruption is not None:
        if shell is not None:
            shell.user_ns["_ollama_partial"] = result
        vars(run.interruption)["partial"] = result
        left = len(run.pending)
        where = "_ollama_partial" if shell is not None else "the exception's .partial"
        message = (
            f"{run.status.done} of {run.status.total} rows answered, {left} left; the result "
            f"so far is in {where}: map(..., resume={where}) does only the rest."
        )
        raise quiet_interrupt(run.interruption, message) from None
    if run.error is not None:
        vars(run.error)["partial"] = result
        where = "_ollama_partial" if shell is not None else "the error's .partial"
        if shell is not None:
            shell.user_ns["_ollama_partial"] = result
        run.error.hint = (
            f"What was answered is in {where}; start a server and call again with "
            f"resume={where} to do only the rest."
        )
        raise run.error
    return result


def current_shell() -> Any:
    """The running IPython shell, if any (without importing IPython when it is not loaded)."""
    import sys

    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()
