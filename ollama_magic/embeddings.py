"""Texts into vectors: ``ollama_magic.embed`` (what ``%ollama embed`` runs) and ``nearest``.

Texts go to ``/api/embed`` ``batch_size`` at a time (a request embeds a list); the batch engine
spreads the requests over the servers as it does a prompt's rows. Each answer becomes numpy
once, written into its rows of one float32 array. numpy is needed here only.
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ollama_magic.batch import run_batch
from ollama_magic.client import Client
from ollama_magic.errors import ModelNotFound, OllamaError, quiet_interrupt
from ollama_magic.progress import progress_view
from ollama_magic.rows import Rows
from ollama_magic.transport import Cancellation
from ollama_magic.workspace import Workspace, default_workspace

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

__all__ = ["embed", "embedding_model", "nearest"]


def _require_numpy() -> None:
    """numpy is optional for the package: say how to get it, not ModuleNotFoundError."""
    try:
        importlib.import_module("numpy")
    except ImportError:
        raise OllamaError(
            "Embeddings come back as numpy arrays, and numpy is not installed.",
            hint="Install it where the kernel runs: %pip install numpy",
        ) from None


def embedding_model(client: Client) -> str:
    """The newest local embedding model on ``client``'s server (an OllamaError if none)."""
    for model in client.list():  # the newest first
        # Servers list capabilities since about v0.20; older ones only the family, and
        # "bert" is in each embedding family's name (nomic-bert, jina-bert, xlm-roberta).
        old = not model.capabilities and ("bert" in model.family or "embed" in model.name)
        if old or "embedding" in model.capabilities:
            return model.name
    raise OllamaError(
        f"The Ollama server at {client.host} has no embedding model.",
        hint="Download one with `%ollama pull nomic-embed-text` (or name one: model=).",
    )


def _check_servers(
    clients: Sequence[Client], model: str | None, dimensions: int | None
) -> tuple[str, int]:
    """Choose the model once and make sure every server has it, before any text goes; and
    the vectors' length if a server tells it (for an empty input), else ``dimensions`` or 0."""
    name = model or embedding_model(clients[0])
    problems, length = [], 0
    for client in clients:
        try:
            info = client.show(name).get("model_info") or {}
            told = info.get(f"{info.get('general.architecture')}.embedding_length")
            length = length or (told if isinstance(told, int) else 0)
        except ModelNotFound:
            problems.append(f"{client.host} does not have {name}")
        except OllamaError as error:
            problems.append(f"{client.host}: {error.message}")
    if problems:
        raise OllamaError(
            "Nothing was sent: " + "; ".join(problems) + ".",
            hint=f"Pull it there (%ollama pull {name} with that host), or name another model.",
        )
    return name, min(length, dimensions) if length and dimensions else length or dimensions or 0


class _Run:
    """The texts of one call and the array their vectors go into."""

    def __init__(self, texts: list[str], model: str, size: int, fields: dict[str, Any]) -> None:
        self.texts, self.model, self.size, self.fields = texts, model, size, fields
        self.lock = threading.Lock()
        self.vectors: NDArray[np.float32] | None = None

    def texts_in(self, position: int) -> int:
        """How many texts batch ``position`` holds (what it counts for in the progress)."""
        return min(self.size, len(self.texts) - position * self.size)

    def send(self, position: int, client: Client, stop: Cancellation) -> None:
        """Embed one batch into its rows of the array."""
        start = position * self.size
        chunk = self.texts[start : start + self.size]
        vectors = client.embed(self.model, chunk, cancel=stop, **self.fields)
        self._store(start, vectors, len(chunk), client)

    def _store(self, start: int, vectors: list[list[float]], count: int, client: Client) -> None:
        import numpy as np

        if len(vectors) != count:
            raise OllamaError(
                f"{client.host} answered {len(vectors)} vectors for {count} texts.",
                hint="It does not embed lists as Ollama does: try a batch size of 1.",
            )
        try:
            block = np.asarray(vectors, dtype=np.float32)  # once per answer, in C
        except (ValueError, TypeError):
            block = np.empty(0, dtype=np.float32)
        with self.lock:
            if block.ndim == 2 and block.shape[1] and self.vectors is None:
                self.vectors = np.empty((len(self.texts), block.shape[1]), dtype=np.float32)
            if self.vectors is None or block.shape[1:] != self.vectors.shape[1:]:
                raise OllamaError(
                    f"{client.host} answered vectors that are empty, uneven or not as long "
                    "as the other batches' vectors.",
                    hint=f"Each server must have the same {self.model}; pull it again there.",
                )
            self.vectors[start : start + count] = block


def embed(
    texts: Iterable[str],
    model: str | None = None,
    *,
    batch_size: int = 64,
    concurrency: int | None = None,
    hosts: Sequence[str] = (),
    normalize: bool = False,
    dimensions: int | None = None,
    truncate: bool | None = None,
    keep_alive: str | float | None = None,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    workspace: Workspace | None = None,
) -> NDArray[np.float32]:
    """Embed every text: one row of the array per text, in order.

    Args:
        texts: Strings in a list (any iterable) or a pandas Series: row ``i`` is
            ``texts.iloc[i]``, by position. A lone string is one text.
        model: Default: the newest local embedding model (not the ``model`` setting, which
            is a chat model).
        batch_size: Texts per ``/api/embed`` request: ``ceil(n / batch_size)`` requests.
        concurrency, hosts, workspace: As for ``map``: requests in flight per server, the
            servers (default: the hosts setting, else the host), and the settings.
        normalize: Scale each row to unit length (a zero vector stays zero).
        dimensions, truncate, options, keep_alive: Sent as ``/api/embed`` takes them (options
            and keep_alive over the settings).
        progress: Show the progress, counted in texts, when they take more than one request.

    Returns:
        float32, shape ``(len(texts), dim)``. No texts: ``(0, dim)``, dim as the server
        describes the model (else ``dimensions``, else 0), and no ``/api/embed`` request.

    Raises:
        OllamaError: Before anything is sent (a server lacks the model, a text is not a
            string, …), else the first failed request's error: an array with holes would
            mislead. A request lost with its server is sent to another first.
        KeyboardInterrupt: On Ctrl-C, saying how many texts were embedded (none are kept).
    """
    _require_numpy()
    import numpy as np

    if batch_size < 1:
        raise OllamaError(f"batch_size must be at least 1, not {batch_size}.")
    workspace = workspace or default_workspace()
    items = _texts(texts)
    clients = workspace.batch_clients(hosts)
    per_server = workspace.batch_concurrency(concurrency)
    fields: dict[str, Any] = dict(
        dimensions=dimensions, truncate=truncate, **workspace.sent_settings(options, keep_alive)
    )
    name, length = _check_servers(clients, model, dimensions)
    if not items:
        return np.empty((0, length), dtype=np.float32)
    run = _Run(items, name, batch_size, fields)
    # One request takes as long as one answer: a bar and a summary for it would be noise.
    view = progress_view(rich=None, quiet=not progress or len(items) <= batch_size)
    positions, fps = range(math.ceil(len(items) / batch_size)), min(workspace.fps, 4.0)
    outcome = run_batch(
        positions,
        run.send,
        clients,
        concurrency=per_server,
        progress=view,
        fps=fps,
        unit="texts",  # counted in texts: what the user gave
        size=run.texts_in,
        fail_fast=True,  # an array with holes is of no use: the first failure is raised
    )
    if outcome.interruption is not None:
        done = f"{outcome.status.done:,} of {len(items):,} texts were embedded; none are kept."
        raise quiet_interrupt(outcome.interruption, done) from None
    if outcome.errors:  # a batch the servers failed (the engine kept its error)
        first = outcome.errors[min(outcome.errors)]
        raise first if isinstance(first, OllamaError) else OllamaError(str(first))
    if outcome.error is not None:  # every server went away
        outcome.error.hint = "Start a server again, and embed the texts again."
        raise outcome.error
    if run.vectors is None or len(outcome.results) != len(positions):
        raise OllamaError(  # never expected: a batch neither answered nor failed
            "Some texts were not embedded.", hint="Embed the texts again."
        )
    if normalize:
        norms = np.linalg.norm(run.vectors, axis=1, keepdims=True)
        np.divide(run.vectors, norms, out=run.vectors, where=norms > 0)  # zero stays zero
    return run.vectors


def nearest(
    query: ArrayLike, matrix: ArrayLike, k: int = 5
) -> tuple[NDArray[np.intp], NDArray[np.floating[Any]]]:
    """The ``k`` rows of ``matrix`` most similar to ``query`` by cosine, best first.

    Vectors need not be normalised (a zero vector is 0 similar to all); ``k`` above the rows'
    number gives them all; a 2-D ``query`` (a query per row) gives 2-D results.

    >>> import numpy as np
    >>> nearest([1, 0], np.array([[2, 0], [3, 4], [0, 1]], dtype=np.float32), k=2)
    (array([0, 1]), array([1. , 0.6]))

    Raises:
        OllamaError: The shapes do not fit together, or ``k`` is below 1.
    """
    _require_numpy()
    import numpy as np

    rows, queries = np.asarray(matrix), np.asarray(query)
    if k < 1 or rows.ndim != 2 or queries.ndim not in (1, 2) or queries.shape[-1] != rows.shape[1]:
        raise OllamaError(
            f"nearest takes a vector (or rows of them), a matrix of rows as long and k >= 1, "
            f"not shapes {queries.shape} and {rows.shape} and k={k}.",
            hint="Embed the query with the model that embedded the rows.",
        )
    dtype = np.result_type(queries.dtype, rows.dtype, np.float32)
    q, m = np.atleast_2d(queries).astype(dtype, copy=False), rows.astype(dtype, copy=False)
    # Dot products over the products of norms: no normalised copy of a large matrix is made.
    scores = q @ m.T
    norms = np.outer(np.sqrt(np.einsum("ij,ij->i", q, q)), np.sqrt(np.einsum("ij,ij->i", m, m)))
    np.divide(scores, norms, out=scores, where=norms > 0)  # else the dot product: 0
    k = min(k, len(m))
    # The k best in any order (linear time), then only those sorted.
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k else scores[:, :0].astype(np.intp)
    best = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    indices, similarity = np.take_along_axis(top, order, 1), np.take_along_axis(best, order, 1)
    return (indices[0], similarity[0]) if queries.ndim == 1 else (indices, similarity)


def _texts(texts: Iterable[str]) -> list[str]:
    """The texts in order (a Series' by position); anything but strings is refused."""
    rows = Rows.of([texts] if isinstance(texts, str) else texts)
    bad = [position for position, text in enumerate(rows.values) if not isinstance(text, str)]
    if bad:
        value, label = rows.values[bad[0]], rows.labels[bad[0]]
        what = "a DataFrame" if rows.kind == "frame" else f"{type(value).__name__} at {label!r}"
        raise OllamaError(
            f"embed takes strings, in a list or a Series; these have {what} ({value!r:.40}).",
            hint="Pass a column of texts, missing ones filled or dropped (.fillna(''), .dropna()).",
        )
    return list(rows.values)
