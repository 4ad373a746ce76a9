"""The 9P server: protocol bookkeeping done once, so synthetic files stay tiny.

One :class:`Connection` per client. Frames are decoded as they arrive; each request is checked here
(fid exists, not already open, open mode allows the operation, walk limits, offsets of directory
reads) before a file's handler sees it. A handler answers at once or returns an awaitable; only
the latter becomes a task, registered under its tag so that Tflush can cancel it and so that a
blocked read never stalls the other tags. A malformed or oversized frame closes that connection and
nothing else; an unexpected exception in a handler is logged and answered as an internal error.

Authentication is a hook: an :class:`Authenticator` makes the node an afid points at, and says
whether a finished afid lets ``uname`` attach. Without one, Tauth is refused and any attach is
accepted — the transport's reach is the guard: a Unix socket serves only peers of the daemon's own
uid (SO_PEERCRED), and `brasil serve` never opens a TCP listener without a secret.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno as _errno
import inspect
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from . import text
from .constants import (
    IOHDRSZ,
    MIN_MSIZE,
    NOFID,
    OEXEC,
    ORCLOSE,
    ORDWR,
    OTRUNC,
    OWRITE,
    VERSION,
    VERSION_U,
    VERSION_UNKNOWN,
)
from .errors import (
    Eauth,
    Ebadfid,
    Ebadmode,
    Ebadname,
    Ebadoffset,
    Ecount,
    Efidinuse,
    Einternal,
    Eisdir,
    Enoauth,
    Enotattached,
    Enotdir,
    Enotopen,
    Eopen,
    Eperm,
    Etoomanyreqs,
    Ewalknodir,
    Ewalkopen,
    NinepError,
    ProtocolError,
    RemoteProtocolError,
)
from .framing import FrameReader
from .maybe import detach, is_awaitable
from .messages import (
    Message,
    Rattach,
    Rauth,
    Rclunk,
    Rcreate,
    Rerror,
    Rflush,
    Ropen,
    Rread,
    Rremove,
    Rstat,
    Rversion,
    Rwalk,
    Rwrite,
    Rwstat,
    Tattach,
    Tauth,
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
    decode_frame,
    encode,
    encode_rread,
    tread_at,
)
from .ratelimit import RateLimited
from .shares import OWNER, Shares
from .synthetic import Dir, Handle, Inode
from .ticks import tick
from .transport import Address, listen, peer_uid, set_nodelay
from .wire import write_stat

log = logging.getLogger("brasil.ninep")

# The connection whose request is being handled (tasks inherit it): lets a file hand its
# connection over to another protocol, as a joining child's does.
current_connection: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "current_connection", default=None)
# Who the request is from: the name its fid was attached with (sessions record it as `user`).
current_user: contextvars.ContextVar[str] = contextvars.ContextVar("current_user", default="")
trace_log = logging.getLogger("brasil.ninep.trace")

DEFAULT_MAX_MSIZE = 1024 * 1024 + IOHDRSZ
DEFAULT_MAX_FIDS = 4096  # per connection
DEFAULT_MAX_TOTAL_FIDS = 32768  # over every connection: about 40 MB at most
DEFAULT_MAX_PENDING = 1024
DEFAULT_MAX_CONNECTIONS = 1024  # network connections; the owner's Unix socket has its own room
UNIX_CONNECTIONS = 256
DEFAULT_HANDSHAKE_TIMEOUT = 10.0  # from connecting to a successful attach
DEFAULT_FRAME_TIMEOUT = 30.0  # for a frame that has started to arrive to finish arriving
MAX_ERROR = 1024  # characters of an error string sent back (a quoted 1 MB command would not fit)

limited = RateLimited(log)


def bad_name(name: str) -> bool:
    """A name a file may not have: empty, '.', '..', or holding '/' or NUL."""
    return name in ("", ".", "..") or "/" in name or "\0" in name


def bounded(message: str) -> str:
    return message if len(message) <= MAX_ERROR else message[:MAX_ERROR - 1] + "…"


class Authenticator(Protocol):
    def auth_node(self, uname: str, aname: str, peer: str) -> Inode: ...
    def may_attach(self, auth: Inode, uname: str, aname: str) -> bool: ...


class Fid:
    __slots__ = ("node", "handle", "omode", "uname", "dir_entries", "dir_index", "dir_offset",
                 "is_auth")

    def __init__(self, node: Inode, uname: str, is_auth: bool = False) -> None:
        self.node = node
        self.handle: Handle | None = None
        self.omode = -1  # not open
        self.uname = uname
        self.dir_entries: list[bytes] = []
        self.dir_index = 0
        self.dir_offset = 0
        self.is_auth = is_auth

    @property
    def is_open(self) -> bool:
        return self.omode >= 0


def _readable(omode: int) -> bool:
    return (omode & 3) != OWRITE


def _writable(omode: int) -> bool:
    return (omode & 3) in (OWRITE, ORDWR)


def check_open_mode(node: Inode, mode: int) -> None:
    """Plan 9 semantics over the owner's permission bits (whoever attached acts as the owner)."""
    perm = node.mode >> 6
    rw = mode & 3
    need = {0: 4, OWRITE: 2, ORDWR: 6, OEXEC: 1}[rw]
    if mode & OTRUNC:
        need |= 2
    if node.is_dir and (need & 2):
        raise NinepError(*Eisdir)
    if node.is_dir and rw == OEXEC:
        need = 4  # reading a directory is what exec on it means for open
    if perm & need != need:
        raise NinepError(*Eperm)


def loop_time() -> float:
    """The running loop's clock (time.monotonic() unless the loop is a simulated one), or the
    monotonic clock outside a loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class Server:
    """Serves one tree (``root``) to every connection, over any number of listeners."""

    def __init__(self, root: Dir, *, max_msize: int = DEFAULT_MAX_MSIZE,
                 max_fids: int = DEFAULT_MAX_FIDS, max_pending: int = DEFAULT_MAX_PENDING,
                 max_total_fids: int = DEFAULT_MAX_TOTAL_FIDS,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
                 trace: bool = False, authenticator: Authenticator | None = None) -> None:
        if max_msize < MIN_MSIZE:
            raise ValueError(f"max_msize must be at least {MIN_MSIZE}")
        self.root = root
        self.max_msize = max_msize
        self.max_fids = max_fids
        self.max_total_fids = max_total_fids
        self.max_pending = max_pending
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.frame_timeout = frame_timeout
        self.trace = trace
        self.authenticator = authenticator
        self.connections: set[Connection] = set()
        self.counts = {"net": 0, "unix": 0}  # open connections by kind, for the caps
        self.shares = Shares(max_connections, max_total_fids, max_fids)  # what one peer may take
        self.listeners: list[asyncio.AbstractServer] = []
        self._ids = itertools.count(1)
        self._sweeper: asyncio.Task[None] | None = None

    def protocol(self, authenticator: Authenticator | None = None, kind: str = "net") -> Connection:
        return Connection(self, next(self._ids), authenticator, kind)

    async def listen(self, address: Address, authenticate: bool = True) -> asyncio.AbstractServer:
        """Serve on ``address``; with ``authenticate`` False its clients attach without the
        authenticator (for a 0600 Unix socket that only the owner can reach)."""
        auth = self.authenticator if authenticate else None
        kind = "unix" if address.kind == "unix" else "net"
        listener = await listen(address, lambda: self.protocol(auth, kind))
        self.listeners.append(listener)
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        return listener

    @property
    def nfids(self) -> int:
        """Fids held over every connection."""
        return self.shares.nfids

    def refuse_connection(self, kind: str, peer: str) -> str:
        """Why a new connection of ``kind`` from ``peer`` is refused ("" if it is not)."""
        cap = UNIX_CONNECTIONS if kind == "unix" else self.max_connections
        if self.counts[kind] >= cap:
            return (f"{self.counts[kind]} connections already open (the limit; raise it with "
                    "serve --max-connections)")
        return self.shares.refuse_unattached(peer) if kind == "net" else ""

    async def _sweep(self) -> None:
        """Once a second: drop connections that never finished their handshake, or stalled in
        the middle of a frame (each holds memory and a descriptor that others need)."""
        period = max(0.05, min(1.0, self.handshake_timeout / 4, self.frame_timeout / 4))
        while True:
            await tick(period)
            now = asyncio.get_running_loop().time()
            for conn in list(self.connections):
                why = conn.overdue(now)
                if why:
                    limited.warning(f"overdue {why[:20]}", "conn %d (%s): closing: %s",
                                    conn.ident, conn.peer, why)
                    conn.abort()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for lst in self.listeners:
            lst.close()
        for conn in list(self.connections):
            conn.abort()
        for lst in self.listeners:
            try:
                await asyncio.wait_for(lst.wait_closed(), 2)
            except TimeoutError:
                pass
        self.listeners.clear()



def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel a request's task. One cancelled before it ever ran (a Tversion or a Tflush in the
    same read as the request) never awaits what it was handed: an open or a read that a file
    answers later, itself perhaps holding another. Those are closed here, or each would be
    reported as never awaited when collected."""
    _close_unstarted(task.get_coro(), outer=True)
    task.cancel()


def _close_unstarted(coro: Any, outer: bool = False) -> None:
    if not inspect.iscoroutine(coro) or inspect.getcoroutinestate(coro) != inspect.CORO_CREATED:
        return
    for value in inspect.getcoroutinelocals(coro).values():
        _close_unstarted(value)
    if not outer:  # (the task's own: its cancel ends it)
        coro.close()

class Connection(asyncio.Protocol):
    def __init__(self, server: Server, ident: int, authenticator: Authenticator | None = None,
                 kind: str = "net") -> None:
        self.server = server
        self.ident = ident
        self.kind = kind
        self.authenticator = authenticator
        self.attached = False
        self.opened = 0.0
        # when bytes last came in (a peer's sign of life), on the loop's clock (a simulated
        # loop's is virtual: brasil.sim)
        self.last_heard = loop_time()
        self.partial_since: float | None = None  # when a frame began to arrive and is not done
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader(server.max_msize)
        self.msize = server.max_msize
        self.dotu = False
        self.versioned = False
        self.fids: dict[int, Fid] = {}
        self.pending: dict[int, asyncio.Task[Any]] = {}
        self.peer = "?"
        self.peer_key = OWNER if kind == "unix" else "?"  # whose share this connection takes
        self.unsettled = False  # counted as a network connection not yet attached
        self.closed = False
        self.on_lost: list[Callable[[], None]] = []
        self._handover: Callable[[asyncio.Transport, bytes], None] | None = None
        self._uname = ""  # current_user's value while a chunk is handled
        self._handlers: dict[type, Callable[[Any], Any]] = {
            Tversion: self.t_version, Tauth: self.t_auth, Tattach: self.t_attach,
            Tflush: self.t_flush, Twalk: self.t_walk, Topen: self.t_open, Tcreate: self.t_create,
            Tread: self.t_read, Twrite: self.t_write, Tclunk: self.t_clunk,
            Tremove: self.t_remove, Tstat: self.t_stat, Twstat: self.t_wstat,
        }

    # ---- transport events ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix"
        self.peer_key = str(peer[0]) if isinstance(peer, tuple) else OWNER
        if self.kind == "unix" and not self._owner_is_peer(transport):
            return
        why = self.server.refuse_connection(self.kind, self.peer_key)
        if why:
            limited.warning(f"full {self.kind}", "conn %d (%s): refused: %s", self.ident,
                            self.peer, why)
            self.closed = True
            transport.abort()
            return
        self.server.connections.add(self)
        self.server.counts[self.kind] += 1
        if self.kind == "net":
            self.server.shares.opened(self.peer_key)
            self.unsettled = True
        self.opened = asyncio.get_running_loop().time()
        log.debug("conn %d: open from %s", self.ident, self.peer)

    def _owner_is_peer(self, transport: asyncio.Transport) -> bool:
        """A Unix socket serves the daemon's own uid only, whatever its mode or directory lets
        through: whoever attaches here runs commands as the owner, without a secret."""
        uid = peer_uid(transport)
        me = os.geteuid()
        self.peer = f"unix uid {uid}"
        if uid == me:
            return True
        limited.warning("foreign uid", "conn %d (%s): refused: only the daemon's owner (uid %d) "
                        "may use its Unix socket; others connect over TCP with the cluster secret",
                        self.ident, self.peer, me)
        self.closed = True
        transport.abort()
        return False

    def overdue(self, now: float) -> str:
        """Why this connection has waited too long, or "" if it has not."""
        if not self.attached and now - self.opened > self.server.handshake_timeout:
            return f"no attach within {self.server.handshake_timeout:g}s of connecting"
        if self.partial_since is not None and now - self.partial_since > self.server.frame_timeout:
            return f"a frame began arriving {self.server.frame_timeout:g}s ago and is not complete"
        return ""

    def _forget(self) -> None:
        if self in self.server.connections:
            self.server.connections.discard(self)
            self.server.counts[self.kind] -= 1
            self._settle()

    def _settle(self) -> None:
        """No longer a connection waiting to attach, for the shares (attached, or gone)."""
        if self.unsettled:
            self.unsettled = False
            self.server.shares.settled(self.peer_key)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._forget()
        self._reset()
        for cb in self.on_lost:
            cb()
        log.debug("conn %d: closed", self.ident)

    def hand_over_after_reply(self, take: Callable[[asyncio.Transport, bytes], None]) -> None:
        """Once the current request is answered, stop serving this connection and give its
        transport (and any bytes already read) to ``take``."""
        self._handover = take

    def _hand_over(self) -> None:
        take, self._handover = self._handover, None
        assert take is not None and self.transport is not None
        rest = bytes(self.reader._buf[self.reader._pos:])
        self.closed = True
        self._forget()
        self._reset()
        take(self.transport, rest)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_heard = asyncio.get_running_loop().time()
        self.reader.feed(data)
        got = False
        # Who is asking, for the handlers (set once per chunk, the user only when it changes:
        # per request, the two variables cost a tenth of a 1-byte read's whole handling).
        token, user = current_connection.set(self), current_user.set("")
        self._uname = ""
        reader = self.reader
        try:
            while not self.closed:
                frame = reader.next_frame()
                if frame is None:
                    break
                got = True
                t = tread_at(*frame)
                if t is None:
                    self.dispatch(decode_frame(*frame, reader.dotu))
                elif not self._read_now(*t):
                    self.dispatch(Tread(*t))
                if self._handover is not None:
                    self._hand_over()
                    return
        except ProtocolError as e:
            limited.warning("protocol", "conn %d (%s): closing: %s", self.ident, self.peer, e)
            self.closed = True
            self.abort()
            return
        finally:
            current_connection.reset(token)
            current_user.reset(user)
        if self.reader.buffered:
            if got or self.partial_since is None:
                self.partial_since = asyncio.get_running_loop().time()
        else:
            self.partial_since = None

    # ---- request plumbing ----

    def dispatch(self, msg: Message) -> None:
        if self.server.trace:
            trace_log.info("conn %d <- %s", self.ident, text.format(msg, 64))
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise RemoteProtocolError(f"{type(msg).__name__} is not a request a client may send")
        tag = msg.tag
        if tag in self.pending:
            raise RemoteProtocolError(f"tag {tag} reused while its request is still in flight")
        if not self.versioned and not isinstance(msg, Tversion):
            self.send(Rerror(tag, *self._err(Enotattached)))
            return
        if len(self.pending) >= self.server.max_pending and not isinstance(msg, Tflush):
            self.send(Rerror(tag, *self._err(Etoomanyreqs)))
            return
        fid = self.fids.get(getattr(msg, "fid", NOFID))
        uname = fid.uname if fid is not None else ""
        if uname != self._uname:
            current_user.set(uname)
            self._uname = uname
        try:
            result = handler(msg)
        except Exception as e:  # noqa: BLE001 - a bug in a handler must not take the daemon down
            self._failed(tag, msg, e)
            return
        if is_awaitable(result):
            self._pend(tag, msg, result)
        elif result is not None:
            self.send(result)

    def _failed(self, tag: int, msg: Message, e: Exception) -> None:
        if isinstance(e, NinepError):
            self.send(Rerror(tag, e.message, e.errno if self.dotu else 0))
        elif isinstance(e, OSError):  # the file system changed under us (a race): an answer
            self.send(self._os_error(tag, e))
        else:
            self.send(self._internal(tag, msg, e))

    def _pend(self, tag: int, msg: Message, result: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(result)
        self.pending[tag] = task
        task.add_done_callback(lambda t: self._finished(tag, msg, t))

    def _read_now(self, tag: int, fid: int, offset: int, count: int) -> bool:
        """Answer a Tread of an open file without message objects, as dispatch and t_read would,
        when nothing unusual applies (the common case: a third of a read's handling saved);
        False, having done nothing, leaves it to them."""
        f = self.fids.get(fid)
        server = self.server
        if (f is None or f.omode < 0 or (f.omode & 3) == OWRITE or f.node.is_dir
                or f.uname != self._uname or tag in self.pending or not self.versioned
                or server.trace or len(self.pending) >= server.max_pending):
            return False
        h = f.handle
        if h is None:  # never once open (omode >= 0); says so to mypy without a call
            return False
        n = min(count, self.msize - IOHDRSZ)
        try:
            data = h.read(offset, n)
        except Exception as e:  # noqa: BLE001 - as in dispatch
            self._failed(tag, Tread(tag, fid, offset, count), e)
            return True
        if not hasattr(data, "__await__"):  # is_awaitable inlined; mypy narrows this to bytes
            if not self.closed:
                self._write_frame(encode_rread(tag, data if len(data) <= n else data[:n]))
        else:
            pending = cast("Awaitable[bytes]", data)
            self._pend(tag, Tread(tag, fid, offset, count), self._read_async(tag, n, pending))
        return True

    def _finished(self, tag: int, msg: Message, task: asyncio.Task[Any]) -> None:
        if self.pending.get(tag) is not task:
            return  # flushed, or the connection was reset: the reply must not be sent
        del self.pending[tag]
        if task.cancelled():
            self.send(Rerror(tag, *self._err(("interrupted", _errno.EINTR))))
            return
        e = task.exception()
        if e is None:
            self.send(task.result())
        elif isinstance(e, NinepError):
            self.send(Rerror(tag, e.message, e.errno if self.dotu else 0))
        elif isinstance(e, OSError):
            self.send(self._os_error(tag, e))
        else:
            self.send(self._internal(tag, msg, e))

    def _internal(self, tag: int, msg: Message, e: BaseException) -> Rerror:
        """A bug of ours: logged with its traceback (a few per minute per kind, so a client that
        found one cannot flood the log with it), answered as an internal error."""
        limited.error(f"{type(msg).__name__} {type(e).__name__}", "conn %d: %s failed "
                      "unexpectedly", self.ident, text.format(msg, 64)[:300],
                      exc_info=(type(e), e, e.__traceback__))
        return Rerror(tag, bounded(f"{Einternal[0]}: {type(e).__name__}: {e}"),
                      Einternal[1] if self.dotu else 0)

    def _os_error(self, tag: int, e: OSError) -> Rerror:
        where = f"{e.filename}: " if isinstance(e.filename, str) else ""
        return Rerror(tag, bounded(f"{where}{e.strerror or e}"),
                      (e.errno or _errno.EIO) if self.dotu else 0)

    def _err(self, e: tuple[str, int]) -> tuple[str, int]:
        return e[0], e[1] if self.dotu else 0

    def send(self, msg: Message) -> None:
        if self.closed or self.transport is None:
            return
        if type(msg) is Rerror and len(msg.ename) > MAX_ERROR:
            msg = Rerror(msg.tag, bounded(msg.ename), msg.errno)
        if self.server.trace:
            trace_log.info("conn %d -> %s", self.ident, text.format(msg, 64))
        self._write_frame(encode(msg, self.dotu))

    def _write_frame(self, frame: bytes) -> None:
        """Each reply goes out as soon as it is made. Joining a chunk's replies into one write
        (as once here) saved system calls but made client and server take turns: with 16
        requests in flight, 111-115k round trips/s over a Unix socket against 217-247k written
        at once, and 112-113k against 168-170k over TCP (bench/ninep_roundtrips.py)."""
        if self.transport is not None:
            self.transport.write(frame)

    def _fid(self, fid: int) -> Fid:
        f = self.fids.get(fid)
        if f is None:
            raise NinepError(*Ebadfid)
        return f

    def _new_fid(self, fid: int, node: Inode, uname: str, is_auth: bool = False) -> Fid:
        if fid == NOFID:
            raise NinepError(*Ebadfid)
        if fid in self.fids:
            raise NinepError(*Efidinuse)
        refused = self.server.shares.refuse_fid(self.peer_key, len(self.fids))
        if refused is not None:
            raise NinepError(*refused)
        self.server.shares.took_fids(self.peer_key, 1)
        f = self.fids[fid] = Fid(node, uname, is_auth)
        return f

    def _drop_fid(self, fid: int) -> Fid | None:
        f = self.fids.pop(fid, None)
        if f is not None:
            self.server.shares.took_fids(self.peer_key, -1)
        return f

    def _reset(self) -> None:
        """Forget every request and fid (Tversion, or the connection ended)."""
        for task in self.pending.values():
            _cancel(task)
        self.pending.clear()
        fids, self.fids = self.fids, {}
        if fids:
            self.server.shares.took_fids(self.peer_key, -len(fids))
        for f in fids.values():
            self._release(f)

    def _release(self, f: Fid) -> Any:
        """Clunk a fid's open handle; returns an awaitable if the handle needs to wait."""
        h, f.handle = f.handle, None
        if h is None:
            return None
        try:
            r = h.clunk()
        except Exception:  # noqa: BLE001
            log.exception("conn %d: clunk handler failed", self.ident)
            return None
        if is_awaitable(r):
            return detach(r)
        return None

    # ---- the requests ----

    def t_version(self, m: Tversion) -> Rversion:
        self._reset()
        if m.msize < MIN_MSIZE:
            raise NinepError(f"msize {m.msize} too small; at least {MIN_MSIZE} is needed")
        self.msize = min(m.msize, self.server.max_msize)
        self.reader.msize = self.msize
        if m.version == VERSION_U:
            version = VERSION_U
        elif m.version.startswith(VERSION):  # "9P2000" or an unknown "9P2000.x": 9P2000
            version = VERSION
        else:
            version = VERSION_UNKNOWN
        self.dotu = version == VERSION_U
        self.reader.dotu = self.dotu
        self.versioned = version != VERSION_UNKNOWN
        return Rversion(m.tag, self.msize, version)

    def t_auth(self, m: Tauth) -> Rauth:
        auth = self.authenticator
        if auth is None:
            raise NinepError(*Enoauth)
        node = auth.auth_node(m.uname, m.aname, self.peer)
        f = self._new_fid(m.afid, node, m.uname, is_auth=True)
        f.handle = cast(Handle, node.open(ORDWR))  # an auth file opens at once
        f.omode = ORDWR
        return Rauth(m.tag, node.qid)

    def t_attach(self, m: Tattach) -> Rattach:
        auth = self.authenticator
        if auth is not None:
            a = self.fids.get(m.afid)
            if a is None or not a.is_auth or not auth.may_attach(a.node, m.uname, m.aname):
                limited.warning("attach refused", "conn %d (%s): attach refused for %r: not "
                                "authenticated", self.ident, self.peer, m.uname[:64])
                raise NinepError(*Eauth)
        root = self.server.root
        self._new_fid(m.fid, root, m.uname)
        self.attached = True
        self._settle()
        return Rattach(m.tag, root.qid)

    def t_flush(self, m: Tflush) -> Rflush:
        task = self.pending.pop(m.oldtag, None)
        if task is not None:
            _cancel(task)
        return Rflush(m.tag)

    def t_walk(self, m: Twalk) -> Any:
        f = self._fid(m.fid)
        if f.is_open:
            raise NinepError(*Ewalkopen)
        if m.newfid != m.fid:
            if m.newfid in self.fids:
                raise NinepError(*Efidinuse)
            if m.newfid == NOFID:
                raise NinepError(*Ebadfid)
        if not m.wname:
            if m.newfid != m.fid:
                self._new_fid(m.newfid, f.node, f.uname)
            return Rwalk(m.tag, ())
        return self._walk_from(m, f, f.node, 0, [])

    def _walk_from(self, m: Twalk, f: Fid, node: Inode, i: int, qids: list[Any]) -> Any:
        names = m.wname
        while i < len(names):
            name = names[i]
            try:
                if not node.is_dir:
                    raise NinepError(*(Ewalknodir if i == 0 else Enotdir))
                if not node.mode & 0o100:
                    raise NinepError(*Eperm)
                if name == "..":
                    nxt: Any = node.parent or node
                elif bad_name(name):
                    raise NinepError(*Ebadname)
                else:
                    batch = getattr(node, "walk_path", None)
                    if batch is not None:  # a remote directory: the rest of the walk in one trip
                        run = []
                        for n in names[i:]:
                            if bad_name(n):
                                break
                            run.append(n)
                        return self._walk_batch(m, f, i, qids, batch(run), len(run))
                    nxt = cast(Dir, node).walk(name)  # is_dir: a Dir
                    if is_awaitable(nxt):
                        return self._walk_async(m, f, node, i, qids, nxt)
            except NinepError:
                if i == 0:
                    raise
                return Rwalk(m.tag, tuple(qids))
            node = nxt
            qids.append(node.qid)
            i += 1
        self._bind_walk(m, f, node)
        return Rwalk(m.tag, tuple(qids))

    async def _walk_async(self, m: Twalk, f: Fid, node: Inode, i: int, qids: list[Any],
                          pending: Awaitable[Inode]) -> Rwalk:
        try:
            nxt = await pending
        except NinepError:
            if i == 0:
                raise
            return Rwalk(m.tag, tuple(qids))
        qids.append(nxt.qid)
        r = self._walk_from(m, f, nxt, i + 1, qids)
        return await r if is_awaitable(r) else r

    async def _walk_batch(self, m: Twalk, f: Fid, i: int, qids: list[Any], pending: Any,
                          n: int) -> Rwalk:
        try:
            got, node = await pending
        except NinepError:
            if i == 0:
                raise
            return Rwalk(m.tag, tuple(qids))
        qids.extend(got)
        if node is None:
            return Rwalk(m.tag, tuple(qids))
        r = self._walk_from(m, f, node, i + len(got), qids)
        return await r if is_awaitable(r) else r

    def _bind_walk(self, m: Twalk, f: Fid, node: Inode) -> None:
        if m.newfid == m.fid:
            if m.fid not in self.fids:  # clunked while the walk waited
                raise NinepError(*Ebadfid)
            f.node = node
        else:
            self._new_fid(m.newfid, node, f.uname)

    def t_open(self, m: Topen) -> Any:
        f = self._fid(m.fid)
        if f.is_open:
            raise NinepError(*Eopen)
        if m.mode & ~(3 | OTRUNC | ORCLOSE):
            raise NinepError(f"bad open mode {m.mode:#x}", _errno.EINVAL)
        check_open_mode(f.node, m.mode)
        if m.mode & ORCLOSE:
            self._check_removable(f.node)
        if f.node.is_dir:
            f.omode = m.mode
            return Ropen(m.tag, f.node.qid, self.msize - IOHDRSZ)
        h = f.node.open(m.mode)
        if is_awaitable(h):
            return self._open_async(m, f, h)
        return self._opened(m, f, h)

    async def _open_async(self, m: Topen | Tcreate, f: Fid, pending: Awaitable[Handle]) -> Any:
        return self._opened(m, f, await pending)

    def _opened(self, m: Topen | Tcreate, f: Fid, h: Handle) -> Ropen | Rcreate:
        if self.fids.get(m.fid) is not f:  # clunked while opening: do not leak the handle
            r = h.clunk()
            if is_awaitable(r):
                detach(r)
            raise NinepError(*Ebadfid)
        f.handle = h
        f.omode = m.mode
        cls = Ropen if isinstance(m, Topen) else Rcreate
        return cls(m.tag, f.node.qid, self.msize - IOHDRSZ)

    def _check_removable(self, node: Inode) -> None:
        parent = node.parent
        if parent is None or not parent.mode & 0o200:
            raise NinepError(*Eperm)

    def t_create(self, m: Tcreate) -> Any:
        f = self._fid(m.fid)
        if f.is_open:
            raise NinepError(*Eopen)
        d = f.node
        if not isinstance(d, Dir):
            raise NinepError(*Enotdir)
        if not d.mode & 0o200:
            raise NinepError(*Eperm)
        if bad_name(m.name):
            raise NinepError(*Ebadname)
        r = d.create(m.name, m.perm, m.mode)
        if is_awaitable(r):
            return self._create_async(m, f, r)
        return self._created(m, f, r)

    async def _create_async(self, m: Tcreate, f: Fid, pending: Awaitable[Inode]) -> Any:
        r = self._created(m, f, await pending)
        return await r if is_awaitable(r) else r

    def _created(self, m: Tcreate, f: Fid, node: Inode) -> Any:
        f.node = node
        if node.is_dir:
            f.omode = m.mode
            return Rcreate(m.tag, node.qid, self.msize - IOHDRSZ)
        h = node.open(m.mode)
        if is_awaitable(h):
            return self._open_async(m, f, h)
        return self._opened(m, f, h)

    def t_read(self, m: Tread) -> Any:
        f = self._fid(m.fid)
        if not f.is_open:
            raise NinepError(*Enotopen)
        if not _readable(f.omode):
            raise NinepError(*Ebadmode)
        count = min(m.count, self.msize - IOHDRSZ)
        if f.node.is_dir:
            return self._read_dir(m, f, count)
        assert f.handle is not None
        data = f.handle.read(m.offset, count)
        if is_awaitable(data):
            return self._read_async(m.tag, count, data)
        return Rread(m.tag, data if len(data) <= count else data[:count])

    async def _read_async(self, tag: int, count: int, pending: Awaitable[bytes]) -> Rread:
        data = await pending
        return Rread(tag, data if len(data) <= count else data[:count])

    def _read_dir(self, m: Tread, f: Fid, count: int) -> Any:
        if m.offset == 0:
            kids = cast(Dir, f.node).children()  # is_dir: a Dir
            stats = None if is_awaitable(kids) else [k.stat() for k in kids]
            if stats is None or any(is_awaitable(st) for st in stats):
                return self._read_dir_async(m, f, count, kids, stats)
            self._snapshot_dir(f, stats)
        elif m.offset != f.dir_offset:
            raise NinepError(*Ebadoffset)
        return self._pack_dir(m, f, count)

    async def _read_dir_async(self, m: Tread, f: Fid, count: int, kids: Any,
                              stats: list[Any] | None) -> Rread:
        """A directory whose listing or some of whose entries' stats must wait (remote ones)."""
        if stats is None:
            stats = [k.stat() for k in await kids]
        self._snapshot_dir(f, [await st if is_awaitable(st) else st for st in stats])
        return self._pack_dir(m, f, count)

    def _snapshot_dir(self, f: Fid, stats: list[Any]) -> None:
        f.dir_entries = [write_stat(st, self.dotu) for st in stats]
        f.dir_index = f.dir_offset = 0

    def _pack_dir(self, m: Tread, f: Fid, count: int) -> Rread:
        out, used, i = [], 0, f.dir_index
        while i < len(f.dir_entries) and used + len(f.dir_entries[i]) <= count:
            out.append(f.dir_entries[i])
            used += len(f.dir_entries[i])
            i += 1
        if not out and i < len(f.dir_entries):
            raise NinepError(*Ecount)
        f.dir_index = i
        f.dir_offset += used
        return Rread(m.tag, b"".join(out))

    def t_write(self, m: Twrite) -> Any:
        f = self._fid(m.fid)
        if not f.is_open:
            raise NinepError(*Enotopen)
        if not _writable(f.omode):
            raise NinepError(*Ebadmode)
        assert f.handle is not None
        n = f.handle.write(m.offset, m.data)
        if is_awaitable(n):
            return self._write_async(m.tag, n)
        return Rwrite(m.tag, n)

    async def _write_async(self, tag: int, pending: Awaitable[int]) -> Rwrite:
        return Rwrite(tag, await pending)

    def t_clunk(self, m: Tclunk) -> Any:
        f = self._drop_fid(m.fid)
        if f is None:
            raise NinepError(*Ebadfid)
        waiting = self._release(f)
        if f.omode >= 0 and f.omode & ORCLOSE:
            return self._remove_node(m.tag, f.node, Rclunk, waiting)
        if waiting is not None:
            return self._after(waiting, Rclunk(m.tag))
        return Rclunk(m.tag)

    async def _after(self, waiting: Any, reply: Message) -> Message:
        await waiting
        return reply

    def t_remove(self, m: Tremove) -> Any:
        f = self._drop_fid(m.fid)  # the fid is clunked even when the remove fails
        if f is None:
            raise NinepError(*Ebadfid)
        waiting = self._release(f)
        return self._remove_node(m.tag, f.node, Rremove, waiting)

    def _remove_node(self, tag: int, node: Inode, reply: type, waiting: Any) -> Any:
        self._check_removable(node)
        r = node.remove()
        if is_awaitable(r) or waiting is not None:
            async def finish() -> Message:
                if waiting is not None:
                    await waiting
                if is_awaitable(r):
                    await r
                return reply(tag)
            return finish()
        return reply(tag)

    def t_stat(self, m: Tstat) -> Any:
        f = self._fid(m.fid)
        st = f.node.stat()
        if is_awaitable(st):
            return self._stat_async(m.tag, st)
        return Rstat(m.tag, st)

    async def _stat_async(self, tag: int, pending: Any) -> Rstat:
        return Rstat(tag, await pending)

    def t_wstat(self, m: Twstat) -> Any:
        f = self._fid(m.fid)
        if m.stat.name and m.stat.name != f.node.name and bad_name(m.stat.name):
            raise NinepError(*Ebadname)
        r = f.node.wstat(m.stat)
        if is_awaitable(r):
            return self._after(r, Rwstat(m.tag))
        return Rwstat(m.tag)
