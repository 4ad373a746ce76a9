"""Commands must not outlive the daemon that runs them, however it dies (kill -9 included).

Each command runs in a process group of its own (so ``kill`` reaches everything it started),
which also means nothing kills it when the daemon vanishes: it is reparented to init and runs on.
Neither ``PR_SET_PDEATHSIG`` (not inherited by grandchildren, and tied to the forking thread) nor
a subreaper (which dies with the daemon) covers a kill -9. So a tiny watchdog process is started
beside the daemon with the read end of a pipe: the daemon writes ``+PGID`` when a command starts
and ``-PGID`` when it ends. When the daemon dies the pipe reaches end of file, and the watchdog
kills every group still listed, then exits. It ignores the signals a terminal sends, so Ctrl-C
on ``brasil serve`` still lets the daemon end its commands itself first.

The daemon is told of a group only after the spawn returns, and a daemon killed in between (a
loaded machine can hold its thread there for tens of milliseconds while the command already runs)
would leave it unlisted. So every command also carries a secret in its environment
(``BRASIL_WATCHDOG``, told to the watchdog as the pipe's first line, never on a command line others
can read), and at end of file the watchdog also kills the group of every process of its user whose
initial environment holds it.

A process group is left by ``setsid``, so where a cgroup v2 can be made (exec/cgroups.py) each
command runs in its slot's cgroup under the daemon's directory, and the watchdog kills that
whole subtree (``cgroup.kill``: every descendant, however it detached) and removes it; the
``+PGID`` lines are then not needed and not sent.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading

from .cgroups import CommandCgroups
from .pychild import ISOLATED, SAFE_CWD

log = logging.getLogger("brasil.exec")

# Run with `python -I -S -c`: no site, no imports of ours; reads "+N"/"-N" lines from stdin;
# argv[1:] are cgroup directories, each killed whole and removed at the end: the daemon's own, or
# (stdin empty) those that dead daemons left behind.
WATCHDOG = r"""
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
groups = set()
mark = None
buf = b""
while True:
    data = os.read(0, 65536)
    if not data:
        break
    buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
        elif line[:1] == b"=":
            mark = b"BRASIL_WATCHDOG=" + line[1:]
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
if mark is not None:
    me, uid = os.getpid(), os.getuid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat("/proc/" + name).st_uid != uid:
                continue
            with open("/proc/" + name + "/environ", "rb") as f:
                env = f.read(1 << 20)
        except OSError:
            continue
        if mark in env.split(b"\0"):
            try:
                os.killpg(os.getpgid(int(name)), signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
for top in sys.argv[1:]:
    try:
        with open(top + "/cgroup.kill", "w") as f:
            f.write("1")
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(top + "/cgroup.events") as f:
                if "populated 0" in f.read():
                    break
        except OSError:
            break
        time.sleep(0.01)
    for d, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(d)
        except OSError:
            pass
"""


def _start(stdin: int, cgroups: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, ISOLATED, "-S", "-c", WATCHDOG, *cgroups],
                            stdin=stdin, stdout=subprocess.DEVNULL, close_fds=True, cwd=SAFE_CWD)


class Watchdog:
    """Started with each daemon. A new one first does the work of watchdogs that died with
    their daemons (a whole process tree killed at once: a Slurm step cancelled, a service
    stopped with its control group): it kills what their cgroups still hold and removes them."""

    def __init__(self) -> None:
        self.cgroups = CommandCgroups.create()  # None: process groups only
        if self.cgroups is not None:
            log.info("commands run in cgroups under %s: kill reaches setsid'd descendants",
                     self.cgroups.path)
        else:
            log.info("no cgroup v2 to make here: commands are tracked by process group, and a "
                     "setsid'd descendant can escape kill, close and the watchdog")
        where = [self.cgroups.path] if self.cgroups else []
        stale = self.cgroups.stale() if self.cgroups else []
        self._sweeper = None  # (not waited for here: what it kills may take its time to die)
        if stale:
            log.info("killing and removing %d cgroup(s) that daemons killed with their watchdogs "
                     "left: %s", len(stale), ", ".join(stale))
            self._sweeper = _start(subprocess.DEVNULL, stale)
        r, self._w = os.pipe()  # both close-on-exec: commands never hold the write end
        try:  # started before the daemon may move into the directory: it is never killed there
            self.proc = _start(r, where)
        finally:
            os.close(r)
        self._lock = threading.Lock()  # spawn threads and the loop both write
        secret = secrets.token_hex(16)
        self.env = {"BRASIL_WATCHDOG": secret}  # for every command (the module's docstring)
        self._say(f"={secret}\n")

    def _say(self, line: str) -> None:
        with self._lock:
            if self._w < 0:
                return
            try:
                os.write(self._w, line.encode())
            except OSError:
                pass

    def watch(self, pgid: int) -> None:
        self._say(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._say(f"-{pgid}\n")

    def close(self) -> None:
        """We are ending cleanly: whatever is still listed (or in our cgroups) is killed now."""
        if self.cgroups is not None:
            self.cgroups.release_self()
        with self._lock:
            if self._w >= 0:
                os.close(self._w)
                self._w = -1
        for proc in (self.proc, self._sweeper):
            if proc is None:
                continue
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
