"""The batch scheduler with thousands of placeholders, simulated: where does dispatch saturate?

The scheduler is the real one, composed onto a simulated daemon as ``brasil serve --batch``
composes it (``cluster.py``), with its real SQLite database in a temporary directory. Only two
things differ, both through constructor arguments:

- its store's writes run on the daemon's own loop (``batch/store.py``'s :class:`WriterOnLoop`)
  instead of a thread of the store's: the driver steps loops and nothing else, so a thread's
  answers would come back at whatever virtual instant the driver noticed them, and its CPU
  would be charged to no one. On the daemon's loop every transaction's CPU is the scheduler's,
  as the GIL makes it for the Python part of each operation in production (SQLite's own C
  releases it, so the thread overlaps the loop somewhat there: the figures lean to the
  pessimistic side). Reads (the ``wait`` and ``summary`` files) still run as executor work:
  on a core of their own, charged to no daemon (``clock.py``).
- each placeholder is the real :class:`~brasil.batch.worker.Worker` on a loop of its own (a
  process of its own, as ``brasil worker`` is), connected over ``sim:`` (one 9P connection,
  as a real one), whose jobs are :class:`SimJobs`: a duration and an output drawn by
  ``commands.py``'s :class:`Behaviour`, no fork. Its reported times are the virtual clock's.

Non-isolated jobs only: an isolated one runs in an overlay of its home (``batch/isolate.py``),
which needs a real mount namespace per job.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..batch.api import Batch
from ..batch.processes import Started
from ..batch.scheduler import Scheduler
from ..batch.store import Tx
from ..batch.worker import Worker
from ..exec.spawn import Spawned
from ..ninep.auth import client_auth
from ..ninep.client import Client
from ..ninep.server import DEFAULT_MAX_TOTAL_FIDS
from ..ninep.transport import Address
from .clock import EPOCH, SimLoop
from .cluster import SECRET, SimCluster, _rss
from .commands import Behaviour, cpu
from .net import LinkModel

_pids = itertools.count(200000)


FIDS_EACH = 8  # fids a placeholder holds at the scheduler's daemon: root, next, ctl; and a read's


class SimJobs:
    """A placeholder's jobs as simulated processes (``batch/processes.py``'s JobProcesses):
    ``spawn`` writes the command's output into its output file at once (nothing reads it before
    the end) and ``watch`` waits its duration, on this worker's core or the shared ones."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.planned: dict[int, tuple[float, int]] = {}  # pid → (seconds, exit status)
        self.running: dict[int, tuple[asyncio.Task[None], Callable[[int], None]]] = {}
        self.spawned = 0
        self.work = 0.0  # the seconds of every job it started

    def open(self) -> None:
        pass

    def env(self) -> dict[str, str]:
        return {}

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str | None, out: int) -> Spawned:
        seconds, output, status = self.behaviour.plan(argv)
        if output:
            os.write(out, output)
        pid = next(_pids)
        self.planned[pid] = (seconds, status)
        self.spawned += 1
        self.work += seconds
        return Spawned(pid, None, None, None)  # (never waited for: watch ends it)

    def watch(self, pid: int, popen: Started,
              exited: Callable[[int], None]) -> None:
        seconds, status = self.planned.pop(pid)
        task = asyncio.ensure_future(self._run(pid, seconds, status))
        self.running[pid] = (task, exited)

    async def _run(self, pid: int, seconds: float, status: int) -> None:
        await cpu(seconds)
        _, exited = self.running.pop(pid)
        exited(status)

    def reap(self, pid: int, popen: Started) -> None:
        self.planned.pop(pid, None)

    def kill(self, pid: int) -> None:
        entry = self.running.pop(pid, None)
        if entry is not None:
            task, exited = entry
            task.cancel()
            asyncio.get_running_loop().call_soon(exited, -signal.SIGKILL)

    async def close(self) -> None:
        for pid in list(self.running):
            self.kill(pid)


@dataclass
class Placeholder:
    worker: Worker
    jobs: SimJobs
    loop: SimLoop
    task: asyncio.Future[None]


class SimBatch:
    """A scheduler on a simulated daemon and ``placeholders`` simulated workers of ``slots``
    slots each: :meth:`up`, :meth:`run` a workload of short jobs, :meth:`down`."""

    def __init__(self, placeholders: int, *, slots: int = 1, duration: float = 0.02,
                 sigma: float = 0.4, output: int = 29, model: LinkModel | None = None,
                 cores: int | None = None) -> None:
        """Jobs last ``duration`` seconds (the median; log-normal of ``sigma``) and write
        ``output`` bytes (``echo`` of a line that long); ``cores``: the scheduler, the
        placeholders and their jobs share that many (default: a core each)."""
        self.placeholders, self.slots = placeholders, slots
        self.behaviour = Behaviour(duration=duration, sigma=sigma, output=output)
        self.output = output
        self.tmp = tempfile.mkdtemp(prefix="brasil-simbatch-", dir=_tmpfs())
        self.home = os.path.join(self.tmp, "home")
        os.mkdir(self.home)
        sched_dir = os.path.join(self.tmp, "sched")
        os.mkdir(sched_dir, 0o700)
        # (as `brasil serve --max-connections --max-fids` must be for this many: the defaults,
        # 1,024 connections and 32,768 fids, would refuse the placeholders past a thousand)
        room: dict[str, Any] = {
            "max_connections": placeholders + 64,
            "max_total_fids": max(DEFAULT_MAX_TOTAL_FIDS, FIDS_EACH * (placeholders + 64))}
        self.cluster = SimCluster(1, 8, slots=0, model=model, batch_dir=sched_dir, limits=room,
                                  cores=cores)
        self.workers: list[Placeholder] = []
        self.figures: dict[str, Any] = {}

    @property
    def scheduler(self) -> Scheduler:
        s = self.cluster.root.scheduler
        assert s is not None
        return s

    def up(self) -> dict[str, Any]:
        """The scheduler's daemon, then every placeholder at once (each dials and registers);
        until the scheduler lists them all. What the registrations cost the scheduler."""
        self.cluster.up()
        driver, root = self.cluster.driver, self.cluster.loops["n0"]
        rx0 = self.cluster.net.counters(root).rx
        cpu0, v0, r0 = root.cpu, driver.now, time.perf_counter()
        rss0 = _rss()
        for i in range(self.placeholders):
            loop = driver.loop(f"w{i}")
            jobs = SimJobs(self.behaviour)
            w = Worker(_connect, self.slots, os.path.join(self.tmp, f"w{i}"), name=f"w{i}",
                       remote_homes=False, processes=jobs, clock=loop.wall)
            self.workers.append(Placeholder(w, jobs, loop,
                                            asyncio.ensure_future(w.run(), loop=loop)))
        sched, n = self.scheduler, self.placeholders

        async def registered() -> None:
            while sum(1 for w in sched.workers.values() if w.attached is not None) < n:  # noqa: ASYNC110 (another loop's state)
                await asyncio.sleep(0.01)
        self.cluster.run(registered(), limit=600)
        return {"op": "register", "placeholders": n, "virtual_s": driver.now - v0,
                "sched_cpu_s": root.cpu - cpu0,
                "sched_rx_bytes": self.cluster.net.counters(root).rx - rx0,
                "rss_per_placeholder": (_rss() - rss0) / n, "real_s": time.perf_counter() - r0}

    def idle(self, seconds: float = 5.0) -> dict[str, Any]:
        """The placeholders registered and idle for ``seconds``: what keeping them costs the
        scheduler per second (each renews its leases, even of nothing, every quarter lease, and
        is answered a heartbeat on ``next`` every third of one)."""
        c, root = self.cluster, self.cluster.loops["n0"]
        counters = c.net.counters(root)
        cpu0, rx0, tx0 = root.cpu, counters.rx, counters.tx
        c.run(asyncio.sleep(seconds), limit=seconds + 10)
        return {"idle_cpu_per_s": (root.cpu - cpu0) / seconds,
                "idle_rx_per_s": (counters.rx - rx0) / seconds,
                "idle_tx_per_s": (counters.tx - tx0) / seconds}

    def run(self, per_placeholder: int = 10, tag: str = "sim", cmd: str | None = None
            ) -> dict[str, Any]:
        """``per_placeholder`` jobs per slot of every placeholder (``echo`` of the output's
        size, or ``cmd``), submitted at once (one submission), until every one has ended. The makespan runs from the submission to the
        last job's end (recorded by the scheduler: its ``done`` committed); the scheduler's CPU and
        bytes are counted from the submission until the client's ``wait`` returned (the
        window: the last reports' answers included); ``busy`` is that CPU over the window: at
        1.0 the scheduler's core never rested, dispatch has saturated."""
        jobs = per_placeholder * self.placeholders * self.slots
        width = max(0, self.output - len("job 1\n"))
        cmds = [cmd or f"echo job {i} {'x' * max(0, width - len(str(i)))}".rstrip()
                for i in range(jobs)]
        c, driver = self.cluster, self.cluster.driver
        root, net = c.loops["n0"], c.net
        counters = net.counters(root)
        marks: dict[str, Any] = {}

        async def workload(client: Client) -> dict[str, Any]:
            b = Batch(client)
            marks["t0"], marks["cpu0"] = driver.now, root.cpu
            marks["rx0"], marks["tx0"] = counters.rx, counters.tx
            sub = await b.submit(cmds, tag=tag, home=self.home)
            marks["t1"], marks["cpu1"] = root.time(), root.cpu
            marks["rx1"], marks["tx1"] = counters.rx, counters.tx
            summary = await b.wait(tag=tag)
            first, last = await self.scheduler.store.read(_span)
            return {"first": sub.first, "summary": summary, "started": first - EPOCH,
                    "ended": last - EPOCH}
        r0 = time.perf_counter()
        assert c.client is not None, "up() first"
        out = c.run(workload(c.client), limit=3600)
        cpu2, window = root.cpu, driver.now - marks["t0"]
        makespan = out["ended"] - marks["t0"]  # from the submission to the last job done
        spawned = sum(p.jobs.spawned for p in self.workers)
        work = sum(p.jobs.work for p in self.workers)
        sched_cpu = cpu2 - marks["cpu0"]  # the submission's included
        self.figures = {
            "op": "batch", "placeholders": self.placeholders, "slots": self.slots, "jobs": jobs,
            "spawned": spawned, "summary": out["summary"],
            "submit_s": marks["t1"] - marks["t0"],
            "submit_cpu_s": marks["cpu1"] - marks["cpu0"],
            "makespan_s": makespan,
            "first_start_s": out["started"] - marks["t0"],
            "ideal_s": work / (self.placeholders * self.slots),  # every slot busy throughout
            "jobs_per_s": jobs / makespan,
            "sched_cpu_s": sched_cpu,
            "cpu_per_job_ms": 1000 * sched_cpu / jobs,
            "window_s": window,
            "busy": sched_cpu / window,
            "rx_bytes": counters.rx - marks["rx0"], "tx_bytes": counters.tx - marks["tx0"],
            "rx_per_job": (counters.rx - marks["rx0"]) / jobs,
            "tx_per_job": (counters.tx - marks["tx0"]) / jobs,
            "real_s": time.perf_counter() - r0,
        }
        return self.figures

    def down(self) -> None:
        """Every placeholder stopped (its jobs killed), then the daemons; the files removed."""
        for p in self.workers:
            p.loop.call_soon_threadsafe(p.worker.stop)

        async def stopped() -> None:
            while not all(p.task.done() for p in self.workers):  # noqa: ASYNC110 (other loops')
                await asyncio.sleep(0.05)
        try:
            self.cluster.run(stopped(), limit=120)
        finally:
            self.cluster.down()
            for p in self.workers:
                p.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def _span(tx: Tx) -> tuple[float, float]:
    """The first execution's start (its worker's clock) and the last job's end (the
    scheduler's): both virtual, from EPOCH."""
    row = tx.one("SELECT min(e.started), max(j.finished) FROM executions e, jobs j "
                 "WHERE e.job = j.id")
    assert row is not None and row[0] is not None, "no job ran"
    return float(row[0]), float(row[1])


def _tmpfs() -> str | None:
    """/dev/shm when there is one: the placeholders' output files and the database are real
    files, and a disk's file creation (0.4 ms here, its journal) would be charged to the
    placeholders and slow the simulation, while it is not what is measured."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None


async def _connect() -> Client:
    return await Client.connect(Address("sim", path="n0"), auth=client_auth(SECRET))
