"""The child's side of the tree: dial the parent, authenticate, register, and keep at it.

Two connections, both opened by us: on the first we are the parent's client, and its ``/csrv``
becomes our ``/csrv/parent``; on the second we write ``join NAME`` and, once that is answered,
serve our own namespace over it to the parent. If either drops (or the parent stops answering
its heartbeat), ``/csrv/parent`` goes away and we dial again with backoff, under the same name,
while serving locally all along.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from ..ninep.auth import client_auth
from ..ninep.client import Client
from ..ninep.constants import OWRITE
from ..ninep.errors import NinepError
from ..ninep.messages import Topen, Twrite
from ..ninep.server import Connection
from ..ninep.transport import Address
from .remote import mount

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("brasil.tree")

HEARTBEAT = 1.0
HEARTBEAT_TIMEOUT = 3.0


class ParentLink:
    def __init__(self, daemon: Daemon, address: Address) -> None:
        self.daemon = daemon
        self.address = address
        self.client: Client | None = None
        self.task: asyncio.Task[None] | None = None
        self.joined = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def _connect(self) -> Client:
        secret = self.daemon.secret
        return await Client.connect(self.address, auth=client_auth(secret) if secret else None,
                                    timeout=5)

    async def _run(self) -> None:
        backoff = 0.2
        name = self.daemon.node.name
        while True:
            lost = asyncio.get_running_loop().create_future()

            def mark(why: str, lost: asyncio.Future[str] = lost) -> None:  # this round's
                if not lost.done():
                    lost.set_result(why)
            up = reverse = None
            conn_box: list[Connection] = []
            try:
                up = await self._connect()
                up.on_lost.append(functools.partial(mark, "connection to the parent lost"))
                parent = await mount(up, "csrv", "parent", "parent", ("up", name))
                reverse = await self._connect()
                fid, _ = await reverse.walk("csrv/local/join")
                await reverse.rpc(Topen, fid, OWRITE)

                def take(transport: asyncio.Transport, rest: bytes,
                         conn_box: list[Connection] = conn_box) -> None:
                    conn = self.daemon.server.protocol(self.daemon.server.authenticator)
                    transport.set_protocol(conn)
                    conn.connection_made(transport)
                    conn.on_lost.append(functools.partial(mark, "parent's connection to us lost"))
                    if rest:
                        conn.data_received(rest)
                    conn_box.append(conn)
                await reverse.rpc_then_hand_over(take, Twrite, fid, 0, f"join {name}\n".encode())
                csrv = self.daemon.node.csrv
                csrv.discard("parent")
                csrv.add("parent", parent)
                self.client = up
                self.joined.set()
                backoff = 0.2
                log.info("joined the tree under %s as %s", self.address, name)
                beat = asyncio.ensure_future(self._heartbeat(up, mark))
                try:
                    why = await lost
                finally:
                    beat.cancel()
                log.warning("parent %s: %s; serving locally, will rejoin", self.address, why)
            except (NinepError, ConnectionError, OSError, asyncio.TimeoutError) as e:
                log.warning("cannot join parent %s: %s (retrying in %.1fs)", self.address, e, backoff)
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
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _heartbeat(self, up: Client, mark) -> None:  # type: ignore[no-untyped-def]
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await asyncio.wait_for(up.stat("csrv"), HEARTBEAT_TIMEOUT)
            except (NinepError, ConnectionError, asyncio.TimeoutError):
                mark("no heartbeat from the parent")
                return

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
