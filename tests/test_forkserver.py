"""The fork server that starts isolated jobs (exec/forkserver.py): real processes, real mounts.

What it starts must be exactly what a fork from the worker would have been: the caller's child
(reaped by it), alone in a session, with 0, 1, 2 and nothing else open, default signals, in a
private mount namespace with the overlay on its home. What fails on the way is said, and leaves
no zombie; the server ends with the caller; and a worker killed with -9 takes its isolated jobs
and its fork server with it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from batch_fixtures import connect_batch, spawn_worker
from brasil.batch import isolate
from brasil.exec.forkserver import ForkServer
from fixtures import alive, spawn_serve, stop, wait_for

pytestmark = pytest.mark.skipif(isolate.probe() is not None, reason="no overlay in a namespace")


@pytest.fixture
def server():
    s = ForkServer.start()
    if s is None:
        pytest.skip("no fork server on this architecture")
    yield s
    s.close()


def overlay(tmp_path, name: str = "x"):
    home, upper, work = tmp_path / "home", tmp_path / f"upper-{name}", tmp_path / f"work-{name}"
    for d in (home, upper, work):
        d.mkdir(exist_ok=True)
    return str(home), str(upper), str(work)


def run(server: ForkServer, tmp_path, script: str):
    home, upper, work = overlay(tmp_path)
    out_path = tmp_path / "out"
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        pid = server.spawn(["/bin/sh", "-c", script], {"PATH": os.defpath}, out, home, upper,
                           work)
    finally:
        os.close(out)
    _, status = os.waitpid(pid, 0)  # ours to reap: it is our child
    return os.waitstatus_to_exitcode(status), out_path.read_text()


def test_the_job_is_our_child_alone_in_its_session_with_three_descriptors(server, tmp_path):
    probe = os.open(tmp_path / "not-for-the-job", os.O_WRONLY | os.O_CREAT, 0o600)  # inheritable
    os.set_inheritable(probe, True)
    try:
        code, out = run(server, tmp_path, 'echo "$$ $(ps -o sid= -p $$) $(ps -o ppid= -p $$)"; '
                        "ls /proc/self/fd; pwd; echo done")
    finally:
        os.close(probe)
    assert code == 0, out
    pid, sid, ppid = out.split("\n")[0].split()
    assert pid == sid and int(ppid) == os.getpid()
    fds = out.split("\n")[1:-3]
    assert sorted(fds) == ["0", "1", "2", "3"]  # 3: the directory ls itself reads
    assert out.split("\n")[-3] == str(tmp_path / "home")


def test_its_writes_land_in_the_upper_layer_only(server, tmp_path):
    code, out = run(server, tmp_path, "echo hello > made && cat made")
    assert (code, out) == (0, "hello\n")
    assert (tmp_path / "upper-x" / "made").read_text() == "hello\n"
    assert not (tmp_path / "home" / "made").exists()


def test_sigpipe_is_back_to_its_default(server, tmp_path):
    code, out = run(server, tmp_path, "grep SigIgn /proc/self/status")
    ignored = int(out.split()[1], 16)
    assert code == 0 and not ignored & (1 << (signal.SIGPIPE - 1)), out


def test_a_setup_that_fails_says_why_and_leaves_no_zombie(server, tmp_path):
    home, upper, work = overlay(tmp_path)
    out = os.open(os.devnull, os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="mount overlay"):
            server.spawn(["/bin/true"], {}, out, home, str(tmp_path / "missing"), work)
        with pytest.raises(OSError, match="No such file"):
            server.spawn(["/nonexistent/program"], {}, out, home, upper, work)
    finally:
        os.close(out)
    me = os.getpid()
    children = open(f"/proc/{me}/task/{me}/children").read().split()
    assert not [p for p in children if not alive(int(p))]  # no zombie: both were reaped
    assert server.alive()


def test_the_server_ends_with_its_callers_socket(server):
    server.sock.close()
    deadline = time.monotonic() + 10
    while server.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.proc.returncode == 0


async def test_a_worker_killed_with_9_takes_its_isolated_jobs_and_its_fork_server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve, addr = spawn_serve(str(tmp_path))
    victim = spawn_worker(addr, str(tmp_path), "victim", 1)
    pids: list[int] = []
    try:
        b = await connect_batch(addr)
        await b.submit(["sleep 60 & echo $$ $! > /dev/shm/brasil-test-pids-$PPID; wait"],
                       tag="t", home=str(home), isolate=True)  # the home's copy is private

        def found() -> bool:
            for name in os.listdir("/dev/shm"):
                if name.startswith("brasil-test-pids-"):
                    text = open(f"/dev/shm/{name}").read().split()
                    if len(text) == 2:
                        pids[:] = [int(p) for p in text]
                        os.unlink(f"/dev/shm/{name}")
                        return True
            return False
        await wait_for(found, timeout=30)
        children = open(f"/proc/{victim.pid}/task/{victim.pid}/children").read().split()
        servers = [int(p) for p in children
                   if b"brasil.exec.forkserver" in open(f"/proc/{p}/cmdline", "rb").read()]
        assert len(servers) == 1 and all(alive(p) for p in pids)
        victim.kill()  # -9: the worker cannot clean up; its watchdog and the socket must
        victim.wait()
        await wait_for(lambda: not any(alive(p) for p in pids + servers), timeout=10)
        await b.close()
    finally:
        for p in pids:  # never leave a sleeper behind, whatever happened
            if alive(p):
                os.kill(p, signal.SIGKILL)
        for proc in (victim, serve):
            stop(proc)


async def test_a_fork_server_that_dies_costs_no_job(tmp_path):
    from batch_fixtures import scheduler, workers
    home = tmp_path / "home"
    home.mkdir()
    async with scheduler(str(tmp_path)) as (d, s, b), \
            workers(d.unix, str(tmp_path), n=1, slots=1) as [w]:
        await b.submit(["echo one > one"], tag="a", home=str(home), isolate=True)
        assert (await b.wait(tag="a"))["done"] == 1
        server = w._forkserver
        assert server is not None
        server.proc.kill()  # between two jobs: the next one must not fail for it
        server.proc.wait()
        await b.submit(["echo two > two"], tag="b", home=str(home), isolate=True)
        assert (await b.wait(tag="b"))["done"] == 1
        assert (home / "two").read_text() == "two\n"
        assert w._forkserver is not None and w._forkserver.alive()  # started again
