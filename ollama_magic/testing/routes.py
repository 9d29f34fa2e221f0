"""The routing table: which endpoint answers which path and method, per compatibility mode."""

from __future__ import annotations

from ollama_magic.testing.blobs import head_blob, post_blob
from ollama_magic.testing.compat import ADAPTER, OLLAMA, adapter_routes
from ollama_magic.testing.connection import Route
from ollama_magic.testing.creating import create
from ollama_magic.testing.embeddings import embed, embeddings
from ollama_magic.testing.generation import chat, generate
from ollama_magic.testing.models import copy, delete, ps, pull, push, root, show, tags, version

ROUTES: dict[str, dict[str, Route]] = {
    "/": {"GET": root, "HEAD": root},
    "/api/version": {"GET": version, "HEAD": version},
    "/api/tags": {"GET": tags, "HEAD": tags},
    "/api/ps": {"GET": ps},
    "/api/show": {"POST": show},
    "/api/generate": {"POST": generate},
    "/api/chat": {"POST": chat},
    "/api/embed": {"POST": embed},
    "/api/embeddings": {"POST": embeddings},
    "/api/pull": {"POST": pull},
    "/api/delete": {"DELETE": delete},
    "/api/copy": {"POST": copy},
    "/api/create": {"POST": create},
    "/api/push": {"POST": push},
    "/api/blobs/:digest": {"HEAD": head_blob, "POST": post_blob},
}

# An adapter has no HEAD / and no /api/version: the router answers 405 and 404 instead.
ROUTES_BY_COMPAT = {OLLAMA: ROUTES, ADAPTER: adapter_routes(ROUTES)}
