"""The batch layer's pure parts: lifecycles (and their generated document), job files, the
commit journal on its own, the report's arithmetic."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brasil.batch import commit, jobfile, lifecycle
from brasil.batch.api import Event, Job
from brasil.batch.report import build, gantt_png, text
from brasil.ninep.errors import NinepError

DOCS = Path(__file__).parent.parent / "docs"


def test_an_illegal_job_or_execution_event_names_the_state():
    with pytest.raises(NinepError, match=r"job 7 is done: cannot assign now"):
        lifecycle.job_step("done", "assign", 7)
    with pytest.raises(NinepError, match=r"execution 9 is lost: cannot committed now"):
        lifecycle.execution_step("lost", "committed", 9)
    assert lifecycle.job_step("running", "win", 1) == "exiting"
    assert lifecycle.execution_step("committing", "journaled", 1) == "applying"
    # every state the tables reach is one the code knows, and an ended job leaves its state
    # only by a user's `brasil retry` (done never)
    reached = {t for t in lifecycle.JOB.values()} | {s for s, _ in lifecycle.JOB}
    assert reached == set(lifecycle.JOB_STATES)
    assert {(s, e) for s, e in lifecycle.JOB if s in lifecycle.TERMINAL} == \
        {("failed", "retry_request"), ("cancelled", "restore")}


def test_the_batch_lifecycle_document_is_generated_from_the_tables():
    assert (DOCS / "batch-lifecycles.md").read_text() == lifecycle.document(), \
        "stale: python -m brasil.batch.lifecycle > docs/batch-lifecycles.md"


def test_a_job_file_with_names_dependencies_and_options():
    specs = jobfile.parse("%set tag w\n%set home /h\n# a comment\n\nplain command | wc -l\n"
                          "job a priority:5 isolate env:X=1 -- make a\n"
                          "job b after:a,12 redundancy:3 retries:0 home:/o -- make b\n")
    assert [s.cmd for s in specs] == ["plain command | wc -l", "make a", "make b"]
    assert specs[1].isolate and specs[1].priority == 5 and specs[1].env == {"X": "1"}
    assert specs[2].deps == [1] and specs[2].after_ids == [12] and specs[2].home == "/o"
    assert {s.tag for s in specs} == {"w"} and specs[0].home == "/h"


@pytest.mark.parametrize("text, error", [
    ("true\njob x after:y\n", r"f:2: expected: job NAME"),
    ("job 1x -- true\n", r"f:1: job name '1x'"),
    ("job a -- true\njob a -- false\n", r"f:2: job 'a' is already defined at line 1"),
    ("job a after:zz -- true\n", r"f:1: after:zz: no job named 'zz'"),
    ("job a redundancy:0 -- true\n", r"f:1: redundancy must be 1 or more \(1 turns redundancy "
                                     r"off\), not 0"),
    ("job a bogus:1 -- true\n", r"f:1: unknown option 'bogus'"),
    ("%set home relative\n", r"f:1: home 'relative' must be an absolute path"),
    ("%frob\n", r"f:1: unknown directive %frob"),
    ("job a after:c -- t\njob b after:a -- t\njob c after:b -- t\n",
     r"f:1: dependency cycle: a after c after b after a"),
])
def test_bad_job_files_name_the_line_and_say_what_is_expected(text, error):
    with pytest.raises(jobfile.JobFileError, match=error):
        jobfile.parse(text, filename="f")


def test_a_long_chain_is_checked_for_cycles_without_recursion():
    n = 50_000
    lines = ["job j0 -- true"] + [f"job j{i} after:j{i - 1} -- true" for i in range(1, n)]
    assert len(jobfile.parse("\n".join(lines))) == n


def test_replaying_a_journal_twice_after_a_crash_gives_one_complete_commit(tmp_path):
    home, upper = tmp_path / "home", tmp_path / "upper"
    home.mkdir()
    upper.mkdir()
    (home / "f").write_text("old")
    (home / "d").mkdir()
    (home / "d" / "x").write_text("x")
    (upper / "f").write_text("new")
    (upper / "n").mkdir()
    (upper / "n" / "y").write_text("y")
    os.mknod(upper / "d", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout: d was deleted
    ops = commit.plan(str(upper), str(home))
    assert [(o.kind, o.path) for o in ops] == [("delete", "d"), ("put", "f"), ("replace", "n")]
    staging = commit.stage_local(str(upper), str(home), 5, ops)
    assert json.loads(Path(staging, "journal").read_text())[0]["kind"] == "delete"
    # crash after the first two operations: replay from the start, as recovery does
    os.rename(home / "d", Path(staging) / "trash" / "0")
    os.rename(Path(staging) / "files" / "1", home / "f")
    assert commit.recover_token(str(home), 5, journaled=True)
    assert sorted(os.listdir(home)) == ["f", "n"]
    assert (home / "f").read_text() == "new" and (home / "n" / "y").read_text() == "y"
    # not journaled: whatever was staged goes, the home is untouched
    (upper / "f").write_text("newer")
    commit.stage_local(str(upper), str(home), 6, commit.plan(str(upper), str(home)))
    assert not commit.recover_token(str(home), 6, journaled=False)
    assert (home / "f").read_text() == "new" and sorted(os.listdir(home)) == ["f", "n"]


def test_the_report_computes_the_breakdown_and_draws_a_chart():
    ev = [Event(0.0, "submit", 1, None, None, ""), Event(0.0, "submit", 2, None, None, ""),
          Event(0.1, "assign", 1, 1, "w", ""), Event(0.2, "start", 1, 1, "w", "0"),
          Event(0.1, "assign", 2, 2, "v", ""), Event(0.3, "start", 2, 2, "v", "0"),
          Event(0.4, "assign", 1, 3, "v", "redundant"),
          Event(1.2, "finish", 1, 1, "w", "0 notify=0.1"),
          Event(1.3, "commit_start", 1, 1, "w", ""), Event(1.5, "commit", 1, 1, "w", "notify=0.1"),
          Event(1.3, "kill", 1, 3, "v", "execution 1 won"),
          Event(1.4, "rollback", 1, 3, "v", ""),
          Event(0.35, "start", 1, 3, "v", "1"),
          Event(0.9, "finish", 2, 2, "v", "0 notify=0.05")]
    jobs = [Job(1, "done", "t", None, 0, "x", ""), Job(2, "done", "t", None, 0, "y", "")]
    rep = build("t", jobs, sorted(ev, key=lambda e: e.t))
    f = rep.figures
    assert f["makespan"] == pytest.approx(1.6)
    assert f["killed"] == 1 and f["redundant"] == 1 and f["slots"] == 3
    assert f["redundant work wasted"] == pytest.approx((1.3 - 0.35) / 3)
    assert f["commit changes"] == pytest.approx(0.2 / 3)
    assert "makespan" in text(rep) and "Redundant work wasted" in text(rep)
    assert gantt_png(rep).startswith(b"\x89PNG")


def test_the_cli_refuses_redundancy_0_and_a_missing_job_id(tmp_path):
    r = subprocess.run([sys.executable, "-m", "brasil.cli.main", "submit", "--redundancy", "0",
                        "--", "true"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "redundancy must be 1 or more (1 turns redundancy off), not 0" in r.stderr


def test_a_job_too_large_for_a_workers_read_is_refused_naming_the_line_and_the_limit():
    # A 2 MB command once wedged its worker (the assignment did not fit a 1 MiB read).
    with pytest.raises(jobfile.JobFileError, match=r"^long.jobs:2: the command is 2000005 bytes; "
                       r"the limit is 256 KiB \(262144 bytes\)"):
        jobfile.parse("true\necho " + "a" * 2_000_000 + "\n", filename="long.jobs")
    with pytest.raises(jobfile.JobFileError, match=r"^f:1: the environment .* limit is 256 KiB"):
        jobfile.parse("job a env:X=" + "b" * 300_000 + " -- true\n", filename="f")
    # Non-ASCII text grows when encoded for the worker: the whole record is checked too.
    with pytest.raises(jobfile.JobFileError, match=r"^f:1: the job \(command, home and "
                       r"environment, encoded for the worker\) is \d+ bytes; the limit is 768 KiB"):
        jobfile.parse("job a env:X=" + "c" * 10_000 + " -- echo " + "é" * 130_000 + "\n",
                      filename="f")
    # Streamed in pieces, an endless line is refused before it is all buffered.
    p = jobfile.Parser(filename="f")
    with pytest.raises(jobfile.JobFileError, match=r"^f:1: the line is longer than 768 KiB"):
        for _ in range(40):
            p.feed("a" * 65536)
    assert len(jobfile.parse("echo " + "a" * 200_000 + "\n")) == 1  # under the limit: fine


@pytest.mark.parametrize("rows", [1, 3, 12])
def test_the_gantt_charts_legend_does_not_overlap_the_x_axis_label(rows):
    import matplotlib.pyplot as plt

    from brasil.batch.report import gantt_figure
    ev = [Event(0.0, "submit", 1, None, None, "")]
    for i in range(rows):
        ev += [Event(0.1, "assign", i, i, f"w{i}", ""), Event(0.2, "start", i, i, f"w{i}", "0"),
               Event(1.2, "finish", i, i, f"w{i}", "0 notify=0.1")]
    fig = gantt_figure(build("t", [Job(i, "done", "t", None, 0, "x", "") for i in range(rows)],
                             sorted(ev, key=lambda e: e.t)))
    try:
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        label = fig.axes[0].xaxis.label.get_window_extent(r)
        legend = fig.legends[0].get_window_extent(r)
        assert not label.overlaps(legend) and legend.y1 <= label.y0
        assert legend.y0 >= 0  # and it is inside the picture
    finally:
        plt.close(fig)


def test_the_gantt_chart_names_the_jobs_on_bars_wide_enough_for_the_name():
    """Issue 16 §6: the chart's bars carried no job names; now each bar wide enough says its
    job's name (its id if unnamed), and a narrow bar stays unlabelled."""
    import matplotlib.pyplot as plt

    from brasil.batch.report import gantt_figure
    ev = [Event(0.0, "submit", 1, None, None, ""), Event(0.0, "submit", 2, None, None, ""),
          Event(0.1, "assign", 1, 1, "w", ""), Event(0.1, "start", 1, 1, "w", "0"),
          Event(9.0, "finish", 1, 1, "w", "0 notify=0.1"),
          Event(0.1, "assign", 2, 2, "v", ""), Event(0.1, "start", 2, 2, "v", "0"),
          Event(0.15, "finish", 2, 2, "v", "0 notify=0.1"),
          Event(0.1, "assign", 3, 3, "u", ""), Event(0.1, "start", 3, 3, "u", "0"),
          Event(5.0, "finish", 3, 3, "u", "0 notify=0.1")]
    jobs = [Job(1, "done", "t", "align", 0, "x", ""),
            Job(2, "done", "t", "a-rather-long-name", 0, "y", ""),
            Job(3, "done", "t", None, 0, "z", "")]
    fig = gantt_figure(build("t", jobs, sorted(ev, key=lambda e: e.t)))
    try:
        assert sorted(t.get_text() for t in fig.axes[0].texts) == ["3", "align"]
    finally:
        plt.close(fig)


async def test_a_worker_that_never_connected_says_so_once_not_at_every_attempt(tmp_path, caplog):
    import asyncio
    import logging

    from brasil.batch.worker import Worker
    from fixtures import wait_for
    attempts = 0

    async def connect():
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError(111, "Connection refused")
    w = Worker(connect, 1, str(tmp_path / "w"), name="lonely")
    caplog.set_level(logging.INFO, logger="brasil.batch.worker")
    task = asyncio.ensure_future(w.run())
    try:
        await wait_for(lambda: attempts >= 5, timeout=10)
    finally:
        w.stop()
        await task
    said = [r.getMessage() for r in caplog.records if "lonely" in r.getMessage()]
    assert len(said) == 1, said
    assert "cannot reach the scheduler (never connected yet)" in said[0]
    assert "connection to the scheduler lost" not in said[0]


def test_a_database_made_before_the_time_limit_column_still_opens_and_gets_it(tmp_path):
    """Issue 16 §6: the time limit is a new column of jobs; an existing database lacks it and
    must still open (the column is added), keeping its jobs."""
    import sqlite3

    from brasil.batch import store
    tmp_path.chmod(0o700)
    path = tmp_path / "batch.db"
    old = sqlite3.connect(path)
    for stmt in store.SCHEMA:
        old.execute(stmt)
    old.execute("INSERT INTO jobs (id, tag, cmd, home, env, isolate, priority, retries, "
                "redundancy, state, deps_left, active, submitted) VALUES (1, 't', 'true', '/', "
                "'{}', 0, 0, 0, 1, 'done', 0, 0, 0)")
    old.commit()
    old.close()
    path.chmod(0o600)
    s = store.Store(str(path))
    s.open()
    try:
        conn = s.connect()
        assert conn.execute("SELECT id, time_limit FROM jobs").fetchall() == [(1, 0)]
        conn.close()
    finally:
        s.close()
    s = store.Store(str(path))  # and again: the column is not added twice
    s.open()
    s.close()


def test_a_claim_counts_a_workers_slots_by_index_not_by_scanning_every_execution():
    """ops.busy_slots runs at every claim: without executions_worker_active it scanned every
    execution the database ever held (the simulator's finding: docs/sim.md); and the policy's
    search for a redundant execution reads the running isolated jobs only."""
    import sqlite3

    from brasil.batch import store
    from brasil.batch.ops import ACTIVE_SQL
    conn = sqlite3.connect(":memory:")
    for stmt in store.SCHEMA:
        conn.execute(stmt)
    for table, column, kind in store.ADDED_COLUMNS:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def plan(sql: str, *args: object) -> str:
        return " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
    busy = plan(f"SELECT state, count(*) FROM executions WHERE worker = ? AND state IN "
                f"{ACTIVE_SQL} GROUP BY state", "w")
    assert "SEARCH executions USING COVERING INDEX executions_worker_active" in busy
    again = plan("SELECT id FROM jobs j WHERE state = 'running' AND isolate = 1 AND active < "
                 "redundancy ORDER BY priority DESC, id LIMIT 3")
    assert "jobs_redundant" in again


async def test_the_store_on_a_loop_commits_what_was_written_meanwhile_in_one_transaction(
        tmp_path):
    """WriterOnLoop (the simulator's): no thread; writes made before the loop's next turn go
    into one batch (group commit), each future gets its own result, and one failing write is
    blamed alone."""
    import threading

    from brasil.batch.store import Refused, Store, WriterOnLoop
    tmp_path.chmod(0o700)
    s = Store(str(tmp_path / "b.db"), writer=WriterOnLoop())
    s.open()
    try:
        assert not any(t.name == "batch-db" for t in threading.enumerate())
        sizes: list[int] = []
        run_batch = s._run_batch

        def recorded(tx, batch):  # type: ignore[no-untyped-def]
            sizes.append(len(batch))
            run_batch(tx, batch)
        s._run_batch = recorded  # type: ignore[method-assign]

        def op(k: int):  # type: ignore[no-untyped-def]
            def run(tx):  # type: ignore[no-untyped-def]
                if k == 2:
                    raise Refused("no 2")
                tx.execute("UPDATE counters SET v = v + 1 WHERE k = 'job'")
                return k
            return run
        futs = [s.write(op(k)) for k in range(4)]
        got = await asyncio.gather(*futs, return_exceptions=True)
        assert got[:2] == [0, 1] and isinstance(got[2], Refused) and got[3] == 3
        assert await s.read(lambda tx: tx.one("SELECT v FROM counters WHERE k = 'job'")) == (3,)
        assert sizes == [4, 1, 1, 1, 1]  # one batch of four; it failed, so each again alone
    finally:
        s.close()


def test_only_workers_with_room_are_asked_whether_one_is_idle():
    """The scheduler keeps who holds fewer tokens than its capacity (hungry) as tokens come and
    go, so a report does not ask every worker (O(workers) per job): a worker given its slot's
    jobs leaves the set, and comes back when one is forgotten."""
    from brasil.batch.messages import Run, encode_run
    from brasil.batch.scheduler import Scheduler
    from brasil.batch.store import Store
    sched = Scheduler(Store("/nonexistent/never-opened.db"))

    async def go() -> None:
        a = sched.register("a", 1, "h", 1, False)
        b = sched.register("b", 1, "h", 2, False)
        assert sched.hungry == {"a", "b"} and sched._others_idle(a)
        sched.deliver([("b", encode_run(Run(7, 1, "true", "/", {}, False)))])
        assert sched.hungry == {"a"} and sched.held == {"b": 1}
        assert not sched._others_idle(a) and sched._others_idle(b)
        assert [w.name for w in sched._candidates(0.0)] == ["a"]
        sched.forget(7)
        assert sched.hungry == {"a", "b"} and not sched.held
    asyncio.run(go())


# ---- moves along the tables, on both engines ----------------------------------------------

from batch_fixtures import db_url, postgres_server  # noqa: E402,F401


@pytest.fixture
async def store(db_url, tmp_path):  # noqa: F811
    """An open store (SQLite or PostgreSQL) with job 1 and its execution 10, in states the test
    sets with ``put``."""
    from brasil.batch.store import Store
    tmp_path.chmod(0o700)
    s = Store(db_url)
    s.open()
    await s.write(lambda tx: (
        tx.insert("jobs", ("id", "tag", "cmd", "home", "env", "isolate", "priority", "retries",
                           "redundancy", "state", "deps_left", "active", "submitted"),
                  [(1, "t", "true", "/", "{}", 1, 0, 0, 2, "ready", 0, 0, 0.0),
                   (2, "t", "true", "/", "{}", 1, 0, 0, 2, "waiting", 0, 0, 0.0),
                   (3, "t", "true", "/", "{}", 1, 0, 0, 2, "cancelled", 0, 0, 0.0)]),
        tx.insert("executions", ("id", "job", "worker", "state", "assigned"),
                  [(10, 1, "w", "assigned", 0.0)])))
    try:
        yield s
    finally:
        s.close()


def put(tx, rows: str, id: int, state: str) -> None:
    tx.execute(f"UPDATE {rows} SET state = ? WHERE id = ?", (state, id))


def state(tx, rows: str, id: int) -> str:
    return tx.one(f"SELECT state FROM {rows} WHERE id = ?", (id,))[0]


def events(tx) -> list[str]:
    return [r[0] for r in tx.all("SELECT kind FROM events ORDER BY t")]


async def test_a_move_names_its_from_states_and_refuses_a_row_in_any_other(store):
    from brasil.batch.lifecycle import Moved, move
    # ready → running along "assign", with the event row it writes
    assert await store.write(lambda tx: move(tx, "jobs", 1, "assign", set="active = active + 1",
                                             note=(1.0, "assign", 1, 10, "w", None)))
    assert await store.write(lambda tx: (state(tx, "jobs", 1), events(tx))) == \
        ("running", ["assign"])
    # a job that is done may not be assigned: the UPDATE matches nothing and, required, raises
    await store.write(lambda tx: put(tx, "jobs", 1, "done"))
    with pytest.raises(Moved, match="jobs: assign: 1 of 1"):
        await store.write(lambda tx: move(tx, "jobs", 1, "assign", note=(2.0, "assign", 1, 10,
                                                                           "w", None)))
    assert await store.write(lambda tx: (state(tx, "jobs", 1), events(tx))) == ("done", ["assign"])
    # a late report (not required) learns False and changes nothing, writing no event
    await store.write(lambda tx: put(tx, "executions", 10, "lost"))
    assert not await store.write(lambda tx: move(tx, "executions", 10, "start", required=False,
                                                 note=(3.0, "start", 1, 10, "w", None)))
    assert await store.write(lambda tx: (state(tx, "executions", 10), events(tx))) == \
        ("lost", ["assign"])


async def test_a_move_from_a_state_the_caller_read_is_fenced_on_that_state(store):
    from brasil.batch.lifecycle import Moved, move
    from brasil.ninep.errors import NinepError
    # start then fail, from assigned: one UPDATE; the same from running is refused
    assert await store.write(lambda tx: move(tx, "executions", 10, "start", "fail",
                                             set="ended = ?", params=(5.0,)))
    assert await store.write(lambda tx: state(tx, "executions", 10)) == "failed"
    await store.write(lambda tx: put(tx, "executions", 10, "running"))
    with pytest.raises(Moved):
        await store.write(lambda tx: move(tx, "executions", 10, "start", "fail"))
    # cancel is drawn from waiting, ready and running; a caller that read "ready" moves only that
    with pytest.raises(Moved):
        await store.write(lambda tx: move(tx, "jobs", 2, "cancel", only=("ready",)))
    assert await store.write(lambda tx: state(tx, "jobs", 2)) == "waiting"
    # an edge that is not drawn is refused before any SQL, naming the state
    with pytest.raises(NinepError, match="is done: cannot cancel now"):
        await store.write(lambda tx: move(tx, "jobs", 2, "cancel", only=("done",)))


async def test_moves_of_many_rows_count_every_row(store):
    from brasil.batch.lifecycle import Moved, move, move_each, move_where
    # one of the two is not waiting or ready: the whole operation is rolled back
    with pytest.raises(Moved, match="1 of 2"):
        await store.write(lambda tx: move_each(tx, "jobs", [("why", 1), ("why", 3)], "cancel",
                                               set="reason = ?"))
    assert await store.write(lambda tx: [state(tx, "jobs", j) for j in (1, 3)]) == \
        ["ready", "cancelled"]
    with pytest.raises(Moved, match="1 of 3"):
        await store.write(lambda tx: move(tx, "jobs", [1, 2, 3], "cancel"))
    assert await store.write(lambda tx: move(tx, "jobs", [1, 2, 2], "cancel"))
    # a set-based move moves only the rows in a state the event may happen in
    await store.write(lambda tx: put(tx, "jobs", 1, "done"))
    await store.write(lambda tx: move_where(tx, "jobs", "restore", where="id IN (?, ?)",
                                            each=[(1, 3)]))
    assert await store.write(lambda tx: [state(tx, "jobs", j) for j in (1, 2, 3)]) == \
        ["done", "cancelled", "waiting"]


async def test_an_operation_whose_row_another_scheduler_moved_runs_again(store):
    from brasil.batch.lifecycle import move
    runs = []

    def op(tx):
        runs.append(state(tx, "jobs", 1))
        if len(runs) == 1:  # as if another scheduler had cancelled it after we read "ready"
            put(tx, "jobs", 1, "cancelled")
        return move(tx, "jobs", 1, "assign", only=("ready",))
    assert await store.write(op)
    assert runs == ["ready", "ready"]  # the first run was rolled back, cancel and all


def test_every_state_change_in_the_scheduler_goes_through_the_tables():
    """No UPDATE in ops.py sets a state by hand: each goes through lifecycle.move, whose WHERE
    holds the states the table allows."""
    import re

    from brasil.batch import ops
    src = Path(ops.__file__).read_text()
    assert not re.findall(r"UPDATE \w+ SET[^\"]*\bstate\s*=", src)
    assert "SET state" not in src


async def test_the_scheduler_moves_only_along_the_tables(store):
    """ops.py through move: a late finish is refused and changes nothing; a commit report for a
    job that is not exiting (the table draws exiting → done only) is refused whole."""
    from brasil.batch import ops
    from brasil.batch.lifecycle import Moved
    await store.write(lambda tx: (put(tx, "jobs", 1, "running"), put(tx, "executions", 10, "lost")))
    push, done = await store.write(lambda tx: ops.finished(tx, "w", 10, 0, 1.0, 2.0, 3.0, ""))
    assert (push, done) == ([("w", "discard 10")], [])
    assert await store.write(lambda tx: (state(tx, "jobs", 1), state(tx, "executions", 10))) == \
        ("running", "lost")
    await store.write(lambda tx: put(tx, "executions", 10, "applying"))
    with pytest.raises(Moved, match="jobs: committed"):
        await store.write(lambda tx: ops.committed(tx, "w", 10, 4.0, 5.0))
    assert await store.write(lambda tx: (state(tx, "jobs", 1), state(tx, "executions", 10))) == \
        ("running", "applying")  # the execution's move was rolled back with the job's
    # the same report once the job is exiting: both move, and the job is done
    await store.write(lambda tx: put(tx, "jobs", 1, "exiting"))
    push, done = await store.write(lambda tx: ops.committed(tx, "w", 10, 4.0, 5.0))
    assert (push, done) == ([("w", "ok 10")], [1])
    assert await store.write(lambda tx: (state(tx, "jobs", 1), state(tx, "executions", 10))) == \
        ("done", "committed")
