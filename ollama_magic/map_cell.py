"""``%%ollama --map ITEMS -o NAME``: the cell as a prompt template over every item.

The magic parses the line; this module turns the flags into a :class:`~ollama_magic.mapping.Batch`
(the same one ``ollama_magic.map`` runs), shows the progress, and binds the result, also the
partial one when the batch is interrupted or every server went away.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from ollama_magic.mapping import Batch
from ollama_magic.markdown import render_markdown
from ollama_magic.progress import progress_view
from ollama_magic.render import escape
from ollama_magic.rows import Rows, lookup
from ollama_magic.structured import output_format
from ollama_magic.workspace import Workspace

__all__ = ["check_map_arguments", "map_cell"]


#: Flags that make no sense per row, and why.
_NOT_WITH_MAP = {
    "chat": "each row is its own one-shot prompt; --chat continues one conversation",
    "session": "each row is its own one-shot prompt; --session continues one conversation",
    "tools": "tool calls run Python per answer; ask per row with ollama_magic.ask instead",
    "image": "images go with one prompt; use a callable template with ollama_magic.map",
    "as_dataframe": "a DataFrame in gives a DataFrame out already",
    "no_interpolate": "each row fills the template; write {{ and }} for literal braces",
    "continue_": "each row is its own one-shot prompt (--context NAME sends one to every row)",
    "compare": "compare runs on one prompt, then map the settings you chose",
}


def check_map_arguments(args: Any) -> None:
    """Combinations that cannot work with ``--map``, as usage errors before anything runs."""
    if args.map is None:
        for name in ("into", "concurrency", "resume"):
            if getattr(args, name):
                flag = "--" + name.rstrip("_").replace("_", "-")
                raise UsageError(f"{flag} goes with --map ITEMS.")
        if args.host and len(args.host) > 1:
            raise UsageError("Several --host go with --map: one cell is sent to one server.")
        return
    for name, why in _NOT_WITH_MAP.items():
        if getattr(args, name):
            flag = "--" + name.rstrip("_").replace("_", "-")
            raise UsageError(f"{flag} does not go with --map: {why}.")
    if not args.out and not args.dry_run:
        raise UsageError("--map needs -o NAME: the results are bound to it, row by row.")
    if args.resume and not args.out:
        raise UsageError("--resume needs -o NAME: the earlier result it completes.")


def map_cell(
    args: Any,
    template: str,
    *,
    workspace: Workspace,
    namespace: dict[str, Any],
    rich: bool,
    request_fields: dict[str, Any],
    raise_interrupt: Callable[[BaseException, str], BaseException],
) -> None:
    """Run the cell over ``--map``'s items and bind ``-o``; see the module's docstring."""
    items = _lookup(args.map, namespace)
    output = output_format(args.format, namespace) if args.format else None
    batch = Batch(
        workspace,
        Rows.of(items),
        template,
        output=output,
        retries=args.retries,
        into=args.into or "answer",
        model=args.model_name or args.model,
        hosts=args.host or (),
        concurrency=args.concurrency,
        namespace=namespace,
        request_fields=request_fields,
    )
    resume = None
    if args.resume:
        if args.out not in namespace:
            raise UsageError(f"--resume: there is no {args.out} yet; run without --resume first.")
        resume = namespace[args.out]
    if args.dry_run:
        _show_dry_run(batch, workspace, resume)
        return
    view = progress_view(rich=rich, quiet=args.quiet)
    result, run = batch.run(view, resume=resume, fps=min(workspace.fps, 4.0))
    namespace[args.out] = result
    left = len(run.pending)
    if run.interruption is not None:
        message = (
            f"{run.status.done} of {run.status.total} rows answered and bound to {args.out}; "
            f"{left} left (marked in it). Run the cell again with --resume to do only those."
        )
        raise raise_interrupt(run.interruption, message) from None
    if run.error is not None:
        run.error.hint = (
            f"The {run.status.done} rows answered are in {args.out}; start the server again "
            "and run the cell with --resume to do only the rest."
        )
        raise run.error


def _lookup(expression: str, namespace: Mapping[str, Any]) -> Any:
    """``--map``'s items: a variable, an attribute or an item of one (``df.text``)."""
    try:
        return lookup(expression, namespace)
    except KeyError as exc:
        raise UsageError(f"--map: {exc.args[0]}.") from None


def _show_dry_run(batch: Batch, workspace: Workspace, resume: Any) -> None:
    """The first requests and how many would be sent where; nothing is sent."""
    requests, count = batch.dry_run(resume)
    servers = len(batch.clients)
    per = workspace.batch_concurrency(batch.concurrency)
    where = f"{servers} servers" if servers > 1 else "1 server"
    noun = "request" if count == 1 else "requests"
    note = (
        f"Dry run: nothing was sent. {count:,} {noun} would go to {where}, {per} at a time "
        f"each" + (f"; the first {len(requests)}:" if requests else ".")
    )
    texts = [request.to_json() for request in requests]
    html = "".join(render_markdown(f"```json\n{text}\n```") for text in texts)
    display(
        {
            "text/html": f"<div><em>{escape(note)}</em></div>{html}",
            "text/plain": "\n\n".join([note, *texts]),
        },
        raw=True,
    )
