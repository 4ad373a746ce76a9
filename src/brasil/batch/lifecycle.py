"""The lifecycles of a batch job and of one execution of it, as transition tables.

One module says what may happen in which state (as ``node/lifecycle.py`` does for sessions;
``brasil.lifecycle`` holds what moves along any table), so
the scheduler cannot, say, commit a job twice or revive a cancelled one: an event that is not in
the table raises, naming the state. The database stores the states these tables produce, and
every change of a stored state goes through :func:`move` (or :func:`move_each`,
:func:`move_where`): it looks up the states the event may happen in, puts them in the UPDATE's
WHERE and the state it leads to in its SET, so the scheduler's SQL can only move a row along an
edge drawn here. ``python -m brasil.batch.lifecycle`` writes docs/batch-lifecycles.md from the
tables; a test keeps the two equal.

Fencing, as procrastinate's ``UPDATE … WHERE id = … AND status = 'doing'`` does it: the row
count says whether the row was where the table allows the event. A report from a worker that
may be late (a thawed worker's ``start``, a ``journaled``) moves with ``required=False`` and
learns False: its execution moved on, and the report is refused (its work discarded). A move the
operation decided on a state it read in the same transaction cannot miss on SQLite (one writer at
a time); on PostgreSQL another scheduler sharing the database may have moved the row in between,
and the move raises :class:`Moved`: the transaction is rolled back and the store runs the
operation again, alone, on what is there now.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any, Protocol

from ..lifecycle import Table, mermaid, sources, step, target

# A job: waiting → ready → running → exiting → done, plus failed and cancelled (SPEC.md §6).
JOB = {
    ("waiting", "deps_done"): "ready",
    ("waiting", "cancel"): "cancelled",       # by hand, or a dependency failed or was cancelled
    ("ready", "assign"): "running",
    ("ready", "cancel"): "cancelled",
    ("running", "assign"): "running",         # a redundant execution of a running isolated job
    ("running", "win"): "exiting",            # an isolated execution ended 0: it commits
    ("running", "succeed"): "done",           # an execution ended 0, nothing to commit
    ("running", "retry"): "ready",            # no execution left, retries or losses remain
    ("running", "fail"): "failed",            # retries spent and no execution left
    ("exiting", "fail"): "failed",            # its commit was refused (it would be again)
    ("running", "cancel"): "cancelled",
    ("exiting", "committed"): "done",
    ("exiting", "commit_lost"): "ready",      # the committer died before its journal was whole
    ("failed", "retry_request"): "ready",     # `brasil retry`: run it again, retries renewed
    ("cancelled", "restore"): "waiting",      # cancelled for a dependency now retried
}

# One execution of a job on one worker slot; its id is the fencing token.
EXECUTION = {
    ("assigned", "start"): "running",
    ("assigned", "kill"): "killed",
    ("assigned", "lose"): "lost",
    ("assigned", "fail"): "failed",           # could not even start (bad home, no isolation)
    ("running", "succeed"): "finished",       # non-isolated, exit 0: the job is done
    ("running", "win"): "committing",         # isolated, exit 0, first: told to commit
    ("running", "win_clean"): "committed",    # isolated, exit 0, first, and nothing changed
    ("running", "late"): "rolledback",        # isolated, exit 0, but another already won
    ("running", "fail"): "failed",            # non-zero exit
    ("running", "kill"): "killed",            # another execution won, or the job was cancelled
    ("running", "lose"): "lost",              # its lease expired: presumed dead
    ("committing", "journaled"): "applying",  # changes staged and journal whole: commit point
    ("committing", "lose"): "lost",           # died while staging: rolled back, job runs again
    ("committing", "fail"): "failed",         # staging failed (disk full, say)
    ("applying", "committed"): "committed",   # by the worker, or replayed by the scheduler
    ("applying", "fail"): "failed",           # applying failed (the job runs again), or refused
    ("applying", "lose"): "lost",             # rolled back by a scheduler that had not yet
                                              # seen its journal whole: the job runs again
}

# One execution as its worker runs it (batch/worker.py; the scheduler's view is EXECUTION). It
# ends here when its slot and scratch are free; its token stays until the scheduler answers
# its last report (``ok``, or ``discard``/``kill``, which roll it back).
_WORK = {
    ("received", "slot"): "starting",      # a slot is free: overlay, home fetched, spawn
    ("starting", "spawned"): "running",
    ("starting", "fail"): "exited",        # could not start: reported with status 127
    ("running", "exit"): "exited",         # ended, killed, timed out, or could not be watched
    ("exited", "commit"): "committing",    # isolated, exit 0, told to commit: staging
    ("committing", "journaled"): "journaled",  # staged, journal whole: reported, awaiting go
    ("journaled", "go"): "applying",
}
WORK = {**_WORK, **{(s, "end"): "ended"
                    for s in dict.fromkeys([s for s, _ in _WORK] + list(_WORK.values()))}}

JOB_STATES = ("waiting", "ready", "running", "exiting", "done", "failed", "cancelled")
TERMINAL = frozenset({"done", "failed", "cancelled"})
ACTIVE_EXECUTION = frozenset({"assigned", "running", "committing", "applying"})


def job_step(state: str, event: str, job: int | str) -> str:
    return step(JOB, state, event, f"job {job}")


def execution_step(state: str, event: str, token: int | str) -> str:
    return step(EXECUTION, state, event, f"execution {token}")


# ---- moving stored rows along the tables -----------------------------------------------------

TABLES: dict[str, Table] = {"jobs": JOB, "executions": EXECUTION}  # SQL table → its lifecycle
EventRow = tuple[float, str, Any, Any, Any, Any]  # (t, kind, job, execution, worker, detail)
CHUNK = 500  # ids per statement


class Cursor(Protocol):
    rowcount: int


class Tx(Protocol):
    """What moving rows needs of a transaction (``store.Tx``; the store imports this module
    for :class:`Moved`, so the tables do not import the store back)."""

    cur: Cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def insert(self, table: str, cols: Sequence[str], rows: Iterable[Sequence[Any]]) -> None: ...


class Moved(Exception):
    """A row the operation read in its transaction is no longer in a state the table allows the
    event in: another scheduler sharing the database moved it meanwhile. The store rolls the
    transaction back and runs the operation again, alone."""


def _from(rows: str, events: tuple[str, ...], only: Collection[str] | None) -> tuple[str, str]:
    """The SQL list of the states ``events`` may happen in (``only``: those of them the caller
    read; one it names that the table does not allow raises, naming the state) and the target."""
    table = TABLES[rows]
    allowed = sources(table, *events)
    states = allowed if only is None else frozenset(only)
    for s in sorted(states - allowed):  # the caller asked for an edge that is not drawn
        step(table, s, events[0], f"a row of {rows}")
        raise ValueError(f"{rows}: {' then '.join(events)} is not allowed from {s}")
    return ", ".join(f"'{s}'" for s in sorted(states)), target(table, *events)


_statements: dict[tuple[Any, ...], str] = {}


def _sql(rows: str, events: tuple[str, ...], only: Collection[str] | None, set_: str,
         where: str) -> str:
    """The UPDATE (made once per shape: the scheduler moves rows along the same edges all day,
    so the common case is one dictionary look-up)."""
    key = (rows, events, only, set_, where)
    sql = _statements.get(key)
    if sql is None:
        froms, to = _from(rows, events, only)
        sql = _statements[key] = (f"UPDATE {rows} SET state = '{to}'"
                                  f"{', ' + set_ if set_ else ''} WHERE {where} "
                                  f"AND state IN ({froms})")
    return sql


def _missed(moved: int, want: int, rows: str, events: tuple[str, ...], required: bool) -> bool:
    if required:
        raise Moved(f"{rows}: {' then '.join(events)}: {want - moved} of {want} row(s) were no "
                    "longer where the table allows it")
    return False


def _note(tx: Tx, note: EventRow | list[EventRow], log: list[EventRow] | None) -> None:
    notes = note if isinstance(note, list) else [note]
    if log is not None:
        log.extend(notes)
    else:
        tx.insert("events", ("t", "kind", "job", "execution", "worker", "detail"), notes)


def move(tx: Tx, rows: str, ids: int | Sequence[int], *events: str, set: str = "",
         params: Sequence[Any] = (), only: tuple[str, ...] | None = None, required: bool = True,
         note: EventRow | list[EventRow] | None = None, log: list[EventRow] | None = None) -> bool:
    """Move the rows ``ids`` of ``rows`` ("jobs" or "executions") along ``events`` (one, or
    several in turn: ``"start", "fail"`` for an execution whose start came with its end), setting
    ``set`` (SQL with ``?`` for ``params``) too, in one UPDATE (one per 500 ids). ``only``: the
    states the caller read (a subset of those the table allows) — the tightest fence. Returns
    whether every row moved; if not, ``required`` raises :class:`Moved`. ``note``: the event
    row(s) this move writes when it moves: added to ``log`` (the operation writes its rows in
    one insert) or, without it, inserted now."""
    if isinstance(ids, int):  # the common case, kept short: it runs a few times per job
        tx.execute(_sql(rows, events, only, set, "id = ?"), (*params, ids))
        moved, want = tx.cur.rowcount, 1
    else:
        if not ids:
            return True
        moved, want = 0, len(frozenset(ids))
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            tx.execute(_sql(rows, events, only, set, f"id IN ({', '.join('?' * len(chunk))})"),
                       (*params, *chunk))
            moved += tx.cur.rowcount
    if moved != want:
        return _missed(moved, want, rows, events, required)
    if note is not None:
        _note(tx, note, log)
    return True


def move_each(tx: Tx, rows: str, items: Sequence[Sequence[Any]], *events: str, set: str = "",
              only: tuple[str, ...] | None = None, required: bool = True) -> bool:
    """:func:`move` of one row per item, each with its own parameters: ``items`` are the
    parameters of ``set`` followed by the row's id (one executemany)."""
    if not items:
        return True
    tx.many(_sql(rows, events, only, set, "id = ?"), items)
    return tx.cur.rowcount == len(items) or _missed(tx.cur.rowcount, len(items), rows, events,
                                                    required)


def move_where(tx: Tx, rows: str, *events: str, where: str,
               each: Sequence[Sequence[Any]] = ((),), set: str = "") -> None:
    """Move every row of ``rows`` that ``where`` selects (for each parameter tuple of ``each``)
    and that is in a state ``events`` may happen in: a move of a set, not of rows read before,
    so there is no count to check."""
    if each:
        tx.many(_sql(rows, events, None, set, where), each)


def document() -> str:
    return "\n".join([
        "# Batch lifecycles",
        "",
        "Generated from the transition tables in `src/brasil/batch/lifecycle.py` by",
        "`python -m brasil.batch.lifecycle > docs/batch-lifecycles.md`; a test keeps the two equal.",
        "An event not drawn here is refused with an error naming the state. An execution's id is",
        "its fencing token: a report that names an execution no longer in an active state",
        "(assigned, running, committing, applying) is refused, and its changes discarded.",
        "",
        mermaid("A job", JOB),
        mermaid("An execution (one run of a job on one worker slot)", EXECUTION),
        "The same execution as its worker runs it (`batch/worker.py`): `end` frees its slot",
        "and scratch from any state (it was reported, rolled back, or answered `ok`); its token",
        "stays until the scheduler answers its last report.",
        "",
        mermaid("An execution on its worker", WORK),
    ])


if __name__ == "__main__":
    print(document(), end="")
