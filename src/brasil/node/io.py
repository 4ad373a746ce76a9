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
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from ..exec.records import Fed, Key, Reassembler, Splitter
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
    def load(self) -> int: ...  # bytes written and not yet taken: how busy it is


async def _await(x: Maybe[int]) -> int:
    return await x if is_awaitable(x) else x  # type: ignore[misc, return-value]


class Aggregator:
    """Copies record-aligned output of many sources into one stream; EOF after the last source.

    Each source's chunks are reassembled into blocks of whole records, and a block goes out in
    one write, so records never interleave. A record longer than the reassembly window streams
    through as it arrives while its source holds the output (the others wait, paused, never
    dropped): memory stays at one window per source, and no record is ever cut.
    """

    def __init__(self, sources: Sequence[Output], splitter: Splitter, limit: int,
                 out: Stream | None = None, prefixes: Sequence[bytes] | None = None) -> None:
        """``out``: the stream to fill (a process's stdin, for a gather); a new one if None.
        ``prefixes``: bytes put before each record of each source (``label on``)."""
        self.out = out if out is not None else Stream(limit)
        self.splitter = splitter
        self.prefixes = list(prefixes) if prefixes else [b""] * len(sources)
        self.lock = asyncio.Lock()  # FIFO: writers take turns; a streamed record keeps it
        self.pending = b""  # the terminator owed to an unterminated last record, if more follows
        self.tasks = [asyncio.ensure_future(self._pump(s, p)) for s, p in zip(sources,
                                                                                self.prefixes)]
        self.active = len(self.tasks)
        if not self.tasks:
            self.out.close()

    async def _put(self, data: bytes) -> None:
        if self.pending and data:  # a record follows another source's unterminated last one
            pending, self.pending = self.pending, b""
            await self._put(pending)
        r = self.out.write(data)
        if is_awaitable(r):
            await r  # type: ignore[misc]

    def _label(self, prefix: bytes, block: bytes) -> bytes:
        return b"".join(prefix + r for r in self.splitter.split(block))

    async def _pump(self, src: Output, prefix: bytes = b"") -> None:
        rs = Reassembler(self.splitter)
        holding = False
        try:
            while True:
                data = src.stream.read(65536)
                if is_awaitable(data):
                    data = await data  # type: ignore[misc]
                if not data:
                    break
                streamed = rs.streaming
                fed = rs.feed(data)  # type: ignore[arg-type]
                if not (fed.end or fed.whole or fed.head or fed.more):
                    continue
                if not holding:
                    await self.lock.acquire()
                    holding = True
                if prefix:  # each whole record, and the start of a streamed one, is labelled
                    starts = fed.more and not (streamed and not fed.end)
                    parts = [fed.end, self._label(prefix, fed.block) if fed.head or fed.whole
                             else b"", prefix + fed.more if starts else fed.more]
                else:
                    parts = list(fed)
                for part in parts:
                    if part:
                        await self._put(part)
                if not fed.more:  # every record we wrote is complete: let the others in
                    self.lock.release()
                    holding = False
            tail = rs.finish()
            if tail:
                if not holding:
                    await self.lock.acquire()
                    holding = True
                await self._put(prefix + tail)
                self.pending = self.splitter.terminator or b""
        except NinepError:  # our reader went away: the aggregate is broken
            src.stream.break_()
        finally:
            if holding:
                self.lock.release()
            self.active -= 1
            if self.active == 0:
                self.out.close()

    def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()
        self.out.break_()


class Distributor:
    """Spreads input over sinks by the session's mux mode, on record boundaries.

    ``broadcast`` copies every write to every sink; ``rr`` deals records in turn; ``balance``
    gives each block of whole records to the sink with the least waiting (per sub-session it
    stands for); ``hash`` sends each record to the sink chosen by its key. A record too long for
    the reassembly window goes, as it streams, to the sink it was dealt to.
    """

    def __init__(self, sinks: Sequence[Sink], mode: str, key: Key, splitter: Splitter,
                 weights: Sequence[int] | None = None) -> None:
        """``weights``: how many sub-sessions each sink stands for (a group on another node
        stands for several), so that rr and hash spread records evenly over sub-sessions."""
        self.sinks = list(sinks)
        self.weight = list(weights or [1] * len(self.sinks))
        self.owner = [i for i, w in enumerate(self.weight) for _ in range(w)]
        self.mode = mode
        self.key = key
        self.splitter = splitter
        self.rs = Reassembler(splitter)
        self.next = 0
        self.long: int | None = None  # the sink a streamed record goes to
        self.closed = False

    def write(self, data: bytes) -> Maybe[int]:
        if self.closed:
            raise NinepError("input already closed (end of file was sent)")
        if self.mode == "broadcast":
            return self._all([(s, data) for s in self.sinks], len(data))
        return self._all(self._route(self.rs.feed(data)), len(data))

    def _least_busy(self) -> int:
        return min(range(len(self.sinks)), key=lambda i: self.sinks[i].load() / self.weight[i])

    def _pick(self, record: bytes) -> int:
        if self.mode == "balance":
            return self._least_busy()
        if self.mode == "rr":
            slot = self.next
            self.next = (self.next + 1) % len(self.owner)
        else:
            slot = self.key.index(record, len(self.owner))
        return self.owner[slot]

    def _route(self, fed: Fed) -> list[tuple[Sink, bytes]]:
        """One write per sink, its parts in input order."""
        per: dict[int, list[bytes]] = {}
        end, more = fed.end, fed.more
        if end and self.long is not None:
            per.setdefault(self.long, []).append(end)
            self.long = None
        if fed.whole or fed.head:
            if self.mode == "balance":
                per.setdefault(self._least_busy(), []).append(fed.block)
            elif self.mode == "hash":
                n = len(self.owner)
                for slot, part in enumerate(self.key.partition(fed.block, n, self.splitter)):
                    if part:
                        per.setdefault(self.owner[slot], []).append(part)
            else:
                for r in self.splitter.split(fed.block):
                    per.setdefault(self._pick(r), []).append(r)
        if more:
            if self.long is None:
                self.long = self._pick(more)
            per.setdefault(self.long, []).append(more)
        return [(self.sinks[i], b"".join(parts)) for i, parts in per.items()]

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
        """End of input: the last record (if it had no separator) goes where it belongs, then
        every sink sees end of file."""
        if self.closed:
            return
        self.closed = True
        tail = self.rs.finish() if self.mode != "broadcast" else b""
        writes = self._route(Fed(b"", b"", tail, b"")) if tail else []
        pending = self._all(writes, 0)
        if is_awaitable(pending):
            asyncio.ensure_future(self._close_after(pending))
        else:
            self._close_sinks()

    async def _close_after(self, pending: Awaitable[int]) -> None:
        try:
            await pending
        except NinepError:
            pass
        self._close_sinks()

    def _close_sinks(self) -> None:
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

    def load(self) -> int:
        return len(self.stream)


class Splice:
    """Copies one output into one sink until end of file; both ends see how it ended."""

    def __init__(self, src: Output, dst: Sink, label: str,
                 on_end: Callable[[Splice], None] | None = None) -> None:
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
