"""Another daemon's files, served as ours: proxy nodes that forward 9P requests over a client.

Each proxy node holds one fid on the remote side, clunked when the node is dropped. Opening a
node clones its fid, so the node can be opened many times and still be walked. A mount point keeps
a stat of its own so that listing ``/csrv`` never waits on a remote daemon.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

from ..ninep.client import Client
from ..ninep.constants import DMDIR, MAXWELEM, QTDIR
from ..ninep.errors import Enotfound, NinepError
from ..ninep.maybe import is_awaitable
from ..ninep.messages import Tclunk, Tcreate, Topen, Tread, Tremove, Tstat, Twalk, Twrite, Twstat
from ..ninep.synthetic import Dir, Handle, Inode
from ..ninep.wire import Qid, Stat, read_stat

T = TypeVar("T")

log = logging.getLogger("brasil.tree")


Hop = tuple[str, str]  # ("up", our name) toward the parent, ("down", child's name) toward a child


def relocate(path: str, hop: Hop) -> str:
    """A path of our namespace as the neighbour across ``hop`` names the same file.

    ``/csrv/local/3/1`` here is ``/csrv/parent/local/3/1`` on a child and ``/csrv/ME/local/3/1``
    on the parent; a step that comes straight back (``parent`` then the child's own name) is
    dropped. Session paths without ``/csrv`` (``3/1``, ``local/3/1``) are this node's."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["csrv"]:
        parts = parts[1:]
    elif parts[:1] != ["local"]:
        parts = ["local"] + parts
    direction, name = hop
    if direction == "up":
        parts = parts[1:] if parts[:1] == ["parent"] else [name] + parts
    else:
        parts = parts[1:] if parts[:1] == [name] else ["parent"] + parts
    return "/" + "/".join(["csrv"] + parts)


def relocate_ctl(text: bytes, hop: Hop) -> bytes:
    """A ctl write passing to a neighbour: the paths in its ``splice`` lines are made to mean
    there what they meant here, where they were written."""
    if b"splice" not in text:
        return text
    lines = []
    for line in text.decode("utf-8", "replace").split("\n"):
        words = line.split(None, 2)
        if len(words) == 3 and words[0] == "splice":
            try:
                path, *rest = shlex.split(words[1] + " " + words[2])
            except ValueError:
                path, rest = words[1], [words[2]]
            line = " ".join(["splice", shlex.quote(relocate(path, hop)), *rest])
        lines.append(line)
    return "\n".join(lines).encode()


class Remote:
    """One client connection to another daemon, and the housekeeping of our fids on it.

    ``hop`` says which neighbour it is, so that paths written through it keep their meaning."""

    def __init__(self, client: Client, label: str, hop: Hop | None = None) -> None:
        self.client = client
        self.label = label
        self.hop = hop
        self.lost = False

    def release(self, fid: int) -> None:
        """Clunk without waiting for the answer (a dropped node must not block anybody)."""
        if not self.lost:
            self.client.clunk_later(fid)

    async def call(self, cls: type, *args: Any) -> Any:
        return await self.guarded(self.client.rpc(cls, *args))

    async def guarded(self, pending: Awaitable[T]) -> T:
        """``pending``'s answer; a lost connection marks us lost and says whose it was."""
        try:
            return await pending
        except ConnectionError:
            self.lost = True
            raise NinepError(f"{self.label}: connection lost") from None

    async def walk(self, fid: int, names: tuple[str, ...]) -> tuple[int, Any]:
        """A new fid walked from ``fid`` along ``names`` (none: a clone), and the Rwalk."""
        newfid = self.client.alloc_fid()
        try:
            return newfid, await self.call(Twalk, fid, newfid, names)
        except asyncio.CancelledError:
            # The walk went out and may have been answered (the server holds newfid): clunk
            # it, which frees it here once answered, as Client.walk does. Freed at once, the
            # next walk on this link got it again: "fid already in use" from the server.
            self.client.clunk_later(newfid)
            raise
        except BaseException:
            self.client.free_fid(newfid)
            raise

    async def clone(self, fid: int) -> int:
        return (await self.walk(fid, ()))[0]


def make_node(remote: Remote, fid: int, qid: Qid, name: str) -> _RemoteNode:
    cls = RemoteDir if qid.type & QTDIR else RemoteFile
    return cls(remote, fid, qid, name)


class _RemoteNode(Inode):
    """Mode bits default to everything allowed: the remote server makes the real checks."""

    def __init__(self, remote: Remote, fid: int, qid: Qid, name: str, mode: int = 0o777) -> None:
        super().__init__(name, mode)
        self.remote, self.fid, self.qid = remote, fid, qid
        self.cached: Stat | None = None
        self._stashed: Handle | None = None
        weakref.finalize(self, remote.release, fid)

    def stat(self) -> Any:
        if self.cached is not None:
            return self.cached
        return self._stat()

    async def _stat(self) -> Stat:
        st: Stat = (await self.remote.call(Tstat, self.fid)).stat
        self.mode = st.mode & 0o777
        return Stat(st.type, st.dev, st.qid, st.mode, st.atime, st.mtime, st.length,
                    self.name or st.name, st.uid, st.gid, st.muid)

    def open(self, mode: int) -> Any:
        if self._stashed is not None:  # made by create: already open
            h, self._stashed = self._stashed, None
            return h
        return self._open(mode)

    async def _open(self, mode: int) -> Handle:
        fid = await self.remote.clone(self.fid)
        try:
            r = await self.remote.call(Topen, fid, mode)
        except BaseException:
            self.remote.release(fid)
            raise
        return RemoteHandle(self, fid, r.iounit)

    def wstat(self, st: Stat) -> Any:
        return self.remote.call(Twstat, self.fid, st)

    def remove(self) -> Any:
        return self._remove()

    async def _remove(self) -> None:
        fid = await self.remote.clone(self.fid)
        try:
            await self.remote.call(Tremove, fid)  # clunks fid whatever the outcome
        finally:
            self.remote.client.free_fid(fid)


class RemoteFile(_RemoteNode):
    pass


class RemoteDir(_RemoteNode, Dir):
    is_dir = True

    def walk(self, name: str) -> Any:
        return self._walk1(name)

    async def _walk1(self, name: str) -> Inode:
        qids, node = await self.walk_path([name])
        assert node is not None
        return node

    async def walk_path(self, names: list[str]) -> tuple[list[Qid], _RemoteNode | None]:
        """Walk up to 16 names in one round trip: the qids that worked, and the node at the end
        if all did. A failure on the first name raises its error."""
        names = names[:MAXWELEM]
        newfid, r = await self.remote.walk(self.fid, tuple(names))
        qids = list(r.wqid)
        if len(qids) < len(names):
            self.remote.client.free_fid(newfid)  # a partial walk made no newfid
            return qids, None
        node = make_node(self.remote, newfid, qids[-1], names[-1])
        parent: Dir = self
        for i in range(len(names) - 1):  # intermediate directories, for '..' from the end
            parent = _Waypoint(self, names[:i + 1], qids[i], parent)
        node.parent = parent
        return qids, node

    def children(self) -> Any:
        return self._children()

    async def _children(self) -> list[Inode]:
        fid = await self.remote.clone(self.fid)
        out: list[Inode] = []
        try:
            r = await self.remote.call(Topen, fid, 0)
            count = r.iounit or self.remote.client.msize - 24
            offset = 0
            while True:
                data = (await self.remote.call(Tread, fid, offset, count)).data
                if not data:
                    break
                offset += len(data)
                pos = 0
                while pos < len(data):
                    st, pos = read_stat(data, pos, len(data), self.remote.client.dotu)
                    out.append(Listed(st))
        finally:
            self.remote.release(fid)
        return out

    def create(self, name: str, perm: int, mode: int) -> Any:
        return self._create(name, perm, mode)

    async def _create(self, name: str, perm: int, mode: int) -> Inode:
        fid = await self.remote.clone(self.fid)
        try:
            r = await self.remote.call(Tcreate, fid, name, perm, mode)
        except BaseException:
            self.remote.release(fid)
            raise
        _, node = await self.walk_path([name])  # a fid of its own: the created one is open
        if node is None:
            self.remote.release(fid)
            raise NinepError(f"{name}: vanished right after its creation")
        node.parent = self
        if not perm & DMDIR:
            node._stashed = RemoteHandle(node, fid, r.iounit)
        else:
            self.remote.release(fid)
        return node


class _Waypoint(Dir):
    """A directory a multi-name remote walk passed through without a fid of its own. Reached
    again by '..', it gets one (walking from where the walk began) the first time it is used."""

    def __init__(self, base: RemoteDir, names: list[str], qid: Qid, parent: Dir) -> None:
        super().__init__(names[-1], 0o777)  # the remote side checks permissions
        self.base, self.names = base, names
        self.qid = qid
        self.parent = parent
        self._real: RemoteDir | None = None

    async def resolve(self) -> RemoteDir:
        if self._real is None:
            _, node = await self.base.walk_path(self.names)
            if not isinstance(node, RemoteDir):
                raise NinepError(f"{'/'.join(self.names)}: {Enotfound[0]}", Enotfound[1])
            node.parent = self.parent
            self._real = node
        return self._real

    async def walk_path(self, names: list[str]) -> tuple[list[Qid], _RemoteNode | None]:
        qids, node = await (await self.resolve()).walk_path(names)
        if node is not None and node.parent is self._real:
            node.parent = self
        return qids, node

    def walk(self, name: str) -> Any:
        return self._walk1(name)

    async def _walk1(self, name: str) -> Inode:
        _, node = await self.walk_path([name])
        if node is None:
            raise NinepError(*Enotfound)
        return node

    def children(self) -> Any:
        return self._delegate("children")

    def stat(self) -> Any:
        return self._delegate("stat")

    def open(self, mode: int) -> Any:
        return self._delegate("open", mode)

    async def _delegate(self, what: str, *args: Any) -> Any:
        r = getattr(await self.resolve(), what)(*args)
        return await r if is_awaitable(r) else r


class Listed(Inode):
    """A directory entry read from a remote listing: its stat is already known."""

    def __init__(self, st: Stat) -> None:
        super().__init__(st.name, st.mode & 0o777)
        self._st = st

    def stat(self) -> Stat:
        return self._st


class RemoteHandle(Handle):
    def __init__(self, node: _RemoteNode, fid: int, iounit: int) -> None:
        super().__init__(node)
        self.remote: Remote = node.remote
        self.fid = fid
        self.iounit = iounit

    def read(self, offset: int, count: int) -> Any:
        return self._read(offset, count)

    async def _read(self, offset: int, count: int) -> bytes:
        return (await self.remote.call(Tread, self.fid, offset, count)).data

    def write(self, offset: int, data: bytes) -> Any:
        return self._write(offset, data)

    async def _write(self, offset: int, data: bytes) -> int:
        hop = self.remote.hop
        if hop is not None and self.node.name == "ctl":
            sent = relocate_ctl(data, hop)
            if sent is not data:
                await self.remote.call(Twrite, self.fid, offset, sent)
                return len(data)
        return (await self.remote.call(Twrite, self.fid, offset, data)).count

    def clunk(self) -> Any:
        return self._clunk()

    async def _clunk(self) -> None:
        try:
            await self.remote.call(Tclunk, self.fid)
        except NinepError:
            pass
        finally:
            self.remote.client.free_fid(self.fid)


async def mount(client: Client, path: str, name: str, label: str, hop: Hop | None = None
                ) -> RemoteDir:
    """A proxy for ``path`` on ``client``'s daemon, to be added to our tree as ``name``."""
    remote = Remote(client, label, hop)
    fid, qid = await client.walk(path)
    if qid is None:
        qid = Qid(QTDIR, 0, 0)
    node = RemoteDir(remote, fid, qid, name)
    node.cached = Stat(qid=qid, mode=DMDIR | 0o555, name=name, uid="brasil", gid="brasil",
                       muid="brasil")
    node.mode = 0o555
    return node
