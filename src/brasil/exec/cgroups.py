"""Every process a command starts, found again however it left: a cgroup v2 per slot.

A process group is all ``kill`` and the watchdog reached before, and ``setsid`` (or
``setpgid``) leaves it: such a grandchild outlived ``kill``, ``close`` and even a daemon killed
with -9. Cgroup membership is inherited by every descendant, and only a process allowed to write
into the cgroup file system can leave, so a command in a cgroup takes everything it started with
it: ``cgroup.kill`` kills them all at once (nothing forks its way out), and another signal goes to
every pid in ``cgroup.procs``.

Layout: the daemon's directory D (``brasil-PID-N``) beside the cgroup the process started in, and
one child ``sN`` per slot, made the first time the slot runs a command and kept until the daemon
ends: making and removing a cgroup per command took the kernel's cgroup lock twice per process
and doubled the time to start 256 of them. A slot belongs to one sub-session at a time, whose
``close`` kills what is left in it before the slot is free again. The watchdog (exec/reaper.py)
kills D's whole subtree when the daemon dies and removes the directories. ``brasil serve`` also
moves the daemon itself into D (:meth:`CommandCgroups.contain_self`), so whatever it starts in
any way dies with it too.

A command is placed in its slot's cgroup race-free when it runs through /bin/sh (the shell moves
itself there before it runs a word of the command: :func:`enter_first`); a program run directly
is moved by the thread that started it (:meth:`Cgroup.add`) as soon as the vfork returns (the
child is then in its exec), before any realistic program forks (and under ``brasil serve``
whatever it forked first is still in D). A thread of its own did the moves before: the
hand-offs to it and its waits for the interpreter lock cost more (a seventh of a short
command's CPU in the daemon, two context switches a move) than the moves themselves.

Where there is no cgroup v2 we may write (not root and no delegation, cgroup v1 only, a kernel
before 5.14 without ``cgroup.kill``), :meth:`CommandCgroups.create` says so with None and process
groups are what is tracked: a setsid'd descendant then escapes (docs/reference.md).
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
import shlex
import signal
import threading
from functools import cache

from .pychild import runs_module

log = logging.getLogger("brasil.exec")

_daemons = itertools.count()
# A daemon's directory: its pid (at most 7 digits: pid_max is 2**22 at most), its number.
_DAEMON_DIR = re.compile(r"brasil-(\d{1,7})-\d+")


def _holds_a_process(path: str) -> bool:
    try:
        with open(f"{path}/cgroup.procs") as f:  # (one outside our pid namespace reads as 0)
            return bool(f.read().strip())
    except OSError:
        return True  # unreadable: not ours to judge


@cache
def _start_cgroup() -> str | None:
    """The cgroup v2 directory this process started in (cached before any move of ours), if
    cgroup2 is mounted (whole: a mount of a subtree would not say where we are)."""
    try:
        with open("/proc/self/cgroup") as f:
            rel = next((line[3:].strip() for line in f if line.startswith("0::")), None)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    if rel is None:
        return None
    for fields in mounts:
        sep = fields.index("-") if "-" in fields else -1
        if sep > 0 and fields[sep + 1] == "cgroup2" and fields[3] == "/":
            path = os.path.join(fields[4], rel.lstrip("/")).rstrip("/")
            if os.path.isdir(path):
                return path
    return None


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class Cgroup:
    """One slot's cgroup: the commands run there and all their descendants.

    Its ``cgroup.procs`` and ``cgroup.kill`` are opened for each move or kill (5–7 µs here),
    not kept open: kept, they were two descriptors for every slot ever used (1,018 in a daemon
    of 1,024 slots after 1,000 sessions), and every child the daemon starts gets a copy of its
    whole table (vfork) and closes it again (``close_fds``) before its exec."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.procs = f"{path}/cgroup.procs"

    def _write(self, name: str, text: str) -> None:
        _write(f"{self.path}/{name}", text)

    def add(self, pid: int) -> None:
        """Move ``pid`` in (a command just started: it and all it will start)."""
        try:
            self._write("cgroup.procs", str(pid))
        except OSError as e:
            if e.errno != errno.ESRCH:  # already gone: nothing to track
                log.warning("cgroup %s: cannot move pid %d in: %s", self.path, pid, e.strerror)

    def pids(self) -> list[int]:
        try:
            with open(self.procs) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def signal(self, sig: int) -> None:
        """``sig`` to every process in it, setsid'd or not."""
        if sig == signal.SIGKILL:
            try:
                self._write("cgroup.kill", "1")
            except OSError as e:
                log.warning("cgroup %s: cannot kill: %s", self.path, e.strerror)
            return
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except OSError:
                pass


class CommandCgroups:
    """A daemon's directory of per-slot cgroups (see the module's docstring)."""

    def __init__(self, start: str, path: str) -> None:
        self.start, self.path = start, path
        self._slots: dict[int, Cgroup] = {}
        self._lock = threading.Lock()  # the spawn threads make them
        self.contained = False

    @classmethod
    def create(cls) -> CommandCgroups | None:
        start = _start_cgroup()
        if start is None:
            return None
        for _ in range(64):
            path = f"{start}/brasil-{os.getpid()}-{next(_daemons)}"  # (_DAEMON_DIR)
            try:
                os.mkdir(path, 0o755)
                break
            except FileExistsError:  # left by a dead process that had our pid: the next name
                continue
            except OSError:
                return None
        else:
            return None
        if not os.path.exists(f"{path}/cgroup.kill"):
            os.rmdir(path)
            return None
        return cls(start, path)

    def stale(self) -> list[str]:
        """Directories beside ours of daemons that are gone, their watchdogs with them (nobody
        else kills what they hold or removes them). A daemon of this process, or of a live
        one, is never counted; a reused pid only postpones a directory to a later start. Nor
        is one with a process at its top, where `brasil serve` puts itself: a daemon in another
        pid namespace has a pid that means nothing here, but it is there."""
        import psutil  # (here: the daemon has it loaded already, a batch worker only now)
        try:
            names = os.listdir(self.start)
        except OSError:
            return []
        mine = os.getpid()
        return [f"{self.start}/{name}" for name in sorted(names)
                if (m := _DAEMON_DIR.fullmatch(name)) and int(m[1]) != mine
                and not psutil.pid_exists(int(m[1]))
                and not _holds_a_process(f"{self.start}/{name}")]

    @staticmethod
    def here() -> bool:
        """Whether commands can be tracked by cgroup here (tries, then cleans up)."""
        probe = CommandCgroups.create()
        if probe is None:
            return False
        os.rmdir(probe.path)
        return True

    def slot(self, n: int) -> Cgroup:
        """Slot ``n``'s cgroup, made the first time (on a spawn thread)."""
        cg = self._slots.get(n)
        if cg is None:
            with self._lock:
                cg = self._slots.get(n)
                if cg is None:
                    path = f"{self.path}/s{n}"
                    try:
                        os.mkdir(path, 0o755)
                    except FileExistsError:
                        pass
                    cg = self._slots[n] = Cgroup(path)
        return cg

    def contain_self(self) -> None:
        """Move this process (the daemon) into the directory: whatever it starts, however, is
        then inside, and dies with it. Only for a process that is one daemon (``brasil serve``)."""
        _write(f"{self.path}/cgroup.procs", str(os.getpid()))
        self.contained = True

    def release_self(self) -> None:
        """Back to where we started, before the watchdog kills everything in the directory."""
        if self.contained:
            _write(f"{self.start}/cgroup.procs", str(os.getpid()))
            self.contained = False


def enter_first(argv: list[str], cg: Cgroup) -> list[str]:
    """``argv`` with its ``/bin/sh -c CMD`` (the whole of it, or what ``brasil.exec.nsexec``
    runs after its binds) first moving the shell into ``cg``, before it runs a word of CMD, so
    nothing it starts can be forked outside; any other argv unchanged (the very object)."""
    shell = ["/bin/sh", "-c"]
    if len(argv) == 3 and argv[:2] == shell:
        return [*shell, _entering(argv[2], cg)]
    if runs_module(argv, "brasil.exec.nsexec") and argv[-4:-1] == ["--", *shell]:
        return [*argv[:-1], _entering(argv[-1], cg)]
    return argv


def _entering(cmd: str, cg: Cgroup) -> str:
    return f"echo 0 2>/dev/null >{shlex.quote(cg.procs)}; {cmd}"
