"""The ``%%ollama`` cell magic and the ``%ollama`` line magic, thin over :mod:`.core`."""

from __future__ import annotations

import contextlib
import inspect
import os
import shlex
from collections.abc import Callable
from typing import Any, TypeVar

from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from traitlets import Dict, Float, TraitError, Unicode, default, observe, validate

from ollama_magic import admin
from ollama_magic.admin import key_values
from ollama_magic.client import DEFAULT_HOST, Client, parse_host, split_credentials
from ollama_magic.conversation import DEFAULT_SESSION, Conversation, Conversations
from ollama_magic.core import (
    AnswerView,
    Request,
    ask,
    build_request,
    keep_alive_value,
    newest_model,
)
from ollama_magic.errors import ModelNotFound, ModelOutputError, OllamaError, quiet_interrupt
from ollama_magic.images import image_base64, thumbnails_html
from ollama_magic.interpolate import Interpolation, interpolate_report
from ollama_magic.markdown import render_markdown
from ollama_magic.options import (
    SecretHeaders,
    SecretHost,
    check_duration,
    check_headers,
    check_options,
)
from ollama_magic.render import escape
from ollama_magic.structured import OutputFormat, output_format, plain_data
from ollama_magic.tools import Toolbox, is_tool_name
from ollama_magic.views import NotebookView, QuietView, TextView, note_html

__all__ = ["OllamaMagics"]


_THINK_LEVELS = {"low", "medium", "high", "max"}


def _think(args: Any) -> bool | str | None:
    """``think`` from --think [LEVEL] / --no-think (None: the server decides)."""
    if args.no_think:
        return False
    value = args.think
    if value is None or value is True:
        return value
    word = str(value).lower()
    if word in ("true", "false"):
        return word == "true"
    if word not in _THINK_LEVELS:
        raise UsageError(f"--think takes low, medium, high or max, not {value!r}.")
    return word


def _check_arguments(args: Any, cell: str) -> None:
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
    if args.chat or args.session or args.tools:
        for value, name in (
            (args.raw, "--raw"),
            (args.suffix, "--suffix"),
            (args.template, "--template"),
        ):
            if value:
                raise UsageError(f"{name} works with one-shot prompts, not --chat or --tools.")


def _result_value(outcome: Any, output: OutputFormat | None, as_dataframe: bool) -> Any:
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


@magics_class
class OllamaMagics(Magics):
    """Magics that send notebook cells to Ollama. Configure with ``%config OllamaMagics.…``."""

    host = Unicode(help="The Ollama server. Empty: $OLLAMA_HOST, else http://127.0.0.1:11434.").tag(
        config=True
    )
    model = Unicode(
        help="The default model. Empty: $OLLAMA_MODEL, else the newest local model."
    ).tag(config=True)
    options = Dict(
        help="Ollama options sent with every request, e.g. {'temperature': 0.2, 'num_ctx': 8192}."
    ).tag(config=True)
    keep_alive = Unicode(
        help="How long Ollama keeps the model loaded after a request ('5m', '-1' forever, '0')."
    ).tag(config=True)
    fps = Float(10.0, help="Display updates per second while an answer streams.").tag(config=True)
    timeout = Float(
        300.0, help="Seconds to wait for the server to send something (a model may be loading)."
    ).tag(config=True)
    headers = Dict(
        help="Extra HTTP headers for a proxy in front of Ollama (OLLAMA_API_KEY is sent as a "
        "bearer token without this)."
    ).tag(config=True)

    @default("host")
    def _default_host(self) -> str:
        return SecretHost(os.environ.get("OLLAMA_HOST", ""))

    @default("model")
    def _default_model(self) -> str:
        return os.environ.get("OLLAMA_MODEL", "")

    @observe("host", "timeout", "headers")
    def _forget_clients(self, change: Any) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    @observe("host", "model")
    def _forget_default_model(self, change: Any) -> None:
        self.default_models.clear()  # a new server or setting: choose the default afresh

    @validate("options")
    def _valid_options(self, proposal: Any) -> dict[str, Any]:
        # Checked here, not by the server on every later cell (HTTP 500 "must be of type").
        return _checked(check_options, proposal["value"])

    @validate("keep_alive")
    def _valid_keep_alive(self, proposal: Any) -> str:
        return _checked(check_duration, str(proposal["value"]))

    @validate("host")
    def _valid_host(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value:
            try:
                parse_host(value)
            except OllamaError as exc:
                raise TraitError(exc.message) from None
        return SecretHost(value)  # %config prints it: a password in it shows masked

    @validate("headers")
    def _valid_headers(self, proposal: Any) -> SecretHeaders:
        # Printed by %config and saved with a notebook's outputs: credentials show masked.
        return SecretHeaders(_checked(check_headers, proposal["value"]))

    @validate("fps")
    def _valid_fps(self, proposal: Any) -> float:
        # Jupyter drops output above 1000 messages/s; a few updates per second read best.
        value = float(proposal["value"])
        if not 0 < value <= 60:
            raise TraitError(f"fps must be above 0 and at most 60, not {value:g}")
        return value

    @validate("timeout")
    def _valid_timeout(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(f"timeout must be a positive number of seconds, not {value:g}")
        return value

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        self._clients: dict[tuple[str, str, str], Client] = {}
        self.default_models: dict[str, str] = {}
        """The model chosen for each host when none is configured (kept for the kernel)."""
        super().__init__(shell, **kwargs)
        self.conversations = Conversations()
        """Chat sessions by name; ``%%ollama --chat`` uses ``"default"``."""

    # -- shared helpers ----------------------------------------------------------------------

    def client(self, host: str | None = None) -> Client:
        """The client for ``host`` (default: the configured one), reused across cells."""
        given = host or self.host or None
        # The credentials in the host are part of the key: another user:password@ for the
        # same server must not reuse the first one's client.
        key = (parse_host(given), self._host_source(host), split_credentials(given)[1] or "")
        if key not in self._clients:
            # The host as given, so that user:password@ in it still reaches the client.
            self._clients[key] = Client(
                given, headers=self.headers, timeout=self.timeout, host_source=key[1]
            )
        return self._clients[key]

    def _host_source(self, host: str | None) -> str:
        """Where the host comes from, so that errors say what to check."""
        if host:
            return "--host"
        if self.host and self.host != os.environ.get("OLLAMA_HOST", ""):
            return "the host setting (%ollama config host=…)"
        if self.host:
            return "OLLAMA_HOST"
        return f"the host (OLLAMA_HOST is not set, so {DEFAULT_HOST} is used)"

    def _rich_output(self) -> bool:
        """Whether displays reach a frontend that renders HTML.

        Terminal IPython's publisher is the base ``DisplayPublisher``, which prints only
        text/plain; kernels (and ``capture_output``) replace it with a subclass.
        """
        return type(self.shell.display_pub) is not DisplayPublisher

    def resolve_model(self, explicit: str | None, client: Client) -> tuple[str, list[str]]:
        """The model to use and a note on how it was chosen (for the footer).

        With no model named or configured, the newest local model is chosen once per server
        and kept: pulling another model later must not silently switch the cells' model.
        """
        if explicit:
            return explicit, []
        if self.model:
            return self.model, []
        if client.host in self.default_models:
            return self.default_models[client.host], []
        name = newest_model(client)
        self.default_models[client.host] = name
        return name, [
            f"{name} was chosen as the newest local model and stays the default in this "
            "kernel (%ollama config model=NAME picks another)"
        ]

    def default_model(self, client: Client) -> str:
        """The model a cell without one uses on ``client``'s server (chosen once, then kept)."""
        return self.resolve_model(None, client)[0]

    # -- %%ollama ---------------------------------------------------------------------------

    @no_var_expand
    @magic_arguments(name="%ollama")
    @argument("model_name", nargs="?", metavar="MODEL", help="Model to use (or -m).")
    @argument("-m", "--model", help="Model to use; default: %%config OllamaMagics.model.")
    @argument("-c", "--chat", action="store_true", help="Continue the conversation (/api/chat).")
    @argument("--session", metavar="NAME", help="Use the conversation NAME (implies --chat).")
    @argument("-s", "--system", metavar="TEXT", help="System prompt (a chat: the session's).")
    @argument("-o", "--out", metavar="NAME", help="Store the answer (str) in variable NAME.")
    @argument("-t", "--temperature", type=float, help="Sampling temperature (option).")
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
    @argument("--top-logprobs", type=int, metavar="N", help="Also the N likeliest alternatives.")
    @argument(
        "-f",
        "--format",
        metavar="SCHEMA",
        help="Structured output: 'json', or a variable holding a JSON-schema dict, a pydantic "
        "model, a dataclass, a TypedDict or list[...] of one, or schema text. -o gets the object.",
    )
    @argument("--retries", type=int, default=0, metavar="N", help="Ask again N times if invalid.")
    @argument("--as-dataframe", action="store_true", help="With --format: -o gets a DataFrame.")
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
    @argument("--no-stream", action="store_true", help="Wait for the whole answer.")
    @argument("--host", metavar="URL", help="Ollama server for this cell.")
    @argument("--plain", action="store_true", help="Show plain text instead of markdown.")
    @argument("-q", "--quiet", action="store_true", help="Show nothing (use with -o).")
    @argument("--dry-run", action="store_true", help="Show the request; send nothing.")
    @argument("--no-interpolate", action="store_true", help="Send {braces} exactly as typed.")
    @argument("-h", "--help", action="store_true", help="Show this help.")
    @cell_magic("ollama")
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
        _check_arguments(args, cell)
        namespace = self.shell.user_ns
        filled = (
            Interpolation(cell.strip())
            if args.no_interpolate
            else interpolate_report(cell.strip(), namespace)
        )
        prompt = filled.text
        client = self.client(args.host)
        explicit = args.model_name or args.model
        chosen = explicit or self.model or client.host in self.default_models
        if args.dry_run and not chosen:  # a dry run does not choose the kernel's default
            model, notes = "<newest local model>", ["The model is chosen when a cell is sent."]
        else:
            model, notes = self.resolve_model(explicit, client)
        output = output_format(args.format, namespace) if args.format else None
        tools = self._tools(args.tools)
        images = [image_base64(source, namespace) for source in args.image]
        conversation = None
        if args.chat or args.session:
            conversation = self.conversations[args.session or DEFAULT_SESSION]
        request = self._request(args, prompt, model, output, tools, images, conversation)
        request.host, request.notes = client.host, notes
        request.template, request.filled = cell.strip(), filled.filled

        if args.dry_run:
            self._show_request(request, filled)
            return
        if filled.undefined and not args.quiet:
            self._note(_undefined_note(filled.undefined))
        view = _RecordingView(self._view(args, notes, structured=output is not None))
        if images and isinstance(view.inner, NotebookView):
            display({"text/html": thumbnails_html(images, args.image), "text/plain": ""}, raw=True)
        turn = conversation.turn() if conversation is not None else contextlib.nullcontext()
        try:
            with turn:
                outcome = ask(
                    client,
                    request,
                    view,
                    conversation,
                    output=output,
                    retries=args.retries,
                    tools=tools,
                    max_tool_rounds=args.max_tool_rounds,
                )
        except ModelOutputError as error:
            namespace["_ollama_raw"] = error.raw
            error.hint = "The raw answer is in _ollama_raw; --retries N asks again, saying why."
            raise
        except KeyboardInterrupt as interrupt:
            # What arrived before the interrupt is still the user's; say so in one line.
            kept = self._keep_partial(args, view)
            raise quiet_interrupt(interrupt, kept) from None
        except OllamaError as error:
            self._keep_partial(args, view)
            if isinstance(error, ModelNotFound) and self.default_models.get(client.host) == model:
                del self.default_models[client.host]  # gone from the server: choose again
            raise
        if request.body.get("logprobs"):
            # Bound even when the server sent none, so an earlier cell's list cannot linger.
            namespace["_ollama_logprobs"] = list(outcome.result.logprobs if outcome.result else ())
        if args.out:
            namespace[args.out] = _result_value(outcome, output, args.as_dataframe)

    def _keep_partial(self, args: Any, view: _RecordingView) -> str:
        """Bind the partial answer to ``-o``; a line saying what was kept."""
        if args.out and (view.started or view.partial):
            self.shell.user_ns[args.out] = view.partial
        if not view.partial:
            return f"stopped before the {'answer began' if view.started else 'model answered'}."
        where = f", also in {args.out}" if args.out else ""
        return f"the partial answer is kept ({len(view.partial)} characters{where})."

    def _note(self, text: str) -> None:
        """One muted line above the answer (plain text in a terminal)."""
        if not self._rich_output():
            print(text)
            return
        display({"text/html": note_html(text), "text/plain": text}, raw=True)

    def _request(
        self,
        args: Any,
        prompt: str,
        model: str,
        output: OutputFormat | None,
        tools: Toolbox | None,
        images: list[str],
        conversation: Conversation | None,
    ) -> Request:
        """The request a cell makes: /api/chat for conversations and tools, else generate."""
        return build_request(
            model,
            prompt,
            conversation=conversation,
            system=args.system,
            tools=tools,
            images=images,
            output=output,
            stream=not args.no_stream,
            options=self._options(args) or None,
            keep_alive=keep_alive_value(args.keep_alive or self.keep_alive),
            think=_think(args),
            logprobs=True if args.logprobs or args.top_logprobs else None,
            top_logprobs=args.top_logprobs,
            suffix=args.suffix,
            template=args.template,
            raw=True if args.raw else None,
        )

    def _options(self, args: Any) -> dict[str, Any]:
        """Configured options, then the flags, then --option KEY=VALUE."""
        options = dict(self.options)
        flags = {
            "temperature": args.temperature,
            "seed": args.seed,
            "num_predict": args.num_predict,
            "num_ctx": args.ctx,
        }
        options.update({key: value for key, value in flags.items() if value is not None})
        options.update(key_values(args.option, "--option"))
        try:
            return check_options(options)
        except ValueError as exc:
            raise UsageError(f"--option: {exc}") from None

    def _tools(self, names: str | None) -> Toolbox | None:
        """The notebook functions named by --tools."""
        if not names:
            return None
        functions: dict[str, Any] = {}
        for name in (n.strip() for n in names.split(",") if n.strip()):
            function = self.shell.user_ns.get(name)
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
    @line_magic("ollama")
    def ollama_line(self, line: str) -> Any:
        """Administer the Ollama server and the conversations.

        Usage::

            %ollama models                 local models (name, size, parameters, quantization)
            %ollama ps                     models loaded in memory now
            %ollama show MODEL             capabilities, parameters, template
            %ollama pull MODEL             download a model, with a progress bar
            %ollama status                 is the server there, which version, is the model ready
            %ollama config [KEY=VALUE ...] show or change host, model, options, fps, timeout
            %ollama history [--session NAME]   the conversation so far
            %ollama reset [--session NAME]     forget the conversation
            %ollama chat [MODEL] [--session NAME]  a chat widget on that conversation
            %ollama traceback              the full traceback of the last error
            %ollama help                   this text, and %%ollama's options

        Settings are also traits: ``%config OllamaMagics.model = "qwen3"``.
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{exc} in: {line}") from None
        if not words:
            return admin.help_command(self, [])
        command, rest = words[0], words[1:]
        if command not in admin.COMMANDS:
            names = sorted(set(admin.COMMANDS) - {"list", "tb"})
            raise UsageError(f"Unknown %ollama command {command!r}. Commands: {', '.join(names)}.")
        return admin.COMMANDS[command](self, rest)


class _RecordingView:
    """Wraps a view and keeps the text so far, for ``-o`` after an interrupt or failure."""

    def __init__(self, view: AnswerView) -> None:
        self.inner = view
        self.partial = ""
        self.started = False

    def thinking(self, text: str) -> None:
        self.started = True
        self.inner.thinking(text)

    def content(self, text: str) -> None:
        self.started = True
        self.partial += text
        self.inner.content(text)

    def tool_call(self, *args: Any) -> None:
        self.partial = ""  # the answer after the tools is what -o keeps
        if hasattr(self.inner, "tool_call"):
            self.inner.tool_call(*args)

    def retry(self, *args: Any) -> None:
        self.partial = ""
        if hasattr(self.inner, "retry"):
            self.inner.retry(*args)

    def finish(self, outcome: Any) -> None:
        self.started = True
        self.inner.finish(outcome)


_T = TypeVar("_T")


def _checked(check: Callable[[Any], _T], value: Any) -> _T:
    """``check(value)``, its ValueError as the TraitError that %config and setattr report."""
    try:
        return check(value)
    except ValueError as exc:
        raise TraitError(str(exc)) from None


def _undefined_note(names: tuple[str, ...]) -> str:
    listed = ", ".join(f"{{{name}}}" for name in names)
    verb = "is" if len(names) == 1 else "are"
    return f"{listed} {verb} not defined in the notebook, so sent as typed."


def _parse(magic: Any, line: str) -> Any:
    """Parse a magic's line with shell quoting (IPython's ``parse_argstring`` keeps quotes)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc} in: {line}") from None
    return parse_words(magic.parser, words)


def parse_words(parser: Any, words: list[str]) -> Any:
    """Parse with a magic's argument parser; a usage error carries the usage line."""
    try:
        return parser.parse_args(words)
    except UsageError as error:
        usage = " ".join(parser.format_usage().replace("::", "").split())
        raise UsageError(f"{error}\nUsage: {usage}") from None
