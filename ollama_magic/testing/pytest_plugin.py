"""pytest plugin: the `fake_ollama` fixture (registered through the `pytest11` entry point).

Kept import-light: the server module is imported only when a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ollama_magic.testing.server import FakeOllama


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A started stand-in Ollama server on a free port, stopped after the test."""
    from ollama_magic.testing.server import FakeOllama

    with FakeOllama() as server:
        yield server
