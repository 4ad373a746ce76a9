"""One command, run through /bin/sh in its own process group, with bounded streams for its pipes.

The child's stdout and stderr feed :class:`Stream` objects; when one is full the pipe is paused, so
the child blocks in write(2) instead of the daemon buffering without bound. Its stdin drains a
Stream: end of file there closes the child's stdin. Exit is noticed through a pidfd, so no thread
or SIGCHLD handler is needed per child. ``kill`` signals the whole process group, children included,
and, where commands run in cgroups (exec/cgroups.py), every process in the command's cgroup too:
those that left the group with setsid, even after the command itself ended.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from ..ninep.errors import NinepError
from ..ninep.stream import Stream
from .cgroups import Cgroup, enter_first
from .fdwatch import FdWatcher, fd_watcher
from .reaper import Watchdog
from .spawn import CgroupError, Spawned, native, spawn, spawn_batch

SETUP_FD = "BRASIL_SETUP_FD"  # where a setup helper (nsexec) reports a failure before exec

log = logging.getLogger("brasil.exec")


class _PipeReader:
    """A child's stdout or stderr into its Stream, straight from the loop's reader callback.

    An asyncio pipe transport did this before, with a protocol, a transport and their callbacks
    per pipe: two pipes per command made that a tenth of a short command's handling. A full
    stream stops the reading (the child then blocks in write(2)) until it drains; a stream whose
    reader is gone closes the pipe, so the child gets EPIPE, as in a shell."""

    __slots__ = ("watcher", "pipe", "fd", "stream", "reading")

    def __init__(self, watcher: FdWatcher, pipe: Any, stream: Stream) -> None:
        self.watcher, self.pipe, self.stream = watcher, pipe, stream
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.reading = True
        watcher.watch(self.fd, self._ready)

    def _ready(self) -> None:
        try:
            data = os.read(self.fd, 262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data or self.stream.broken:
            self._end()
        elif not self.stream.feed(data):
            self.watcher.unwatch(self.fd)
            self.reading = False
            self.stream.on_drain(self._resume)

    def _resume(self) -> None:
        if not self.reading and not self.pipe.closed:
            self.reading = True
            self.watcher.watch(self.fd, self._ready)

    def _end(self) -> None:
        if self.reading:
            self.watcher.unwatch(self.fd)
            self.reading = False
        self.pipe.close()
        self.stream.close()


class _PipeWriter(asyncio.Protocol):
    def __init__(self) -> None:
        self._paused: asyncio.Future[None] | None = None
        self.lost = False

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self._paused = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.resume_writing()

    async def drain(self) -> None:
        if self._paused is not None:
            await self._paused


class Process:
    """A running command; ``exited`` resolves to its exit status (128+N when killed by signal N)."""

    def __init__(self, stdin: Stream, stdout: Stream, stderr: Stream,
                 watchdog: Watchdog | None = None) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.watchdog = watchdog
        self.pid = 0
        self.popen: Spawned | None = None
        self.cgroup: Cgroup | None = None  # its slot's: it and every descendant
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.signalled: int | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._on_exit: list[Callable[[int], None]] = []
        # Ended while its input was still coming (the feeder had not reached end of file): a
        # non-zero status then breaks a pipeline; after the end of its input (grep that found
        # nothing) it is the command's answer. What a node can say of exec/chain.py's rule.
        self.input_left = False
        self._input_done = False  # its input reached its end (or its reader went away)
        self._watcher: FdWatcher | None = None  # watches its pipes and its pidfd, once attached
        self._pidfd = -1

    @staticmethod
    def spawn(argv: list[str], env: dict[str, str], cwd: str | None = None,
              pass_fds: tuple[int, ...] = ()) -> Spawned:
        """Fork and exec, with three pipes, in a new session (so ``kill`` reaches the group)."""
        try:
            return spawn(argv, env, cwd, pass_fds)
        except (OSError, ValueError) as e:
            raise cannot_start(argv, e) from None

    def attach(self, popen: Spawned) -> None:
        """Take over a spawned child: its pipes feed our streams, its exit is watched. Its input
        is copied by a task made only once input (or its end) arrives: most commands never get
        any, and then the pipe is just closed when they end."""
        loop = asyncio.get_running_loop()
        self.popen = p = popen
        self.pid = p.pid
        self.cgroup = getattr(p, "cgroup", None)
        assert p.stdin and p.stdout and p.stderr
        self._pidfd = p.pidfd if p.pidfd >= 0 else os.pidfd_open(p.pid)
        self._watcher = w = fd_watcher(loop)
        w.watch(self._pidfd, self._reap)
        _PipeReader(w, p.stdout, self.stdout)
        _PipeReader(w, p.stderr, self.stderr)
        self.stdin.when_ready(self._input_ready)

    def _input_ready(self) -> None:
        assert self.popen is not None and self.popen.stdin is not None
        if self._feeder is not None:
            return
        if self.stdin.broken or (self.stdin.eof and not len(self.stdin)):
            self.popen.stdin.close()  # nothing will ever come: no task for it
            self._input_done = True
            return
        self._feeder = asyncio.ensure_future(self._feed(self.popen.stdin))

    async def _feed(self, pipe: Any) -> None:
        """Copy the stdin stream into the child's stdin until end of file or the child stops
        reading. The pipe gets a transport only once there is something to write: most commands
        are never given input, and then closing the pipe at the end is all there is to do."""
        transport = writer = None
        try:
            while writer is None or not writer.lost:
                data = self.stdin.read(65536)
                if not isinstance(data, bytes):
                    data = await data
                if not data:
                    break
                if transport is None or writer is None:  # (both or neither)
                    transport, writer = await asyncio.get_running_loop().connect_write_pipe(
                        _PipeWriter, pipe)
                transport.write(data)
                await writer.drain()
        finally:
            self._input_done = True
            if writer is not None and writer.lost:
                self.stdin.break_()
            if transport is not None:
                transport.close()
            else:
                pipe.close()

    def _reap(self) -> None:
        assert self._watcher is not None
        self._watcher.unwatch(self._pidfd)
        os.close(self._pidfd)
        self._collect(0.01)

    def _collect(self, retry: float) -> None:
        """The exit status, without ever blocking the loop: the pidfd says the process ended,
        but while a debugger traces it (proc/RANK/ctl, exec/debugger.py) the kernel gives its
        status to the tracer first, and a blocking wait here would freeze the daemon until
        the tracer looks. So poll, and look again a little later."""
        assert self.popen is not None
        rc = self.popen.poll()
        if rc is None:
            asyncio.get_running_loop().call_later(retry, self._collect, min(retry * 2, 1.0))
            return
        if self.watchdog is not None and self.cgroup is None:
            self.watchdog.forget(self.pid)
        self._ended(rc)

    def _ended(self, rc: int) -> None:
        """It ended with ``rc`` (a wait status: -N when killed by signal N): say so."""
        self.input_left = not self._input_done
        self.stdin.break_()  # nobody reads our input any more: writers fail, the feeder ends
        if rc < 0:
            self.signalled = -rc
            rc = 128 - rc
        if not self.exited.done():
            self.exited.set_result(rc)
        for cb in self._on_exit:
            cb(rc)

    def on_exit(self, callback: Callable[[int], None]) -> None:
        if self.exited.done():
            callback(self.exited.result())
        else:
            self._on_exit.append(callback)

    @property
    def running(self) -> bool:
        return self.pid != 0 and not self.exited.done()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Signal the process group and the cgroup: the command and everything it started.
        Once the command has ended, only the cgroup (its process group id may be reused)."""
        if not self.pid:
            return
        if self.running:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError as e:
                log.warning("kill %d: %s", self.pid, e)
        if self.cgroup is not None:
            self.cgroup.signal(sig)


Job = tuple[list[str], dict[str, str], str | None, int | None]  # argv, env, cwd, slot
Pipes = tuple[Stream, Stream, Stream]  # a command's stdin, stdout and stderr


class Launcher(Protocol):
    """How a node starts its commands: forked here (:class:`ForkLauncher`), or simulated
    (``brasil.sim``: a duration and an output, no process), behind one seam."""

    async def launch(self, jobs: list[Job], pipes: list[Pipes],
                     setup_check: bool = False) -> list[Process | BaseException]:
        """One running :class:`Process` per job, fed by and feeding its pipes, or the error
        that job raised, in order."""
        ...


# Jobs from which a launch is forked in two batches, on two spawn threads. Two overlap their
# forks (64 spawns took a fifth less time than on one thread here), but the threads hand the
# interpreter lock to each other and to the loop at every system call of a spawn: for a leaf
# of 32 slots one thread took 4.5 % less of the leaf's CPU per command (bench-together
# OP=leaves), and a few milliseconds of start matter less than that on a busy node.
SPLIT = 64


class ForkLauncher:
    """Real processes, each in its own process group and the watchdog's care: forked on the
    node's spawn threads (in two batches for a big launch: the forks overlap) so the loop stays
    free, then attached on the loop."""

    def __init__(self, spawner: Executor, watchdog: Callable[[], Watchdog]) -> None:
        self.spawner = spawner
        self.watchdog = watchdog  # made when first needed (a process of its own)

    async def launch(self, jobs: list[Job], pipes: list[Pipes],
                     setup_check: bool = False) -> list[Process | BaseException]:
        watchdog = self.watchdog()
        jobs = [(argv, {**env, **watchdog.env}, cwd, slot) for argv, env, cwd, slot in jobs]
        loop = asyncio.get_running_loop()
        half = (len(jobs) + 1) // 2
        if len(jobs) >= SPLIT:
            batches = [jobs[:half], jobs[half:]]
        else:
            batches = [jobs] if jobs else []  # (nothing here: no trip to a spawn thread)
        spawned = [p for batch in await asyncio.gather(
            *(loop.run_in_executor(self.spawner, spawn_many, b, watchdog, setup_check)
              for b in batches)) for p in batch]
        out: list[Process | BaseException] = []
        for popen, (stdin, stdout, stderr) in zip(spawned, pipes):
            if isinstance(popen, BaseException):
                out.append(popen)
                continue
            proc = Process(stdin, stdout, stderr, watchdog)
            proc.attach(popen)
            out.append(proc)
        return out


def spawn_many(jobs: list[Job], watchdog: Watchdog | None = None,
               setup_check: bool = False) -> list[Any]:
    """Spawn each job; a Spawned (exec/spawn.py), or the NinepError that job raised (run on a
    spawn thread, one call for many children: fewer hand-offs between threads than one call
    each). Each group is given to the watchdog at once, so it dies with the daemon.

    With ``setup_check`` the command is a helper (``brasil.exec.nsexec``) that reports on a pipe
    whether its setup worked before it runs the real command: a failure fails the spawn, with
    the helper's reason, instead of showing up later as an exit status.

    A job's last item is its slot: where the watchdog has cgroups, the child runs in that slot's
    (``popen.cgroup``): with the compiled module every child moves itself there before its exec
    (:func:`_spawn_natively`); without it a shell enters it itself before it runs the command,
    and anything else is moved here right after the vfork returns (so before its exit is
    watched: no pid can have been reaped and reused before its move). Its group is then not
    listed with the watchdog, which kills the cgroups whole."""
    if native is not None and not setup_check:
        return _spawn_natively(jobs, watchdog)
    cgroups = watchdog.cgroups if watchdog is not None else None
    out: list[Any] = []
    for argv, env, cwd, slot in jobs:
        cg, entered = None, False
        try:
            if cgroups is not None and slot is not None:
                cg = cgroups.slot(slot)
                shell_argv = enter_first(argv, cg)
                entered = shell_argv is not argv and not setup_check  # nsexec: moved here too
                argv = shell_argv
            if setup_check:
                p = _spawn_checked(argv, env, cwd)
            else:
                p = Process.spawn(argv, env, cwd)
        except NinepError as e:
            out.append(e)
            continue
        except OSError as e:  # the slot's cgroup could not be made
            out.append(_no_cgroup(slot, e))
            continue
        if cg is not None and cgroups is not None:  # (cg is only made from cgroups)
            if not entered:  # a shell moved itself (a move takes a global lock in the kernel)
                cg.add(p.pid)
            p.cgroup = cg
        elif watchdog is not None:
            watchdog.watch(p.pid)
        out.append(p)
    return out


def _spawn_natively(jobs: list[Job], watchdog: Watchdog | None) -> list[Any]:
    """spawn_many's jobs in one call of the compiled module (exec/spawn.py's spawn_batch), each
    child in its slot's cgroup before its exec, whatever it runs."""
    cgroups = watchdog.cgroups if watchdog is not None else None
    where: list[Cgroup | NinepError | None] = []
    for *_, slot in jobs:
        try:
            where.append(cgroups.slot(slot) if cgroups is not None and slot is not None else None)
        except OSError as e:
            where.append(_no_cgroup(slot, e))
    batch = [(argv, env, cwd, cg.procs if cg is not None else None)
             for (argv, env, cwd, _), cg in zip(jobs, where) if not isinstance(cg, NinepError)]
    started = iter(spawn_batch(batch))
    out: list[Any] = []
    for (argv, *_, slot), cg in zip(jobs, where):
        if isinstance(cg, NinepError):
            out.append(cg)
            continue
        p = next(started)
        if isinstance(p, CgroupError):
            out.append(NinepError(f"exec: cannot enter the cgroup of slot {slot}: {p.strerror}",
                                  p.errno or errno.EIO))
        elif isinstance(p, (OSError, ValueError)):
            out.append(cannot_start(argv, p))
        else:
            if cg is not None:
                p.cgroup = cg
            elif watchdog is not None:
                watchdog.watch(p.pid)
            out.append(p)
    return out


def cannot_start(argv: list[str], e: OSError | ValueError) -> NinepError:
    """What a command that could not start says: the system's reason, or the request's fault
    (an embedded NUL, say) for a ValueError."""
    if isinstance(e, OSError):
        return NinepError(f"exec: cannot start {argv[0]}: {e.strerror}", e.errno or errno.EIO)
    return NinepError(f"exec: cannot start {argv[0][:100]}: {e}")


def _no_cgroup(slot: int | None, e: OSError) -> NinepError:
    return NinepError(f"exec: cannot make a cgroup for slot {slot}: {e.strerror}",
                      e.errno or errno.EIO)


def _spawn_checked(argv: list[str], env: dict[str, str], cwd: str | None) -> Any:
    r, w = os.pipe()
    try:
        p = Process.spawn(argv, {**env, SETUP_FD: str(w)}, cwd, pass_fds=(w,))
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        why = f.read(4096).decode("utf-8", "replace").strip()  # end of file: exec'd fine
    if why:
        p.wait()
        for pipe in (p.stdin, p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()
        raise NinepError(f"exec: {why}")
    return p
