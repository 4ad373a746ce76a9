"""Cut-through data: spliced bytes go straight from the producer's node to the consumer's.

Every daemon has a data endpoint (a TCP port, listed in ``/csrv/local/net``). A splice between
processes on two nodes is arranged over 9P, where both sides are authenticated: the consumer's
sub-session is told ``splicein TOKEN`` and expects one connection presenting that token; the
producer's is told ``spliceout TOKEN ADDR`` and connects there. A token is random, single-use and
expires unused after a while, so holding one is the authorisation. On the wire: frames of
``length[4] bytes``; the first carries the token, a zero length is a clean end of file. A
connection that ends without that zero frame means the producer's node died: the consumer sees
end of file and both sessions' status say the splice failed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from ..exec.records import Key, Splitter
from ..exec.route import HASH, Router
from ..lifecycle import step
from ..ninep.errors import NinepError
from ..ninep.maybe import is_awaitable
from ..ninep.ratelimit import RateLimited
from ..ninep.transport import Address, open_stream, parse_address, serve_streams
from ..node.io import Output, Sink
from .transfer_lifecycle import TRANSFER

log = logging.getLogger("brasil.data")
limited = RateLimited(log)
_LEN = struct.Struct("<I")
CHUNK = 256 * 1024
HIGH = 1 << 20  # bytes waiting on a connection past which a scatter waits (or picks another)
TOKEN_TTL = 30.0
MAX_CONNECTIONS = 1024


def new_token() -> str:
    return secrets.token_hex(16)


def frame(data: bytes) -> bytes:
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's bytes; b"" for the end frame; None if the connection just ended."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError:
        return None
    (n,) = _LEN.unpack(head)
    if n > CHUNK:
        raise ConnectionError(f"data frame of {n} bytes exceeds {CHUNK}")
    try:
        return await reader.readexactly(n) if n else b""
    except asyncio.IncompleteReadError:
        return None


class Transfer:
    """One direction of one cut-through splice, as a session's status shows it."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.state = "waiting"
        self.error = ""
        self.bytes = 0
        self.task: asyncio.Future[None] | None = None

    def move(self, event: str, error: str = "") -> None:
        self.state = step(TRANSFER, self.state, event, f"transfer {self.label}")
        if error:
            self.error = error

    def describe(self) -> str:
        return f"splice {self.label} {self.state} {self.bytes} bytes" + (
            f" ({self.error})" if self.error else "")


class DataEndpoint:
    def __init__(self) -> None:
        self.expected: dict[str, list[tuple[Sink, Transfer]]] = {}
        self.open = 0
        self.server: asyncio.AbstractServer | None = None
        self.address: Address | None = None

    async def start(self, host: str = "127.0.0.1") -> Address:
        """Listen on ``host`` (where the daemon's 9P listener is). On a wildcard address the
        endpoint is advertised under this host's name, which other nodes can resolve."""
        self.server, bound = await serve_streams(host, self._accept)
        if bound.host in ("0.0.0.0", "::"):
            bound = Address("tcp", socket.getfqdn(), bound.port)
        self.address = bound
        return bound

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def expect(self, token: str, sinks: list[Sink], label: str) -> list[Transfer]:
        """One connection presenting ``token`` per sink, in order (a gather expects several)."""
        ts = [Transfer(label if len(sinks) == 1 else f"{label}/{i}") for i in range(len(sinks))]
        self.expected[token] = list(zip(sinks, ts))
        asyncio.get_running_loop().call_later(TOKEN_TTL, self._expire, token)
        return ts

    def _expire(self, token: str) -> None:
        for sink, t in self.expected.pop(token, []):
            # the arranging node went through the tree instead, or a sender never came
            t.move("expire")
            sink.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= MAX_CONNECTIONS:
            limited.warning("data full", "data connection from %s refused: %d open already",
                            writer.get_extra_info("peername"), self.open)
            writer.close()
            return
        self.open += 1
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Its session closed and stopped the splice: the end of this connection, not an
            # error. (Python 3.11's streams log a cancelled handler task with a traceback.)
            pass
        finally:
            self.open -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            token = await asyncio.wait_for(read_frame(reader), 10)
        except (TimeoutError, ConnectionError):
            writer.close()
            return
        key = (token or b"").decode("ascii", "replace")
        waiting = self.expected.get(key)
        if not waiting:
            limited.warning("bad token", "data connection from %s with an unknown token: closed",
                            writer.get_extra_info("peername"))
            writer.close()
            return
        sink, t = waiting.pop(0)
        if not waiting:
            del self.expected[key]
        t.move("connect")
        t.task = asyncio.current_task()
        try:
            while True:
                data = await read_frame(reader)
                if data is None:
                    t.move("fail", "producer lost")
                    break
                if not data:
                    t.move("end")
                    break
                r = sink.write(data)
                if is_awaitable(r):
                    await cast(Awaitable[int], r)
                t.bytes += len(data)
        except NinepError as e:  # our consumer is gone
            t.move("fail", f"consumer gone: {e}")
        except ConnectionError as e:
            t.move("fail", str(e))
        finally:
            sink.close()
            writer.close()


class CutThrough:
    """What a node needs for direct splices (``Node.cut_through``)."""

    def __init__(self, endpoint: DataEndpoint) -> None:
        self.endpoint = endpoint

    @property
    def address(self) -> Address | None:
        return self.endpoint.address

    def new_token(self) -> str:
        return new_token()

    def expect(self, token: str, sinks: list[Sink], label: str) -> list[Transfer]:
        return self.endpoint.expect(token, sinks, label)

    async def send(self, address: str, token: str, claim: Callable[[], Output], label: str
                   ) -> Transfer:
        return await send(address, token, claim, label)

    async def scatter(self, dests: list[tuple[str, str]], claim: Callable[[], Output], mode: str,
                      key: Key | None, rs: Splitter, label: str) -> Transfer:
        return await scatter(dests, claim, mode, key, rs, label, self.endpoint)


async def send(address: str, token: str, claim: Callable[[], Output], label: str,
               on_end: Callable[[Transfer], Any] | None = None) -> Transfer:
    """Connect to a consumer's endpoint (ConnectionError if there is no direct path), claim the
    output only then, and pump it there in the background."""
    reader, writer = await open_stream(parse_address(address))
    try:
        src = claim()
    except NinepError:
        writer.close()
        raise
    writer.write(frame(token.encode()))
    t = Transfer(label)
    t.move("connect")

    async def pump() -> None:
        try:
            while True:
                data = await _read(src, CHUNK)
                writer.write(frame(data))  # an empty read is end of file: the end frame
                await writer.drain()
                if not data:
                    t.move("end")
                    break
                t.bytes += len(data)
        except (ConnectionError, OSError, NinepError) as e:
            t.move("fail", f"consumer lost: {e}")
            src.stream.break_()  # the producer now gets EPIPE, as with a Unix pipe
        finally:
            writer.close()
            if on_end:
                on_end(t)
    t.task = asyncio.ensure_future(pump())
    return t


class LocalConn:
    """A destination on this very node: the bytes go straight into its gather, not through a
    socket to ourselves. Shaped like the StreamWriter a remote destination gets: writes queue
    (in order) and ``drain`` waits until they are taken."""

    def __init__(self, sink: Sink, transfer: Transfer) -> None:
        self.sink, self.t = sink, transfer
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.ended = False
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.t.move("connect")

    @property
    def transport(self) -> LocalConn:
        return self

    def get_write_buffer_size(self) -> int:
        return self.queued

    def is_closing(self) -> bool:
        return self.error is not None  # its consumer is gone

    def write(self, data: bytes) -> None:
        if not data:
            self.ended = True
        else:
            self.queue.append(data)
            self.queued += len(data)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        try:
            while self.queue:
                data = self.queue[0]
                r = self.sink.write(data)
                if is_awaitable(r):
                    await cast(Awaitable[int], r)
                self.queue.popleft()
                self.queued -= len(data)
                self.t.bytes += len(data)
            if self.ended and self.t.state == "running":
                self.t.move("end")
        except NinepError as e:  # the consumer is gone
            self.error = e
            self.t.move("fail", f"consumer gone: {e}")

    async def drain(self) -> None:
        if self.task is not None:
            await self.task
        if self.error is not None:
            raise ConnectionError(str(self.error))

    def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.add_done_callback(lambda _: self.sink.close())
        else:
            self.sink.close()


class _Buffer(Protocol):
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...


class _Conn(Protocol):
    """A consumer's connection: an asyncio StreamWriter, or a :class:`LocalConn`."""

    @property
    def transport(self) -> _Buffer: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...


async def _read(src: Output, n: int) -> bytes:
    got = src.stream.read(n)
    return await cast(Awaitable[bytes], got) if is_awaitable(got) else cast(bytes, got)


async def scatter(dests: list[tuple[str, str]], claim: Callable[[], Output], mode: str,
                  key: Key | None, rs: Splitter, label: str,
                  local: DataEndpoint | None = None) -> Transfer:
    """One output to several consumers' endpoints (``(token, address)`` pairs), cut into whole
    records: ``one`` sends all to the only one, ``balance`` each block to the consumer whose
    connection has the least waiting, ``hash`` each record to the one its key picks (the rules:
    ``exec.route``). This is the many-to-many part of PUSH's ``|<`` and ``|#|``: each
    producer's node sends straight to each consumer's node, never through the tree."""
    conns: list[_Conn] = []
    here = str(local.address) if local is not None and local.address is not None else None
    try:
        for token, address in dests:
            waiting = local.expected.get(token) if local is not None and address == here else None
            if local is not None and waiting:  # a copy on this node: no socket to ourselves
                sink, t0 = waiting.pop(0)
                if not waiting:
                    del local.expected[token]
                conns.append(LocalConn(sink, t0))
                continue
            _, writer = await open_stream(parse_address(address))
            writer.write(frame(token.encode()))
            conns.append(writer)
        src = claim()
    except (NinepError, ConnectionError):
        for w in conns:
            w.close()
        raise
    t = Transfer(label)
    t.move("connect")
    t.task = asyncio.ensure_future(Scatter(conns, src, mode, key, rs, t).pump())
    return t


class Scatter:
    """The I/O around one :class:`~brasil.exec.route.Router`: frames out, flow control, and
    consumers that went away (quit early, as head does)."""

    def __init__(self, conns: list[_Conn], src: Output, mode: str, key: Key | None,
                 rs: Splitter, t: Transfer) -> None:
        self.conns, self.src, self.t = conns, src, t
        self.router = Router(mode, len(conns), rs, key, busy=self.busy)

    def busy(self, i: int) -> int:
        return self.conns[i].transport.get_write_buffer_size()

    def live(self) -> list[int]:
        """Tell the router which consumers went away; the ones still there."""
        for i in self.router.live():
            if self.conns[i].transport.is_closing():
                self.router.died(i)
        return self.router.live()

    def send(self, i: int, data: bytes) -> None:
        w = self.conns[i]
        if not data or i in self.router.dead:
            return
        if w.transport.is_closing():
            self.router.died(i)  # its records are dropped: it stopped reading, as a pipe's
            return               # reader may
        if isinstance(w, LocalConn):
            w.write(data)
            return
        for at in range(0, len(data), CHUNK):
            w.write(frame(data[at:at + CHUNK]))

    async def drain(self, i: int) -> None:
        try:
            await self.conns[i].drain()
        except (ConnectionError, OSError):
            self.router.died(i)

    async def room(self, targets: list[int], any_one: bool) -> None:
        """Until one of ``targets`` (balance) or each of them (hash, one) is below the mark."""
        targets = [i for i in targets if i not in self.router.dead]
        full = [i for i in targets if self.busy(i) >= HIGH]
        if not full or (any_one and len(full) < len(targets)):
            return
        if not any_one:
            await asyncio.gather(*(self.drain(i) for i in full))
            return
        waits = [asyncio.ensure_future(self.drain(i)) for i in full]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for f in waits:
            f.cancel()

    async def pump(self) -> None:
        router, t = self.router, self.t
        cut = False
        try:
            while True:
                if not self.live():
                    raise ConnectionResetError("every consumer has gone")
                if router.mode != HASH and router.long is None:
                    await self.room(self.live(), any_one=True)
                data = await _read(self.src, CHUNK)
                self.live()
                if not data:
                    for i, part, _ in router.finish():
                        self.send(i, part)
                    break
                t.bytes += len(data)
                writes = router.feed(data)
                if router.cut:
                    if not router.live():
                        raise ConnectionResetError("every consumer has gone")
                    cut = True  # a record for a consumer that quit: as a shell write to a
                    break       # closed pipe, the producer gets SIGPIPE
                for i, part, _ in writes:
                    self.send(i, part)
                written = {i for i, _, _ in writes}
                if router.long is not None:
                    written.add(router.long)
                await self.room(sorted(written), any_one=False)
            for i, w in enumerate(self.conns):
                if i not in router.dead and not w.transport.is_closing():
                    w.write(b"" if isinstance(w, LocalConn) else frame(b""))  # a clean end
            await asyncio.gather(*(self.drain(i) for i in range(len(self.conns))))
            t.move("end")
            if cut:  # the others have had a clean end; the producer gets EPIPE
                self.src.stream.break_()
        except (ConnectionError, OSError, NinepError) as e:
            t.move("fail", f"consumer lost: {e}")
            self.src.stream.break_()  # the producer now gets EPIPE, as with a Unix pipe
        finally:
            for w in self.conns:
                w.close()
