"""Where records go: one router and one merger, with no I/O inside (sans-IO).

The daemon's input distribution (``node/io.py``: ``mux``), its output aggregation and gathers,
cut-through scatters between daemons (``tree/data.py``) and PUSH's pipes on one machine
(``push/local.py``) all do the same thing: cut a byte stream into whole records, deal them to
destinations, and merge several streams into one without ever splitting or interleaving a
record. The rules live here once; those modules only move bytes and wait.

A :class:`Router` is one source's state. It is fed chunks and consumer events (a destination
died) and answers with :data:`Write` triples ``(destination, bytes, kind)`` in the order they must
leave. ``kind`` says what the bytes are, which is what a merger on the other side needs to know:
:data:`WHOLE` records, :data:`MORE` of a record too long to hold (its destination belongs to this
source until the record's :data:`END`), or the source's last record without its separator
(:data:`TAIL`, which owes a terminator to whatever is merged after it). A record for a dead
``hash`` destination cannot go anywhere else: the router sets :attr:`Router.cut`, and the shell
treats it as a write to a closed pipe (the producer gets SIGPIPE), as a shell pipeline would.

A :class:`Merger` is one destination fed by several sources: it lets a long record own the
destination (others' bytes are parked until its end) and inserts the owed terminator.
:class:`KeepOrder` is the ``keep`` region's merger: blocks cut from one source, run in any order,
put back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

from .records import WINDOW, Reassembler, Splitter

ONE, RR, BALANCE, HASH, BROADCAST = "one", "rr", "balance", "hash", "broadcast"
MODES = (ONE, RR, BALANCE, HASH, BROADCAST)

WHOLE, MORE, END, TAIL = 0, 1, 2, 3  # what a write holds (see the module's docstring)

Write = tuple[int, bytes, int]  # (destination, bytes, kind)


class Keyed(Protocol):
    """What ``hash`` needs of a key (``exec.records.Key``)."""

    def index(self, record: bytes, n: int) -> int: ...
    def partition(self, block: bytes, n: int, splitter: Splitter) -> list[bytes]: ...


class Router:
    """One source's records dealt to ``n`` destinations by ``mode``.

    ``one``: all to the first live one; ``rr``: record by record in turn; ``balance``: each block
    of whole records to the live destination ``busy`` ranks lowest (the first of equals);
    ``hash``: each record to the one its key picks; ``broadcast``: every chunk as it came to
    every live one (no cutting). ``weights``: how many slots each destination stands for (a
    group of sub-sessions elsewhere), so that ``rr`` and ``hash`` spread over slots, and
    ``balance`` divides ``busy`` by it. A long record goes, as it streams, where its start was
    dealt. ``views``: whole records may be zero-copy memoryviews of the chunk fed; ``window``: the
    longest record held whole (``exec.records.WINDOW``).
    """

    def __init__(self, mode: str, n: int, splitter: Splitter, key: Keyed | None = None,
                 busy: Callable[[int], float] | None = None,
                 weights: Sequence[int] | None = None, views: bool = False,
                 window: int = WINDOW) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown routing mode {mode}")
        if mode == HASH and key is None:
            raise ValueError("hash needs a key")
        self.mode, self.n, self.splitter, self.key = mode, n, splitter, key
        self.busy = busy or (lambda i: 0)
        self.weight = list(weights or [1] * n)
        self.owner = [i for i, w in enumerate(self.weight) for _ in range(w)]  # slot → dest
        self.rs = Reassembler(splitter, window, views)
        self.views = views
        self.next = 0  # rr: the next slot
        self.long: int | None = None  # the destination a streamed record goes to
        self.dead: set[int] = set()
        self.cut = False  # a record was owed to a dead destination: the producer gets SIGPIPE

    # ---- events ----

    def died(self, i: int) -> None:
        """Destination ``i`` stopped reading (quit early, as head does): its bytes are dropped."""
        self.dead.add(i)

    def live(self) -> list[int]:
        return [i for i in range(self.n) if i not in self.dead]

    def feed(self, data: bytes) -> list[Write]:
        """What one chunk of input becomes. Nothing once :attr:`cut`."""
        if self.cut:
            return []
        if self.mode == BROADCAST:
            return [(i, data, WHOLE) for i in self.live()] if data else []
        out: list[Write] = []
        end, head, whole, more = self.rs.feed(data)
        if end and self.long is not None:
            self._add(out, self.long, end, END)
            self.long = None
        if head or whole:
            # With ``views`` the whole records are a memoryview of the chunk fed, and go on as
            # it to sinks typed for bytes: every one of them takes any buffer (os.write,
            # transport.write, bytearray +=); typing views through every sink is not worth it.
            if not self._block(out, head, cast(bytes, whole), WHOLE):
                return self._cut()
        if more:
            if self.long is None:
                self.long = self._pick(more)
                if self.long is None:
                    return self._cut()
            self._add(out, self.long, more, MORE)
        return out

    def finish(self) -> list[Write]:
        """End of input: the last record if it had no separator (a :data:`TAIL`); or, if a
        streamed record was cut short by the end, an empty :data:`END` (its destination is free
        again)."""
        if self.cut or self.mode == BROADCAST:
            return []
        out: list[Write] = []
        tail = self.rs.finish()
        if self.long is not None:
            # A streamed record cut short by the end had no separator either: it owes one to
            # whatever is merged after it (docs/reference.md §Records: the two stay two).
            self._add(out, self.long, b"", TAIL)
            self._add(out, self.long, b"", END)
            self.long = None
        if tail and not self._block(out, b"", tail, TAIL):
            return self._cut()
        return out

    # ---- the rules ----

    def _cut(self) -> list[Write]:
        self.cut = True
        return []

    def _add(self, out: list[Write], i: int, data: bytes, kind: int) -> None:
        if i not in self.dead:
            out.append((i, data, kind))

    def _pick(self, record: bytes) -> int | None:
        """Where a record (or a block of them, or a long one's start) goes; None: nowhere."""
        mode = self.mode
        if mode == HASH:
            assert self.key is not None
            i = self.owner[self.key.index(record, len(self.owner))]
            return None if i in self.dead else i
        live = self.live()
        if not live:
            return None
        if mode == RR:
            while True:
                i = self.owner[self.next]
                self.next = (self.next + 1) % len(self.owner)
                if i not in self.dead:
                    return i
        if mode == BALANCE:
            busy, w = self.busy, self.weight
            return min(live, key=lambda i: busy(i) / w[i])
        return live[0]

    def _block(self, out: list[Write], head: bytes, whole: bytes, kind: int) -> bool:
        """Deal a block of whole records; False if a record has nowhere to go."""
        mode = self.mode
        if mode == HASH:
            assert self.key is not None
            block = head + whole if head else bytes(whole)
            parts = self.key.partition(block, len(self.owner), self.splitter)
            owner, dead = self.owner, self.dead
            if any(part and owner[s] in dead for s, part in enumerate(parts)):
                return False  # as a shell write to a closed pipe
            out += [(owner[s], part, kind) for s, part in enumerate(parts) if part]
        elif mode == RR:
            block = head + whole if head else bytes(whole)
            for r in self.splitter.split(block):
                i = self._pick(r)
                if i is None:
                    return False
                out.append((i, r, kind))
        else:
            i = self._pick(whole)
            if i is None:
                return False
            if head and self.views:  # two halves of one block, back to back: no copy made
                out.append((i, head, MORE))
                out.append((i, whole, END if kind == WHOLE else kind))
            else:
                out.append((i, head + whole if head else whole, kind))
        return True


class Merger:
    """One destination fed by several sources, record-whole.

    :meth:`put` answers the bytes to write now, in order. While a source streams a long record
    (from its :data:`MORE` to its :data:`END`) the destination is its own; the others' writes are
    parked (the shell stops reading a source with parked bytes) and go out when it ends. After a
    :data:`TAIL`, the record written next is preceded by the splitter's terminator, so that two
    unterminated last records never become one.
    """

    def __init__(self, terminator: bytes | None) -> None:
        self.terminator = terminator or b""
        self.owner: object | None = None
        self.parked: list[tuple[object, bytes, int]] = []
        self.pending = b""  # the terminator owed to an unterminated last record, if more follows

    def put(self, source: object, data: bytes, kind: int = WHOLE) -> list[bytes]:
        if self.owner is not None and self.owner is not source:
            if data or kind in (END, TAIL):
                self.parked.append((source, data, kind))
            return []
        out: list[bytes] = []
        if kind == MORE:
            self.owner = source
        if data:
            if self.pending:
                out.append(self.pending)
                self.pending = b""
            out.append(data)
        if kind == TAIL:  # (empty: the end of a streamed record that had no separator)
            self.pending = self.terminator
        if kind == END:
            out += self.release(source)
        return out

    def release(self, source: object) -> list[bytes]:
        """``source``'s long record has ended (or the source has): the parked writes go on, up
        to the next long record that takes the destination again."""
        if self.owner is not source:
            return []
        self.owner = None
        out: list[bytes] = []
        parked, self.parked = self.parked, []
        for src, data, kind in parked:  # in order; a new long record parks the rest again
            out += self.put(src, data, kind)
        return out

    def parks(self, source: object) -> bool:
        return any(src is source for src, _, _ in self.parked)

    def clear(self) -> None:
        """The destination is gone: nothing waits for it any more."""
        self.parked.clear()
        self.owner = None


KEEP_HELD = 8 << 20  # the output a keep run out of turn may hold before it is not read on


class KeepOrder:
    """``keep``: one source cut into blocks of whole records of about ``size`` bytes, each run on
    its own; :meth:`done` gives the outputs back in input order. A block's output may end
    mid-record: it is then a :data:`TAIL`, and the next one's first record owes a terminator.

    The bound on memory is ``window``: at most that many blocks between being cut and their
    output given back (waiting to run, running, or finished and held behind an earlier one).
    While :attr:`full`, the caller stops reading its source, so a slow block costs parallelism,
    never memory: the producer is paused by its pipe (here) or its node's output bound (a tree),
    as any reader that stops reading pauses it. :attr:`most` is the high-water mark."""

    def __init__(self, size: int, terminator: bytes | None, window: int) -> None:
        if window < 1:
            raise ValueError("keep needs a window of at least one block")
        self.size = size
        self.terminator = terminator
        self.window = window
        self.most = 0
        self.building: list[bytes] = []
        self.nbuilt = 0
        self.streaming = False  # a long record is being added: no cut before its end
        self.next_seq = 0
        self.next_out = 0
        self.results: dict[int, list[bytes]] = {}

    def add(self, writes: list[Write]) -> tuple[int, bytes] | None:
        """A router's writes (``one``, to the one block being built): the block to run, once it
        is big enough and no long record is in the middle of it."""
        for _, data, kind in writes:
            if data:
                self.building.append(bytes(data))
                self.nbuilt += len(data)
            self.streaming = kind == MORE
        if self.nbuilt >= self.size and not self.streaming:
            return self.cut()
        return None

    def cut(self) -> tuple[int, bytes] | None:
        """The block built so far (sequence number, bytes), if any."""
        if not self.building:
            return None
        block = (self.next_seq, b"".join(self.building))
        self.next_seq += 1
        self.most = max(self.most, self.outstanding)
        self.building, self.nbuilt = [], 0
        return block

    def in_turn(self, seq: int, out: list[bytes]) -> list[bytes]:
        """A run's output so far, taken out of ``out`` if its turn has come: all but the last
        piece, which :meth:`done` needs to tell whether the output ends mid-record. Out of turn,
        nothing: the engine holds it, up to :data:`KEEP_HELD` bytes."""
        if seq != self.next_out or len(out) < 2:
            return []
        pieces = out[:-1]
        del out[:-1]
        return pieces

    def done(self, seq: int, out: list[bytes]) -> list[tuple[bytes, int]]:
        """Block ``seq``'s output is complete: what may now go on, in input order."""
        self.results[seq] = out
        term = self.terminator
        ready: list[tuple[bytes, int]] = []
        while self.next_out in self.results:
            pieces = [p for p in self.results.pop(self.next_out) if p]
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1 and term is not None and not piece.endswith(term)
                ready.append((piece, TAIL if last else WHOLE))
            self.next_out += 1
        return ready

    @property
    def waiting(self) -> int:
        """Outputs finished out of turn, held until the ones before them are."""
        return len(self.results)

    @property
    def outstanding(self) -> int:
        """Blocks cut whose output has not been given back yet: what :attr:`window` bounds."""
        return self.next_seq - self.next_out

    @property
    def full(self) -> bool:
        """Stop reading the source: no block may be cut until an earlier one is given back."""
        return self.outstanding >= self.window
