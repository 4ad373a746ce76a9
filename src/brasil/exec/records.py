"""Record separators (SPEC.md §3.1 ``rs``; PUSH's ORS/IRS modules build on the same classes).

A splitter is stateless: :meth:`Splitter.split` takes the bytes buffered so far and returns the
complete records in them and the incomplete rest, to be prefixed to the next chunk. At end of input
the rest, if any, is the last record. Records keep their separator so that joining them gives back
the input exactly.
"""

from __future__ import annotations

import re
import shlex


class Splitter:
    name = ""

    def split(self, buf: bytes) -> tuple[list[bytes], bytes]:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


class Delimited(Splitter):
    def __init__(self, sep: bytes, name: str) -> None:
        self.sep = sep
        self.name = name

    def split(self, buf: bytes) -> tuple[list[bytes], bytes]:
        end = buf.rfind(self.sep)
        if end < 0:
            return [], buf
        end += len(self.sep)
        parts = buf[:end].split(self.sep)
        parts.pop()  # the empty piece after the last separator
        return [p + self.sep for p in parts], buf[end:]


class Fixed(Splitter):
    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("fixed record size must be positive")
        self.size = size
        self.name = f"fixed {size}"

    def split(self, buf: bytes) -> tuple[list[bytes], bytes]:
        n = len(buf) - len(buf) % self.size
        return [buf[i:i + self.size] for i in range(0, n, self.size)], buf[n:]


class Regex(Splitter):
    """Records end where the pattern matches (the match belongs to the record it ends)."""

    def __init__(self, pattern: str) -> None:
        try:
            self.rx = re.compile(pattern.encode())
        except re.error as e:
            raise ValueError(f"bad regular expression {pattern!r}: {e}") from None
        if self.rx.match(b""):
            raise ValueError(f"regular expression {pattern!r} matches the empty string")
        self.name = f"regex {shlex.quote(pattern)}"

    def split(self, buf: bytes) -> tuple[list[bytes], bytes]:
        out, start = [], 0
        for m in self.rx.finditer(buf):
            if m.end() == len(buf):  # a match at the very end may still grow with more input
                break
            out.append(buf[start:m.end()])
            start = m.end()
        return out, buf[start:]


class Blank(Regex):
    """Paragraphs: records end after one or more blank lines."""

    def __init__(self) -> None:
        self.rx = re.compile(rb"\n(?:[ \t]*\n)+")
        self.name = "blank"


NEWLINE = Delimited(b"\n", "newline")
NUL = Delimited(b"\0", "nul")


def parse_rs(args: list[str]) -> Splitter:
    """``newline`` | ``nul`` | ``fixed N`` | ``regex RE`` | ``blank``."""
    usage = "rs newline | rs nul | rs fixed N | rs regex RE | rs blank"
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
        except ValueError:
            raise ValueError(f"fixed needs a positive size, got {rest[0]!r}; usage: {usage}") from None
    if kind == "regex" and len(rest) == 1:
        return Regex(rest[0])
    raise ValueError(f"unknown record separator {' '.join(args)!r}; usage: {usage}")


class Reassembler:
    """Feeds chunks, hands out whole records; the state for one stream."""

    def __init__(self, splitter: Splitter) -> None:
        self.splitter = splitter
        self.rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.rest + data if self.rest else data
        records, self.rest = self.splitter.split(buf)
        return records

    def finish(self) -> list[bytes]:
        rest, self.rest = self.rest, b""
        return [rest] if rest else []
