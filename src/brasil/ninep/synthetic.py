"""Synthetic file trees: declarative directory tables and the file kinds the namespace is made of.

The server does the protocol bookkeeping (fids, modes, offsets, directory packing) once, so a file
here is tiny: a :class:`Node` answers stat and open, the :class:`Handle` its open returns answers
read and write for that one open. Everything refuses by default; a kind overrides one or two
methods. A method returns its answer directly, or an awaitable when the answer must wait (a stream
read with no data yet) — the server runs only those as tasks, so the common case stays fast.

Kinds: :class:`StaticFile` (fixed text), :class:`GeneratedFile` (text made on open, snapshotted
per open so offsets are consistent), :class:`CtlFile` (writes are commands dispatched through a
:class:`CommandTable`; reads give one line of state), :class:`StreamFile` (blocking reads over a
bounded :class:`Stream`, end of file, back-pressure on writers), :class:`TableDir` (children from a
table of :class:`Entry`) and :class:`DynamicDir` (children added and removed at run time, like
sessions). Qid paths come from one counter: unique for the server's life, stable for each object.
"""

from __future__ import annotations

import asyncio
import getpass
import itertools
import shlex
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, ClassVar, Iterable, NamedTuple, TypeVar, Union

from .constants import DMDIR, QTDIR
from .errors import (Eexist, Enocreate, Enoremove, Enotfound, Enowstat, Eperm, Ehungup,
                     NinepError)
from .wire import Qid, Stat

T = TypeVar("T")
Maybe = Union[T, Awaitable[T]]  # a value now, or an awaitable when the answer has to wait

OWNER = getpass.getuser()
_paths = itertools.count(1)


def new_qid_path() -> int:
    return next(_paths)


def is_awaitable(x: object) -> bool:
    """Cheaper than inspect.isawaitable on the hot path: bytes and ints have no __await__."""
    return hasattr(type(x), "__await__")


class Node:
    """A file; refuses everything it does not override. Name and mode are set by its directory."""

    is_dir: ClassVar[bool] = False

    def __init__(self, name: str = "", mode: int = 0o444) -> None:
        self.name = name
        self.mode = mode
        self.parent: Dir | None = None
        self.qid = Qid(QTDIR if self.is_dir else 0, 0, new_qid_path())
        self.mtime = self.atime = int(time.time())

    def length(self) -> int:
        return 0

    def stat_mode(self) -> int:
        return self.mode | (DMDIR if self.is_dir else 0)

    def stat(self) -> Maybe[Stat]:
        return Stat(qid=self.qid, mode=self.stat_mode(), atime=self.atime, mtime=self.mtime,
                    length=self.length(), name=self.name or "/", uid=OWNER, gid=OWNER, muid=OWNER)

    def open(self, mode: int) -> Maybe[Handle]:
        return Handle(self)

    def wstat(self, st: Stat) -> Maybe[None]:
        """Accept what changes nothing (a 'sync'), times, truncation to 0, and a rename the parent
        allows; refuse the rest, before changing anything."""
        if st.mode != 0xFFFFFFFF and st.mode != self.stat_mode():
            raise NinepError(*Enowstat)
        if st.length not in (0xFFFFFFFFFFFFFFFF, 0, self.length()):
            raise NinepError(*Enowstat)
        if st.name and st.name != self.name:
            if self.parent is None:
                raise NinepError(*Enowstat)
            return self.parent.rename(self, st.name)
        return None

    def remove(self) -> Maybe[None]:
        if self.parent is None:
            raise NinepError(*Enoremove)
        return self.parent.unlink(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} qid.path={self.qid.path}>"


class Handle:
    """One open of a node; per-open state (a snapshot, a position) lives here."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def read(self, offset: int, count: int) -> Maybe[bytes]:
        raise NinepError(*Eperm)

    def write(self, offset: int, data: bytes) -> Maybe[int]:
        raise NinepError(*Eperm)

    def clunk(self) -> Maybe[None]:
        return None


class BytesHandle(Handle):
    """Reads from a fixed byte string at any offset."""

    def __init__(self, node: Node, data: bytes) -> None:
        super().__init__(node)
        self.data = data

    def read(self, offset: int, count: int) -> bytes:
        return self.data[offset:offset + count]


def _b(x: str | bytes) -> bytes:
    return x.encode() if isinstance(x, str) else x


class StaticFile(Node):
    def __init__(self, content: str | bytes = b"", name: str = "", mode: int = 0o444) -> None:
        super().__init__(name, mode)
        self.content = _b(content)

    def length(self) -> int:
        return len(self.content)

    def open(self, mode: int) -> Handle:
        return BytesHandle(self, self.content)


class GeneratedFile(Node):
    """Text produced when opened; each open sees its own consistent snapshot. ``generate`` may
    return an awaitable when the text must be gathered (from other nodes, say)."""

    def __init__(self, generate: Callable[[], Any] | None = None, name: str = "",
                 mode: int = 0o444) -> None:
        super().__init__(name, mode)
        if generate is not None:
            self.generate = generate  # type: ignore[method-assign]

    def generate(self) -> Any:
        return b""

    def length(self) -> int:
        text = self.generate()
        if is_awaitable(text):
            text.close()  # gathered text: not worth the wait just for a size
            return 0
        return len(_b(text))

    def open(self, mode: int) -> Maybe[Handle]:
        text = self.generate()
        if is_awaitable(text):
            return self._open_later(text)
        return BytesHandle(self, _b(text))

    async def _open_later(self, pending: Any) -> Handle:
        return BytesHandle(self, _b(await pending))


# ---- ctl files ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    min_args: int
    max_args: int | None
    raw: bool  # one argument: the rest of the line, as typed (for exec)
    run: Callable[..., Any]


class CommandTable:
    """Commands of a ctl file, by verb. Errors quote the bad command and say what is expected."""

    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}

    def command(self, usage: str, *, args: tuple[int, int | None] | None = None,
                raw: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``fn(owner, args)``; ``usage`` is e.g. ``"res N [os [arch]]"``."""
        words = usage.split()
        name = words[0]
        if args is None:
            required = sum(1 for w in words[1:] if not w.startswith("["))
            optional = sum(1 for w in words[1:] if w.startswith("["))
            args = (required, None if "…" in usage or "..." in usage else required + optional)

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.commands[name] = Command(name, usage, args[0], args[1], raw, fn)
            return fn
        return register

    def expected(self) -> str:
        return "; ".join(c.usage for c in self.commands.values())

    def parse(self, line: str) -> tuple[Command, list[str]]:
        verb, _, rest = line.strip().partition(" ")
        cmd = self.commands.get(verb)
        if cmd is None:
            raise NinepError(f'unknown command "{line.strip()}"; expected one of: {self.expected()}')
        if cmd.raw:
            args = [rest.strip()] if rest.strip() else []
        else:
            try:
                args = shlex.split(rest)
            except ValueError as e:
                raise NinepError(f'bad quoting in command "{line.strip()}": {e}') from None
        if len(args) < cmd.min_args or (cmd.max_args is not None and len(args) > cmd.max_args):
            raise NinepError(f'bad # args to command "{line.strip()}"; usage: {cmd.usage}')
        return cmd, args


class CtlFile(Node):
    """Writes are commands (one per line); reads give one line of state (:meth:`state`)."""

    commands: ClassVar[CommandTable] = CommandTable()

    def __init__(self, name: str = "", mode: int = 0o600) -> None:
        super().__init__(name, mode)

    def state(self) -> str:
        return ""

    def open(self, mode: int) -> Handle:
        return CtlHandle(self)

    def execute(self, line: str) -> Maybe[None]:
        cmd, args = self.commands.parse(line)
        return cmd.run(self, args)  # type: ignore[no-any-return]


class CtlHandle(Handle):
    node: CtlFile

    def __init__(self, node: CtlFile) -> None:
        super().__init__(node)
        self._snapshot: bytes | None = None

    def read(self, offset: int, count: int) -> bytes:
        if offset == 0 or self._snapshot is None:
            state = self.node.state()
            self._snapshot = _b(state + ("\n" if state and not state.endswith("\n") else ""))
        return self._snapshot[offset:offset + count]

    def write(self, offset: int, data: bytes) -> Maybe[int]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NinepError("ctl commands must be UTF-8 text") from None
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            return len(data)
        return self._run(lines, 0, len(data))

    def _run(self, lines: list[str], i: int, n: int) -> Maybe[int]:
        while i < len(lines):
            r = self.node.execute(lines[i])
            i += 1
            if is_awaitable(r):
                return self._finish(r, lines, i, n)
        return n

    async def _finish(self, pending: Any, lines: list[str], i: int, n: int) -> int:
        await pending
        r = self._run(lines, i, n)
        return await r if is_awaitable(r) else r  # type: ignore[misc]


# ---- streams ----------------------------------------------------------------------------------------

class Stream:
    """A bounded byte pipe: readers wait for data, writers wait for room, end of file once closed.

    Writes are never dropped or split: a write is accepted whole once the buffer is below its
    limit, so the buffer holds at most ``limit`` plus one write.
    """

    def __init__(self, limit: int = 256 * 1024) -> None:
        self.limit = limit
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.eof = False  # no more data will be written
        self.broken = False  # the reading side is gone: writes fail
        self._readers: list[asyncio.Future[None]] = []
        self._writers: list[asyncio.Future[None]] = []
        self._drained: list[Callable[[], None]] = []

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
        return self._size < self.limit

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


class StreamFile(Node):
    """Reads drain ``source``; writes feed ``sink``; offsets are ignored, as for a pipe.

    With ``eof_on_close``, the sink reaches end of file when the last handle opened for writing is
    clunked — that is how `echo data > stdin` gives a process its end of input.
    """

    def __init__(self, source: Stream | None = None, sink: Stream | None = None, name: str = "",
                 mode: int = 0o600, eof_on_close: bool = True) -> None:
        super().__init__(name, mode)
        self.source = source
        self.sink = sink
        self.eof_on_close = eof_on_close
        self.writers = 0

    def open(self, mode: int) -> Handle:
        writing = (mode & 3) in (1, 2)
        if writing:
            self.writers += 1
        return StreamHandle(self, writing)


class StreamHandle(Handle):
    node: StreamFile

    def __init__(self, node: StreamFile, writing: bool) -> None:
        super().__init__(node)
        self.writing = writing

    def read(self, offset: int, count: int) -> Maybe[bytes]:
        if self.node.source is None:
            raise NinepError(*Eperm)
        return self.node.source.read(count)

    def write(self, offset: int, data: bytes) -> Maybe[int]:
        if self.node.sink is None:
            raise NinepError(*Eperm)
        return self.node.sink.write(data)

    def clunk(self) -> None:
        if self.writing:
            self.writing = False
            self.node.writers -= 1
            if self.node.writers == 0 and self.node.eof_on_close and self.node.sink is not None:
                self.node.sink.close()


# ---- directories ---------------------------------------------------------------------------------

class Dir(Node):
    is_dir = True

    def __init__(self, name: str = "", mode: int = 0o555) -> None:
        super().__init__(name, mode)

    def children(self) -> Maybe[Iterable[Node]]:
        return ()

    def walk(self, name: str) -> Maybe[Node]:
        for c in self.children():  # type: ignore[union-attr]
            if c.name == name:
                return c
        raise NinepError(*Enotfound)

    def create(self, name: str, perm: int, mode: int) -> Maybe[Node]:
        raise NinepError(*Enocreate)

    def unlink(self, child: Node) -> Maybe[None]:
        raise NinepError(*Enoremove)

    def rename(self, child: Node, new_name: str) -> Maybe[None]:
        raise NinepError(*Enowstat)

    def adopt(self, child: Node) -> Node:
        child.parent = self
        return child


class Entry(NamedTuple):
    """One row of a directory table: name, permission bits, and how to make the file from its owner."""

    name: str
    mode: int
    make: Callable[[Any], Node]


class TableDir(Dir):
    """A directory whose children are fixed by a table, made once from ``owner``."""

    def __init__(self, table: Iterable[Entry], owner: Any = None, name: str = "",
                 mode: int = 0o555) -> None:
        super().__init__(name, mode)
        self._children: dict[str, Node] = {}
        for e in table:
            node = e.make(owner)
            node.name, node.mode = e.name, e.mode
            self._children[e.name] = self.adopt(node)

    def children(self) -> Iterable[Node]:
        return self._children.values()

    def walk(self, name: str) -> Node:
        try:
            return self._children[name]
        except KeyError:
            raise NinepError(*Enotfound) from None


class DynamicDir(TableDir):
    """A table directory whose further children come and go at run time (sessions, children)."""

    def __init__(self, table: Iterable[Entry] = (), owner: Any = None, name: str = "",
                 mode: int = 0o555) -> None:
        super().__init__(table, owner, name, mode)
        self._fixed = set(self._children)

    def add(self, name: str, node: Node) -> Node:
        if name in self._children:
            raise NinepError(*Eexist)
        node.name = name
        self._children[name] = self.adopt(node)
        self.mtime = int(time.time())
        return node

    def discard(self, name: str) -> Node | None:
        if name in self._fixed:
            return None
        node = self._children.pop(name, None)
        if node is not None:
            node.parent = None
            self.mtime = int(time.time())
        return node
