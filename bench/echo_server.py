"""The ceiling for an asyncio 9P server here: a raw asyncio.Protocol that parses 9P frame sizes and
answers every frame with a 12-byte Rread carrying one byte (what a 1-byte read costs on the wire),
doing no 9P work at all.

    python bench/echo_server.py [--tcp HOST:PORT] [--unix PATH] [--batch]

Without --batch it writes one reply per request frame, as a 9P server answering each request as it
is decoded does; with --batch it joins the replies to one data_received chunk into one write (the
best a Python server could do). Standard library only, so any Python 3.8+ can run it.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
from typing import cast

from common import serve_until_signalled

RREAD = 117
_HEAD = struct.pack("<IB", 12, RREAD)  # size[4]=12 type[1]=Rread, then tag[2] count[4]=1 data[1]
_TAIL = struct.pack("<I", 1) + b"x"


class Echo(asyncio.Protocol):
    transport: asyncio.Transport  # from connection_made on, before any data

    def __init__(self, batch: bool) -> None:
        self.batch = batch
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream's
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n, pos = len(buf), 0
        write = self.transport.write
        out = [] if self.batch else None
        while n - pos >= 7:
            size = int.from_bytes(buf[pos:pos + 4], "little")
            if size < 7:
                self.transport.abort()
                return
            if n - pos < size:
                break
            reply = _HEAD + buf[pos + 5:pos + 7] + _TAIL
            if out is None:
                write(reply)
            else:
                out.append(reply)
            pos += size
        self.buf = buf[pos:] if pos < n else b""
        if out:
            write(b"".join(out))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tcp", help="HOST:PORT to listen on")
    ap.add_argument("--unix", help="Unix socket path to listen on")
    ap.add_argument("--batch", action="store_true", help="one write per received chunk")
    a = ap.parse_args()
    await serve_until_signalled(asyncio.get_running_loop(), lambda: Echo(a.batch), a.tcp,
                                a.unix)


if __name__ == "__main__":
    asyncio.run(main())
