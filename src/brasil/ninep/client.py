"""The asyncio 9P client every layer above uses: many requests in flight on one connection.

:class:`Client` multiplexes requests by tag; a caller that is cancelled while waiting sends Tflush
and keeps the tag reserved until the server confirms, so a late reply can never be mistaken for
another request's. Paths are walked from the attach fid in runs of at most 16 names. :class:`File`
is one open fid with a position, like a Unix file descriptor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno as _errno
import getpass
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

from . import text
from .constants import IOHDRSZ, MAXWELEM, NOFID, NOTAG, OREAD, OWRITE, VERSION, VERSION_U
from .errors import Ebadfid, Enoauth, Enotfound, Enotopen, NinepError, ProtocolError
from .framing import FrameReader
from .messages import (
    Message,
    Rerror,
    Rflush,
    Rread,
    Rversion,
    Tattach,
    Tclunk,
    Tcreate,
    Tflush,
    Topen,
    Tread,
    Tremove,
    Tstat,
    Tversion,
    Twalk,
    Twrite,
    Twstat,
    encode,
)
from .transport import Address, dial, parse_address
from .wire import Qid, Stat, read_stat

log = logging.getLogger("brasil.ninep.client")
M = TypeVar("M", bound=Message)

DEFAULT_MSIZE = 1024 * 1024 + IOHDRSZ

# An authentication step: given the client and a fresh afid after Tauth, run the exchange.
AuthFn = Callable[["Client", int], Awaitable[None]]


def dont_touch(**changes: Any) -> Stat:
    """A stat for Twstat that changes only ``changes``: every other field says "leave it"."""
    st = Stat(type=0xFFFF, dev=0xFFFFFFFF, qid=Qid(0xFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF),
              mode=0xFFFFFFFF, atime=0xFFFFFFFF, mtime=0xFFFFFFFF, length=0xFFFFFFFFFFFFFFFF,
              n_uid=0xFFFFFFFF, n_gid=0xFFFFFFFF, n_muid=0xFFFFFFFF)
    return dataclasses.replace(st, **changes)


def split_path(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class _Conn(asyncio.Protocol):
    def __init__(self, client: Client) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._transport = cast(asyncio.Transport, transport)  # a stream's, not datagrams

    def data_received(self, data: bytes) -> None:
        self.client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)


class Client:
    def __init__(self, address: Address, trace: bool = False) -> None:
        self.address = address
        self.trace = trace
        self.msize = DEFAULT_MSIZE
        self.dotu = False
        self.root: int = NOFID
        self.uname = self.aname = ""
        self._transport: asyncio.Transport | None = None
        self._reader = FrameReader(DEFAULT_MSIZE)
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._flushing: dict[int, int] = {}  # flush tag -> the tag it flushes
        self._reserved: set[int] = set()  # flushed tags, not reusable until their Rflush
        self._next_tag = 0
        self._free_fids: list[int] = []
        self._next_fid = 1
        self._closed: BaseException | None = None
        self._handover: tuple[int, Callable[[asyncio.Transport, bytes], None]] | None = None
        self._corked: list[bytes] | None = None  # frames held for one write (_pipeline)
        self.on_lost: list[Callable[[], None]] = []
        self.bytes_sent = self.bytes_received = 0  # on the wire, for tools that measure

    @classmethod
    async def connect(cls, address: str | Address, *, uname: str | None = None, aname: str = "",
                      msize: int = DEFAULT_MSIZE, dotu: bool = False, auth: AuthFn | None = None,
                      trace: bool = False, timeout: float = 10.0) -> Client:
        addr = parse_address(address) if isinstance(address, str) else address
        self = cls(addr, trace)
        await dial(addr, lambda: _Conn(self), timeout)
        try:
            await self.version(msize, VERSION_U if dotu else VERSION)
            await self.attach(uname or getpass.getuser(), aname, auth)
        except BaseException:
            self.abort()
            raise
        return self

    # ---- plumbing ----

    def _alloc_tag(self) -> int:
        for _ in range(0xFFFF):
            tag = self._next_tag
            self._next_tag = (tag + 1) % NOTAG
            if tag not in self._pending and tag not in self._flushing and tag not in self._reserved:
                return tag
        raise NinepError("too many requests in flight", _errno.EAGAIN)

    def alloc_fid(self) -> int:
        if self._free_fids:
            return self._free_fids.pop()
        fid = self._next_fid
        self._next_fid += 1
        return fid

    def free_fid(self, fid: int) -> None:
        self._free_fids.append(fid)

    def _send(self, msg: Message) -> None:
        if self._closed is not None or self._transport is None:
            raise ConnectionError(f"{self.address}: connection closed") from self._closed
        if self.trace:
            log.info("-> %s", text.format(msg, 64))
        frame = encode(msg, self.dotu)
        self.bytes_sent += len(frame)
        if self._corked is not None:
            self._corked.append(frame)
        else:
            self._transport.write(frame)

    def _start(self, cls: Callable[..., Message], *args: Any) -> tuple[int, asyncio.Future[Message]]:
        """Send ``cls(tag, *args)``; its tag and the future its reply will settle."""
        tag = NOTAG if cls is Tversion else self._alloc_tag()
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[tag] = fut
        try:
            self._send(cls(tag, *args))
        except BaseException:
            self._pending.pop(tag, None)
            raise
        return tag, fut

    async def _reply(self, tag: int, fut: asyncio.Future[Message]) -> Any:
        """The reply to a request sent, raising NinepError for Rerror; cancelled, its Tflush."""
        try:
            reply = await fut
        except asyncio.CancelledError:
            if self._pending.pop(tag, None) is not None and self._closed is None:
                self._flush(tag)
            raise
        if type(reply) is Rerror:
            # 9P2000 has no errno (0); some .u servers send ~0 for "undefined": both mean EIO.
            raise NinepError(reply.ename, reply.errno if 0 < reply.errno < 4096 else _errno.EIO)
        return reply

    async def rpc(self, cls: Callable[..., Message], *args: Any) -> Any:
        """Send ``cls(tag, *args)``; return the reply, raising NinepError for Rerror."""
        return await self._reply(*self._start(cls, *args))

    def _pipeline(self, *requests: tuple[Any, ...]) -> list[tuple[int, asyncio.Future[Message]]]:
        """Requests sent back to back in one write, each naming what the one before made (a
        walk's new fid, then its open): one round trip where waiting for each answer took
        several. A server answers them in order when each is answered at once (ours, for its
        own files); one that did not may say the fid is unknown, and the caller asks again."""
        if self._corked is not None:  # (not reentrant: nothing awaits in between)
            raise AssertionError("a pipeline inside a pipeline")
        self._corked = []
        sent: list[tuple[int, asyncio.Future[Message]]] = []
        try:
            for cls, *args in requests:
                sent.append(self._start(cls, *args))
        finally:
            frames, self._corked = self._corked, None
            if frames and self._transport is not None and self._closed is None:
                self._transport.write(b"".join(frames))
        return sent

    def _flush(self, oldtag: int) -> None:
        ftag = self._alloc_tag()
        self._flushing[ftag] = oldtag
        self._reserved.add(oldtag)
        try:
            self._send(Tflush(ftag, oldtag))
        except ConnectionError:
            pass

    def _received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self._reader.feed(data)
        try:
            while True:
                msg = self._reader.next_message()
                if msg is None:
                    return
                if self.trace:
                    log.info("<- %s", text.format(msg, 64))
                tag = msg.tag
                if tag in self._flushing and type(msg) is Rflush:
                    self._reserved.discard(self._flushing.pop(tag))
                    continue
                fut = self._pending.pop(tag, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                if self._handover is not None and self._handover[0] == tag:
                    self._hand_over()
                    return
        except ProtocolError as e:
            log.warning("%s: bad reply from server, closing: %s", self.address, e)
            self.abort()

    async def rpc_then_hand_over(self, take: Callable[[asyncio.Transport, bytes], None],
                                 cls: Callable[..., Message], *args: Any) -> Any:
        """Send one last request; the moment its reply arrives, stop being a client and give the
        transport, with any bytes read past the reply, to ``take`` (a joining child uses this to
        turn its own connection into one its parent serves requests over)."""
        tag = self._alloc_tag()
        self._handover = (tag, take)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[tag] = fut
        self._send(cls(tag, *args))
        reply = await fut
        if type(reply) is Rerror:
            raise NinepError(reply.ename, reply.errno if 0 < reply.errno < 4096 else _errno.EIO)
        return reply

    def _hand_over(self) -> None:
        assert self._handover is not None and self._transport is not None
        _, take = self._handover
        self._handover = None
        rest = bytes(self._reader._buf[self._reader._pos:])
        transport, self._transport = self._transport, None
        self._closed = ConnectionError(f"{self.address}: connection handed over")
        self._fail_pending()
        take(transport, rest)

    @classmethod
    async def adopt(cls, transport: asyncio.Transport, rest: bytes, label: str, *,
                    uname: str | None = None, auth: AuthFn | None = None,
                    msize: int = DEFAULT_MSIZE) -> Client:
        """Become the client end of a connection someone else opened (a child's handed-over
        connection, seen from its parent)."""
        self = cls(Address("tcp", label, 0))
        proto = _Conn(self)
        transport.set_protocol(proto)
        self._transport = transport
        if rest:
            self._received(rest)
        await self.version(msize, VERSION)
        await self.attach(uname or getpass.getuser(), "", auth)
        return self

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.address}: connection lost"))

    def _lost(self, exc: Exception | None) -> None:
        self._closed = exc or ConnectionError(f"{self.address}: connection closed by the server")
        self._fail_pending()
        for cb in self.on_lost:
            cb()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        if self._transport is not None and self._closed is None:
            self._transport.close()
        self._closed = self._closed or ConnectionError("client closed")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- protocol steps ----

    async def version(self, msize: int, version: str) -> None:
        r: Rversion = await self.rpc(Tversion, msize, version)
        if r.version not in (VERSION, VERSION_U):
            raise NinepError(f"server speaks {r.version!r}, not 9P2000", _errno.EPROTO)
        self.msize = r.msize
        self.dotu = r.version == VERSION_U
        self._reader.msize = self.msize
        self._reader.dotu = self.dotu

    async def attach(self, uname: str, aname: str = "", auth: AuthFn | None = None) -> Qid:
        from .messages import Tauth
        self.uname, self.aname = uname, aname
        afid = NOFID
        if auth is not None:
            afid = self.alloc_fid()
            try:
                await self.rpc(Tauth, afid, uname, aname)
            except NinepError as e:
                self.free_fid(afid)
                if e.message != Enoauth[0]:
                    raise
                afid = NOFID  # this listener needs no authentication (a private Unix socket)
            else:
                try:
                    await auth(self, afid)
                except BaseException:
                    await self._quiet_clunk(afid)
                    raise
        fid = self.alloc_fid()
        try:
            r = await self.rpc(Tattach, fid, afid, uname, aname)
        finally:
            if afid != NOFID:
                await self.clunk(afid)
        self.root = fid
        return r.qid

    async def walk(self, path: str | list[str], start: int | None = None) -> tuple[int, Qid | None]:
        """A new fid for ``path`` (relative to the attach root) and its qid."""
        names = split_path(path) if isinstance(path, str) else path
        fid = self.root if start is None else start
        newfid = self.alloc_fid()
        qid: Qid | None = None
        held = False  # whether the server has newfid (after a first complete chunk)
        try:
            if not names:
                await self.rpc(Twalk, fid, newfid, ())
                return newfid, None
            done = 0
            while done < len(names):
                chunk = tuple(names[done:done + MAXWELEM])
                try:
                    r = await self.rpc(Twalk, newfid if held else fid, newfid, chunk)
                except NinepError as e:
                    raise NinepError(f"{'/'.join(names[:done + 1])}: {e.message}", e.errno) from None
                if len(r.wqid) < len(chunk):
                    stop = done + len(r.wqid)
                    reason = await self._why_not(names[:stop], names[stop])
                    msg = reason.message.removeprefix(f"{names[stop]}: ")
                    raise NinepError(f"{'/'.join(names[:stop + 1])}: {msg}", reason.errno)
                qid = r.wqid[-1]
                held = True
                done += len(chunk)
            return newfid, qid
        except BaseException as e:
            # The server has newfid, or may have: a walk cancelled in flight may have been
            # answered already (its Tflush went out first, so the Tclunk finds its fate
            # settled). Clunk it, which frees it here too once answered; freeing it at once
            # would hand out a fid the server still holds ("fid already in use" for good).
            if held or isinstance(e, asyncio.CancelledError):
                self.clunk_later(newfid)
            else:
                self.free_fid(newfid)
            raise

    async def _why_not(self, prefix: list[str], name: str) -> NinepError:
        """A partial Rwalk says where a walk stopped, not why: ask for the one name that failed."""
        try:
            fid, _ = await self.walk(prefix)
        except NinepError as e:
            return e
        probe = self.alloc_fid()
        try:
            await self.rpc(Twalk, fid, probe, (name,))
            await self.clunk(probe)  # it exists now: it was made after our walk
            return NinepError(Enotfound[0], Enotfound[1])
        except NinepError as e:
            self.free_fid(probe)
            return e
        finally:
            await self._quiet_clunk(fid)

    def clunk_later(self, fid: int) -> None:
        """Clunk without waiting for the answer; the fid is reusable once the server has it back
        (a failed clunk frees the fid on the server too)."""
        if self._closed is not None:
            self.free_fid(fid)
            return

        def done(f: asyncio.Future[Any]) -> None:
            if not f.cancelled():
                f.exception()
            self.free_fid(fid)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop: the process is ending
            return
        loop.create_task(self.rpc(Tclunk, fid)).add_done_callback(done)

    async def clunk(self, fid: int) -> None:
        try:
            await self.rpc(Tclunk, fid)
        finally:
            self.free_fid(fid)

    # ---- path-level operations ----

    async def open(self, path: str, mode: int = OREAD) -> File:
        """The walk and the open in one round trip (a path deeper than one walk's 16 names: the
        walks first)."""
        return (await self._open(path, mode, None))[0]

    async def open_read(self, path: str, count: int | None = None,
                        mode: int = OREAD) -> tuple[File, bytes]:
        """Open ``path`` (for reading, or ``mode``) and read its first ``count`` bytes (at most
        an iounit), all in one round trip: what a ``clone`` (open makes the session, the read
        names it) or a short file costs then."""
        f, data = await self._open(path, mode, count or self.msize - IOHDRSZ)
        assert data is not None
        return f, data

    async def _open(self, path: str, mode: int, count: int | None) -> tuple[File, bytes | None]:
        names = split_path(path)
        n = None if count is None else min(count, self.msize - IOHDRSZ)
        opened: Any = None  # the Ropen, once had (a refusal raises)
        read: list[Any] = []  # the first Rread, once had
        if len(names) > MAXWELEM:  # the walks first, then the open (and read) below
            fid, _ = await self.walk(names)
        else:
            fid = self.alloc_fid()
            steps: list[tuple[Any, ...]] = [(Twalk, self.root, fid, tuple(names)),
                                            (Topen, fid, mode)]
            if n is not None:
                steps.append((Tread, fid, 0, n))
            try:
                sent = self._pipeline(*steps)
            except BaseException:  # the connection is closed: nothing went out
                self.free_fid(fid)
                raise
            replies: list[Any] = []
            try:
                for tag, fut in sent:  # every answer, before the fid is ours to free or reuse
                    try:
                        replies.append(await self._reply(tag, fut))
                    except NinepError as e:
                        replies.append(e)
            except BaseException:  # cancelled: the rest flushed; the server may hold the fid
                for tag, _ in sent:
                    if self._pending.pop(tag, None) is not None and self._closed is None:
                        self._flush(tag)
                self.clunk_later(fid)
                raise
            walked, opened, *read = replies
            if isinstance(walked, NinepError) or len(walked.wqid) < len(names):
                self.free_fid(fid)  # never made there
                if isinstance(walked, NinepError):
                    raise NinepError(f"{names[0]}: {walked.message}" if names else walked.message,
                                     walked.errno)
                stop = len(walked.wqid)
                reason = await self._why_not(names[:stop], names[stop])
                msg = reason.message.removeprefix(f"{names[stop]}: ")
                raise NinepError(f"{'/'.join(names[:stop + 1])}: {msg}", reason.errno)
        try:
            if isinstance(opened, NinepError):
                if opened.message != Ebadfid[0]:
                    raise opened
                opened, read = None, []  # answered before the walk was: asked again below
            if read and isinstance(read[0], NinepError):
                if read[0].message not in (Ebadfid[0], Enotopen[0]):  # (and not only opened)
                    raise read[0]
                read = []
            if opened is None:
                opened = await self.rpc(Topen, fid, mode)
            if n is not None and not read:
                read = [await self.rpc(Tread, fid, 0, n)]
        except BaseException:
            await self._quiet_clunk(fid)
            raise
        f = File(self, fid, opened.qid, opened.iounit or self.msize - IOHDRSZ, path)
        if read:
            f.offset = len(read[0].data)
            return f, read[0].data
        return f, None

    async def create(self, path: str, perm: int = 0o644, mode: int = OWRITE) -> File:
        names = split_path(path)
        if not names:
            raise NinepError("create: empty path", _errno.EINVAL)
        fid, _ = await self.walk(names[:-1])
        try:
            r = await self.rpc(Tcreate, fid, names[-1], perm, mode)
        except BaseException:
            await self._quiet_clunk(fid)
            raise
        return File(self, fid, r.qid, r.iounit or self.msize - IOHDRSZ, path)

    async def _quiet_clunk(self, fid: int) -> None:
        try:
            await self.clunk(fid)
        except (NinepError, ConnectionError):
            pass

    async def stat(self, path: str) -> Stat:
        fid, _ = await self.walk(path)
        try:
            return (await self.rpc(Tstat, fid)).stat
        finally:
            await self._quiet_clunk(fid)

    async def wstat(self, path: str, st: Stat) -> None:
        fid, _ = await self.walk(path)
        try:
            await self.rpc(Twstat, fid, st)
        finally:
            await self._quiet_clunk(fid)

    async def ls(self, path: str = "") -> list[Stat]:
        async with await self.open(path) as f:
            return await f.read_dir()

    async def read(self, path: str) -> bytes:
        """The whole file; its walk, open and first read in one round trip."""
        f, first = await self.open_read(path)
        async with f:
            return first + await f.read_all() if first else b""

    async def write(self, path: str, data: bytes | str, mode: int = OWRITE) -> int:
        if isinstance(data, str):
            data = data.encode()
        async with await self.open(path, mode) as f:
            return await f.write(data)

    async def remove(self, path: str) -> None:
        fid, _ = await self.walk(path)
        try:
            await self.rpc(Tremove, fid)
        finally:
            self.free_fid(fid)  # Tremove clunks the fid whatever the outcome


class File:
    """One open fid with a position."""

    def __init__(self, client: Client, fid: int, qid: Qid, iounit: int, path: str) -> None:
        self.client = client
        self.fid = fid
        self.qid = qid
        self.iounit = min(iounit, client.msize - IOHDRSZ)
        self.path = path
        self.offset = 0
        self.closed = False

    async def read(self, count: int | None = None, offset: int | None = None) -> bytes:
        """One Tread: returns what the server gave (b"" at end of file)."""
        off = self.offset if offset is None else offset
        r: Rread = await self.client.rpc(Tread, self.fid, off, min(count or self.iounit, self.iounit))
        if offset is None:
            self.offset += len(r.data)
        return r.data

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            data = await self.read()
            if not data:
                return
            yield data

    async def read_all(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def read_dir(self) -> list[Stat]:
        out: list[Stat] = []
        async for data in self.chunks():
            pos = 0
            while pos < len(data):
                st, pos = read_stat(data, pos, len(data), self.client.dotu)
                out.append(st)
        return out

    async def write(self, data: bytes | str, offset: int | None = None) -> int:
        """Write all of ``data`` (in iounit-sized messages); a short count from the server stops."""
        if isinstance(data, str):
            data = data.encode()
        off = self.offset if offset is None else offset
        done = 0
        while True:
            chunk = data[done:done + self.iounit]
            r = await self.client.rpc(Twrite, self.fid, off + done, chunk)
            done += r.count
            if done >= len(data) or r.count < len(chunk) or not chunk:
                break
        if offset is None:
            self.offset += done
        return done

    async def stat(self) -> Stat:
        return (await self.client.rpc(Tstat, self.fid)).stat

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.client.clunk(self.fid)

    def forget(self) -> None:
        """Close without waiting for the server's answer (nothing the caller needs is in it)."""
        if not self.closed:
            self.closed = True
            self.client.clunk_later(self.fid)

    async def __aenter__(self) -> File:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.close()
        except ConnectionError:
            pass
