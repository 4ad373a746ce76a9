"""node/ has no import circle, type-only imports included: session and leaf name what they use of
Node through node/host.py's Protocols instead of importing daemon back (issue 18 §3)."""

from __future__ import annotations

import ast
from pathlib import Path

import brasil.node

NODE = Path(brasil.node.__file__).parent


def imports() -> dict[str, set[str]]:
    """Each module of node/ → the modules of node/ it imports, wherever the import is."""
    graph: dict[str, set[str]] = {}
    for f in NODE.glob("*.py"):
        deps = set()
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level == 1:
                deps |= {n.module.split(".")[0]} if n.module else {a.name for a in n.names}
        graph[f.stem] = deps
    return graph


def test_no_import_circle_in_node() -> None:
    graph = imports()

    def circle(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            here, path = stack.pop()
            for nxt in graph.get(here, ()):
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    circles = [c for m in sorted(graph) if (c := circle(m))]
    assert not circles, " ; ".join(" → ".join(c) for c in circles)


def test_session_and_leaf_do_not_import_daemon() -> None:
    graph = imports()
    for m in ("host", "scope", "session", "leaf", "session_files"):
        assert "daemon" not in graph[m], m
    assert not (NODE / "launch.py").exists()  # folded into leaf.py
