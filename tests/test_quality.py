"""The code base keeps its shape: ruff-clean, mypy --strict clean, no import cycles, small modules,
and an API that type-checks in the user's code, as CI checks on every run."""

from __future__ import annotations

import ast
import itertools
import re
import subprocess
import sys
import textwrap
from collections import Counter, deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ollama_magic"
MAX_MODULE_LINES = 500
# The HTTP layer: usable without IPython or a notebook (scripts, servers, other frontends).
HTTP_LAYER = ("client", "stream", "http_errors", "transport")
FRONTEND_PACKAGES = ("IPython", "ipywidgets")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            *command,
            "ollama_magic",
            "tests",
            "notebooks",
            "benchmarks",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict():
    # No arguments: what to check and how strictly is [tool.mypy] in pyproject.toml.
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    per_file = Counter(line.split(":", 1)[0] for line in output.splitlines() if ": error:" in line)
    summary = "".join(f"  {count:4}  {path}\n" for path, count in per_file.most_common())
    assert result.returncode == 0, f"mypy errors by file:\n{summary}\n{output}"


# -- imports ------------------------------------------------------------------------------------


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (found under ``root``) by dotted name, subpackages included."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path], package: str):
    """(module, line) for each import of one of ``package``'s modules in a file.

    Every import counts: at module level, inside functions (lazy ones) and under
    ``if TYPE_CHECKING:``. ``from pkg.x import y`` is an import of ``pkg.x.y`` when that is a
    module, of ``pkg.x`` otherwise; a package's ``__init__`` is imported only when it is named
    (``from pkg import name``, ``import pkg``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def ours(target: str) -> bool:
        return target == package or target.startswith(package + ".")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            if not ours(target):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield (submodule if submodule in modules else target), node.lineno


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}."""
    modules = module_files(root, package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line in imported_modules(name, path, modules, package):
            if target != name:
                edges.setdefault(target, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def shortest_cycle(graph: dict[str, dict[str, int]], start: str, within: set[str]) -> list[str]:
    """The shortest import path from ``start`` back to itself, staying inside ``within``."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, {})):
            if w not in within:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    return []


def describe_cycles(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One line per distinct shortest cycle through a member: ``a:12 -> b:3 -> a``, where
    ``a:12`` says that line 12 of ``a`` imports the next module."""
    lines = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for start in component:
        cycle = shortest_cycle(graph, start, set(component))
        edges = frozenset(itertools.pairwise(cycle))
        if not cycle or edges in seen:
            continue
        seen.add(edges)
        steps = [f"{a}:{graph[a][b]}" for a, b in itertools.pairwise(cycle)]
        lines.append(" -> ".join([*steps, cycle[-1]]))
    return lines


def test_no_import_cycles():
    graph = import_graph(ROOT, PACKAGE)
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    report = [
        f"{', '.join(c)}:\n" + "".join(f"    {line}\n" for line in describe_cycles(graph, c))
        for c in cycles
    ]
    assert not cycles, "modules that import each other (module:line imports the next):\n" + (
        "".join(report)
    )


def readme_layers() -> dict[str, int]:
    """The layer of each module named in the README's diagram (Development): a line's ``←``
    starts a higher layer; names joined by ``,`` or ``·`` share one."""
    text = (ROOT / "README.md").read_text("utf-8")
    block = text.split("The package is layered", 1)[1].split("```", 2)[1]
    layers: dict[str, int] = {}
    rank = 0
    for line in block.splitlines():
        diagram = line.split("  ", 1)[0] if not line.startswith(" ") else line.strip()
        diagram = re.split(r"\s{2,}", diagram)[0]  # the description after two spaces
        for step, part in enumerate(diagram.split("←")):
            if step:
                rank += 1
            for name in re.findall(r"([\w*]+)\.py", part):
                layers[name] = rank
    return layers


def test_the_readme_layering_matches_the_imports():
    layers = readme_layers()
    assert {"client", "core", "workspace", "magics", "api"} <= set(layers), layers
    graph = import_graph(ROOT, PACKAGE)

    def layer(module: str) -> int | None:
        short = module.removeprefix(f"{PACKAGE}.")
        for name, rank in layers.items():
            if short == name or ("*" in name and re.fullmatch(name.replace("*", ".*"), short)):
                return rank
        return None  # a helper module the diagram does not name (options, markdown, ...)

    upward = [
        f"{module}:{line} imports {target}, a higher layer"
        for module, edges in graph.items()
        for target, line in edges.items()
        if layer(module) is not None and layer(target) is not None and layer(target) > layer(module)  # type: ignore[operator]
    ]
    assert not upward, "\n".join(upward)


def test_the_http_layer_imports_no_frontend():
    modules = module_files(ROOT, PACKAGE)
    offenders = []
    for short in HTTP_LAYER:
        path = modules.get(f"{PACKAGE}.{short}")
        if path is None:
            continue  # not split out (yet)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for imported in names:
                if imported.split(".")[0] in FRONTEND_PACKAGES:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {imported}")
    assert not offenders, "\n".join(offenders)


def test_the_cycle_scan_sees_every_kind_of_import(tmp_path):
    """The scan itself: lazy, TYPE_CHECKING, relative and ``from pkg import module`` imports."""
    files = {
        "pkg/__init__.py": """
            from typing import TYPE_CHECKING
            from pkg.a import A
            if TYPE_CHECKING:
                from pkg.b import B
            def __getattr__(name):
                from pkg.sub import c
        """,
        "pkg/a.py": "from . import b\nA = 1\n",
        "pkg/b.py": "def f():\n    import pkg.a\nB = 2\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..a import A\nfrom pkg import A as again\n",
        "pkg/sub/d.py": "from .c import x\nfrom pkg.sub import c\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    graph = import_graph(tmp_path, "pkg")
    assert {k: set(v) for k, v in graph.items()} == {
        "pkg": {"pkg.a", "pkg.b", "pkg.sub.c"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.a"},
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a", "pkg"},
        "pkg.sub.d": {"pkg.sub.c"},
    }
    cycles = sorted(c for c in strongly_connected(graph) if len(c) > 1)
    assert cycles == [["pkg", "pkg.sub.c"], ["pkg.a", "pkg.b"]]
    assert describe_cycles(graph, cycles[0]) == ["pkg:7 -> pkg.sub.c:2 -> pkg"]
    assert describe_cycles(graph, cycles[1]) == ["pkg.a:1 -> pkg.b:2 -> pkg.a"]


# -- size ---------------------------------------------------------------------------------------


def test_module_sizes():
    sizes = {
        path.relative_to(ROOT): len(path.read_text(encoding="utf-8").splitlines())
        for path in module_files(ROOT, PACKAGE).values()
    }
    offenders = sorted(((n, p) for p, n in sizes.items() if n > MAX_MODULE_LINES), reverse=True)
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines (split them by job):\n" + "".join(
        f"  {n:5}  {p}\n" for n, p in offenders
    )


# -- the user's view ----------------------------------------------------------------------------

USER_SCRIPT = """
from typing_extensions import assert_type

from ollama_magic import Chunk, Client, ModelInfo, Result, RunningModel, Stream

client = Client()
for m in client.ps():
    print(m.name, m.size_vram)
assert_type(client.ps(), list[RunningModel])
names: list[str] = [m.name for m in client.list()]
assert_type(client.list(), list[ModelInfo])

result = client.generate("llama3.2", "hi", stream=False)
assert_type(result, Result)
text: str = result.content

assert_type(client.generate("llama3.2", "hi"), Stream)
for chunk in client.generate("llama3.2", "hi", stream=True):
    assert_type(chunk, Chunk)
    print(chunk.content)

reply = client.chat("llama3.2", [{"role": "user", "content": "hi"}], stream=False)
assert_type(reply, Result)
with client.chat("llama3.2", [{"role": "user", "content": "hi"}]) as stream:
    for chunk in stream:
        print(chunk.thinking, chunk.content)
    answer: str = stream.text
"""


def test_user_script_type_checks(tmp_path):
    """A user's code that calls the client type-checks against the installed package."""
    assert (ROOT / PACKAGE / "py.typed").is_file(), "without py.typed, mypy ignores the types"
    script = tmp_path / "user_script.py"
    script.write_text(USER_SCRIPT)
    # Its own (empty) config, so neither the repository's nor the user's settings apply; run
    # from tmp_path, so the package is found where a user's mypy finds it: installed.
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            str(script),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
