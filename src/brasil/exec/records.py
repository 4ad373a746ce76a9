"""Records: where one ends and the next begins (SPEC.md §3.1 ``rs``, §5 ``IRS``/``ORS``).

One implementation serves the daemon (output aggregation, ``mux``, splices) and the PUSH shell.
The hot path never makes an object per record: a :class:`Reassembler` is fed chunks as they
arrive and hands back *blocks* of whole records (everything up to the last record end in what it
has seen), so the caller moves one block per chunk. Only where a record must be looked at (a
hash key, round-robin by record) is a block cut into records with :meth:`Splitter.split`.

Bounds, so that no input can make a reader quadratic or unbounded:

- A record is held whole only up to :data:`WINDOW` bytes. A longer record is *streamed*: its
  bytes are passed on as they arrive (``more``), and the caller keeps the destination for that
  record until it ends (``end``), so records are still never split or interleaved, and memory
  stays at one window per stream. Reassembly is linear: nothing is re-joined or re-scanned per
  chunk, only the new bytes (plus :attr:`Splitter.overlap` bytes before them) are searched.
- A regular expression is compiled with RE2, whose matching time is linear in the input: a
  pattern such as ``(a+)+c`` cannot stall the daemon. A separator match found across chunks of a
  streamed record may begin at most :data:`OVERLAP` bytes before the new chunk.
- ``fixed N`` takes 1 ≤ N ≤ :data:`WINDOW`.

A user record module (PUSH: ``IRS=my.module:Class``) subclasses :class:`Splitter` and implements
:meth:`Splitter.ends`; everything else has a working default.
"""

from __future__ import annotations

import importlib
import shlex
import zlib
from collections.abc import Iterable
from typing import NamedTuple

import re2

_BLANKS = re2.compile(rb"[ \t\r\v\f]")  # blanks other than the separators themselves

WINDOW = 1 << 20  # the most bytes of one record held at once; longer records stream through
OVERLAP = 4096  # how far before a new chunk a regex separator may begin (streamed records)

_RE2 = re2.Options()
_RE2.log_errors = False  # a client's bad pattern is its error, not a line in the daemon's log


def compile_regex(pattern: str, what: str = "regular expression") -> re2._Regexp:
    """A linear-time regex; ValueError with the reason if ``pattern`` is not one."""
    try:
        return re2.compile(pattern.encode(), _RE2)
    except re2.error as e:
        reason = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) \
            else str(e)
        raise ValueError(f"bad {what} {quote(pattern)}: {reason} (RE2 syntax)") from None


def quote(text: str, limit: int = 80) -> str:
    """``text`` as a message quotes it: shell-quoted, and cut at ``limit`` characters."""
    return shlex.quote(text if len(text) <= limit else text[:limit] + "…")


class Splitter:
    """Where records end. Subclasses implement :meth:`ends`; the rest derives from it.

    ``overlap`` is how many bytes before new data a separator may begin (a separator of k bytes
    may start k-1 bytes back); ``name`` is how ``rs`` and ``push --explain`` show it.
    """

    name = "custom"
    overlap = 0
    # What closes a last record that had no separator when a merge puts another record after
    # it (two producers' unterminated tails would otherwise become one record). None: the
    # module has no separator to add (fixed, regex), and the record is left as it came.
    terminator: bytes | None = None

    def ends(self, buf: bytes, start: int, held: int) -> Iterable[int]:
        """Offsets just past each record end in ``buf`` whose separator ends after ``start``
        (``buf[:start]`` was searched before), in increasing order. ``held`` is how many bytes of
        the current record came before ``buf`` (only fixed-size records need it). A separator
        that reaches the very end of ``buf`` and could still grow with more input is left out."""
        raise NotImplementedError

    def last_end(self, buf: bytes, start: int, held: int) -> int:
        last = -1
        for e in self.ends(buf, start, held):
            last = e
        return last

    def first_end(self, buf: bytes, start: int, held: int) -> int:
        for e in self.ends(buf, start, held):
            return e
        return -1

    def split(self, block: bytes) -> list[bytes]:
        """The records of a block of whole records (the last may lack its separator)."""
        out, at = [], 0
        for e in self.ends(block, 0, 0):
            out.append(block[at:e])
            at = e
        if at < len(block):
            out.append(block[at:])
        return out

    def __str__(self) -> str:
        return self.name


class Delimited(Splitter):
    """Records end with a fixed byte string (newline, NUL)."""

    def __init__(self, sep: bytes, name: str) -> None:
        if not sep:
            raise ValueError("a separator cannot be empty")
        self.sep = sep
        self.name = name
        self.overlap = len(sep) - 1
        self.terminator = sep

    def ends(self, buf: bytes, start: int, held: int) -> Iterable[int]:
        sep, k = self.sep, len(self.sep)
        i = buf.find(sep, max(0, start - self.overlap))
        while i >= 0:
            yield i + k
            i = buf.find(sep, i + k)

    def last_end(self, buf: bytes, start: int, held: int) -> int:
        if self.overlap:  # separators may overlap: only a scan from the left cuts them right
            return Splitter.last_end(self, buf, start, held)
        i = buf.rfind(self.sep, start)
        return i + 1 if i >= 0 else -1

    def first_end(self, buf: bytes, start: int, held: int) -> int:
        i = buf.find(self.sep, max(0, start - self.overlap))
        return i + len(self.sep) if i >= 0 else -1

    def split(self, block: bytes) -> list[bytes]:
        parts = block.split(self.sep)
        last = parts.pop()
        out = [p + self.sep for p in parts]
        if last:
            out.append(last)
        return out


class Fixed(Splitter):
    def __init__(self, size: int) -> None:
        if not 1 <= size <= WINDOW:
            raise ValueError(f"fixed record size must be between 1 and {WINDOW}, got {size}")
        self.size = size
        self.name = f"fixed {size}"

    def ends(self, buf: bytes, start: int, held: int) -> Iterable[int]:
        return range(self.size - held, len(buf) + 1, self.size)

    def last_end(self, buf: bytes, start: int, held: int) -> int:
        total = held + len(buf)
        return len(buf) - total % self.size if total >= self.size else -1

    def split(self, block: bytes) -> list[bytes]:
        n = self.size
        return [block[i:i + n] for i in range(0, len(block), n)]


class Regex(Splitter):
    """Records end where the pattern matches (the match belongs to the record it ends)."""

    overlap = OVERLAP

    def __init__(self, pattern: str, name: str | None = None) -> None:
        self.rx = compile_regex(pattern)
        if self.rx.match(b""):
            raise ValueError(f"regular expression {quote(pattern)} matches the empty string, "
                             "so it cannot end a record")
        self.name = name or f"regex {shlex.quote(pattern)}"

    def ends(self, buf: bytes, start: int, held: int) -> Iterable[int]:
        n = len(buf)
        for m in self.rx.finditer(buf, max(0, start - self.overlap)):
            e = m.end()
            if e < start:  # found before; one ending exactly at start was deferred then
                continue
            if e == n:  # may still grow with more input
                return
            yield e


class Blank(Regex):
    """Paragraphs: records end after one or more blank lines."""

    def __init__(self) -> None:
        super().__init__(r"\n(?:[ \t]*\n)+", "blank")
        self.terminator = b"\n\n"


NEWLINE = Delimited(b"\n", "newline")
NUL = Delimited(b"\0", "nul")
USAGE = "newline | nul | blank | fixed N | regex RE | MODULE:CLASS"


def parse_rs(args: list[str], user_modules: bool = False) -> Splitter:
    """``newline`` | ``nul`` | ``fixed N`` | ``regex RE`` | ``blank`` (and, for the shell, a
    user module ``package.module:Class``, which the daemon never imports)."""
    usage = USAGE if user_modules else USAGE.rsplit(" | ", 1)[0]
    if not args:
        raise ValueError(f"usage: {usage}")
    kind, rest = args[0], args[1:]
    if kind == "newline" and not rest:
        return NEWLINE
    if kind == "nul" and not rest:
        return NUL
    if kind == "blank" and not rest:
        return Blank()
    if kind == "fixed" and len(rest) == 1:
        try:
            return Fixed(int(rest[0]))
        except ValueError as e:
            why = str(e) if rest[0].isdigit() else f"{quote(rest[0])} is not a number"
            raise ValueError(f"fixed: {why}; usage: {usage}") from None
    if kind == "regex" and len(rest) == 1:
        return Regex(rest[0])
    if user_modules and ":" in kind and not rest:
        return load_module(kind)
    raise ValueError(f"unknown record separator {quote(' '.join(args))}; usage: {usage}")


def load_module(spec: str) -> Splitter:
    """A user record module, ``package.module:Class`` (a Splitter subclass made with no
    arguments)."""
    mod_name, _, cls_name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"record module {spec}: {e}") from None
    splitter = cls()
    if not isinstance(splitter, Splitter):
        raise ValueError(f"record module {spec}: {cls_name} is not a brasil.exec.records.Splitter")
    return splitter


class Fed(NamedTuple):
    """What one chunk gave, in order: ``end`` finishes a streamed record; ``head`` then ``whole``
    are complete records (``head``: the start of the first, held from earlier chunks; ``whole``:
    the rest, a slice of the chunk — a zero-copy view when the chunk was a memoryview); ``more``
    starts or continues a record too long to hold (the caller keeps that record's destination
    until its ``end``)."""

    end: bytes
    head: bytes
    whole: bytes | memoryview
    more: bytes

    @property
    def block(self) -> bytes:
        """``head`` and ``whole`` as one block of whole records."""
        return self.head + self.whole if self.head else bytes(self.whole)


class Reassembler:
    """One stream's state: feed chunks, get blocks of whole records, in linear time."""

    def __init__(self, splitter: Splitter, window: int = WINDOW, views: bool = False) -> None:
        """``views``: hand out ``whole`` as a zero-copy memoryview of the chunk fed (for
        callers that only pass the bytes on, as PUSH's local engine does)."""
        self.splitter = splitter
        self.window = window
        self.views = views
        self.held: list[bytes] = []  # the current, unfinished record
        self.nheld = 0
        self.streaming = False  # the current record outgrew the window and is passing through
        self.passed = 0  # bytes of a streamed record already passed on
        self.tail = b""  # the last `overlap` bytes of the current record

    def _keep_tail(self, data: bytes) -> None:
        k = self.splitter.overlap
        if k:
            self.tail = (self.tail + data)[-k:] if len(data) < k else bytes(data[-k:])

    def feed(self, data: bytes) -> Fed:
        sp = self.splitter
        end = b""
        if self.streaming:
            buf, start = (self.tail + data, len(self.tail)) if self.tail else (data, 0)
            e = sp.first_end(buf, start, self.passed - start)
            if e < 0:
                self.passed += len(data)
                self._keep_tail(data)
                return Fed(b"", b"", b"", data)
            end, data = data[:e - start], data[e - start:]
            self.streaming, self.passed, self.tail = False, 0, b""
            if not data:
                return Fed(end, b"", b"", b"")
        buf, start = (self.tail + data, len(self.tail)) if self.tail else (data, 0)
        e = sp.last_end(buf, start, self.nheld - start)
        if e < 0:
            self.held.append(data)
            self.nheld += len(data)
            self._keep_tail(data)
            if self.nheld <= self.window:
                return Fed(end, b"", b"", b"")
            return Fed(end, b"", b"", self._start_streaming())
        cut = e - start
        head = b"".join(self.held) if self.held else b""
        whole = memoryview(data)[:cut] if self.views else data[:cut]
        rest = data[cut:]
        self.held, self.nheld, self.tail = ([rest], len(rest), b"") if rest else ([], 0, b"")
        self._keep_tail(rest)
        more = self._start_streaming() if self.nheld > self.window else b""
        return Fed(end, head, whole, more)

    def _start_streaming(self) -> bytes:
        more = b"".join(self.held)
        self.held, self.nheld = [], 0
        self.streaming, self.passed = True, len(more)
        return more

    def finish(self) -> bytes:
        """At end of input: the last record if it had no separator (b"" if none, or if it was
        being streamed: its bytes are already passed on)."""
        rest = b"".join(self.held) if self.held else b""
        self.held, self.nheld, self.tail = [], 0, b""
        self.streaming, self.passed = False, 0
        return rest


class Key:
    """What ``mux hash`` and PUSH's ``|#|`` hash a record by: a field or a regex match.

    A field is a 1-based number of whitespace-separated fields (``KEY=2``); a regex's key is its
    first group if it has one, else the whole match (``KEY='user=(\\w+)'``). A record without the
    field or match has the empty key. Only the first :data:`WINDOW` bytes of a record are looked
    at. The hash is CRC-32, the same in every process and on every node."""

    def __init__(self, spec: str = "1") -> None:
        self.spec = spec
        self.field = int(spec) if spec.isdigit() else 0
        self.rx = None
        if spec.isdigit():
            if self.field < 1:
                raise ValueError(f"key field must be 1 or more, got {spec}")
        else:
            self.rx = compile_regex(spec, "key pattern")

    def of(self, record: bytes) -> bytes:
        record = record[:WINDOW]
        if self.rx is None:
            fields = record.split(None, self.field)
            return fields[self.field - 1] if len(fields) >= self.field else b""
        m = self.rx.search(record)
        if m is None:
            return b""
        return m.group(1) if m.groups() else m.group(0)

    def index(self, record: bytes, n: int) -> int:
        return zlib.crc32(self.of(record)) % n

    def partition(self, block: bytes, n: int, splitter: Splitter) -> list[bytes]:
        """A block of whole records cut into ``n`` blocks by key (``out[i]`` holds the records
        whose key hashes to i, in their order). The common case, newline or NUL records keyed by
        their first field with no other blanks in the block, hashes each record whole with no
        Python work per record beyond one CRC; the rest goes record by record."""
        per: list[list[bytes]] = [[] for _ in range(n)]
        if self.field == 1 and isinstance(splitter, Delimited) and len(splitter.sep) == 1:
            sep = splitter.sep
            lines = block.split(sep)
            last = lines.pop()  # b"" after a final separator, else a record without one
            crc = zlib.crc32
            if not _BLANKS.search(block):  # each record is its own key: one CRC each
                for line, h in zip(lines, map(crc, lines)):
                    per[h % n].append(line)
            else:  # the first field: one split each (the loop stays in as few steps as can be)
                add = [p.append for p in per]
                split = bytes.split
                for line in lines:
                    try:
                        add[crc(split(line, None, 1)[0]) % n](line)
                    except IndexError:  # a blank record: the empty key
                        add[crc(b"") % n](line)
            out = [sep.join(p) + sep if p else b"" for p in per]
            if last:
                out[self.index(last, n)] += last
            return out
        for r in splitter.split(block):
            per[self.index(r, n)].append(r)
        return [b"".join(p) for p in per]

    def __str__(self) -> str:
        return self.spec
