"""One node's state and the ``/csrv`` tree it serves (SPEC.md §2).

:class:`Node` owns the slots, the sessions, the default ``env`` and ``ns``, and the idle reaper.
It knows nothing of sockets: ``brasil serve`` (cli/serve.py) puts a 9P server in front of
:attr:`Node.root` and listens where it is told.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import platform
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..exec import nsexec
from ..exec.process import ForkLauncher, Launcher
from ..exec.reaper import Watchdog
from ..ninep.constants import ORDWR, OWRITE
from ..ninep.ctl import excerpt
from ..ninep.errors import NinepError
from ..ninep.maybe import detach, is_awaitable
from ..ninep.server import current_user
from ..ninep.synthetic import (
    OWNER,
    BytesHandle,
    DynamicDir,
    Entry,
    GeneratedFile,
    Handle,
    Inode,
    StaticFile,
    TableDir,
)
from ..ninep.ticks import tick
from .attrs import Filter, Machine, Pred, Selection, format_attrs, real_machine, system_attrs
from .exportfs import Export, ExportDir
from .hooks import Reserver
from .host import DataPath, Delegate, FarEnd, Owner
from .policy import Policy
from .scope import Scope
from .session import Session
from .session_files import SessionCtl, SessionDir, attrs_file, env_file, ns_file
from .stage import StageCache, StageDir

log = logging.getLogger("brasil.node")

DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_OUTPUT_LIMIT = 256 * 1024
DEFAULT_MAX_SESSIONS = 4096  # about 40 MB of sessions at most


def arch_line() -> str:
    return f"{platform.system().lower()} {platform.machine()}"


class CloneFile(Inode):
    """Opening it makes a session; reading that open gives the session's id. Opened for writing
    it is the new session's ``ctl``, as Plan 9's clone files are their connection's: its reads
    give the state line (``session ID …``), its writes are commands, and held open it keeps the
    session as an open ``ctl`` does. A neighbour making a delegated session then opens one
    file, not two (clone, then ID/ctl): a round trip less for each node a res reaches."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node

    def open(self, mode: int) -> Handle:
        session = self.node.new_session()
        if mode & 3 in (OWRITE, ORDWR):
            return SessionCtl(session).open(mode)
        return BytesHandle(self, f"{session.path}\n".encode())


def deal(n: int, room: dict[str, int]) -> dict[str, int]:
    """``n`` dealt one at a time over ``room``'s keys in name order, each taking at most its
    room: every key gets ``level`` (or its room, if less), and the rest one more each in order.
    Computed, not looped slot by slot: a room is what a neighbour said, and may be absurd."""
    keys = sorted(room)
    lo, hi = 0, n  # the largest level whose total fits in n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(room[k], mid) for k in keys) <= n:
            lo = mid
        else:
            hi = mid - 1
    share = {k: min(room[k], lo) for k in keys}
    left = n - sum(share.values())
    for k in keys:
        if left and share[k] < room[k]:
            share[k] += 1
            left -= 1
    return share


class Node:
    def __init__(self, name: str, slots: int, *, export: str | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 output_limit: int = DEFAULT_OUTPUT_LIMIT, workdir: str | None = None,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 launcher: Launcher | None = None, machine: Machine | None = None) -> None:
        """``launcher``: how commands start (default: forked here, under the watchdog);
        ``machine``: the memory and load it reports (default: this machine's). The simulator
        gives its own of each."""
        if slots < 0:
            raise ValueError("slots must be ≥ 0")
        self.name = name
        self.slots_total = slots
        self.free: list[int] = list(range(slots))
        self.env: dict[str, str] = {}
        self.state_dir: str | None = None  # given to commands as BRASIL_STATE_DIR (serve sets it)
        self.ns: list[str] = []
        self.sessions: dict[str, Session] = {}
        self._next_id = 0
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.output_limit = output_limit
        self.export = Export(export) if export else None
        self.workdir = workdir or (self.export.root if self.export else os.getcwd())
        self.addresses: list[str] = []
        self.status_sources: list[Callable[[], Any]] = []  # the subtree's lines, maybe awaited
        self.status_keys: list[Callable[[], set[str]]] = []  # attribute names seen below
        self.labels: dict[str, str] = {}
        self.policy: Policy | None = None  # caps per user (node/policy.py; serve --policy)
        # the hooks the tree sets (node/hooks.py), when this node is in one
        self.reserver: Reserver | None = None  # reserves on neighbours (tree/reserve.py)
        self.cut_through: DataPath | None = None  # direct splices' endpoint (tree/data.py)
        self.spawner = ThreadPoolExecutor(4, thread_name_prefix="spawn")  # forks overlap
        self.launcher: Launcher = launcher or ForkLauncher(self.spawner, self.get_watchdog)
        self.machine: Machine = machine or real_machine
        self.find_remote: Callable[[str], FarEnd] | None = None  # a session elsewhere, by path
        self.started = time.time()
        self._ns_problem: str | bool | None = False  # False: not probed yet
        self._reaper: asyncio.Task[None] | None = None
        self._watchdog: Watchdog | None = None
        self._stage: StageCache | None = None
        self._stage_tmp: str | None = None  # without a state directory: a private one of ours
        self.local = self._build_local()
        self.csrv = DynamicDir([Entry("local", 0o555, lambda _: self.local)], name="csrv")
        self.root = TableDir([Entry("csrv", 0o555, lambda _: self.csrv)])

    # ---- the namespace ----

    def _build_local(self) -> DynamicDir:
        table = [
            Entry("arch", 0o444, lambda _: StaticFile(arch_line() + "\n")),
            Entry("status", 0o444, lambda _: GeneratedFile(self.status_text)),
            Entry("env", 0o644, lambda _: env_file(self.env)),
            Entry("ns", 0o644, lambda _: ns_file(self.ns, self.check_ns_line)),
            Entry("clone", 0o666, lambda _: CloneFile(self)),
            Entry("net", 0o444, lambda _: GeneratedFile(self.net_text)),
            Entry("attrs", 0o644, lambda _: attrs_file(self)),
            Entry("stage", 0o755, lambda _: StageDir(self.stage_cache)),
        ]
        if self.export is not None:
            export = self.export
            table.append(Entry("fs", 0o755, lambda _: ExportDir(export, (), "fs", os.stat(export.root))))
        local = DynamicDir(table, self, name="local")
        if self.export is not None:  # its mode is the real directory's, not the table's
            fs = local.walk("fs")
            fs.mode = os.stat(self.export.root).st_mode & 0o777
        return local

    def status_line(self) -> str:
        """``NAME SLOTS FREE LOAD1 MEMFREE_MB up`` and then every attribute as ``k=v``."""
        a = self.attrs()
        return f"{self.name} {self.slots_total} {len(self.free)} {a['load']} " \
               f"{int(a['memfree']) >> 20} up {format_attrs(a)}"

    def status_text(self) -> Any:
        """This node's line, then its subtree's — asked afresh of each child, in parallel, so a
        read costs one round trip per level of the tree — then the total."""
        lines = [self.status_line()]
        parts = [source() for source in self.status_sources]
        # Already running: when only the size was wanted (a stat), what it asked is not left
        # half-made.
        parts = [asyncio.ensure_future(p) if is_awaitable(p) else p for p in parts]
        waiting = [p for p in parts if is_awaitable(p)]
        if not waiting:  # no children: the size is known without waiting (ls -l shows it)
            return self._status_total(lines + [ln for p in parts for ln in p])
        return self._status_text(lines, parts)

    async def _status_text(self, lines: list[str], parts: list[Any]) -> str:
        for p in parts:
            lines += await p if is_awaitable(p) else p
        return self._status_total(lines)

    def _status_total(self, lines: list[str]) -> str:
        rows = [ln.split() for ln in lines]
        total = sum(int(r[1]) for r in rows)
        free = sum(int(r[2]) for r in rows)
        load = max(float(r[3]) for r in rows)
        mem = sum(int(r[4]) for r in rows)
        return "".join(ln + "\n" for ln in lines) + f"total {total} {free} {load:.2f} {mem} nodes={len(rows)}\n"

    def net_text(self) -> str:
        return "".join((a if a.startswith("data ") else f"9p {a}") + "\n" for a in self.addresses)

    # ---- sessions ----

    def new_session(self, user: str = "") -> Session:
        if len(self.sessions) >= self.max_sessions:
            raise NinepError(f"clone: this node has {len(self.sessions)} sessions, its limit; close "
                             "some (echo close > …/ctl), or raise serve --max-sessions",
                             errno.EAGAIN)
        sid = str(self._next_id)
        self._next_id += 1
        session = Session(self, sid)
        session.user = user or current_user.get() or OWNER
        self.sessions[sid] = session
        self.local.add(sid, SessionDir(session))
        log.info("session %s: created", sid)
        return session

    def check_policy(self, session: Owner, n: int) -> None:
        """``n`` more slots for ``session``, made here: refused (and logged) past a cap of the
        policy. Its user's other sessions made here that hold slots count against the caps, and
        the slots it holds already (``res +N`` grows it: N is one res)."""
        if self.policy is None:
            return
        user = session.user
        mine = [s for s in self.sessions.values()
                if s is not session and s.user == user and s.came_from is None and s.nsubs
                and s.session_state != "closed"]
        try:
            self.policy.check_res(user, n, len(mine),
                                  sum(s.nsubs for s in mine) + session.nsubs)
        except NinepError as e:
            log.warning("session %s: %s", session.path, e)
            raise

    def neighbor_lost(self, name: str) -> None:
        """Sub-sessions held through a lost neighbour fail, naming it; the rest go on."""
        for s in self.sessions.values():
            for g in s.delegations:
                if g.neighbor == name:
                    g.mark_lost(f"{name} is gone")

    def close_session(self, session: Owner) -> None:
        session.close()
        self.sessions.pop(session.path, None)
        self.local.discard(session.path)

    def find_end(self, path: str) -> Any:  # Scope | FarEnd (host.Host: the caller checks)
        """The session at ``path``: here (``/csrv/local/3/1`` or ``3/1``), or on another node
        (``/csrv/n1/local/3/1``, ``/csrv/parent/…``) when this node is in a tree."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["csrv"] and parts[1:2] != ["local"] and len(parts) > 1:
            if self.find_remote is None:
                raise NinepError(f"splice: {path} is on another node and this node is in no tree")
            return self.find_remote(path)
        return self.find_session(path)

    def find_session(self, path: str) -> Scope | FarEnd:
        """A session or sub-session by ``/csrv/local/3/1``-style or ``3/1``-style path."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["csrv", "local"]:
            parts = parts[2:]
        elif parts[:1] == ["local"]:
            parts = parts[1:]
        if not parts or parts[0] not in self.sessions:
            raise NinepError(f"splice: no session at {path!r} on node {self.name} "
                             "(paths look like /csrv/local/ID[/SUB])")
        s: Scope | FarEnd = self.sessions[parts[0]]
        for p in parts[1:]:
            if not isinstance(s, Scope):  # a neighbour's sub-session: it has none of its own
                raise NinepError(f"splice: no session at {path!r} on node {self.name}")
            s = s.sub(p)
        return s

    # ---- slots ----

    def attrs(self) -> dict[str, str]:
        """What this node says about itself (node/attrs.py): the system's, then the labels."""
        mine = sum(1 for s in self.sessions.values() if s.came_from is None)
        return {**system_attrs(self.name, self.slots_total, len(self.free), self.machine),
                "sessions": str(mine), **self.labels}

    def known_attrs(self) -> set[str]:
        """Every attribute some node of the subtree has (what a predicate may name)."""
        keys = set(self.attrs())
        for source in self.status_keys:
            keys |= source()
        return keys

    async def reserve(self, session: Owner, n: int, sel: Selection = Selection(),
                      upto: bool = False) -> tuple[list[int], list[Delegate]]:
        """``n`` slots: this node's free ones first, then (through ``reserver``, set by the tree)
        its neighbours'; all or nothing — or, with ``upto``, as many as there are (at least one),
        which is how a neighbour is asked, so a stale idea of its free slots costs nothing."""
        if sel.spread is not None:
            return await self._reserve_spread(session, n, sel)
        k = min(n, sel.take(self.attrs() if sel.filter else {}, len(self.free)))  # meminfo: only if asked
        taken, self.free = self.free[:k], self.free[k:]
        groups: list[Delegate] = []
        try:
            if k < n and self.reserver is not None:
                groups = list(await self.reserver.reserve(session, n - k, sel, session.came_from,
                                                          k))
        except BaseException:
            self.release_slots(taken)
            raise
        got = k + sum(g.count for g in groups)
        if got < n and not (upto and got > 0):
            self.release_slots(taken)
            for g in groups:
                detach(g.close())
            where = f" ({sel})" if sel else ""
            raise NinepError(f"res: not enough slots: asked {n}, {got} free in reach{where}",
                             errno.EBUSY)
        return taken, groups

    async def _reserve_spread(self, session: Owner, n: int,
                              sel: Selection) -> tuple[list[int], list[Delegate]]:
        """``res N spread LABEL``: the label's values seen in this node's subtree are the
        domains (racks, power domains); N is dealt over them one slot at a time, as far as each
        has free slots (as last heard), and each share reserved with ``where LABEL=VALUE``, all
        or nothing. A node without the label is in no domain."""
        label = sel.spread
        assert label is not None
        lines = [self.status_line()]
        for source in self.status_sources:
            got = source()
            lines += await got if is_awaitable(got) else got
        room = sel.free_by(label, lines)
        share = deal(n, room)
        left = n - sum(share.values())
        if left or not share:
            where = f" where {sel.filter}" if sel.filter else ""
            raise NinepError(f"res: cannot spread {n} slots over {label}: "
                             + (", ".join(f"{label}={v} has {room[v]} free" for v in share)
                                or f"no node in reach has the label {label}")
                             + f"{where}", errno.EBUSY)
        taken: list[int] = []
        groups: list[Delegate] = []
        try:
            for v, k in share.items():
                if k:
                    part = Selection(Filter((*sel.filter.preds, Pred(label, "=", v))),
                                     sel.pernode)
                    got_slots, got_groups = await self.reserve(session, k, part)
                    taken += got_slots
                    groups += got_groups
        except BaseException:
            self.release_slots(taken)
            for g in groups:
                detach(g.close())
            raise
        log.info("res %d spread %s: %s", n, label,
                 ", ".join(f"{k} on {label}={v}" for v, k in share.items() if k))
        return taken, groups

    def release_slots(self, slots: Iterable[int]) -> None:
        self.free = sorted(set(self.free) | set(slots))

    # ---- ns ----

    def check_ns_line(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise NinepError(f'ns: cannot parse "{excerpt(line)}": {e}') from None
        if words and words[0] == "mount":
            raise NinepError(f'ns: "{excerpt(line)}": mount lines are not supported yet; '
                             "use bind SRC DST (mount a namespace with `brasil mount` and bind it)")
        if len(words) != 3 or words[0] != "bind":
            raise NinepError(f'ns: bad line "{excerpt(line)}"; expected: bind SRC DST')
        for p in words[1:]:
            if not p.startswith("/"):
                raise NinepError(f'ns: "{excerpt(line)}": {p} must be an absolute path')
        if self._ns_problem is False:
            self._ns_problem = nsexec.probe()
        if self._ns_problem:
            raise NinepError(f"ns: {self._ns_problem}")

    def ns_binds(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        for line in self.ns + lines:
            words = shlex.split(line)
            out += words[1:3]
        return out

    # ---- lifetime ----

    def stage_cache(self) -> StageCache:
        """Staged files by content (node/stage.py), in our state directory, made when first
        used."""
        if self._stage is None:
            base = self.state_dir
            if base is None:
                base = self._stage_tmp = tempfile.mkdtemp(prefix="brasil-stage-")
            self._stage = StageCache(os.path.join(base, "stage"))
        return self._stage

    def get_watchdog(self) -> Watchdog:
        """The process that kills our commands if we die without doing it (exec/reaper.py)."""
        if self._watchdog is None:
            self._watchdog = Watchdog()
        return self._watchdog

    def contain_process(self) -> None:
        """This process is this daemon alone (``brasil serve``): it moves into its commands'
        cgroup directory, where there is one, so all it ever starts dies with it
        (exec/cgroups.py). Not for a process hosting several nodes."""
        cgroups = self.get_watchdog().cgroups
        if cgroups is not None:
            try:
                cgroups.contain_self()
            except OSError as e:
                log.warning("node %s: cannot move into cgroup %s: %s; its commands are still "
                            "tracked one by one", self.name, cgroups.path, e.strerror)

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.ensure_future(self._reap_idle())

    async def _reap_idle(self) -> None:
        period = max(0.05, min(5.0, self.idle_timeout / 4))
        while True:
            await tick(period)
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if s.idle() and now - s.last_active >= self.idle_timeout:
                    log.info("session %s: idle for %.0fs, closing", s.path, now - s.last_active)
                    self.close_session(s)

    async def shutdown(self, grace: float = 3.0) -> None:
        """End every session: TERM, then KILL what is still running after ``grace`` seconds."""
        if self._reaper is not None:
            self._reaper.cancel()
        self.spawner.shutdown(wait=False)
        if self._stage_tmp is not None:
            shutil.rmtree(self._stage_tmp, ignore_errors=True)
        running = [leaf for s in self.sessions.values() for leaf in s.leaves()
                   if leaf.process is not None and leaf.process.running]
        for leaf in running:
            leaf.process.kill(signal.SIGTERM)  # type: ignore[union-attr]
        if running:
            exits = [leaf.process.exited for leaf in running]  # type: ignore[union-attr]
            done, pending = await asyncio.wait(exits, timeout=grace)
            if pending:
                log.info("shutdown: %d process group(s) ignored TERM, sending KILL", len(pending))
        for s in list(self.sessions.values()):
            self.close_session(s)
        if running:
            await asyncio.wait([leaf.process.exited for leaf in running], timeout=grace)  # type: ignore[union-attr]
        if self._watchdog is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._watchdog.close)
            self._watchdog = None
