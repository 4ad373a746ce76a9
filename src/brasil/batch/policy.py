"""Job selection: which work a worker with free slots gets. Pluggable: one class, one method.

The scheduler calls :meth:`Policy.select` inside the claim transaction, so whatever it returns is
claimed atomically (no other worker can be given the same ready job). A policy returns two lists
of job rows ``(id, cmd, home, env, isolate, time_limit)``: ready jobs to start, and running jobs
to execute once more, redundantly. The scheduler checks nothing further about the second list except that
the jobs are isolated (only isolated executions can run side by side) — bounding redundancy is
the policy's business, as is never putting two executions of a job on one worker, nor (given
``avoid``: the workers of the claiming worker's availability domain, a rack say) in one domain.

:class:`TrellisPolicy` is the thesis's (§3.3.1), with its first proposed bound: ready jobs first
(higher priority, then earlier submission); when none is left, running isolated jobs in the same
order, each while it has fewer executions than its ``redundancy`` (default 2; 1 turns it off)
and retries left. A job that failed waits out its retry delay (``not_before``), and goes to
another worker than the one it last failed on when one has a free slot (``failed_on``).
Write another by subclassing and passing it to :class:`~brasil.batch.scheduler.Scheduler`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .store import Tx

Row = tuple[Any, ...]


class Policy:
    """The interface. ``worker``: its name; ``n``: its free slots (≥ 1); ``prefix``: when not
    None, only jobs whose home starts with it may be chosen (a remote worker sees only the
    scheduler's exported tree); ``avoid``: the workers (``worker`` among them) a redundant
    execution must not share with one already running, those of its domain."""

    name = "policy"

    def select(self, tx: Tx, worker: str, n: int, prefix: str | None, *, now: float,
               fallback: bool = True, avoid: Sequence[str] = ()) -> tuple[list[Row], list[Row]]:
        """``now``: a ready job waiting out a retry delay (``not_before``) is not chosen before
        then. ``fallback``: a job whose last execution failed on this worker is chosen only
        after every other ready job (False: not at all — another worker should have it)."""
        raise NotImplementedError


class TrellisPolicy(Policy):
    name = "trellis"

    def select(self, tx: Tx, worker: str, n: int, prefix: str | None, *, now: float,
               fallback: bool = True, avoid: Sequence[str] = ()) -> tuple[list[Row], list[Row]]:
        where, args = "", []
        if prefix is not None:
            where = " AND substr(home, 1, ?) = ?"
            args = [len(prefix), prefix]
        ready_sql = ("SELECT id, cmd, home, env, isolate, time_limit FROM jobs WHERE state = "
                     "'ready' AND (not_before IS NULL OR not_before <= ?)" + where)
        ready = tx.all(ready_sql + " AND (failed_on IS NULL OR failed_on <> ?) ORDER BY priority "
                       "DESC, id LIMIT ?" + tx.skip_locked(), (now, *args, worker, n))
        if len(ready) < n and fallback:  # what failed here last, when there is nothing else
            ready += tx.all(ready_sql + " AND failed_on = ? ORDER BY priority DESC, id LIMIT ?"
                            + tx.skip_locked(), (now, *args, worker, n - len(ready)))
        if len(ready) == n:
            return ready, []
        others = list(avoid) or [worker]
        again = tx.all(
            "SELECT id, cmd, home, env, isolate, time_limit FROM jobs j WHERE state = 'running' "
            "AND isolate = 1"
            " AND active < redundancy AND retries >= 0 AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.job = j.id"
            f" AND e.worker IN ({', '.join('?' * len(others))})"
            " AND e.state IN ('assigned', 'running', 'committing'))" + where
            + " ORDER BY priority DESC, id LIMIT ?" + tx.skip_locked(),
            (*others, *args, n - len(ready)))
        return ready, again


class NoRedundancyPolicy(TrellisPolicy):
    """Ready jobs only: what a plain batch queue does (for comparisons)."""

    name = "plain"

    def select(self, tx: Tx, worker: str, n: int, prefix: str | None, *, now: float,
               fallback: bool = True, avoid: Sequence[str] = ()) -> tuple[list[Row], list[Row]]:
        return super().select(tx, worker, n, prefix, now=now, fallback=fallback,
                              avoid=avoid)[0], []


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (TrellisPolicy, NoRedundancyPolicy)}
