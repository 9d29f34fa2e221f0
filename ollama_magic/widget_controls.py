"""The chat widget's controls: the toolbar, the options panel and the input row."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as w  # type: ignore[import-untyped]  # ipywidgets ships no type hints

from ollama_magic.render import escape

__all__ = [
    "PANEL_OPTIONS",
    "TEXT_GRACE",
    "THINK",
    "InputRow",
    "OptionsPanel",
    "Toolbar",
    "think_label",
]

#: Options with their own field in the options panel, and how their text is read.
PANEL_OPTIONS: dict[str, type] = {"temperature": float, "num_ctx": int, "seed": int}
#: The think picker: each label and the ``think`` value it sends (None: the model decides).
THINK: dict[str, bool | str | None] = {
    "model default": None,
    "on": True,
    "off": False,
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
}


def think_label(think: bool | str | None) -> str:
    """The picker label for a ``think`` value (or label).

    Raises:
        ValueError: Not a value the picker offers.
    """
    if isinstance(think, str) and think.lower() in THINK:
        return think.lower()
    for label, value in THINK.items():
        if value is think:  # True is not 1 here
            return label
    raise ValueError(f"think must be True, False, None or one of {', '.join(THINK)}; not {think!r}")


class OptionsPanel:
    """The "System prompt and options" panel: empty fields mean the model's default.

    Args:
        system: The session's system prompt, shown in its box.
        think: The think picker's label (see :func:`think_label`).
        options: Ollama options: those with a field fill it, the others are listed and sent
            as they are.
    """

    def __init__(self, system: str, think: str, options: Mapping[str, Any]) -> None:
        self.system_shown = system
        """The session's system prompt, as the box last showed it."""
        self.system_box = w.Textarea(
            value=system,
            placeholder="System prompt, e.g. You are a concise assistant.",
            description="System",
            rows=2,
            layout=w.Layout(width="100%"),
        )
        self.extra = {k: v for k, v in options.items() if k not in PANEL_OPTIONS}
        """The options without a field: always sent."""
        self.option_fields: dict[str, w.Text] = {
            name: w.Text(
                value="" if options.get(name) is None else str(options[name]),
                placeholder="default",
                description=name,
                style={"description_width": "initial"},
                layout=w.Layout(width="12.5em"),
            )
            for name in PANEL_OPTIONS
        }
        self.think_picker = w.Dropdown(
            options=list(THINK),
            value=think,
            description="think",
            style={"description_width": "initial"},
            layout=w.Layout(width="13em"),
        )
        fields = w.HBox([*self.option_fields.values(), self.think_picker])
        fields.add_class("om-options")
        extra = ", ".join(f"{k}={v!r}" for k, v in self.extra.items())
        extra_note = w.HTML(
            f'<div class="om-note">Also sent: {escape(extra)}</div>' if extra else ""
        )
        self.widget = w.Accordion(
            children=[w.VBox([self.system_box, fields, extra_note])],
            titles=("System prompt and options",),
        )
        """The panel, folded: one line until opened."""

    def system_sent(self) -> str | None:
        """The system prompt to send: the box's if edited here, else None (the session's)."""
        system = self.system_box.value.strip()
        # Only a prompt typed here replaces the session's: a cell's -s must survive.
        return str(system) if system != self.system_shown else None

    def show_system(self, system: str) -> None:
        """Show the session's system prompt, unless the box holds an unsent edit."""
        if self.system_box.value.strip() == self.system_shown:
            self.system_box.value = system
        self.system_shown = system

    def options(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The options sent: ``defaults``, then the options without a field, then the fields.

        Raises:
            ValueError: A field does not hold a number.
        """
        options = {**defaults, **self.extra}
        for name, kind in PANEL_OPTIONS.items():
            text = self.option_fields[name].value.strip()
            if not text:
                continue
            try:
                options[name] = kind(text)
            except ValueError:
                noun = "a whole number" if kind is int else "a number"
                raise ValueError(f"{name} must be {noun}, not {text!r}") from None
        return options

    @property
    def think(self) -> bool | str | None:
        """The ``think`` field sent (None: the model's default)."""
        return THINK[str(self.think_picker.value)]


class Toolbar:
    """The top row: the session's name, the model picker, Retry, Export and Clear."""

    def __init__(self, session: str) -> None:
        self.model_picker = w.Dropdown(description="Model", layout=w.Layout(width="20em"))
        self.refresh_button = w.Button(
            icon="refresh", tooltip="List the models again", layout=w.Layout(width="2.6em")
        )
        self.retry_button = w.Button(
            description="Retry", icon="redo", tooltip="Ask again for the last answer"
        )
        self.clear_button = w.Button(
            description="Clear", icon="trash", tooltip="Forget this conversation (keeps the system)"
        )
        for button in (self.retry_button, self.clear_button):
            button.layout.width = "6.5em"
        self.export_link = w.HTML()
        """The Export control: downloads the conversation as markdown (kept current)."""
        self.export_link.add_class("om-export-box")
        title = w.HTML(
            f'<span class="om-title"><i class="fa fa-comments"></i> {escape(session)}</span>'
        )
        spacer = w.Box()
        spacer.add_class("om-spacer")
        parts = (title, self.model_picker, self.refresh_button, spacer, self.retry_button)
        self.widget = w.HBox([*parts, self.export_link, self.clear_button])
        self.widget.add_class("om-toolbar")

    def select_model(self, name: str, names: Sequence[str] | None = None) -> None:
        """Choose ``name`` among ``names`` (default: those listed now); one not listed is
        added first, as sending will say whether the server has it."""
        names = list(names if names is not None else self.model_picker.options)
        if name and name not in names:
            if f"{name}:latest" in names:
                name = f"{name}:latest"  # the same model, as /api/tags spells it
            else:
                names.insert(0, name)  # not listed (yet): sending will say so
        self.model_picker.options = names
        self.model_picker.value = name or (names[0] if names else None)


#: How long a click on Send waits for the box's text when the box is still empty here (s).
TEXT_GRACE = 0.5


class InputRow:
    """The message box, with Send, Stop and an image upload (for vision models) beside it.

    The box's text and a click on Send come on different comms, which the kernel may handle
    on different threads: ipykernel 7 sends a comm's messages to the subshell it last
    published from, so the box's go to the frontend's widget subshell and the button's (it
    never publishes) to the main shell. The click can be handled first, so an empty box waits
    a moment (:data:`TEXT_GRACE`) for its text before sending anyway.

    Args:
        send: Sends what the box holds (the widget's, which shows its errors); called from
            the thread that handled the click, the text, or the wait's timer.
    """

    def __init__(self, send: Callable[[], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._closed = False
        self._awaiting: threading.Timer | None = None  # a click on Send, box still empty
        self.input = w.Textarea(
            placeholder="Message (Shift+Enter to send)",
            rows=3,
            # Synced when it changes (on blur, or by the Send shortcut), not per keystroke:
            # every keystroke would otherwise be a message to the kernel.
            continuous_update=False,
        )
        self.input.add_class("om-input")
        self.input.observe(self._input_changed, names="value")
        self.send_button = w.Button(description="Send", icon="paper-plane", tooltip="Shift+Enter")
        self.send_button.add_class("om-send")
        self.stop_button = w.Button(
            description="Stop", icon="stop", disabled=True, tooltip="Stop the answer"
        )
        self.stop_button.add_class("om-stop")
        self.upload = w.FileUpload(
            accept="image/*", multiple=True, description="Image", tooltip="For vision models"
        )
        buttons = w.VBox([self.send_button, self.stop_button, self.upload])
        buttons.add_class("om-buttons")
        self.widget = w.HBox([self.input, buttons])
        self.widget.add_class("om-inputrow")

    def send_clicked(self) -> None:
        """Send was clicked: send now, or wait a moment for the box's text to arrive."""
        with self._lock:
            if self._closed or self.input.value.strip() or self.upload.value:
                awaiting = None
            elif self._awaiting is None:
                awaiting = threading.Timer(
                    TEXT_GRACE, contextvars.copy_context().run, args=(self._text_late,)
                )
                awaiting.daemon = True
                self._awaiting = awaiting
            else:
                return  # clicked again while waiting
        if awaiting is None:
            self._send()
        else:
            awaiting.start()

    def _input_changed(self, change: dict[str, Any]) -> None:
        """The box's text arrived: send it if Send was clicked before it came."""
        if not str(change.get("new") or "").strip():
            return
        with self._lock:
            awaiting, self._awaiting = self._awaiting, None
        if awaiting is not None:
            awaiting.cancel()
            self._send()

    def _text_late(self) -> None:
        """No text came in time after a click on Send: send anyway (which says so)."""
        with self._lock:
            if self._awaiting is not threading.current_thread():
                return  # the text came meanwhile, or the widget closed
            self._awaiting = None
        self._send()

    def close(self) -> None:
        """Stop waiting for text (the widget closes the widgets themselves)."""
        with self._lock:
            self._closed = True
            awaiting, self._awaiting = self._awaiting, None
        if awaiting is not None:
            awaiting.cancel()
