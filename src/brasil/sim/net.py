"""The simulated network: ``sim:NAME`` addresses, connections as pairs of in-memory transports.

Registered as a fabric (``ninep/transport.py``), it is reached through the same ``listen`` and
``dial`` every daemon uses, so the 9P server, the client, the tree's links and the data endpoint
run unchanged over it. A byte written on one end reaches the other end's loop at ``now + its
time on the wire + latency``: each direction of a connection is a FIFO link of the modelled
bandwidth (a write waits for the previous one to leave), and each arrival is a timer on the
receiving daemon's loop, so it is handled when that daemon's simulated core is free.

What a daemon's death looks like: :meth:`Net.kill` closes its ends (its peers see the
connection end, as the kernel's FIN after a kill -9) and removes its listeners (dials are
refused); a frozen daemon (the driver's ``freeze``) keeps its connections, accepts dials as a
kernel would, and says nothing: only timeouts notice it.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any

from ..ninep.transport import Address, ProtocolFactory
from .clock import SimLoop


@dataclass(frozen=True)
class LinkModel:
    """One direction of every link: one-way latency (s) and bandwidth (bytes/s); and the CPU a
    real socket costs per message at each end (its system calls and the loop's transport, which
    the in-memory one does not spend), charged to the sender's and the receiver's core."""

    latency: float = 50e-6
    bandwidth: float = 1.25e9  # 10 Gb/s
    cpu_per_message: float = 0.0

    def __str__(self) -> str:
        return f"latency {self.latency * 1e6:.0f} µs, {self.bandwidth * 8 / 1e9:g} Gb/s"


class Counters:
    """Bytes a loop received and sent over the simulated network."""

    __slots__ = ("rx", "tx")

    def __init__(self) -> None:
        self.rx = self.tx = 0


class End(asyncio.Transport):
    """One end of a simulated connection, on its daemon's loop."""

    def __init__(self, net: Net, loop: SimLoop, peername: str) -> None:
        super().__init__(extra={"peername": (peername, 0), "sockname": (loop.name, 0)})
        self.net = net
        self.loop = loop
        self.peer: End | None = None
        self.protocol: asyncio.BaseProtocol | None = None
        self.inbox: collections.deque[bytes | None] = collections.deque()  # None: the peer closed
        self.arrived = 0  # items of the inbox whose time has come
        self.paused = False
        self.closing = False
        self.lost = False
        self.tx_free = 0.0  # when our direction of the link is free again
        net.ends.setdefault(loop, set()).add(self)

    # ---- asyncio.Transport ----

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        self._send(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._send(None)
        self.loop.call_soon(self._lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self.loop.call_soon(self._pump)

    def is_reading(self) -> bool:
        return not self.paused

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    # ---- the link ----

    def _send(self, data: bytes | None) -> None:
        peer = self.peer
        if peer is None or peer.lost:
            return
        model = self.net.model
        size = len(data) if data is not None else 0
        start = max(self.loop.time(), self.tx_free)
        self.tx_free = start + size / model.bandwidth
        self.net.counters(self.loop).tx += size
        self.loop.driver.charge(model.cpu_per_message)
        peer.inbox.append(data)
        peer.loop.call_at(self.tx_free + model.latency, peer._arrive)

    def _arrive(self) -> None:
        self.arrived += 1
        self._pump()

    def _pump(self) -> None:
        while self.arrived and not self.paused and not self.lost:
            self.arrived -= 1
            data = self.inbox.popleft()
            if data is None:
                self.closing = True
                self._lost(None)
                return
            self.net.counters(self.loop).rx += len(data)
            self.loop.driver.charge(self.net.model.cpu_per_message)
            assert isinstance(self.protocol, asyncio.Protocol)
            self.protocol.data_received(data)

    def _lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.net.ends.get(self.loop, set()).discard(self)
        if self.protocol is not None:
            self.protocol.connection_lost(exc)


class Listener(asyncio.AbstractServer):
    """What ``listen`` returns for a ``sim:`` address."""

    def __init__(self, net: Net, address: Address, loop: SimLoop,
                 factory: ProtocolFactory) -> None:
        self.net, self.address, self.loop, self.factory = net, address, loop, factory
        self.bound = [address]
        self.sockets = ()
        self.serving = True

    def close(self) -> None:
        self.serving = False
        if self.net.listeners.get(self.address.path) is self:
            del self.net.listeners[self.address.path]

    async def wait_closed(self) -> None:
        return None

    def is_serving(self) -> bool:
        return self.serving

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        raise NotImplementedError("a simulated listener serves while its loop is stepped")

    def accept(self, end: End) -> None:
        """The connection reached our loop (the kernel would have queued it for accept)."""
        if not self.serving:
            end.closing = True
            if end.peer is not None:
                end._send(None)
            return
        protocol = self.factory()
        end.set_protocol(protocol)
        protocol.connection_made(end)


class Net:
    """The fabric for ``sim:`` addresses: its listeners, its connections, its model."""

    kind = "sim"

    def __init__(self, model: LinkModel = LinkModel()) -> None:
        self.model = model
        self.listeners: dict[str, Listener] = {}
        self.ends: dict[SimLoop, set[End]] = {}
        self._counters: dict[SimLoop, Counters] = {}
        self.dead: set[str] = set()

    def counters(self, loop: SimLoop) -> Counters:
        c = self._counters.get(loop)
        if c is None:
            c = self._counters[loop] = Counters()
        return c

    async def listen(self, address: Address, factory: ProtocolFactory) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimLoop), "a sim: address is served by a simulated daemon"
        if address.path in self.listeners:
            raise OSError(f"{address}: already listening there")
        listener = self.listeners[address.path] = Listener(self, address, loop, factory)
        return listener

    async def dial(self, address: Address, factory: ProtocolFactory
                   ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        """The three-way handshake: the listener's loop gets the connection after one latency,
        we have it after two (a frozen listener is accepted by its "kernel" all the same)."""
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimLoop), "a sim: address is dialled from a simulated daemon"
        listener = self.listeners.get(address.path)
        if listener is None:
            raise ConnectionRefusedError(f"{address}: nobody listens there")
        mine = End(self, loop, listener.loop.name)
        theirs = End(self, listener.loop, loop.name)
        mine.peer, theirs.peer = theirs, mine
        lat = self.model.latency
        listener.loop.call_at(loop.time() + lat, listener.accept, theirs)
        ready: asyncio.Future[None] = loop.create_future()

        def established() -> None:
            if not ready.done():
                ready.set_result(None)
        loop.call_at(loop.time() + 2 * lat, established)
        await ready
        protocol = factory()
        mine.set_protocol(protocol)
        protocol.connection_made(mine)
        return mine, protocol

    def kill(self, loop: SimLoop) -> None:
        """A daemon killed: its listeners go, its connections end (peers see them close)."""
        for path, lst in list(self.listeners.items()):
            if lst.loop is loop:
                del self.listeners[path]
        for end in list(self.ends.get(loop, ())):
            if not end.closing:
                end.closing = True
                end._send(None)
            end.lost = True
        self.ends.pop(loop, None)
