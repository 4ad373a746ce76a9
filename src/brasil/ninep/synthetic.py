"""Synthetic file trees: declarative directory tables and the file kinds the namespace is made of.

The server does the protocol bookkeeping (fids, modes, offsets, directory packing) once, so a file
here is tiny: an :class:`Inode` answers stat and open, the :class:`Handle` its open returns answers
read and write for that one open. Everything refuses by default; a kind overrides one or two
methods. A method returns its answer directly, or an awaitable when the answer must wait (a stream
read with no data yet) — the server runs only those as tasks, so the common case stays fast.

Kinds: :class:`StaticFile` (fixed text), :class:`GeneratedFile` (text made on open, snapshotted
per open so offsets are consistent), :class:`StreamFile` (blocking reads over a bounded
:class:`~brasil.ninep.stream.Stream`, end of file, back-pressure on writers), :class:`TableDir`
(children from a table of :class:`Entry`) and :class:`DynamicDir` (children added and removed at
run time, like sessions); ctl files are in ``ctl.py``. Qid paths come from one counter: unique for
the server's life, stable for each object.
"""

from __future__ import annotations

import errno
import getpass
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ClassVar, NamedTuple

from .constants import DMDIR, QTDIR
from .errors import Eexist, Enocreate, Enoremove, Enotfound, Enowstat, Eperm, NinepError
from .maybe import Maybe, is_awaitable
from .stream import Stream
from .wire import Qid, Stat

OWNER = getpass.getuser()
_paths = itertools.count(1)


def new_qid_path() -> int:
    return next(_paths)


class Inode:
    """A file or directory served here; refuses everything it does not override. Name and mode
    are set by its directory. (Named apart from ``node.daemon.Node``, a machine, and from
    ``ninep.client.File``, an open file on another server.)"""

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

    def __init__(self, node: Inode) -> None:
        self.node = node

    def read(self, offset: int, count: int) -> Maybe[bytes]:
        raise NinepError(*Eperm)

    def write(self, offset: int, data: bytes) -> Maybe[int]:
        raise NinepError(*Eperm)

    def clunk(self) -> Maybe[None]:
        return None


class BytesHandle(Handle):
    """Reads from a fixed byte string at any offset."""

    def __init__(self, node: Inode, data: bytes) -> None:
        super().__init__(node)
        self.data = data

    def read(self, offset: int, count: int) -> bytes:
        return self.data[offset:offset + count]


def _b(x: str | bytes) -> bytes:
    return x.encode() if isinstance(x, str) else x


class StaticFile(Inode):
    def __init__(self, content: str | bytes = b"", name: str = "", mode: int = 0o444) -> None:
        super().__init__(name, mode)
        self.content = _b(content)

    def length(self) -> int:
        return len(self.content)

    def open(self, mode: int) -> Handle:
        return BytesHandle(self, self.content)


class GeneratedFile(Inode):
    """Text produced when opened; each open sees its own consistent snapshot. ``generate`` may
    return an awaitable when the text must be gathered (from other nodes, say)."""

    def __init__(self, generate: Callable[[], Any] | None = None, name: str = "",
                 mode: int = 0o444) -> None:
        super().__init__(name, mode)
        self._generate = generate

    def generate(self) -> Any:
        """The text (str or bytes), or an awaitable of it; subclasses override this."""
        return b"" if self._generate is None else self._generate()

    def length(self) -> int:
        text = self.generate()
        if is_awaitable(text):
            if isinstance(text, Coroutine):
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


class LiveFile(Inode):
    """Text produced afresh whenever a read starts at offset 0, later offsets reading on in that
    text: one open file serves a reader that polls it (a heartbeat) with one round trip per
    poll, instead of a walk, an open, two reads and a clunk. ``generate`` must answer now.

    With ``opener`` instead, each open reads from a generator of its own, made when it opens:
    one that remembers what that reader was last told (the tree's heartbeat: what changed)."""

    def __init__(self, generate: Callable[[], str | bytes] | None = None, name: str = "",
                 mode: int = 0o444, *,
                 opener: Callable[[], Callable[[], str | bytes]] | None = None) -> None:
        if (generate is None) == (opener is None):
            raise ValueError("a live file takes generate or opener, one of them")
        super().__init__(name, mode)
        self.generate = generate
        self.opener = opener

    def open(self, mode: int) -> Handle:
        generate = self.opener() if self.opener is not None else self.generate
        assert generate is not None
        return LiveHandle(self, generate)


class LiveHandle(Handle):
    def __init__(self, node: LiveFile, generate: Callable[[], str | bytes]) -> None:
        super().__init__(node)
        self.generate = generate
        self.data = b""

    def read(self, offset: int, count: int) -> bytes:
        if offset == 0:
            self.data = _b(self.generate())
        return self.data[offset:offset + count]


class StreamFile(Inode):
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

class Dir(Inode):
    is_dir = True

    def __init__(self, name: str = "", mode: int = 0o555) -> None:
        super().__init__(name, mode)

    def children(self) -> Maybe[Iterable[Inode]]:
        return ()

    def walk(self, name: str) -> Maybe[Inode]:
        kids = self.children()
        if is_awaitable(kids):
            return self._walk_later(kids, name)
        return _named(kids, name)

    async def _walk_later(self, kids: Awaitable[Iterable[Inode]], name: str) -> Inode:
        return _named(await kids, name)

    def create(self, name: str, perm: int, mode: int) -> Maybe[Inode]:
        raise NinepError(*Enocreate)

    def unlink(self, child: Inode) -> Maybe[None]:
        raise NinepError(*Enoremove)

    def rename(self, child: Inode, new_name: str) -> Maybe[None]:
        raise NinepError(*Enowstat)

    def adopt(self, child: Inode) -> Inode:
        child.parent = self
        return child


def _named(kids: Iterable[Inode], name: str) -> Inode:
    for c in kids:
        if c.name == name:
            return c
    raise NinepError(*Enotfound)


class Entry(NamedTuple):
    """One row of a directory table: name, permission bits, and how to make the file from its owner."""

    name: str
    mode: int
    make: Callable[[Any], Inode]


class TableDir(Dir):
    """A directory whose children are fixed by a table, made once from ``owner``."""

    def __init__(self, table: Iterable[Entry], owner: Any = None, name: str = "",
                 mode: int = 0o555) -> None:
        super().__init__(name, mode)
        self._children: dict[str, Inode] = {}
        for e in table:
            node = e.make(owner)
            node.name, node.mode = e.name, e.mode
            self._children[e.name] = self.adopt(node)

    def children(self) -> Iterable[Inode]:
        return self._children.values()

    def walk(self, name: str) -> Inode:
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

    def add(self, name: str, node: Inode) -> Inode:
        if name in self._children:
            raise NinepError(*Eexist)
        node.name = name
        self._children[name] = self.adopt(node)
        self.mtime = int(time.time())
        return node

    def discard(self, name: str) -> Inode | None:
        if name in self._fixed:
            return None
        node = self._children.pop(name, None)
        if node is not None:
            node.parent = None
            self.mtime = int(time.time())
        return node


class RequestHandle(Handle):
    """Write a request, read its answer on the same open (gread's shape); reading first asks
    ``default`` (stacks with no request, say)."""

    def __init__(self, node: Inode, answer: Callable[[bytes], Awaitable[bytes]],
                 default: bytes | None, limit: int) -> None:
        super().__init__(node)
        self.answer, self.default, self.limit = answer, default, limit
        self.request = b""
        self.result: bytes | None = None

    def write(self, offset: int, data: bytes) -> Maybe[int]:
        if self.result is not None:
            self.result, self.request = None, b""  # a new request on the same open
        if len(self.request) + len(data) > self.limit:
            raise NinepError(f"a request over {self.limit} bytes", errno.EFBIG)
        self.request += data
        return len(data)

    def read(self, offset: int, count: int) -> Maybe[bytes]:
        if self.result is not None:
            return self.result[offset:offset + count]
        req = self.request or self.default
        if req is None:
            raise NinepError("write a request first, then read its answer", errno.EINVAL)
        return self._read(req, offset, count)

    async def _read(self, req: bytes, offset: int, count: int) -> bytes:
        self.result = await self.answer(req)
        return self.result[offset:offset + count]


class RequestFile(Inode):
    """A file asked a question: a write is the request (at most ``limit`` bytes), a read the
    answer ``answer`` gives it, on the same open (group reads' shape; a session's pgroup, a
    node's metrics history)."""

    def __init__(self, answer: Callable[[bytes], Awaitable[bytes]],
                 default: bytes | None = None, limit: int = 64 << 10) -> None:
        super().__init__()
        self.answer, self.default, self.limit = answer, default, limit

    def open(self, mode: int) -> Handle:
        return RequestHandle(self, self.answer, self.default, self.limit)
