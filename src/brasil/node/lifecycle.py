"""Lifecycles as transition tables: one place that says what may happen in which state.

An event not in the table raises :class:`NinepError` naming the state and the allowed events, so
``exec`` on a closed session, say, fails the ctl write with a sentence instead of corrupting state.
``python -m brasil.node.lifecycle`` prints the tables as Graphviz for the docs.
"""

from __future__ import annotations

from ..ninep.errors import NinepError

# Session: new → reserved → running ⇄ done; closed from anywhere.
SESSION = {
    ("new", "reserve"): "reserved",
    ("new", "close"): "closed",
    ("reserved", "exec"): "running",
    ("reserved", "close"): "closed",
    ("running", "finish"): "done",
    ("running", "close"): "closed",
    ("done", "exec"): "running",
    ("done", "close"): "closed",
}

# One slot of a session (a leaf sub-session).
SLOT = {
    ("idle", "start"): "running",
    ("idle", "fail"): "failed",
    ("idle", "release"): "released",
    ("running", "exit"): "exited",
    ("running", "killed"): "killed",
    ("running", "fail"): "failed",
    ("running", "release"): "released",
    ("exited", "start"): "running",
    ("exited", "release"): "released",
    ("killed", "start"): "running",
    ("killed", "release"): "released",
    ("failed", "start"): "running",
    ("failed", "release"): "released",
}


def step(table: dict[tuple[str, str], str], state: str, event: str, what: str) -> str:
    nxt = table.get((state, event))
    if nxt is None:
        allowed = sorted(e for (s, e) in table if s == state)
        raise NinepError(f"{what} is {state}: cannot {event} now"
                         + (f" (possible: {', '.join(allowed)})" if allowed else ""))
    return nxt


def dot(name: str, table: dict[tuple[str, str], str]) -> str:
    lines = [f"digraph {name} {{", "  rankdir=LR;"]
    lines += [f'  "{s}" -> "{t}" [label="{e}"];' for (s, e), t in table.items()]
    return "\n".join(lines + ["}"])


if __name__ == "__main__":
    print(dot("session", SESSION))
    print(dot("slot", SLOT))
