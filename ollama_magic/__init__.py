"""ollama-magic: local language models served by Ollama, in IPython and Jupyter.

>>> from ollama_magic import Client
>>> client = Client()            # $OLLAMA_HOST, else http://127.0.0.1:11434
>>> client.host
'http://127.0.0.1:11434'
"""

from ollama_magic._version import __version__
from ollama_magic.client import Client, Stream, encode_image, parse_host
from ollama_magic.errors import (
    BadRequest,
    ModelNotFound,
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

__all__ = [
    "BadRequest",
    "Chunk",
    "Client",
    "Metrics",
    "ModelInfo",
    "ModelNotFound",
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
    "__version__",
    "encode_image",
    "parse_host",
]
