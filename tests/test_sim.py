"""The simulator (brasil.sim): the real daemon code on a virtual clock, over an in-memory network.

Plain (not async) tests: the simulator's driver steps its own loops, one per daemon.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from brasil.ninep.constants import OWRITE
from brasil.ninep.transport import FABRICS, Address, dial
from brasil.sim.clock import Deadlock, Driver
from brasil.sim.cluster import SimCluster, tree_names
from brasil.sim.commands import Behaviour
from brasil.sim.net import LinkModel, Net


def test_tree_names_fill_levels_in_order():
    names = tree_names(6, 2)
    assert names == [("n0", None), ("n1", "n0"), ("n2", "n0"), ("n1.1", "n1"),
                     ("n1.2", "n1"), ("n2.1", "n2")]


def test_busy_loop_queues_its_next_work_behind_the_cpu_it_used():
    """A callback's real CPU is charged to its loop: the next one there starts no earlier
    than the charge, while another loop's work at the same instant runs on its own core."""
    d = Driver()
    a, b = d.loop("a"), d.loop("b")
    seen: dict[str, float] = {}

    def burn() -> None:
        _burn(0.02)
        a.call_soon(lambda: seen.setdefault("a2", a.time()))

    a.call_soon(burn)
    b.call_soon(lambda: seen.setdefault("b", b.time()))

    async def main() -> None:
        while len(seen) < 2:
            await asyncio.sleep(0.001)
    d.run(main(), d.loop("main"))
    assert seen["a2"] >= 0.02 * 0.9  # (thread_time's granularity)
    assert seen["b"] < 0.01
    assert a.cpu >= 0.02 * 0.9


def test_on_shared_cores_one_daemon_waits_for_another():
    """Driver(cores=1): two daemons' work at the same instant runs one after the other, as
    daemons on one machine do; with a core each (the default) they would overlap."""
    d = Driver(cores=1)
    a, b = d.loop("a"), d.loop("b")
    seen: dict[str, float] = {}
    a.call_soon(lambda: (_burn(0.02), seen.setdefault("a", a.time())))
    b.call_soon(lambda: seen.setdefault("b", b.time()))

    async def main() -> None:
        while len(seen) < 2:
            await asyncio.sleep(0.001)
    d.run(main(), d.loop("main"))
    assert seen["b"] >= 0.02 * 0.9  # (a was first in line: the core was its)


def test_simulated_commands_queue_for_the_shared_cores():
    """Three 1-second commands on a machine of 2 cores: two run at once, the third after."""
    from brasil.sim.commands import cpu
    d = Driver(cores=2)
    ends: list[float] = []

    async def job(loop) -> None:  # type: ignore[no-untyped-def]
        await cpu(1.0)
        ends.append(loop.time())
    for name in "abc":
        loop = d.loop(name)
        asyncio.ensure_future(job(loop), loop=loop)

    async def main() -> None:
        while len(ends) < 3:
            await asyncio.sleep(0.1)
    d.run(main(), d.loop("main"))
    assert sorted(round(t) for t in ends) == [1, 1, 2]


def _burn(seconds: float) -> str:
    t = time.thread_time()
    while time.thread_time() - t < seconds:
        pass
    return "burnt"


def test_work_on_a_thread_takes_its_cpu_in_virtual_time_off_the_loop_core():
    """asyncio.to_thread's work (the group reads parse there) comes back after its CPU, and
    the loop is not charged for it: it ran on another core."""
    d = Driver()
    loop = d.loop("main")

    async def main() -> tuple[str, float]:
        t0 = loop.time()
        got = await asyncio.to_thread(_burn, 0.02)
        return got, loop.time() - t0
    got, took = d.run(main(), loop)
    assert got == "burnt" and took >= 0.02 * 0.9
    assert loop.cpu < 0.01


def test_nothing_to_run_is_a_deadlock_not_a_hang():
    d = Driver()
    loop = d.loop("main")
    with pytest.raises(Deadlock):
        d.run(loop.create_future(), loop)


def test_dial_to_nobody_is_refused_with_the_usual_error():
    d = Driver()
    FABRICS["sim"] = Net(LinkModel())
    try:
        async def main() -> str:
            try:
                await dial(Address("sim", path="nobody"), asyncio.Protocol)
            except ConnectionError as e:
                return str(e)
            return ""
        assert "connection refused" in d.run(main(), d.loop("client"))
    finally:
        del FABRICS["sim"]


def test_a_simulated_tree_runs_a_command_on_every_rank():
    """1+3+9 simulated daemons, 2 slots each: every rank's line reaches the root, labelled by
    its node and rank; the virtual clock advanced at least by the command's duration, and the
    root was charged CPU and received bytes."""
    c = SimCluster(13, 3, slots=2, behaviour=Behaviour(duration=0.25))
    c.up()
    try:
        assert len(c.root.daemon.children.status_lines()) == 12

        async def run(cl) -> dict:  # type: ignore[no-untyped-def]
            sid = (await cl.read("csrv/local/clone")).decode().strip()
            ctl = await cl.open(f"csrv/local/{sid}/ctl", OWRITE)
            await ctl.write("res 26\n")
            await ctl.write("label on\n")
            t0 = asyncio.get_running_loop().time()
            await ctl.write("exec date\n")
            out = (await cl.read(f"csrv/local/{sid}/stdio")).decode()
            took = asyncio.get_running_loop().time() - t0
            await ctl.write("close\n")
            await ctl.close()
            return {"out": out, "took": took}
        f = c.measure("deploy", run)
        lines = f.extra["out"].splitlines()
        ranks = sorted(int(ln.split(":")[0].split("/")[1]) for ln in lines)
        assert ranks == list(range(26))
        assert {ln.split("/")[0] for ln in lines} == {name for name, _ in tree_names(13, 3)}
        assert f.extra["took"] >= 0.25
        assert f.virtual >= 0.25
        assert f.root_cpu > 0 and f.root_rx > 0
    finally:
        c.down()


def test_a_killed_leaf_is_noticed_and_a_frozen_one_times_out():
    """kill: its parent sees the connections end at once; freeze: only the heartbeat's
    silence tells, within the poll timeout (3 s) of virtual time."""
    c = SimCluster(7, 2)
    c.up()
    try:
        parent = c.daemons["n1"].daemon.children
        c.kill("n1.1")

        async def until(cond, limit: float) -> float:  # type: ignore[no-untyped-def]
            t0 = asyncio.get_running_loop().time()
            while not cond():
                assert asyncio.get_running_loop().time() - t0 < limit
                await asyncio.sleep(0.01)
            return asyncio.get_running_loop().time() - t0
        assert c.run(until(lambda: "n1.1" not in parent.by_name, 1.0)) < 1.0
        c.freeze("n1.2")
        took = c.run(until(lambda: "n1.2" not in parent.by_name, 10.0))
        assert 1.0 < took < 5.0
    finally:
        c.down()


def test_a_subtree_started_at_once_rehomes_when_its_parent_dies():
    """Every daemon starts at once (as under Slurm): n1's children join n1 before n1 has
    joined n0, so n1 first tells them no grandparent. Once its lineage is read again they
    know n0, and when n1 is killed its subtree re-homes there (it went nowhere before)."""
    c = SimCluster(21, 4)
    c.up()
    try:
        from brasil.sim import failures
        c.run(asyncio.sleep(6))  # (one lineage refresh: tree/link.LINEAGE_REFRESH)
        got = failures.lose(c, "n1", "kill")
        assert got["rehome"] < 10
        assert len(c.root.daemon.children.status_lines()) == 19
        assert "n1.1" in c.root.daemon.children.by_name
    finally:
        c.down()


def test_simulated_placeholders_pull_every_job_through_the_real_scheduler():
    """16 real Workers on loops of their own, 1 slot each, pull 64 jobs of 20 ms (simulated)
    from the real scheduler over sim: connections: every job ends done in its SQLite store,
    no sooner than the work allows (64 × 20 ms over 16 slots), and the store's transactions
    were charged to the scheduler's daemon, on virtual time (no thread of the store's)."""
    from brasil.sim.batch import SimBatch
    sb = SimBatch(16, duration=0.02, sigma=0.0)
    try:
        reg = sb.up()
        assert reg["sched_cpu_s"] > 0 and len(sb.scheduler.workers) == 16
        f = sb.run(per_placeholder=4)

        async def states() -> dict[str, int]:
            rows = await sb.scheduler.store.read(
                lambda tx: tx.all("SELECT state, count(*) FROM jobs GROUP BY state"))
            return dict(rows)
        assert sb.cluster.run(states()) == {"done": 64}
        assert f["summary"]["done"] == 64 and f["spawned"] == 64
        assert f["makespan_s"] >= 64 * 0.02 / 16
        assert f["sched_cpu_s"] > 0 and f["rx_bytes"] > 0
        assert sum(p.worker.completed for p in sb.workers) == 64
        assert not any(t.name == "batch-db" for t in threading.enumerate())
    finally:
        sb.down()
