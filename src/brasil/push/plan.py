"""From a parsed pipeline to what runs: segments, their copies, and the edges between them.

Commands joined by plain pipes inside the same fan-out region run as one /bin/sh pipeline per
copy (a *segment*): the kernel moves those bytes, nobody else touches them. Between segments
the edges are PUSH's operators, and every one of them is the same shape: some source copies, some
destination copies, and a way to deal records between them:

- ``|<[n]`` (*balance*): each copy of the upstream feeds its own group of n downstream copies,
  each block of whole records going to whichever copy has room;
- ``>|`` (*merge*): the copies of a group are merged back into the one copy they came from, on
  record boundaries, as they arrive;
- ``|#[m]|`` (*hash*): every copy of a group sends each record to the copy of the next group
  chosen by the hash of its key, so equal keys meet.

Fan-outs nest like parentheses: the region between ``|<`` and its ``>|`` is instantiated once
per upstream copy, so copies multiply. A region left open at the end merges into push's output.
Because they multiply, the copies in all are counted stage by stage, and refused past
``MAX_COPIES``, before any edge's routes (as many as the copies) are made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..exec.records import NEWLINE, Key, Splitter, parse_rs
from .syntax import MAX_COPIES, Link, Pipeline


class PlanError(Exception):
    pass


@dataclass
class Segment:
    index: int
    stages: list[str]  # commands joined by plain pipes
    instances: int  # independent instances of its region
    per: int  # copies in each instance
    first: int = 0  # the number of its first command in the pipeline (from 0)

    @property
    def copies(self) -> int:
        return self.instances * self.per

    @property
    def text(self) -> str:
        return " | ".join(self.stages)


@dataclass
class Route:
    """One instance of an edge: these source copies feed these destination copies."""

    sources: list[int]
    dests: list[int]


@dataclass
class Edge:
    mode: str  # "balance", "merge" or "hash"
    upstream: int  # segment indexes
    downstream: int
    rs: Splitter
    key: Key | None
    routes: list[Route]
    keep: bool = False
    symbol: str = ""


@dataclass
class Plan:
    segments: list[Segment]
    edges: list[Edge]  # edges[i] joins segments i and i+1
    out_rs: Splitter = NEWLINE  # how the last segment's copies merge into our output
    env: dict[str, str] = field(default_factory=dict)

    @property
    def last(self) -> Segment:
        return self.segments[-1]

    def describe(self, where: dict[int, list[str]] | None = None) -> str:
        """The plan as `push --explain` prints it."""
        lines = []
        for seg in self.segments:
            copies = f"{seg.copies} cop{'y' if seg.copies == 1 else 'ies'}"
            if seg.instances > 1:
                copies += f" ({seg.instances} instances of {seg.per})"
            n = f"{seg.first + 1}" if len(seg.stages) == 1 else \
                f"{seg.first + 1}-{seg.first + len(seg.stages)}"
            lines.append(f"stage {n}: {seg.text}")
            lines.append(f"    {copies}" + (f", on {', '.join(where[seg.index])}"
                                              if where and seg.index in where else ""))
            if seg.index < len(self.edges):
                e = self.edges[seg.index]
                how = {"balance": "fan-out: each block of records to whichever copy has room",
                       "merge": "fan-in: merged on record boundaries as they arrive",
                       "hash": f"hash pipe: each record to the copy its key ({e.key}) hashes to"
                       }[e.mode]
                keep = ", input order kept" if e.keep else ""
                lines.append(f"  {e.symbol} {how}; records: {e.rs}{keep}")
        if self.last.copies > 1:
            lines.append(f"  output: the {self.last.copies} copies merged on record boundaries; "
                         f"records: {self.out_rs}")
        return "\n".join(lines)


def record_module(spec: str | None, what: str) -> Splitter:
    if spec is None:
        return NEWLINE
    try:
        return parse_rs(spec.split(None, 1) if " " in spec.strip() else [spec.strip()],
                        user_modules=True)
    except ValueError as e:
        raise PlanError(f"{what}: {e}") from None


def make_plan(p: Pipeline, variables: dict[str, str], default_copies: int | None = None) -> Plan:
    """``variables``: PUSH's variables in effect (IRS, ORS, KEY), the pipeline's own
    assignments taking precedence. ``default_copies``: copies for a |< or |#| that names none."""
    var = {**variables, **p.assign}
    ors = var.get("ORS") or var.get("IRS")
    irs = var.get("IRS") or var.get("ORS")
    n_default = default_copies or os.cpu_count() or 1
    segments = [Segment(0, [p.stages[0].text], 1, 1)]
    edges: list[Edge] = []
    stack: list[tuple[int, int, Link]] = []
    total = 1  # copies in all so far: checked before each edge's routes are made
    for first, (link, stage) in enumerate(zip(p.links, p.stages[1:]), 1):
        up = segments[-1]
        if link.kind == "pipe":
            up.stages.append(stage.text)
            continue
        rs = record_module(link.rs or (ors if link.kind == "fanin" else irs),
                           f"records for {link.symbol}")
        key = None
        if link.kind == "fanout":
            stack.append((up.instances, up.per, link))
            down = Segment(len(segments), [stage.text], up.copies, link.copies or n_default, first)
            mode = "balance"
        elif link.kind == "fanin":
            instances, per, opened = stack.pop()
            down = Segment(len(segments), [stage.text], instances, per, first)
            mode = "merge"
            if link.keep or opened.keep:
                _check_keep(edges, segments, opened)
                edges[-1].keep = link.keep = True
        else:
            m = link.copies or (up.per if up.per > 1 else n_default)
            try:
                key = Key(link.key or var.get("KEY") or "1")
            except ValueError as e:
                raise PlanError(f"key for |#|: {e}") from None
            down = Segment(len(segments), [stage.text], up.instances, m, first)
            mode = "hash"
        total += down.copies
        if total > MAX_COPIES:
            raise PlanError(f"this pipeline would run more than {MAX_COPIES} copies in all "
                            f"(stage {first + 1}, {stage.text}, alone has {down.copies}): each "
                            f"|< multiplies the copies of what it encloses (default: {n_default} "
                            f"each); give fewer with |<[n] and |#[n]|, or nest fewer fan-outs")
        edges.append(Edge(mode, up.index, down.index, rs, key, _routes(mode, up, down),
                          symbol=link.symbol))
        segments.append(down)
        if link.kind == "fanin" and link.keep:
            edges[-1].keep = True
    for _, _, opened in stack:
        if opened.keep:
            raise PlanError("keep needs a '>|' closing its '|<': the order is restored there")
    out_rs = record_module(ors, "records for the output")
    env = {k: v for k, v in var.items()}
    return Plan(segments, edges, out_rs, env)


def _routes(mode: str, up: Segment, down: Segment) -> list[Route]:
    """Which copies feed which across one edge; as many routes and indexes as there are copies
    on its two sides, so make_plan checks the copies in all before it calls this."""
    if mode == "balance":  # each upstream copy to its own group of down.per
        n = down.per
        return [Route([c], list(range(c * n, (c + 1) * n))) for c in range(up.copies)]
    if mode == "merge":  # each group of up.per back into the one copy it came from
        return [Route(list(range(k * up.per, (k + 1) * up.per)), [k])
                for k in range(down.copies)]
    m = down.per  # hash: each instance's copies, all to all
    return [Route(list(range(k * up.per, (k + 1) * up.per)), list(range(k * m, (k + 1) * m)))
            for k in range(up.instances)]


def _check_keep(edges: list[Edge], segments: list[Segment], opened: Link) -> None:
    """Order is kept by running the region once per block (as GNU parallel --pipe -k does), so
    the region must be one plain segment between its |< and >|."""
    if not edges or edges[-1].mode != "balance" or edges[-1].symbol != "|<":
        raise PlanError("keep needs a plain pipeline between '|<' and '>|' (no |< or |#| "
                        "inside): input order is restored by running it once per block")
