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
from typing import Any, Callable

from ..ninep.errors import NinepError
from ..ninep.maybe import is_awaitable
from ..ninep.ratelimit import RateLimited
from ..ninep.transport import Address, open_stream, parse_address, serve_streams
from ..node.io import Output, Sink

log = logging.getLogger("brasil.data")
limited = RateLimited(log)
_LEN = struct.Struct("<I")
CHUNK = 256 * 1024
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
        self.task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return f"splice {self.label} {self.state} {self.bytes} bytes" + (
            f" ({self.error})" if self.error else "")


class DataEndpoint:
    def __init__(self) -> None:
        self.expected: dict[str, tuple[Sink, Transfer]] = {}
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

    def expect(self, token: str, sink: Sink, label: str) -> Transfer:
        t = Transfer(label)
        self.expected[token] = (sink, t)
        asyncio.get_running_loop().call_later(TOKEN_TTL, self._expire, token)
        return t

    def _expire(self, token: str) -> None:
        got = self.expected.pop(token, None)
        if got is not None:  # the arranging node went through the tree instead: nothing failed
            got[1].state = "unused"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= MAX_CONNECTIONS:
            limited.warning("data full", "data connection from %s refused: %d open already",
                            writer.get_extra_info("peername"), self.open)
            writer.close()
            return
        self.open += 1
        try:
            await self._serve(reader, writer)
        finally:
            self.open -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            token = await asyncio.wait_for(read_frame(reader), 10)
        except (asyncio.TimeoutError, ConnectionError):
            writer.close()
            return
        entry = self.expected.pop((token or b"").decode("ascii", "replace"), None)
        if entry is None:
            limited.warning("bad token", "data connection from %s with an unknown token: closed",
                            writer.get_extra_info("peername"))
            writer.close()
            return
        sink, t = entry
        t.state = "running"
        t.task = asyncio.current_task()  # type: ignore[assignment]
        try:
            while True:
                data = await read_frame(reader)
                if data is None:
                    t.state, t.error = "failed", "producer lost"
                    break
                if not data:
                    t.state = "done"
                    break
                r = sink.write(data)
                if is_awaitable(r):
                    await r
                t.bytes += len(data)
        except NinepError as e:  # our consumer is gone
            t.state, t.error = "failed", f"consumer gone: {e}"
        except ConnectionError as e:
            t.state, t.error = "failed", str(e)
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

    def expect(self, token: str, sink: Sink, label: str) -> Transfer:
        return self.endpoint.expect(token, sink, label)

    async def send(self, address: str, token: str, claim: Callable[[], Output], label: str
                   ) -> Transfer:
        return await send(address, token, claim, label)


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
    t.state = "running"

    async def pump() -> None:
        try:
            while True:
                data = src.stream.read(CHUNK)
                if is_awaitable(data):
                    data = await data
                writer.write(frame(data))  # an empty read is end of file: the end frame
                await writer.drain()
                if not data:
                    t.state = "done"
                    break
                t.bytes += len(data)
        except (ConnectionError, OSError, NinepError) as e:
            t.state, t.error = "failed", f"consumer lost: {e}"
            src.stream.break_()  # the producer now gets EPIPE, as with a Unix pipe
        finally:
            writer.close()
            if on_end:
                on_end(t)
    t.task = asyncio.ensure_future(pump())
    return t
