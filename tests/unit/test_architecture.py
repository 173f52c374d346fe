"""The rules of docs/architecture.md, read from the source: imports point down, no cycles, rooms of a size.

Every module under chalicelib/ is parsed with ``ast`` (no import runs): module-level, function-local and
``TYPE_CHECKING`` imports all count, relative imports are resolved against the importing module's package.
The checkers are plain functions so that the tests at the bottom can run them on a small synthetic package
and see them both fail and pass.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "chalicelib"
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 90

ADAPTERS = frozenset({"memory", "aws", "docker"})
BELOW_LOCAL = frozenset(
    {"core", "runtime", "settings", "inspect", *ADAPTERS, "services", "wiring", "api", "worker", "oci"}
)
# The layer (a folder, or a top-level module) -> the layers it may import besides itself.
# An entry point (cli, demo) may import anything; a layer missing here is reported, so a new one gets a rule.
MAY_IMPORT: dict[str, frozenset[str] | None] = {
    "": frozenset(),  # the package itself
    "core": frozenset(),
    "runtime": frozenset({"core"}),
    "settings": frozenset({"core"}),
    "inspect": frozenset({"core", "runtime"}),
    **{adapter: frozenset({"core", "runtime", "settings"}) for adapter in ADAPTERS},
    # The daemonless builder shares the docker builder's wheelhouse, recipe constants and image errors.
    "oci": frozenset({"core", "runtime", "settings", "docker"}),
    "services": frozenset({"core", "inspect", "settings"}),
    "wiring": frozenset({"core", "settings", "services", "oci", *ADAPTERS}),
    "api": frozenset({"core", "services", "wiring", "settings"}),
    "client": frozenset({"core"}),
    "worker": frozenset({"core", "services", "wiring", "settings", "oci"}),
    "local": BELOW_LOCAL,
    "cli": None,
    "cli_aws": None,
    "cli_local": None,
    "cli_jobs": None,
    "demo": None,
}

Edges = dict[str, set[str]]


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``root/package``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(
    module: str, path: Path, node: ast.Import | ast.ImportFrom, modules: Mapping[str, Path]
) -> set[str]:
    """The modules an import names (``from pkg import sub``: ``pkg`` and, if it is a file, ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        name = ".".join([*base, *([node.module] if node.module else [])])
    else:
        name = node.module or ""
    # `from pkg import sub` reads pkg's namespace (its __init__, which may import the importer back) and sub.
    return {name} | ({f"{name}.{alias.name}" for alias in node.names} & modules.keys())


def import_edges(root: Path, package: str = PACKAGE) -> tuple[dict[str, Path], Edges]:
    """Every module of the package and the modules of the package it imports (anywhere in the file)."""
    modules = module_files(root, package)
    edges: Edges = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets |= _imported(module, path, node, modules)
        edges[module] = {t for t in targets if t == package or t.startswith(package + ".")} - {module}
    return modules, edges


def layer_of(module: str) -> str:
    """``chalicelib.aws.infra`` -> ``aws``, ``chalicelib.wiring`` -> ``wiring``, the package -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(
    modules: Mapping[str, Path],
    edges: Mapping[str, Iterable[str]],
    root: Path,
    rules: Mapping[str, frozenset[str] | None] = MAY_IMPORT,
) -> list[str]:
    """``file -> imported module (rule)`` for every import that points up or sideways."""
    found = []
    for module, targets in sorted(edges.items()):
        source = layer_of(module)
        file = modules[module].relative_to(root)
        if source not in rules:
            found.append(f"{file} -> (its layer {source!r} has no rule in MAY_IMPORT)")
            continue
        allowed = rules[source]
        if allowed is None:
            continue
        for target in sorted(targets):
            layer = layer_of(target)
            if layer in ("", source) or layer in allowed:
                continue
            may = ", ".join(sorted(allowed)) or "nothing but itself"
            found.append(f"{file} -> {target} ({source} may import {may}; not {layer})")
    return found


def import_cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (first module repeated at the end) per strongly connected group of modules (Tarjan)."""
    graph = {module: sorted(t for t in targets if t in edges) for module, targets in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(min(group), group, graph) for group in groups]


def _cycle_through(start: str, group: set[str], graph: Mapping[str, list[str]]) -> list[str]:
    """The shortest path from ``start`` back to itself inside its group (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in graph[node]:
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt in group and nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in a cycle without a path back to itself")  # Tarjan says otherwise


def size_violations(
    modules: Mapping[str, Path],
    root: Path,
    max_file: int = MAX_FILE_LINES,
    max_function: int = MAX_FUNCTION_LINES,
) -> list[str]:
    """Files over ``max_file`` lines and functions (methods, nested ones) over ``max_function``."""
    found = []
    for path in sorted(modules.values()):
        text = path.read_text()
        file = path.relative_to(root)
        lines = len(text.splitlines())
        if lines > max_file:
            found.append(f"{file}: {lines} lines (at most {max_file})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > max_function:
                    found.append(f"{file}:{node.lineno} {node.name}: {length} lines (at most {max_function})")
    return found


def _report(title: str, found: list[str]) -> str:
    return f"{title} ({len(found)}):\n  " + "\n  ".join(found)


@functools.cache
def _chalicelib() -> tuple[dict[str, Path], Edges]:
    return import_edges(ROOT)


def test_imports_point_down() -> None:
    modules, edges = _chalicelib()
    found = layer_violations(modules, edges, ROOT)
    assert not found, _report("imports against the layers of docs/architecture.md", found)


def test_no_import_cycles_between_files() -> None:
    modules, edges = _chalicelib()
    cycles = [" -> ".join(str(modules[m].relative_to(ROOT)) for m in cycle) for cycle in import_cycles(edges)]
    assert not cycles, _report("import cycles between files", cycles)


def test_rooms_of_a_size() -> None:
    modules, _ = _chalicelib()
    found = size_violations(modules, ROOT)
    assert not found, _report("files and functions over the size limits", found)


# The checkers themselves, on a tiny package written for each test.


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "__init__.py": "",
    "core/__init__.py": "",
    "core/model.py": "import json\n\nVALUE = 1\n",
    "core/errors.py": "from .model import VALUE\n",
    "runtime/__init__.py": "from ..core import errors\n",
    "runtime/handler.py": "def handle():\n    from pkg.core.model import VALUE\n    return VALUE\n",
    "services/__init__.py": "",
    "services/run.py": "from pkg.core import model\nfrom pkg.settings import Settings\n",
    "settings.py": "from pkg.core.model import VALUE as Settings\n",
    "cli.py": "import pkg.services.run\nfrom pkg.runtime import handler\n",
}
RULES: dict[str, frozenset[str] | None] = {
    "": frozenset(),  # the package itself
    "core": frozenset(),
    "runtime": frozenset({"core"}),
    "settings": frozenset({"core"}),
    "services": frozenset({"core", "settings"}),
    "cli": None,
    "cli_aws": None,
}


def test_a_clean_tree_passes_every_checker(tmp_path: Path) -> None:
    root = _tree(tmp_path, CLEAN)
    modules, edges = import_edges(root, "pkg")
    assert edges["pkg.core.errors"] == {"pkg.core.model"}
    assert edges["pkg.runtime"] == {"pkg.core", "pkg.core.errors"}
    assert edges["pkg.runtime.handler"] == {"pkg.core.model"}
    assert edges["pkg.cli"] == {"pkg.services.run", "pkg.runtime", "pkg.runtime.handler"}
    assert layer_violations(modules, edges, root, RULES) == []
    assert import_cycles(edges) == []
    assert size_violations(modules, root) == []


def test_each_checker_reports_what_breaks_its_rule(tmp_path: Path) -> None:
    long_function = "def long():\n" + "    x = 1\n" * 91
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            # core reaches up (inside a function), runtime imports services relatively, services <-> core loop
            "core/model.py": "def late():\n    from pkg import cli\n\n\nVALUE = 1\n",
            "runtime/handler.py": "from ..services import run\n",
            "core/errors.py": "from pkg.services.run import x\n" + "\n" * 800,
            "services/run.py": "from pkg.core import errors\n" + long_function,
            "plugins.py": "",
        },
    )
    modules, edges = import_edges(root, "pkg")
    assert layer_violations(modules, edges, root, RULES) == [
        "pkg/core/errors.py -> pkg.services.run (core may import nothing but itself; not services)",
        "pkg/core/model.py -> pkg.cli (core may import nothing but itself; not cli)",
        "pkg/plugins.py -> (its layer 'plugins' has no rule in MAY_IMPORT)",
        "pkg/runtime/handler.py -> pkg.services (runtime may import core; not services)",
        "pkg/runtime/handler.py -> pkg.services.run (runtime may import core; not services)",
    ]
    assert import_cycles(edges) == [["pkg.core.errors", "pkg.services.run", "pkg.core.errors"]]
    assert size_violations(modules, root) == [
        "pkg/core/errors.py: 801 lines (at most 800)",
        "pkg/services/run.py:2 long: 92 lines (at most 90)",
    ]
