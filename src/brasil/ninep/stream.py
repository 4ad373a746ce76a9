"""Bounded byte pipes: the one buffer between every producer and consumer in Brasil.

Readers wait for data, writers wait for room, end of file comes once closed and drained. A write
is accepted whole once the buffer is below its limit, so a buffer holds at most its limit plus one
write: output nobody reads pauses its producer instead of growing the daemon.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .errors import Ehungup, NinepError
from .maybe import Maybe

# ---- streams ----------------------------------------------------------------------------------------

class Stream:
    """A bounded byte pipe: readers wait for data, writers wait for room, end of file once closed.

    Writes are never dropped or split: a write is accepted whole once the buffer is below its
    limit, so the buffer holds at most ``limit`` plus one write.
    """

    __slots__ = ("limit", "_chunks", "_size", "eof", "broken", "_readers", "_writers",
                 "_drained", "_ready")

    def __init__(self, limit: int = 256 * 1024) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.eof = False  # no more data will be written
        self.broken = False  # the reading side is gone: writes fail
        self._readers: list[asyncio.Future[None]] = []
        self._writers: list[asyncio.Future[None]] = []
        self._drained: list[Callable[[], None]] = []
        self._ready: list[Callable[[], None]] = []  # called once data or end of file is here

    def __len__(self) -> int:
        return self._size

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        for f in waiters:
            if not f.done():
                f.set_result(None)
        waiters.clear()

    def read_nowait(self, count: int) -> bytes | None:
        """Up to ``count`` bytes; b"" at end of file; None when a reader would have to wait."""
        if self._size:
            first = self._chunks[0]
            if len(first) <= count:
                self._chunks.popleft()
                out = first
                while self._chunks and len(out) + len(self._chunks[0]) <= count:
                    out += self._chunks.popleft()
            else:
                out, self._chunks[0] = first[:count], first[count:]
            self._size -= len(out)
            if self._size < self.limit:
                if self._writers:
                    self._wake(self._writers)
                if self._drained:
                    callbacks, self._drained = self._drained, []
                    for cb in callbacks:
                        cb()
            return out
        if self.eof or self.broken:
            return b""
        return None

    def read(self, count: int) -> Maybe[bytes]:
        r = self.read_nowait(count)
        return r if r is not None else self._read_wait(count)

    async def _read_wait(self, count: int) -> bytes:
        while True:
            r = self.read_nowait(count)
            if r is not None:
                return r
            f = asyncio.get_running_loop().create_future()
            self._readers.append(f)
            await f

    def write_nowait(self, data: bytes) -> bool:
        if self.eof or self.broken:
            raise NinepError(*Ehungup)
        if self._size >= self.limit:
            return False
        if data:
            self._chunks.append(data)
            self._size += len(data)
            self._wake(self._readers)
            self._ready_now()
        return True

    def write(self, data: bytes) -> Maybe[int]:
        return len(data) if self.write_nowait(data) else self._write_wait(data)

    async def _write_wait(self, data: bytes) -> int:
        while not self.write_nowait(data):
            f = asyncio.get_running_loop().create_future()
            self._writers.append(f)
            await f
        return len(data)

    def feed(self, data: bytes) -> bool:
        """Accept ``data`` whatever the fill (for producers that pause instead of waiting, like a
        pipe transport); returns False when the producer should pause until :meth:`on_drain`."""
        if self.broken:
            return True  # nobody will ever read it: swallow, do not stall the producer
        if data:
            self._chunks.append(data)
            self._size += len(data)
            self._wake(self._readers)
            self._ready_now()
        return self._size < self.limit

    def when_ready(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the buffer first holds data or reaches end of file."""
        if self._size or self.eof or self.broken:
            callback()
        else:
            self._ready.append(callback)

    def _ready_now(self) -> None:
        if self._ready:
            callbacks, self._ready = self._ready, []
            for cb in callbacks:
                cb()

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the buffer next drops below its limit."""
        if self._size < self.limit or self.broken:
            callback()
        else:
            self._drained.append(callback)

    def close(self) -> None:
        """End of file for readers once they have drained what is buffered."""
        self.eof = True
        self._wake(self._readers)
        self._wake(self._writers)
        self._ready_now()

    def break_(self) -> None:
        """The reading side is gone: pending and future writes fail, buffered data is dropped."""
        self.broken = True
        self._chunks.clear()
        self._size = 0
        self._wake(self._writers)
        self._wake(self._readers)
        callbacks, self._drained = self._drained, []
        for cb in callbacks:
            cb()
        self._ready_now()
