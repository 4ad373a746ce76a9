"""Transition tables: one place that says what may happen in which state, for any lifecycle.

A table maps ``(state, event)`` to the next state. :func:`step` moves one value along it (a
session's, in memory); :func:`sources` and :func:`target` answer what a conditional UPDATE needs
to move a stored row along it (``batch/lifecycle.py``: the from-states go in its WHERE, the
target in its SET); :func:`mermaid` draws it for the docs. The tables themselves stay with what
they describe (``node/lifecycle.py``, ``batch/lifecycle.py``); this module is below both, so
neither imports the other for it. It imports only ``ninep`` (for the error a refused event
raises: a ctl write fails with its sentence).
"""

from __future__ import annotations

from collections.abc import Mapping

from .ninep.errors import NinepError

Table = Mapping[tuple[str, str], str]


def step(table: Table, state: str, event: str, what: str) -> str:
    """The state ``event`` leads to from ``state``; an event not in the table raises
    :class:`NinepError` naming ``what``, its state and the events possible now."""
    nxt = table.get((state, event))
    if nxt is None:
        allowed = sorted(e for (s, e) in table if s == state)
        raise NinepError(f"{what} is {state}: cannot {event} now"
                         + (f" (possible: {', '.join(allowed)})" if allowed else ""))
    return nxt


_walks: dict[tuple[int, tuple[str, ...]], dict[str, str]] = {}


def _walk(table: Table, events: tuple[str, ...]) -> dict[str, str]:
    """Every state from which ``events`` may happen in turn → the state they lead to (cached:
    the tables are module constants, asked the same questions on every state change)."""
    key = (id(table), events)
    got = _walks.get(key)
    if got is None:
        got = {}
        for first in {s for s, _ in table}:
            state: str | None = first
            for e in events:
                state = table.get((state, e)) if state is not None else None
            if state is not None:
                got[first] = state
        if not got:
            raise ValueError(f"no state allows {' then '.join(events)}")
        _walks[key] = got
    return got


def sources(table: Table, *events: str) -> frozenset[str]:
    """The states from which ``events`` may happen, one after the other."""
    return frozenset(_walk(table, events))


def target(table: Table, *events: str) -> str:
    """The one state ``events`` lead to, from whichever state allows them (a table where they
    could lead to two is refused: a stored row's move must not depend on which it was in)."""
    ends = set(_walk(table, events).values())
    if len(ends) != 1:
        raise ValueError(f"{' then '.join(events)} leads to {' or '.join(sorted(ends))}")
    return ends.pop()


def mermaid(title: str, table: Table) -> str:
    """A state diagram of ``table`` (GitHub renders mermaid), for the docs."""
    first = next(iter(table))[0]
    lines = [f"### {title}", "", "```mermaid", "stateDiagram-v2", f"    [*] --> {first}"]
    lines += [f"    {s} --> {t}: {e}" for (s, e), t in table.items()]
    return "\n".join(lines + ["```", ""])
