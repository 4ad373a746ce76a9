"""The scheduler end to end, on SQLite and on PostgreSQL: DAGs in dependency order, failures and
their reasons, bad input, isolation and the winner's commit, redundancy, cancel, restart."""

from __future__ import annotations

import asyncio
import os

import pytest

from batch_fixtures import commits_per_job, db_url, postgres_server, scheduler, tree, workers  # noqa: F401
from brasil.ninep.errors import NinepError
from fixtures import wait_for

WAIT = 120  # generous: CI and users' machines are busy; no test here times anything


def order_ok(events, deps: dict[int, list[int]]) -> list[str]:
    """Violations: a job assigned before one of its dependencies had ended."""
    ended: dict[int, float] = {}
    assigned: dict[int, float] = {}
    for e in events:
        if e.kind in ("finish", "commit") and e.job is not None and e.detail.split()[:1] != ["1"]:
            ended[e.job] = max(ended.get(e.job, 0), e.t)
        if e.kind == "assign" and e.job is not None:
            assigned.setdefault(e.job, e.t)
    return [f"{j} before {d}" for j, ds in deps.items() for d in ds
            if assigned[j] < ended[d]]


async def test_a_diamond_runs_in_dependency_order(db_url, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    text = (b"job a -- echo a > a\n"
            b"job b after:a -- cat a > b; echo b >> b\n"
            b"job c after:a isolate -- cat a > c; echo c >> c\n"
            b"job d after:b,c -- cat b c > d\n")
    async with scheduler(str(tmp_path), db_url) as (d, s, b), workers(d.unix, str(tmp_path)):
        r = await b.submit_stream([text], tag="diamond", home=str(home))
        assert await asyncio.wait_for(b.wait(tag="diamond"), WAIT) == {
            "total": 4, "waiting": 0, "ready": 0, "running": 0, "exiting": 0, "done": 4,
            "failed": 0, "cancelled": 0}
        n = r.names
        deps = {n["b"]: [n["a"]], n["c"]: [n["a"]], n["d"]: [n["b"], n["c"]]}
        assert order_ok(await b.events("diamond"), deps) == []
    assert (home / "d").read_text() == "a\nb\na\nc\n"


async def test_a_chain_of_fan_outs_of_100_jobs_runs_in_order(db_url, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    lines, deps = [], {}
    for stage in range(20):
        for k in range(5):
            after = f" after:{','.join(f's{stage - 1}_{j}' for j in range(5))}" if stage else ""
            prev = f"test -f s{stage - 1}_{k} && " if stage else ""
            lines.append(f"job s{stage}_{k}{after} -- {prev}echo {stage} > s{stage}_{k}\n")
    async with scheduler(str(tmp_path), db_url) as (d, s, b), \
            workers(d.unix, str(tmp_path), n=2, slots=3):
        r = await b.submit_stream(["".join(lines).encode()], tag="chain", home=str(home))
        assert r.last - r.first + 1 == 100
        summary = await asyncio.wait_for(b.wait(tag="chain"), WAIT)
        assert summary["done"] == 100, await b.jobs("chain")
        for stage in range(1, 20):
            for k in range(5):
                deps[r.names[f"s{stage}_{k}"]] = [r.names[f"s{stage - 1}_{j}"] for j in range(5)]
        assert order_ok(await b.events("chain"), deps) == []
    assert len(list(home.iterdir())) == 100


async def test_a_failed_dependency_cancels_what_follows_with_the_reason(db_url, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    text = (b"job bad retries:1 -- exit 3\n"
            b"job next after:bad -- true\n"
            b"job last after:next -- true\n"
            b"job fine -- true\n")
    async with scheduler(str(tmp_path), db_url) as (d, s, b), workers(d.unix, str(tmp_path)):
        r = await b.submit_stream([text], tag="f", home=str(home))
        summary = await asyncio.wait_for(b.wait(tag="f"), WAIT)
        assert (summary["done"], summary["failed"], summary["cancelled"]) == (1, 1, 2)
        jobs = {j.name: j for j in await b.jobs("f")}
        assert jobs["bad"].state == "failed" and jobs["bad"].exit_status == 3
        assert "exit status 3" in jobs["bad"].reason and "retries spent" in jobs["bad"].reason
        assert jobs["next"].reason == f"dependency {r.names['bad']} failed"
        assert jobs["last"].reason == f"dependency {r.names['next']} cancelled"
        runs = [e for e in await b.events("f") if e.kind == "assign" and e.job == r.names["bad"]]
        assert len(runs) == 2  # retries:1 → two executions
        # A job submitted after a failed one is cancelled at once, saying why.
        late = await b.submit(["true"], tag="f2", home=str(home), after=[r.names["bad"]])
        assert (await b.job(late.first)).state == "cancelled"
        assert (await b.job(late.first)).reason == f"dependency {r.names['bad']} failed"


async def test_bad_input_is_refused_with_a_clear_error(db_url, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    async with scheduler(str(tmp_path), db_url) as (d, s, b):
        with pytest.raises(NinepError, match=r"jobs\.txt:3: expected: job NAME"):
            await b.submit_stream([b"true\n# fine\njob broken after:x\n"], home=str(home),
                                  filename="jobs.txt")
        with pytest.raises(NinepError, match=r"<submit>:1: dependency cycle: a after b after c after a"):
            await b.submit_stream([b"job a after:b -- true\njob b after:c -- true\n"
                                   b"job c after:a -- true\n"], home=str(home))
        with pytest.raises(NinepError, match=r"after 4242: there is no job 4242"):
            await b.submit(["true"], home=str(home), after=[4242])
        with pytest.raises(NinepError, match=r"redundancy must be 1 or more .*not 0"):
            await b.submit(["true"], home=str(home), redundancy=0)
        with pytest.raises(NinepError, match=rf"home {tmp_path}/nowhere does not exist"):
            await b.submit(["true"], home=str(tmp_path / "nowhere"))
        with pytest.raises(NinepError, match=r"there is no job 777"):
            await b.cancel([777])
        with pytest.raises(NinepError, match=r"there is no job 778"):
            await b.job(778)
        with pytest.raises(NinepError, match=r"there is no job 779"):
            await b.wait(ids=[779])
        assert (await b.summary())["total"] == 0  # nothing of the refused submissions was kept


async def test_isolated_executions_see_only_their_own_changes_and_the_winner_commits(
        db_url, tmp_path):  # noqa: F811
    home, meet = tmp_path / "home", tmp_path / "meet"
    home.mkdir()
    meet.mkdir()
    (home / "in.txt").write_text("input\n")
    (home / "keep.txt").write_text("kept\n")
    (home / "data").mkdir()
    (home / "data" / "old1").write_text("1")
    (home / "data" / "old2").write_text("2")
    (home / "sub").mkdir()
    (home / "sub" / "gone").write_text("g")
    (home / "sub" / "stays").write_text("s")
    barrier = (f"touch {meet}/$1.$BRASIL_EXECUTION; n=0; while [ $(ls {meet} | grep -c ^$1) -lt 2 ];"
               " do sleep 0.02; n=$((n+1)); if [ $n -gt 1000 ]; then exit 7; fi; done")
    script = tmp_path / "job.sh"
    script.write_text(f"""set -e
barrier() {{ {barrier}; }}
test -f in.txt
barrier started
echo $BRASIL_EXECUTION > out.txt
rm in.txt
rm -rf data && mkdir data && echo new > data/fresh
rm sub/gone
barrier wrote
echo "out=$(cat out.txt) in=$(test -f in.txt && echo present || echo absent)" > {meet}/saw.$BRASIL_EXECUTION
barrier saw
""")
    async with scheduler(str(tmp_path), db_url) as (d, s, b), \
            workers(d.unix, str(tmp_path), n=2, slots=1):
        r = await b.submit([f"sh {script}"], tag="iso", home=str(home), isolate=True,
                           redundancy=2, retries=0)
        summary = await asyncio.wait_for(b.wait(tag="iso"), WAIT)
        assert summary["done"] == 1, await b.jobs("iso")
        events = await b.events("iso")
        tokens = sorted({e.execution for e in events if e.kind == "assign"})
        assert len(tokens) == 2  # the job ran twice at once
        for t in tokens:  # each saw its own out.txt and its own deletion, nothing of the other's
            assert (meet / f"saw.{t}").read_text() == f"out={t} in=absent\n"
        winner = commits_per_job(events)[r.first]
        assert len(winner) == 1
    assert tree(str(home)) == {"out.txt": f"{winner[0]}\n", "keep.txt": "kept\n",
                               "data/fresh": "new\n", "sub/stays": "s"}
    assert not [p for p in os.listdir(home) if p.startswith(".brasil")]


async def test_when_one_execution_commits_the_others_are_killed_at_once(db_url, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    async with scheduler(str(tmp_path), db_url) as (d, s, b), \
            workers(d.unix, str(tmp_path / "slow"), n=1, slots=1, env={"SLOW": "60"}) as slow, \
            workers(d.unix, str(tmp_path / "fast"), n=1, slots=1, env={"SLOW": "0.3"}):
        # The slow worker takes the job first; the fast one runs it again and wins.
        await wait_for(lambda: all(w.connected.is_set() for w in slow))
        r = await b.submit(["sleep $SLOW; echo $SLOW > which"], tag="k", home=str(home),
                           isolate=True)
        summary = await asyncio.wait_for(b.wait(tag="k"), 30)
        assert summary["done"] == 1
        events = await b.events("k")
        kills = [e for e in events if e.kind == "kill"]
        assert len(kills) == 1 and kills[0].worker == slow[0].name
        await wait_for(lambda: not slow[0].execs, timeout=10)  # killed and rolled back
        assert any(e.kind == "rollback" and e.execution == kills[0].execution
                   for e in await b.events("k"))
        assert r.first in commits_per_job(events)
    assert (home / "which").read_text() == "0.3\n"


async def test_redundancy_1_never_runs_a_job_twice(db_url, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    async with scheduler(str(tmp_path), db_url) as (d, s, b), \
            workers(d.unix, str(tmp_path), n=2, slots=2):
        await b.submit(["sleep 0.3"] * 2, tag="r1", home=str(home), isolate=True, redundancy=1)
        assert (await asyncio.wait_for(b.wait(tag="r1"), WAIT))["done"] == 2
        assert len([e for e in await b.events("r1") if e.kind == "assign"]) == 2


async def test_cancel_kills_running_jobs_and_cancels_their_dependents(db_url, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    async with scheduler(str(tmp_path), db_url) as (d, s, b), \
            workers(d.unix, str(tmp_path), n=1, slots=1) as ws:
        r = await b.submit_stream([b"job long -- sleep 60\njob after after:long -- true\n"],
                                  tag="c", home=str(home))
        await wait_for(lambda: any(e.state == "running" for e in ws[0].execs.values()), 10)
        await b.cancel([r.names["long"]])
        summary = await asyncio.wait_for(b.wait(tag="c"), 20)
        assert summary["cancelled"] == 2
        await wait_for(lambda: not ws[0].execs, timeout=10)
        jobs = {j.name: j for j in await b.jobs("c")}
        assert jobs["long"].reason == "cancelled by request"
        assert jobs["after"].reason == f"dependency {r.names['long']} cancelled"
        with pytest.raises(NinepError, match="is cancelled: cannot cancel now"):
            await b.cancel([r.names["long"]])


async def test_a_restarted_scheduler_resumes_from_the_database(db_url, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    first = scheduler(str(tmp_path), db_url)
    d, s, b = await first.__aenter__()
    try:
        async with workers(d.unix, str(tmp_path), n=2, slots=2) as ws:
            r = await b.submit(["sleep 0.2; echo $BRASIL_EXECUTION > out.$BRASIL_JOB"] * 12,
                               tag="re", home=str(home), isolate=True)
            await wait_for(lambda: sum(w.completed for w in ws) >= 3, timeout=30)
            await first.__aexit__(None, None, None)
            first = None
            async with scheduler(str(tmp_path), db_url) as (d2, s2, b2):
                assert (await asyncio.wait_for(b2.wait(tag="re"), WAIT))["done"] == 12
                commits = commits_per_job(await b2.events("re"))
        files = tree(str(home))
        assert sorted(commits) == list(r.ids)
        for j, tokens in commits.items():
            assert len(tokens) == 1 and files[f"out.{j}"] == f"{tokens[0]}\n"
    finally:
        if first is not None:
            await first.__aexit__(None, None, None)


async def test_a_worker_whose_connection_closes_is_gone_at_once_and_dropped_later(tmp_path):
    # With a lease of 30 s, waiting for leases would take 30 s; a closed connection says at once.
    home = tmp_path / "home"
    home.mkdir()
    async with scheduler(str(tmp_path), lease=30.0) as (d, s, b):
        async with workers(d.unix, str(tmp_path), n=1, slots=1) as [idle]:
            pass  # a worker that goes while idle: no job may be given to it
        await wait_for(lambda: s.workers[idle.name].gone_since is not None, timeout=20)
        async with workers(d.unix, str(tmp_path), n=1, slots=1) as [busy]:
            r = await b.submit(["[ -e ran ] || { touch ran; sleep 60; }"], tag="g", home=str(home))
            # "running" is not enough: stopped before its shell has touched `ran`, the job would
            # sleep 60 s on its next worker too
            await wait_for(lambda: (home / "ran").exists(), 10)
        # busy is stopped (its connection closed): its execution is lost now, the job ready again
        await wait_for(lambda: s.workers[busy.name].gone_since is not None, timeout=20)
        await wait_for(lambda: busy.name not in s.owner.values(), timeout=20)
        assert (await b.jobs("g"))[0].state == "ready"
        lines = (await b.client.read("csrv/local/batch/workerlist")).decode().splitlines()
        assert [ln.split()[0] for ln in lines if " gone " in ln] == sorted([idle.name, busy.name])
        r2 = await b.submit(["true"], tag="g", home=str(home))
        async with workers(d.unix, str(tmp_path), n=1, slots=1) as [other]:
            # well within the 30 s lease: the closed connection, not the lease, freed the job
            assert (await asyncio.wait_for(b.wait(tag="g"), 25))["done"] == 2
        events = await b.events("g")
        lost = [e for e in events if e.kind == "lease_lost"]
        assert [(e.worker, e.detail) for e in lost] == [(busy.name, "worker disconnected")]
        assert [e.worker for e in events if e.kind == "assign"] == [busy.name, other.name,
                                                                    other.name], (r, r2)
        # Long gone, they leave the list (and workers/).
        s.forget_after = 0.0
        await wait_for(lambda: busy.name not in s.workers and idle.name not in s.workers, 10)
        lines = (await b.client.read("csrv/local/batch/workerlist")).decode()
        assert busy.name not in lines and idle.name not in lines
        names = {st.name for st in await b.client.ls("csrv/local/batch/workers")}
        assert busy.name not in names and idle.name not in names


async def test_a_killed_executions_start_is_kept_and_the_report_counts_it(tmp_path):
    # Workers hold a start back until their next write (here a renewal every 7.5 s): the
    # redundant execution is killed, its start arriving afterwards, with its "gone".
    from brasil.batch.report import build
    home = tmp_path / "home"
    home.mkdir()
    flag = tmp_path / "flag"  # outside the home: not isolated, so the executions race for it
    async with scheduler(str(tmp_path), lease=30.0) as (d, s, b), \
            workers(d.unix, str(tmp_path), n=2, slots=1):
        await b.submit([f"if mkdir {flag}; then sleep 0.3; echo won > out; else sleep 60; fi"],
                       tag="k", home=str(home), isolate=True, redundancy=2)
        assert (await asyncio.wait_for(b.wait(tag="k"), 20))["done"] == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:  # the killed execution's gone (and start) come just after the commit
            events = await b.events("k")
            if any(e.kind == "rollback" for e in events) or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        killed = {e.execution for e in events if e.kind == "kill"}
        assert len(killed) == 1
        assert killed <= {e.execution for e in events if e.kind == "start"}
        f = build("k", await b.jobs("k"), events).figures
        assert (f["executions"], f["killed"], f["redundant"]) == (2, 1, 1)
        assert f["redundant work wasted"] > 0


async def test_a_job_too_large_for_a_worker_is_cancelled_and_never_wedges_it(tmp_path):
    # Submission refuses such jobs (test_batch_units); one already in the database (submitted
    # before that check) once wedged the worker it was given to, in a reconnect loop, for ever.
    from brasil.batch.jobfile import Defaults
    home = tmp_path / "home"
    home.mkdir()
    async with scheduler(str(tmp_path)) as (d, s, b), \
            workers(d.unix, str(tmp_path), n=1, slots=1) as [w]:
        big = Defaults(tag="big", home=str(home)).spec("echo " + "a" * 2_000_000, 1)
        first, _ = await s.submit([big])
        await b.submit(["true"], tag="big", home=str(home), after=[first])
        await b.submit(["true"], tag="small", home=str(home))
        assert (await asyncio.wait_for(b.wait(tag="small"), 20))["done"] == 1
        assert (await asyncio.wait_for(b.wait(tag="big"), 20))["cancelled"] == 2
        reasons = [j.reason for j in await b.jobs("big")]
        assert reasons[0].startswith("too large for a worker to read: its assignment is ")
        assert reasons[1] == f"dependency {first} cancelled"
        assert w.connected.is_set()


async def test_redundant_copies_of_a_job_run_in_different_domains(tmp_path):
    # Issue 21 §2: a rack's failure must not take every copy. Rack a's two workers come first:
    # the job runs on one of them, and the other, idle, must not take its redundant copy;
    # rack b's worker, when it comes, does.
    home = tmp_path / "home"
    home.mkdir()
    go = tmp_path / "go"
    async with scheduler(str(tmp_path)) as (d, s, b), \
            workers(d.unix, str(tmp_path / "a"), n=2, slots=1, domain="a") as rack_a:
        await b.submit([f"while [ ! -e {go} ]; do sleep 0.05; done"], tag="d", home=str(home),
                       isolate=True, redundancy=2)
        await wait_for(lambda: sum(len(w.execs) for w in rack_a) >= 1, timeout=20)
        async with workers(d.unix, str(tmp_path / "b"), n=1, slots=1, domain="b") as rack_b:
            await wait_for(lambda: len(rack_b[0].execs) == 1, timeout=20)
            assert sum(len(w.execs) for w in rack_a) == 1  # never a second copy in rack a
            go.touch()
            assert (await asyncio.wait_for(b.wait(tag="d"), WAIT))["done"] == 1
        domains = {w.name: w.domain for w in [*rack_a, *rack_b]}
        assigned = [domains[e.worker] for e in await b.events("d") if e.kind == "assign"]
        assert sorted(assigned) == ["a", "b"]


async def test_a_worker_domain_that_is_not_a_word_is_refused(tmp_path):
    async with scheduler(str(tmp_path)) as (d, s, b):
        with pytest.raises(NinepError, match=r"worker: domain 'rack 1;x': use letters, digits"):
            await b.client.write("csrv/local/batch/ctl", "worker w1 1 domain=rack\\ 1;x\n")


async def test_an_idle_placeholder_sends_no_renewal_and_stays_live(tmp_path):
    """Holding nothing, a worker writes nothing to its ctl (at 10,000 placeholders the empty
    renewals were a third of the scheduler's core): its read of ``next``, answered every third
    of a lease, keeps it live, and after several leases idle it still gets the next job."""
    home = tmp_path / "home"
    home.mkdir()
    lease = 0.6
    async with scheduler(str(tmp_path), lease=lease) as (d, s, b), \
            workers(d.unix, str(tmp_path), n=1, slots=1) as [w]:
        await wait_for(lambda: w.lease == lease, timeout=10)  # learned from the scheduler
        heard: list[str] = []
        real = s.report

        async def report(name: str, text: str) -> None:  # what reaches the scheduler
            heard.append(text)
            await real(name, text)
        s.report = report  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        until = loop.time() + 4 * lease  # 16 of its renewal periods
        await wait_for(lambda: loop.time() > until, timeout=10)
        assert not any("renew" in t for t in heard), heard
        assert s.workers[w.name].live(loop.time(), s.lease)
        await b.submit(["echo ran > out"], tag="idle", home=str(home))
        assert (await asyncio.wait_for(b.wait(tag="idle"), 20))["done"] == 1
        assert any("done" in t for t in heard)  # (the spy saw the worker's reports)
