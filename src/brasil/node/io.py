"""Where a session's bytes go: claimable outputs, record-wise aggregation, input distribution.

Output that nobody reads yet stays in its bounded stream and goes to whichever consumer claims it
first: readers of ``stdio``/``stdout`` (who may share), an aggregating parent, or a splice (both
exclusive). An :class:`Aggregator` pumps several outputs into one stream, cutting each at record
boundaries so lines from different processes never interleave mid-record. A
:class:`Distributor` is the inverse for input: broadcast, round-robin by record, or by hash of a
record's field (SPEC.md §3.1 ``mux``). Both are I/O around ``exec.route``, where the rules are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, cast

from ..exec.records import Key, Splitter
from ..exec.route import END, MORE, ONE, TAIL, WHOLE, Merger, Router, Write
from ..ninep.errors import Ehungup, NinepError
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
    return await cast(Awaitable[int], x) if is_awaitable(x) else cast(int, x)


class Aggregator:
    """Copies record-aligned output of many sources into one stream; EOF after the last source.

    Each source's chunks are cut into blocks of whole records (``exec.route``), and a block goes
    out in one write, so records never interleave. A record longer than the reassembly window
    streams through as it arrives while its source holds the output (the others wait, paused,
    never dropped): memory stays at one window per source, and no record is ever cut.
    """

    def __init__(self, sources: Sequence[Output], splitter: Splitter, limit: int,
                 out: Stream | None = None, prefixes: Sequence[bytes] | None = None) -> None:
        """``out``: the stream to fill (a process's stdin, for a gather); a new one if None.
        ``prefixes``: bytes put before each record of each source (``label on``)."""
        self.out = out if out is not None else Stream(limit)
        self.splitter = splitter
        self.prefixes = list(prefixes) if prefixes else [b""] * len(sources)
        self.merger = Merger(splitter.terminator)
        self.lock = asyncio.Lock()  # FIFO: the merger's writes leave in the order it gave them
        self.released: list[asyncio.Future[None]] = []  # sources waiting for their parked bytes
        self.flushing: asyncio.Future[None] | None = None
        self.tasks = [asyncio.ensure_future(self._pump(s, p)) for s, p in zip(sources,
                                                                                self.prefixes)]
        self.active = len(self.tasks)
        if not self.tasks:
            self.out.close()

    @property
    def live(self) -> bool:
        """Whether a source may still be added: some source has not ended, so the merged
        output has not reached end of file."""
        return self.active > 0 and not self.out.eof and not self.out.broken

    def add(self, src: Output, prefix: bytes = b"") -> asyncio.Future[None]:
        """One more source while the others run (an elastic session's ranks started by
        ``exec @RANKS``): merged as the first ones are. Returns its pump, done when it ends."""
        assert self.live, "a source added to an aggregate that has ended"
        task = asyncio.ensure_future(self._pump(src, prefix))
        self.tasks = [t for t in self.tasks if not t.done()]  # a long-lived merge: the live ones
        self.tasks.append(task)
        self.active += 1
        return task

    async def _emit(self, parts: list[bytes]) -> None:
        if not parts:
            return
        try:
            async with self.lock:
                for part in parts:
                    r = self.out.write(part)
                    if is_awaitable(r):
                        await cast(Awaitable[int], r)
        finally:
            if self.released:  # each checks whether its own bytes went (or the output broke)
                waiting, self.released = self.released, []
                for f in waiting:
                    if not f.done():
                        f.set_result(None)

    def _label(self, prefix: bytes, block: bytes) -> bytes:
        return b"".join(prefix + r for r in self.splitter.split(block))

    async def _put(self, src: Output, writes: list[Write], prefix: bytes, streaming: bool
                   ) -> bool:
        """Hand one source's writes to the merger and write what it answers; wait while some
        of ours are parked behind another source's long record. Whether a long record of ours
        is still streaming."""
        if self.out.broken:
            raise NinepError(*Ehungup)
        parts: list[bytes] = []
        for _, data, kind in writes:
            if prefix and data:  # each whole record, and the start of a streamed one, labelled
                if kind == WHOLE:
                    data = self._label(prefix, data)
                elif kind == TAIL or (kind == MORE and not streaming):
                    data = prefix + data
            if kind == MORE:
                streaming = True
            elif kind == END:
                streaming = False
            parts += self.merger.put(src, data, kind)
        await self._emit(parts)
        while self.merger.parks(src) and not self.out.broken:
            f = asyncio.get_running_loop().create_future()
            self.released.append(f)
            await f
        return streaming

    async def _pump(self, src: Output, prefix: bytes = b"") -> None:
        router = Router(ONE, 1, self.splitter)
        streaming = False
        try:
            while True:
                data = src.stream.read(65536)
                if is_awaitable(data):
                    data = await cast(Awaitable[bytes], data)
                if not data:
                    break
                writes = router.feed(cast(bytes, data))
                if writes:
                    streaming = await self._put(src, writes, prefix, streaming)
            await self._put(src, router.finish(), prefix, streaming)
        except NinepError:  # our reader went away: the aggregate is broken
            src.stream.break_()
        finally:
            parts = self.merger.release(src)
            self.active -= 1
            if parts:
                self.flushing = asyncio.ensure_future(self._emit_quietly(parts))
            elif self.active == 0 and (self.flushing is None or self.flushing.done()):
                self.out.close()

    async def _emit_quietly(self, parts: list[bytes]) -> None:
        """What another source parked behind ours, when ours ended abruptly."""
        try:
            await self._emit(parts)
        except NinepError:
            pass
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
    the reassembly window goes, as it streams, to the sink it was dealt to (``exec.route``).
    """

    def __init__(self, sinks: Sequence[Sink], mode: str, key: Key, splitter: Splitter,
                 weights: Sequence[int] | None = None) -> None:
        """``weights``: how many sub-sessions each sink stands for (a group on another node
        stands for several), so that rr and hash spread records evenly over sub-sessions."""
        self.sinks = list(sinks)
        self.mode = mode
        self.router = Router(mode, len(self.sinks), splitter, key,
                             busy=lambda i: self.sinks[i].load(), weights=weights)
        self.closed = False
        self.closing: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> Maybe[int]:
        if self.closed:
            raise NinepError("input already closed (end of file was sent)")
        return self._all(self.router.feed(data), len(data))

    def _all(self, writes: list[Write], n: int) -> Maybe[int]:
        """One write per sink, its parts in input order."""
        per: dict[int, list[bytes]] = {}
        for i, data, _ in writes:
            if data:
                per.setdefault(i, []).append(data)
        waiting: list[Awaitable[int]] = []
        for i, parts in per.items():
            r = self.sinks[i].write(parts[0] if len(parts) == 1 else b"".join(parts))
            if is_awaitable(r):
                waiting.append(cast(Awaitable[int], r))
        if waiting:
            return self._gather(waiting, n)
        return n

    def drop(self, gone: Callable[[Sink], bool]) -> None:
        """Sinks that ``gone`` names (released ranks) take no more input: what would go to
        them is discarded. Only for ``broadcast``, where the others get every byte anyway."""
        self.sinks = [Discard() if gone(s) else s for s in self.sinks]

    async def _gather(self, waiting: list[Awaitable[int]], n: int) -> int:
        await asyncio.gather(*waiting)
        return n

    def close(self) -> None:
        """End of input: the last record (if it had no separator) goes where it belongs, then
        every sink sees end of file."""
        if self.closed:
            return
        self.closed = True
        pending = self._all(self.router.finish(), 0)
        if is_awaitable(pending):
            self.closing = asyncio.ensure_future(self._close_after(cast(Awaitable[int], pending)))
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


class Discard:
    """A released rank's place in a broadcast: bytes sent there go nowhere."""

    def write(self, data: bytes) -> int:
        return len(data)

    def close(self) -> None:
        pass

    def load(self) -> int:
        return 0


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
                got = self.src.stream.read(65536)
                data = await cast(Awaitable[bytes], got) if is_awaitable(got) else cast(bytes, got)
                if not data:
                    break
                await _await(self.dst.write(data))
                self.bytes += len(data)
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
