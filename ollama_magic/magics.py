"""The ``%%ollama`` cell magic and the ``%ollama`` line magic, thin over the Workspace."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, argument_group, magic_arguments
from IPython.display import display
from traitlets import link

from ollama_magic import (
    admin,
    data_commands,
    explain,
    manage_commands,
    model_commands,
    replay_commands,
)
from ollama_magic.admin import key_values, parse_words, split_words
from ollama_magic.cell_checks import check_arguments, context_from, result_value, toolbox
from ollama_magic.compare import compare
from ollama_magic.conversation import DEFAULT_SESSION, Conversation
from ollama_magic.core import AnswerView, Outcome, Request
from ollama_magic.errors import ModelOutputError, quiet_interrupt
from ollama_magic.images import image_base64, thumbnails_html
from ollama_magic.interpolate import Interpolation, interpolate_report
from ollama_magic.logprobs import frame as logprobs_frame
from ollama_magic.logprobs import logprobs_bundle
from ollama_magic.map_cell import check_map_arguments, map_cell
from ollama_magic.markdown import render_markdown
from ollama_magic.options import check_options
from ollama_magic.render import escape
from ollama_magic.structured import OutputFormat, output_format
from ollama_magic.tools import Toolbox
from ollama_magic.views import NotebookView, QuietView, TextView, note_html
from ollama_magic.workspace import Settings, Workspace, think_value, use_workspace

__all__ = ["COMMANDS", "OllamaMagics"]

#: The ``%ollama`` commands: the server's administration, and the data commands.
COMMANDS = {
    **admin.COMMANDS,
    **model_commands.COMMANDS,
    **data_commands.COMMANDS,
    **explain.COMMANDS,
    **replay_commands.COMMANDS,
    **manage_commands.COMMANDS,
}


@magics_class
class OllamaMagics(Magics, Settings):
    """Magics that send notebook cells to Ollama. Configure with ``%config OllamaMagics.…``.

    The settings are the kernel's :class:`~ollama_magic.workspace.Workspace`'s, linked both
    ways: ``%config``, ``%ollama config`` and the workspace itself all change the same values.
    """

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self.workspace = Workspace()
        """Settings, clients and conversations, shared with chat widgets and ``ask()``."""
        for name in Settings.class_trait_names(config=True):  # the settings they share
            link((self, name), (self.workspace, name))
        use_workspace(self.workspace)
        # Failing cells are remembered for %ollama explain, and recordings note their cell.
        stops = (
            [explain.watch(shell), replay_commands.watch(shell, self.workspace)] if shell else []
        )

        def unwatch() -> None:
            for stop in stops:
                stop()
            stops.clear()

        self.unwatch = unwatch
        """Stops watching the kernel's cells (called when the extension unloads)."""

    @property
    def _user_ns(self) -> dict[str, Any]:
        """The notebook's variables (registered magics always have a shell)."""
        assert self.shell is not None
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    def _rich_output(self) -> bool:
        """Whether displays reach a frontend that renders HTML.

        Terminal IPython's publisher is the base ``DisplayPublisher``, which prints only
        text/plain; kernels (and ``capture_output``) replace it with a subclass.
        """
        return self.shell is None or type(self.shell.display_pub) is not DisplayPublisher

    # -- %%ollama ---------------------------------------------------------------------------

    @no_var_expand
    @magic_arguments(name="%ollama")
    @argument_group("The model and the conversation")
    @argument("model_name", nargs="?", metavar="MODEL", help="Model to use (or -m).")
    @argument("-m", "--model", help="Model to use; default: %%config OllamaMagics.model.")
    @argument("-c", "--chat", action="store_true", help="Continue the conversation (/api/chat).")
    @argument("--session", metavar="NAME", help="Use the conversation NAME (implies --chat).")
    @argument("-s", "--system", metavar="TEXT", help="System prompt (a chat: the session's).")
    @argument("-o", "--out", metavar="NAME", help="Store the answer (str) in variable NAME.")
    @argument_group("Options and request fields")
    @argument(
        "-t",
        "--temperature",
        metavar="T",
        help="Sampling temperature (option); a list (0,0.7,1.5) answers once per value, side "
        "by side.",
    )
    @argument(
        "--compare",
        type=int,
        metavar="N",
        help="Answer N times, side by side (the lesson on sampling; -o gets the list).",
    )
    @argument("--seed", type=int, help="Random seed, for repeatable answers (option).")
    @argument("-n", "--num-predict", type=int, metavar="N", help="At most N tokens (option).")
    @argument("--ctx", type=int, metavar="N", help="Context window in tokens (num_ctx).")
    @argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Any Ollama option; VALUE is JSON when it parses. Repeatable.",
    )
    @argument("--keep-alive", metavar="DURATION", help="Keep the model loaded: 300, '5m', -1.")
    @argument("--raw", action="store_true", help="Send the prompt without the model's template.")
    @argument("--suffix", metavar="TEXT", help="Text after the completion (fill-in-the-middle).")
    @argument("--template", metavar="TEXT", help="Override the model's prompt template.")
    @argument("--logprobs", action="store_true", help="Ask for token log-probabilities.")
    @argument(
        "--continue",
        dest="continue_",
        action="store_true",
        help="Follow on from the last one-shot answer (sends its context, /api/generate).",
    )
    @argument("--context", metavar="NAME", help="Send this list of token ids as the context.")
    @argument("--top-logprobs", type=int, metavar="N", help="Also the N likeliest alternatives.")
    @argument_group("Structured output")
    @argument(
        "-f",
        "--format",
        metavar="SCHEMA",
        help="Structured output: 'json', or a variable holding a JSON-schema dict, a pydantic "
        "model, a dataclass, a TypedDict or list[...] of one, or schema text. -o gets the object.",
    )
    @argument("--retries", type=int, default=0, metavar="N", help="Ask again N times if invalid.")
    @argument("--as-dataframe", action="store_true", help="With --format: -o gets a DataFrame.")
    @argument_group("Thinking, images and tools")
    @argument(
        "--think",
        nargs="?",
        const=True,
        metavar="LEVEL",
        help="Let the model think first (a thinking model); LEVEL: low, medium, high.",
    )
    @argument(
        "--no-think", action="store_true", help="Turn thinking off (models think by default)."
    )
    @argument(
        "-i",
        "--image",
        action="append",
        default=[],
        metavar="SRC",
        help="An image for a vision model: a file, or a variable holding bytes, a PIL image or "
        "a numpy array. Repeatable.",
    )
    @argument("--tools", metavar="F,G", help="Let the model call these Python functions.")
    @argument("--max-tool-rounds", type=int, default=5, metavar="N", help="Tool rounds at most.")
    @argument_group("Sending and showing")
    @argument("--no-stream", action="store_true", help="Wait for the whole answer.")
    @argument(
        "--host",
        action="append",
        metavar="URL",
        help="Ollama server for this cell (with --map repeatable: the rows are spread).",
    )
    @argument("--plain", action="store_true", help="Show plain text instead of markdown.")
    @argument("-q", "--quiet", action="store_true", help="Show nothing (use with -o).")
    @argument("--dry-run", action="store_true", help="Show the request; send nothing.")
    @argument("--no-interpolate", action="store_true", help="Send {braces} exactly as typed.")
    @argument("-h", "--help", action="store_true", help="Show this help.")
    @argument_group("Every row of a list, Series or DataFrame")
    @argument(
        "--map",
        metavar="ITEMS",
        help="Run the cell once per item of this variable: {item} and {index}; a DataFrame's "
        "rows give {column} and {row.column}. -o gets the answers aligned with the items.",
    )
    @argument("--into", metavar="COLUMN", help="With --map: the answers' column (answer).")
    @argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="With --map: requests in flight per server (%%config OllamaMagics.concurrency).",
    )
    @argument("--resume", action="store_true", help="With --map: send only the rows -o lacks.")
    # IPython types cell_magic's argument as Never (a bug in its annotations): any method fails.
    @cell_magic("ollama")  # type: ignore[arg-type]
    def ollama_cell(self, line: str, cell: str) -> None:
        """Send the cell to a model served by Ollama and show the answer as it streams.

        The cell is the prompt. ``{name}``, ``{name.attr}``, ``{name[0]}``, ``{name!r}`` and
        ``{name:.2f}`` are filled from the notebook's variables; other braces (JSON, code,
        LaTeX) stay as typed, and ``{{``/``}}`` give literal braces.

        Examples::

            %%ollama llama3.2
            Explain {topic} to a ten-year-old.

            %%ollama --chat -s "You are a terse physics tutor."
            What is entropy?

            %%ollama -o summary -t 0 --option stop='["\\n\\n"]'
            Summarise in one paragraph: {stats}

        (``stats = df.describe().to_string()`` first: fields are names, attributes and
        indexes, never calls, so ``{df.describe()}`` would be sent as typed.)

            %%ollama --dry-run
            Show me the request instead of sending it.

        A one-shot cell uses /api/generate; ``--chat`` continues the kernel's conversation
        over /api/chat (``%ollama history`` shows it, ``%ollama reset`` clears it).
        """
        args = _parse(self.ollama_cell, line)
        if args.help:
            print(inspect.cleandoc(self.ollama_cell.__doc__ or ""))
            return
        check_arguments(args, cell)
        check_map_arguments(args)
        if args.map is not None:
            map_cell(
                args,
                cell.strip(),
                workspace=self.workspace,
                namespace=self._user_ns,
                rich=self._rich_output(),
                request_fields=self._fields(args),
                raise_interrupt=quiet_interrupt,
            )
            return
        filled = (
            Interpolation(cell.strip())
            if args.no_interpolate
            else interpolate_report(cell.strip(), self._user_ns)
        )
        several = len(args.temperatures) > 1  # -t 0,0.7,1.5 (parsed by check_arguments)
        if (args.compare or several) and not args.dry_run:
            variants: list[dict[str, Any]] = (
                [{"temperature": t} for t in args.temperatures]
                if several
                else [{} for _ in range(args.compare)]
            )
            answers = compare(
                self.workspace,
                filled.text,
                variants,
                model=args.model_name or args.model,
                host=args.host[0] if args.host else None,
                fields=self._fields(args),
                rich=self._rich_output(),
            )
            if args.out:
                self._user_ns[args.out] = answers
            return
        cell_request = self._build(args, cell.strip(), filled)
        if args.dry_run:
            self._show_request(cell_request.request, filled)
            return
        outcome = self._send(args, cell_request, filled)
        if outcome.result and outcome.result.logprobs and not args.quiet:
            display(logprobs_bundle(outcome.result.logprobs), raw=True)
        self._bind(args, cell_request, outcome)

    def _build(self, args: Any, template: str, filled: Interpolation) -> _CellRequest:
        """The cell's request, built by the workspace from the flags."""
        namespace = self._user_ns
        output = output_format(args.format, namespace) if args.format else None
        tools = toolbox(args.tools, self._user_ns)
        images = [image_base64(source, namespace) for source in args.image]
        conversation = None
        if args.chat or args.session:
            conversation = self.workspace.conversations[args.session or DEFAULT_SESSION]
        request = self.workspace.request(
            filled.text,
            model=args.model_name or args.model,
            host=args.host[0] if args.host else None,
            conversation=conversation,
            tools=tools,
            images=images,
            output=output,
            stream=not args.no_stream,
            choose_model=not args.dry_run,  # a dry run does not choose the kernel's default
            **self._fields(args),
        )
        request.template, request.filled = template, filled.filled
        return _CellRequest(request, output, tools, conversation, images)

    def _fields(self, args: Any) -> dict[str, Any]:
        """The request fields the flags set (the same for one cell and for every row)."""
        try:
            think = think_value(args.think)
        except ValueError:
            levels = "low, medium, high or max"
            raise UsageError(f"--think takes {levels}, not {args.think!r}.") from None
        return {
            "system": args.system,
            "options": self._options(args),
            "keep_alive": args.keep_alive,
            "think": False if args.no_think else think,
            "logprobs": True if args.logprobs or args.top_logprobs else None,
            "top_logprobs": args.top_logprobs,
            "suffix": args.suffix,
            "template": args.template,
            "raw": True if args.raw else None,
            "context": context_from(args, self.workspace.last_context, self._user_ns),
        }

    def _send(self, args: Any, cell: _CellRequest, filled: Interpolation) -> Outcome:
        """Ask, showing the answer as it streams; raise (in one line) what went wrong."""
        request = cell.request
        if filled.undefined and not args.quiet:
            self._note(_undefined_note(filled.undefined))
        view = self._view(args, request.notes, structured=cell.output is not None)
        if cell.images and isinstance(view, NotebookView):
            html = thumbnails_html(cell.images, args.image)
            display({"text/html": html, "text/plain": ""}, raw=True)
        outcome = self.workspace.ask(
            request,
            view,
            conversation=cell.conversation,
            output=cell.output,
            retries=args.retries,
            tools=cell.tools,
            max_tool_rounds=args.max_tool_rounds,
        )
        if outcome.interrupted:
            # What arrived before the interrupt is still the user's; say so in one line.
            kept = self._keep_partial(args, outcome)
            raise quiet_interrupt(outcome.interruption or KeyboardInterrupt(), kept) from None
        error = outcome.error
        if isinstance(error, ModelOutputError):
            self._user_ns["_ollama_raw"] = error.raw
            error.hint = "The raw answer is in _ollama_raw; --retries N asks again, saying why."
            raise error
        if error is not None:
            self._keep_partial(args, outcome)
            raise error
        return outcome

    def _bind(self, args: Any, cell: _CellRequest, outcome: Outcome) -> None:
        """Bind ``-o`` (and ``_ollama_logprobs`` when asked for) in the notebook."""
        namespace, asked = self._user_ns, bool(cell.request.body.get("logprobs"))
        if asked:
            # Bound even when the server sent none, so an earlier cell's list cannot linger.
            namespace["_ollama_logprobs"] = list(outcome.result.logprobs if outcome.result else ())
        if args.out and cell.output is None and asked:
            # With --logprobs, -o is the table: token, probability, alternatives.
            namespace[args.out] = logprobs_frame(namespace["_ollama_logprobs"])
        elif args.out:
            namespace[args.out] = result_value(outcome, cell.output, args.as_dataframe)

    def _keep_partial(self, args: Any, outcome: Outcome) -> str:
        """Bind the partial answer to ``-o``; a line saying what was kept."""
        if args.out and (outcome.started or outcome.text):
            self._user_ns[args.out] = outcome.text
        if not outcome.text:
            return f"stopped before the {'answer began' if outcome.started else 'model answered'}."
        where = f", also in {args.out}" if args.out else ""
        return f"the partial answer is kept ({len(outcome.text)} characters{where})."

    def _note(self, text: str) -> None:
        """One muted line above the answer (plain text in a terminal)."""
        if not self._rich_output():
            print(text)
            return
        display({"text/html": note_html(text), "text/plain": text}, raw=True)

    def _options(self, args: Any) -> dict[str, Any]:
        """The flags, then --option KEY=VALUE (over the options setting, by the workspace)."""
        wanted = args.temperatures  # parsed by check_arguments
        flags = {
            "temperature": wanted[0] if len(wanted) == 1 else None,
            "seed": args.seed,
            "num_predict": args.num_predict,
            "num_ctx": args.ctx,
        }
        options = {key: value for key, value in flags.items() if value is not None}
        options.update(key_values(args.option, "--option"))
        try:
            return check_options(options)
        except ValueError as exc:
            raise UsageError(f"--option: {exc}") from None

    def _view(self, args: Any, notes: list[str], *, structured: bool = False) -> AnswerView:
        if args.quiet:
            return QuietView()
        if args.plain or not self._rich_output():
            return TextView(notes=notes)
        return NotebookView(fps=self.fps, notes=notes, structured=structured)

    def _show_request(self, request: Request, filled: Interpolation) -> None:
        text = request.to_json()
        html = render_markdown(f"```json\n{text}\n```")
        note = "Dry run: nothing was sent."
        if filled.filled:
            note += (
                " Filled from the notebook: " + ", ".join(f"{{{f}}}" for f in filled.filled) + "."
            )
        if filled.undefined:
            note += " " + _undefined_note(filled.undefined)
        if request.notes:
            note += " " + " ".join(request.notes)
        text += f"\n\n{note}"  # terminals and text exports see only this
        display(
            {"text/html": html + f"<div><em>{escape(note)}</em></div>", "text/plain": text},
            raw=True,
        )

    # -- %ollama ------------------------------------------------------------------------------

    @no_var_expand
    @line_magic("ollama")  # type: ignore[arg-type]  # as cell_magic above
    def ollama_line(self, line: str) -> Any:
        """Administer the Ollama server and the conversations.

        Usage::

            %ollama models                 local models (name, size, parameters, quantization)
            %ollama ps                     models loaded in memory now
            %ollama show MODEL             capabilities, parameters, template
            %ollama pull MODEL             download a model, with a progress bar
            %ollama create NAME --from MODEL [-s TEXT] [--quantize q4_K_M] | --gguf PATH
                                           (%%ollama_create NAME: the cell is a Modelfile)
            %ollama cp SRC DST | rm MODEL | push NAMESPACE/MODEL
            %ollama load|unload [MODEL]    into memory now (--keep-alive 30m), or out; then ps
            %ollama logprobs               the last --logprobs answer's token probabilities
            %ollama status                 is the server there, which version, is the model ready
            %ollama config [KEY=VALUE ...] show or change host, model, options, fps, timeout,
                                           hosts (a,b: servers for --map), concurrency
            %ollama embed MODEL --in NAME -o OUT   embed a list or Series of texts into an array
            %ollama history [--session NAME]   the conversation so far
            %ollama log [--search TEXT]    what was asked, from the recordings (a DataFrame)
            %ollama replay [on|record|strict|off] [PATH] [--fast]   record answers, replay
                                           them without a server; export FILE, import FILE
            %ollama reset [--session NAME]     forget the conversation
            %ollama chat [MODEL] [--session NAME]  a chat widget on that conversation
            %ollama traceback              the full traceback of the last error
            %ollama explain [N]            the model explains the last failed cell (or In [N])
            %ollama help                   this text, and %%ollama's options

        Settings are also traits: ``%config OllamaMagics.model = "qwen3"``.
        """
        words = split_words(line)
        command, rest = (words[0], words[1:]) if words else ("help", [])
        if command not in COMMANDS:
            names = sorted(set(COMMANDS) - {"list", "tb"})
            raise UsageError(f"Unknown %ollama command {command!r}. Commands: {', '.join(names)}.")
        usage = f"{self.ollama_line.__doc__}\n%%ollama\n{self.ollama_cell.__doc__}"
        return COMMANDS[command](admin.Line(self.workspace, self._rich_output(), usage), rest)

    @no_var_expand
    @cell_magic("ollama_create")  # type: ignore[arg-type]  # as cell_magic above
    def ollama_create(self, line: str, cell: str) -> None:
        """%%ollama_create NAME [--quantize T] [--from M] [-s TEXT]: the cell is a Modelfile."""
        rich = self._rich_output()
        manage_commands.create_cell(admin.Line(self.workspace, rich), split_words(line), cell)


@dataclass
class _CellRequest:
    """A cell's request and what answering it needs besides."""

    request: Request
    output: OutputFormat | None
    tools: Toolbox | None
    conversation: Conversation | None
    images: list[str]


def _undefined_note(names: tuple[str, ...]) -> str:
    listed = ", ".join(f"{{{name}}}" for name in names)
    verb = "is" if len(names) == 1 else "are"
    return f"{listed} {verb} not defined in the notebook, so sent as typed."


def _parse(magic: Any, line: str) -> Any:
    """Parse a magic's line with its argument parser."""
    return parse_words(magic.parser, split_words(line))
