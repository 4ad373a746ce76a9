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
  serves the same over HTTP: :class:`PrometheusEndpoint`, on the daemon's loop, bounded).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..metrics.history import History, HistoryError, absolute, observations
from ..metrics.prom import exposition
from ..metrics.sample import METRICS, Sampler
from ..metrics.summary import Summary, num
from ..ninep.errors import NinepError
from ..ninep.synthetic import DynamicDir, GeneratedFile, LiveFile, RequestFile

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
        self._text: tuple[float, asyncio.Future[bytes]] | None = None
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
            # (not on the clock's multiples: a parent's beat reading its children's summaries
            # at the very instant they make theirs would get each level's 5 s late)
            await asyncio.sleep(self.interval)

    async def beat(self) -> None:
        """One interval: sample here, gather the children's summaries, merge, record."""
        now = time.time()
        self.latest = self.sampler.sample()
        own = Summary.of(self.node.name, self.latest)
        parts = await asyncio.gather(*(self._child_summary(c) for c in self._children()))
        self.summary = Summary.of_all([own, *[p for p in parts if p is not None]])
        await self.history.record_many_async(now, [
            ("self", observations(self.latest, self.node.name)), ("subtree", self.summary.stats)])

    def _children(self) -> list[Any]:
        return [c for c in self.daemon.children.by_name.values() if not c.gone]

    async def _child_file(self, child: Any, name: str) -> bytes:
        """A child's ``metrics/NAME``, on its link: the walk, the open and the first read in one
        round trip, then the end of file and the clunk. Through its mount (a walk, a clone
        of the walked fid, the open, two reads, two clunks) each beat cost seven round trips
        per child, and gathering was a fifth of an idle tree's CPU (tree idle, 73 daemons)."""
        try:
            return await asyncio.wait_for(child.client.read(f"csrv/local/metrics/{name}"),
                                          CHILD_TIMEOUT)
        except NinepError as e:
            raise NinepError(f"{child.name}: metrics/{name}: {e.message} (an older daemon?)",
                             e.errno) from None

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

    def prometheus(self) -> Awaitable[bytes]:
        """The subtree in the Prometheus text format. It is made on a thread (thousands of
        nodes are thousands of lines), and one making serves every reader of a second: many
        scrapers cost one gathering and one text."""
        now = time.monotonic()
        if self._text is None or now - self._text[0] > NODES_CACHE:
            self._text = (now, asyncio.ensure_future(self._exposition()))
        return asyncio.shield(self._text[1])

    async def _exposition(self) -> bytes:
        nodes, summary = await self.nodes(), self.summary
        return await asyncio.to_thread(exposition, self.node.name, nodes, summary)

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
        start, end = absolute(nums[0] if nums else -3600.0, nums[1] if len(nums) > 1 else 0.0)
        step = nums[2] if len(nums) > 2 else 1.0
        try:
            points = await self.history.query_async(series, metric, start, end, step)
        except HistoryError as e:
            raise NinepError(f"history: {e}", errno.EINVAL) from None
        return "".join(f"{p.t} {num(p.mean)} {num(p.min)} {num(p.max)} {num(p.total)}\n"
                       for p in points).encode()


def metrics_dir(service: MetricsService) -> DynamicDir:
    """The directory a node serves as ``/csrv/local/metrics``."""
    d = DynamicDir(name="metrics")

    def now() -> str:
        return "".join(f"{k} {num(v)}\n" for k, v in service.latest.items())

    async def nodes() -> bytes:
        return json.dumps(await service.nodes(), separators=(",", ":")).encode()

    def row() -> str:
        return " ".join(num(service.latest.get(k, 0.0)) for k in METRICS) + "\n"

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


MAX_CONNECTIONS = 32  # HTTP connections held at once (see PrometheusEndpoint)
IDLE = 10.0  # seconds a connection has to send its request, and again to take the answer
MAX_HEAD = 8192  # bytes of a request's line and headers
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the text format's


class PrometheusEndpoint:
    """``brasil serve --metrics-listen HOST:PORT``: the ``prometheus`` text over HTTP, served on
    the daemon's own loop, one request per connection.

    It replaced prometheus_client's server, which ran a thread per connection without a bound
    (200 idle connections, from any local user, were 200 threads). Its bounded successor
    (343c495, reverted) kept the threads and hung its test in 2 of 32 runs (mostly loaded), in the
    1+3+9 tree's teardown, with the server's threads all gone and the loop idle: the test's
    200 connects ran on the loop, against socketserver's backlog of 5, so they waited on SYN
    retries (14 s, up to 1 s each) while the tree's loop stood still. Here nothing waits on a
    thread, and nothing blocks the loop: at most ``MAX_CONNECTIONS`` are held; a newcomer beyond that takes the place of the oldest
    one that has not sent its request yet (so idle connections cannot keep a scraper out), or,
    when every one is being answered, is told 503 and closed. A request must arrive within
    ``idle`` seconds and ``MAX_HEAD`` bytes, and the answer be taken within ``idle`` seconds;
    the text is made off the loop and shared by the scrapers of a second
    (:meth:`MetricsService.prometheus`)."""

    def __init__(self, service: MetricsService, idle: float = IDLE,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.service, self.idle, self.cap = service, idle, max_connections
        self.waiting: dict[asyncio.Task[None], asyncio.StreamWriter] = {}  # oldest first
        self.answering: set[asyncio.Task[None]] = set()
        self.refused = self.evicted = 0
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound (``port`` 0 picks one)."""
        self.server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)
        return int(self.server.sockets[0].getsockname()[1])

    def connections(self) -> int:
        return len(self.waiting) + len(self.answering)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks = [*self.waiting, *self.answering]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    def _admit(self, me: asyncio.Task[None], writer: asyncio.StreamWriter) -> bool:
        if self.connections() >= self.cap:
            if not self.waiting:
                self.refused += 1
                return False
            oldest = next(iter(self.waiting))
            self.waiting.pop(oldest).transport.abort()  # its reader fails; its task ends
            self.evicted += 1
        self.waiting[me] = writer
        return True

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        if not self._admit(me, writer):
            writer.write(_http(503, b"too many connections to this metrics endpoint; "
                               b"try again\n"))
            writer.close()
            return
        try:
            try:
                async with asyncio.timeout(self.idle):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                head = None
            if self.waiting.pop(me, None) is None:
                return  # evicted meanwhile
            self.answering.add(me)
            status, body, head_only = await self._answer(head)
            writer.write(_http(status, body, head_only))
            async with asyncio.timeout(self.idle):
                await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass  # silent, slow or gone: dropped
        finally:
            self.waiting.pop(me, None)
            self.answering.discard(me)
            writer.close()

    async def _answer(self, head: bytes | None) -> tuple[int, bytes, bool]:
        if head is None:
            return 431, f"the request's line and headers pass {MAX_HEAD} bytes\n".encode(), False
        words = head.split(b"\r\n", 1)[0].split()
        if len(words) != 3 or not words[2].startswith(b"HTTP/"):
            return 400, b"not an HTTP request: GET /metrics HTTP/1.1\n", False
        method, target = words[0], words[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, b"the metrics are read with GET /metrics\n", False
        if target not in (b"/metrics", b"/"):
            return 404, b"the metrics are at /metrics\n", method == b"HEAD"
        try:
            return 200, await self.service.prometheus(), method == b"HEAD"
        except Exception as e:  # noqa: BLE001 - the scraper is told; the daemon goes on
            log.warning("metrics: a scrape failed: %s", e)
            return 500, f"metrics: {e}\n".encode(), False


def _http(status: int, body: bytes, head_only: bool = False) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
              431: "Request Header Fields Too Large", 500: "Internal Server Error",
              503: "Service Unavailable"}[status]
    kind = CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8"
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


async def serve_prometheus(service: MetricsService, host: str, port: int,
                           idle: float = IDLE) -> tuple[PrometheusEndpoint, int]:
    """The endpoint listening on HOST:PORT (``await endpoint.stop()`` ends it), and its port."""
    endpoint = PrometheusEndpoint(service, idle)
    return endpoint, await endpoint.start(host, port)


def serve_metrics(daemon: Any, interval: float = INTERVAL) -> MetricsService:
    """Start sampling and serve ``/csrv/local/metrics`` (what `brasil serve` and the tests'
    daemons compose)."""
    service = MetricsService(daemon, interval)
    daemon.node.local.add("metrics", metrics_dir(service))
    service.start()
    return service
