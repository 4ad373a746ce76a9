"""Rank sets as users write them (``4-7``, ``0,2,8-13``): tested by membership, never expanded.

An elastic session (``release RANKS``, ``exec @RANKS CMD``) is handed rank sets by clients; a
set is kept as the intervals its text names, so ``0-999999999`` costs two numbers, and asking
which of a session's ranks it holds costs one bisection per rank the session has. :func:`fold`
is the inverse, for what ``status`` and messages show.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Iterable

from ..ninep.ctl import excerpt
from ..ninep.errors import NinepError

MAX_PARTS = 1024  # comma-separated parts of one rank set
MAX_DIGITS = 18  # digits of one rank


class Ranks:
    """A set of ranks as sorted disjoint intervals."""

    def __init__(self, intervals: Iterable[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(intervals):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self.los = [lo for lo, _ in merged]
        self.his = [hi for _, hi in merged]

    def __contains__(self, rank: int) -> bool:
        i = bisect.bisect_right(self.los, rank) - 1
        return i >= 0 and rank <= self.his[i]

    def __str__(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in zip(self.los, self.his))


def parse(text: str, what: str) -> Ranks:
    """``4-7``, ``0,2,8-13``: a refusal names ``what`` (the verb) and shows the form."""
    usage = f"{what}: give ranks as N, N-M or a comma-separated list of those (0,2,8-13)"
    parts = text.split(",")
    if len(parts) > MAX_PARTS:
        raise NinepError(f"{usage}; at most {MAX_PARTS} parts", errno.EINVAL)
    intervals = []
    for part in parts:
        lo, dash, hi = part.partition("-")
        if not _number(lo) or (dash and not _number(hi)):
            raise NinepError(f'{usage}; "{excerpt(part)}" is not one', errno.EINVAL)
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a:
            raise NinepError(f"{usage}; {a}-{b} runs backwards", errno.EINVAL)
        intervals.append((a, b))
    return Ranks(intervals)


def _number(s: str) -> bool:
    return s.isascii() and s.isdigit() and len(s) <= MAX_DIGITS


def fold(ranks: Iterable[int]) -> str:
    """``0-1,8-13`` for 0, 1, 8…13 (any order); ``-`` for none."""
    out: list[str] = []
    run: list[int] = []
    for r in sorted(ranks):
        if run and r == run[1] + 1:
            run[1] = r
            continue
        if run:
            out.append(str(run[0]) if run[0] == run[1] else f"{run[0]}-{run[1]}")
        run = [r, r]
    if run:
        out.append(str(run[0]) if run[0] == run[1] else f"{run[0]}-{run[1]}")
    return ",".join(out) or "-"
