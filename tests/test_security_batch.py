"""Issue 15 §6, §7, §12–§15: the batch layer under attack by another local user or a careless
or hostile client holding the secret.

§6  a SQLite database (or its -wal/-shm, or its directory) planted by `nobody` is refused;
§7  a PostgreSQL password on the command line is refused, with the alternatives named;
§12 submissions are capped, and a large one does not stall the daemon's other clients;
§13 a NUL in a command is refused at submission, and a job that cannot start fails and frees
    its slot;
§14 numbers out of range are refused with a sentence, and doing it many times costs the log
    a few lines;
§15 a scheduler stopped longer than the lease does not blame the worker it could not hear.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

import services
from batch_fixtures import connect_batch, scheduler, spawn_worker, workers
from brasil.batch import ops
from brasil.batch.jobfile import Defaults
from brasil.batch.store import Store, StoreError
from brasil.ninep.errors import NinepError
from fixtures import spawn_serve, stop

postgres_server = services.postgres_server
NOBODY = 65534
WAIT = 30


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to play the other user (nobody)")


def brasil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


# ---- §13: NUL ------------------------------------------------------------------------------------

async def test_a_nul_in_a_command_is_refused_at_submission(tmp_path):
    async with scheduler(str(tmp_path)) as (_, _, b):
        with pytest.raises(NinepError, match="NUL"):
            await b.submit_stream([b"echo a\x00b\n"], home=str(tmp_path))
        with pytest.raises(NinepError, match="NUL"):
            await b.submit_stream([b"job x -- echo a\x00b\n"], home=str(tmp_path))
        with pytest.raises(ValueError, match="NUL"):  # the API says so before sending
            await b.submit(["echo a\x00b"], home=str(tmp_path))
        assert (await b.summary())["total"] == 0


async def test_a_job_that_cannot_start_fails_with_the_reason_and_frees_its_slot(tmp_path):
    async with scheduler(str(tmp_path)) as (d, s, b):
        # As if submitted before submission refused NUL: straight into the database.
        bad = Defaults(home=str(tmp_path), retries=0, tag="t").spec("echo a\x00b", 1)
        now = time.time()
        await s.write(lambda tx: ops.submit(tx, [bad], now))
        async with workers(d.unix, str(tmp_path), n=1, slots=1):
            (job,) = await b.jobs("t")
            await asyncio.wait_for(b.wait(ids=[job.id]), WAIT)
            job = await b.job(job.id)
            assert job.state == "failed" and "null byte" in job.reason, job
            ok = await b.submit(["true"], tag="after", home=str(tmp_path))  # the slot is free
            assert (await asyncio.wait_for(b.wait(ids=ok.ids), WAIT))["done"] == 1


# ---- §14: numbers out of range, and the log ------------------------------------------------------

BAD_NUMBERS = [
    ("job a priority:99999999999999999999999 -- true\n", "priority must be between"),
    ("%set priority -99999999999999999999999\ntrue\n", "priority must be between"),
    ("job a retries:99999999999999999999999 -- true\n", "retries must be between"),
    ("job a redundancy:99999999999999999999999 -- true\n", "redundancy must be between"),
    ("job a after:99999999999999999999999 -- true\n", "job ids"),
    ("%set after 99999999999999999999999\ntrue\n", "job ids"),
]


@pytest.mark.parametrize("text,sentence", BAD_NUMBERS)
async def test_a_number_out_of_range_is_refused_with_a_sentence(tmp_path, text, sentence):
    async with scheduler(str(tmp_path)) as (_, _, b):
        with pytest.raises(NinepError, match=sentence):
            await b.submit_stream([text.encode()], home=str(tmp_path))
        assert (await b.summary())["total"] == 0


def log_lines(path: str) -> int:
    with open(path, "rb") as f:
        return f.read().count(b"\n")


async def test_many_bad_numbers_cost_the_log_a_few_lines(tmp_path):
    serve, addr = spawn_serve(str(tmp_path))
    log = os.path.join(str(tmp_path), "sched.log")
    try:
        b = await connect_batch(addr)
        await b.client.write("csrv/local/batch/ctl", "worker w 1\n")
        before = log_lines(log)
        for _ in range(60):
            with pytest.raises(NinepError, match="priority must be between"):
                await b.submit_stream([BAD_NUMBERS[0][0].encode()], home=str(tmp_path))
            with pytest.raises(NinepError, match="job ids"):
                await b.cancel([10 ** 25])
            with pytest.raises(NinepError, match="bad report"):
                await b.client.write("csrv/local/batch/workers/w/ctl",
                                     f"start {10 ** 25} 0 0\n")
            with pytest.raises(NinepError, match="does not exist"):
                await b.client.read(f"csrv/local/batch/job/{10 ** 25}/status")
        grew = log_lines(log) - before
        assert grew <= 10, open(log).read()[-3000:]
        assert (await b.summary())["total"] == 0  # and the daemon is fine
        await b.close()
    finally:
        stop(serve)


# ---- §6: a planted SQLite database ---------------------------------------------------------------

def as_nobody(path) -> None:
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def plant(path, mode: int = 0o666) -> None:
    """What `nobody` did: an empty database file of theirs, open to all, where ours would go."""
    path.write_bytes(b"")
    path.chmod(mode)
    as_nobody(path)


def test_serve_refuses_a_database_planted_in_a_shared_directory(tmp_path):
    needs_root()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: anyone may create files in it
    plant(shared / "batch.db")
    r = brasil("serve", "--listen", f"unix:{tmp_path}/s.sock", "--state-dir",
               str(tmp_path / "st"), "--db", f"sqlite:///{shared}/batch.db")
    assert r.returncode != 0
    assert "brasil serve: --db:" in r.stderr and "writable by others" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert (shared / "batch.db").stat().st_size == 0  # nothing of ours went into it
    assert not (shared / "batch.db-wal").exists()


@pytest.mark.parametrize("planted,sentence", [
    ("batch.db", "database .*batch.db belongs to nobody"),
    ("batch.db-wal", "batch.db-wal belongs to nobody"),
    ("batch.db-shm", "batch.db-shm belongs to nobody"),
])
def test_a_database_file_of_someone_else_is_refused(tmp_path, planted, sentence):
    needs_root()
    d = tmp_path / "db"
    d.mkdir(mode=0o700)
    plant(d / planted, 0o600)
    with pytest.raises(StoreError, match=sentence):
        Store(f"sqlite://{d}/batch.db").open()


def test_a_database_of_ours_open_to_others_or_a_link_is_refused(tmp_path):
    d = tmp_path / "db"
    d.mkdir(mode=0o700)
    (d / "batch.db").write_bytes(b"")
    (d / "batch.db").chmod(0o644)  # the jobs' environments would be readable by all
    with pytest.raises(StoreError, match="open to others .*chmod 600"):
        Store(f"sqlite://{d}/batch.db").open()
    (d / "batch.db").unlink()
    (d / "elsewhere").write_bytes(b"")
    (d / "batch.db").symlink_to(d / "elsewhere")
    with pytest.raises(StoreError, match="symbolic link"):
        Store(f"sqlite://{d}/batch.db").open()
    d.chmod(0o770)
    with pytest.raises(StoreError, match="writable by others"):
        Store(f"sqlite://{d}/other.db").open()


async def test_a_fresh_database_and_its_side_files_are_ours_and_closed(tmp_path):
    d = tmp_path / "db"
    d.mkdir(mode=0o755)
    async with scheduler(str(tmp_path), f"sqlite://{d}/batch.db") as (_, _, b):
        await b.submit(["true"], home=str(tmp_path))
        for name in ("batch.db", "batch.db-wal", "batch.db-shm"):
            info = (d / name).stat()
            assert info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o600, name


# ---- §7: the PostgreSQL password ---------------------------------------------------------------

@pytest.mark.parametrize("url", ["postgresql://brasil:hunter2@127.0.0.1/batch",
                                 "postgresql:///batch?host=/tmp&password=hunter2"])
def test_serve_refuses_a_postgres_password_on_the_command_line(tmp_path, url):
    r = brasil("serve", "--listen", f"unix:{tmp_path}/s.sock", "--state-dir",
               str(tmp_path / "st"), "--db", url)
    assert r.returncode == 2, r.stderr
    assert "brasil serve: --db: the URL holds a password" in r.stderr, r.stderr
    for alternative in ("--db-password-file", "PGPASSWORD", "~/.pgpass"):
        assert alternative in r.stderr
    assert "hunter2" not in r.stderr and "Traceback" not in r.stderr


def test_a_postgres_password_file_open_to_others_is_refused(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    pw.chmod(0o644)
    r = brasil("serve", "--listen", f"unix:{tmp_path}/s.sock", "--state-dir",
               str(tmp_path / "st"), "--db", "postgresql:///batch?host=/nowhere",
               "--db-password-file", str(pw))
    assert r.returncode == 2 and "--db-password-file" in r.stderr and "chmod 600" in r.stderr, \
        r.stderr


def test_serve_connects_to_postgres_with_a_password_file(postgres_server, tmp_path):
    name = f"sec_pw_{os.getpid()}"
    url = postgres_server.create_database(name)
    pw = tmp_path / "pw"
    pw.write_text("not-needed-under-trust\n")
    pw.chmod(0o600)
    serve, addr = spawn_serve(str(tmp_path), "sched", "--db", url, "--db-password-file", str(pw))
    try:
        b = await_batch(addr)
        assert f"db postgresql:{name} " in b
    finally:
        stop(serve)


def await_batch(addr: str) -> str:
    """The scheduler's state line, once it answers."""
    async def state() -> str:
        b = await connect_batch(addr)
        try:
            return await b.state()
        finally:
            await b.close()
    return asyncio.run(state())


# ---- §15: a scheduler stopped longer than the lease ----------------------------------------------

async def events_until(b, predicate, timeout: float = WAIT):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        events = await b.events("t")
        if predicate(events):
            return events
        assert loop.time() < deadline, "\n".join(map(str, events[-20:]))
        await asyncio.sleep(0.05)


async def test_a_scheduler_stopped_longer_than_the_lease_does_not_blame_its_worker(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve, addr = spawn_serve(str(tmp_path))
    worker = None
    try:
        b = await connect_batch(addr)
        await b.client.write("csrv/local/batch/ctl", "lease 1\n")  # before the worker reads it
        worker = spawn_worker(addr, str(tmp_path), "w", 1)
        await b.submit(["sleep 4; echo ok > out"], tag="t", home=str(home), retries=0)
        await events_until(b, lambda ev: any(e.kind == "start" for e in ev))
        os.kill(serve.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(2.5)  # the attack itself: stopped for 2.5 leases
        finally:
            os.kill(serve.pid, signal.SIGCONT)
        assert (await asyncio.wait_for(b.wait(tag="t"), WAIT))["done"] == 1
        events = await b.events("t")
        assert not [e for e in events if e.kind in ("lease_lost", "retry")], events
        assert len([e for e in events if e.kind == "assign"]) == 1, events
        assert (home / "out").read_text() == "ok\n"
        await b.close()
    finally:
        for p in (worker, serve):
            if p is not None:
                stop(p)


# ---- §12: large submissions --------------------------------------------------------------------

async def test_submissions_above_the_caps_are_refused_with_a_sentence(tmp_path):
    serve, addr = spawn_serve(str(tmp_path), "sched", "--max-jobs-per-submission", "1000",
                              "--max-jobs-per-workload", "1500")
    try:
        b = await connect_batch(addr)
        with pytest.raises(NinepError, match="more than 1000 jobs in one submission, the limit "
                           r"\(brasil serve --max-jobs-per-submission\)"):
            await b.submit(["true"] * 1001, tag="a", home=str(tmp_path))
        await b.submit(["true"] * 1000, tag="a", home=str(tmp_path))
        with pytest.raises(NinepError, match="tag a: 1000 job.* not ended yet and 1000 more would "
                           "pass the limit of 1500 per workload"):
            await b.submit(["true"] * 1000, tag="a", home=str(tmp_path))
        await b.submit(["true"] * 1000, tag="b", home=str(tmp_path))  # another workload
        assert (await b.summary())["total"] == 2000
        await b.close()
    finally:
        stop(serve)


async def test_a_large_submission_does_not_stall_the_daemons_other_clients(tmp_path):
    serve, addr = spawn_serve(str(tmp_path))
    try:
        b = await connect_batch(addr)
        other = await connect_batch(addr)
        worst = 0.0
        done = asyncio.Event()

        async def poll() -> None:  # another client, asking all along
            nonlocal worst
            while not done.is_set():
                t = time.monotonic()
                await asyncio.wait_for(other.state(), 60)
                worst = max(worst, time.monotonic() - t)
                await asyncio.sleep(0.02)
        poller = asyncio.ensure_future(poll())
        try:
            chain = "job j0 -- true\n" + "".join(f"job j{i} after:j{i - 1} -- true\n"
                                                 for i in range(1, 100_000))
            r = await b.submit_stream([chain.encode()], tag="chain", home=str(tmp_path))
            assert len(r.ids) == 100_000
            big_env = "".join(f"%set env K{i:x}=1\n" for i in range(25_000))
            r = await b.submit_stream([(big_env + "true\n" * 100).encode()], tag="env",
                                      home=str(tmp_path))
            assert len(r.ids) == 100
            assert worst < 5, f"another client waited {worst:.1f}s for an answer"
            with pytest.raises(NinepError, match="more than 100000 jobs in one submission"):
                await b.submit(["true"] * 100_001, home=str(tmp_path))
        finally:
            done.set()
            await poller
        assert worst < 5, f"another client waited {worst:.1f}s for an answer"
        await b.close()
        await other.close()
    finally:
        stop(serve)
