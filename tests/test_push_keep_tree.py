"""``>|[keep]`` on a tree (issue 21 §6): blocks dealt to runs on several nodes come back in
input order, with the bound on memory of one machine (``exec.route.KeepOrder``'s window)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest

from brasil.push.cluster import ClusterRun, KeepOut
from brasil.push.local import KeepRoute, LocalRun, PipelineFailed, keep_window
from brasil.push.plan import make_plan
from brasil.push.syntax import parse
from fixtures import session, tree_of, wait_for


def tree_12(tmp: str, slots: int = 3):  # type: ignore[no-untyped-def]
    """A 1+2 tree in this process: n0 and its children n1, n2."""
    return tree_of(tmp, 2, slots=slots)


class Run:
    """One pipeline run on the tree, its output and stderr in files of ``tmp``."""

    def __init__(self, c, text: str, tmp: str, block: int = 1 << 14) -> None:  # type: ignore[no-untyped-def]
        self.out, self.err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        self.fds = [os.open(self.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                    os.open(os.devnull, os.O_RDONLY),
                    os.open(self.err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)]
        plan = make_plan(parse(text)[0].pipelines[0], {}, 3)
        self.run = ClusterRun(c, plan, stdin=self.fds[1], stdout=self.fds[0], stderr=self.fds[2],
                              keep_block=block)

    async def __call__(self) -> tuple[int, bytes, str]:
        try:
            status = await asyncio.wait_for(self.run.run(), 120)
        finally:
            for f in self.fds:
                os.close(f)
        with open(self.out, "rb") as f, open(self.err) as e:
            return status, f.read(), e.read()


def seq(n: int) -> bytes:
    return b"".join(b"%d\n" % i for i in range(1, n + 1))


async def test_keep_gives_the_input_order_from_runs_on_several_nodes(tmp_path):
    async with tree_12(str(tmp_path)) as (nodes, c):
        r = Run(c, "seq 1 200000 |<[4] sh -c 'echo \"$BRASIL_NODE\" >&2; cat' >|[keep] cat",
                str(tmp_path))
        status, out, err = await r()
        assert status == 0 and out == seq(200000)
        assert len(set(err.split())) >= 2, err  # blocks ran on more than one node
        order = r.run.orders[0]
        assert order.next_seq > 20 and order.most <= keep_window(4)
        await wait_for(lambda: not any(s for n in nodes.values() for s in n.node.sessions.values()),
                       timeout=10)



async def test_nested_keep_regions_keep_each_instance_in_order(tmp_path):
    """Two copies of B, each with its own keep region of 3 whose order its own copy of D
    checks: every block of each instance comes back in its order."""
    src = tmp_path / "in"
    src.write_bytes(seq(200000))
    async with tree_12(str(tmp_path)) as (nodes, c):
        r = Run(c, f"cat {src} |<[2] cat |<[3 keep] awk '{{print $1 * 2}}' >| "
                "sh -c 'sort -c -n && echo sorted' >| cat", str(tmp_path))
        status, out, err = await r()
    assert status == 0 and out == b"sorted\nsorted\n", err
    assert len(r.run.orders) == 2


SLOW_FIRST = ("sh -c 'IFS= read -r first; if [ \"$first\" = 1 ]; then "
              "while [ ! -e {flag} ]; do sleep 0.05; done; fi; echo \"$first\"; cat'")


async def test_a_slow_block_holds_at_most_the_window_and_the_rest_waits(tmp_path):
    """Block 1 waits for a file: the blocks after it finish and are held, up to the window;
    then nothing more is read (the upstream is paused by its node), and once block 1 ends
    everything comes out in order. Unbounded buffering would hold every block but the first."""
    flag = tmp_path / "go"
    async with tree_12(str(tmp_path)) as (nodes, c):
        r = Run(c, f"seq 1 200000 |<[3] {SLOW_FIRST.format(flag=flag)} >|[keep] cat",
                str(tmp_path))
        task = asyncio.ensure_future(r())
        try:
            window = keep_window(3)
            await wait_for(lambda: r.run.orders and r.run.orders[0].waiting >= window - 1,
                           timeout=60)
            order = r.run.orders[0]
            # every block after the first in the window ran and is held; none more was cut
            assert order.outstanding == window and order.next_out == 0
            assert order.waiting == window - 1 and order.full
        finally:
            flag.write_text("")
        status, out, _ = await task
        assert status == 0 and out == seq(200000)
        assert order.most == window and order.next_seq > 3 * window


async def test_a_run_out_of_turn_with_a_large_output_stops_reading_it_at_a_bound(tmp_path,
                                                                                 monkeypatch):
    """Every run adds 200,000 lines of its own: held out of turn, that is far past
    KeepOut.HELD, so such a run is not read further until its turn (its node pauses it);
    then it streams. Holding whole outputs would hold them all."""
    monkeypatch.setattr(KeepOut, "HELD", 1 << 16)
    flag = tmp_path / "go"
    big = SLOW_FIRST.format(flag=flag).replace("; cat'", "; cat; yes \"x$first\" | head -n 200000'")
    async with tree_12(str(tmp_path)) as (nodes, c):
        r = Run(c, f"seq 1 200000 |<[3] {big} >|[keep] cat", str(tmp_path), block=1 << 17)
        task = asyncio.ensure_future(r())
        try:
            await wait_for(lambda: r.run.outs and r.run.outs[0].most_held >= 1 << 16, timeout=60)
        finally:
            flag.write_text("")
        status, out, _ = await task
    assert status == 0
    lines = out.split(b"\n")[:-1]
    assert [ln for ln in lines if not ln.startswith(b"x")] == seq(200000).split(b"\n")[:-1]
    extra = [int(ln[1:]) for ln in lines if ln.startswith(b"x")]
    assert extra == sorted(extra) and len(extra) == 200000 * r.run.orders[0].next_seq
    assert r.run.orders[0].next_seq > 4
    assert r.run.outs[0].most_held < (1 << 16) + (1 << 20)  # the bound and one read


async def test_a_run_that_dies_fails_the_pipeline_naming_it_and_nothing_is_left(tmp_path):
    dies = ("sh -c 'd=$(cat); echo \"$d\" | grep -qx 50000 && "
            "{ echo dying on 50000 >&2; kill -9 $$; }; echo \"$d\"'")
    async with tree_12(str(tmp_path)) as (nodes, c):
        r = Run(c, f"seq 1 200000 |<[3] {dies} >|[keep] cat", str(tmp_path))
        with pytest.raises(PipelineFailed) as e:
            await r()
        msg = str(e.value)
        assert e.value.status != 0
        assert "stage 2" in msg and "its run on block" in msg and "(on node n" in msg, msg
        assert "dying on 50000" in msg, msg
        await wait_for(lambda: not any(s for n in nodes.values() for s in n.node.sessions.values()),
                       timeout=10)
        for n in nodes.values():
            assert len(n.node.free) == n.node.slots_total


def _run_local_until(tmp_path, text: str, data: bytes, flag, look):  # type: ignore[no-untyped-def]
    """``text`` run by the local engine on ``data`` while a thread waits (60 s at most) until
    ``look(keep_route)`` gives something, records it, then creates ``flag`` (which lets the slow
    first block go). The exit status, the run, and what was seen."""
    src = tmp_path / "in"
    src.write_bytes(data)
    plan = make_plan(parse(text)[0].pipelines[0], {})
    seen: list[object] = []
    with open(src, "rb") as i, open(tmp_path / "out", "wb") as o, \
            open(tmp_path / "err", "wb") as e:
        run = LocalRun(plan, stdin=i.fileno(), stdout=o.fileno(), stderr=e.fileno())

        def probe() -> None:  # the engine runs on this thread's caller; look, then let go
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    keeps = [r for r in run.routes if isinstance(r, KeepRoute)]
                    got = look(keeps[0]) if keeps else None
                    if got is not None:
                        seen.append(got)
                        return
                    time.sleep(0.01)
            finally:
                flag.write_text("")
        t = threading.Thread(target=probe)
        t.start()
        try:
            status = run.run()
        finally:
            t.join()
    return status, run, seen


def test_on_one_machine_a_slow_block_holds_at_most_the_window_too(tmp_path, monkeypatch):
    """The same bound in the local engine, which used to start a run for every block behind a
    slow one and hold all their outputs."""
    monkeypatch.setattr(KeepRoute, "BLOCK", 1 << 16)
    flag = tmp_path / "go"
    window = keep_window(2)
    status, run, seen = _run_local_until(  # reads of up to 1 MiB: one block each
        tmp_path, f"cat |<[2 keep] {SLOW_FIRST.format(flag=flag)} >| cat", seq(2_000_000), flag,
        lambda k: (k.order.outstanding, k.order.waiting) if k.order.waiting >= window - 1
        else None)
    assert seen == [(window, window - 1)]
    assert status == 0 and (tmp_path / "out").read_bytes() == seq(2_000_000)
    order = next(r for r in run.routes if isinstance(r, KeepRoute)).order
    assert order.most == window and order.next_seq > window


def test_on_one_machine_a_run_out_of_turn_stops_being_read_at_the_bound(tmp_path, monkeypatch):
    """The local engine held a whole output until its turn: a run behind a slow block that
    writes 200,000 lines more is now read up to KeepRoute.HELD, then waits; in turn it streams."""
    monkeypatch.setattr(KeepRoute, "BLOCK", 1 << 16)
    monkeypatch.setattr(KeepRoute, "HELD", 1 << 16)
    flag = tmp_path / "go"
    big = SLOW_FIRST.format(flag=flag).replace("; cat'", "; cat; yes \"x$first\" | head -n 200000'")
    status, run, seen = _run_local_until(  # until a run out of turn has been paused
        tmp_path, f"cat |<[2 keep] {big} >| cat", seq(200000), flag,
        lambda k: k.most_held if k.paused else None)
    assert seen and isinstance(seen[0], int) and seen[0] >= 1 << 16
    keep = next(r for r in run.routes if isinstance(r, KeepRoute))
    assert keep.most_held < (1 << 16) + (1 << 20)  # the bound and one read (CHUNK)
    lines = (tmp_path / "out").read_bytes().split(b"\n")[:-1]
    assert status == 0 and [ln for ln in lines if not ln.startswith(b"x")] == \
        seq(200000).split(b"\n")[:-1]
    extra = [int(ln[1:]) for ln in lines if ln.startswith(b"x")]
    assert extra == sorted(extra) and len(extra) == 200000 * keep.order.next_seq


def test_on_one_machine_a_run_that_dies_while_the_window_is_full_ends_the_pipeline(tmp_path):
    """Block 1's run dies while the blocks after it have filled the window: the source that the
    full window had stopped reading never reached its end, and push waited for it forever."""
    src = tmp_path / "in"
    src.write_bytes(seq(2_000_000))
    dies = ("sh -c 'IFS= read -r first; if [ \"$first\" = 1 ]; then sleep 1; kill -9 $$; fi; "
            "cat; yes x | head -n 1000000'")
    r = subprocess.run([sys.executable, "-m", "brasil.cli.push", "--local", "-c",
                        f"cat {src} |<[2 keep] {dies} >| wc -l"], capture_output=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    err = r.stderr.decode()
    assert r.returncode == 137 and "killed by SIGKILL" in err and "copy 1 of 2" in err, err


def brasil(*args: str, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def test_push_keeps_order_on_a_tree_of_processes_and_a_dying_run_exits_non_zero(tmp_path):
    d = str(tmp_path / "c")
    up = brasil("cluster", "up", "--depth", "1", "--fanout", "2", "--slots", "3", "--dir", d)
    assert up.returncode == 0, up.stderr
    env = {**os.environ, "BRASIL": f"unix:{d}/n0.sock", "BRASIL_SECRET_FILE": f"{d}/secret"}

    def push(text: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "brasil.cli.push", "-c", text], env=env,
                              capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    try:
        ok = push("seq 1 400000 |<[4] cat >|[keep] cat")
        assert ok.returncode == 0 and ok.stdout == seq(400000), ok.stderr
        head = push("seq 1 4000000 |<[4] cat >|[keep] head -3")  # as a shell: SIGPIPE, no error
        assert (head.returncode, head.stdout, head.stderr) == (0, b"1\n2\n3\n", b"")
        bad = push("seq 1 400000 |<[4 keep] sh -c 'grep -q 350000 && kill -9 $$; cat' >| cat")
        err = bad.stderr.decode()
        assert bad.returncode != 0 and "its run on block" in err and "SIGKILL" in err, err
        assert bad.stdout != seq(400000)
    finally:
        brasil("cluster", "down", "--dir", d)


async def test_no_slot_for_any_run_is_a_clear_error_and_nothing_is_left(tmp_path):
    """Runs wait for each other's slots (the nested test has fewer slots than copies), but with
    none of ours running and no slot free, waiting would be for ever: a clear error instead."""
    async with tree_12(str(tmp_path), slots=1) as (nodes, c):
        hog = await session(c, ["res 1"])  # the tree's third slot, held by someone else
        r = Run(c, "seq 1 1000 |<[2 keep] cat >| cat", str(tmp_path))
        with pytest.raises(PipelineFailed) as e:
            await r()
        msg = str(e.value)
        assert e.value.status == 1 and "its run on block 1" in msg, msg
        assert "cannot reserve a slot" in msg and "ask for fewer copies" in msg, msg
        await c.write(f"csrv/local/{hog}/ctl", "close\n")
        await wait_for(lambda: not any(s for n in nodes.values() for s in n.node.sessions.values()),
                       timeout=10)
