"""How a worker's jobs are processes: started, watched to their end, killed (``brasil worker``).

The worker (``worker.py``) decides what runs where and when; this is the part that touches the
machine's processes, apart so that the simulator (``sim/batch.py``) can give the same worker
simulated ones: a duration and an output, no fork. :class:`HostProcesses` is the one production
uses: a plain job is started as a node's commands are (``exec/spawn.py``), in a session of its
own, listed with the watchdog (its group dies with us, kill -9 included: ``exec/reaper.py``),
and its end is read from a pidfd on the loop. Isolated jobs are started by the worker itself
(a fork server or a fork with an overlay) and then watched here the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Protocol

from ..exec.reaper import Watchdog
from ..exec.spawn import Spawned, spawn

Exited = Callable[[int], None]  # called with the exit code (negative: the signal that ended it)
Started = subprocess.Popen[bytes] | Spawned | None  # what a job's end is waited through, if any


class JobProcesses(Protocol):
    """What a worker asks of the processes its jobs run as."""

    def open(self) -> None:
        """Ready to start jobs (the watchdog is started now, so that listing a job's group is
        one write, never a fork)."""

    def env(self) -> dict[str, str]:
        """Laid over every job's environment."""

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str | None, out: int) -> Spawned:
        """Start a plain job in ``cwd``, its stdout and stderr on ``out``."""

    def watch(self, pid: int, popen: Started, exited: Exited) -> None:
        """Call ``exited`` on this loop when the job started as ``pid`` ends; OSError if it
        cannot be watched (the caller then kills and :meth:`reap`\\ s it)."""

    def reap(self, pid: int, popen: Started) -> None:
        """A job that could not be watched: killed and waited for."""

    def kill(self, pid: int) -> None:
        """SIGKILL to the job's whole process group (one already gone is no error)."""

    async def close(self) -> None:
        """Whatever is still running is killed."""


class HostProcesses:
    """Jobs as processes of this machine, each in a process group listed with the watchdog."""

    def __init__(self) -> None:
        self._watchdog: Watchdog | None = None

    def watchdog(self) -> Watchdog:
        """The watchdog that kills our jobs' process groups when this process ends."""
        if self._watchdog is None:
            self._watchdog = Watchdog()
        return self._watchdog

    def open(self) -> None:
        self.watchdog()

    def env(self) -> dict[str, str]:
        return self.watchdog().env

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str | None, out: int) -> Spawned:
        """Started as a node starts a command (exec/spawn.py: vfork and exec, a fraction of
        subprocess's cost, which is what a thousand short jobs a second need), in its home and
        a session of its own, its input /dev/null and its output and errors ``out``."""
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return spawn(argv, env, cwd, stdio=(devnull, out, out))
        finally:
            os.close(devnull)

    def watch(self, pid: int, popen: Started, exited: Exited) -> None:
        self.watchdog().watch(pid)
        fd = os.pidfd_open(pid)
        asyncio.get_running_loop().add_reader(fd, self._ended, pid, popen, fd, exited)

    def _ended(self, pid: int, popen: Started, fd: int,
               exited: Exited) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        if popen is not None:
            rc = popen.wait()
        else:
            rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        self.kill(pid)  # what it left behind in its group
        if self._watchdog is not None:
            self._watchdog.forget(pid)
        exited(rc)

    def reap(self, pid: int, popen: Started) -> None:
        self.kill(pid)
        with contextlib.suppress(ChildProcessError):
            popen.wait() if popen is not None else os.waitpid(pid, 0)

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    async def close(self) -> None:
        if self._watchdog is not None:  # whatever is still listed is killed now
            dog, self._watchdog = self._watchdog, None
            await asyncio.get_running_loop().run_in_executor(None, dog.close)
