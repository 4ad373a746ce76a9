"""The query directory's views for the parallel tools: follow, pcp, merge, deep merge.

- ``follow``: write ``{"path": "fs/…"}``, then reading streams every matching node's file as it
  grows, each line prefixed ``NODE: ``; each node merges its own with its children's streams on
  line boundaries (``node.io.Aggregator``), so one stream comes up the tree (``ptail -f``). The
  file is opened as ``fs/`` opens it and read as the reader takes it (see :func:`tail`).
- ``pcp``: write ``{"path": "fs/…"}`` (one write), then the file's bytes: they are copied into
  that path on every matching node. Each node writes its own copy (to a temporary name, renamed
  into place when the writer closes) and passes every chunk on to its children as it arrives, so
  the bytes flow down the tree in a pipeline and the root sends each once per child (``pcp``).
  The copy is made in a directory held by a descriptor, reached without following a link
  (``Export.make_dirs``): the export may be writable by others, the daemon is often root.
- ``merge/``: TBON-FS's merge of the matching nodes' ``local/``: each name any of them has, as a
  directory of the nodes that have it, whose entries are those nodes' own files or directories.
  ``deepmerge/``: the same all the way down: a name that is a directory on some node is a merged
  directory itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import re
import secrets
import stat
from typing import TYPE_CHECKING, Any

from ..exec.records import NEWLINE
from ..ninep.constants import OWRITE
from ..ninep.errors import Enotfound, NinepError
from ..ninep.stream import Stream
from ..ninep.synthetic import Dir, Handle, Inode
from ..node.exportfs import Export
from ..node.io import Aggregator, Output
from ..tree.delegation import RemoteReader
from ..tree.proxy import Listed, Remote
from .fanout import check_path, settled
from .gread import partial

if TYPE_CHECKING:
    from .fanout import Query, QueryService

POLL = 0.2  # how often a followed file is looked at
PIECE = 256 << 10  # a followed file is read this much at a time, as the reader takes it
MAX_LAST_LINES = 100_000  # ptail -n N: at most this many lines from before the start
LAST_LINES_WINDOW = 1 << 20  # … found in at most the file's last MiB


def make_view(name: str, s: QueryService, q: Query) -> Inode:
    if name == "follow":
        return RequestFile("follow", lambda req: FollowStream(s, q, req), 0o600)
    if name == "pcp":
        return RequestFile("pcp", lambda req: PcpWriter(s, q, req), 0o200)
    return MergeDir(s, q, "", deep=name == "deepmerge", name=name)


class RequestFile(Inode):
    """A file whose first write is a JSON request (``{"path": …}``) and whose later reads or
    writes go to what the request made."""

    def __init__(self, name: str, make: Any, mode: int) -> None:
        super().__init__(name, mode)
        self.make = make

    def open(self, mode: int) -> Handle:
        return RequestHandle(self)


class RequestHandle(Handle):
    node: RequestFile

    def __init__(self, node: RequestFile) -> None:
        super().__init__(node)
        self.target: Any = None

    def write(self, offset: int, data: bytes) -> Any:
        if self.target is None:
            try:
                req = json.loads(data)
                req["path"] = "/".join(check_path(req["path"]))  # fs/./x is fs/x
            except (ValueError, KeyError, TypeError, AttributeError):
                raise NinepError(f'{self.node.name}: write a request first: {{"path": "fs/…"}}',
                                 errno.EINVAL) from None
            self.target = self.node.make(req)
            return len(data)
        return self.target.write(data)

    def read(self, offset: int, count: int) -> Any:
        if self.target is None:
            raise NinepError(f'{self.node.name}: write a request first: {{"path": "fs/…"}}',
                             errno.EINVAL)
        return self.target.read(count)

    def clunk(self) -> Any:
        return self.target.close() if self.target is not None else None


def export_rel(s: QueryService, path: str) -> tuple[Export, tuple[str, ...]]:
    """This node's export and ``fs/…``'s path inside it (refused if not under fs/)."""
    parts = check_path(path)
    export = s.node.export
    if parts[0] != "fs" or export is None or len(parts) < 2:
        raise NinepError(f"{path}: only files under fs/ (a node's --export) can be followed or "
                         "copied to", errno.EINVAL)
    return export, tuple(parts[1:])


# ---- follow ----

class FollowStream:
    """Our file's new lines and our children's streams, merged on line boundaries."""

    def __init__(self, s: QueryService, q: Query, req: dict[str, Any]) -> None:
        path = req["path"]
        sources, prefixes = [], []
        self.tasks: list[asyncio.Task[None]] = []
        if s.matches_here(q):
            export, rel = export_rel(s, path)
            missing = False
            try:
                is_dir = stat.S_ISDIR(export.lstat(export.resolve(rel)).st_mode)
            except (NinepError, OSError) as e:  # missing (followed once it appears), unreadable
                is_dir, missing = False, getattr(e, "errno", None) == errno.ENOENT
            if is_dir:
                raise NinepError(f"{path} is a directory on {s.node.name}; ptail follows a file",
                                 errno.EISDIR)
            lines = req.get("lines", 0)
            if not isinstance(lines, int) or not 0 <= lines <= MAX_LAST_LINES:
                raise NinepError(f"follow: lines must be a number from 0 to {MAX_LAST_LINES}",
                                 errno.EINVAL)
            stream = Stream(s.node.output_limit)
            self.tasks.append(asyncio.ensure_future(tail(export, rel, stream, lines, missing)))
            sources.append(Output(stream, f"follow {path}"))
            prefixes.append(f"{s.node.name}: ".encode())
        self.children = []
        for c in s.matching(q):
            reader = ChildFollow(c, q, req)
            self.children.append(reader)
            # Output is typed for a Stream; a remote reader is read the same way (node/io.py)
            sources.append(Output(reader, f"follow via {c.name}"))  # type: ignore[arg-type]
            prefixes.append(b"")
        self.agg = Aggregator(sources, NEWLINE, s.node.output_limit, prefixes=prefixes)

    def write(self, data: bytes) -> Any:
        raise NinepError("follow: read it; the request is written once", errno.EINVAL)

    def read(self, count: int) -> Any:
        return self.agg.out.read(count)

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for r in self.children:
            r.break_()
        self.agg.cancel()


class ChildFollow(RemoteReader):
    """A child's follow stream: its ``follow`` opened, the request written, then read."""

    def __init__(self, child: Any, q: Query, req: dict[str, Any]) -> None:
        super().__init__(Remote(child.client, f"node {child.name}"),
                         "/".join(["csrv", "query", *q.parts, "follow"]))
        self.req = req

    async def _read(self, count: int) -> bytes:
        if self.fid is None and not (self.eof or self.broken):
            from ..ninep.messages import Topen, Twrite
            r = self.remote
            fid, _ = await r.client.walk(self.path)
            await r.call(Topen, fid, 2)
            await r.call(Twrite, fid, 0, json.dumps(self.req).encode())
            self.fid = fid
        return await super()._read(count)


def last_lines_start(fd: int, size: int, n: int, window: int = LAST_LINES_WINDOW) -> int:
    """Where the last ``n`` lines of a file of ``size`` bytes start (``tail -n``), looking back
    at most ``window`` bytes (a file of very long lines starts its lines there)."""
    if n <= 0 or size == 0:
        return size
    end = size - 1  # a final newline ends the last line; it does not start one
    pos, seen = size, 0
    while pos > 0 and size - pos < window:
        start = max(0, pos - 65536, size - window)
        chunk = os.pread(fd, pos - start, start)
        i = min(len(chunk), end - start)
        while (i := chunk.rfind(b"\n", 0, i)) >= 0:
            seen += 1
            if seen == n:
                return start + i + 1
        pos = start
    return pos


async def tail(export: Export, rel: tuple[str, ...], out: Stream, lines: int = 0,
               missing: bool = False) -> None:
    """New bytes of ``fs/REL`` as they are appended (from its end, or its last ``lines`` lines,
    when we start), as ``tail -F``: a file replaced or truncated is followed from its start, and
    so is one ``missing`` when the request came (judged then, not when this task first runs: a
    file made right after the request is read from its start), once it appears. A directory
    there gives nothing (the client says so).

    The file is opened as ``fs/`` opens it (:meth:`Export.open_file`: resolved inside the
    export, no link followed, a regular file only), so a link swapped in for it, to a file
    outside, is never read. It is read :data:`PIECE` bytes at a time, each written to ``out``
    before the next is read: ``out`` is bounded, so a reader that does not read pauses us, and
    a big file appearing costs one piece of memory, not its size."""
    pos: int | None = 0 if missing else None  # missing when asked: from its start
    ino = None
    while True:
        try:
            fd = export.open_file(export.resolve(rel))
        except (NinepError, OSError) as e:
            if getattr(e, "errno", None) == errno.ENOENT and ino is not None:
                ino, pos = None, 0  # gone: a new one is followed from its start
            await asyncio.sleep(POLL)  # missing, a link out, not a file, unreadable: for now
            continue
        try:
            info = os.fstat(fd)
            if ino is not None and (info.st_ino != ino or info.st_size < (pos or 0)):
                pos = 0
            ino = info.st_ino
            if pos is None:
                pos = last_lines_start(fd, info.st_size, lines)
            while True:
                data = os.pread(fd, PIECE, pos)
                if not data:
                    break
                pos += len(data)
                await settled(out.write(data))  # the reader's pace
        except NinepError:  # the reader is gone
            return
        except OSError:  # unreadable for now: tried again
            pass
        finally:
            os.close(fd)
        await asyncio.sleep(POLL)


# ---- pcp ----

GIVE_A_FILE = "; give a file path"
IS_DIR = re.compile(r"^(.+) is a directory on (\S+)$")


class PcpWriter:
    """Our copy, written as the bytes come, and each child's, fed the same bytes meanwhile.

    A failure anywhere is kept, never raised half-way: the copies elsewhere go on, and the
    errors of the whole subtree come back together when the writer closes (a destination that
    is a directory is said once, with every node where it is one). Our temporary file is removed
    on every failure path, and no message names a path outside fs/."""

    def __init__(self, s: QueryService, q: Query, req: dict[str, Any]) -> None:
        self.s, self.q, self.path, self.req = s, q, req["path"], req
        self.fd = -1
        self.dfd = -1  # the destination's directory, held from the first write to the rename
        self.final = self.tmp = ""  # names in it
        self.dirs: list[str] = []  # nodes (ours and below) where the destination is a directory
        self.errors: list[str] = []
        self.children = s.matching(q)
        self.files: list[Any] = [None] * len(self.children)
        if s.matches_here(q):
            self._open()

    def _open(self) -> None:
        """Our copy's temporary file, made in the destination's directory, which is held by a
        descriptor (Export.make_dirs: never reached through a link) until the copy is renamed
        into place: a link swapped in on the way meanwhile changes nothing."""
        name = self.s.node.name
        try:
            export, rel = export_rel(self.s, self.path)
            self.dfd = export.make_dirs(rel[:-1])
            self.final = rel[-1]
            try:
                is_dir = stat.S_ISDIR(os.stat(self.final, dir_fd=self.dfd,
                                              follow_symlinks=False).st_mode)
            except FileNotFoundError:
                is_dir = False
            if is_dir:
                self.dirs.append(name)
                return
            tmp = f".pcp-{secrets.token_hex(4)}-{self.final}"
            self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o644, dir_fd=self.dfd)
            self.tmp = tmp
        except NinepError as e:
            self.errors.append(f"{name}: {e.message}")
        except OSError as e:
            self.errors.append(f"{name}: {self.path}: {e.strerror}")

    def _fail_own(self, e: OSError) -> None:
        """Our copy failed: said, and its temporary file removed."""
        self.errors.append(f"{self.s.node.name}: {self.path}: {e.strerror}")
        self._discard()

    def _discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp:
            try:
                os.unlink(self.tmp, dir_fd=self.dfd)
            except OSError:
                pass
            self.tmp = ""
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1

    def message(self) -> str:
        parts = []
        if self.dirs:
            parts.append(f"{self.path} is a directory on {','.join(sorted(self.dirs))}")
        parts += self.errors
        return "pcp: " + "; ".join(parts) + (GIVE_A_FILE if self.dirs else "")

    def absorb(self, child: str, message: str) -> None:
        """A child's failure: its subtree's message (as ``message()`` makes it) folded into ours."""
        if not message.startswith("pcp: "):
            self.errors.append(f"{child}: {message}")
            return
        body = message[5:]
        if body.endswith(GIVE_A_FILE):
            body = body[:-len(GIVE_A_FILE)]
        for part in body.split("; "):
            m = IS_DIR.match(part)
            if m and m.group(1) == self.path:
                self.dirs += m.group(2).split(",")
            elif part:
                self.errors.append(part)

    def read(self, count: int) -> Any:
        raise NinepError("pcp: write the file's bytes; it cannot be read", errno.EINVAL)

    def write(self, data: bytes) -> Any:
        return self._write(data)

    async def _write(self, data: bytes) -> int:
        if self.fd >= 0:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError as e:  # a full disk, say: this copy fails, the others go on
                self._fail_own(e)
        await asyncio.gather(*(self._pass(i, data) for i in range(len(self.children))))
        return len(data)

    async def _pass(self, i: int, data: bytes) -> None:
        c = self.children[i]
        if self.files[i] is False:
            return  # that child failed already: its error is kept
        try:
            if self.files[i] is None:
                path = "/".join(["csrv", "query", *self.q.parts, "pcp"])
                f = await c.client.open(path, OWRITE)
                self.files[i] = f
                await f.write(json.dumps(self.req))
            if data:
                await self.files[i].write(data)
        except NinepError as e:
            await self._drop(i)
            self.absorb(c.name, e.message)
        except ConnectionError as e:
            await self._drop(i)
            self.errors.append(f"{c.name}: lost ({e})")

    async def _drop(self, i: int) -> None:
        f, self.files[i] = self.files[i], False
        if f:
            try:
                await f.close()  # its temporary files go; what it says was said already
            except (NinepError, ConnectionError):
                pass

    def close(self) -> Any:
        return self._finish()

    async def _finish(self) -> None:
        try:
            if self.fd >= 0:
                try:
                    os.fsync(self.fd)
                    os.close(self.fd)
                    self.fd = -1
                    os.replace(self.tmp, self.final, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
                    self.tmp = ""
                except OSError as e:
                    self._fail_own(e)
            for i, f in enumerate(self.files):
                if f is None:  # nothing was written: an empty file there too
                    await self._pass(i, b"")
            for i, f in enumerate(self.files):
                if f:
                    self.files[i] = False
                    try:
                        await f.close()
                    except NinepError as e:
                        self.absorb(self.children[i].name, e.message)
                    except ConnectionError as e:
                        self.errors.append(f"{self.children[i].name}: lost ({e})")
        finally:
            self._discard()  # whatever happened, no temporary file stays behind
        if self.errors or self.dirs:
            raise NinepError(self.message())


# ---- merge and deep merge ----

class MergeDir(Dir):
    """The union of a directory's entries on the matching nodes (``path``, from ``local/``)."""

    def __init__(self, s: QueryService, q: Query, path: str, deep: bool, name: str) -> None:
        super().__init__(name, 0o555)
        self.s, self.q, self.path, self.deep = s, q, path, deep
        self._names: dict[str, list[Any]] | None = None

    async def names(self) -> dict[str, list[Any]]:
        if self._names is None:
            result = await partial(self.s, self.q, {"path": self.path, "agg": "ls", "grep": None})
            self._names = result.get("names", {})
        return self._names

    def walk(self, name: str) -> Any:
        return self._walk(name)

    async def _walk(self, name: str) -> Inode:
        names = await self.names()
        if name not in names:
            raise NinepError(*Enotfound)
        return self._entry(name, *names[name])

    def _entry(self, name: str, nodes: list[str], is_dir: bool) -> Inode:
        path = f"{self.path}/{name}" if self.path else name
        if self.deep and is_dir:
            return self.adopt(MergeDir(self.s, self.q, path, True, name))
        return self.adopt(PerNode(self.s, self.q, path, name, sorted(nodes)))

    def children(self) -> Any:
        return self._children()

    async def _children(self) -> list[Inode]:
        return [self._entry(name, nodes, is_dir)
                for name, (nodes, is_dir) in sorted((await self.names()).items())]


class PerNode(Dir):
    """One merged name: an entry per node that has it, leading to that node's own file."""

    def __init__(self, s: QueryService, q: Query, path: str, name: str, nodes: list[str]) -> None:
        super().__init__(name, 0o555)
        self.s, self.q, self.path, self.nodes = s, q, path, nodes

    def children(self) -> Any:
        return self._children()

    async def _children(self) -> list[Inode]:
        out: list[Inode] = []
        for n in self.nodes:
            st = await settled((await self._resolve(n)).stat())
            out.append(Listed(dataclasses.replace(st, name=n)))
        return out

    def walk(self, name: str) -> Any:
        if name not in self.nodes:
            raise NinepError(*Enotfound)
        return self._resolve(name)

    async def _resolve(self, name: str) -> Inode:
        d = await node_path(self.s, self.q, name, self.path)
        d.parent = self
        return d


async def node_path(s: QueryService, q: Query, node: str, path: str) -> Inode:
    """``local/PATH`` of the node ``node`` of the query's matches, here or through the tree
    (a remote one in one walk)."""
    d: Inode | None = await settled(s.node_csrv(q, node))
    names = ["local", *filter(None, path.split("/"))]
    walk_path = getattr(d, "walk_path", None)  # a remote directory: one walk for them all
    if walk_path is not None:
        _, d = await walk_path(names)
    else:
        for part in names:
            d = await settled(d.walk(part)) if isinstance(d, Dir) else None
    if d is None:
        raise NinepError(*Enotfound)
    return d
