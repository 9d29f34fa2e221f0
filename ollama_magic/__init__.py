"""ollama-magic: local language models served by Ollama, in IPython and Jupyter.

>>> from ollama_magic import Client
>>> client = Client()            # $OLLAMA_HOST, else http://127.0.0.1:11434
>>> client.host
'http://127.0.0.1:11434'
"""

from typing import TYPE_CHECKING, Any

from ollama_magic._version import __version__
from ollama_magic.client import Cancellation, Client, Stream, encode_image, parse_host
from ollama_magic.conversation import Conversation, ConversationBusy
from ollama_magic.errors import (
    BadRequest,
    ModelNotFound,
    ModelOutputError,
    NotOllama,
    OllamaError,
    OllamaTimeout,
    ResponseError,
    ServerError,
    ServerUnreachable,
    StreamError,
    Unauthorized,
)
from ollama_magic.types import Chunk, Metrics, ModelInfo, Progress, Result, RunningModel, ToolCall

if TYPE_CHECKING:
    from ollama_magic.api import ask
    from ollama_magic.embeddings import embed as embed
    from ollama_magic.embeddings import nearest as nearest
    from ollama_magic.mapping import map as map
    from ollama_magic.widget import ChatWidget
    from ollama_magic.workspace import Workspace

# map, embed and nearest are reached as ollama_magic.map(...): not starred, since
# `from ollama_magic import *` would then shadow the builtin map (or a user's own embed).
__all__ = [
    "BadRequest",
    "Cancellation",
    "ChatWidget",
    "Chunk",
    "Client",
    "Conversation",
    "ConversationBusy",
    "Metrics",
    "ModelInfo",
    "ModelNotFound",
    "ModelOutputError",
    "NotOllama",
    "OllamaError",
    "OllamaTimeout",
    "Progress",
    "ResponseError",
    "Result",
    "RunningModel",
    "ServerError",
    "ServerUnreachable",
    "Stream",
    "StreamError",
    "ToolCall",
    "Unauthorized",
    "Workspace",
    "__version__",
    "ask",
    "encode_image",
    "load_ipython_extension",
    "parse_host",
    "unload_ipython_extension",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: ipywidgets (the widget) and markdown-it and IPython's display
    # (ask's views) are not needed to use the client.
    if name == "ChatWidget":
        from ollama_magic.widget import ChatWidget

        return ChatWidget
    if name == "ask":
        from ollama_magic.api import ask

        return ask
    if name in ("embed", "nearest"):
        from ollama_magic import embeddings

        return getattr(embeddings, name)
    if name == "map":
        from ollama_magic.mapping import map

        return map
    if name == "Workspace":
        from ollama_magic.workspace import Workspace

        return Workspace
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ollama_magic``: register ``%%ollama`` and ``%ollama``."""
    from ollama_magic.magics import OllamaMagics

    ipython.register_magics(OllamaMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext ollama_magic``: remove the magics again."""
    from ollama_magic.magics import OllamaMagics

    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        manager.magics[kind].pop("ollama", None)
    magics = manager.registry.pop(OllamaMagics.__name__, None)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, OllamaMagics)]
    if isinstance(magics, OllamaMagics):
        from ollama_magic.workspace import default_workspace, use_workspace

        magics.unwatch()
        if default_workspace() is magics.workspace:
            use_workspace(None)  # ask() and new widgets no longer follow its settings
        magics.workspace.close()
