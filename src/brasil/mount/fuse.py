"""The FUSE side of `brasil mount`: path callbacks turned into 9P requests, and mount/umount.

Why mfusepy (ctypes over libfuse3's high-level, path-based API) rather than pyfuse3: pyfuse3 needs
trio and a compiled extension, and its low-level inode API would make us keep an inode table that
9P does not need. mfusepy's callbacks receive paths, which map one-to-one onto 9P walks from the
attach root, and libfuse runs them in a pool of worker threads: a blocking stream read (``cat
stdio`` while the session's process has not printed yet) holds one worker while the others serve
every other request. The 9P client is asyncio, so the threads meet it through one event loop in a
background thread (:class:`Bridge`); each callback submits a coroutine with
``asyncio.run_coroutine_threadsafe`` and waits for it.

Files are opened with ``direct_io`` (see :mod:`brasil.mount`): no page cache, no cap at the stat
length, one Tread per read(2), one Twrite per write(2) (up to the iounit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import itertools
import logging
import os
import select
import shutil
import signal
import stat as statmod
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import mfusepy
from mfusepy import FuseOSError

from ..ninep import errors as nerrors
from ..ninep.client import AuthFn, Client, File
from ..ninep.constants import DMDIR, NONUNAME, ORDWR, OREAD, OTRUNC, OWRITE
from ..ninep.errors import NinepError, ProtocolError
from ..ninep.private import open_private
from ..ninep.transport import Address
from ..ninep.wire import Qid, Stat

log = logging.getLogger("brasil.mount")
T = TypeVar("T")

# libfuse's worker pool: a blocked stream read holds a worker, so allow many; keep a few idle.
MAX_THREADS = 256
MAX_IDLE_THREADS = 16
POLL_INTERRUPT = 0.2  # seconds between checks whether the kernel interrupted a waiting request
READY = b"\0brasil-mount-ready\n"  # the mount process's "mount is live" line to its parent


class MountError(Exception):
    """Mounting or unmounting cannot go on; the message says why and what to do."""


# ---- errors ---------------------------------------------------------------------------------------

# For servers speaking plain 9P2000, whose Rerror carries only text: errno by Plan 9 error string.
_ERRNO_BY_TEXT: dict[str, int] = {
    v[0]: v[1] for k, v in vars(nerrors).items()
    if k.startswith("E") and isinstance(v, tuple) and len(v) == 2 and v[1] != errno.EIO
}
_ERRNO_BY_TEXT.update({"directory not empty": errno.ENOTEMPTY, "file not found": errno.ENOENT,
                       "no such file or directory": errno.ENOENT, "read-only file system": errno.EROFS,
                       "not empty": errno.ENOTEMPTY})


def errno_of(e: BaseException) -> int:
    """The errno a failed request means: the server's when it sent one, else guessed from its text."""
    if isinstance(e, NinepError):
        if e.errno and e.errno != errno.EIO:
            return e.errno
        text = e.message.lower()
        for s, num in _ERRNO_BY_TEXT.items():
            if text.endswith(s):
                return num
        return errno.EIO
    if isinstance(e, OSError) and not isinstance(e, ConnectionError) and e.errno:
        return e.errno
    return errno.EIO


def no_change(**fields: Any) -> Stat:
    """A wstat message that changes only ``fields`` (stat(5): ~0 numbers and empty strings)."""
    base: dict[str, Any] = dict(type=0xFFFF, dev=0xFFFFFFFF,
                                qid=Qid(0xFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF), mode=0xFFFFFFFF,
                                atime=0xFFFFFFFF, mtime=0xFFFFFFFF, length=0xFFFFFFFFFFFFFFFF,
                                name="", uid="", gid="", muid="", extension="",
                                n_uid=NONUNAME, n_gid=NONUNAME, n_muid=NONUNAME)
    base.update(fields)
    return Stat(**base)


def _libfuse_interrupted() -> Callable[[], int]:
    """``fuse_interrupted()``: whether the kernel interrupted the request this thread serves."""
    lib = getattr(mfusepy, "_libfuse", None)
    fn = getattr(lib, "fuse_interrupted", None)
    if fn is None:
        return lambda: 0
    fn.restype = ctypes.c_int
    fn.argtypes = []
    return fn


fuse_interrupted = _libfuse_interrupted()


# ---- the event loop thread ------------------------------------------------------------------------

class Bridge:
    """An asyncio loop in a daemon thread that owns one 9P connection; other threads call into it.

    A lost connection is redialled by the next request (files open on the old one fail with EIO).
    """

    def __init__(self, address: Address, *, uname: str | None = None, auth: AuthFn | None = None,
                 trace: bool = False, timeout: float = 10.0) -> None:
        self.address = address
        self.uname = uname
        self.auth = auth
        self.trace = trace
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="brasil-9p", daemon=True)
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        """Start the loop and dial the daemon; raises (ConnectionError, NinepError…) if it cannot."""
        self.thread.start()
        try:
            self.call(self.client(), interruptible=False)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        if self._client is not None:
            try:
                self.call(self._client.close(), interruptible=False, timeout=5)
            except Exception:  # noqa: BLE001 - closing a dead connection is not news
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def client(self) -> Client:
        c = self._client
        if c is not None and not c.closed:
            return c
        async with self._lock:
            if self._client is None or self._client.closed:
                again = self._client is not None
                self._client = await Client.connect(self.address, uname=self.uname, dotu=True,
                                                    auth=self.auth, trace=self.trace,
                                                    timeout=self.timeout)
                if again:
                    log.warning("reconnected to %s", self.address)
            return self._client

    def call(self, coro: Coroutine[Any, Any, T], *, interruptible: bool = True,
             timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for it. In a FUSE worker, a request the kernel
        interrupts is cancelled (the client sends Tflush) and fails with EINTR."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        if not interruptible:
            return fut.result(timeout)
        while True:
            done, _ = concurrent.futures.wait([fut], POLL_INTERRUPT)
            if done:
                return fut.result()
            if fuse_interrupted():
                fut.cancel()
                raise FuseOSError(errno.EINTR)


# ---- the file system ------------------------------------------------------------------------------

def _open_mode(flags: int) -> int:
    mode = {os.O_RDONLY: OREAD, os.O_WRONLY: OWRITE, os.O_RDWR: ORDWR}.get(flags & os.O_ACCMODE, ORDWR)
    if flags & os.O_TRUNC:
        mode |= OTRUNC
    return mode


class NinepFS(mfusepy.Operations):
    """FUSE path operations over one 9P connection (mount with ``raw_fi=True``)."""

    use_ns = True  # times in integer nanoseconds (mfusepy warns otherwise)

    def __init__(self, bridge: Bridge, on_ready: Callable[[], None] | None = None) -> None:
        self.bridge = bridge
        self.on_ready = on_ready
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.files: dict[int, File] = {}
        self._handles = itertools.count(1)
        self._lock = threading.Lock()

    # -- plumbing --

    def _call(self, coro: Coroutine[Any, Any, T], what: str | None = None) -> T:
        """Run a 9P coroutine for a FUSE callback; failures become FuseOSError. ``what`` names a
        write whose refusal is logged with the server's words (FUSE itself passes on only errno)."""
        try:
            return self.bridge.call(coro)
        except FuseOSError:
            raise
        except (TimeoutError, NinepError, ConnectionError, ProtocolError, OSError) as e:
            num = errno_of(e)
            if what is not None:
                log.warning("%s: %s", what, e)
            elif num not in (errno.ENOENT,):
                log.debug("9P request failed (%s): %s", errno.errorcode.get(num, num), e)
            if isinstance(e, (ConnectionError, ProtocolError)):
                log.warning("%s: %s", self.bridge.address, e)
            raise FuseOSError(num) from None

    async def _c(self) -> Client:
        return await self.bridge.client()

    def _register(self, f: File, fi: Any) -> None:
        with self._lock:
            fh = next(self._handles)
            self.files[fh] = f
        fi.fh = fh
        fi.direct_io = 1  # see the module docstring: no cache, no size cap, short reads pass through
        fi.keep_cache = 0

    def _file(self, fi: Any) -> File:
        f = self.files.get(getattr(fi, "fh", 0))
        if f is None:
            raise FuseOSError(errno.EBADF)
        return f

    def _attrs(self, st: Stat) -> dict[str, Any]:
        is_dir = bool(st.mode & DMDIR)
        ns = 1_000_000_000
        return {
            "st_mode": (statmod.S_IFDIR if is_dir else statmod.S_IFREG) | (st.mode & 0o777),
            "st_nlink": 2 if is_dir else 1,
            "st_size": st.length,
            "st_blocks": (st.length + 511) // 512,
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_atime": st.atime * ns,
            "st_mtime": st.mtime * ns,
            "st_ctime": st.mtime * ns,
        }

    # -- lifecycle --

    def init_with_config(self, conn_info: Any, config_3: Any) -> None:
        if config_3 is not None:
            # The namespace changes under the kernel (sessions appear and go): never cache.
            config_3.entry_timeout = 0.0
            config_3.negative_timeout = 0.0
            config_3.attr_timeout = 0.0
            # An unlinked open file must not be renamed to .fuse_hidden* on a synthetic server.
            config_3.hard_remove = 1
            config_3.direct_io = 1
        if self.on_ready is not None:
            self.on_ready()

    # -- metadata --

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        f = self.files.get(getattr(fh, "fh", 0)) if fh is not None else None
        if f is not None and not f.client.closed:
            return self._attrs(self._call(f.stat()))
        return self._attrs(self._call(self._stat(path)))

    async def _stat(self, path: str) -> Stat:
        return await (await self._c()).stat(path)

    def readdir(self, path: str, fh: int) -> list[Any]:
        stats = self._call(self._ls(path))
        out: list[Any] = [(".", {"st_mode": statmod.S_IFDIR}, 0), ("..", {"st_mode": statmod.S_IFDIR}, 0)]
        for st in stats:
            kind = statmod.S_IFDIR if st.mode & DMDIR else statmod.S_IFREG
            out.append((st.name, {"st_mode": kind | (st.mode & 0o777)}, 0))
        return out

    async def _ls(self, path: str) -> list[Stat]:
        return await (await self._c()).ls(path)

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    def chmod(self, path: str, mode: int) -> int:
        self._call(self._chmod(path, mode))
        return 0

    async def _chmod(self, path: str, mode: int) -> None:
        c = await self._c()
        st = await c.stat(path)
        await c.wstat(path, no_change(mode=(st.mode & ~0o777) | (mode & 0o777)))

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        if path is None:
            raise FuseOSError(errno.EBADF)
        self._call(self._wstat(path, no_change(length=length)))
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        # `touch` must work on synthetic files, so a refusal is not an error: times are advisory.
        mtime = (times[1] if times else time.time_ns()) // 1_000_000_000
        try:
            self._call(self._wstat(path, no_change(mtime=mtime)))
        except FuseOSError as e:
            if e.errno in (errno.ENOENT, errno.EINTR):
                raise
        return 0

    async def _wstat(self, path: str, st: Stat) -> None:
        await (await self._c()).wstat(path, st)

    def rename(self, old: str, new: str) -> int:
        if os.path.dirname(old) != os.path.dirname(new):
            raise FuseOSError(errno.EXDEV)  # 9P renames only within a directory; mv copies instead
        self._call(self._rename(old, new))
        return 0

    async def _rename(self, old: str, new: str) -> None:
        c = await self._c()
        try:
            target: Stat | None = await c.stat(new)
        except NinepError as e:
            if errno_of(e) != errno.ENOENT:
                raise
            target = None
        if target is not None:  # rename(2) replaces the target; 9P wstat refuses: remove it first
            src = await c.stat(old)
            if src.qid == target.qid:
                return
            if (src.mode & DMDIR) and not (target.mode & DMDIR):
                raise NinepError(nerrors.Enotdir[0], errno.ENOTDIR)
            if not (src.mode & DMDIR) and (target.mode & DMDIR):
                raise NinepError(nerrors.Eisdir[0], errno.EISDIR)
            await c.remove(new)
        await c.wstat(old, no_change(name=os.path.basename(new)))

    # -- creating and removing --

    def mkdir(self, path: str, mode: int) -> int:
        self._call(self._mkdir(path, mode))
        return 0

    async def _mkdir(self, path: str, mode: int) -> None:
        f = await (await self._c()).create(path, DMDIR | (mode & 0o777), OREAD)
        await f.close()

    def unlink(self, path: str) -> int:
        self._call(self._remove(path))
        return 0

    def rmdir(self, path: str) -> int:
        self._call(self._remove(path))
        return 0

    async def _remove(self, path: str) -> None:
        await (await self._c()).remove(path)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        omode = _open_mode(fi.flags) & ~OTRUNC  # a new file is empty anyway
        f = self._call(self._create(path, mode & 0o777, omode))
        self._register(f, fi)
        return 0

    async def _create(self, path: str, perm: int, omode: int) -> File:
        return await (await self._c()).create(path, perm, omode)

    # -- open files --

    def open(self, path: str, fi: Any) -> int:
        f = self._call(self._open(path, _open_mode(fi.flags)))
        self._register(f, fi)
        return 0

    async def _open(self, path: str, mode: int) -> File:
        return await (await self._c()).open(path, mode)

    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        return self._call(self._file(fh).read(size, offset))

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        f = self._file(fh)
        return self._call(f.write(data, offset), what=f"write to {f.path}")

    def flush(self, path: str, fh: Any) -> int:
        return 0  # close(2) of one of several descriptors: the fid stays until release

    def fsync(self, path: str, datasync: int, fh: Any) -> int:
        return 0  # every write already went to the server

    def release(self, path: str, fh: Any) -> int:
        with self._lock:
            f = self.files.pop(getattr(fh, "fh", 0), None)
        if f is not None:
            try:
                self.bridge.call(f.close(), interruptible=False)
            except Exception as e:  # noqa: BLE001 - release cannot fail; the fid is gone either way
                log.debug("clunk of %s failed: %s", f.path, e)
        return 0

    def destroy(self, path: str) -> None:
        with self._lock:
            files, self.files = list(self.files.values()), {}
        for f in files:
            try:
                self.bridge.call(f.close(), interruptible=False, timeout=2)
            except Exception:  # noqa: BLE001
                pass


# ---- mounting -------------------------------------------------------------------------------------

def _unescape_mount_path(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounted(path: str) -> bool:
    """Whether ``path`` is a mount point per /proc/self/mounts (true for a dead FUSE mount too).

    Never touches ``path`` itself (only its parent is resolved): a stat of a FUSE root waits for
    the mount process, which may be waiting for the caller's own event loop."""
    path = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))),
                        os.path.basename(os.path.abspath(path)))
    try:
        with open("/proc/self/mounts") as f:
            return any(_unescape_mount_path(line.split()[1]) == path for line in f if line.strip())
    except OSError:
        return os.path.ismount(path)


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError("FUSE is not available here: /dev/fuse is missing (load the fuse kernel "
                         "module, or give the container --device /dev/fuse)")
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        raise MountError("fusermount3 is not installed (it comes with the fuse3 package); "
                         "without it only root can mount")


def check_mountpoint(path: str) -> str:
    """The absolute mount point, or a MountError saying what is wrong with ``path``."""
    p = os.path.abspath(path)
    if mounted(p):
        raise MountError(f"{path}: already a mount point; `brasil umount {path}` first")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise MountError(f"{path}: no such directory; create it first (mkdir {path})") from None
    except OSError as e:
        raise MountError(f"{path}: {e.strerror}") from None
    if not statmod.S_ISDIR(st.st_mode):
        raise MountError(f"{path} is not a directory")
    try:
        if os.listdir(p):
            raise MountError(f"{path} is not an empty directory; mount on an empty one")
    except OSError as e:
        raise MountError(f"{path}: {e.strerror}") from None
    return p


def _fuse_kwargs(debug: bool) -> dict[str, Any]:
    return dict(raw_fi=True, foreground=True, debug=debug, fsname="brasil", subtype="brasil",
                max_threads=MAX_THREADS, max_idle_threads=MAX_IDLE_THREADS)


def serve(mountpoint: str, address: Address, *, auth: AuthFn | None = None, debug: bool = False,
          trace: bool = False, on_ready: Callable[[], None] | None = None) -> None:
    """Dial the daemon, mount, and serve until unmounted (or SIGINT/SIGTERM) — in this process."""
    bridge = Bridge(address, auth=auth, trace=trace)
    bridge.start()  # the daemon must answer before anything is mounted
    try:
        mfusepy.FUSE(NinepFS(bridge, on_ready), mountpoint, **_fuse_kwargs(debug))
    except RuntimeError as e:
        raise MountError(f"mounting {mountpoint} failed (libfuse status {e}); see the message "
                         "above") from None
    finally:
        bridge.stop()


def mount_foreground(path: str, address: Address, *, auth: AuthFn | None = None,
                     debug: bool = False, trace: bool = False) -> None:
    check_fuse()
    mp = check_mountpoint(path)
    serve(mp, address, auth=auth, debug=debug, trace=trace)


def mount_background(path: str, address: Address, *, auth: AuthFn | None = None,
                     debug: bool = False, trace: bool = False, timeout: float = 20.0,
                     log_file: str | None = None) -> int:
    """Fork a mount process; return its pid once the mount is live, or raise MountError with the
    process's own error text. The process detaches (new session, cwd /, stdio to /dev/null)."""
    check_fuse()
    mp = check_mountpoint(path)
    log_fd = open_private(log_file) if log_file else None  # refused here, in the caller
    r, w = os.pipe()  # the child's stderr until the mount is live, then READY
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the mount process
        code = 1
        try:
            os.close(r)
            os.setsid()
            _child(mp, address, w, auth, debug, trace, log_fd)
            code = 0
        except MountError as e:
            print(e, file=sys.stderr, flush=True)
        except NinepError as e:
            print(f"the daemon at {address} refused the attach: {e}", file=sys.stderr, flush=True)
        except (ConnectionError, ProtocolError, OSError) as e:
            print(f"cannot reach the daemon: {e}", file=sys.stderr, flush=True)
        except BaseException as e:  # noqa: BLE001 - report anything to the waiting parent
            print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    os.close(w)
    if log_fd is not None:
        os.close(log_fd)
    return _await_child(pid, r, mp, path, timeout)


def _child(mp: str, address: Address, w: int, auth: AuthFn | None, debug: bool, trace: bool,
           log_fd: int | None = None) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    saved_err = log_fd if log_fd is not None else os.dup(2) if debug else None
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(w, 2)  # until ready, errors (ours and libfuse's) go to the parent
    os.chdir("/")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s brasil mount: %(message)s", datefmt="%H:%M:%S")

    def ready() -> None:
        try:
            os.write(2, READY)
        except OSError:
            pass
        os.dup2(saved_err if saved_err is not None else devnull, 2)
        os.close(w)

    serve(mp, address, auth=auth, debug=debug, trace=trace, on_ready=ready)


def _await_child(pid: int, r: int, mp: str, path: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    out = b""
    ready = eof = False
    try:
        while not ready and not eof and time.monotonic() < deadline:
            readable, _, _ = select.select([r], [], [], 0.05)
            if readable:
                chunk = os.read(r, 4096)
                eof = not chunk
                out += chunk
                ready = READY in out
    finally:
        os.close(r)
    text = out.replace(READY, b"").decode(errors="replace").strip()
    if ready:
        while time.monotonic() < deadline:
            if os.path.ismount(mp):
                return pid
            time.sleep(0.02)
        text = f"{path}: the mount process started but the mount did not appear within {timeout:g}s"
    elif eof:  # the mount process ended before the mount was live: its stderr says why
        _, status = _reap(pid, 5)
        raise MountError(text or f"the mount process exited with status {status}")
    else:
        text = f"no mount after {timeout:g}s" + (f": {text}" if text else "")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _reap(pid, 5)
    raise MountError(text)


def _reap(pid: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return pid, -1
        if got:
            return got, os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return 0, -1
        time.sleep(0.02)


def umount(path: str, *, lazy: bool = False) -> None:
    """Unmount a `brasil mount` (also a dead one): fusermount3 -u, else umount(8) when root."""
    p = os.path.abspath(path)
    if not mounted(p):
        raise MountError(f"{path} is not mounted")
    errors = []
    fm = shutil.which("fusermount3") or shutil.which("fusermount")
    if fm:
        r = subprocess.run([fm, "-u"] + (["-z"] if lazy else []) + [p], capture_output=True, text=True)
        if r.returncode == 0:
            return
        errors.append(r.stderr.strip() or f"{fm} -u failed with status {r.returncode}")
    if os.geteuid() == 0 and shutil.which("umount"):
        r = subprocess.run(["umount"] + (["-l"] if lazy else []) + [p], capture_output=True, text=True)
        if r.returncode == 0:
            return
        errors.append(r.stderr.strip() or f"umount failed with status {r.returncode}")
    msg = "; ".join(errors) or "neither fusermount3 nor umount is available"
    if "busy" in msg.lower() and not lazy:
        msg += " (a program still uses it; stop it, or use --lazy)"
    raise MountError(msg)
