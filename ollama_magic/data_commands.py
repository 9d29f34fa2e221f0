"""``%ollama`` subcommands over the notebook's data: ``embed``.

Each takes an :class:`~ollama_magic.admin.Line` and the words after the subcommand, as the
commands in :mod:`ollama_magic.admin` do; ``COMMANDS`` maps their names to them.
"""

# IPython's @magic_arguments and @argument are untyped (as for the magics and admin modules).

from __future__ import annotations

import keyword
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from IPython import get_ipython
from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ollama_magic.admin import Line, parse_words
from ollama_magic.embeddings import embed, embedding_model
from ollama_magic.rows import lookup
from ollama_magic.terminal import printable

__all__ = ["COMMANDS", "embed_command"]


@magic_arguments(name="ollama embed")
@argument("model", nargs="?", metavar="MODEL", help="Default: the newest local embedding model.")
@argument(
    "--in",
    dest="source",
    required=True,
    metavar="NAME",
    help="The texts: a list or Series in the notebook (NAME, or NAME.attribute like df.text).",
)
@argument("-o", "--output", required=True, metavar="OUT", help="The variable for the array.")
@argument("--normalize", action="store_true", help="Unit-length rows.")
@argument("--batch-size", type=int, default=64, metavar="N", help="Texts per request.")
@argument("--concurrency", type=int, metavar="N", help="Requests in flight per server.")
@argument(
    "--host",
    action="append",
    default=[],
    metavar="URL",
    help="A server to spread the requests over (repeat for several; default: the hosts "
    "setting, else the host).",
)
def _embed_arguments(line: str) -> None:
    """Embed texts from the notebook into a numpy array (one float32 row per text)."""


def _lookup(namespace: Mapping[str, Any], name: str) -> Any:
    """``--in``'s texts: a variable, an attribute or an item of one (``df.text``,
    ``df['text']``)."""
    try:
        return lookup(name, namespace)
    except KeyError as exc:
        raise UsageError(f"--in: {exc.args[0]} (it names a list or Series of texts).") from None


def embed_command(line: Line, rest: list[str]) -> None:
    """``%ollama embed [MODEL] --in NAME -o OUT``: embed the texts in NAME; the array in OUT.

    Prints one line: the texts, the model, the array's shape and type, OUT, the requests
    and the time taken.
    """
    args = parse_words(_embed_arguments.parser, rest)
    if not args.output.isidentifier() or keyword.iskeyword(args.output):
        raise UsageError(f"-o takes a variable name, not {args.output!r}.")
    shell = get_ipython()
    namespace = shell.user_ns if shell is not None else {}
    texts = _lookup(namespace, args.source)
    # Named here, so that the line says which model made the vectors.
    model = args.model or embedding_model(line.workspace.batch_clients(args.host)[0])
    started = time.monotonic()
    vectors = embed(
        texts,
        model,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        hosts=args.host,
        normalize=args.normalize,
        workspace=line.workspace,
    )
    seconds = time.monotonic() - started
    namespace[args.output] = vectors
    rows, width = vectors.shape
    requests = math.ceil(rows / args.batch_size)
    sent = f"{requests:,} request{'' if requests == 1 else 's'}"
    sent += f" of {args.batch_size}" if requests > 1 else ""
    shape = f"{rows} \N{MULTIPLICATION SIGN} {width} float32{' unit vectors' * args.normalize}"
    what = f"{rows:,} text{'' if rows == 1 else 's'} with {model}"
    print(printable(f"Embedded {what}: {shape} in {args.output} ({sent}, {seconds:.1f} s)"))


COMMANDS: dict[str, Callable[[Line, list[str]], Any]] = {"embed": embed_command}
