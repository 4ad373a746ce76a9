"""A group of ranks on this node, acted on together: their merged stacks, signals, stop and
continue, a breakpoint and a variable on every one, "all stopped".

This is what one node contributes to a session's group files; what the node's children
contributed is merged with it by the same functions (:meth:`Report.merge`), so the answer a
parent sends up is one report whatever the number of ranks below it. A rank whose process
exits while it is looked at is listed as gone; an unwinder's failure on one rank is that
rank's error; neither fails the rest.

Unwinding costs CPU (eu-stack reads the binary's symbols), so at most ``UNWINDERS`` run at
once on a node; gdb sessions are long-lived and held per rank in :class:`Debuggers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal as signals
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ClusterShell.NodeSet import NodeSet
from ClusterShell.RangeSet import RangeSet

from .debugger import Debugger
from .pydebug import MAX_EXPR, PyDebug, check_where, python_where
from .stacks import ProcessGone, StackError, capture, is_cpython
from .stacktree import MAX_WIRE, TraceTree, ranks_text

UNWINDERS = max(2, os.cpu_count() or 2)
MAX_ERRORS = 64  # reasons a report tells apart; the rest are one class, "other errors"


@dataclass(frozen=True, slots=True)
class Rank:
    rank: int
    pid: int
    node: str


@dataclass(slots=True)
class Report:
    """What a group operation found: the merged stacks or values, the ranks gone, the ranks
    that failed (one class per reason, as values are), all mergeable."""

    tree: TraceTree = field(default_factory=TraceTree)
    values: dict[str, tuple[RangeSet, NodeSet]] = field(default_factory=dict)
    gone: RangeSet = field(default_factory=RangeSet)
    errors: dict[str, tuple[RangeSet, NodeSet]] = field(default_factory=dict)  # why → who

    def error(self, why: str, rank: int | None, node: str) -> None:
        """``rank`` None: a node's failure (lost), not one rank's."""
        if why not in self.errors and len(self.errors) >= MAX_ERRORS:
            why = "other errors"
        ranks, nodes = self.errors.setdefault(why, (RangeSet(), NodeSet()))
        if rank is not None:
            ranks.add(rank)
        nodes.update(node)

    def value(self, text: str, rank: int, node: str) -> None:
        ranks, nodes = self.values.setdefault(text, (RangeSet(), NodeSet()))
        ranks.add(rank)
        nodes.update(node)

    def merge(self, other: Report) -> Report:
        self.tree.merge(other.tree)
        for mine, theirs in ((self.values, other.values), (self.errors, other.errors)):
            for text, (ranks, nodes) in theirs.items():
                got = mine.setdefault(text, (RangeSet(), NodeSet()))
                got[0].update(ranks)
                got[1].update(nodes)
        self.gone.update(other.gone)
        return self

    def dumps(self) -> bytes:
        return json.dumps({
            "tree": self.tree.to_json(), "values": _classes_out(self.values),
            "gone": str(self.gone), "errors": _classes_out(self.errors),
        }, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> Report:
        if len(raw) > MAX_WIRE:
            raise ValueError(f"a report of {len(raw)} bytes (the limit is {MAX_WIRE})")
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("a process group report must be a JSON object")
        try:
            return cls(TraceTree.from_json(d.get("tree", {"f": "", "r": ""})),
                       _classes_in(d.get("values")), _ranks(d.get("gone") or ""),
                       _classes_in(d.get("errors")))
        except (TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"a malformed process group report: {e}") from None
        except ValueError:
            raise
        except Exception as e:  # ClusterShell's parse errors share no base with ValueError
            raise ValueError(f"bad rank or node set in a report: {e}") from None

    @staticmethod
    def _class_lines(classes: dict[str, tuple[RangeSet, NodeSet]],
                     show: Callable[[str, str], str]) -> list[str]:
        out = []
        for text, (ranks, nodes) in sorted(classes.items(), key=lambda v: (-len(v[1][0]), v[0])):
            who = ranks_text(ranks) if len(ranks) else "node"
            where = f" on {nodes}" if len(nodes) else ""
            out.append(show(text, f"{who}{where}"))
        return out

    def value_lines(self, name: str) -> list[str]:
        """``x = 42  [ranks 0-62 (63) on n[1-8]]``: the classes of values, largest first."""
        return self._class_lines(self.values, lambda text, who: f"{name} = {text}  [{who}]")

    def trailer(self) -> list[str]:
        """The lines that say what is missing from the picture, and why: one per reason."""
        out = []
        if len(self.gone):
            out.append(f"gone: {ranks_text(self.gone)} exited while being looked at")
        return out + self._class_lines(self.errors, lambda text, who: f"error: {who}: {text}")


def _classes_out(classes: dict[str, tuple[RangeSet, NodeSet]]) -> dict[str, list[str]]:
    return {t: [str(r), str(n)] for t, (r, n) in classes.items()}


def _classes_in(d: Any) -> dict[str, tuple[RangeSet, NodeSet]]:
    return {str(t): (_ranks(v[0]), NodeSet(v[1])) for t, v in (d or {}).items()}


def _ranks(text: str) -> RangeSet:
    return RangeSet(text) if text else RangeSet()


async def _each(ranks: Iterable[Rank], act: Callable[[Rank], Awaitable[None]],
                report: Report, limit: int) -> None:
    """``act`` on every rank, ``limit`` at a time; a gone process or a failure is the rank's."""
    gate = asyncio.Semaphore(limit)

    async def one(r: Rank) -> None:
        async with gate:
            try:
                await act(r)
            except ProcessGone:
                report.gone.add(r.rank)
            except StackError as e:  # one class per reason: the pid is each rank's own
                report.error(str(e).replace(f"process {r.pid}", "its process"), r.rank, r.node)
    await asyncio.gather(*(one(r) for r in ranks))


async def stacks(ranks: Iterable[Rank], debuggers: Debuggers | None = None,
                 lines: bool = False) -> Report:
    """Every rank's stacks merged. A rank held by our debugger is read through it (no second
    tracer can attach)."""
    report = Report()

    async def one(r: Rank) -> None:
        held = debuggers.get(r.rank) if debuggers else None
        if held is None:
            threads = await capture(r.pid, lines=lines)
        elif held.stopped:
            threads = await _held_threads(r, held)
        else:  # held and running: no second tracer may attach; a moment's stop instead
            await held.stop()
            try:
                threads = await _held_threads(r, held)
            finally:
                await held.cont()
        for t in threads:
            report.tree.add(r.rank, r.node, [f.label(lines) for f in t.frames])
    await _each(ranks, one, report, UNWINDERS)
    return report


async def _held_threads(r: Rank, held: Debugger) -> list[Any]:
    """A held rank's stacks: a CPython rank's Python frames (py-spy reads the stopped
    process's memory), a native one's from its gdb."""
    if is_cpython(r.pid):
        return await capture(r.pid, python=True, held=True)
    return await held.threads()


def send_signal(ranks: Iterable[Rank], sig: int) -> Report:
    report = Report()
    for r in ranks:
        try:
            os.kill(r.pid, sig)
        except ProcessLookupError:
            report.gone.add(r.rank)
    return report


def check_request(op: str, arg: str) -> None:
    """A break or eval that could never work is refused before any rank is attached or
    stopped (nothing half-done): ValueError with what to write instead."""
    if op == "break":
        if arg.startswith("py:"):
            try:
                check_where(arg[3:])
            except StackError as e:
                raise ValueError(str(e)) from None
        elif not arg or any(c.isspace() for c in arg) or arg.startswith("-"):
            raise ValueError(f"break: {arg[:80]!r} is not a function or FILE:LINE (py:WHERE for "
                             "Python)")
    elif op == "eval":
        expr = arg.removeprefix("py:").removeprefix("c:")
        if not expr.strip() or len(expr.encode()) > MAX_EXPR:
            raise ValueError(f"eval: give an expression of 1 to {MAX_EXPR} bytes")


def parse_signal(text: str) -> int:
    """``TERM``, ``SIGTERM``, ``15``: a signal; anything else a ValueError that lists some."""
    word = text.strip().upper()
    if word.isdigit() and 0 < int(word) < signals.NSIG:
        return int(word)
    try:
        return int(signals.Signals[word if word.startswith("SIG") else "SIG" + word])
    except KeyError:
        raise ValueError(f"{text.strip()[:40]!r} is not a signal (e.g. TERM, KILL, STOP, CONT, USR1 or "
                         "a number)") from None


class Debuggers:
    """One gdb per rank of a group, made on the first verb that needs one, ended on detach."""

    def __init__(self) -> None:
        self.held: dict[int, Debugger] = {}
        self.python: dict[int, PyDebug] = {}  # the Python agent of a rank, once it has one

    def get(self, rank: int) -> Debugger | None:
        d = self.held.get(rank)
        if d is not None and d.proc is None:  # let go when its process died
            del self.held[rank]
            self.python.pop(rank, None)
            return None
        return d

    def _python(self, r: Rank, d: Debugger) -> PyDebug:
        py = self.python.get(r.rank)
        if py is None or py.d is not d:
            if not is_cpython(r.pid):
                raise StackError("its process is not CPython: no Python breakpoint or value "
                                 "there (C ones: drop the py: prefix)")
            py = self.python[r.rank] = PyDebug(d)
        return py

    async def _attach(self, r: Rank) -> Debugger:
        d = self.get(r.rank)
        if d is None:
            d = Debugger(r.pid)
            await d.attach()
            self.held[r.rank] = d
        return d

    async def stop(self, ranks: Iterable[Rank]) -> Report:
        report = Report()

        async def one(r: Rank) -> None:
            await (await self._attach(r)).stop()
        await _each(ranks, one, report, len(self.held) + 64)
        return report

    async def cont(self, ranks: Iterable[Rank]) -> Report:
        report = Report()

        async def one(r: Rank) -> None:
            await (await self._attach(r)).cont()
        await _each(ranks, one, report, 64)
        return report

    async def break_at(self, ranks: Iterable[Rank], where: str) -> Report:
        report = Report()

        async def one(r: Rank) -> None:
            d = await self._attach(r)
            await d.stop()
            py = python_where(where, r.rank in self.python or is_cpython(r.pid))
            if py is None:
                await d.break_at(where)
            else:
                await self._python(r, d).break_at(py)
        await _each(ranks, one, report, 64)
        return report

    async def wait_stopped(self, ranks: Iterable[Rank], within: float) -> Report:
        """Until every rank is stopped; the ones still running at the deadline are errors."""
        report = Report()

        async def one(r: Rank) -> None:
            d = self.held.get(r.rank)
            if d is None:
                raise StackError("not under the debugger (write stop or break first)")
            if not await d.wait_stopped(within):
                raise StackError(f"still running after {within:g}s")
            report.value(d.stopped_at or d.reason or "stopped", r.rank, r.node)
        await _each(ranks, one, report, 1 << 16)
        return report

    async def evaluate(self, ranks: Iterable[Rank], expr: str) -> Report:
        report = Report()

        async def one(r: Rank) -> None:
            d = self.held.get(r.rank)
            if d is None:
                raise StackError("not under the debugger (write stop or break first)")
            if expr.startswith("c:") or not (expr.startswith("py:") or d.at_python_break):
                report.value(await d.evaluate(expr.removeprefix("c:")), r.rank, r.node)
            else:
                report.value(await self._python(r, d).evaluate(expr.removeprefix("py:")),
                             r.rank, r.node)
        await _each(ranks, one, report, 64)
        return report

    async def detach(self, ranks: Iterable[Rank] | None = None) -> None:
        """Each rank let go, its Python breakpoints cleared first (a trace function left in
        the program would slow it for nothing)."""
        which = [r.rank for r in ranks] if ranks is not None else list(self.held)

        async def one(rank: int) -> None:
            d, py = self.held.pop(rank, None), self.python.pop(rank, None)
            if py is not None and d is not None and d.proc is not None:
                with contextlib.suppress(StackError):
                    await py.clear()
            if d is not None:
                await d.close()
        await asyncio.gather(*(one(r) for r in which))

    def stopped_ranks(self) -> RangeSet:
        return RangeSet.fromlist([str(r) for r, d in self.held.items() if d.stopped]) \
            if self.held else RangeSet()
