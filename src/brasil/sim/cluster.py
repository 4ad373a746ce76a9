"""A tree of simulated daemons: the real daemon code, composed as ``brasil serve`` composes it.

Every node is ``cli/compose.py``'s daemon (node, sessions, tree links, queries, group reads),
on its own :class:`~brasil.sim.clock.SimLoop`, listening on ``sim:NAME`` and joined under its
parent exactly as a real one joins (two dials, ``join``, the parent's poll of ``subtree`` every
second); what differs is chosen through compose's and the node's options only: the simulated
network (``net.py``), simulated commands (``commands.py``) which also give each node its own
memory and load (not the real machine's, the same for all), no metrics sampler (it reads the
real machine and keeps its history on a thread), no batch scheduler unless asked (its store's
writes then run on the root's loop: ``batch.py``), no zeroconf.

The tree is k-ary and filled level by level (names as ``tests/fixtures.tree_of``'s: n0; n1…nK;
n1.1…), so any N is a tree of the given fan-out with its last level partly filled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..batch.store import WriterOnLoop
from ..cli.compose import BatchOptions, Composed, compose
from ..ninep.auth import client_auth
from ..ninep.client import Client
from ..ninep.transport import FABRICS, Address
from ..node.daemon import Node
from .clock import Driver, SimLoop
from .commands import Behaviour, SimLauncher
from .net import LinkModel, Net

T = TypeVar("T")
SECRET = b"simulated cluster secret, 32 bytes"


def tree_names(n: int, fanout: int) -> list[tuple[str, str | None]]:
    """``n`` nodes of a ``fanout``-ary tree, level by level: (name, parent's name)."""
    if n < 1 or fanout < 1:
        raise ValueError("a tree needs at least one node and a fan-out of at least 1")
    out: list[tuple[str, str | None]] = [("n0", None)]
    for i in range(1, n):
        p = (i - 1) // fanout
        parent = out[p][0]
        j = (i - 1) % fanout + 1
        out.append((f"n{j}" if parent == "n0" else f"{parent}.{j}", parent))
    return out


def depth_of(name: str) -> int:
    return 0 if name == "n0" else name.count(".") + 1


@dataclass
class Figures:
    """What one operation cost: virtual seconds; the root's charged CPU and bytes received;
    every daemon's CPU; the real seconds the simulation took."""

    op: str
    virtual: float
    root_cpu: float
    root_rx: int
    root_tx: int
    all_cpu: float
    real: float
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"op": self.op, "virtual_s": self.virtual, "root_cpu_s": self.root_cpu,
                "root_rx_bytes": self.root_rx, "root_tx_bytes": self.root_tx,
                "all_cpu_s": self.all_cpu, "real_s": self.real, **self.extra}


class SimCluster:
    """``nodes`` simulated daemons of ``slots`` slots in a ``fanout``-ary tree; :meth:`up`,
    then :meth:`run` coroutines as a client would, :meth:`measure` operations, :meth:`down`."""

    def __init__(self, nodes: int, fanout: int, *, slots: int = 1,
                 model: LinkModel | None = None, behaviour: Behaviour | None = None,
                 cpu_scale: float = 1.0, cores: int | None = None,
                 batch_dir: str | None = None, export: str | None = None,
                 limits: dict[str, Any] | None = None) -> None:
        """``export``: a directory every node serves as its ``fs/`` (one, shared: what group
        reads of a file identical everywhere read); ``cores``: the daemons share that many
        (default: a core each); ``limits``: every daemon's 9P server's caps (``brasil serve
        --max-connections``…: compose's ``limits``)."""
        self.layout = tree_names(nodes, fanout)
        self.fanout, self.slots = fanout, slots
        self.driver = Driver(cpu_scale, cores)
        self.net = Net(model or LinkModel())
        self.behaviour = behaviour or Behaviour()
        self.batch_dir = batch_dir  # a scheduler on the root, its database there
        self.export = export
        self.limits = limits or {}
        self.loops: dict[str, SimLoop] = {}
        self.daemons: dict[str, Composed] = {}
        self.client_loop = self.driver.loop("client")
        self.client: Client | None = None
        self.lost: set[str] = set()  # killed or frozen
        self.up_virtual = self.up_real = 0.0
        self.rss_per_node = 0.0

    @property
    def root(self) -> Composed:
        return self.daemons["n0"]

    def run(self, main: Awaitable[T], limit: float = 3600.0) -> T:
        """Run ``main`` on the client's loop, every daemon stepping alongside."""
        with _fabric(self.net):
            return self.driver.run(main, self.client_loop, limit=limit)

    # ---- lifetime ----

    def up(self, timeout: float = 600.0) -> None:
        """Start every daemon at virtual time 0 (parents first), until the root has heard of
        every node; then connect the client to the root."""
        gc.collect()
        rss0 = _rss()
        t0 = time.perf_counter()
        starting: list[asyncio.Future[Composed]] = []
        with _fabric(self.net):
            for name, parent in self.layout:
                loop = self.loops[name] = self.driver.loop(name)
                starting.append(asyncio.ensure_future(self._start(name, parent), loop=loop))
        n = len(self.layout)

        async def joined() -> None:
            while not all(f.done() for f in starting) or (
                    len(starting[0].result().daemon.children.status_lines()) < n - 1):
                for f in starting:
                    if f.done() and f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]
                await asyncio.sleep(0.05)
            self.client = await Client.connect(Address("sim", path="n0"),
                                               auth=client_auth(SECRET))
        self.run(joined(), limit=timeout)
        for (name, _), f in zip(self.layout, starting):
            self.daemons[name] = f.result()
        self.up_virtual = self.driver.now
        self.up_real = time.perf_counter() - t0
        gc.collect()
        self.rss_per_node = (_rss() - rss0) / n
        gc.freeze()  # the tree's objects: never scanned again (a full collection of 10,000
        # daemons would be charged to whichever daemon it fell in)

    async def _start(self, name: str, parent: str | None) -> Composed:
        launcher = SimLauncher(self.behaviour)
        node = Node(name, self.slots, launcher=launcher, machine=launcher.machine,
                    idle_timeout=3600, export=self.export)
        batch = None
        if self.batch_dir and parent is None:  # (its store's writes: on this daemon's loop)
            loop = asyncio.get_running_loop()
            assert isinstance(loop, SimLoop)
            batch = BatchOptions(self.batch_dir, writer=WriterOnLoop(), clock=loop.wall)
        return await compose(node, [Address("sim", path=name)], secret=SECRET,
                             parent=Address("sim", path=parent) if parent else None,
                             data_host=f"sim:{name}/data", batch=batch, metrics=False,
                             **self.limits)

    def down(self) -> None:
        """Stop every daemon (their own stop, in their own loop), the client first; killed
        and frozen ones run again to stop (nothing reaches them any more)."""
        gc.unfreeze()
        for loop in self.loops.values():
            if loop.frozen:
                self.driver.thaw(loop)

        async def stop_all() -> None:
            if self.client is not None:
                await self.client.close()
            pending = [asyncio.ensure_future(d.stop(), loop=self.loops[name])
                       for name, d in self.daemons.items()]
            while not all(p.done() for p in pending):  # (futures of other loops: polled)  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        self.run(stop_all(), limit=120)
        left = [t for loop in self.loops.values() for t in asyncio.all_tasks(loop)]
        for t in left:  # (a request to a killed node, never answered)
            t.cancel()

        async def cancelled() -> None:
            while not all(t.done() for t in left):  # noqa: ASYNC110 (other loops' tasks)
                await asyncio.sleep(0.01)
        self.run(cancelled(), limit=60)
        for loop in self.loops.values():
            loop.close()
        self.client_loop.close()

    # ---- failures ----

    def kill(self, name: str) -> None:
        """The daemon dies (kill -9): its connections close, its listeners go, it never runs."""
        loop = self.loops[name]
        self.net.kill(loop)
        self.driver.freeze(loop)
        self.lost.add(name)

    def freeze(self, name: str) -> None:
        """The daemon hangs: connections stay, nothing answers."""
        self.driver.freeze(self.loops[name])
        self.lost.add(name)

    # ---- measuring ----

    def measure(self, op: str, main: Callable[[Client], Awaitable[dict[str, Any] | None]],
                limit: float = 3600.0) -> Figures:
        """Run one operation as the client and say what it cost."""
        root = self.loops["n0"]
        rc = self.net.counters(root)
        cpu0 = {lp: lp.cpu for lp in self.loops.values()}
        rx0, tx0, v0, r0 = rc.rx, rc.tx, self.driver.now, time.perf_counter()
        assert self.client is not None
        self.driver.longest = (0.0, "", "")
        extra = self.run(main(self.client), limit=limit) or {}
        cpu, where, what = self.driver.longest
        extra = {**extra, "longest_step_s": cpu, "longest_step_at": where,
                 "longest_step": what}
        return Figures(op, self.driver.now - v0, root.cpu - cpu0[root], rc.rx - rx0, rc.tx - tx0,
                       sum(lp.cpu - c for lp, c in cpu0.items()), time.perf_counter() - r0, extra)

    def idle(self, seconds: float) -> Figures:
        """The tree left alone for ``seconds``: what its heartbeats cost."""

        async def wait(c: Client) -> None:
            await asyncio.sleep(seconds)
        return self.measure(f"idle {seconds:g}s", wait, limit=seconds + 10)


@contextlib.contextmanager
def _fabric(net: Net) -> Iterator[None]:
    """``sim:`` addresses reach ``net`` while the simulation steps (two clusters in one
    process take turns)."""
    before = FABRICS.get("sim")
    FABRICS["sim"] = net
    try:
        yield
    finally:
        if before is None:
            FABRICS.pop("sim", None)
        else:
            FABRICS["sim"] = before


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


