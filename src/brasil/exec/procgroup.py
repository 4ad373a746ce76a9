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
import json
import os
import signal as signals
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ClusterShell.NodeSet import NodeSet
from ClusterShell.RangeSet import RangeSet

from .debugger import Debugger
from .stacks import ProcessGone, StackError, capture
from .stacktree import MAX_WIRE, TraceTree, ranks_text

UNWINDERS = max(2, os.cpu_count() or 2)
MAX_ERRORS = 64  # error lines a report carries; the rest are counted


@dataclass(frozen=True, slots=True)
class Rank:
    rank: int
    pid: int
    node: str


@dataclass(slots=True)
class Report:
    """What a group operation found: the merged stacks or values, the ranks gone, the ranks
    that failed (with why), all mergeable."""

    tree: TraceTree = field(default_factory=TraceTree)
    values: dict[str, tuple[RangeSet, NodeSet]] = field(default_factory=dict)
    gone: RangeSet = field(default_factory=RangeSet)
    errors: dict[str, str] = field(default_factory=dict)  # rank (or node, when lost) → why
    more_errors: int = 0

    def error(self, who: str, why: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors[who] = why
        else:
            self.more_errors += 1

    def value(self, text: str, rank: int, node: str) -> None:
        ranks, nodes = self.values.setdefault(text, (RangeSet(), NodeSet()))
        ranks.add(rank)
        nodes.update(node)

    def merge(self, other: Report) -> Report:
        self.tree.merge(other.tree)
        for text, (ranks, nodes) in other.values.items():
            mine = self.values.setdefault(text, (RangeSet(), NodeSet()))
            mine[0].update(ranks)
            mine[1].update(nodes)
        self.gone.update(other.gone)
        for who, why in other.errors.items():
            self.error(who, why)
        self.more_errors += other.more_errors
        return self

    def dumps(self) -> bytes:
        return json.dumps({
            "tree": self.tree.to_json(),
            "values": {t: [str(r), str(n)] for t, (r, n) in self.values.items()},
            "gone": str(self.gone), "errors": self.errors, "more_errors": self.more_errors,
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
                       {str(t): (RangeSet(v[0]) if v[0] else RangeSet(), NodeSet(v[1]))
                        for t, v in (d.get("values") or {}).items()},
                       RangeSet(d["gone"]) if d.get("gone") else RangeSet(),
                       {str(k): str(v) for k, v in (d.get("errors") or {}).items()},
                       int(d.get("more_errors") or 0))
        except (TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"a malformed process group report: {e}") from None
        except Exception as e:  # ClusterShell's parse errors share no base with ValueError
            if isinstance(e, ValueError):
                raise
            raise ValueError(f"bad rank or node set in a report: {e}") from None

    def value_lines(self, name: str) -> list[str]:
        """``x = 42 on ranks 0-62 (63); x = 7 on rank 63 (1) (n5.3)``: the classes of values,
        largest first, the nodes named for the small ones."""
        out = []
        for text, (ranks, nodes) in sorted(self.values.items(), key=lambda v: -len(v[1][0])):
            where = f" on {nodes}" if len(nodes) else ""
            out.append(f"{name} = {text}  [{ranks_text(ranks)}{where}]")
        return out

    def trailer(self) -> list[str]:
        """The lines that say what is missing from the picture, and why."""
        out = []
        if len(self.gone):
            out.append(f"gone: {ranks_text(self.gone)} exited while being looked at")
        out += [f"error: {who}: {why}" for who, why in sorted(self.errors.items())]
        if self.more_errors:
            out.append(f"error: {self.more_errors} more")
        return out


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
            except StackError as e:
                report.error(f"rank {r.rank} ({r.node})", str(e))
    await asyncio.gather(*(one(r) for r in ranks))


async def stacks(ranks: Iterable[Rank], debuggers: Debuggers | None = None,
                 lines: bool = False) -> Report:
    """Every rank's stacks merged. A rank held by our debugger is read through it (no second
    tracer can attach)."""
    report = Report()

    async def one(r: Rank) -> None:
        held = debuggers.get(r.rank) if debuggers else None
        threads = await (held.threads() if held is not None else capture(r.pid))
        for t in threads:
            report.tree.add(r.rank, r.node, [f.label(lines) for f in t.frames])
    await _each(ranks, one, report, UNWINDERS)
    return report


def send_signal(ranks: Iterable[Rank], sig: int) -> Report:
    report = Report()
    for r in ranks:
        try:
            os.kill(r.pid, sig)
        except ProcessLookupError:
            report.gone.add(r.rank)
    return report


def parse_signal(text: str) -> int:
    """``TERM``, ``SIGTERM``, ``15``: a signal; anything else a ValueError that lists some."""
    word = text.strip().upper()
    if word.isdigit() and 0 < int(word) < signals.NSIG:
        return int(word)
    try:
        return int(signals.Signals[word if word.startswith("SIG") else "SIG" + word])
    except KeyError:
        raise ValueError(f"{text.strip()!r} is not a signal (e.g. TERM, KILL, STOP, CONT, USR1 or "
                         "a number)") from None


class Debuggers:
    """One gdb per rank of a group, made on the first verb that needs one, ended on detach."""

    def __init__(self) -> None:
        self.held: dict[int, Debugger] = {}

    def get(self, rank: int) -> Debugger | None:
        return self.held.get(rank)

    async def _attach(self, r: Rank) -> Debugger:
        d = self.held.get(r.rank)
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
            await d.break_at(where)
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
            report.value(await d.evaluate(expr), r.rank, r.node)
        await _each(ranks, one, report, 64)
        return report

    async def detach(self, ranks: Iterable[Rank] | None = None) -> None:
        which = [r.rank for r in ranks] if ranks is not None else list(self.held)
        await asyncio.gather(*(d.close() for d in
                               (self.held.pop(r, None) for r in which) if d is not None))

    def stopped_ranks(self) -> RangeSet:
        return RangeSet.fromlist([str(r) for r, d in self.held.items() if d.stopped]) \
            if self.held else RangeSet()


def describe(report: Report) -> dict[str, Any]:
    """For a status line: how many ranks the report covers, gone and failed."""
    return {"ranks": len(report.tree.ranks), "gone": len(report.gone),
            "errors": len(report.errors) + report.more_errors}
