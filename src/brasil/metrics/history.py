"""A node's metric history at several resolutions, bounded, in SQLite (which survives a restart).

Round-robin as Ganglia's rrdtool is, in a maintained library instead of a file format of our
own: every observation is added into one bucket per resolution (5 s kept an hour, 1 min kept a
day, 1 h kept a month, by default), each bucket holding how many observations it has and their
sum, count, min and max, and buckets older than their resolution's keep are deleted. The size
is bounded by series × metrics × buckets (a few MB), whatever the uptime.

An observation is a :class:`Stat` of metrics/summary.py: a node's own sample is a Stat of one,
a subtree's summary a Stat of its nodes, so one table serves the node's series (``self``) and
its subtree's (``subtree``). A query asks for a range and a step; it is answered from the
finest resolution that still covers the range, at least that resolution's step, and never more
than ``MAX_POINTS`` points (an absurd step is an error that names a sensible one).

SQLite runs on a thread of its own (the daemon's loop never waits for a disk).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .summary import Stat

RESOLUTIONS = ((5, 3600), (60, 86400), (3600, 30 * 86400))  # (step s, kept s)
MAX_POINTS = 10_000
SERIES = ("self", "subtree")
PRUNE_EVERY = 100


class HistoryError(ValueError):
    """A query that cannot be answered as asked: the sentence says what to ask instead."""


@dataclass(frozen=True, slots=True)
class Point:
    t: int  # the start of the step, in seconds since the epoch
    mean: float  # per node
    total: float  # the series' sum (a subtree's, averaged over the step's observations)
    min: float
    max: float


class History:
    def __init__(self, path: str = ":memory:",
                 resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS) -> None:
        self.resolutions = resolutions
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS points (series TEXT, metric TEXT, res INTEGER, "
            "t INTEGER, k INTEGER, total REAL, cnt INTEGER, mn REAL, mx REAL, "
            "PRIMARY KEY (series, metric, res, t)) WITHOUT ROWID")
        self._writes = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Writing --------------------------------------------------------------------------------

    def record(self, t: float, series: str, stats: Mapping[str, Stat]) -> None:
        """Add one observation of every metric of ``series`` at time ``t``."""
        self.record_many(t, [(series, stats)])

    def record_many(self, t: float, observed: Iterable[tuple[str, Mapping[str, Stat]]]) -> None:
        """Add one observation of each ``(series, stats)`` at time ``t``, in one transaction: a
        beat records the node's series and its subtree's, and two commits (and two trips to the
        history's thread) were a seventh of an idle tree's CPU (tree idle, 73 daemons)."""
        rows = []
        for series, stats in observed:
            if series not in SERIES:
                raise HistoryError(f"series {series!r}: one of {', '.join(SERIES)}")
            rows += [(series, metric, res, int(t) - int(t) % res, 1, st.sum, st.count, st.min,
                      st.max) for metric, st in stats.items() if st.count
                     for res, _ in self.resolutions]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (series, metric, res, t) DO UPDATE SET k = k + excluded.k, "
                "total = total + excluded.total, cnt = cnt + excluded.cnt, "
                "mn = min(mn, excluded.mn), mx = max(mx, excluded.mx)", rows)
            self._writes += 1
            if self._writes % PRUNE_EVERY == 1:
                for res, keep in self.resolutions:
                    self._db.execute("DELETE FROM points WHERE res = ? AND t < ?",
                                     (res, int(t) - keep - res))
            self._db.execute("COMMIT")

    async def record_many_async(self, t: float,
                                observed: list[tuple[str, Mapping[str, Stat]]]) -> None:
        await asyncio.to_thread(self.record_many, t, observed)

    # Reading --------------------------------------------------------------------------------

    def plan(self, start: float, end: float, step: float, now: float | None = None
             ) -> tuple[int, int]:
        return plan(self.resolutions, start, end, step, now)

    def query(self, series: str, metric: str, start: float, end: float, step: float,
              now: float | None = None) -> list[Point]:
        res, step_i = self.plan(start, end, step, now)
        with self._lock:
            rows = self._db.execute(
                "SELECT (t / ?) * ?, sum(k), sum(total), sum(cnt), min(mn), max(mx) FROM points "
                "WHERE series = ? AND metric = ? AND res = ? AND t >= ? AND t <= ? "
                "GROUP BY t / ? ORDER BY 1",
                (step_i, step_i, series, metric, res, int(start) - int(start) % res, int(end),
                 step_i)).fetchall()
        return [Point(int(t), total / cnt if cnt else 0.0, total / k if k else 0.0, mn, mx)
                for t, k, total, cnt, mn, mx in rows]

    async def query_async(self, series: str, metric: str, start: float, end: float,
                          step: float) -> list[Point]:
        return await asyncio.to_thread(self.query, series, metric, start, end, step)

    def metrics(self, series: str = "self") -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT metric FROM points WHERE series = ? ORDER BY 1", (series,))]

    def rows(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM points").fetchone()[0])


def plan(resolutions: tuple[tuple[int, int], ...], start: float, end: float, step: float,
         now: float | None = None) -> tuple[int, int]:
    """(resolution, step) for a query: the finest resolution whose keep covers ``start``;
    the step at least that resolution, rounded to a multiple of it. A module function, so that
    a group read plans once, at the node asked, the steps every node below answers for."""
    now = time.time() if now is None else now
    if not (end > start) or step <= 0:
        raise HistoryError("a range needs start < end and a step > 0 (seconds)")
    for res, keep in resolutions:
        if start >= now - keep - res:
            break
    else:
        res = resolutions[-1][0]
    step_i = max(res, int(step) - int(step) % res)
    points = (end - start) / step_i
    if points > MAX_POINTS:
        least = int((end - start) / MAX_POINTS) + 1
        raise HistoryError(f"{int(points)} points asked (the limit is {MAX_POINTS}): ask for "
                           f"a step of at least {least - least % res + res} s")
    return res, step_i


def absolute(start: float, end: float, now: float | None = None) -> tuple[float, float]:
    """A range's ends as times: a time at or below 0 counts back from now (-3600, 0: the last
    hour), a positive one is seconds since the epoch."""
    now = time.time() if now is None else now
    return (now + start if start <= 0 else start), (now + end if end <= 0 else end)


def observations(sample: Mapping[str, float], node: str) -> dict[str, Stat]:
    """A node's own sample as the Stats the history stores."""
    out: dict[str, Stat] = {}
    for k, v in sample.items():
        out[k] = st = Stat()
        st.add(v, node)
    return out


def merged(stats: Iterable[Mapping[str, Stat]]) -> dict[str, Stat]:
    out: dict[str, Stat] = {}
    for one in stats:
        for k, st in one.items():
            out.setdefault(k, Stat()).merge(st)
    return out
