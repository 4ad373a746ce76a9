"""A subtree's metrics in one record: count, sum, min and max per metric (mean = sum / count).

Each node adds its own sample to its children's summaries and sends one summary up: the same
associative merge at every level, so the root receives one summary per child per interval
whatever the number of nodes below (the group reads' reduction, applied to numbers). Where the
extremes are matters to a person ("which node is full?"), so min and max carry the node that
holds them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_WIRE = 1 << 20  # a summary from a child: a few KiB in practice
MAX_METRICS = 256


def num(x: float) -> str:
    """A value in the metrics' text forms, which the tree parses again at each level: a whole
    number in all its digits (six significant ones lost a terabyte counter's last six), others
    to twelve."""
    if x.is_integer() and abs(x) < 2 ** 53:
        return str(int(x))
    return f"{x:.12g}"


@dataclass(slots=True)
class Stat:
    count: int = 0
    sum: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    min_node: str = ""
    max_node: str = ""

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def add(self, value: float, node: str) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min, self.min_node = value, node
        if value > self.max:
            self.max, self.max_node = value, node

    def merge(self, other: Stat) -> None:
        self.count += other.count
        self.sum += other.sum
        if other.min < self.min:
            self.min, self.min_node = other.min, other.min_node
        if other.max > self.max:
            self.max, self.max_node = other.max, other.max_node


@dataclass(slots=True)
class Summary:
    """A subtree's metrics; ``nodes`` is how many nodes it covers."""

    nodes: int = 0
    stats: dict[str, Stat] = field(default_factory=dict)

    @classmethod
    def of(cls, node: str, sample: Mapping[str, float]) -> Summary:
        s = cls(1)
        for k, v in sample.items():
            if math.isfinite(v):
                s.stats.setdefault(k, Stat()).add(v, node)
        return s

    def merge(self, other: Summary) -> Summary:
        self.nodes += other.nodes
        for k, st in other.stats.items():
            if k in self.stats or len(self.stats) < MAX_METRICS:
                self.stats.setdefault(k, Stat()).merge(st)
        return self

    @classmethod
    def of_all(cls, parts: Iterable[Summary]) -> Summary:
        out = cls()
        for p in parts:
            out.merge(p)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "stats": {
            k: [st.count, st.sum, st.min, st.max, st.min_node, st.max_node]
            for k, st in self.stats.items() if st.count}}

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> Summary:
        """A child's summary; anything malformed is a ValueError that says so."""
        if len(raw) > MAX_WIRE:
            raise ValueError(f"a metrics summary of {len(raw)} bytes (the limit is {MAX_WIRE})")
        d = json.loads(raw)
        try:
            out = cls(int(d["nodes"]))
            for k, v in list(d["stats"].items())[:MAX_METRICS]:
                count, total, lo, hi, lo_node, hi_node = v
                out.stats[str(k)[:64]] = Stat(int(count), float(total), float(lo), float(hi),
                                              str(lo_node)[:256], str(hi_node)[:256])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"a malformed metrics summary: {e}") from None
        return out

    def lines(self) -> list[str]:
        """``METRIC count sum mean min (NODE) max (NODE)``: the file's text form."""
        out = []
        for k in sorted(self.stats):
            st = self.stats[k]
            out.append(f"{k} {st.count} {num(st.sum)} {num(st.mean)} {num(st.min)} {st.min_node} "
                       f"{num(st.max)} {st.max_node}")
        return out
