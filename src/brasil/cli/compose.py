"""One daemon with all its services, built in one place: `brasil serve` and the tests' daemons
(tests/fixtures.py) both call :func:`compose`, so what the tests run is what users run.

The services return what they serve and this module mounts it: the tree's ``join``, ``lineage``
and ``subtree`` (``tree/daemon.py``) in ``/csrv/local``, the query directory (``group/query.py``)
as ``/csrv/query``, the views defined here (``group/viewdir.py``) as ``/csrv/local/views``, the
batch scheduler's files (``batch/files.py``) as
``/csrv/local/batch``, and the node's metrics (``group/metrics.py``) as ``/csrv/local/metrics``,
sampled every ``metrics_interval`` seconds and, with ``metrics_http``, served to Prometheus. It is the top of the layers (it imports tree, group and batch), which is
why it lives with the commands.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..batch.files import batch_dir
from ..batch.scheduler import DEFAULT_LEASE, DEFAULT_MAX_SUBMIT, DEFAULT_MAX_WORKLOAD, Scheduler
from ..batch.store import Store, Writer
from ..group.final import ViewStore
from ..group.metrics import INTERVAL, MetricsService, metrics_dir, serve_prometheus
from ..group.query import serve_queries
from ..group.viewdir import views_dir
from ..ninep.transport import Address
from ..node.daemon import Node
from ..tree.daemon import Daemon

if TYPE_CHECKING:
    from ..tree.discover import Options as DiscoverOptions  # (zeroconf: only when asked for)


@dataclass
class BatchOptions:
    """The scheduler's database (``db``: a URL; default ``batch.db`` in ``state_dir``) and its
    settings (Scheduler's)."""

    state_dir: str
    db: str | None = None
    password: str | None = None  # PostgreSQL's, given apart from the URL
    lease: float = DEFAULT_LEASE
    max_submit: int | None = None  # None: the scheduler's default
    max_workload: int | None = None
    writer: Writer | None = None  # what runs the store's writes (None: its thread; sim/batch.py)
    clock: Callable[[], float] = time.time  # the scheduler's wall clock (the simulator's: virtual)


class ListenError(Exception):
    """A listener could not be opened (what was started is stopped again)."""

    def __init__(self, address: Address, error: OSError, option: str = "--listen") -> None:
        super().__init__(f"cannot listen on {address}: {error.strerror or error}")
        self.address, self.error, self.option = address, error, option


@dataclass
class Composed:
    """A running daemon and its services; :meth:`stop` (or the daemon's own ``stop``, which
    stops the services composed onto it first) ends them in order."""

    daemon: Daemon
    listening: list[list[Address]]  # per address asked for, the bound ones (port 0 resolved)
    scheduler: Scheduler | None = None
    metrics: MetricsService | None = None
    metrics_port: int | None = None  # the Prometheus endpoint's, when there is one

    async def stop(self) -> None:
        await self.daemon.stop()


async def compose(node: Node, listen: Sequence[Address], *, secret: bytes | None = None,
                  parent: Address | None = None, discover: DiscoverOptions | None = None,
                  data_host: str = "127.0.0.1",
                  batch: BatchOptions | None = None, trace: bool = False,
                  metrics: bool = True, metrics_interval: float = INTERVAL,
                  metrics_http: tuple[str, int] | None = None, **limits: float) -> Composed:
    """Serve ``node`` on ``listen``: the tree (joined under ``parent``, if given, or one found
    by zeroconf with ``discover``), the data
    endpoint for direct splices (on ``data_host``), queries, and with ``batch`` a scheduler.
    ``metrics`` False: no ``/csrv/local/metrics`` (its sampler reads the real machine and its
    history runs a thread: a simulated node, brasil.sim, must not).
    ``limits``: the 9P server's caps and deadlines (ninep.server.Server). Raises
    :class:`ListenError`, or the store's StoreError for a database it cannot open, having
    stopped whatever it started."""
    daemon = Daemon(node, secret=secret, parent=parent, discover=discover, trace=trace,
                    **limits)
    for name, f in daemon.files().items():
        node.local.add(name, f)
    views = ViewStore()
    node.csrv.add("query", serve_queries(daemon, views))
    node.local.add("views", views_dir(views))
    service = MetricsService(daemon, metrics_interval) if metrics else None
    if service is not None:
        node.local.add("metrics", metrics_dir(service))
    done = Composed(daemon, [], metrics=service)
    try:
        for a in listen:
            try:
                done.listening.append(await daemon.listen(a))
            except OSError as e:
                raise ListenError(a, e) from e
        await daemon.start(data_host)
        if service is not None:
            service.start()
            daemon.services.append(service)
        if metrics_http is not None and service is not None:
            try:
                endpoint, done.metrics_port = await serve_prometheus(service, *metrics_http)
            except OSError as e:
                raise ListenError(Address("tcp", *metrics_http), e, "--metrics-listen") from e
            daemon.services.append(endpoint)
        if batch is not None:
            done.scheduler = await start_scheduler(node, batch)
            daemon.services.append(done.scheduler)
    except BaseException:
        await done.stop()
        raise
    return done


async def start_scheduler(node: Node, o: BatchOptions) -> Scheduler:
    url = o.db or os.path.join(o.state_dir, "batch.db")
    export = node.export.root if node.export is not None else None
    sched = Scheduler(Store(url, o.password, writer=o.writer), export_root=export, lease=o.lease,
                      max_submit=o.max_submit or DEFAULT_MAX_SUBMIT,
                      max_workload=o.max_workload or DEFAULT_MAX_WORKLOAD, clock=o.clock)
    await sched.start()
    node.local.add("batch", batch_dir(sched))
    return sched
