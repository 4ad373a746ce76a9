"""The child's side of the tree: dial the parent, authenticate, register, and keep at it.

Two connections, both opened by us: on the first we are the parent's client, and its ``/csrv``
becomes our ``/csrv/parent``; on the second we write ``join NAME`` and, once that is answered,
serve our own namespace over it to the parent. If either drops (or the parent stops polling our
``subtree``, its heartbeat), ``/csrv/parent`` goes away and we join again, serving locally all
along.

Every node knows the addresses of its ancestors: once joined it reads its parent's
``/csrv/local/lineage`` (the parent's address, then the parent's ancestors), which makes our own
lineage. When the parent is lost we join the nearest live ancestor (the grandparent first, then
up), so the loss of an interior node costs only that node: its subtree reappears under the next
one up within a few seconds. A lost parent that returns is tried last: the subtree stays where it
moved (it will not bounce back and forth), and the returned node rejoins as a leaf.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING

from ..ninep.auth import client_auth
from ..ninep.client import Client
from ..ninep.constants import OWRITE
from ..ninep.errors import NinepError
from ..ninep.messages import Topen, Twrite
from ..ninep.server import Connection
from ..ninep.transport import Address, parse_address
from .remote import mount

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("brasil.tree")

HEARTBEAT = 1.0
HEARTBEAT_TIMEOUT = 2.5
JOIN_TIMEOUT = 2.0  # for one attempt to join one ancestor (a frozen one must not hold us up)


class ParentLink:
    def __init__(self, daemon: Daemon, address: Address) -> None:
        self.daemon = daemon
        self.address = address  # the parent we are joined to, or trying
        self.ancestors: list[Address] = [address]  # nearest first: parent, grandparent, …
        self.client: Client | None = None
        self.task: asyncio.Task[None] | None = None
        self.joined = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    def lineage(self) -> list[str]:
        """Our ancestors' addresses, nearest first (what our children add us in front of)."""
        return [str(a) for a in self.ancestors] if self.joined.is_set() else []

    async def _connect(self) -> Client:
        secret = self.daemon.secret
        return await Client.connect(self.address, auth=client_auth(secret) if secret else None,
                                    timeout=JOIN_TIMEOUT)

    def _candidates(self, lost: Address | None) -> list[Address]:
        """Whom to try next: after losing a parent, the nearest ancestor above it, then on up,
        and the lost one last."""
        if lost is None:
            return list(self.ancestors)
        rest = [a for a in self.ancestors if a != lost]
        return rest + [lost]

    async def _read_lineage(self, up: Client) -> None:
        try:
            text = (await asyncio.wait_for(up.read("csrv/local/lineage"), JOIN_TIMEOUT)).decode()
        except (TimeoutError, NinepError, ConnectionError):
            return  # an older daemon: we know our parent at least
        found = []
        for line in text.split():
            try:
                found.append(parse_address(line))
            except ValueError:
                pass
        if found:
            self.ancestors = found

    async def _run(self) -> None:
        backoff = 0.2
        name = self.daemon.node.name
        lost_parent: Address | None = None
        candidates = self._candidates(None)
        while True:
            if not candidates:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                candidates = self._candidates(lost_parent)
            self.address = candidates.pop(0)
            lost = asyncio.get_running_loop().create_future()

            def mark(why: str, lost: asyncio.Future[str] = lost) -> None:  # this round's
                if not lost.done():
                    lost.set_result(why)
            up = reverse = None
            conn_box: list[Connection] = []
            try:
                up, parent, reverse, fid = await asyncio.wait_for(self._dial(name, mark),
                                                                  JOIN_TIMEOUT * 2)

                def take(transport: asyncio.Transport, rest: bytes,
                         conn_box: list[Connection] = conn_box) -> None:
                    conn = self.daemon.server.protocol(self.daemon.server.authenticator)
                    transport.set_protocol(conn)
                    conn.connection_made(transport)
                    conn.on_lost.append(functools.partial(mark, "parent's connection to us lost"))
                    if rest:
                        conn.data_received(rest)
                    conn_box.append(conn)
                await asyncio.wait_for(reverse.rpc_then_hand_over(
                    take, Twrite, fid, 0, f"join {name}\n".encode()), JOIN_TIMEOUT)
                csrv = self.daemon.node.csrv
                csrv.discard("parent")
                csrv.add("parent", parent)
                self.client = up
                self.joined.set()
                await self._read_lineage(up)
                backoff = 0.2
                lost_parent = None
                candidates = []
                log.info("joined the tree under %s as %s (ancestors: %s)", self.address, name,
                         ", ".join(map(str, self.ancestors)))
                beat = asyncio.ensure_future(self._heartbeat(conn_box, mark))
                try:
                    why = await lost
                finally:
                    beat.cancel()
                log.warning("parent %s: %s; serving locally, joining the nearest live ancestor",
                            self.address, why)
                lost_parent = self.address
                candidates = self._candidates(lost_parent)
            except (TimeoutError, NinepError, ConnectionError, OSError) as e:
                log.warning("cannot join %s: %s%s", self.address, e or "timed out",
                            "" if candidates else f" (trying again in {backoff:.1f}s)")
            except asyncio.CancelledError:
                for c in (up, reverse):
                    if c is not None:
                        c.abort()
                raise
            if self.joined.is_set():
                self.daemon.node.neighbor_lost("parent")
            self.joined.clear()
            self.client = None
            self.daemon.node.csrv.discard("parent")
            for c in (up, reverse):
                if c is not None:
                    c.abort()
            for conn in conn_box:
                conn.abort()

    async def _dial(self, name: str, mark):  # type: ignore[no-untyped-def]
        """Both connections to the parent at ``self.address``, and our ``/csrv/parent``."""
        up = reverse = None
        try:
            up = await self._connect()
            up.on_lost.append(functools.partial(mark, "connection to the parent lost"))
            parent = await mount(up, "csrv", "parent", "parent", ("up", name))
            reverse = await self._connect()
            fid, _ = await reverse.walk("csrv/local/join")
            await reverse.rpc(Topen, fid, OWRITE)
            return up, parent, reverse, fid
        except BaseException:
            for c in (up, reverse):
                if c is not None:
                    c.abort()
            raise

    async def _heartbeat(self, conn_box: list[Connection], mark) -> None:  # type: ignore[no-untyped-def]
        """The parent reads our ``subtree`` every second over the connection it took over: its
        silence is the sign, without a request of ours (a stat a second from every node)."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            if conn_box and time.monotonic() - conn_box[0].last_heard > HEARTBEAT_TIMEOUT:
                mark(f"no heartbeat from the parent: not polled for {HEARTBEAT_TIMEOUT:g}s")
                return

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
