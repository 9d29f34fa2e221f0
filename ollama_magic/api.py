"""The magics' machinery from plain Python: structured answers, tools, thinking, images.

>>> from dataclasses import dataclass
>>> @dataclass
... class City:
...     name: str
...     country: str
>>> cities = ask("Three large cities", format=list[City], retries=1)  # doctest: +SKIP
>>> cities[0]  # doctest: +SKIP
City(name='Tokyo', country='Japan')
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ollama_magic.client import Client
from ollama_magic.conversation import Conversation
from ollama_magic.core import ask as _ask
from ollama_magic.core import build_request, newest_model
from ollama_magic.errors import OllamaError
from ollama_magic.images import image_base64
from ollama_magic.structured import output_format
from ollama_magic.tools import Toolbox
from ollama_magic.views import QuietView

__all__ = ["ask"]


def ask(
    prompt: str,
    model: str | None = None,
    *,
    format: Any = None,
    retries: int = 0,
    tools: Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]] = (),
    max_tool_rounds: int = 5,
    system: str | None = None,
    images: Sequence[Any] = (),
    think: bool | str | None = None,
    options: Mapping[str, Any] | None = None,
    conversation: Conversation | None = None,
    client: Client | None = None,
) -> Any:
    """Ask once and return the answer: its text, or with ``format`` the validated object.

    Args:
        prompt: The question.
        model: Default ``$OLLAMA_MODEL``, else the newest local model.
        format: ``"json"``, a JSON-schema dict, a pydantic model, a dataclass, a TypedDict, or
            ``list[...]`` of one of those.
        retries: With ``format``: how many times to ask again when the answer is invalid.
        tools: Python functions the model may call (their results go back to it); a dict
            names them (a lambda, a partial or a callable object has no name of its own).
        max_tool_rounds: Tool rounds at most.
        system: The system prompt.
        images: Files, bytes, PIL images or numpy arrays, for vision models.
        think: True, False, or "low" / "medium" / "high" for thinking models.
        options: Ollama options (temperature, num_ctx, seed, …).
        conversation: Continue this conversation (it gets the question and the answer).
        client: Default ``Client()`` ($OLLAMA_HOST).

    Raises:
        OllamaError: as the magics would show it (ModelOutputError for an invalid answer).
    """
    client = client or Client()
    model = model or os.environ.get("OLLAMA_MODEL") or newest_model(client)
    output = output_format(format) if format is not None else None
    try:
        toolbox = Toolbox(tools) if tools else None
    except ValueError as exc:
        raise OllamaError(str(exc)) from None
    request = build_request(
        model,
        prompt,
        conversation=conversation,
        system=system,
        tools=toolbox,
        images=[image_base64(image) for image in images],
        output=output,
        host=client.host,
        options=dict(options) if options else None,
        think=think,
    )
    turn = conversation.turn() if conversation is not None else contextlib.nullcontext()
    with turn:
        outcome = _ask(
            client,
            request,
            QuietView(),
            conversation,
            output=output,
            retries=retries,
            tools=toolbox,
            max_tool_rounds=max_tool_rounds,
        )
    return outcome.value if output is not None else outcome.text
