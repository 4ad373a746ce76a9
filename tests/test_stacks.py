"""Stacks of real processes from the real unwinders, and STAT's merged prefix tree."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brasil.exec import procinfo
from brasil.exec.stacks import ProcessGone, StackError, capture, is_cpython
from brasil.exec.stacktree import TraceTree, progress
from fixtures import wait_for
from helpers import needs_gdb_calls, why_gdb_cannot_call

PROGRAMS = Path(__file__).parent / "programs"

needs_eu_stack = pytest.mark.skipif(shutil.which("eu-stack") is None or shutil.which("gcc") is None,
                                    reason="needs elfutils and gcc (make test-deps installs them)")


@pytest.fixture(scope="module")
def hang_c(tmp_path_factory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc (make test-deps installs it)")
    out = tmp_path_factory.mktemp("programs") / "hang"
    subprocess.run(["gcc", "-g", "-O0", "-o", str(out), str(PROGRAMS / "hang.c")], check=True)
    return str(out)


def _start(argv: list[str], rank: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, "BRASIL_RANK": str(rank)})


async def _settled(pid: int, innermost: str, python: bool | None = None) -> list:
    """The stacks once the process has reached the function it blocks in (a deadline, no
    sleep: the unwinder itself is the probe)."""
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        try:
            threads = await capture(pid, python)
        except StackError:  # not unwindable yet: still in the dynamic loader
            threads = []
        if any(innermost in [f.function for f in t.frames] for t in threads):
            return threads
        assert loop.time() < deadline, threads
        await asyncio.sleep(0.05)


@needs_eu_stack
async def test_a_native_process_shows_its_functions_with_file_and_line(hang_c):
    waiting, spinning = _start([hang_c], 1), _start([hang_c], 3)
    try:
        assert not is_cpython(waiting.pid)
        [t] = await _settled(waiting.pid, "wait_here")
        names = [f.function for f in t.frames]
        assert names.index("main") < names.index("middle") < names.index("wait_here")
        here = t.frames[names.index("wait_here")]
        line = 1 + (PROGRAMS / "hang.c").read_text().splitlines().index(
            "void wait_here(void) { usleep(10000); }")
        assert here.file.endswith("hang.c") and here.line == line, here
        assert t.tid == waiting.pid
        [t] = await _settled(spinning.pid, "spin_here")
        assert [f.function for f in t.frames][-2:] == ["middle", "spin_here"]
    finally:
        for p in (waiting, spinning):
            p.kill()
            p.wait()


async def test_a_python_process_shows_its_python_frames():
    p = _start([sys.executable, "-I", str(PROGRAMS / "hang.py")], 2)
    try:
        assert is_cpython(p.pid)
        [t] = await _settled(p.pid, "wait_here")
        names = [f.function for f in t.frames]
        assert names == ["<module>", "middle", "wait_here"], names
        line = 1 + (PROGRAMS / "hang.py").read_text().splitlines().index(
            "        time.sleep(3600)")
        assert t.frames[-1].label(lines=True) == f"wait_here (hang.py:{line})"
        assert t.tid == p.pid
    finally:
        p.kill()
        p.wait()


@needs_eu_stack
async def test_a_stopped_process_is_unwound_and_stays_stopped(hang_c):
    p = _start([hang_c], 1)
    try:
        await _settled(p.pid, "wait_here")
        os.kill(p.pid, signal.SIGSTOP)
        await wait_for(lambda: procinfo.is_stopped(p.pid), 10)
        [t] = await capture(p.pid)
        assert "wait_here" in [f.function for f in t.frames]
        with open(f"/proc/{p.pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    finally:
        p.kill()
        p.wait()


async def test_a_process_that_is_gone_is_named_gone_not_an_error():
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(ProcessGone, match=f"process {p.pid} is gone"):
        await capture(p.pid)
    assert issubclass(ProcessGone, StackError)


# The merged tree ---------------------------------------------------------------------------

def _hung_job(ranks: range, odd: int) -> TraceTree:
    t = TraceTree()
    for r in ranks:
        leaf = ["spin_here"] if r == odd else ["wait_here", "pause"]
        t.add(r, f"n{r // 8 + 1}.{r % 8 + 1}", ["_start", "main", "middle", *leaf])
    return t


def test_the_odd_rank_is_a_class_of_its_own_with_its_node():
    [(common, many, _), (odd, one, where)] = _hung_job(range(64), odd=13).classes()
    assert common[-1] == "pause" and str(many) == "0-12,14-63"
    assert odd[-1] == "spin_here" and str(one) == "13" and str(where) == "n2.6"
    lines = list(_hung_job(range(64), odd=13).lines())
    assert lines[0] == "_start  [ranks 0-63 (64) on n[1-8].[1-8]]"
    assert any(ln.endswith("spin_here  [rank 13 (1) on n2.6]") for ln in lines)


def test_the_wire_form_grows_with_paths_not_ranks():
    small, big = _hung_job(range(64), 13), _hung_job(range(4096), 13)
    assert len(big.dumps()) < 2 * len(small.dumps())
    assert TraceTree.loads(big.dumps()).to_json() == big.to_json()


def test_a_bad_tree_from_a_child_is_a_sentence():
    for bad in (b'{"f": 1}', b'{"f": "x", "r": "a-b"}', b"[]"):
        with pytest.raises(ValueError, match="trace tree"):
            TraceTree.loads(bad)


stacks = st.lists(st.tuples(st.integers(0, 200), st.sampled_from(["n1", "n2", "n3"]),
                            st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=5)),
                  max_size=30)


@settings(max_examples=300, deadline=None)
@given(stacks, stacks, stacks)
def test_merging_is_associative_and_commutative(x, y, z):
    def tree(rows):
        t = TraceTree()
        for r, n, frames in rows:
            t.add(r, n, frames)
        return t

    def canon(t):
        return sorted(((p, str(r)) for p, r, _ in t.classes()))
    left = tree(x).merge(tree(y)).merge(tree(z))
    right = tree(x).merge(tree(y).merge(tree(z)))
    swapped = tree(z).merge(tree(y)).merge(tree(x))
    flat = tree(x + y + z)
    assert canon(left) == canon(right) == canon(swapped) == canon(flat)
    assert TraceTree.loads(left.dumps()).dumps() == left.dumps()


def test_samples_over_time_tell_stuck_ranks_from_moving_ones():
    samples = []
    for k in range(5):
        t = TraceTree()
        for r in range(64):
            phase = "spin_here" if r == 7 else ["compute", "exchange", "io"][(r + k) % 3]
            t.add(r, "n1", ["main", phase])
        samples.append(t)
    stuck, moving = progress(samples)
    assert str(stuck) == "7" and len(moving) == 63


# gdb held on a process ---------------------------------------------------------------------

needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None or shutil.which("gcc") is None,
                               reason="needs gdb and gcc (make test-deps installs them)")


@needs_gdb
async def test_a_breakpoint_is_hit_and_a_variable_read_then_the_process_goes_on(hang_c):
    from brasil.exec.debugger import Debugger, DebuggerError
    p = _start([hang_c], 5)
    d = Debugger(p.pid)
    try:
        await _settled(p.pid, "wait_here")
        await d.attach()
        assert d.stopped
        assert await d.break_at("wait_here")
        await d.cont()
        assert await d.wait_stopped(20)
        assert (d.reason, d.stopped_at) == ("breakpoint-hit", "wait_here")
        assert await d.evaluate("value") == "7"
        [t] = await d.threads()
        assert [f.function for f in t.frames][-2:] == ["middle", "wait_here"] and t.tid == p.pid
        with pytest.raises(DebuggerError, match="No symbol"):
            await d.evaluate("no_such_variable")
        with pytest.raises(DebuggerError, match="not a function"):
            await d.break_at("-x; shell")
    finally:
        await d.close()
    # Detached and running again: not stopped, not traced.
    with open(f"/proc/{p.pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    assert status["TracerPid"].strip() == "0" and status["State"].split()[0] in ("S", "R")
    p.kill()
    p.wait()


@needs_gdb
async def test_gdb_runs_no_script_a_user_put_beside_or_inside_the_program(hang_c, tmp_path,
                                                                           monkeypatch):
    # A .gdbinit in the daemon's home or directory, and auto-load paths, are all ignored.
    from brasil.exec.debugger import Debugger
    marker = tmp_path / "ran"
    (tmp_path / ".gdbinit").write_text(f"shell touch {marker}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    p = _start([hang_c], 1)
    d = Debugger(p.pid)
    try:
        await d.attach()
        assert await d.evaluate("value") == "42"
    finally:
        await d.close()
        p.kill()
        p.wait()
    assert not marker.exists()


# /proc readers -----------------------------------------------------------------------------

@needs_gdb
async def test_status_memory_and_maps_of_a_process_and_writes_only_while_stopped(hang_c):
    from brasil.exec.debugger import Debugger
    p = _start([hang_c, "arg"], 5)
    d = Debugger(p.pid)
    try:
        await _settled(p.pid, "wait_here")
        line = procinfo.status_line(p.pid)
        assert line.startswith(f"pid {p.pid} state ") and " threads 1 " in line
        assert procinfo.cmdline(p.pid) == f"{hang_c} arg\n"
        assert "BRASIL_RANK=5\n" in procinfo.environ(p.pid)
        assert hang_c in procinfo.maps(p.pid)
        await d.attach()
        addr = int(await d.evaluate("(long)&value"))
        await d.close()
        assert procinfo.read_mem(p.pid, addr, 4) == (7).to_bytes(4, "little")
        with pytest.raises(StackError, match="is running: stop it"):
            procinfo.write_mem(p.pid, addr, (9).to_bytes(4, "little"))
        os.kill(p.pid, signal.SIGSTOP)
        await wait_for(lambda: procinfo.is_stopped(p.pid), 10)
        # A debugger that has just let it go knows before the kernel's state says so.
        with pytest.raises(StackError, match="is running: stop it"):
            procinfo.write_mem(p.pid, addr, (9).to_bytes(4, "little"), running=True)
        assert procinfo.write_mem(p.pid, addr, (9).to_bytes(4, "little")) == 4
        assert procinfo.read_mem(p.pid, addr, 4) == (9).to_bytes(4, "little")
        with pytest.raises(StackError, match="no memory at 0x10 "):
            procinfo.read_mem(p.pid, 0x10, 4)
    finally:
        await d.close()
        p.kill()
        p.wait()
    with pytest.raises(ProcessGone):
        procinfo.status_line(p.pid)


# A group of ranks --------------------------------------------------------------------------

@needs_gdb
async def test_a_group_merges_stacks_names_the_odd_rank_and_reads_a_variable_everywhere(hang_c):
    from brasil.exec.procgroup import Debuggers, Rank, Report, stacks
    procs = [_start([hang_c], r) for r in range(8)]
    ranks = [Rank(r, p.pid, f"n{r // 4}") for r, p in enumerate(procs)]
    dbg = Debuggers()
    try:
        for p in procs:
            await _settled(p.pid, "spin_here" if p is procs[3] else "wait_here")
        report = await stacks(ranks)
        classes = report.tree.classes()
        assert [(c[0][-1], str(c[1])) for c in classes][-1] == ("spin_here", "3")
        assert str(classes[-1][2]) == "n0"
        # Gone while looked at: that rank is gone, the others still answer.
        procs[7].kill()
        procs[7].wait()
        report = Report.loads((await stacks(ranks)).dumps())
        assert str(report.gone) == "7" and len(report.tree.ranks) == 7
        # The distributed debugger's example: break, continue, wait all, read a variable.
        waiting = [r for r in ranks if r.rank not in (3, 7)]
        # Not CPython: a Python breakpoint says so.
        assert list((await dbg.break_at(waiting[:1], "py:main")).errors) == [
            "its process is not CPython: no Python breakpoint or value there (C ones: drop the "
            "py: prefix)"]
        assert not (await dbg.break_at(waiting, "wait_here")).errors
        assert not (await dbg.cont(waiting)).errors
        stopped = await dbg.wait_stopped(waiting, 20)
        assert not stopped.errors and list(stopped.values) == ["wait_here"]
        values = await dbg.evaluate(waiting, "value")
        assert values.value_lines("value") == ["value = 42  [ranks 0-2,4,6 (5) on n[0-1]]",
                                               "value = 7  [rank 5 (1) on n1]"]
        # While held, stacks come through the debugger.
        held = await stacks(waiting, dbg)
        assert not held.errors and len(held.tree.ranks) == 6
        merged = Report().merge(held).merge(values)
        assert len(merged.tree.ranks) == 6 and len(merged.values) == 2
    finally:
        await dbg.detach()
        for p in procs:
            p.kill()
            p.wait()


def test_signal_names_and_numbers():
    from brasil.exec.procgroup import parse_signal
    assert parse_signal("term") == signal.SIGTERM == parse_signal("SIGTERM") == parse_signal("15")
    with pytest.raises(ValueError, match="is not a signal"):
        parse_signal("BOGUS")


@needs_gdb
async def test_a_held_process_is_stopped_again_after_it_was_continued(hang_c):
    # gdb without mi-async ignores commands while its inferior runs: stop after cont hung.
    from brasil.exec.debugger import Debugger
    p = _start([hang_c], 1)
    d = Debugger(p.pid)
    try:
        await d.attach()
        await d.cont()
        await d.stop()
        assert d.stopped
        [t] = await d.threads()
        assert "middle" in [f.function for f in t.frames]
        await d.cont()
    finally:
        await d.close()
        p.kill()
        p.wait()


@needs_gdb
async def test_debuggers_held_on_a_node_are_bounded(hang_c, monkeypatch):
    from brasil.exec import debugger
    monkeypatch.setattr(debugger, "MAX_HELD", debugger.Debugger.held + 1)
    procs = [_start([hang_c], r) for r in (1, 2)]
    first, second = debugger.Debugger(procs[0].pid), debugger.Debugger(procs[1].pid)
    try:
        await first.attach()
        with pytest.raises(debugger.DebuggerError, match="holds .* under the debugger already"):
            await second.attach()
        await first.close()
        await second.attach()  # room again
    finally:
        await first.close()
        await second.close()
        for p in procs:
            p.kill()
            p.wait()


# Python breakpoints and values (exec/pydebug.py) -------------------------------------------

def _python(rank: int, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-I", str(PROGRAMS / "hang.py")],
                            env={**os.environ, "BRASIL_RANK": str(rank), **env})


def _ticking_ranks(*ranks: int) -> tuple[list[subprocess.Popen[bytes]], list]:
    """Python ranks of one job on node n1, each calling tick() every second, none spinning."""
    from brasil.exec.procgroup import Rank
    procs = [_python(r, TICK="1", SPIN_RANK="-1") for r in ranks]
    return procs, [Rank(r, p.pid, "n1") for r, p in zip(ranks, procs)]


@needs_gdb
@pytest.mark.skipif(not why_gdb_cannot_call(), reason="gdb can call into a process here")
async def test_a_gdb_that_cannot_call_into_a_python_rank_says_what_to_install():
    """Where gdb cannot call into a process (gdb 13 on a CPU with AMX), a Python breakpoint
    fails on every rank with a sentence that names the fix. (gdb's failed call also breaks the
    system call the rank was in: Python then sees errno 514. gdb's bug, not ours to undo.)"""
    from brasil.exec.procgroup import Debuggers
    procs, ranks = _ticking_ranks(4, 5)
    dbg = Debuggers()
    try:
        for p in procs:
            await _settled(p.pid, "tick")
        errors = (await dbg.break_at(ranks, "py:hang.tick")).errors
        assert errors and all("install gdb 14 or later" in e for e in errors), errors
    finally:
        await dbg.detach()
        for p in procs:
            p.kill()
            p.wait()


@needs_gdb
@needs_gdb_calls()  # (a Python rank is read by calling into it)
async def test_a_python_breakpoint_stops_there_and_a_python_value_is_read_in_its_frame():
    from brasil.exec.debugger import Debugger
    from brasil.exec.procgroup import Debuggers, stacks
    procs, ranks = _ticking_ranks(4, 5)
    dbg = Debuggers()
    try:
        for p in procs:
            await _settled(p.pid, "tick")
        assert not (await dbg.break_at(ranks, "py:hang.tick")).errors
        assert not (await dbg.cont(ranks)).errors
        stopped = await dbg.wait_stopped(ranks, 20)
        assert list(stopped.values) == ["tick (hang.py:21)"], stopped.values
        values = await dbg.evaluate(ranks, "x")  # Python: stopped at a Python breakpoint
        assert values.value_lines("x") == ["x = 42  [rank 4 (1) on n1]",
                                           "x = 7  [rank 5 (1) on n1]"]
        assert set((await dbg.evaluate(ranks, "py:[x] * 2")).values) == {"[42, 42]", "[7, 7]"}
        # C is still there for the asking.
        assert list((await dbg.evaluate(ranks, "c:sizeof(int)")).values) == ["4"]
        # Held: the stacks are the Python frames, stopped in tick, none of the agent's.
        held = await stacks(ranks, dbg)
        [(path, who, _)] = held.tree.classes()
        assert list(path) == ["<module> (hang.py)", "middle (hang.py)", "tick (hang.py)"]
        assert str(who) == "4-5"
        # A line breakpoint, the Python error of a bad expression as the rank's error.
        await dbg.detach(ranks)
        line = 1 + (PROGRAMS / "hang.py").read_text().splitlines().index("    return x")
        assert not (await dbg.break_at(ranks[1:], f"hang.py:{line}")).errors  # auto: .py:N
        await dbg.cont(ranks[1:])
        assert list((await dbg.wait_stopped(ranks[1:], 20)).values) == [f"tick (hang.py:{line})"]
        bad = await dbg.evaluate(ranks[1:], "y + 1")
        assert list(bad.errors) == ["NameError: name 'y' is not defined"]
        bad = await dbg.break_at(ranks[1:], "py:no such place")
        assert "is neither FILE.py:LINE nor a Python function" in next(iter(bad.errors))
        # Detached, the breakpoints are gone from the program: held again, nothing traces.
        await dbg.detach(ranks[1:])
        await dbg.stop(ranks[1:])
        left = await dbg.evaluate(ranks[1:], "py:(__import__('threading').gettrace(), "
                                  "__import__('sys').modules['_brasil_pydebug'].agent.breaks)")
        assert list(left.values) == ["(None, [])"], left.errors
        await dbg.detach()
        for p in procs:  # let go: not traced, still running
            with open(f"/proc/{p.pid}/status") as f:
                assert "TracerPid:\t0\n" in f.read()
            assert p.poll() is None
    finally:
        await dbg.detach()
        for p in procs:
            p.kill()
            p.wait()
    assert Debugger.held == 0


@needs_gdb
@needs_gdb_calls()  # (a Python rank is read by calling into it)
async def test_a_python_rank_answers_again_after_it_was_continued_and_stopped(monkeypatch):
    """Read, cont, stop, read again, 15 times: a read could come while the rank was stopped on
    its way out of the previous read's queued call, and then hang (pydebug._in_pending_calls)."""
    from brasil.exec import pydebug
    from brasil.exec.debugger import Debugger
    monkeypatch.setattr(pydebug, "PENDING_WAIT", 3.0)
    p = _python(3)
    d = Debugger(p.pid)
    py = pydebug.PyDebug(d)
    try:
        await _settled(p.pid, "spin_here")
        await d.attach()
        for _ in range(15):
            assert int(await py.evaluate("n")) > 0  # and it ran on between two reads
            await d.cont()
            await d.stop()
    finally:
        await d.close()
        p.kill()
        p.wait()


@needs_gdb
@needs_gdb_calls()  # (a Python rank is read by calling into it)
async def test_python_values_are_bounded_and_no_expression_reaches_gdb_or_a_shell(tmp_path,
                                                                                  monkeypatch):
    from brasil.exec import pydebug
    from brasil.exec.debugger import Debugger, DebuggerError
    monkeypatch.setattr(pydebug, "EVAL_SECONDS", 1.0)
    marker = tmp_path / "ran"
    p = _python(3)  # rank 3 spins in Python: it holds the GIL wherever it is stopped
    d = Debugger(p.pid)
    py = pydebug.PyDebug(d)
    try:
        await _settled(p.pid, "spin_here")
        await d.attach()
        # Stopped halfway through the interpreter: the value is read at its next safe point.
        assert int(await py.evaluate("n")) > 0
        for attack in (f'"; shell touch {marker}', f'x"\n-interpreter-exec console "shell touch '
                       f'{marker}"', f"\\\"\n!touch {marker}", "1\n-gdb-exit"):
            with pytest.raises(DebuggerError, match="SyntaxError"):
                await py.evaluate(attack)
        with pytest.raises(DebuggerError, match="is neither FILE.py:LINE nor a Python function"):
            await py.break_at(f'x"; shell touch {marker}')
        assert not marker.exists()
        # Size and time: a huge value is shown short, a Python loop is cut short, the
        # program's exit is not the program's end.
        assert len(await py.evaluate("list(range(10**6))")) < 1000
        with pytest.raises(DebuggerError, match=r"TimeoutError: the expression ran over 1s"):
            await py.evaluate("sum(i for i in range(10**12))")
        with pytest.raises(DebuggerError, match=r"TimeoutError: the expression ran over 1s"):
            await py.evaluate("__import__('time').sleep(3600)")  # blocked in C: SIGALRM
        with pytest.raises(DebuggerError, match="SystemExit"):
            await py.evaluate("exit(3)")
        with pytest.raises(DebuggerError, match="a Python expression of 1 to 4096 bytes"):
            await py.evaluate("1" * 5000)
        # A loop in C code outruns gdb's limit: said so, no second call meanwhile, and once
        # it ends the rank answers again (the GIL it took given back).
        from brasil.exec import debugger
        monkeypatch.setattr(debugger, "COMMAND_TIMEOUT", 1.0)
        with pytest.raises(DebuggerError, match="the expression still runs after 1s"):
            # (4 s or so here: 10**8 took about the 1 s limit, and ended before the next ask)
            await py.evaluate("sum(range(4 * 10**8))")
        with pytest.raises(DebuggerError, match="still runs an earlier expression"):
            await py.evaluate("n")
        await wait_for(lambda: not d.late, 120)
        assert int(await py.evaluate("n")) > 0  # still sane, still answering
        await py.clear()
        await d.close()
        assert p.poll() is None
    finally:
        await d.close()
        p.kill()
        p.wait()
