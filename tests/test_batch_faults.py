"""Faults, with real processes: a worker killed (-9) or frozen (SIGSTOP) mid-job, the scheduler
killed and restarted mid-run, and either of them killed in the middle of a commit. Each time the
workload completes, each job's output is committed exactly once, and a home is never left with
part of a commit."""

from __future__ import annotations

import asyncio
import os
import signal

from batch_fixtures import commits_per_job, connect_batch, spawn_worker, tree
from fixtures import alive, spawn_serve, stop, wait_for

LEASE = "1"
SLOW = "BRASIL_BATCH_FAULT_SLOW_COMMIT"


async def until(b, predicate, timeout: float = 30.0, tag: str = "t"):
    """Poll the events of ``tag`` until ``predicate(events)`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        events = await b.events(tag)
        if predicate(events):
            return events
        if loop.time() > deadline:
            raise TimeoutError("\n".join(map(str, events[-30:])))
        await asyncio.sleep(0.05)


def check_exactly_once(events, home, jobs: range) -> None:
    commits = commits_per_job(events)
    assert sorted(commits) == list(jobs), commits
    assert all(len(t) == 1 for t in commits.values()), commits
    files = tree(str(home))
    for j in jobs:  # the output is the committing execution's, and only its
        assert files[f"out.{j}"] == f"{commits[j][0]}\n"


async def test_a_worker_killed_mid_job_loses_its_lease_and_the_job_runs_elsewhere(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve, addr = spawn_serve(str(tmp_path))
    victim = spawn_worker(addr, str(tmp_path), "victim", 2)
    other = None
    try:
        b = await connect_batch(addr)
        await b.client.write("csrv/local/batch/ctl", f"lease {LEASE}\n")
        r = await b.submit(["sleep 0.5; echo $BRASIL_EXECUTION > out.$BRASIL_JOB"] * 6, tag="t",
                           home=str(home), isolate=True, redundancy=1)
        await until(b, lambda ev: any(e.kind == "start" and e.worker == "victim" for e in ev))
        victim.kill()  # -9, mid-job
        victim.wait()
        other = spawn_worker(addr, str(tmp_path), "other", 2)
        assert (await asyncio.wait_for(b.wait(tag="t"), 60))["done"] == 6
        events = await b.events("t")
        assert any(e.kind == "lease_lost" and e.worker == "victim" for e in events)
        check_exactly_once(events, home, r.ids)
        await b.close()
    finally:
        for p in (victim, other, serve):
            if p is not None:
                stop(p)


async def test_a_frozen_worker_is_replaced_and_its_late_reports_are_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve, addr = spawn_serve(str(tmp_path))
    frozen = spawn_worker(addr, str(tmp_path), "frozen", 2)
    other = spawn_worker(addr, str(tmp_path), "other", 2)
    try:
        b = await connect_batch(addr)
        await b.client.write("csrv/local/batch/ctl", f"lease {LEASE}\n")
        r = await b.submit(["sleep 0.4; echo $BRASIL_EXECUTION > out.$BRASIL_JOB"] * 8, tag="t",
                           home=str(home), isolate=True)
        await until(b, lambda ev: any(e.kind == "start" and e.worker == "frozen" for e in ev))
        os.kill(frozen.pid, signal.SIGSTOP)
        assert (await asyncio.wait_for(b.wait(tag="t"), 60))["done"] == 8
        # Each of its executions is given up: its lease runs out, or (on a loaded machine, the
        # other worker's redundant copy finishing first) it is killed as the loser. Waited for.
        def given_up(ev):  # type: ignore[no-untyped-def]
            runs = {e.execution for e in ev if e.worker == "frozen" and e.kind == "assign"}
            return runs <= {e.execution for e in ev if e.worker == "frozen"
                            and e.kind in ("lease_lost", "kill")}
        events = await until(b, given_up)
        frozen_runs = {e.execution for e in events if e.worker == "frozen" and e.kind == "assign"}
        os.kill(frozen.pid, signal.SIGCONT)  # it wakes up and reports what it finished
        events = await until(b, lambda ev: {e.execution for e in ev if e.kind == "rollback"
                                            and e.worker == "frozen"} >= frozen_runs - {
            e.execution for e in ev if e.kind == "commit"})
        assert any(e.kind == "refused" and e.worker == "frozen" for e in events) or not [
            e for e in events if e.kind == "finish" and e.worker == "frozen"]
        check_exactly_once(events, home, r.ids)
        assert not [p for p in os.listdir(home) if p.startswith(".brasil")]
        await b.close()
    finally:
        for p in (frozen, other, serve):
            stop(p)


async def test_the_scheduler_killed_and_restarted_mid_run_loses_nothing(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve, addr = spawn_serve(str(tmp_path))
    ws = [spawn_worker(addr, str(tmp_path), f"w{i}", 2) for i in range(2)]
    try:
        b = await connect_batch(addr)
        r = await b.submit(["sleep 0.3; echo $BRASIL_EXECUTION > out.$BRASIL_JOB"] * 16, tag="t",
                           home=str(home), isolate=True)
        await until(b, lambda ev: len(commits_per_job(ev)) >= 3)
        serve.kill()  # -9, mid-run
        serve.wait()
        await b.close()
        serve, addr2 = spawn_serve(str(tmp_path))
        assert addr2 == addr
        b = await connect_batch(addr)
        assert (await asyncio.wait_for(b.wait(tag="t"), 60))["done"] == 16
        check_exactly_once(await b.events("t"), home, r.ids)
        await b.close()
    finally:
        for p in ws + [serve]:
            stop(p)


def old_or_new(home, old: dict[str, str], new: dict[str, str]) -> str:
    now = tree(str(home))
    assert now in (old, new), f"a partial commit is visible: {now}"
    return "old" if now == old else "new"


COMMIT_JOB = "for f in a b c d; do echo new > $f; done; rm gone; echo $BRASIL_EXECUTION > out.$BRASIL_JOB"


def commit_home(home) -> tuple[dict[str, str], dict[str, str]]:
    home.mkdir()
    for f in "abcd":
        (home / f).write_text("old\n")
    (home / "gone").write_text("old\n")
    old = tree(str(home))
    return old, {f: "new\n" for f in "abcd"}


async def test_a_worker_killed_mid_commit_leaves_the_home_all_old_or_all_new(tmp_path):
    home = tmp_path / "home"
    old, new = commit_home(home)
    serve, addr = spawn_serve(str(tmp_path))
    slow = {SLOW: "0.4"}
    w1 = spawn_worker(addr, str(tmp_path), "w1", 1, env=slow)
    w2 = None
    try:
        b = await connect_batch(addr)
        await b.client.write("csrv/local/batch/ctl", f"lease {LEASE}\n")
        r = await b.submit([COMMIT_JOB], tag="t", home=str(home), isolate=True)
        # Killed while applying: two files are new, two still old.
        await wait_for(lambda: (home / "b").read_text() == "new\n", timeout=30, interval=0.005)
        w1.kill()  # mid-commit: it had applied b (seen above), and never says committed
        w1.wait()
        # The scheduler sees it gone and, the journal being whole, completes the commit: the home
        # is looked at once the job is done, never while that recovery still renames in it.
        assert (await asyncio.wait_for(b.wait(tag="t"), 30))["done"] == 1
        events = await b.events("t")
        assert [e.detail.split()[-3:] for e in events if e.kind == "commit"] == \
            [["completed", "by", "scheduler"]]
        new[f"out.{r.first}"] = tree(str(home))[f"out.{r.first}"]
        assert old_or_new(home, old, new) == "new"
        # Killed while staging (before the journal was whole): rolled back, all old, and the
        # job runs again on a worker that starts afterwards.
        (home / "gone").write_text("old\n")
        for f in "abcd":
            (home / f).write_text("old\n")
        os.unlink(home / f"out.{r.first}")
        w1 = spawn_worker(addr, str(tmp_path), "w1b", 1, env=slow)
        r2 = await b.submit([COMMIT_JOB], tag="t2", home=str(home), isolate=True)
        await wait_for(lambda: any(p.startswith(".brasil-commit") for p in os.listdir(home)),
                       timeout=30, interval=0.005)
        w1.kill()
        w1.wait()
        assert old_or_new(home, old, new) == "old"
        await until(b, lambda ev: any(e.kind == "rollback" and e.detail.startswith("committer lost")
                                      for e in ev), tag="t2")
        assert old_or_new(home, old, new) == "old"
        w2 = spawn_worker(addr, str(tmp_path), "w2", 1)
        assert (await asyncio.wait_for(b.wait(tag="t2"), 30))["done"] == 1
        new.pop(f"out.{r.first}")
        new[f"out.{r2.first}"] = tree(str(home))[f"out.{r2.first}"]
        assert old_or_new(home, old, new) == "new"
        assert len(commits_per_job(await b.events("t2"))[r2.first]) == 1
        await b.close()
    finally:
        for p in (w1, w2, serve):
            if p is not None:
                stop(p)


async def test_the_scheduler_killed_mid_commit_leaves_the_home_all_old_or_all_new(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    home = export / "home"
    old, new = commit_home(home)
    serve, addr = spawn_serve(str(tmp_path), "sched", "--export", str(export), env={SLOW: "0.4"})
    w = spawn_worker(addr, str(tmp_path), "remote", 1, "--remote-homes")
    try:
        b = await connect_batch(addr)
        r = await b.submit([COMMIT_JOB], tag="t", home=str(home), isolate=True)
        # A remote worker's commit is applied by the scheduler: kill it halfway through.
        await wait_for(lambda: (home / "b").read_text() == "new\n", timeout=30, interval=0.005)
        serve.kill()
        serve.wait()
        await b.close()
        serve, _ = spawn_serve(str(tmp_path), "sched", "--export", str(export))
        b = await connect_batch(addr)
        assert (await asyncio.wait_for(b.wait(tag="t"), 30))["done"] == 1
        new[f"out.{r.first}"] = tree(str(home))[f"out.{r.first}"]
        assert old_or_new(home, old, new) == "new"
        assert len(commits_per_job(await b.events("t"))[r.first]) == 1
        await b.close()
    finally:
        for p in (w, serve):
            stop(p)


async def test_a_worker_killed_with_9_takes_its_jobs_processes_with_it(tmp_path):
    # Orphaned, a plain job would run on while the scheduler ran it again: side effects twice.
    home = tmp_path / "home"
    home.mkdir()
    serve, addr = spawn_serve(str(tmp_path))
    victim = spawn_worker(addr, str(tmp_path), "victim", 1)
    pids: list[int] = []
    try:
        b = await connect_batch(addr)
        await b.submit(["sleep 60 & echo $$ $! > pids; wait"], tag="t", home=str(home))
        await wait_for(lambda: len((home / "pids").read_text().split()) == 2
                       if (home / "pids").exists() else False, timeout=30)
        pids = [int(p) for p in (home / "pids").read_text().split()]
        assert all(alive(p) for p in pids)
        victim.kill()  # -9: the worker cannot clean up; its watchdog must
        victim.wait()
        await wait_for(lambda: not any(alive(p) for p in pids), timeout=10)
        await b.close()
    finally:
        for p in pids:  # never leave a sleeper behind, whatever happened
            if alive(p):
                os.kill(p, signal.SIGKILL)
        for proc in (victim, serve):
            stop(proc)
