"""``%ollama create`` / ``cp`` / ``rm`` / ``push`` and the ``%%ollama_create`` cell: a server's
models made, copied, removed and published from a notebook.

``%%ollama_create NAME`` takes a Modelfile as the cell (``FROM``, ``SYSTEM``, ``PARAMETER``,
``TEMPLATE``, ``MESSAGE``, ``ADAPTER``, ``LICENSE``), converted to the API's JSON fields; a
local GGUF file is uploaded as a blob first (only if the server lacks it). Progress shows as
``%ollama pull``'s does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ollama_magic.admin import Line, follow, parse_words
from ollama_magic.errors import ModelNotFound, OllamaError, quiet_interrupt
from ollama_magic.management import QUANTIZATIONS, file_digest
from ollama_magic.modelfile import ModelSpec, parse_modelfile
from ollama_magic.progress import TransferProgress
from ollama_magic.terminal import printable
from ollama_magic.types import Progress

__all__ = ["COMMANDS", "create", "create_cell"]


@magic_arguments(name="ollama create")
@argument("name", metavar="NAME", help="The new model's name, e.g. tutor or me/tutor:latest.")
@argument("--from", dest="source", metavar="MODEL", help="The model it starts from.")
@argument("--gguf", metavar="PATH", help="A local GGUF file it is made of (uploaded first).")
@argument("-s", "--system", metavar="TEXT", help="Its system prompt.")
@argument(
    "--quantize", metavar="TYPE", help=f"Quantize it: {', '.join(QUANTIZATIONS)} (q4_K_M usual)."
)
def _create_arguments(line: str) -> None:
    """Create a model; as a cell magic (%%ollama_create NAME), the cell is its Modelfile."""


def create(line: Line, rest: list[str]) -> None:
    """``%ollama create NAME [--from MODEL | --gguf PATH] [-s TEXT] [--quantize TYPE]``."""
    create_cell(line, rest, "")  # the options alone: an empty Modelfile


def create_cell(line: Line, words: list[str], cell: str) -> None:
    """``%%ollama_create NAME [--quantize TYPE]`` with a Modelfile as the cell."""
    args = parse_words(_create_arguments.parser, words)
    spec = parse_modelfile(cell)
    if args.source:
        spec.fields["from"] = args.source
    if args.system is not None:
        spec.fields["system"] = args.system
    if args.gguf:
        spec.files.append(Path(args.gguf).expanduser())
    _create(line, args.name, spec, args.quantize)


def _create(line: Line, name: str, spec: ModelSpec, quantize: str | None) -> None:
    if not spec.files and "from" not in spec.fields:
        raise UsageError(
            f"Creating {name} needs what it starts from: --from MODEL, --gguf PATH, or a FROM "
            "line in the %%ollama_create cell."
        )
    if spec.files and "from" in spec.fields:
        raise UsageError(
            f"Creating {name}: from a model or from a file, not both (the server would use "
            "the model and ignore the file)."
        )
    if quantize is not None and quantize.lower() not in {q.lower() for q in QUANTIZATIONS}:
        raise UsageError(f"--quantize takes one of {', '.join(QUANTIZATIONS)}, not {quantize!r}.")
    client = line.workspace.client()
    fields = dict(spec.fields)
    again = f"`%%ollama_create {name}` again starts over."
    try:
        if spec.files:
            fields["files"] = _upload(line, spec.files)
        if spec.adapters:
            fields["adapters"] = _upload(line, spec.adapters)
    except KeyboardInterrupt as interrupt:
        raise quiet_interrupt(interrupt, f"the upload stopped; {again}") from None
    source = fields.pop("from", None)
    try:
        follow(
            line,
            "create",
            name,
            lambda: client.create(name, from_=source, quantize=quantize, **fields),
            f"create stopped; {again}",
        )
    except OllamaError as error:
        missing = "does not exist" in error.message or "not found" in error.message
        if source and missing and "manifest" in error.message:
            raise OllamaError(
                f"Creating {name} failed: {source} is neither a local model nor one the "
                "registry has.",
                hint="`%ollama models` lists the local models; check the name.",
            ) from None
        raise
    made = f" from {source}" if source else ""
    print(printable(f"Created {name}{made} on {client.host}."))


def _upload(line: Line, paths: list[Path]) -> dict[str, str]:
    """Upload each file the server lacks, with progress; the names and digests for create."""
    client = line.workspace.client()
    files = {}
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path} is not a file.")
        if path.suffix != ".safetensors" and not _is_gguf(path):
            # Checked here: the server would say "unknown type" after the whole upload.
            raise UsageError(f"{path} is not a GGUF file (it does not begin with GGUF).")
        size = path.stat().st_size
        progress = TransferProgress("hash", path.name, in_kernel=line.rich, fps=line.workspace.fps)
        digest = file_digest(path, _bytes(progress, "reading", size))
        progress.close()
        if client.blob_exists(digest):
            print(printable(f"{path.name}: the server has it already ({digest[:19]}…)."))
        else:
            progress = TransferProgress(
                "upload", path.name, in_kernel=line.rich, fps=line.workspace.fps
            )
            client.push_blob(path, digest, check=False, progress=_bytes(progress, "sending", size))
            progress.close()
        files[path.name] = digest
    return files


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"GGUF"


def _bytes(progress: TransferProgress, status: str, size: int) -> Callable[[int], None]:
    """Bytes read so far, as a progress line."""

    def update(done: int) -> None:
        progress.update(Progress(status=f"{status} {size:,} bytes", total=size, completed=done))

    return update


def push(line: Line, rest: list[str]) -> None:
    """``%ollama push NAME``: upload a model to its registry, with a progress bar."""
    if len(rest) != 1:
        raise UsageError("Usage: %ollama push NAMESPACE/MODEL[:TAG]")
    client = line.workspace.client()
    stopped = f"push stopped; `%ollama push {rest[0]}` resumes."
    follow(line, "push", rest[0], lambda: client.push(rest[0]), stopped)
    print(printable(f"Pushed {rest[0]} from {client.host}."))


def copy(line: Line, rest: list[str]) -> None:
    """``%ollama cp SOURCE DESTINATION``: the same model under a second name."""
    if len(rest) != 2:
        raise UsageError("Usage: %ollama cp SOURCE DESTINATION")
    client = line.workspace.client()
    try:
        client.copy(rest[0], rest[1])
    except ModelNotFound:
        raise _missing(rest[0], client.host, "nothing was copied") from None
    print(printable(f"Copied {rest[0]} to {rest[1]} on {client.host}."))


def remove(line: Line, rest: list[str]) -> None:
    """``%ollama rm NAME``: delete a local model (no confirmation: the name is the intent)."""
    if len(rest) != 1:
        raise UsageError("Usage: %ollama rm MODEL")
    client = line.workspace.client()
    try:
        client.delete(rest[0])
    except ModelNotFound:
        raise _missing(rest[0], client.host, "nothing was removed") from None
    # The space freed is not known here: a copy shares its files with the original.
    print(printable(f"Removed {rest[0]} from {client.host}."))


def _missing(name: str, host: str, outcome: str) -> OllamaError:
    return OllamaError(
        f"{name} is not a model on {host}; {outcome}.",
        hint="`%ollama models` lists the local models.",
    )


COMMANDS: dict[str, Callable[[Line, list[str]], Any]] = {
    "create": create,
    "push": push,
    "cp": copy,
    "rm": remove,
}
