"""One prompt per row of a Dask DataFrame: :func:`ollama_magic.map`, partition by partition.

:func:`map_partitions` returns a lazy Dask DataFrame with the ``answer`` column (with
``format=``, a typed column per field) and an ``error`` column; Dask answers each partition
with ``ollama_magic.map`` wherever it runs the task. Install with
``pip install 'ollama-magic[dask]'``. With ``tickets`` a pandas DataFrame with a ``text``
column::

    from typing import Literal

    import dask.dataframe as dd
    import ollama_magic.dask
    from pydantic import BaseModel

    class Ticket(BaseModel):
        category: Literal["bug", "billing", "other"]
        urgency: int

    ddf = dd.from_pandas(tickets, npartitions=8)
    labelled = ollama_magic.dask.map_partitions(
        ddf, "Classify: {text}", format=Ticket, model="llama3.2"
    )
    labelled.compute()

``labelled.dtypes`` already lists ``category`` (category), ``urgency`` (Int64) and ``error``
before anything runs. What can be checked is checked in the kernel, when the call is made: the
model is chosen once and every server asked for it, the template's fields and the options are
checked, so a typo fails before the graph is built. Workers never read the kernel's workspace:
the settings travel with the tasks as a :class:`SettingsSnapshot` (credentials masked when it
is printed), and each worker process builds one workspace from it and keeps its connections.

The servers must be reachable from the workers (``127.0.0.1`` is each worker's own machine).
``concurrency`` applies to each partition task: with W workers running T threads each, up to
W * T * concurrency requests are in flight on every server. Ollama answers
``OLLAMA_NUM_PARALLEL`` of them at once and queues the rest, so for a cluster choose
``concurrency`` so that W * T * concurrency is about twice the servers' parallel slots
(often ``concurrency=1``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ollama_magic.errors import OllamaError
from ollama_magic.interpolate import interpolate_report
from ollama_magic.mapping import Batch, current_shell
from ollama_magic.mapping import map as map_rows
from ollama_magic.options import mask_headers, mask_host
from ollama_magic.rows import Rows
from ollama_magic.structured import OutputFormat, output_format
from ollama_magic.transport import DEFAULT_HOST, split_credentials
from ollama_magic.workspace import Workspace, default_workspace

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd

__all__ = ["SettingsSnapshot", "map_partitions"]

#: map() arguments that have no meaning per partition.
_NOT_PER_PARTITION = ("resume", "progress", "dry_run")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SettingsSnapshot:
    """The settings every partition is answered with, taken in the kernel at call time.

    Picklable and the same on every worker. Its printed forms mask credentials (a header
    such as Authorization, a password in a host): Dask shows task arguments in errors and
    in its dashboard.
    """

    host: str
    hosts: tuple[str, ...]
    model: str
    """The model chosen in the kernel, so that every worker uses the same one."""
    options: Mapping[str, Any]
    keep_alive: str
    timeout: float
    headers: Mapping[str, str]
    concurrency: int
    """Requests in flight per server, per partition task."""

    @classmethod
    def capture(
        cls,
        workspace: Workspace,
        *,
        model: str,
        hosts: Sequence[str] = (),
        concurrency: int | None = None,
    ) -> SettingsSnapshot:
        """The settings of ``workspace`` (with a call's ``hosts`` and ``concurrency``)."""
        # Pinned here: a worker's own OLLAMA_HOST or default host may be another server.
        host = str(workspace.host or os.environ.get("OLLAMA_HOST", "").strip() or DEFAULT_HOST)
        chosen = tuple(str(h) for h in (hosts or workspace.hosts))
        headers = dict(workspace.headers)
        # The kernel's OLLAMA_API_KEY is not in a remote worker's environment; it goes as the
        # Bearer token the client would send, unless a header or a host's password comes first.
        api_key = os.environ.get("OLLAMA_API_KEY", "").strip()
        has_password = any(split_credentials(h)[1] for h in (host, *chosen))
        if api_key and not has_password and "authorization" not in {k.lower() for k in headers}:
            headers["Authorization"] = f"Bearer {api_key}"
        return cls(
            host=host,
            hosts=chosen,
            model=model,
            options=dict(workspace.options),
            keep_alive=str(workspace.keep_alive),
            timeout=float(workspace.timeout),
            headers=headers,
            concurrency=workspace.batch_concurrency(concurrency),
        )

    def workspace(self) -> Workspace:
        """A new workspace with these settings (what a worker answers its partitions with)."""
        return Workspace(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def _key(self) -> str:
        return json.dumps(dataclasses.astuple(self), sort_keys=True, default=repr)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SettingsSnapshot) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __dask_tokenize__(self) -> str:
        # Tokens are hashes: the credentials change the token but never show in a key name.
        return self._key()

    def __repr__(self) -> str:
        hosts = tuple(mask_host(h) for h in self.hosts)
        return (
            f"SettingsSnapshot(host={mask_host(self.host)!r}, hosts={hosts!r}, "
            f"model={self.model!r}, options={dict(self.options)!r}, "
            f"keep_alive={self.keep_alive!r}, timeout={self.timeout!r}, "
            f"headers={mask_headers(self.headers)!r}, concurrency={self.concurrency!r})"
        )

    __str__ = __repr__


@functools.lru_cache(maxsize=8)
def _workspace(snapshot: SettingsSnapshot) -> Workspace:
    """This process's workspace for ``snapshot``: built once, its clients reused by every
    partition (and thread) after the first."""
    return snapshot.workspace()


def ollama_map(
    partition: pd.DataFrame,
    template: str | Callable[[Any], str],
    snapshot: SettingsSnapshot,
    call: Mapping[str, Any],
) -> pd.DataFrame:
    """Answer one partition; runs wherever Dask runs the task (and names its keys)."""
    result: pd.DataFrame = map_rows(
        template,
        partition,
        model=snapshot.model,
        workspace=_workspace(snapshot),
        progress=False,
        check_servers=False,  # checked once, in the kernel, before the graph was built
        **call,
    )
    return result


def map_partitions(
    ddf: dd.DataFrame,
    template: str | Callable[[Any], str],
    *,
    model: str | None = None,
    format: Any = None,
    into: str = "answer",
    concurrency: int | None = None,
    hosts: Sequence[str] = (),
    workspace: Workspace | None = None,
    **kwargs: Any,
) -> dd.DataFrame:
    """:func:`ollama_magic.map` over every row of a Dask DataFrame, lazily.

    Args:
        ddf: The rows (a template names their columns, as for a pandas DataFrame).
        template: The prompt, or a function of the row (it must pickle: cloudpickle takes
            functions and classes defined in a notebook).
        model: Default: the workspace's model, else the newest model on the first server;
            chosen here, once, for every partition.
        format: A schema (a pydantic model, dataclass, TypedDict or schema dict): a typed
            column per field, declared in the result's ``meta``.
        into: The column for plain answers.
        concurrency: Requests in flight per server, per partition task (see the module).
        hosts: Servers to spread the rows over (default: the hosts setting, else the host).
        workspace: Whose settings the workers use (default: the kernel's).
        kwargs: Further arguments of ``map``: ``retries``, ``system``, ``options``, ``think``,
            ``keep_alive``, ``namespace`` and API fields. The notebook variables the template
            uses are sent with the tasks, so they must pickle too.

    Returns:
        A Dask DataFrame: the input's columns, the ``into`` column (or the schema's fields)
        and ``error``. A failed row holds NA and keeps its error; a partition does not fail
        for it (its task fails only when none of the servers can be reached).

    Raises:
        OllamaError: Dask is missing, no server has the model, a template field names
            nothing, or an argument is invalid; nothing has been sent then.
    """
    dataframe = _dask_dataframe()
    from dask.dataframe.dispatch import meta_nonempty

    if not isinstance(ddf, dataframe.DataFrame):
        raise OllamaError(
            f"map_partitions takes a Dask DataFrame, not a {type(ddf).__name__}.",
            hint="Make one with dd.from_pandas(frame, npartitions=N) (a Series: .to_frame()).",
        )
    refused = [name for name in _NOT_PER_PARTITION if name in kwargs]
    if refused:
        raise OllamaError(
            f"map_partitions does not take {', '.join(refused)}.",
            hint="Use ollama_magic.map on a pandas DataFrame for these.",
        )
    workspace = workspace or default_workspace()
    namespace = kwargs.pop("namespace", None)
    if namespace is None:
        shell = current_shell()
        namespace = shell.user_ns if shell is not None else {}
    output = output_format(format, namespace) if format is not None else None
    sample = meta_nonempty(ddf._meta)
    # Checks the template's fields and the result columns against the frame's columns, then
    # asks every server for the model.
    batch = Batch(
        workspace,
        Rows.of(sample),
        template,
        output=output,
        into=into,
        model=model,
        hosts=hosts,
        namespace=namespace,
    )
    batch.check_servers()
    snapshot = SettingsSnapshot.capture(
        workspace, model=str(batch.model), hosts=hosts, concurrency=concurrency
    )
    call = {
        **kwargs,
        "format": _portable(output),
        "into": into,
        "namespace": _used_variables(template, batch.rows, namespace),
    }
    # One request built as the workers will build it: a bad option or think level fails here.
    map_rows(
        template if isinstance(template, str) else "",
        sample.head(1),
        model=snapshot.model,
        workspace=_workspace(snapshot),
        dry_run=True,
        **call,
    )
    meta = Rows.of(ddf._meta).assemble({}, {}, into=into, output=output)
    result: dd.DataFrame = ddf.map_partitions(ollama_map, template, snapshot, call, meta=meta)
    return result


def _dask_dataframe() -> Any:
    """``dask.dataframe``, or the error saying how to install it."""
    try:
        import dask.dataframe
    except ImportError as exc:
        raise OllamaError(
            f"ollama_magic.dask needs Dask, which cannot be imported ({exc}).",
            hint="pip install 'ollama-magic[dask]'",
        ) from None
    return dask.dataframe


def _portable(output: OutputFormat | None) -> Any:
    """A format as a worker can use it: the class or schema itself, not a variable's name."""
    if output is None:
        return None
    return output.target if output.target is not None else output.format


def _used_variables(
    template: str | Callable[[Any], str], rows: Rows, namespace: Mapping[str, Any]
) -> dict[str, Any]:
    """The notebook variables the template fills in: the workers get these, never the whole
    namespace (which would go with every task, and need not pickle)."""
    if not isinstance(template, str) or not len(rows):
        return {}
    fields = rows.fields(0)
    scope = collections.ChainMap(fields, namespace)  # type: ignore[arg-type]
    roots = {
        re.split(r"[.\[]", name, maxsplit=1)[0]
        for name in interpolate_report(template, scope).filled
    }
    return {name: namespace[name] for name in roots if name not in fields and name in namespace}
