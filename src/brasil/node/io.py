"""Where a session's bytes go: claimable outputs, record-wise aggregation, input distribution.

Output that nobody reads yet stays in its bounded stream and goes to whichever consumer claims it
first: readers of ``stdio``/``stdout`` (who may share), an aggregating parent, or a splice (both
exclusive). An :class:`Aggregator` pumps several outputs into one stream, cutting each at record
boundaries so lines from different processes never interleave mid-record. A
:class:`Distributor` is the inverse for input: broadcast, round-robin by record, or by hash of a
record's field (SPEC.md §3.1 ``mux``).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Awaitable, Callable, Protocol, Sequence

from ..exec.records import Reassembler, Splitter
from ..ninep.errors import NinepError
from ..ninep.maybe import Maybe, is_awaitable
from ..ninep.stream import Stream

log = logging.getLogger("brasil.session")

READ, AGGREGATE, SPLICE = "read", "aggregate", "splice"


class Output:
    """One output stream of one process, and who has claimed it."""

    def __init__(self, stream: Stream, label: str) -> None:
        self.stream = stream
        self.label = label  # e.g. "3/1 stdout", for error messages
        self.claim: str | None = None

    def take(self, who: str) -> None:
        if self.claim is None or (self.claim == READ and who == READ):
            self.claim = who
            return
        raise NinepError(f"{self.label} is already {'read' if self.claim == READ else self.claim + 'd'}"
                         f" by another consumer; output goes to the first consumer only")


class Sink(Protocol):
    def write(self, data: bytes) -> Maybe[int]: ...
    def close(self) -> None: ...


async def _await(x: Maybe[int]) -> int:
    return await x if is_awaitable(x) else x  # type: ignore[misc, return-value]


class Aggregator:
    """Copies record-aligned output of many sources into one stream; EOF after the last source."""

    def __init__(self, sources: Sequence[Output], splitter: Splitter, limit: int) -> None:
        self.out = Stream(limit)
        self.splitter = splitter
        self.tasks = [asyncio.ensure_future(self._pump(s)) for s in sources]
        self.active = len(self.tasks)
        if not self.tasks:
            self.out.close()

    async def _pump(self, src: Output) -> None:
        rs = Reassembler(self.splitter)
        try:
            while True:
                data = src.stream.read(65536)
                if is_awaitable(data):
                    data = await data  # type: ignore[misc]
                if not data:
                    break
                records = rs.feed(data)  # type: ignore[arg-type]
                if records:
                    await _await(self.out.write(b"".join(records)))
            tail = rs.finish()
            if tail:
                await _await(self.out.write(tail[0]))
        except NinepError:  # our reader went away: the aggregate is broken
            src.stream.break_()
        finally:
            self.active -= 1
            if self.active == 0:
                self.out.close()

    def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()
        self.out.break_()


class Distributor:
    """Spreads input over sinks by the session's mux mode, on record boundaries."""

    def __init__(self, sinks: Sequence[Sink], mode: str, field: int, splitter: Splitter,
                 weights: Sequence[int] | None = None) -> None:
        """``weights``: how many sub-sessions each sink stands for (a group on another node
        stands for several), so that rr and hash spread records evenly over sub-sessions."""
        self.sinks = list(sinks)
        self.owner = [i for i, w in enumerate(weights or [1] * len(self.sinks)) for _ in range(w)]
        self.mode = mode
        self.field = field
        self.rs = Reassembler(splitter)
        self.next = 0
        self.closed = False

    def write(self, data: bytes) -> Maybe[int]:
        if self.closed:
            raise NinepError("input already closed (end of file was sent)")
        if self.mode == "broadcast":
            return self._all([(s, data) for s in self.sinks], len(data))
        records = self.rs.feed(data)
        return self._all(self._route(records), len(data))

    def _route(self, records: list[bytes]) -> list[tuple[Sink, bytes]]:
        per: dict[int, list[bytes]] = {}
        n = len(self.owner)
        for r in records:
            if self.mode == "rr":
                slot = self.next
                self.next = (self.next + 1) % n
            else:
                fields = r.split()
                key = fields[self.field - 1] if len(fields) >= self.field else b""
                slot = zlib.crc32(key) % n
            per.setdefault(self.owner[slot], []).append(r)
        return [(self.sinks[i], b"".join(rs)) for i, rs in sorted(per.items())]

    def _all(self, writes: list[tuple[Sink, bytes]], n: int) -> Maybe[int]:
        waiting = []
        for sink, data in writes:
            r = sink.write(data)
            if is_awaitable(r):
                waiting.append(r)
        if waiting:
            return self._gather(waiting, n)
        return n

    async def _gather(self, waiting: list[Awaitable[int]], n: int) -> int:
        await asyncio.gather(*waiting)
        return n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.mode != "broadcast":
            tail = self.rs.finish()
            for sink, data in self._route(tail):
                sink.write(data)  # at most one record: accepted whole even over the limit
        for s in self.sinks:
            s.close()


class StreamSink:
    """A leaf's stdin as a Sink: end of file closes it."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def write(self, data: bytes) -> Maybe[int]:
        return self.stream.write(data)

    def close(self) -> None:
        self.stream.close()


class Splice:
    """Copies one output into one sink until end of file; both ends see how it ended."""

    def __init__(self, src: Output, dst: Sink, label: str,
                 on_end: Callable[["Splice"], None] | None = None) -> None:
        self.src, self.dst, self.label = src, dst, label
        self.state = "running"
        self.error = ""
        self.bytes = 0
        self.on_end = on_end
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                data = self.src.stream.read(65536)
                if is_awaitable(data):
                    data = await data  # type: ignore[misc]
                if not data:
                    break
                await _await(self.dst.write(data))  # type: ignore[arg-type]
                self.bytes += len(data)  # type: ignore[arg-type]
            self.dst.close()
            self.state = "done"
        except NinepError as e:
            self.state, self.error = "failed", f"consumer gone: {e}"
            self.src.stream.break_()  # the producer now gets EPIPE, as with a Unix pipe
        except asyncio.CancelledError:
            self.state = "cancelled"
            raise
        finally:
            if self.on_end:
                self.on_end(self)

    def describe(self) -> str:
        tail = f" ({self.error})" if self.error else ""
        return f"splice {self.label} {self.state} {self.bytes} bytes{tail}"
