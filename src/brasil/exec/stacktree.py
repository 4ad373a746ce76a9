"""STAT's merged call prefix tree: every rank's stacks in one tree, each frame labelled by the
ranks (and nodes) that passed through it.

Ranks whose stacks follow the same path are one equivalence class: a hung job of thousands of
ranks reads as a handful of classes, and the odd rank stands out on a line of its own. Merging
is associative and commutative (a union of rank sets, frame by frame), so every level of the
tree merges what its children sent and sends one tree up: the root receives one tree per child,
whatever the number of ranks below (the 2D trace-space tree of the STAT paper). Merging samples
taken over time into one tree (3D, trace-space-time) tells the ranks that make progress, whose
paths change between samples, from the ranks that are stuck on one path.

The wire form is JSON: ``{"f": FRAME, "r": RANKS, "n": NODES, "c": [CHILD…]}`` with rank and node
sets folded (``0-12,14-63``, ``n[1-8].[1-8]``): its size grows with the number of distinct
paths, not with the number of ranks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ClusterShell.NodeSet import NodeSet
from ClusterShell.RangeSet import RangeSet

MAX_DEPTH = 512  # frames kept from the outermost: a runaway recursion is cut, not followed
MAX_WIRE = 64 << 20  # a merged tree read from a child


def ranks_text(ranks: RangeSet) -> str:
    """``ranks 0-12,14-63 (63)``, ``rank 5 (1)``."""
    return f"{'rank' if len(ranks) == 1 else 'ranks'} {ranks} ({len(ranks)})"


@dataclass(slots=True)
class TraceNode:
    frame: str
    ranks: RangeSet = field(default_factory=RangeSet)
    nodes: NodeSet = field(default_factory=NodeSet)
    children: dict[str, TraceNode] = field(default_factory=dict)

    def child(self, frame: str) -> TraceNode:
        got = self.children.get(frame)
        if got is None:
            got = self.children[frame] = TraceNode(frame)
        return got


class TraceTree:
    """A merged prefix tree; the root is a frame of its own ("all") that every rank passes."""

    def __init__(self) -> None:
        self.root = TraceNode("")

    def add(self, rank: int, node: str, frames: Iterable[str]) -> None:
        """One thread's stack of ``rank`` (on ``node``), outermost frame first."""
        here = self.root
        self._mark(here, rank, node)
        for depth, frame in enumerate(frames):
            if depth >= MAX_DEPTH:
                break
            here = here.child(frame)
            self._mark(here, rank, node)

    @staticmethod
    def _mark(at: TraceNode, rank: int, node: str) -> None:
        at.ranks.add(rank)
        if node:
            at.nodes.update(node)

    def merge(self, other: TraceTree) -> TraceTree:
        """This tree with ``other``'s ranks added, frame by frame (in place; returns self)."""
        def walk(mine: TraceNode, theirs: TraceNode) -> None:
            mine.ranks.update(theirs.ranks)
            mine.nodes.update(theirs.nodes)
            for frame, sub in theirs.children.items():
                walk(mine.child(frame), sub)
        walk(self.root, other.root)
        return self

    @property
    def ranks(self) -> RangeSet:
        return self.root.ranks

    def classes(self) -> list[tuple[tuple[str, ...], RangeSet, NodeSet]]:
        """The equivalence classes: each path that ends (a stack's innermost frame) with the
        ranks and nodes whose stack ended there, largest class first. A rank whose threads
        stand in different places is in one class per place."""
        out: list[tuple[tuple[str, ...], RangeSet, NodeSet]] = []

        def walk(at: TraceNode, path: tuple[str, ...]) -> None:
            ended = at.ranks.copy()
            for sub in at.children.values():
                walk(sub, (*path, sub.frame))
                ended.difference_update(sub.ranks)
            if len(ended) and path:
                nodes = at.nodes if ended == at.ranks else NodeSet()
                out.append((path, ended, nodes))
        walk(self.root, ())
        out.sort(key=lambda c: (-len(c[1]), c[0]))
        return out

    # The wire form -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        def enc(at: TraceNode) -> dict[str, Any]:
            d: dict[str, Any] = {"f": at.frame, "r": str(at.ranks)}
            if len(at.nodes):
                d["n"] = str(at.nodes)
            if at.children:
                d["c"] = [enc(c) for c in at.children.values()]
            return d
        return enc(self.root)

    @classmethod
    def from_json(cls, data: Any) -> TraceTree:
        """A tree as a child sent it; anything else is a ValueError that says what was wrong."""
        tree = cls()

        def dec(d: Any, depth: int) -> TraceNode:
            if not isinstance(d, dict) or not isinstance(d.get("f"), str) \
                    or not isinstance(d.get("r"), str):
                raise ValueError("a trace tree node must be {\"f\": FRAME, \"r\": RANKS, …}")
            if depth > MAX_DEPTH + 1:
                raise ValueError(f"a trace tree deeper than {MAX_DEPTH} frames")
            try:
                at = TraceNode(d["f"], RangeSet(d["r"]) if d["r"] else RangeSet(),
                               NodeSet(d.get("n", "")))
            except Exception as e:  # ClusterShell's parse errors have no common base
                raise ValueError(f"bad rank or node set in a trace tree: {e}") from None
            for c in d.get("c", []):
                sub = dec(c, depth + 1)
                if sub.frame in at.children:
                    TraceTree._merge_into(at.children[sub.frame], sub)
                else:
                    at.children[sub.frame] = sub
            return at
        tree.root = dec(data, 0)
        return tree

    @staticmethod
    def _merge_into(mine: TraceNode, theirs: TraceNode) -> None:
        mine.ranks.update(theirs.ranks)
        mine.nodes.update(theirs.nodes)
        for frame, sub in theirs.children.items():
            TraceTree._merge_into(mine.child(frame), sub)

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> TraceTree:
        if len(raw) > MAX_WIRE:
            raise ValueError(f"a trace tree of {len(raw)} bytes (the limit is {MAX_WIRE})")
        return cls.from_json(json.loads(raw))

    # Pictures ------------------------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        """One frame a line, drawn as a tree, each with its rank set and node set folded."""
        def label(at: TraceNode) -> str:
            where = f" on {at.nodes}" if len(at.nodes) else ""
            return f"  [{ranks_text(at.ranks)}{where}]"

        def walk(at: TraceNode, prefix: str, last: bool, top: bool) -> Iterator[str]:
            branch = "" if top else ("└─ " if last else "├─ ")
            yield f"{prefix}{branch}{at.frame}{label(at)}"
            kids = sorted(at.children.values(), key=lambda c: (-len(c.ranks), c.frame))
            inner = prefix + ("" if top else ("   " if last else "│  "))
            for i, sub in enumerate(kids):
                yield from walk(sub, inner, i == len(kids) - 1, False)
        kids = sorted(self.root.children.values(), key=lambda c: (-len(c.ranks), c.frame))
        for sub in kids:
            yield from walk(sub, "", True, True)

    def dot(self) -> str:
        """Graphviz, STAT's picture: edges labelled by their ranks, the odd classes in red."""
        out = ["digraph stacks {", '  node [shape=box, fontname="monospace"];']
        total = len(self.root.ranks)
        n = 0

        def q(s: str) -> str:
            return json.dumps(s)

        def walk(at: TraceNode, parent: int | None) -> None:
            nonlocal n
            me, n = n, n + 1
            colour = "" if len(at.ranks) * 2 > total else ", color=red, fontcolor=red"
            out.append(f"  n{me} [label={q(at.frame or 'all')}{colour}];")
            if parent is not None:
                out.append(f"  n{parent} -> n{me} [label={q(ranks_text(at.ranks))}{colour}];")
            for sub in sorted(at.children.values(), key=lambda c: (-len(c.ranks), c.frame)):
                walk(sub, me)
        walk(self.root, None)
        out.append("}")
        return "\n".join(out) + "\n"


def progress(samples: list[TraceTree]) -> tuple[RangeSet, RangeSet]:
    """STAT's 3D question over samples taken in turn: (stuck, moving). A rank is stuck when its
    stacks ended on the same set of paths in every sample, moving when they changed."""
    seen: dict[int, set[frozenset[tuple[str, ...]]]] = {}
    for tree in samples:
        ends: dict[int, set[tuple[str, ...]]] = {}
        for path, ranks, _ in tree.classes():
            for r in ranks:
                ends.setdefault(int(r), set()).add(path)
        for r, paths in ends.items():
            seen.setdefault(r, set()).add(frozenset(paths))
    stuck, moving = RangeSet(), RangeSet()
    for r, kinds in seen.items():
        (stuck if len(kinds) == 1 else moving).add(r)
    return stuck, moving
