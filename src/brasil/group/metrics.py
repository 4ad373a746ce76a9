"""``/csrv/local/metrics``: the node's samples and its subtree's summary, reduced in the tree, with
history (TBON-FS's replacement for Ganglia's gmond: a tree of file servers, not multicast).

Every ``interval`` seconds a node samples itself, reads each child's ``subtree.json`` (the
child's own summary of its subtree, made the same way one level down), in parallel, and merges:
its parent then reads one summary from it. So the root receives one summary per child per
interval, never one per node, and a level's work grows with its fan-out, not with the tree.
Per-node detail (``nodes``) is gathered through the tree only when someone reads it. Both the
node's series and its subtree's are kept in a bounded SQLite history (metrics/history.py) under
the node's state directory, so they survive a restart.

Files:
- ``now``: this node's latest sample, ``METRIC VALUE`` lines; ``row``: the values alone, one line
  in the order ``columns`` gives (so ``brasil gread --agg sum metrics/row --where PRED`` sums
  each metric over the nodes a query selects, reduced in the tree by the group reads);
- ``subtree``: the subtree's summary, ``METRIC COUNT SUM MEAN MIN MIN_NODE MAX MAX_NODE``;
  ``subtree.json``: the same for machines (what a parent reads);
- ``nodes``: every node's latest sample in the subtree, JSON ``{NODE: {METRIC: VALUE}}``;
- ``history``: write ``METRIC [self|subtree] [START [END [STEP]]]`` (seconds since the epoch,
  or negative: relative to now; default the last hour at the finest step), read ``TIME MEAN MIN
  MAX TOTAL`` lines;
- ``prometheus``: the subtree in the Prometheus text format (``brasil serve --metrics-listen``
  serves the same over HTTP).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from ..metrics.history import History, HistoryError, observations
from ..metrics.prom import SubtreeCollector, exposition
from ..metrics.sample import METRICS, Sampler
from ..metrics.summary import Summary
from ..ninep.errors import NinepError
from ..ninep.synthetic import DynamicDir, GeneratedFile, LiveFile, RequestFile
from .fanout import exchange

log = logging.getLogger("brasil.metrics")

INTERVAL = 5.0
CHILD_TIMEOUT = 10.0
NODES_CACHE = 1.0  # seconds a gathered `nodes` answer serves other readers (many scrapers)
MAX_REQUEST = 4096


class MetricsService:
    def __init__(self, daemon: Any, interval: float = INTERVAL,
                 history_path: str | None = None) -> None:
        self.daemon = daemon
        self.node = daemon.node
        self.interval = interval
        self.sampler = Sampler(self._daemon_figures, self.node.state_dir or "/")
        path = history_path or (os.path.join(self.node.state_dir, "metrics.sqlite")
                                if self.node.state_dir else ":memory:")
        self.history = History(path)
        self.latest: dict[str, float] = {}
        self.summary = Summary()
        self._task: asyncio.Task[None] | None = None
        self._nodes: tuple[float, asyncio.Future[dict[str, dict[str, float]]]] | None = None
        self.batch_figures: Callable[[], dict[str, float]] | None = None  # a scheduler's node

    def _daemon_figures(self) -> dict[str, float]:
        n = self.node
        out = {"slots": float(n.slots_total), "free_slots": float(len(n.free)),
               "sessions": float(sum(1 for s in n.sessions.values() if s.came_from is None))}
        if self.batch_figures is not None:
            out.update(self.batch_figures())
        return out

    # The beat -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.history.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bad beat is logged; the next one tries again
                log.exception("metrics: a sample failed")
            await asyncio.sleep(self.interval)

    async def beat(self) -> None:
        """One interval: sample here, gather the children's summaries, merge, record."""
        now = time.time()
        self.latest = self.sampler.sample()
        own = Summary.of(self.node.name, self.latest)
        parts = await asyncio.gather(*(self._child_summary(c) for c in self._children()))
        self.summary = Summary.of_all([own, *[p for p in parts if p is not None]])
        await self.history.record_async(now, "self", observations(self.latest, self.node.name))
        await self.history.record_async(now, "subtree", self.summary.stats)

    def _children(self) -> list[Any]:
        return [c for c in self.daemon.children.by_name.values() if not c.gone]

    async def _child_file(self, child: Any, name: str) -> bytes:
        _, node = await asyncio.wait_for(
            child.mount.walk_path(["local", "metrics", name]), CHILD_TIMEOUT)
        if node is None:
            raise NinepError(f"{child.name}: no metrics/{name} (an older daemon?)", errno.ENOENT)
        return await asyncio.wait_for(exchange(node), CHILD_TIMEOUT)

    async def _child_summary(self, child: Any) -> Summary | None:
        try:
            return Summary.loads(await self._child_file(child, "subtree.json"))
        except (NinepError, OSError, ValueError, TimeoutError) as e:
            log.debug("metrics: no summary from %s: %s", child.name, e)
            return None

    # Per-node detail, on demand ---------------------------------------------------------------

    def nodes(self) -> Awaitable[dict[str, dict[str, float]]]:
        """Every node's latest sample below us; one gathering serves the readers of a second."""
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > NODES_CACHE:
            self._nodes = (now, asyncio.ensure_future(self._gather_nodes()))
        return asyncio.shield(self._nodes[1])

    async def _gather_nodes(self) -> dict[str, dict[str, float]]:
        out = {self.node.name: dict(self.latest)}

        async def one(child: Any) -> dict[str, dict[str, float]]:
            try:
                got = json.loads(await self._child_file(child, "nodes"))
                return {str(k)[:256]: {m: float(v) for m, v in s.items() if m in METRICS}
                        for k, s in got.items()}
            except (NinepError, OSError, ValueError, TimeoutError, AttributeError) as e:
                log.debug("metrics: no nodes from %s: %s", child.name, e)
                return {}
        for part in await asyncio.gather(*(one(c) for c in self._children())):
            out.update(part)
        return out

    def summary_json(self) -> bytes:
        return self.summary.dumps()

    async def prometheus(self) -> bytes:
        return exposition(self.node.name, await self.nodes(), self.summary)

    # History ------------------------------------------------------------------------------

    async def history_text(self, raw: bytes) -> bytes:
        words = raw.decode(errors="replace").split()
        usage = "write METRIC [self|subtree] [START [END [STEP]]]"
        if not words:
            raise NinepError(f"history: {usage}", errno.EINVAL)
        metric, rest = words[0], words[1:]
        if metric not in METRICS:
            raise NinepError(f"history: unknown metric {metric!r}; one of "
                             f"{', '.join(METRICS)}", errno.EINVAL)
        series = rest.pop(0) if rest and rest[0] in ("self", "subtree") else "self"
        try:
            nums = [float(w) for w in rest[:3]]
        except ValueError:
            raise NinepError(f"history: {usage} (times in seconds)", errno.EINVAL) from None
        now = time.time()
        start = nums[0] if nums else -3600.0
        end = nums[1] if len(nums) > 1 else 0.0
        start, end = (now + start if start <= 0 else start), (now + end if end <= 0 else end)
        step = nums[2] if len(nums) > 2 else 1.0
        try:
            points = await self.history.query_async(series, metric, start, end, step)
        except HistoryError as e:
            raise NinepError(f"history: {e}", errno.EINVAL) from None
        return "".join(f"{p.t} {p.mean:.6g} {p.min:.6g} {p.max:.6g} {p.total:.6g}\n"
                       for p in points).encode()


def metrics_dir(service: MetricsService) -> DynamicDir:
    """The directory a node serves as ``/csrv/local/metrics``."""
    d = DynamicDir(name="metrics")

    def now() -> str:
        return "".join(f"{k} {v:.6g}\n" for k, v in service.latest.items())

    async def nodes() -> bytes:
        return json.dumps(await service.nodes(), separators=(",", ":")).encode()

    def row() -> str:
        return " ".join(f"{service.latest.get(k, 0.0):.6g}" for k in METRICS) + "\n"

    for name, node in (
        ("now", LiveFile(now)),
        ("row", LiveFile(row)),
        ("columns", LiveFile(lambda: " ".join(METRICS) + "\n")),
        ("subtree", LiveFile(lambda: "".join(ln + "\n" for ln in service.summary.lines()))),
        ("subtree.json", LiveFile(service.summary_json)),
        ("nodes", GeneratedFile(nodes)),
        ("history", RequestFile(service.history_text, limit=MAX_REQUEST)),
        ("prometheus", GeneratedFile(service.prometheus)),
    ):
        node.mode = 0o644 if name == "history" else 0o444
        d.add(name, node)
    return d


class _LoopCollector:
    """prometheus_client's HTTP server calls ``collect`` on a thread of its own: the subtree is
    fetched on the daemon's loop (a second's cache shared by every scraper), at most
    ``SCRAPERS`` at once; a scrape beyond that waits, then fails, never piling up."""

    SCRAPERS = 4

    def __init__(self, service: MetricsService, loop: asyncio.AbstractEventLoop) -> None:
        self.service, self.loop = service, loop
        self.gate = threading.BoundedSemaphore(self.SCRAPERS)

    def collect(self) -> Any:
        if not self.gate.acquire(timeout=CHILD_TIMEOUT):
            raise RuntimeError("too many scrapes at once")
        try:
            nodes = asyncio.run_coroutine_threadsafe(self._nodes(), self.loop).result(
                CHILD_TIMEOUT * 2)
        finally:
            self.gate.release()
        return SubtreeCollector(self.service.node.name, nodes, self.service.summary).collect()

    async def _nodes(self) -> dict[str, dict[str, float]]:
        return await self.service.nodes()


def serve_prometheus(service: MetricsService, host: str, port: int) -> tuple[Any, int]:
    """``brasil serve --metrics-listen HOST:PORT``: the subtree over HTTP in the Prometheus
    text format, by prometheus_client's own server (on threads: the loop only gathers). Returns
    the server (``.shutdown()`` stops it) and the port it bound."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LoopCollector(service, asyncio.get_running_loop()))
    server, _ = start_http_server(port, host, registry)
    return server, int(server.server_address[1])


def serve_metrics(daemon: Any, interval: float = INTERVAL) -> MetricsService:
    """Start sampling and serve ``/csrv/local/metrics`` (what `brasil serve` and the tests'
    daemons compose)."""
    service = MetricsService(daemon, interval)
    daemon.node.local.add("metrics", metrics_dir(service))
    service.start()
    return service
