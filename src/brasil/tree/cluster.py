"""`brasil cluster up/down`: a tree of real daemons on this machine, for tests, demos and benches.

Names follow the tree: the root is ``n0``, its children ``n1``…``nF``, theirs ``n1.1``…, and so
on. Every daemon gets a Unix socket and an ephemeral loopback port in DIR, joins its parent over
TCP with the cluster secret (made in DIR, mode 0600), and logs to DIR/NAME.log. Each runs
isolated (``python -I``) in its state directory DIR/NAME, whatever directory `up` was called
from (exec/pychild.py). DIR/NAME.pid lets `down` stop exactly what `up` started: a pid is
signalled only while it is still that daemon (exec/pidcheck.py), never a process that took the
pid after the daemon died.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..exec import pidcheck
from ..exec.pychild import python_argv
from ..ninep.auth import client_auth, load_secret, make_secret
from ..ninep.client import Client
from ..ninep.private import open_private, private_dir, write_private

Progress = Callable[[str], None]  # where a deploy says what it is doing (print, by default)


class ClusterError(Exception):
    pass


class ClusterRunning(ClusterError):
    """DIR has a running cluster: nothing was started, nothing is stopped."""


@dataclass
class Member:
    name: str
    parent: str | None
    depth: int


def layout(depth: int, fanout: int) -> list[Member]:
    out = [Member("n0", None, 0)]
    level = [out[0]]
    for d in range(1, depth + 1):
        nxt = []
        for p in level:
            for i in range(1, fanout + 1):
                name = f"n{i}" if p.name == "n0" else f"{p.name}.{i}"
                nxt.append(Member(name, p.name, d))
        out += nxt
        level = nxt
    return out


def read_addresses(state: str) -> list[str] | None:
    try:
        with open(os.path.join(state, "addresses")) as f:
            return f.read().split()
    except OSError:
        return None


async def up(dirpath: str, depth: int, fanout: int, slots: int, export_root: str | None = None,
             progress: Progress = print, export: str | None = None) -> dict[str, list[str]]:
    """Start the tree; on failure stop what this call started (and only that: a cluster that
    was already running in DIR is refused before anything starts, and left alone)."""
    dirpath = private_dir(dirpath, "cluster directory")
    if any(_ours(dirpath, f[:-4]) for f in os.listdir(dirpath) if f.endswith(".pid")):
        raise ClusterRunning(f"{dirpath} already has a running cluster; use it, or stop it "
                             f"first with `brasil cluster down --dir {dirpath}`")
    for f in os.listdir(dirpath):  # what a cluster that died left behind
        if f.endswith(".pid"):
            os.unlink(os.path.join(dirpath, f))
    members = layout(depth, fanout)
    for m in members:  # a daemon killed at `down` keeps its addresses: never join those
        try:
            os.unlink(os.path.join(dirpath, m.name, "addresses"))
        except FileNotFoundError:
            pass
    secret_path = os.path.join(dirpath, "secret")
    write_private(secret_path, make_secret())
    addresses: dict[str, list[str]] = {}
    try:
        for d in range(depth + 1):
            level = [m for m in members if m.depth == d]
            for m in level:
                _start(dirpath, m, slots, addresses, secret_path, export_root, export)
            deadline = time.monotonic() + 30 + len(level)
            for m in level:
                state = os.path.join(dirpath, m.name)
                while (got := read_addresses(state)) is None:
                    if time.monotonic() > deadline:
                        raise ClusterError(f"{m.name} did not start; see {dirpath}/{m.name}.log")
                    if not _ours(dirpath, m.name):
                        raise ClusterError(f"{m.name} exited at start; see {dirpath}/{m.name}.log")
                    await asyncio.sleep(0.05)
                addresses[m.name] = got
            progress(f"started level {d}: {len(level)} daemon(s)")
        await _wait_joined(dirpath, len(members), progress)
    except BaseException:
        down(dirpath)  # only our own: the directory had no running cluster when we began
        raise
    return addresses


def _start(dirpath: str, m: Member, slots: int, addresses: dict[str, list[str]],
           secret_path: str, export_root: str | None, export: str | None = None) -> None:
    state = private_dir(os.path.join(dirpath, m.name), "state directory")
    argv = python_argv("brasil.cli.main", "serve", "--name", m.name,
                       "--listen", f"unix:{dirpath}/{m.name}.sock", "--listen", "127.0.0.1:0",
                       "--slots", str(slots), *_identity(dirpath, m.name),
                       "--secret-file", secret_path)
    if m.parent is not None:
        tcp = next(a for a in addresses[m.parent] if not a.startswith("unix:"))
        argv += ["--parent", tcp]
    if export_root:
        exp = os.path.join(export_root, m.name)
        os.makedirs(exp, exist_ok=True)
        argv += ["--export", exp]
    elif export:
        argv += ["--export", export]
    log = open_private(os.path.join(dirpath, f"{m.name}.log"))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=state, start_new_session=True)
    finally:
        os.close(log)
    write_private(os.path.join(dirpath, f"{m.name}.pid"), f"{proc.pid}\n")


async def _wait_joined(dirpath: str, n: int, progress: Progress) -> None:
    """Until the root's status lists every node of the tree."""
    secret = load_secret(os.path.join(dirpath, "secret"))
    c = await Client.connect(f"unix:{dirpath}/n0.sock", auth=client_auth(secret))
    try:
        deadline = time.monotonic() + 30 + n
        while True:
            lines = (await c.read("csrv/local/status")).decode().splitlines()
            have = len(lines) - 1
            if have >= n:
                progress(f"all {n} daemon(s) joined")
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"only {have} of {n} daemons joined; see the logs in {dirpath}")
            await asyncio.sleep(0.1)
    finally:
        await c.close()


def _pid(dirpath: str, name: str) -> int:
    try:
        with open(os.path.join(dirpath, f"{name}.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def _identity(dirpath: str, name: str) -> list[str]:
    """The words of a daemon's command line that only that daemon has: its state directory."""
    return ["--state-dir", os.path.join(dirpath, name)]


def _ours(dirpath: str, name: str) -> bool:
    """Whether NAME.pid names a live daemon `up` started in DIR (not a reused pid)."""
    return not pidcheck.why_not_ours(_pid(dirpath, name), _identity(dirpath, name))


def down(dirpath: str, grace: float = 10.0, progress: Progress | None = None) -> int:
    """Stop every daemon `up` started in DIR; returns how many were running. A pid that is no
    longer our daemon is left alone (and said, through ``progress``)."""
    dirpath = os.path.abspath(dirpath)
    if not os.path.isdir(dirpath):
        raise ClusterError(f"{dirpath}: no such cluster directory")
    names = sorted(f[:-4] for f in os.listdir(dirpath) if f.endswith(".pid"))
    claimed = []
    for n in names:
        pid = _pid(dirpath, n)
        fd, why = pidcheck.claim(pid, _identity(dirpath, n))
        if fd is not None:
            claimed.append(fd)
        elif progress and why != "no such process":
            progress(f"{n}: pid {pid} is not its daemon any more ({why}); left alone")
    pidcheck.stop(claimed, grace)
    for n in names:
        try:
            os.unlink(os.path.join(dirpath, f"{n}.pid"))
        except OSError:
            pass
    return len(claimed)
