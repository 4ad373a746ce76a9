"""The package layering and the absence of import circles, read from the source (no imports run).

A package imports only the layers below it (ARCHITECTURE.md):
ninep < lifecycle.py, allocator.py < client < exec < node < tree, batch, push, mount < group < web < cli, demo.py
< sim,
and ``ninep/`` imports nothing of ours. Every import counts: those under ``if TYPE_CHECKING:``
and those inside a function too, since a function-local import is a dependency all the same
(it only hides the dependency from the reader). Inside a package, the modules import each other
without a circle: a circle means neither module can be read, tested or changed without the other.
"""

from __future__ import annotations

import ast
import pathlib

import brasil

ROOT = pathlib.Path(brasil.__file__).parent

# Each top-level package (or module) of brasil, and its rank: it may import only lower ranks.
# Packages of one rank are siblings and do not import each other.
LAYERS = {
    "ninep": 0,
    "lifecycle": 1, "allocator": 1,
    "client": 2,  # the client side of sessions and group reads: below what delegates sessions
    "exec": 3, "metrics": 3,
    "node": 4,
    "tree": 5, "batch": 5, "push": 5, "mount": 5,
    "group": 6,
    "web": 7,  # the dashboard: 9P reads of the tree, batch's report, metrics' names; below cli
    "cli": 8, "demo": 8,
    "sim": 9,  # the simulator: every daemon composed as cli/compose does; nothing imports it
}

# Circles inside a package that the redesign (issue 18) is removing, each on its own branch;
# the lead empties this list once they are merged. Nothing may be added to it.
KNOWN_CIRCLES: list[frozenset[str]] = [
]


def modules() -> dict[str, pathlib.Path]:
    """Every module of brasil by its name below ``brasil`` ("" for brasil itself, "batch" for
    batch/__init__.py, "batch.ops" for batch/ops.py)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(mods: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """Which of our modules each module imports, anywhere in its text."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(ours(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    absolute = ours(node.module or "")
                    if absolute is None:
                        continue
                    module = absolute
                found.add(module)  # `from . import x` reads the package's namespace too
                for a in node.names:  # and x is a module of its own when there is one
                    sub = f"{module}.{a.name}" if module else a.name
                    if sub in mods:
                        found.add(sub)
        resolved = {resolve(m, mods) for m in found}
        graph[name] = {m for m in resolved if m is not None} - {name}
    return graph


def ours(absolute: str) -> str | None:
    """``brasil.x.y`` as ``x.y`` (``""`` for brasil itself); None for anyone else's module."""
    if absolute == "brasil":
        return ""
    return absolute.removeprefix("brasil.") if absolute.startswith("brasil.") else None


def resolve(name: str, mods: dict[str, pathlib.Path]) -> str | None:
    """The module an imported name lives in (``x.y.Name`` → ``x.y``); None for a namespace
    package (a directory without __init__.py: no code to depend on)."""
    while name not in mods and name:
        if (ROOT / name.replace(".", "/")).is_dir():
            return None
        name = name.rpartition(".")[0]
    return name


def top(name: str) -> str:
    return name.partition(".")[0]


def circles(mods: dict[str, pathlib.Path], graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The import circles inside packages: the strongly connected components (Tarjan's) of more
    than one module, over the imports between modules of one package."""
    def package(m: str) -> str:
        return m if m in packages else m.rpartition(".")[0]
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    inside = {a: {b for b in bs if package(b) == package(a) or b == package(a)}
              for a, bs in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(inside[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(inside):
        if v not in index:
            visit(v)
    return out


MODS = modules()
GRAPH = imports(MODS)


def test_every_package_has_a_layer() -> None:
    unplaced = sorted({top(m) for m in MODS if m} - set(LAYERS))
    assert not unplaced, f"put {unplaced} in LAYERS (tests/test_layers.py) and ARCHITECTURE.md"


def test_no_package_imports_a_layer_above_it_or_beside_it() -> None:
    wrong = sorted(f"{a} imports {b} ({top(a)} is layer {LAYERS[top(a)]}, {top(b)} is "
                   f"{LAYERS[top(b)]})"
                   for a, bs in GRAPH.items() if a for b in bs
                   if b and top(a) != top(b) and LAYERS[top(b)] >= LAYERS[top(a)])
    assert not wrong, "\n".join(wrong)


def test_ninep_imports_nothing_of_ours() -> None:
    wrong = sorted(f"{a} imports {b or 'brasil'}" for a, bs in GRAPH.items()
                   if top(a) == "ninep" for b in bs if top(b) != "ninep")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle_inside_a_package_but_the_known_ones() -> None:
    new = [sorted(c) for c in circles(MODS, GRAPH) if not any(c <= k for k in KNOWN_CIRCLES)]
    assert not new, f"import circles inside a package: {new}"


def test_the_known_circles_are_still_there_as_listed() -> None:
    """So that the allowlist shrinks as the circles go: an entry that is gone, or smaller, must
    be removed or narrowed."""
    now = set(circles(MODS, GRAPH))
    stale = [sorted(k) for k in KNOWN_CIRCLES if k not in now]
    assert not stale, f"no longer circles as listed in KNOWN_CIRCLES: {stale}"


def test_the_reader_sees_every_kind_of_import() -> None:
    """The graph reader itself, on imports written every way (relative, absolute, `from .`,
    a name from a module, function-local, under TYPE_CHECKING)."""
    assert "ninep.client" in GRAPH["cli.options"]          # from ..ninep.client import Client
    assert "cli.batch" in GRAPH["cli.main"]                # from . import batch (in a function)
    assert "" in GRAPH["cli.main"]                         # from .. import __version__
    assert "ninep.client" in GRAPH["ninep.auth"]           # under TYPE_CHECKING
    assert "batch.demo" in GRAPH["demo"]                   # function-local
