"""Sub-sessions that live on another node: a session there, holding several of ours.

A reservation that spills over to a neighbour (a child's subtree, or the parent) makes one session
on that neighbour with ``res M``; that session is a :class:`Delegation` of M of our sub-sessions.
Everything a session does to its sub-sessions it does to a delegation with one request: ``exec`` is one
ctl write, the delegation's output is read once through its own aggregated ``stdio`` (so each byte
crosses each level of the tree once), its input is one stream distributed there by the same mux.
If the neighbour is lost, the delegation's sub-sessions fail with the node's name and the rest go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..client.session import LOCAL, SessionClient, exec_line
from ..client.stage import send
from ..ninep.client import File
from ..ninep.constants import ORDWR, OWRITE
from ..ninep.errors import NinepError
from ..ninep.messages import Tclunk, Tread, Twrite
from ..node.io import Output
from ..node.ranks import fold
from ..node.stage import StageCache
from .proxy import Remote, RemoteDir, mount

log = logging.getLogger("brasil.tree")


class RemoteReader:
    """An output read over 9P, shaped like a Stream for the Aggregator and splices."""

    def __init__(self, remote: Remote, path: str, on_lost: Callable[[str], None] | None = None) -> None:
        self.remote, self.path, self.on_lost = remote, path, on_lost
        self.fid: int | None = None
        self.eof = False
        self.broken = False

    def __len__(self) -> int:
        return 0

    def read(self, count: int) -> Any:
        return self._read(count)

    async def _read(self, count: int) -> bytes:
        if self.eof or self.broken:
            return b""
        r = self.remote
        try:
            if self.fid is None:  # the walk, the open and the first read: one round trip
                f, data = await r.guarded(r.client.open_read(self.path, min(count, 65536)))
                self.fid = f.fid
            else:
                data = (await r.call(Tread, self.fid, 0, min(count, 65536))).data
        except (NinepError, ConnectionError) as e:
            if self.on_lost is not None and (r.lost or r.client.closed):
                self.on_lost(str(e))
            raise NinepError(str(e)) from None
        if not data:
            self.eof = True
            self._release()
        return data

    def _release(self) -> None:
        if self.fid is not None:
            self.remote.release(self.fid)
            self.fid = None

    def break_(self) -> None:
        self.broken = True
        self._release()

    def close(self) -> None:
        self.eof = True


class RemoteSink:
    """An input written over 9P; closing it is end of file on the other side."""

    def __init__(self, remote: Remote, path: str) -> None:
        self.remote, self.path = remote, path
        self.fid: int | None = None
        self.opening: asyncio.Future[int] | None = None
        self.closed = False
        self.closing: asyncio.Future[None] | None = None
        self.inflight = 0  # bytes written and not yet acknowledged (how busy it is)

    def write(self, data: bytes) -> Any:
        return self._write(data)

    def load(self) -> int:
        return self.inflight

    async def _open(self) -> int:
        return (await self.remote.guarded(self.remote.client.open(self.path, OWRITE))).fid

    async def _write(self, data: bytes) -> int:
        if self.opening is None:
            self.opening = asyncio.ensure_future(self._open())
        fid = await self.opening
        r = self.remote
        done = 0
        self.inflight += len(data)
        try:
            while done < len(data):
                done += (await r.call(Twrite, fid, 0, data[done:done + 65536])).count
        finally:
            self.inflight -= len(data)
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.closing = asyncio.ensure_future(self._close())  # held: the clunk must be sent

    async def _close(self) -> None:
        try:
            if self.opening is None:
                self.opening = asyncio.ensure_future(self._open())
            fid = await self.opening
            await self.remote.call(Tclunk, fid)
            self.remote.client.free_fid(fid)
        except (NinepError, ConnectionError):
            pass


class Delegation:
    """Holds the remote session's ``ctl`` open for its whole life: that open file is what keeps
    the session there alive, and when our side goes away (a dead node closes its connections)
    the neighbour closes it, killing what it ran for us."""

    def __init__(self, neighbor: str, remote: Remote, sid: str, count: int, first: int,
                 path: str, ctl: File | None = None) -> None:
        self.session = SessionClient(remote.client, f"{LOCAL}/{sid}", ctl)
        self.neighbor = neighbor  # a child's name, or "parent"
        self.remote = remote
        self.sid = sid
        self.count = count
        self.first = first
        self.path = path  # our session's path, for messages
        self.base = self.session.path
        self.running = False
        self.lost = ""
        self.wait_result: list[str] | None = None
        self.waiter: asyncio.Task[None] | None = None
        self.on_done: list[Any] = []
        self.released: set[int] = set()  # our indexes j released there (`release`): gone for good

    @property
    def held(self) -> int:
        """How many of its sub-sessions it still holds."""
        return self.count - len(self.released)

    def holds(self, j: int) -> bool:
        return 0 <= j < self.count and j not in self.released

    async def ctl(self, *lines: str) -> None:
        """ctl lines, in one write, through the ctl held open for the session's whole life."""
        await self.session.hold(ORDWR)
        await self.remote.guarded(self.session.ctl(*lines))

    async def exchange(self, name: str, request: bytes) -> bytes:
        """Write a request to one of the session's files there and read its answer on the same
        open (a process group operation's part: node/proc_files.py)."""
        f = await self.remote.client.open(f"{self.base}/{name}", ORDWR)
        try:
            await f.write(request, 0)
            return await f.read_all()
        except ConnectionError:
            self.remote.lost = True
            raise NinepError(f"{self.remote.label}: connection lost") from None
        finally:
            f.forget()

    async def tell(self, text: str) -> None:
        """A ctl line whose answer nobody waits for (a lost neighbour is noticed elsewhere)."""
        try:
            await self.ctl(text)
        except (NinepError, ConnectionError):
            pass

    async def exec(self, cmd: str, env: dict[str, str], setup: list[str],
                   some: list[int] | None = None) -> None:
        """One ctl write: our session's env, mux and rs there, then the command (on ``some``
        of its sub-sessions, our indexes j, when given: ``exec @RANKS``)."""
        lines = [f"env {k}={v}" for k, v in env.items() if "\n" not in k + v]
        await self.ctl(*lines, *setup, exec_line(f"@{fold(some)} {cmd}" if some else cmd))
        self.running = True
        self.wait_result = None
        self.waiter = asyncio.ensure_future(self._wait())

    async def _wait(self) -> None:
        try:
            text = await self.session.wait()
            self.wait_result = [self._renumber(ln) for ln in text.splitlines() if ln]
        except (NinepError, ConnectionError) as e:
            self.mark_lost(str(e))
        finally:
            self.running = False
            for cb in self.on_done:
                cb()

    def release(self, js: list[int]) -> Awaitable[None]:
        """``release`` there of its sub-sessions ``js`` (our indexes): killed, their slots freed
        on whatever node holds them below. Ours no more from now, whatever the answer (a lost
        node freed them): the caller counts what is left before the neighbour answers."""
        self.released.update(js)
        return self._release(fold(js))

    async def _release(self, ranks: str) -> None:
        if not self.lost:
            await self.ctl(f"release {ranks}")

    def mark_lost(self, why: str) -> None:
        if not self.lost:
            self.lost = f"node {self.neighbor} lost"
            log.warning("session %s: sub-sessions %d-%d failed: %s (%s)", self.path, self.first,
                        self.first + self.count - 1, self.lost, why)
        self.running = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.cancel()
        for cb in self.on_done:
            cb()

    def _renumber(self, line: str) -> str:
        head, _, rest = line.partition(" ")
        return f"{self.first + int(head)} {rest}" if head.isdigit() else line

    def lost_lines(self, kind: str) -> list[str]:
        rows = []
        for j in range(self.count):
            if j in self.released:
                continue
            i = self.first + j
            rows.append(f"{i} {self.neighbor} - failed - - {self.lost}" if kind == "status"
                        else f"{i} failed {self.lost}")
        return rows

    async def status_lines(self) -> list[str]:
        if self.lost:
            return self.lost_lines("status")
        try:
            text = await self.session.read("status")
        except (NinepError, ConnectionError) as e:
            self.mark_lost(str(e))
            return self.lost_lines("status")
        return [self._renumber(ln) for ln in text.splitlines() if ln]

    def wait_lines(self) -> list[str]:
        if self.lost:
            return self.lost_lines("wait")
        if self.wait_result is not None:
            return self.wait_result
        return [f"{self.first + j} -" for j in range(self.count) if j not in self.released]

    def output(self, fd: int, label: str) -> Output:
        name = "stdio" if fd == 1 else "stderr"
        # Output is typed for a Stream; RemoteReader is read the same way (node/io.py's to widen)
        return Output(RemoteReader(self.remote, f"{self.base}/{name}", self.mark_lost), label)  # type: ignore[arg-type]

    def input(self) -> RemoteSink:
        return RemoteSink(self.remote, f"{self.base}/stdio")

    async def sub_dir(self, j: int, name: str) -> RemoteDir:
        return await mount(self.remote.client, f"{self.base}/{j}", name,
                           f"node {self.neighbor}", self.remote.hop)

    def sub(self, j: int, session: Any) -> RemoteSub:
        return RemoteSub(self, j, session)

    async def kill(self, sig: int) -> None:
        if not self.lost:
            await self.ctl(f"kill {sig}")

    async def stage(self, h: str, name: str, cache: StageCache) -> None:
        """The staged file sent to the neighbour only if it lacks it (then it is cached
        there too), and our session's part there told to place it."""
        if self.lost:
            return
        client = self.remote.client
        path = f"{LOCAL}/stage/{h}"
        try:
            await client.stat(path)
        except NinepError:
            await send(client, path, cache.file(h))
        await self.ctl(f"stage {h} {name}")

    async def close(self) -> None:
        if not self.lost:
            try:
                await self.ctl("close")
            except (NinepError, ConnectionError):
                pass
        self.session.forget()


class RemoteEnd:
    """A session or sub-session on another node, as one end of a splice."""

    is_leaf = False

    def __init__(self, remote: Remote, base: str, path: str,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.remote, self.base, self.path, self.on_lost = remote, base, path, on_lost
        self.session = SessionClient(remote.client, base)

    async def ctl(self, text: str) -> None:
        """One ctl line (its newline optional)."""
        await self.session.ctl(text.removesuffix("\n"))

    async def ctl_state(self) -> str:
        return await self.session.state()

    def output(self, fd: int, who: str) -> Output:
        name = "stdout" if fd == 1 else "stderr"
        # as in Delegation.output: Output is typed for a Stream, RemoteReader is read as one
        return Output(RemoteReader(self.remote, f"{self.base}/{name}", self.on_lost),  # type: ignore[arg-type]
                      f"{self.path} {name}")

    def input(self) -> RemoteSink:
        return RemoteSink(self.remote, f"{self.base}/stdin")


class RemoteSub(RemoteEnd):
    """One of our sub-session indexes that lives in a Delegation."""

    def __init__(self, group: Delegation, j: int, parent: Any) -> None:
        super().__init__(group.remote, f"{group.base}/{j}", f"{parent.path}/{group.first + j}",
                         group.mark_lost)
        self.group, self.j = group, j
        self.parent = parent

    @property
    def top(self) -> Any:
        return self.parent.top

    async def mount(self) -> RemoteDir:
        """Our directory for this sub-session: the one on the neighbour, served through us."""
        return await self.group.sub_dir(self.j, str(self.group.first + self.j))

