"""The scheduler's transactions: each function here runs inside one database transaction.

Every state change goes through ``lifecycle.move`` (or ``move_each``, ``move_where``): one
conditional UPDATE whose WHERE names the states the transition table allows the event in (or the
one this operation read), whose row count is checked. So a report that arrives late — from a
thawed worker, say, after its execution was presumed lost — changes nothing: the row is no longer
in a state the update expects, and the caller is told to discard that execution's work. That check
is the fencing token at work: the token is the execution's id, current while its row is assigned,
running, committing or applying. A move this operation decided on a state it read just before
raises ``lifecycle.Moved`` if another scheduler moved the row meanwhile (PostgreSQL only): the
operation is run again.

Functions return the lines to push to workers (``(worker, line)``); the scheduler delivers them
after the transaction has committed, never before, so nothing is promised that a crash could undo.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .jobfile import MAX_RECORD, JobSpec
from .lifecycle import ACTIVE_EXECUTION, EventRow, move, move_each, move_where
from .messages import Run, encode_run, order
from .policy import Policy
from .store import Refused, Tx

Push = list[tuple[str, str]]
ACTIVE_SQL = "('assigned', 'running', 'committing', 'applying')"
Event = tuple[float, str, Any, Any, Any, Any]  # t, kind, job, execution, worker, detail


def event(tx: Tx, rows: list[Event]) -> None:
    tx.insert("events", ("t", "kind", "job", "execution", "worker", "detail"), rows)


# ---- submission ----------------------------------------------------------------------------------

NOT_ENDED_SQL = "('waiting', 'ready', 'running', 'exiting')"
INSERT_BATCH = 10_000  # rows built and inserted at a time: memory stays bounded


def submit(tx: Tx, specs: list[JobSpec], now: float,
           max_workload: int | None = None) -> tuple[int, int]:
    """Insert ``specs`` (already checked for syntax and cycles) as one block of ids; returns
    (first id, count). Jobs after a failed or cancelled job are cancelled at once, with the reason.
    ``max_workload``: how many jobs of one tag may be waiting, ready or running at once."""
    if max_workload is not None:
        check_workloads(tx, specs, max_workload)
    existing = sorted({d for s in specs for d in s.after_ids})
    known = dict(tx.in_chunks("SELECT id, state FROM jobs WHERE id IN ({ids})", existing)) \
        if existing else {}
    for s in specs:
        for d in s.after_ids:
            if d not in known:
                raise Refused(f"{s.where}: after {d}: there is no job {d} "
                              "(brasil jobs lists them)")
    first = tx.next_ids("job", len(specs))
    order = topological(specs)
    state: list[str] = [""] * len(specs)
    left = [0] * len(specs)
    reason: list[str | None] = [None] * len(specs)
    for i in order:
        s = specs[i]
        for d in s.after_ids:
            if known[d] in ("failed", "cancelled"):
                reason[i] = reason[i] or f"dependency {d} {known[d]}"
            elif known[d] != "done":
                left[i] += 1
        for d in s.deps:
            if state[d] == "cancelled":
                reason[i] = reason[i] or f"dependency {first + d} cancelled"
            left[i] += 1
        state[i] = "cancelled" if reason[i] else ("waiting" if left[i] else "ready")
    envs: dict[int, tuple[dict[str, str], str]] = {}  # jobs share environments: encode once

    def env(s: JobSpec) -> str:
        got = envs.get(id(s.env))
        if got is None or got[0] is not s.env:
            got = envs[id(s.env)] = (s.env, json.dumps(s.env) if s.env else "{}")
        return got[1]
    for lo in range(0, len(specs), INSERT_BATCH):
        part = range(lo, min(lo + INSERT_BATCH, len(specs)))
        tx.insert("jobs", ("id", "name", "tag", "cmd", "home", "env", "isolate", "priority",
                           "retries", "redundancy", "state", "deps_left", "active", "submitted",
                           "finished", "reason", "time_limit"),
                  [(first + i, s.name, s.tag, s.cmd, s.home, env(s), int(s.isolate), s.priority,
                    s.retries, s.redundancy, state[i], left[i], 0, now,
                    now if reason[i] else None, reason[i], s.timeout)
                   for i in part for s in (specs[i],)])
        tx.insert("deps", ("job", "dep"),
                  [(first + i, d) for i in part for d in specs[i].after_ids]
                  + [(first + i, first + d) for i in part for d in specs[i].deps])
        event(tx, [(now, "submit", first + i, None, None, None) for i in part]
              + [(now, "cancel", first + i, None, None, reason[i]) for i in part if reason[i]])
    return first, len(specs)


def check_workloads(tx: Tx, specs: list[JobSpec], limit: int) -> None:
    """Refuse a submission that would leave more than ``limit`` jobs of one tag (one workload)
    waiting, ready or running: the database, the scheduler's queries and every listing grow
    with them."""
    adding: dict[str, int] = {}
    for s in specs:
        adding[s.tag] = adding.get(s.tag, 0) + 1
    have = dict(tx.in_chunks(f"SELECT tag, count(*) FROM jobs WHERE state IN {NOT_ENDED_SQL} "
                             "AND tag IN ({ids}) GROUP BY tag", sorted(adding)))
    for tag, n in sorted(adding.items()):
        if int(have.get(tag, 0)) + n > limit:
            raise Refused(f"tag {tag}: {have.get(tag, 0)} job(s) not ended yet and {n} more "
                          f"would pass the limit of {limit} per workload (brasil serve "
                          "--max-jobs-per-workload); wait for some to end (brasil wait), or "
                          "submit them under another tag")


def topological(specs: Sequence[JobSpec]) -> list[int]:
    """Indexes with every job after its dependencies (Kahn's algorithm; the input is acyclic)."""
    users: list[list[int]] = [[] for _ in specs]
    need = [len(s.deps) for s in specs]
    for i, s in enumerate(specs):
        for d in s.deps:
            users[d].append(i)
    out = [i for i, n in enumerate(need) if n == 0]
    for i in out:  # grows while we walk it
        for u in users[i]:
            need[u] -= 1
            if need[u] == 0:
                out.append(u)
    return out


# ---- claims --------------------------------------------------------------------------------------

def claim(tx: Tx, worker: str, slots: int, prefix: str | None, now: float,
          policy: Policy, fallback: bool = True, avoid: Sequence[str] = ()) -> Push:
    """Fill ``worker``'s free slots (``slots`` less its active executions, counted here, in the
    transaction, so that two claims in one batch never over-fill it) with what ``policy``
    selects; the jobs move to running and each execution gets its token. ``fallback``: also
    jobs whose last execution failed on this worker (otherwise left for another)."""
    n = slots - busy_slots(tx, worker, slots)
    if n <= 0:
        return []
    picked, redundant = policy.select(tx, worker, n, prefix, now=now, fallback=fallback,
                                      avoid=avoid)
    picked, redundant = _fitting(tx, picked, now), [r for r in redundant if not _too_big(r)]
    redundant = [r for r in redundant if r[4]][:max(n - len(picked), 0)]
    rows = picked + redundant
    if not rows:
        return []
    # ready → running, and running → running for a redundant execution: one UPDATE for both
    move(tx, "jobs", [r[0] for r in rows], "assign", set="active = active + 1")
    first = tx.next_ids("execution", len(rows))
    tx.insert("executions", ("id", "job", "worker", "state", "assigned"),
              [(first + k, r[0], worker, "assigned", now) for k, r in enumerate(rows)])
    event(tx, [(now, "assign", r[0], first + k, worker, "redundant" if k >= len(picked) else None)
               for k, r in enumerate(rows)])
    return [(worker, _record(first + k, r)) for k, r in enumerate(rows)]


def busy_slots(tx: Tx, worker: str, slots: int) -> int:
    """The slots of ``worker`` taken: its executions assigned or running, and its commits beyond
    one per slot. A commit runs no command (it moves files the command left), so a worker
    commits in the background while the slot runs the next job: the next assignment goes with
    the answer to ``done`` instead of three round trips later. One commit per slot at most is
    free: a worker whose commits lag (large outputs, a slow disk) holds its slots again."""
    running = committing = 0
    for state, n in tx.all(f"SELECT state, count(*) FROM executions WHERE worker = ? AND state "
                           f"IN {ACTIVE_SQL} GROUP BY state", (worker,)):
        if state in ("assigned", "running"):
            running += int(n)
        else:
            committing += int(n)
    return running + max(0, committing - slots)


def _record(token: int, r: Sequence[Any]) -> str:
    """The ``run`` line that gives a worker the job of row ``r`` as execution ``token``."""
    timeout = int(r[5]) if len(r) > 5 and r[5] else 0  # (a policy's rows may not carry one)
    return encode_run(Run(token, r[0], r[1], r[2], json.loads(r[3]), bool(r[4]), timeout))


def _too_big(r: Sequence[Any]) -> int:
    """The size of the row's assignment if it would not fit a worker's read, else 0."""
    if len(r[1]) + len(r[2]) + len(r[3]) < MAX_RECORD // 12:  # even if every one were escaped
        return 0
    n = len(_record(1 << 63, r).encode()) + 1
    return n if n > MAX_RECORD else 0


def _fitting(tx: Tx, rows: list[Any], now: float) -> list[Any]:
    """``rows`` less the jobs too large for a worker to read (submitted before submission
    checked their size): those are cancelled, with the reason, instead of wedging a worker."""
    big = [(r[0], n) for r in rows if (n := _too_big(r))]
    if not big:
        return rows
    reasons = {j: f"too large for a worker to read: its assignment is {n} bytes, the limit "
               f"{MAX_RECORD} (put a long command in a script)" for j, n in big}
    move_each(tx, "jobs", [(why, now, j) for j, why in reasons.items()], "cancel",
              set="reason = ?, finished = ?", only=("ready",))
    event(tx, [(now, "cancel", j, None, None, why) for j, why in reasons.items()])
    cancel_dependents(tx, list(reasons), now)
    return [r for r in rows if r[0] not in reasons]


# ---- reports from workers ------------------------------------------------------------------------

def started(tx: Tx, worker: str, rows: list[tuple[int, int, float]]) -> Push:
    """``start T SLOT TIME`` lines; a token no longer current is told to stop (its start is
    still recorded: see :func:`late_start`)."""
    push: Push = []
    for token, slot, t in rows:
        if move(tx, "executions", token, "start", set="started = ?, slot = ?", params=(t, slot),
                required=False):
            job = tx.one("SELECT job FROM executions WHERE id = ?", (token,))
            event(tx, [(t, "start", job[0] if job else None, token, worker, str(slot))])
        else:
            late_start(tx, worker, token, slot, t)
            push.append((worker, order("kill", token)))
    return push


def late_start(tx: Tx, worker: str, token: int, slot: int | None, t: float) -> None:
    """A worker holds a start back until its next write, so an execution killed (beaten,
    cancelled) or lost meanwhile is reported started only after it ended. It did run: record
    its start (once), so the report counts its wasted work and the Gantt chart shows it."""
    tx.execute("UPDATE executions SET started = ?, slot = COALESCE(?, slot) WHERE id = ? AND "
               "started IS NULL AND state IN ('killed', 'lost', 'failed', 'rolledback')",
               (t, slot, token))
    if tx.cur.rowcount == 1:
        job = tx.one("SELECT job FROM executions WHERE id = ?", (token,))
        event(tx, [(t, "start", job[0] if job else None, token, worker,
                    None if slot is None else str(slot))])


def _execution(tx: Tx, token: int) -> tuple[Any, ...] | None:
    return tx.one("SELECT e.state, e.job, j.state, j.isolate, j.retries, j.active, e.worker, "
                  "e.started FROM executions e JOIN jobs j ON j.id = e.job WHERE e.id = ?", (token,))


RETRY_DELAY = 1.0  # seconds a job waits before its first retry; doubled at each failure
RETRY_DELAY_CAP = 60.0  # ... up to this


def retry_delay(tx: Tx, job: int) -> float:
    """How long a job that just failed waits before it is ready again: 1 s × 2^k after its
    k-th earlier failure, at most a minute — a job failing for a passing reason (a full disk, a
    service restarting) is not run again at once, over and over."""
    row = tx.one("SELECT failures FROM jobs WHERE id = ?", (job,))
    k = min(int(row[0]) if row else 0, 16)
    return min(RETRY_DELAY * (1 << k), RETRY_DELAY_CAP)


def finished(tx: Tx, worker: str, token: int, status: int, t0: float, t1: float, now: float,
             why: str, clean: bool = False, remote: bool = False,
             backoffs: list[float] | None = None) -> tuple[Push, list[int]]:
    """An execution ended with ``status`` (``clean``: isolated, and it changed nothing). Returns
    what to tell workers and the jobs now done. ``remote``: the worker ran on a staged copy of
    the home, so even a non-isolated job's changes come back through a commit. ``backoffs``:
    gets the delay of a job made ready again after a wait (the scheduler wakes up for it)."""
    row = _execution(tx, token)
    if row is None or row[0] not in ("assigned", "running"):
        if row is not None and row[7] is None:  # its start came with this end: keep it
            late_start(tx, worker, token, None, t0)
        return repeat(tx, worker, token, row, now, f"late finish (exit {status})"), []
    estate, job, jstate, isolate, retries, active = row[:6]
    begun = ("start",) if estate == "assigned" else ()  # its start came with its end
    ended = "started = COALESCE(started, ?), ended = ?, status = ?"
    times = (t0, t1, status)
    rows: list[Event] = [(t1, "finish", job, token, worker,
                          f"{status} notify={max(now - t1, 0):.6f}")]
    if estate == "assigned":
        rows.insert(0, (t0, "start", job, token, worker, None))
    push: Push = []
    done: list[int] = []
    if status == 0 and jstate == "running" and (isolate or remote):
        if clean:  # nothing to commit: done at once
            move(tx, "executions", token, *begun, "win_clean", set=ended, params=times,
                 only=(estate,))
            move(tx, "jobs", job, "succeed", set="finished = ?, exit_status = 0, winner = ?, "
                 "active = 0", params=(now, token), only=(jstate,))
            rows += [(t1, "commit_start", job, token, worker, None),
                     (t1, "commit", job, token, worker, "nothing changed")]
            push.append((worker, order("ok", token)))
            done.append(job)
        else:
            move(tx, "executions", token, *begun, "win", set=ended, params=times, only=(estate,))
            move(tx, "jobs", job, "win", set="winner = ?, active = 1", params=(token,),
                 only=(jstate,))
            push.append((worker, order("commit", token)))
        others = tx.all(f"SELECT id, worker FROM executions WHERE job = ? AND id <> ? "
                        f"AND state IN {ACTIVE_SQL}", (job, token))
        move(tx, "executions", [other for other, _ in others], "kill", set="ended = ?",
             params=(now,), note=[(now, "kill", job, other, w, f"execution {token} won")
                                  for other, w in others], log=rows)
        push += [(w, order("kill", other)) for other, w in others]
    elif status == 0 and jstate == "running":
        move(tx, "executions", token, *begun, "succeed", set=ended, params=times, only=(estate,))
        move(tx, "jobs", job, "succeed", set="active = active - 1, finished = ?, "
             "exit_status = 0, winner = ?", params=(now, token), only=(jstate,))
        push.append((worker, order("ok", token)))
        done.append(job)
    elif status == 0:  # isolated, but another execution already won (or the job was cancelled)
        move(tx, "executions", token, *begun, "late", set=ended, params=times, only=(estate,))
        tx.execute("UPDATE jobs SET active = active - 1 WHERE id = ?", (job,))
        rows.append((now, "refused", job, token, worker, f"job is {jstate}"))
        push.append((worker, order("discard", token)))
    else:
        move(tx, "executions", token, *begun, "fail", set=ended, params=times, only=(estate,))
        push.append((worker, order("discard", token)))
        active -= 1
        if jstate == "running":
            # retries: how many more failures the job may have; -1: spent, no new executions
            retries = retries - 1 if retries > 0 else -1
            if retries >= 0 or active > 0:
                if active == 0:
                    wait = retry_delay(tx, job)
                    move(tx, "jobs", job, "retry", set="active = 0, retries = ?, "
                         "failures = failures + 1, not_before = ?, failed_on = ?",
                         params=(retries, now + wait, worker), only=(jstate,),
                         note=(now, "retry", job, token, worker,
                               f"exit {status}; again in {wait:g} s, preferably elsewhere"),
                         log=rows)
                    if backoffs is not None:
                        backoffs.append(wait)
                else:  # another execution still runs: the job stays running
                    tx.execute("UPDATE jobs SET active = ?, retries = ?, failures = failures + 1,"
                               " failed_on = ? WHERE id = ?", (active, retries, worker, job))
            else:
                reason = f"exit status {status}{': ' + why if why else ''} (retries spent)"
                move(tx, "jobs", job, "fail", set="active = 0, finished = ?, exit_status = ?, "
                     "reason = ?", params=(now, status, reason), only=(jstate,),
                     note=(now, "fail", job, token, worker, reason), log=rows)
                event(tx, rows)
                cancel_dependents(tx, [job], now)
                return push, done
        else:
            tx.execute("UPDATE jobs SET active = active - 1 WHERE id = ?", (job,))
    event(tx, rows)
    return push, done


def record_output(tx: Tx, worker: str, token: int, size: int, tail: str, place: str) -> None:
    """The end of an execution's output (``tail``, base64), its size and where the whole file
    is (``HOST:PATH`` on the worker). Kept once per execution (a report sent again after a
    reconnection replaces it); a token that is not this worker's is ignored."""
    row = tx.one("SELECT job FROM executions WHERE id = ? AND worker = ?", (token, worker))
    if row is None:
        return
    tx.execute("DELETE FROM outputs WHERE execution = ?", (token,))
    tx.execute("INSERT INTO outputs (execution, job, size, tail, place) VALUES (?, ?, ?, ?, ?)",
               (token, row[0], size, tail, place))


def repeat(tx: Tx, worker: str, token: int, row: tuple[Any, ...] | None, now: float,
           what: str) -> Push:
    """A report about an execution that has moved on. If it moved on because of that same
    report (sent again after a reconnection), the answer is given again; otherwise the report is
    late — its execution was presumed lost, killed or beaten — and is refused: discard."""
    state = row[0] if row else None
    if state == "committing":
        return [(worker, order("commit", token))]
    if state == "applying":
        return [(worker, order("go", token))]
    if state in ("finished", "committed"):
        return [(worker, order("ok", token))]
    if state != "failed":
        event(tx, [(now, "refused", row[1] if row else None, token, worker,
                    f"{what}: execution is {state or 'unknown'}")])
    return [(worker, order("discard", token))]


def journaled(tx: Tx, worker: str, token: int, c0: float, now: float) -> bool:
    """The committer staged every change and wrote its journal: from now on the commit will be
    completed, by it or (if it dies) by the scheduler's replay. False: the token is stale, and
    its staging must be thrown away."""
    if move(tx, "executions", token, "journaled", required=False):
        job = tx.one("SELECT job FROM executions WHERE id = ?", (token,))
        event(tx, [(c0, "commit_start", job[0] if job else None, token, worker, None)])
        return True
    row = _execution(tx, token)
    if row is not None and row[0] == "applying":
        return True  # the same report again, after a reconnection
    event(tx, [(now, "refused", row[1] if row else None, token, worker, "late journal")])
    return False


def committed(tx: Tx, worker: str, token: int, c1: float, now: float,
              detail: str | None = None) -> tuple[Push, list[int]]:
    """The winner's changes are in the home: the job is done, its dependents may start."""
    row = _execution(tx, token)
    if row is None or row[0] != "applying":
        return repeat(tx, worker, token, row, now, "late commit report"), []
    job = row[1]
    move(tx, "executions", token, "committed", only=(row[0],))
    move(tx, "jobs", job, "committed", set="active = 0, finished = ?, exit_status = 0",
         params=(now,), note=(c1, "commit", job, token, worker, f"notify={max(now - c1, 0):.6f}"
                              + (f" {detail}" if detail else "")))
    return [(worker, order("ok", token))], [job]


def commit_undone(tx: Tx, token: int, why: str, now: float, failed: bool = False) -> None:
    """The committing execution is gone and its journal was incomplete (rolled back), or its
    commit failed: the job runs again."""
    row = _execution(tx, token)
    if row is None or row[0] not in ("committing", "applying"):
        return
    job = row[1]
    move(tx, "executions", token, "fail" if failed else "lose", set="ended = ?", params=(now,),
         only=(row[0],))
    retries = max(row[4] - 1, 0) if failed else row[4]
    move(tx, "jobs", job, "commit_lost", set="active = 0, winner = NULL, retries = ?",
         params=(retries,), note=(now, "rollback" if not failed else "fail", job, token, row[6],
                                  why))


def commit_refused(tx: Tx, token: int, why: str, now: float) -> None:
    """The execution's commit was refused before anything of it was applied (a journal naming
    paths outside its home, a home others could write): running the job again would meet the
    same refusal, so the job fails with the reason, and what waits for it is cancelled."""
    row = _execution(tx, token)
    if row is None or row[0] not in ("committing", "applying"):
        return
    job = row[1]
    move(tx, "executions", token, "fail", set="ended = ?", params=(now,), only=(row[0],))
    move(tx, "jobs", job, "fail", set="active = 0, finished = ?, reason = ?", params=(now, why),
         only=("exiting",), note=(now, "fail", job, token, row[6], why))
    cancel_dependents(tx, [job], now)


def gone(tx: Tx, worker: str, tokens: list[int], now: float) -> None:
    """The worker has rolled back (killed, discarded) these executions."""
    rows = tx.in_chunks("SELECT id, job FROM executions WHERE id IN ({ids})", tokens)
    event(tx, [(now, "rollback", job, token, worker, None) for token, job in rows])


def lose(tx: Tx, tokens: list[int], now: float, why: str | None = None) -> Push:
    """Leases expired (or, ``why``, the worker's connection closed): these executions are
    presumed lost; a job left with none is ready again."""
    push: Push = []
    for token in tokens:
        row = _execution(tx, token)
        if row is None or row[0] not in ("assigned", "running"):
            continue
        job, jstate, active, worker = row[1], row[2], row[5] - 1, row[6]
        rows: list[EventRow] = []
        move(tx, "executions", token, "lose", set="ended = ?", params=(now,), only=(row[0],),
             note=(now, "lease_lost", job, token, worker, why), log=rows)
        if jstate == "running" and active <= 0:
            move(tx, "jobs", job, "retry", set="active = 0", only=(jstate,),
                 note=(now, "retry", job, token, worker, why or "lease lost"), log=rows)
        else:
            tx.execute("UPDATE jobs SET active = ? WHERE id = ?", (max(active, 0), job))
        event(tx, rows)
        push.append((worker, order("kill", token)))
    return push


def resolve_done(tx: Tx, jobs: list[int]) -> None:
    """Jobs are done: each dependent has one dependency fewer; those with none left are ready."""
    tx.many("UPDATE jobs SET deps_left = deps_left - 1 WHERE id IN "
            "(SELECT job FROM deps WHERE dep = ?)", [(j,) for j in jobs])
    move_where(tx, "jobs", "deps_done", where="deps_left <= 0 AND id IN "
               "(SELECT job FROM deps WHERE dep = ?)", each=[(j,) for j in jobs])


def cancel_dependents(tx: Tx, jobs: list[int], now: float) -> int:
    """Every job that (transitively) waits for ``jobs`` is cancelled, naming the dependency."""
    count = 0
    frontier = jobs
    while frontier:
        rows = tx.in_chunks("SELECT d.job, d.dep, p.state FROM deps d JOIN jobs j ON j.id = d.job "
                            "JOIN jobs p ON p.id = d.dep WHERE d.dep IN ({ids}) "
                            "AND j.state IN ('waiting', 'ready')", frontier)
        reasons: dict[int, str] = {}
        for job, dep, dstate in rows:
            reasons.setdefault(job, f"dependency {dep} {dstate}")
        move_each(tx, "jobs", [(r, now, j) for j, r in reasons.items()], "cancel",
                  set="reason = ?, finished = ?", only=("waiting", "ready"))
        event(tx, [(now, "cancel", j, None, None, r) for j, r in reasons.items()])
        count += len(reasons)
        frontier = list(reasons)
    return count


def cancel(tx: Tx, ids: list[int] | None, tag: str | None, now: float) -> tuple[int, Push]:
    """Cancel jobs by id (each must exist and not have ended) or every unfinished job of a tag;
    their executions are killed and their dependents cancelled."""
    if ids is not None:
        found = dict(tx.in_chunks("SELECT id, state FROM jobs WHERE id IN ({ids})", ids))
        for i in ids:
            if i not in found:
                raise Refused(f"cancel: there is no job {i} (brasil jobs lists them)")
            if found[i] not in ("waiting", "ready", "running"):
                raise Refused(f"cancel: job {i} is {found[i]}: cannot cancel now"
                              + (" (it is committing its output)" if found[i] == "exiting" else ""))
        targets = ids
    else:
        targets = [r[0] for r in tx.all("SELECT id FROM jobs WHERE tag = ? AND state IN "
                                        "('waiting', 'ready', 'running')", (tag,))]
    if not targets:
        return 0, []
    push: Push = []
    kills = tx.in_chunks(f"SELECT id, job, worker FROM executions WHERE state IN {ACTIVE_SQL} "
                         "AND job IN ({ids})", targets)
    move(tx, "executions", [t for t, _, _ in kills], "kill", set="ended = ?", params=(now,))
    move(tx, "jobs", targets, "cancel", set="reason = 'cancelled by request', finished = ?, "
         "active = 0", params=(now,))
    event(tx, [(now, "cancel", j, None, None, "cancelled by request") for j in targets]
          + [(now, "kill", job, t, w, "job cancelled") for t, job, w in kills])
    push += [(w, order("kill", t)) for t, _, w in kills]
    n = len(targets) + cancel_dependents(tx, list(targets), now)
    return n, push


def retry(tx: Tx, ids: list[int] | None, tag: str | None, retries: int, now: float) -> int:
    """`brasil retry`: failed jobs (by id, each must have failed, or every failed job of a tag,
    or every failed job) are ready again with ``retries`` more failures allowed, and the jobs
    cancelled because of them (transitively) wait again, as HyperQueue's resubmit and
    Makeflow's rerun do. A dependant that still has another failed or cancelled dependency
    stays cancelled. Returns how many jobs came back."""
    if ids is not None:
        found = dict(tx.in_chunks("SELECT id, state FROM jobs WHERE id IN ({ids})", ids))
        for i in ids:
            if i not in found:
                raise Refused(f"retry: there is no job {i} (brasil jobs lists them)")
            if found[i] != "failed":
                raise Refused(f"retry: job {i} is {found[i]}, not failed: only failed jobs are "
                              "retried (their cancelled dependants come back with them)")
        targets = ids
    elif tag is not None:
        targets = [r[0] for r in tx.all("SELECT id FROM jobs WHERE tag = ? AND state = 'failed'",
                                        (tag,))]
    else:
        targets = [r[0] for r in tx.all("SELECT id FROM jobs WHERE state = 'failed'")]
    if not targets:
        return 0
    move(tx, "jobs", targets, "retry_request", set="retries = ?, active = 0, finished = NULL, "
         "exit_status = NULL, winner = NULL, reason = NULL, not_before = NULL", params=(retries,))
    event(tx, [(now, "retry_request", j, None, None, f"retries {retries}") for j in targets])
    count, frontier = len(targets), list(targets)
    while frontier:
        rows = tx.in_chunks(
            "SELECT DISTINCT d.job FROM deps d JOIN jobs j ON j.id = d.job WHERE d.dep IN ({ids}) "
            "AND j.state = 'cancelled' AND j.reason LIKE 'dependency %' AND NOT EXISTS "
            "(SELECT 1 FROM deps d2 JOIN jobs p ON p.id = d2.dep WHERE d2.job = d.job "
            "AND p.state IN ('failed', 'cancelled'))", frontier)
        back = [r[0] for r in rows]
        if not back:
            break
        move(tx, "jobs", back, "restore", set="finished = NULL, reason = NULL")
        event(tx, [(now, "restore", j, None, None, None) for j in back])
        count += len(back)
        frontier = back
    return count


# ---- restart -------------------------------------------------------------------------------------

def whose(tx: Tx, token: int) -> tuple[str, str, str] | None:
    """(worker, home, state) of an execution, from the database: for a commit to recover whose
    token the scheduler's memory has forgotten (told to kill it, then to commit it, in one
    exchange)."""
    row = tx.one("SELECT e.worker, j.home, e.state FROM executions e JOIN jobs j "
                 "ON j.id = e.job WHERE e.id = ?", (token,))
    return (str(row[0]), str(row[1]), str(row[2])) if row else None


def active_executions(tx: Tx) -> list[tuple[Any, ...]]:
    """(token, worker, state, job, home) of every execution a restarted scheduler must lease."""
    return tx.all("SELECT e.id, e.worker, e.state, e.job, j.home FROM executions e JOIN jobs j "
                  f"ON j.id = e.job WHERE e.state IN {ACTIVE_SQL}")


assert set(ACTIVE_EXECUTION) == {"assigned", "running", "committing", "applying"}
