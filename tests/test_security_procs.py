"""Issue 15 §18: no descendant of a session's command outlives it, not even one that left the
process group with setsid — neither a daemon killed with -9, nor `kill` and `close` of the
session. Tracked through a cgroup v2 per command (exec/cgroups.py), so these need one here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from brasil.exec import cgroups
from brasil.ninep.client import Client
from fixtures import L, alive, ctl, new_session, serve_process, status_rows, wait_for

needs_cgroups = pytest.mark.skipif(
    not cgroups.CommandCgroups.here(),
    reason="no writable cgroup v2 here: without one only process groups are tracked, and a "
           "setsid'd descendant escapes (documented in docs/reference.md)")


def escaper(pidfile: Path) -> str:
    """A command that starts a grandchild in a session of its own (setsid: out of the command's
    process group, which is all a process-group kill reaches) and records its pid."""
    return (f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 1000' </dev/null >/dev/null 2>&1 &")


async def grandchild(pidfile: Path) -> int:
    await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10)
    pid = int(pidfile.read_text())
    assert alive(pid)
    assert os.getsid(pid) == pid  # really out of the command's session and process group
    return pid


def kill_if_alive(pid: int | None) -> None:
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGKILL)


@needs_cgroups
async def test_a_setsid_grandchild_dies_with_a_daemon_killed_with_9(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    pid = None
    try:
        async with serve_process(tmp_path) as (proc, address):
            async with await Client.connect(address) as c:
                sid = await new_session(c)
                await ctl(c, sid, "res 1")
                await ctl(c, sid, f"exec {escaper(pidfile)} exec sleep 1000")
                pid = await grandchild(pidfile)
            proc.kill()
            proc.wait()
            await wait_for(lambda: not alive(pid), timeout=10)
    finally:
        kill_if_alive(pid)


@needs_cgroups
async def test_a_session_kill_reaches_a_setsid_grandchild(node, tmp_path):
    _, c = node
    pidfile = tmp_path / "grandchild.pid"
    pid = None
    try:
        sid = await new_session(c)
        await ctl(c, sid, "res 1")
        await ctl(c, sid, f"exec {escaper(pidfile)} exec sleep 1000")
        pid = await grandchild(pidfile)
        await ctl(c, sid, "kill")
        await wait_for(lambda: not alive(pid), timeout=10)
    finally:
        kill_if_alive(pid)


@needs_cgroups
async def test_a_session_kill_reaches_a_setsid_grandchild_in_a_private_namespace(node, tmp_path):
    """With ``bind`` lines the command runs through brasil.exec.nsexec: the same holds."""
    from brasil.exec import nsexec
    if nsexec.probe():
        pytest.skip("private mount namespaces are not allowed here")
    _, c = node
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pidfile = tmp_path / "grandchild.pid"
    pid = None
    try:
        sid = await new_session(c)
        await c.write(f"{L}/{sid}/ns", f"bind {tmp_path}/a {tmp_path}/b\n")
        await ctl(c, sid, "res 1")
        await ctl(c, sid, f"exec {escaper(pidfile)} exec sleep 1000")
        pid = await grandchild(pidfile)
        await ctl(c, sid, "kill")
        await wait_for(lambda: not alive(pid), timeout=10)
    finally:
        kill_if_alive(pid)


@needs_cgroups
async def test_closing_a_session_reaches_a_setsid_grandchild_whose_parent_has_ended(node, tmp_path):
    _, c = node
    pidfile = tmp_path / "grandchild.pid"
    pid = None
    try:
        sid = await new_session(c)
        await ctl(c, sid, "res 1")
        await ctl(c, sid, f"exec {escaper(pidfile)} exit 0")
        pid = await grandchild(pidfile)
        await c.read(f"{L}/{sid}/wait")  # the command itself has ended; its grandchild runs on
        assert alive(pid)
        await ctl(c, sid, "close")
        await wait_for(lambda: not alive(pid), timeout=10)
    finally:
        kill_if_alive(pid)


async def test_without_cgroups_the_watchdog_still_kills_the_process_groups(tmp_path, monkeypatch):
    """The fallback where no cgroup v2 may be made: groups listed with the watchdog, killed when
    its pipe ends (as when the daemon dies)."""
    from brasil.exec.cgroups import CommandCgroups
    from fixtures import node_daemon
    monkeypatch.setattr(CommandCgroups, "create", classmethod(lambda cls: None))
    pidfile = tmp_path / "child.pid"
    pid = None
    async with node_daemon(str(tmp_path)) as (n, addr):
        async with await Client.connect(addr) as c:
            sid = await new_session(c)
            await ctl(c, sid, "res 1")
            await ctl(c, sid, f"exec sh -c 'echo $$ > {pidfile}; exec sleep 1000'")
            await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10)
            pid = int(pidfile.read_text())
            try:
                watchdog = n.get_watchdog()
                assert watchdog.cgroups is None
                watchdog.close()  # end of file on its pipe: what the daemon's death looks like
                await wait_for(lambda: not alive(pid), timeout=10)
            finally:
                kill_if_alive(pid)


async def test_a_command_started_but_not_yet_listed_dies_with_a_daemon_killed_with_9(tmp_path):
    """The window between a spawn's return and the watchdog hearing of the group: a daemon
    killed there (a loaded machine holds its thread that long) left the command running. A
    process that makes a watchdog, starts a command in a session of its own with the
    watchdog's environment, never lists it, and kills itself with -9."""
    script = (
        "import os, signal, sys\n"
        "from brasil.exec.reaper import Watchdog\n"
        "from brasil.exec.cgroups import CommandCgroups\n"
        "CommandCgroups.create = classmethod(lambda cls: None)\n"
        "w = Watchdog()\n"
        "pid = os.posix_spawn('/bin/sleep', ['sleep', '1000'], {**os.environ, **w.env},"
        " setsid=True)\n"
        "print(pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, timeout=60,
                       cwd=tmp_path)
    assert p.returncode == -signal.SIGKILL
    pid = int(p.stdout)
    try:
        await wait_for(lambda: not alive(pid), timeout=10)
    finally:
        kill_if_alive(pid)


async def test_a_process_carrying_another_secret_is_spared(tmp_path):
    """The secret decides, not a name: a process with another watchdog's secret (a guess)
    lives on when this watchdog ends."""
    from brasil.exec.reaper import Watchdog
    w = Watchdog()
    other = subprocess.Popen(["sleep", "1000"], env={"BRASIL_WATCHDOG": "0" * 32},
                             start_new_session=True)
    mine = subprocess.Popen(["sleep", "1000"], env=w.env, start_new_session=True)
    try:
        w.close()
        await wait_for(lambda: mine.poll() is not None, timeout=10)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
        mine.kill()
        mine.wait()


@needs_cgroups
async def test_a_new_daemon_kills_and_removes_what_a_daemon_dead_with_its_watchdog_left():
    """A whole process tree killed at once (a Slurm step cancelled: daemon and watchdog by the
    same SIGKILL) leaves the daemon's cgroup, and in it whatever had left the tree with setsid.
    The next daemon's watchdog kills that and removes the directory. Left alone: a live
    daemon's directory (its pid alive), one with a process at its top (where `brasil serve`
    puts itself: a daemon of another pid namespace, whose pid means nothing here), and one
    whose name holds no pid."""
    from brasil.exec.reaper import Watchdog
    start = cgroups._start_cgroup()
    assert start is not None

    def dead_pid() -> int:  # a pid that nobody has now
        gone = subprocess.Popen(["true"])
        gone.wait()
        return gone.pid
    stale = f"{start}/brasil-{dead_pid()}-0"
    foreign = f"{start}/brasil-{dead_pid()}-1"
    no_pid = f"{start}/brasil-{'9' * 40}-0"  # no pid (once an OverflowError that stopped us)
    escaped, keeper, stranger = (subprocess.Popen(["sleep", "1000"], start_new_session=True)
                                 for _ in range(3))
    live = f"{start}/brasil-{keeper.pid}-0"
    made: list[str] = []
    w = None
    try:
        for d in (stale, f"{stale}/s0", live, foreign, no_pid):
            os.mkdir(d)
            made.append(d)
        for d, p in ((f"{stale}/s0", escaped), (foreign, stranger)):
            with open(f"{d}/cgroup.procs", "w") as f:
                f.write(str(p.pid))
        w = Watchdog()
        await wait_for(lambda: escaped.poll() is not None, timeout=10)
        await wait_for(lambda: not os.path.exists(stale), timeout=10)
        assert os.path.isdir(live) and keeper.poll() is None
        assert os.path.isdir(foreign) and stranger.poll() is None
        assert os.path.isdir(no_pid)
    finally:
        if w is not None:
            w.close()
        for p in (escaped, keeper, stranger):
            p.kill()
            p.wait()
        for d in reversed(made):  # (their processes are reaped: empty)
            if os.path.isdir(d):
                os.rmdir(d)


@needs_cgroups
async def test_programs_run_without_a_shell_are_moved_into_their_slots_cgroups(tmp_path):
    """A program run directly (no shell to enter its cgroup first) is moved by the thread that
    started it: each of six lands in its own slot's cgroup, and kill reaches it."""
    from fixtures import node_daemon
    async with node_daemon(str(tmp_path), slots=6) as (_, addr):
        c = await Client.connect(addr)
        pids: list[int] = []
        try:
            sid = await new_session(c)
            await ctl(c, sid, "res 6")
            await ctl(c, sid, "exec sleep 1000")
            rows = await status_rows(c, sid)
            pids = [int(r[4]) for r in rows]
            assert len(set(pids)) == 6

            def placed() -> bool:
                for r in rows:
                    with open(f"/proc/{r[4]}/cgroup") as f:
                        if not f.read().strip().endswith(f"/s{r[2]}"):
                            return False
                return True
            await wait_for(placed, timeout=10)
            await ctl(c, sid, "kill")
            await wait_for(lambda: not any(alive(p) for p in pids), timeout=10)
        finally:
            for p in pids:
                kill_if_alive(p)
            await c.close()


@needs_cgroups
async def test_a_daemon_keeps_no_descriptor_per_slot_it_has_used(tmp_path):
    """Every descriptor a daemon holds is copied into each child it starts (and closed there):
    a move or a kill opens its cgroup's file for that write only. After 16 slots used, moved
    into and killed (close), the daemon holds no file of its slots' cgroups."""
    def cgroup_files(pid: int) -> list[str]:
        fds = f"/proc/{pid}/fd"
        links = []
        for fd in os.listdir(fds):
            try:
                links.append(os.readlink(f"{fds}/{fd}"))
            except OSError:  # closed meanwhile
                pass
        return [ln for ln in links if f"/brasil-{pid}-" in ln]
    async with serve_process(tmp_path, "--slots", "16") as (proc, address):
        async with await Client.connect(address) as c:
            sid = await new_session(c)
            await ctl(c, sid, "res 16")
            await ctl(c, sid, "exec sleep 1000")  # run directly: moved by the spawn thread
            rows = await status_rows(c, sid)
            assert len(rows) == 16
            assert cgroup_files(proc.pid) == []
            await ctl(c, sid, "close")  # cgroup.kill, slot by slot
            await wait_for(lambda: all(not alive(int(r[4])) for r in rows), timeout=10)
            assert cgroup_files(proc.pid) == []
