"""Fixtures shared by the test suite.

The stand-in Ollama server comes from ``ollama_magic.testing`` (its pytest plugin provides the
``fake_ollama`` fixture); everything talks real HTTP to it.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator

import pytest
from _util import magic_shell
from IPython.core.interactiveshell import InteractiveShell

from ollama_magic import Client

_HOME = tempfile.TemporaryDirectory(prefix="ollama-magic-tests-")


def pytest_configure(config: pytest.Config) -> None:
    # IPython and Jupyter write profiles and runtime files: keep them out of the user's home.
    for name in ("IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        os.environ.setdefault(name, os.path.join(_HOME.name, name.lower()))


def pytest_unconfigure(config: pytest.Config) -> None:
    _HOME.cleanup()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up the developer's own Ollama settings."""
    for name in ("OLLAMA_HOST", "OLLAMA_API_KEY", "OLLAMA_MODEL", "OLLAMA_MAGIC_TRACEBACK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def client(fake_ollama) -> Iterator[Client]:
    """A client of the stand-in server."""
    with Client(fake_ollama.url, timeout=30) as c:
        yield c


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL where nothing listens: the port is held by a bound, non-listening socket, so the
    connection is refused and no other process can start listening there meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def ipython(fake_ollama, monkeypatch) -> Iterator[InteractiveShell]:
    """A real IPython shell with the extension loaded, pointed at the stand-in server."""
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    with magic_shell() as shell:
        yield shell
