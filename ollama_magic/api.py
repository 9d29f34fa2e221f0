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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ollama_magic.client import Client
from ollama_magic.conversation import Conversation
from ollama_magic.errors import OllamaError
from ollama_magic.images import image_base64
from ollama_magic.structured import output_format
from ollama_magic.tools import Toolbox
from ollama_magic.workspace import Workspace, default_workspace, think_value

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
    workspace: Workspace | None = None,
) -> Any:
    """Ask once and return the answer: its text, or with ``format`` the validated object.

    Args:
        prompt: The question.
        model: Default: the workspace's model setting ($OLLAMA_MODEL), else the newest local
            model (chosen once per server, as the cells do).
        format: ``"json"``, a JSON-schema dict, a pydantic model, a dataclass, a TypedDict, or
            ``list[...]`` of one of those.
        retries: With ``format``: how many times to ask again when the answer is invalid.
        tools: Python functions the model may call (their results go back to it); a dict
            names them (a lambda, a partial or a callable object has no name of its own).
        max_tool_rounds: Tool rounds at most.
        system: The system prompt.
        images: Files, bytes, PIL images or numpy arrays, for vision models.
        think: True, False, or "low" / "medium" / "high" for thinking models.
        options: Ollama options (temperature, num_ctx, seed, …), over the workspace's.
        conversation: Continue this conversation (it gets the question and the answer).
        client: Send with this client; default: the workspace's for its host setting.
        workspace: The settings and clients to use; default: the kernel's (the magics',
            so ``%config OllamaMagics.…`` applies), else one from the environment.

    Raises:
        OllamaError: as the magics would show it (ModelOutputError for an invalid answer).
    """
    workspace = workspace or default_workspace()
    output = output_format(format) if format is not None else None
    try:
        toolbox = Toolbox(tools) if tools else None
        think = think_value(think)
    except ValueError as exc:
        raise OllamaError(str(exc)) from None
    request = workspace.request(
        prompt,
        model=model,
        client=client,
        conversation=conversation,
        system=system,
        tools=toolbox,
        images=[image_base64(image) for image in images],
        output=output,
        options=options,
        think=think,
    )
    outcome = workspace.ask(
        request,
        conversation=conversation,
        output=output,
        retries=retries,
        tools=toolbox,
        max_tool_rounds=max_tool_rounds,
    )
    outcome.raise_for_error()
    return outcome.value if output is not None else outcome.text
