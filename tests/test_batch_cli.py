"""The batch command line against a real `brasil serve`: submit (one job, a file, stdin), jobs,
wait (exit status), cancel, report (text and picture), clear errors; and `brasil workers N`,
which starts workers anywhere in a tree through a session."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import services
from batch_fixtures import spawn_worker
from fixtures import spawn_serve, stop


def brasil(addr: str, *args: str, cwd: str | None = None, stdin: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd, input=stdin, timeout=timeout,
                          env={**os.environ, "BRASIL": addr})


def _ready(addr: str) -> None:
    deadline = time.monotonic() + 20
    while brasil(addr, "cat", "/csrv/local/batch/ctl").returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def scheduler_with_worker(tmp_path, slots: int = 2, name: str = "w",
                          *worker_args: str):
    """A real `brasil serve` and one worker ``name``, once the scheduler answers (both stopped
    if it never does)."""
    serve, addr = spawn_serve(str(tmp_path))
    w = spawn_worker(addr, str(tmp_path), name, slots, *worker_args)
    try:
        _ready(addr)
    except BaseException:
        stop(w)
        stop(serve)
        raise
    return serve, addr, w


def test_submit_jobs_wait_cancel_report(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve, addr, w = scheduler_with_worker(tmp_path)
    try:
        r = brasil(addr, "submit", "--tag", "one", "--", "echo hello > greeting", cwd=str(home))
        assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
        jobs = tmp_path / "dag.jobs"
        jobs.write_text("job a -- echo a > a.out\njob b after:a isolate -- cat a.out > b.out\n"
                        "job c after:b -- exit 4\njob d after:c -- true\n")
        r = brasil(addr, "submit", "--tag", "dag", "--retries", "0", "--file", str(jobs),
                   cwd=str(home))
        assert r.stdout.splitlines() == ["2-5", "2 a", "3 b", "4 c", "5 d"], r.stderr
        r = brasil(addr, "submit", "--tag", "piped", "--file", "-", cwd=str(home),
                   stdin="true\ntrue\n")
        assert r.stdout.strip() == "6-7", r.stderr
        assert brasil(addr, "wait", "--tag", "one").returncode == 0
        r = brasil(addr, "wait", "--tag", "dag")
        assert r.returncode == 1 and "failed 1" in r.stdout and "cancelled 1" in r.stdout
        assert brasil(addr, "wait", "6", "7").returncode == 0
        assert (home / "greeting").read_text() == "hello\n"
        assert (home / "b.out").read_text() == "a\n"
        listing = brasil(addr, "jobs", "--tag", "dag").stdout
        assert "dependency 4 failed" in listing and "exit status 4" in listing
        assert listing.splitlines()[-1].startswith("total 4 ")
        r = brasil(addr, "submit", "--tag", "long", "--", "sleep", "60", cwd=str(home))
        assert brasil(addr, "cancel", r.stdout.strip()).returncode == 0
        assert brasil(addr, "wait", "--tag", "long").returncode == 1
        png = tmp_path / "dag.png"
        r = brasil(addr, "report", "--tag", "dag", "--out", str(png))
        assert r.returncode == 0 and "makespan" in r.stdout and "staggered end" in r.stdout
        assert png.read_bytes().startswith(b"\x89PNG")
        html = tmp_path / "dag.html"
        assert brasil(addr, "report", "--tag", "dag", "--out", str(html)).returncode == 0
        assert "data:image/png;base64," in html.read_text()
        # Several words stay words (shlex.join), as with brasil run; one word is shell text.
        r = brasil(addr, "submit", "--tag", "q", "--", "sh", "-c", "echo one; echo two",
                   cwd=str(home))
        q1 = r.stdout.strip()
        r = brasil(addr, "submit", "--tag", "q", "--", "printf", "%s\\n", "a b", "it's",
                   cwd=str(home))
        q2 = r.stdout.strip()
        assert brasil(addr, "wait", "--tag", "q").returncode == 0
        out = {j: "".join(p.read_text() for p in (tmp_path / "w" / "out").glob(f"{j}.*"))
               for j in (q1, q2)}
        assert out == {q1: "one\ntwo\n", q2: "a b\nit's\n"}
        # Clear errors, each naming the fix.
        r = brasil(addr, "wait", "99")
        assert r.returncode == 1 and "there is no job 99" in r.stderr
        r = brasil(addr, "submit", "--home", str(tmp_path / "missing"), "--", "true")
        assert r.returncode == 1 and r.stderr.startswith(
            f"brasil submit: <command>:1: home {tmp_path}/missing does not exist"), r.stderr
        (tmp_path / "missing.jobs").write_text("true\n")
        r = brasil(addr, "submit", "--home", str(tmp_path / "missing"), "--file",
                   str(tmp_path / "missing.jobs"))
        assert r.stderr.startswith("brasil submit: missing.jobs:1: home "), r.stderr
        (tmp_path / "empty.jobs").write_text("# nothing\n")
        r = brasil(addr, "submit", "--file", str(tmp_path / "empty.jobs"), cwd=str(home))
        assert r.returncode == 1
        assert r.stderr == "brasil submit: no jobs (every line was blank or a comment)\n"
        for verb in ("wait", "cancel"):
            r = brasil(addr, verb, "--tag", "nosuchtag")
            assert r.returncode == 2 and r.stderr == (
                f"brasil {verb}: no jobs tagged 'nosuchtag' (brasil jobs lists the tags)\n")
        described = " ".join(brasil(addr, "cancel", "--help").stdout.split())
        assert "every unfinished job of --tag" in described
        r = brasil(addr, "cancel", "4242")
        assert r.returncode == 1 and "there is no job 4242" in r.stderr
        r = brasil(addr, "submit", "--after", "4242", "--", "true", cwd=str(home))
        assert r.returncode == 1 and "there is no job 4242" in r.stderr
        r = brasil(addr, "report", "--tag", "nothing")
        assert r.returncode == 2 and "no jobs tagged 'nothing'" in r.stderr
    finally:
        stop(w)
        stop(serve)


def test_retry_runs_failed_jobs_again_and_their_cancelled_dependants_wait_again(tmp_path):
    """Issue 16 §6: after a workload with failures there was no way to resubmit the failed jobs,
    and `brasil wait --tag T` stayed failed forever."""
    home = tmp_path / "home"
    home.mkdir()
    serve, addr, w = scheduler_with_worker(tmp_path)
    try:
        jobs = tmp_path / "flaky.jobs"
        jobs.write_text("job a -- test -e ready\njob b after:a -- echo b > b.out\n"
                        "job c after:b -- echo c > c.out\njob other -- exit 3\n")
        r = brasil(addr, "submit", "--tag", "t", "--retries", "0", "--file", str(jobs),
                   cwd=str(home))
        assert r.returncode == 0, r.stderr
        r = brasil(addr, "wait", "--tag", "t")
        assert r.returncode == 1 and "failed 2" in r.stdout and "cancelled 2" in r.stdout
        (home / "ready").touch()
        r = brasil(addr, "retry", "1")  # job a only: b and c come back, `other` stays failed
        assert r.returncode == 0 and "retrying 1 failed job(s)" in r.stderr, r.stderr
        r = brasil(addr, "wait", "1", "2", "3")
        assert r.returncode == 0, r.stdout
        assert (home / "c.out").read_text() == "c\n"
        r = brasil(addr, "retry", "2")
        assert r.returncode == 1 and "job 2 is done, not failed" in r.stderr
        r = brasil(addr, "retry", "--tag", "t", "--retries", "1")
        assert r.returncode == 0 and "retrying 1 failed job(s)" in r.stderr
        r = brasil(addr, "wait", "--tag", "t")
        assert r.returncode == 1 and "failed 1" in r.stdout  # `other` failed twice more
        events = brasil(addr, "cat", "/csrv/local/batch/events").stdout
        assert events.count(" retry_request 4 ") == 1 and events.count(" restore ") == 2
        r = brasil(addr, "retry")
        assert r.returncode == 2 and "--tag T, --failed or job ids" in r.stderr
        r = brasil(addr, "jobs", "--tag", "t", "--state", "failed")
        assert [ln.split()[0] for ln in r.stdout.splitlines()[:-1]] == ["4"], r.stdout
        r = brasil(addr, "jobs", "--state", "broken")
        assert r.returncode == 2 and "a job is one of waiting" in r.stderr
        stop(w)  # no worker: wait says so instead of blocking in silence
        r = brasil(addr, "submit", "--tag", "idle", "--", "true", cwd=str(home))
        p = subprocess.Popen([sys.executable, "-m", "brasil.cli.main", "wait", "--tag", "idle"],
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "BRASIL": addr})
        try:
            assert p.stderr is not None
            assert "no worker is connected" in p.stderr.readline()
        finally:
            p.kill()
            p.wait()
    finally:
        stop(w)
        stop(serve)


def test_output_prints_a_jobs_output_from_the_scheduler_even_after_its_worker_is_gone(tmp_path):
    """Issue 16 §6: a job's output lived only in its worker's out/ directory, found through
    events; `brasil output ID` (as `hq job cat`) prints it, wherever the worker ran."""
    home = tmp_path / "home"
    home.mkdir()
    serve, addr, w = scheduler_with_worker(tmp_path)
    try:
        r = brasil(addr, "submit", "--tag", "o", "--retries", "0", "--",
                   "echo hello; echo oops >&2",
                   cwd=str(home))
        ok = r.stdout.strip()
        big = brasil(addr, "submit", "--tag", "o", "--retries", "1", "--",
                     "seq 1 5000; exit 3", cwd=str(home)).stdout.strip()
        running = brasil(addr, "submit", "--tag", "slow", "--", "sleep 60",
                         cwd=str(home)).stdout.strip()
        assert brasil(addr, "wait", "--tag", "o").returncode == 1
        stop(w)  # the scheduler keeps the output's end: the worker need not be there
        r = brasil(addr, "output", ok)
        assert r.returncode == 0 and r.stdout == "hello\noops\n", r.stderr
        assert "all 11 bytes of its winning execution" in r.stderr and "on worker w" in r.stderr
        r = brasil(addr, "output", big)
        assert r.returncode == 0 and r.stdout.endswith("4999\n5000\n"), r.stderr
        assert len(r.stdout.encode()) == 4096 and "of its last execution" in r.stderr
        place = r.stderr.rpartition("the whole file: ")[2].strip()
        assert place.partition(":")[2].startswith(str(tmp_path / "w" / "out"))
        assert open(place.partition(":")[2]).read().startswith("1\n2\n3\n")
        r = brasil(addr, "output", running)
        assert r.returncode == 1 and "no execution of it has ended yet" in r.stderr
        r = brasil(addr, "output", "999")
        assert r.returncode != 0 and "there is no job 999" in r.stderr
    finally:
        stop(w)
        stop(serve)


def test_worker_keeps_only_the_last_outputs(tmp_path):
    """Issue 16 §6: a worker's out/ directory grew for ever; --keep-outputs N bounds it."""
    home = tmp_path / "home"
    home.mkdir()
    old = tmp_path / "w" / "out"
    old.parent.mkdir(mode=0o700)
    old.mkdir(mode=0o700)
    (old / "7.7").write_text("from an earlier run\n")
    (old / "notes").write_text("not an output: left alone\n")
    serve, addr, w = scheduler_with_worker(tmp_path, 1, "w", "--keep-outputs", "3")
    try:
        jobs = "".join(f"echo {i}\n" for i in range(6))
        r = brasil(addr, "submit", "--tag", "k", "--file", "-", cwd=str(home), stdin=jobs)
        assert r.returncode == 0, r.stderr
        assert brasil(addr, "wait", "--tag", "k").returncode == 0
        kept = sorted(os.listdir(old))
        assert len(kept) == 4 and "notes" in kept and "7.7" not in kept, kept
        assert brasil(addr, "output", "1").stdout == "0\n"  # the scheduler still has it
    finally:
        stop(w)
        stop(serve)


def test_jobs_shows_the_worker_each_job_ran_on_and_when(tmp_path):
    """Issue 16 §6: `brasil jobs` did not say where or when a job ran."""
    import re
    home = tmp_path / "home"
    home.mkdir()
    serve, addr, w = scheduler_with_worker(tmp_path, 1, "wk7")
    try:
        r = brasil(addr, "submit", "--tag", "j", "--", "sleep 0.3", cwd=str(home))
        assert r.returncode == 0, r.stderr
        assert brasil(addr, "wait", "--tag", "j").returncode == 0
        running = brasil(addr, "submit", "--tag", "q", "--", "sleep 60",
                         cwd=str(home)).stdout.strip()
        brasil(addr, "submit", "--tag", "q", "--after", running, "--", "true", cwd=str(home))
        deadline = time.monotonic() + 20
        while True:
            lines = brasil(addr, "jobs").stdout.splitlines()
            if lines[1].split()[6] != "-":  # its start comes with the worker's next write
                break
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        ran = lines[0].split()
        assert ran[:6] == ["1", "done", "j", "-", "0", "wk7"], lines[0]
        assert re.fullmatch(r"\d\d:\d\d:\d\d", ran[6]) and re.fullmatch(r"0\.\ds", ran[7]), ran
        assert float(ran[7][:-1]) >= 0.3
        assert lines[1].split()[1] == "running" and lines[1].split()[5] == "wk7", lines[1]
        assert lines[1].split()[7].endswith("…"), lines[1]  # still running: so far
        assert lines[2].split()[:8] == ["3", "waiting", "q", "-", "-", "-", "-", "-"], lines[2]
        assert brasil(addr, "cancel", "--tag", "q").returncode == 0
    finally:
        stop(w)
        stop(serve)


def test_a_failed_job_waits_before_its_retry_and_goes_to_another_worker(tmp_path):
    """Issue 16 §6: a failed job was ready again at once, and the worker it failed on (whose
    report freed its slot) took it straight back; now the retry waits 1 s × 2^k and another
    worker with a free slot gets it."""
    home = tmp_path / "home"
    home.mkdir()
    serve, addr = spawn_serve(str(tmp_path))
    a = spawn_worker(addr, str(tmp_path), "a", 1)
    b = spawn_worker(addr, str(tmp_path), "b", 1)
    try:
        _ready(addr)
        deadline = time.monotonic() + 20
        while brasil(addr, "cat", "/csrv/local/batch/workerlist").stdout.count("\n") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = brasil(addr, "submit", "--tag", "f", "--retries", "3", "--",
                   "echo $BRASIL_WORKER >> workers; [ $(wc -l < workers) -ge 3 ]", cwd=str(home))
        assert r.returncode == 0, r.stderr
        assert brasil(addr, "wait", "--tag", "f").returncode == 0
        ran = (home / "workers").read_text().split()
        assert len(ran) == 3 and ran[0] != ran[1] and ran[1] != ran[2], ran
        events = [ln.split(" ", 5) for ln in
                  brasil(addr, "cat", "/csrv/local/batch/events").stdout.splitlines()]
        retries = [e for e in events if e[1] == "retry"]
        assigns = [float(e[0]) for e in events if e[1] == "assign"]
        assert [e[5].split(";")[1].strip() for e in retries] == [
            "again in 1 s, preferably elsewhere", "again in 2 s, preferably elsewhere"]
        assert assigns[1] >= float(retries[0][0]) + 1 and assigns[2] >= float(retries[1][0]) + 2
    finally:
        stop(a)
        stop(b)
        stop(serve)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_timeout_kills_a_job_running_too_long_with_its_children_and_fails_it(tmp_path):
    """Issue 16 §6: a job had no time limit; `--timeout S` (and `timeout:S` in job files)
    kills an execution running longer — its whole process group — as a failure that says so."""
    home = tmp_path / "home"
    home.mkdir()
    serve, addr, w = scheduler_with_worker(tmp_path)
    try:
        r = brasil(addr, "submit", "--tag", "t", "--timeout", "1", "--retries", "0", "--",
                   "sleep 300 & echo $! > child.pid; wait", cwd=str(home))
        assert r.returncode == 0, r.stderr
        jobs = tmp_path / "t.jobs"
        jobs.write_text("job quick timeout:30 -- true\njob slow timeout:1 retries:1 -- sleep 300\n")
        assert brasil(addr, "submit", "--tag", "t", "--file", str(jobs),
                      cwd=str(home)).returncode == 0
        r = brasil(addr, "wait", "--tag", "t", timeout=60)
        assert r.returncode == 1 and "done 1" in r.stdout and "failed 2" in r.stdout, r.stdout
        listing = brasil(addr, "jobs", "--tag", "t").stdout
        assert listing.count("exit status 124: timed out after 1 s (retries spent)") == 2, listing
        deadline = time.monotonic() + 10  # the child in its group was killed with it
        child = int((home / "child.pid").read_text())
        while _alive(child):
            assert time.monotonic() < deadline, f"the job's child {child} outlived its timeout"
            time.sleep(0.05)
        r = brasil(addr, "submit", "--timeout", "-1", "--", "true", cwd=str(home))
        assert r.returncode != 0 and "timeout must be 0 or more, not -1" in r.stderr
        jobs.write_text("job x timeout:forever -- true\n")
        r = brasil(addr, "submit", "--file", str(jobs), cwd=str(home))
        assert r.returncode != 0 and "t.jobs:1: timeout must be a whole number" in r.stderr
    finally:
        stop(w)
        stop(serve)


def test_brasil_workers_starts_workers_anywhere_in_the_tree(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    root, addr = spawn_serve(str(tmp_path), "root", "--listen", "127.0.0.1:0")
    kids = []
    try:
        net = ""
        deadline = time.monotonic() + 20
        while "9p 127.0.0.1:" not in net:
            assert time.monotonic() < deadline
            net = brasil(addr, "cat", "/csrv/local/net").stdout
            time.sleep(0.05)
        for name in ("k1", "k2"):
            kids.append(spawn_serve(str(tmp_path), name, "--parent", addr, "--slots", "1")[0])
        # the root has no slots of its own: the workers must land on the children
        while brasil(addr, "cat", "/csrv/local/status").stdout.count(" up") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = brasil(addr, "submit", "--tag", "t", "--file", "-", cwd=str(home),
                   stdin="echo $BRASIL_NODE > node.$BRASIL_JOB\n" * 6)
        assert r.stdout.strip() == "1-6", r.stderr
        r = brasil(addr, "workers", "2")
        assert r.returncode == 0 and "2 workers" in r.stdout, r.stderr
        session = r.stdout.split(":")[0]
        assert brasil(addr, "wait", "--tag", "t", timeout=90).returncode == 0
        nodes = {(home / f"node.{i}").read_text().strip() for i in range(1, 7)}
        assert nodes <= {"k1", "k2"} and nodes
        # issue 16 §6: each keeps its directory beside its daemon's state, not in ~/.local
        kept = [p for n in nodes for p in (tmp_path / f"{n}-state" / "workers").iterdir()]
        assert kept and all((p / "out").is_dir() for p in kept), kept
        assert brasil(addr, "write", f"{session}/ctl", "close").returncode == 0
    finally:
        for p in kids + [root]:
            stop(p)


def test_brasil_workers_spread_over_racks_take_their_nodes_rack_as_domain(tmp_path):
    """Issue 21 §2 on a real tree: `brasil workers 2 --spread rack` puts one worker in each rack
    (node labels), each with its node's rack as its domain, so a job's two copies run in two
    racks. A worker asked for a label its node lacks says so and stops."""
    home = tmp_path / "home"
    home.mkdir()
    go = tmp_path / "go"
    root, addr = spawn_serve(str(tmp_path), "root", "--listen", "127.0.0.1:0")
    kids = []
    try:
        for name, rack in (("k1", "a"), ("k2", "a"), ("k3", "b")):
            kids.append(spawn_serve(str(tmp_path), name, "--parent", addr, "--slots", "2",
                                    "--label", f"rack={rack}")[0])
        deadline = time.monotonic() + 30
        while brasil(addr, "cat", "/csrv/local/status").stdout.count(" up") < 4:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = brasil(addr, "submit", "--tag", "t", "--redundancy", "2", "--isolate", "--",
                   f"while [ ! -e {go} ]; do sleep 0.05; done", cwd=str(home))
        assert r.returncode == 0, r.stderr
        r = brasil(addr, "workers", "2", "--spread", "rack", "--scheduler", addr)
        assert r.returncode == 0 and "2 workers" in r.stdout, r.stderr
        session = r.stdout.split(":")[0]
        lines: list[str] = []
        while len([ln for ln in lines if " domain " in ln]) < 2:
            assert time.monotonic() < deadline + 30, lines
            lines = brasil(addr, "cat", "/csrv/local/batch/workerlist").stdout.splitlines()
            time.sleep(0.1)
        assert sorted(ln.split(" domain ")[1].split()[0] for ln in lines) == ["a", "b"]
        assigned: list[str] = []
        while len(assigned) < 2:  # the copy: on the worker of the other rack
            assert time.monotonic() < deadline + 60, assigned
            events = brasil(addr, "cat", "/csrv/local/batch/tags/t/events").stdout
            assigned = [ln.split()[4] for ln in events.splitlines() if ln.split()[1:2] == ["assign"]]
            time.sleep(0.1)
        domain = {ln.split()[0]: ln.split(" domain ")[1].split()[0] for ln in lines}
        assert sorted(domain[w] for w in assigned) == ["a", "b"]
        go.touch()
        assert brasil(addr, "wait", "--tag", "t", timeout=90).returncode == 0
        assert brasil(addr, "write", f"{session}/ctl", "close").returncode == 0
        # A worker whose node has no such label: a sentence, and no worker.
        env = {**os.environ, "BRASIL_AT": addr}
        r = subprocess.run([sys.executable, "-m", "brasil.cli.main", "worker", "--at", addr,
                            "--domain-from", "power"], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 2 and "--domain-from power: this node has no label 'power'" in \
            r.stderr, r.stderr
    finally:
        for p in kids + [root]:
            stop(p)


postgres_server = services.postgres_server


def test_serve_keeps_the_scheduler_in_postgresql_with_db(postgres_server, tmp_path):  # noqa: F811
    name = f"serve_db_{os.getpid()}"
    url = postgres_server.create_database(name)
    serve, addr = spawn_serve(str(tmp_path), "sched", "--db", url)
    try:
        deadline = time.monotonic() + 20
        while (r := brasil(addr, "cat", "/csrv/local/batch/ctl")).returncode != 0:
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.05)
        assert f"db postgresql:{name} " in r.stdout
        assert brasil(addr, "submit", "--", "true", cwd=str(tmp_path)).stdout.strip() == "1"
        assert postgres_server.psql("SELECT state FROM jobs", name).strip() == "ready"
    finally:
        stop(serve)


def test_a_database_that_cannot_be_reached_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "brasil.cli.main", "serve", "--listen",
                        f"unix:{tmp_path}/s.sock", "--state-dir", str(tmp_path / "st"), "--db",
                        f"postgresql:///nothing?host={tmp_path}/nowhere"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "brasil serve: --db: cannot connect to postgresql:nothing" in r.stderr
