"""Process groups under control and inspection on a real 1+3+9 tree of daemons (issue 19):
proc/RANK files, the merged stacks reduced in the tree, signals, the debugger's example."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures import L, ctl, session
from helpers import needs_gdb_calls
from trees import tree_1_3_9

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gcc", "eu-stack", "gdb")),
    reason="needs gcc, elfutils and gdb (make test-deps installs them)")

PROGRAMS = Path(__file__).parent / "programs"
SIZE = 26  # 1+3+9 nodes of 2 slots


@pytest.fixture(scope="module")
def hang_c(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("programs") / "hang"
    subprocess.run(["gcc", "-g", "-O0", "-o", str(out), str(PROGRAMS / "hang.c")], check=True)
    return str(out)


async def _running(c, sid: str) -> None:  # type: ignore[no-untyped-def]
    """Until every rank's process has reached its loop (its stack shows middle)."""
    async def ready() -> bool:
        text = (await c.read(f"{L}/{sid}/stacks")).decode()
        line = next((ln for ln in text.splitlines() if ln.strip("│├└─ ").startswith("middle")),
                    "")
        return f"({SIZE})" in line
    deadline = 30
    import asyncio
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await ready():
        assert loop.time() < end, (await c.read(f"{L}/{sid}/stacks")).decode()
        await asyncio.sleep(0.1)


def _line(text: str, frame: str) -> str:
    return next(ln for ln in text.splitlines() if ln.strip("│├└─ ").startswith(frame + "  ["))


async def test_the_merged_stacks_name_the_odd_rank_and_its_node(tmp_path, hang_c):
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, [f"res {SIZE}", f"exec {hang_c}"])
        await _running(c, sid)
        text = (await c.read(f"{L}/{sid}/stacks")).decode()
        spin = _line(text, "spin_here")
        assert "[rank 3 (1) on " in spin, text
        wait = _line(text, "wait_here")
        assert f"ranks 0-2,4-{SIZE - 1} ({SIZE - 1})" in wait, text
        # The node named for rank 3 is where rank 3 runs.
        where = spin.rsplit(" on ", 1)[1].rstrip("]")
        env = (await c.read(f"{L}/{sid}/proc/3/environ")).decode()
        assert "BRASIL_RANK=3\n" in env and f"BRASIL_NODE={where}\n" in env
        # Per-rank files, here and through the tree.
        for r in (0, SIZE - 1):
            status = (await c.read(f"{L}/{sid}/proc/{r}/status")).decode()
            assert status.startswith("pid ") and " state " in status
            stack = (await c.read(f"{L}/{sid}/proc/{r}/stack")).decode()
            assert "wait_here" in stack
        assert sorted(int(s.name) for s in await c.ls(f"{L}/{sid}/proc")) == list(range(SIZE))
        with pytest.raises(Exception, match="not exist|not found"):
            await c.read(f"{L}/{sid}/proc/{SIZE}/status")
        await ctl(c, sid, "kill")


async def test_signals_stop_and_continue_every_rank_and_status_shows_it(tmp_path, hang_c):
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, [f"res {SIZE}", f"exec {hang_c}"])
        await _running(c, sid)

        async def states() -> set[str]:
            return {(await c.read(f"{L}/{sid}/proc/{r}/status")).decode().split()[3]
                    for r in range(SIZE)}
        await c.write(f"{L}/{sid}/signal", "STOP")
        await wait_for_async(lambda: states(), {"T"})
        await c.write(f"{L}/{sid}/signal", "CONT")
        await wait_for_async(lambda: states(), {"S", "R"}, subset=True)
        with pytest.raises(Exception, match="is not a signal"):
            await c.write(f"{L}/{sid}/signal", "BOGUS")
        await ctl(c, sid, "kill")


async def wait_for_async(get, want: set[str], subset: bool = False) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while True:
        got = await get()
        if (got <= want) if subset else (got == want):
            return
        assert loop.time() < end, got
        await asyncio.sleep(0.05)


async def test_a_group_breakpoint_then_a_variable_read_across_every_rank(tmp_path, hang_c):
    # The TBON-FS slides' distributed debugger: stop all, break at a function, continue, wait
    # until all hit it, read a variable: its classes of values, the odd one named with its node.
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, [f"res {SIZE}", "env SPIN_RANK=-1", f"exec {hang_c}"])
        await _running(c, sid)
        await ctl(c, sid, "break wait_here")
        await ctl(c, sid, "cont")
        stopped = (await c.read(f"{L}/{sid}/stopped")).decode()
        assert stopped.startswith(f"stopped at = wait_here  [ranks 0-{SIZE - 1} ({SIZE}) on "), \
            stopped
        f = await c.open(f"{L}/{sid}/eval", 2)
        await f.write(b"value", 0)
        values = (await f.read_all()).decode().splitlines()
        await f.close()
        assert values[0].startswith(f"value = 42  [ranks 0-4,6-{SIZE - 1} ({SIZE - 1}) on ")
        assert values[1].startswith("value = 7  [rank 5 (1) on n")
        # Held: the stacks come from the debugger, every rank at the breakpoint.
        text = (await c.read(f"{L}/{sid}/stacks")).decode()
        assert f"({SIZE})" in _line(text, "wait_here"), text
        await ctl(c, sid, "detach")
        pid = int((await c.read(f"{L}/{sid}/proc/0/status")).decode().split()[1])
        with open(f"/proc/{pid}/status") as st:
            assert "TracerPid:\t0\n" in st.read()
        await ctl(c, sid, "kill")


@needs_gdb_calls()
async def test_a_python_breakpoint_then_a_python_value_across_every_rank(tmp_path):
    # The same example for 26 CPython ranks: break at a Python function, continue, wait until
    # all hit it, read a Python local in the stopped frame: its classes of values.
    import sys
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        prog = PROGRAMS / "hang.py"
        sid = await session(c, [f"res {SIZE}", "env TICK=1", "env SPIN_RANK=-1",
                                f"exec {sys.executable} -I {prog}"])
        await _running_n(c, sid, SIZE)
        await ctl(c, sid, "break py:tick")
        await ctl(c, sid, "cont")
        stopped = (await c.read(f"{L}/{sid}/stopped")).decode()
        assert stopped.startswith(f"stopped at = tick (hang.py:21)  [ranks 0-{SIZE - 1} ({SIZE})"
                                  " on "), stopped

        async def ask(expr: str) -> list[str]:
            f = await c.open(f"{L}/{sid}/eval", 2)
            try:
                await f.write(expr.encode(), 0)
                return (await f.read_all()).decode().splitlines()
            finally:
                await f.close()
        values = await ask("x")
        assert values[0].startswith(f"x = 42  [ranks 0-4,6-{SIZE - 1} ({SIZE - 1}) on "), values
        assert values[1].startswith("x = 7  [rank 5 (1) on n"), values
        assert (await ask("py:x // 7"))[1].startswith("x // 7 = 1  [rank 5 (1)")
        # Held: the stacks are every rank's Python frames, stopped in tick.
        text = (await c.read(f"{L}/{sid}/stacks")).decode()
        assert f"({SIZE})" in _line(text, "tick (hang.py)"), text
        # An expression is Python's to parse, never gdb's nor a shell's.
        marker = tmp_path / "ran"
        got = await ask(f'"; shell touch {marker}')
        assert got[0].startswith(f"error: ranks 0-{SIZE - 1} ({SIZE}) on ") and \
            "SyntaxError" in got[0], got
        assert not marker.exists()
        # Continue: every rank comes back to tick; detach: they go on, untraced.
        await ctl(c, sid, "cont")
        stopped = (await c.read(f"{L}/{sid}/stopped")).decode()
        assert f"({SIZE})" in stopped, stopped
        await ctl(c, sid, "detach")
        pid = int((await c.read(f"{L}/{sid}/proc/{SIZE - 1}/status")).decode().split()[1])
        with open(f"/proc/{pid}/status") as st:
            assert "TracerPid:\t0\n" in st.read()
        text = (await c.read(f"{L}/{sid}/stacks")).decode()
        assert "tick (hang.py)" in text and "gone" not in text, text
        # The commands: a bad breakpoint is refused before any rank is held (nothing
        # half-done); a value of ranks not held says so.
        at = ["--at", f"unix:{tmp_path}/n0.sock"]
        rc, out, err = await _cli("pbreak", "py:no such place", sid, *at)
        assert rc != 0 and "is neither FILE.py:LINE nor a Python function" in err, err
        with open(f"/proc/{pid}/status") as st:
            assert "TracerPid:\t0\n" in st.read()
        rc, out, err = await _cli("peval", "x", sid, *at)
        assert rc == 1 and "not under the debugger" in err, err
        await ctl(c, sid, "kill")


async def test_gone_ranks_and_a_lost_node_are_named_and_the_rest_answers(tmp_path, hang_c):
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, [f"res {SIZE}", f"exec {hang_c}"])
        await _running(c, sid)
        pid = int((await c.read(f"{L}/{sid}/proc/0/status")).decode().split()[1])
        os.kill(pid, 9)
        await wait_for_async(
            lambda: _gone(c, sid), {"gone: rank 0 (1) exited while being looked at"})
        # A leaf daemon dies: its ranks are named as lost, the others still merged.
        await nodes["n3.3"].stop()
        text = (await c.read(f"{L}/{sid}/stacks")).decode()
        assert "n3.3" in text and "lost" in text, text
        assert "spin_here  [rank 3 (1)" in text
        await ctl(c, sid, "kill")


async def _gone(c, sid: str) -> set[str]:  # type: ignore[no-untyped-def]
    text = (await c.read(f"{L}/{sid}/stacks")).decode()
    return {ln for ln in text.splitlines() if ln.startswith("gone:")}


async def test_no_pid_outside_the_session_is_reachable(tmp_path, hang_c):
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        a = await session(c, ["res 2", f"exec {hang_c}"])
        b = await session(c, ["res 1"])
        # b runs nothing: its rank has no process, and a's ranks are not b's.
        with pytest.raises(Exception, match="runs nothing"):
            await c.read(f"{L}/{b}/proc/0/status")
        with pytest.raises(Exception, match="not exist|not found"):
            await c.read(f"{L}/{b}/proc/1/status")
        with pytest.raises(Exception, match="not exist|not found"):
            await c.read(f"{L}/{b}/proc/{os.getpid()}/status")
        await ctl(c, a, "kill")


async def test_samples_over_time_tell_the_spinning_rank_from_ranks_making_progress(tmp_path,
                                                                                  hang_c):
    # STAT's 3D mode: ranks making progress are seen in different places; the spinning rank is
    # in the same place in every sample.
    from brasil.exec.stacktree import progress
    from brasil.group import procs
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, [f"res {SIZE}", "env PROGRESS=1", f"exec {hang_c}"])
        await _running(c, sid)
        report, tree, trees = await procs.samples(c, sid, 5, 0.2)
        stuck, moving = progress(trees)
        assert str(stuck) == "3" and len(moving) == SIZE - 1, (str(stuck), str(moving))
        assert {"descend", "spin_here"} <= {
            ln.strip("│├└─ ").split("  [")[0] for ln in tree.lines()}
        await ctl(c, sid, "kill")


async def test_a_held_rank_killed_never_freezes_the_daemon(tmp_path, hang_c):
    # A rank held by gdb and killed: the kernel gives its exit to gdb first. The daemon once
    # waited for it with a blocking waitpid on its loop, and froze. A daemon of its own (a
    # frozen loop in this process would freeze the test instead of failing it).
    import asyncio
    import sys

    from brasil.ninep.auth import client_auth, load_secret
    from brasil.ninep.client import Client
    d = tmp_path / "c"
    up = subprocess.run([sys.executable, "-m", "brasil.cli.main", "cluster", "up", "--depth",
                         "0", "--slots", "2", "--dir", str(d)], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    try:
        c = await Client.connect(f"unix:{d}/n0.sock",
                                 auth=client_auth(load_secret(f"{d}/secret")))
        sid = await session(c, ["res 2", f"exec {hang_c}"])
        await _running_n(c, sid, 2)
        await ctl(c, sid, "stop")
        await ctl(c, sid, "kill 9")
        for _ in range(3):  # still answering, and the session's end is seen
            status = await asyncio.wait_for(c.read(f"{L}/status"), 10)
            assert status
        waited = await asyncio.wait_for(c.read(f"{L}/{sid}/wait"), 20)
        assert waited.count(b"\n") == 2
        await c.close()
    finally:
        subprocess.run([sys.executable, "-m", "brasil.cli.main", "cluster", "down", "--dir",
                        str(d)], capture_output=True)


async def _running_n(c, sid: str, n: int) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while f"({n})" not in next((ln for ln in (await c.read(f"{L}/{sid}/stacks")).decode()
                                .splitlines() if "middle" in ln), ""):
        assert loop.time() < end
        await asyncio.sleep(0.1)


async def _cli(*args: str) -> tuple[int, str, str]:
    import asyncio
    import sys
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 120)
    return p.returncode or 0, out.decode(), err.decode()


async def test_the_commands_print_the_tree_act_on_the_group_and_say_what_is_wrong(tmp_path,
                                                                               hang_c):
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        at = ["--at", f"unix:{tmp_path}/n0.sock"]
        rc, out, err = await _cli("pstack", *at)
        assert rc == 2 and "no session is running here" in err
        sid = await session(c, [f"res {SIZE}", f"exec {hang_c}"])
        await _running(c, sid)
        rc, out, err = await _cli("pstack", *at)
        assert rc == 0 and "spin_here  [rank 3 (1) on n" in out, (out, err)
        rc, out, err = await _cli("pstack", "--where", "command=*hang*", *at)
        assert rc == 0 and out.startswith(f"== n0/{sid} ") and "spin_here" in out, (out, err)
        rc, out, err = await _cli("pstack", "--dot", sid, *at)
        assert out.startswith("digraph stacks {") and "color=red" in out
        rc, out, err = await _cli("psignal", "BOGUS", *at)
        assert rc != 0 and "'BOGUS' is not a signal" in err
        rc, out, err = await _cli("psignal", "KILL", sid, *at)
        assert rc == 0, err
        await wait_for_async(lambda: _gone(c, sid),
                             {f"gone: ranks 0-{SIZE - 1} ({SIZE}) exited while being looked at"})


async def test_memory_is_read_at_an_address_and_written_only_while_stopped(tmp_path, hang_c):
    # TBON-FS's example: lseek to an address, read or write there.
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 1", "env SPIN_RANK=-1", f"exec {hang_c}"])
        await _running_n(c, sid, 1)

        async def ask(name: str, text: str) -> str:
            f = await c.open(f"{L}/{sid}/proc/0/{name}", 2)
            try:
                await f.write(text.encode(), 0)
                return (await f.read_all()).decode().strip()
            finally:
                await f.close()
        await ctl(c, sid, "stop")
        addr = int(await ask("eval", "(long)&value"))
        await ctl(c, sid, "cont")
        mem = await c.open(f"{L}/{sid}/proc/0/mem", 2)
        assert await mem.read(4, addr) == (42).to_bytes(4, "little")
        with pytest.raises(Exception, match="is running: stop it"):
            await mem.write((9).to_bytes(4, "little"), addr)
        await ctl(c, sid, "stop")
        assert await mem.write((9).to_bytes(4, "little"), addr) == 4
        assert await ask("eval", "value") == "9"
        with pytest.raises(Exception, match="no memory at 0x10 "):
            await mem.read(4, 0x10)
        await mem.close()
        await ctl(c, sid, "detach")
        await ctl(c, sid, "kill")


async def test_python_ranks_show_their_python_frames_merged(tmp_path):
    import sys
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        prog = PROGRAMS / "hang.py"
        sid = await session(c, [f"res {SIZE}", f"exec {sys.executable} -I {prog}"])
        import asyncio
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        while True:
            text = (await c.read(f"{L}/{sid}/stacks")).decode()
            if "wait_here (hang.py)" in text and f"({SIZE - 1})" in _line(text,
                                                                           "wait_here (hang.py)"):
                break
            assert loop.time() < end, text
            await asyncio.sleep(0.2)
        assert "[rank 3 (1) on n" in _line(text, "spin_here (hang.py)")
        assert _line(text, "middle (hang.py)").split("  [")[1].startswith(f"ranks 0-{SIZE - 1}")
        await ctl(c, sid, "kill")
