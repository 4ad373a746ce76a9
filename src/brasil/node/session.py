"""Sessions (SPEC.md §3): reservation, exec, output aggregation, input distribution, splices.

A :class:`Session` is created by reading ``clone``. ``res N`` gives it N sub-sessions, each a leaf
session bound to one slot; a leaf runs at most one process at a time. Reading an aggregate's output
claims its leaves' outputs and interleaves them on record boundaries; writing its input distributes
by ``mux``. The session outlives the files that created it: it ends on ``close``, or when it has
been idle (no open files, no processes, no unread output) for the node's idle timeout.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import shlex
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from ..exec.command import command_argv
from ..exec.process import Process
from ..exec.pychild import python_argv
from ..exec.records import NEWLINE, Key, Splitter, quote
from ..lifecycle import step
from ..ninep.ctl import excerpt
from ..ninep.errors import NinepError
from ..ninep.stream import Stream
from . import lifecycle
from .attrs import Filter, Selection
from .io import AGGREGATE, SPLICE, Aggregator, Distributor, Output, Sink, Splice, StreamSink
from .launch import start_leaves

if TYPE_CHECKING:
    from .daemon import Node

log = logging.getLogger("brasil.session")

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def data_address(state_line: str) -> str:
    """The data endpoint a leaf's ctl line names (``…; data HOST:PORT``)."""
    for part in state_line.split(";"):
        words = part.split()
        if len(words) == 2 and words[0] == "data":
            return words[1]
    raise NinepError("the sub-session did not say where its data endpoint is")


def parse_env(text: str) -> tuple[str, str]:
    """``KEY=VALUE``, checked when written: a value no process could be given would otherwise
    fail every later exec."""
    key, eq, value = text.partition("=")
    if not eq or not ENV_KEY.fullmatch(key):
        raise NinepError(f'env: bad assignment "{excerpt(text)}"; each is KEY=VALUE, KEY made of '
                         "letters, digits and _", errno.EINVAL)
    if "\0" in value:
        raise NinepError(f"env: the value of {key} holds a NUL byte, which no environment can "
                         "carry", errno.EINVAL)
    return key, value


class Delegated:
    """A splice this session arranged between two other nodes: they carry it, and say how it goes."""

    state = "delegated"

    def __init__(self, label: str) -> None:
        self.label = label

    def describe(self) -> str:
        return f"splice {self.label}"


class Session:
    # Defaults that are never changed in place, as class attributes: a reservation makes one
    # Session per slot, and setting twenty attributes each made res 32 cost twice the foundation's.
    came_from: str | None = None  # the neighbour that asked for this session (`from`)
    dir: str | None = None  # `dir PATH`: where its commands run (else the node's)
    args = ""
    mux = "broadcast"
    key = Key()  # replaced, never changed, by `mux hash KEY`
    rs: Splitter = NEWLINE
    process: Process | None = None
    exit_status: int | None = None
    error = ""
    open_handles = 0
    _running = 0  # processes running below this session, here
    writers = 0
    _input: Sink | None = None
    # Where our sub-sessions sit in the whole session (set by `rank` when a neighbour made
    # this session for some of its own): rank of our sub 0, the whole size, its origin.
    rank_base = 0
    size: int | None = None
    lazy = False  # `lazy on`: sub-sessions start when their input first has bytes
    label = False  # `label on`: merged output records carry NODE/RANK: prefixes
    user = ""  # who made it (the 9P attach name); a neighbour's session: the origin's
    default_where: Any = None  # a clone in a query directory: res draws from its nodes
    starting = False  # a deferred process is being started now
    _counted = False  # counted among its sessions' running processes

    def __init__(self, node: Node, path: str, parent: Session | None = None,
                 slot: int | None = None) -> None:
        self.node = node
        self.path = path  # "3" for a session, "3/1" for its sub-session 1
        self.parent = parent
        self.slot = slot
        # Two lifecycles, one per kind: a session's (lifecycle.SESSION: res, exec, close) and a
        # leaf sub-session's slot (lifecycle.SLOT: its process); ``state`` shows the one it has.
        self.session_state: str | None = "new" if slot is None else None
        self.slot_state: str | None = "idle" if slot is not None else None
        self.subs: list[Session] = []  # the sub-sessions here; those elsewhere are in delegations
        self.delegations: list[Any] = []  # sessions on neighbours holding some of our sub-sessions
        self.env: dict[str, str] = dict(node.env) if parent is None else {}
        self.ns: list[str] = []
        self.splices: list[Any] = []  # Splice, or Delegated when the bytes go node to node
        self.transfers: list[Any] = []  # this leaf's ends of direct splices (tree/data.py)
        self.last_active = time.monotonic()
        self._aggregates: dict[int, Output] = {}
        self._aggregators: list[Aggregator] = []
        self._done_waiters: list[asyncio.Future[None]] = []
        self._remote_subs: dict[int, Any] = {}
        self.origin = f"{node.name}:/csrv/local/{path}"
        if slot is not None:
            self._new_streams()

    # ---- shape ----

    @property
    def is_leaf(self) -> bool:
        return self.slot is not None

    @property
    def top(self) -> Session:
        return self.parent.top if self.parent else self

    def leaves(self) -> list[Session]:
        """The sub-sessions that run here (remote ones are reached through ``delegations``)."""
        if self.is_leaf:
            return [self]
        return [leaf for s in self.subs for leaf in s.leaves()]

    def effective_dir(self) -> str | None:
        return self.dir if self.dir is not None or self.parent is None else \
            self.parent.effective_dir()

    def set_dir(self, path: str) -> None:
        """As ``srun`` does: a client sends the directory it runs in, so a relative path in a
        command means on every node what it meant where it was typed."""
        if not path.startswith("/") or "\0" in path or len(path) > 4096:
            raise NinepError(f"dir: {quote(path)} is not an absolute path; usage: dir /PATH",
                             errno.EINVAL)
        self.dir = path

    def check_dir(self) -> None:
        d = self.effective_dir()
        if d is not None and not os.path.isdir(d):
            raise NinepError(f"exec: the directory {d} does not exist on node {self.node.name}: "
                             "run from a directory every node has, or name one (brasil run "
                             "--dir, push's cd)", errno.ENOENT)

    def effective_env(self) -> dict[str, str]:
        base = self.parent.effective_env() if self.parent else {}
        return {**base, **self.env}

    def effective_ns(self) -> list[str]:
        return (self.parent.effective_ns() if self.parent else []) + self.ns

    def touch(self) -> None:
        self.top.last_active = time.monotonic()

    @property
    def state(self) -> str:
        """What status lines and queries show: a leaf's slot state, else the session's."""
        state = self.slot_state if self.is_leaf else self.session_state
        assert state is not None
        return state

    def session_step(self, event: str) -> None:
        """Move this session along lifecycle.SESSION (an event not drawn there raises)."""
        assert self.session_state is not None, f"{self.path} is a sub-session, not a session"
        self.session_state = step(lifecycle.SESSION, self.session_state, event,
                                  f"session {self.path}")

    def slot_step(self, event: str) -> None:
        """Move this leaf's slot along lifecycle.SLOT (an event not drawn there raises)."""
        assert self.slot_state is not None, f"{self.path} is a session, not a sub-session"
        self.slot_state = step(lifecycle.SLOT, self.slot_state, event, f"sub-session {self.path}")

    def _new_streams(self) -> None:
        limit = self.node.output_limit
        self.stdin = Stream(limit)
        self.stdout = Output(Stream(limit), f"{self.path} stdout")
        self.stderr = Output(Stream(limit), f"{self.path} stderr")

    # ---- ctl verbs ----

    def attrs(self) -> dict[str, str]:
        """What a session says about itself to queries (``user=alice/state=running``)."""
        return {"user": self.user or "-", "state": self.state, "command": self.args or "-",
                "session": f"{self.node.name}/{self.path}"}

    async def reserve(self, n: int, sel: Selection = Selection(), upto: bool = False) -> None:
        if self.is_leaf:
            raise NinepError(f"res: {self.path} is a sub-session and holds exactly one slot")
        self.session_step("reserve")
        if self.default_where is not None:  # made in a query directory: its nodes only
            sel = Selection(Filter(self.default_where.preds + sel.filter.preds), sel.pernode)
        try:
            slots, delegated = await self.node.reserve(self, n, sel, upto)
        except BaseException:
            if self.session_state == "reserving":  # (not closed meanwhile)
                self.session_step("refused")
            raise
        if self.session_state == "closed":  # closed from another handle meanwhile: give back
            self.node.release_slots(slots)
            for g in delegated:
                asyncio.ensure_future(g.close())
            raise NinepError(f"res: session {self.path} was closed meanwhile", errno.EBADF)
        self.session_step("granted")
        self.subs = [Session(self.node, f"{self.path}/{i}", self, slot) for i, slot in enumerate(slots)]
        self.delegations = delegated
        for g in delegated:
            g.on_done.append(self._notify_done)
        if self.came_from is None:  # a neighbour's session learns its ranks from that neighbour
            self.tell_ranks()       # in a moment (set_rank), and only then passes them on
        where = ", ".join([f"{len(slots)} here"] + [f"{g.count} via {g.neighbor}" for g in delegated])
        log.info("session %s: reserved %d slot(s): %s", self.path, self.nsubs, where)

    def set_rank(self, base: int, size: int, origin: str, user: str = "") -> None:
        """``rank BASE SIZE ORIGIN``: our sub-sessions are BASE… of a session of SIZE made at
        ORIGIN; passed on to the neighbours holding some of ours."""
        if self.parent is not None:
            raise NinepError("rank: set on the session, not on a sub-session")
        before = (self.rank_base, self.size, self.origin, self.user)
        self.rank_base, self.size, self.origin = base, size, origin
        if user and user != "-":
            self.user = user
        if (self.rank_base, self.size, self.origin, self.user) != before:  # each exec repeats it
            self.tell_ranks()

    def tell_ranks(self) -> None:
        """Each group learns its ranks before anything can be run there: the write goes out
        ahead of any later request on the same connection."""
        for g in self.delegations:
            asyncio.ensure_future(g.tell(self.rank_line(g)))

    def rank_line(self, g: Any) -> str:
        return (f"rank {self.rank_base + g.first} {self.size or self.nsubs} {self.origin} "
                f"{shlex.quote(self.top.user or '-')}")

    def label_prefix(self) -> bytes:
        """``label on``: what each of this sub-session's records is prefixed with in the merged
        output, as pdsh and clush print lines: ``NODE/RANK: ``."""
        return f"{self.node.name}/{self.rank_env()['BRASIL_RANK']}: ".encode()

    def rank_env(self) -> dict[str, str]:
        """What a process here learns of its place: its node, its rank in the whole session
        (0…N-1, unique across every node) and N, and the session's name."""
        top = self.top
        rank = str(top.rank_base + int(self.path.rsplit("/", 1)[-1])) if self.parent else \
            str(top.rank_base)
        env = {"BRASIL_NODE": self.node.name, "BRASIL_RANK": rank,
               "BRASIL_SIZE": str(top.size or top.nsubs), "BRASIL_SUB": rank,
               "BRASIL_SESSION": top.origin, "BRASIL_PYTHON": sys.executable}
        if self.node.state_dir:  # this node's, never a neighbour's (brasil workers keeps its
            env["BRASIL_STATE_DIR"] = self.node.state_dir  # worker directories there)
        return env

    async def exec(self, cmd: str) -> None:
        cmd = cmd.strip()
        if not cmd:
            raise NinepError("exec: empty command; usage: exec CMD…")
        if "\0" in cmd:
            raise NinepError("exec: the command holds a NUL byte")
        env = {**os.environ, **self.effective_env()}
        binds = self.node.ns_binds(self.effective_ns())
        if binds:  # programs are looked up inside the namespace: leave it to the shell there
            argv = python_argv("brasil.exec.nsexec", *binds, "--", "/bin/sh", "-c", cmd)
        else:
            argv = command_argv(cmd, env.get("PATH", os.defpath))
        if not self.is_leaf and self.session_state == "new":
            await self.reserve(1)
        if self.is_leaf or self.subs:  # processes start here: they need the directory
            self.check_dir()
        if self.is_leaf:
            errors = await start_leaves(self.node, [self], cmd, argv, env)
            if errors:
                raise errors[0]
            return
        assert self.session_state is not None
        running = step(lifecycle.SESSION, self.session_state, "exec", f"session {self.path}")
        busy = [leaf.path for leaf in self.leaves() if leaf.slot_state == "running"]
        busy += [f"{g.first}-{g.first + g.count - 1} on {g.neighbor}" for g in self.delegations
                 if g.running]
        if busy:  # refused before the state moves: nothing to roll back
            raise NinepError(f"exec: sub-session(s) {', '.join(busy)} still running; "
                             "kill them or wait first", errno.EBUSY)
        self.session_state, self.args = running, cmd
        self._reset_io()
        leaves = self.leaves()
        delegated = [g for g in self.delegations if not g.lost]
        remote_setup = [f"mux {self.mux_text()}", f"rs {self.rs}",
                        f"lazy {'on' if self.lazy else 'off'}",
                        f"label {'on' if self.label else 'off'}"]
        workdir = self.effective_dir()
        if workdir is not None:
            remote_setup.append(f"dir {workdir}")
        results = await asyncio.gather(start_leaves(self.node, leaves, cmd, argv, env),
                                       *(g.exec(cmd, self.effective_env(),
                                                remote_setup + [self.rank_line(g)])
                                         for g in delegated), return_exceptions=True)
        errors = [r for r in results[1:] if isinstance(r, BaseException)]
        errors += results[0] if isinstance(results[0], list) else [results[0]]
        if errors:
            for leaf in leaves:
                if leaf.process and leaf.process.running:
                    leaf.process.kill(signal.SIGKILL)
            await asyncio.gather(*(g.kill(signal.SIGKILL) for g in delegated if g.running),
                                 return_exceptions=True)
            if self.session_state == "running" and self.all_done():  # nothing started
                self.session_step("finish")
            raise errors[0]
        log.info("session %s: exec %r on %d slot(s) here and %d elsewhere", self.path, cmd,
                 len(leaves), sum(g.count for g in delegated))

    def _count_running(self) -> None:
        if self._counted:
            return
        self._counted = True
        s = self.parent
        while s is not None:  # an exec in one sub-session makes its session run too
            s._running += 1
            if s.session_state in ("reserved", "done"):
                s.session_step("exec")
            s = s.parent

    def _uncount_running(self) -> None:
        if not self._counted:
            return
        self._counted = False
        s = self.parent
        while s is not None:
            s._running -= 1
            s = s.parent

    def _started(self, cmd: str, proc: Process) -> None:
        self.process, self.args, self.exit_status, self.error = proc, cmd, None, ""
        self.slot_step("start")
        self.starting = False
        self._count_running()
        proc.on_exit(self._exited)
        self.touch()

    def defer(self, cmd: str, argv: list[str], env: dict[str, str]) -> None:
        """``lazy on``: the process starts when the first bytes of its input arrive; if the
        input ends empty it never runs (status 0, no output), as a copy of a fan-out that was
        dealt no record does not run in PUSH."""
        self.args, self.exit_status, self.error = cmd, None, ""
        self.slot_step("defer")
        self._count_running()
        stdin = self.stdin
        self.stdin.when_ready(lambda: self._input_ready(stdin, cmd, argv, env))

    def _input_ready(self, stdin: Stream, cmd: str, argv: list[str], env: dict[str, str]) -> None:
        if self.slot_state != "waiting" or stdin is not self.stdin:
            return  # killed or closed meanwhile
        if len(stdin):
            self.starting = True
            asyncio.ensure_future(self._start_deferred(cmd, argv, env))
            return
        self.slot_step("skip")
        self.exit_status = 0
        for o in (self.stdout, self.stderr):
            o.stream.close()
        self._uncount_running()
        self.touch()
        self._notify_done()

    async def _start_deferred(self, cmd: str, argv: list[str], env: dict[str, str]) -> None:
        errors = await start_leaves(self.node, [self], cmd, argv, env)
        if errors and self.slot_state == "waiting":
            self.starting = False
            self.error = errors[0].message if isinstance(errors[0], NinepError) else str(errors[0])
            self.slot_step("fail")
            self.exit_status = 127
            for o in (self.stdout, self.stderr):
                o.stream.close()
            self.stdin.break_()
            self._uncount_running()
            self._notify_done()

    def _exited(self, status: int) -> None:
        self.exit_status = status
        proc = self.process
        event = "killed" if proc is not None and proc.signalled else "exit"
        if self.slot_state == "running":
            self.slot_step(event)
        log.debug("session %s: pid %d %s, status %d", self.path,
                  proc.pid if proc else 0, self.slot_state, status)
        self._uncount_running()
        self.touch()
        self._notify_done()

    def _notify_done(self) -> None:
        s: Session | None = self
        while s is not None:
            if s.all_done():
                if s.session_state == "running":
                    s.session_step("finish")
                    codes = [leaf.exit_status for leaf in s.leaves()]
                    log.info("session %s: every process ended: %d here (%d with status 0)%s",
                             s.path, len(codes), codes.count(0),
                             f", {len(s.delegations)} delegation(s) elsewhere" if s.delegations else "")
                waiters, s._done_waiters = s._done_waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
            s = s.parent

    def all_done(self) -> bool:
        if self.is_leaf:
            return self.slot_state not in ("running", "waiting")
        return self._running == 0 and not any(g.running for g in self.delegations)

    async def wait(self) -> None:
        while not self.all_done():
            f = asyncio.get_running_loop().create_future()
            self._done_waiters.append(f)
            await f

    def kill(self, sig: int = signal.SIGTERM) -> Any:
        n = 0
        for leaf in self.leaves():
            if leaf.slot_state == "waiting" and not leaf.starting:  # never started: ends now
                leaf.slot_step("killed")
                leaf.exit_status = 128 + sig
                for o in (leaf.stdout, leaf.stderr):
                    o.stream.close()
                leaf.stdin.break_()
                leaf._uncount_running()
                leaf._notify_done()
            elif leaf.process is not None:
                n += leaf.process.running
                leaf.process.kill(sig)  # ended: what it left in its cgroup (setsid'd)
        log.info("session %s: signal %d to %d process group(s) here, %d group(s) elsewhere",
                 self.path, sig, n, len(self.delegations))
        if self.delegations:
            return asyncio.gather(*(g.kill(sig) for g in self.delegations if g.running))
        return None

    def set_mux(self, args: list[str]) -> None:
        mode = args[0]
        if self._input is not None:
            raise NinepError("mux: input has already started flowing; set mux before writing input")
        if mode in ("broadcast", "rr", "balance") and len(args) == 1:
            self.mux, self.key = mode, Key()
        elif mode == "hash" and len(args) == 2:
            try:
                self.mux, self.key = "hash", Key(args[1])
            except ValueError as e:
                raise NinepError(f"mux: {e}", errno.EINVAL) from None
        else:
            raise NinepError(f"mux: bad mode {quote(' '.join(args))}; usage: mux broadcast | mux rr"
                             " | mux balance | mux hash KEY (a field number from 1, or a regex)",
                             errno.EINVAL)

    def mux_text(self) -> str:
        return f"hash {shlex.quote(str(self.key))}" if self.mux == "hash" else self.mux

    def set_env(self, assignment: str) -> None:
        key, value = parse_env(assignment)
        self.env[key] = value

    # ---- data ----

    def _reset_io(self) -> None:
        """A new exec of an aggregate: new aggregation and distribution for the new pipes."""
        self._aggregates.clear()
        self._input = None

    def output(self, fd: int, who: str) -> Output:
        """Claim output ``fd`` (1 stdout, 2 stderr) for ``who``; an aggregate's merges its leaves'."""
        if fd not in (1, 2):
            raise NinepError(f"fd {fd} is not an output; use 1 (stdout) or 2 (stderr)")
        if self.is_leaf:
            out = self.stdout if fd == 1 else self.stderr
            out.take(who)
            return out
        if not self.nsubs:
            raise NinepError(f"session {self.path} has no processes yet: res and exec first")
        agg = self._aggregates.get(fd)
        if agg is None:
            sources, prefixes = [], []
            for leaf in self.leaves():
                o = leaf.stdout if fd == 1 else leaf.stderr
                if o.claim is None:
                    o.take(AGGREGATE)
                    sources.append(o)
                    prefixes.append(leaf.label_prefix() if self.top.label else b"")
            delegated = [g for g in self.delegations if not g.lost]  # they label their own records
            sources += [g.output(fd, f"{self.path} via {g.neighbor}") for g in delegated]
            prefixes += [b""] * len(delegated)
            aggregator = Aggregator(sources, self.rs, self.node.output_limit,
                                    prefixes=prefixes if self.top.label else None)
            self._aggregators.append(aggregator)
            agg = Output(aggregator.out, f"{self.path} {'stdout' if fd == 1 else 'stderr'}")
            self._aggregates[fd] = agg
        agg.take(who)
        return agg

    def input(self) -> Sink:
        if self.is_leaf:
            return StreamSink(self.stdin)
        if not self.nsubs:
            raise NinepError(f"session {self.path} has no processes yet: res and exec first")
        if self._input is None:
            live = [g for g in self.delegations if not g.lost]
            sinks: list[Sink] = [s.input() for s in self.leaves()] + [g.input() for g in live]
            weights = [1] * len(self.leaves()) + [g.count for g in live]
            self._input = Distributor(sinks, self.mux, self.key, self.rs, weights)
        return self._input

    @property
    def nsubs(self) -> int:
        return len(self.subs) + sum(g.count for g in self.delegations)

    def sub(self, index: str) -> Any:
        """Sub-session ``index``: a Session here, or (made when first asked for, so that a large
        reservation costs nothing per remote slot) a RemoteSub of the group holding it."""
        if not index.isdigit() or int(index) >= self.nsubs:
            raise NinepError(f"session {self.path} has no sub-session {excerpt(index)!r} "
                             f"(it has {self.nsubs})")
        i = int(index)
        if i < len(self.subs):
            return self.subs[i]
        if i not in self._remote_subs:
            g = next(g for g in self.delegations if g.first <= i < g.first + g.count)
            self._remote_subs[i] = g.sub(i - g.first, self)
        return self._remote_subs[i]

    def xsplice(self, a: str, b: str) -> Any:
        src, dst = self.sub(a), self.sub(b)
        if src is dst:
            raise NinepError("xsplice: a sub-session cannot feed itself")
        return self.connect(src, 1, dst, f"{src.path}>{dst.path}")

    def splice(self, path: str, srcfd: int, localfd: int) -> Any:
        other = self.node.find_end(path)
        if srcfd in (1, 2) and localfd == 0:
            return self.connect(other, srcfd, self, f"{other.path}:{srcfd}>{self.path}:0")
        if srcfd == 0 and localfd in (1, 2):
            return self.connect(self, localfd, other, f"{self.path}:{localfd}>{other.path}:0")
        raise NinepError(f"splice: connect an output (1 or 2) to an input (0); got {srcfd} and {localfd}")

    def connect(self, src: Any, fd: int, dst: Any, label: str) -> Any:
        """``src``'s output ``fd`` into ``dst``'s input: in this process when both ends are here,
        otherwise straight between their nodes (cut-through), through the tree only failing that."""
        if isinstance(src, Session) and isinstance(dst, Session):
            return self._splice(src.output(fd, SPLICE), dst.input(), label, src, dst)
        return self._cut_through(src, fd, dst, label)

    async def _cut_through(self, src: Any, fd: int, dst: Any, label: str) -> None:
        cut = self.node.cut_through
        leafish = [not isinstance(x, Session) or x.is_leaf for x in (src, dst)]
        if cut is not None and fd == 1 and all(leafish):
            token = cut.new_token()
            try:
                if isinstance(dst, Session):
                    dst.splice_in(token, label)
                    addr = str(cut.address)
                else:
                    await dst.ctl(f"splicein {token}\n")
                    addr = data_address(await dst.ctl_state())
                if isinstance(src, Session):
                    await src.splice_out(token, addr, label)
                else:
                    await src.ctl(f"spliceout {token} {addr}\n")
                self.splices.append(Delegated(f"{label} direct to {addr}"))
                log.info("session %s: splice %s: direct to %s", self.path, label, addr)
                return
            except (NinepError, ConnectionError) as e:
                log.info("session %s: splice %s: no direct path (%s); through the tree",
                         self.path, label, e)
        self._splice(src.output(fd, SPLICE), dst.input(), f"{label} via the tree", src, dst)

    def gather(self, k: int, token: str, rs: Splitter) -> None:
        """Expect ``k`` direct data connections presenting ``token``; their bytes are merged into
        our stdin on record boundaries, which reaches end of file when all ``k`` have ended."""
        if not self.is_leaf or self.node.cut_through is None:
            raise NinepError(f"gather: {self.path} does not run a process; gather into a "
                             "sub-session", errno.EINVAL)
        limit = self.node.output_limit
        sources = [Output(Stream(limit), f"{self.path} gather {i}") for i in range(k)]
        self._aggregators.append(Aggregator(sources, rs, limit, out=self.stdin))
        self.transfers += self.node.cut_through.expect(
            token, [StreamSink(o.stream) for o in sources], f"gather {k} {token[:8]}")

    async def scatter(self, mode: str, key: Key | None, rs: Splitter,
                      dests: list[tuple[str, str]]) -> None:
        """Send our stdout straight to ``dests`` (TOKEN, ADDR pairs), cut into records: all to
        one, each block to whichever has room (balance), or each record by its key (hash)."""
        if not self.is_leaf or self.node.cut_through is None:
            raise NinepError(f"scatter: {self.path} does not run a process; scatter from a "
                             "sub-session", errno.EINVAL)
        if self.stdout.claim is not None:
            self.stdout.take(SPLICE)  # raises, saying who has it
        t = await self.node.cut_through.scatter(dests, lambda: self.output(1, SPLICE), mode, key,
                                                rs, f"scatter {mode} to {len(dests)}")
        self.transfers.append(t)

    def splice_in(self, token: str, label: str) -> None:
        """Expect a direct connection presenting ``token``; its bytes become our stdin."""
        if not self.is_leaf or self.node.cut_through is None:
            raise NinepError(f"splicein: {self.path} does not run a process; splice to a sub-session")
        self.transfers += self.node.cut_through.expect(token, [StreamSink(self.stdin)], label)

    async def splice_out(self, token: str, address: str, label: str) -> None:
        """Send our stdout straight to the endpoint at ``address`` (ConnectionError if unreachable)."""
        if not self.is_leaf or self.node.cut_through is None:
            raise NinepError(f"spliceout: {self.path} does not run a process; splice from a sub-session")
        if self.stdout.claim is not None:
            self.stdout.take(SPLICE)  # raises, saying who has it
        t = await self.node.cut_through.send(address, token, lambda: self.output(1, SPLICE), label)
        self.transfers.append(t)

    def _splice(self, src: Output, dst: Sink, label: str, a: Any, b: Any) -> Splice:
        sp = Splice(src, dst, label, on_end=lambda s: log.info("session %s: %s", self.path, s.describe()))
        self.splices.append(sp)
        for other in (a, b):
            if isinstance(other, Session) and other.top is not self.top and sp not in other.splices:
                other.splices.append(sp)
        return sp

    def unread_output(self) -> bool:
        return any(len(o.stream) for leaf in self.leaves() for o in (leaf.stdout, leaf.stderr)) or \
            any(len(o.stream) for o in self._aggregates.values())

    # ---- reporting ----

    def status_text(self) -> Any:
        """One line per sub-session; waits on neighbours when some live there."""
        lines = [leaf.status_line() for leaf in self.leaves()]
        if not self.delegations:
            return "".join(ln + "\n" for ln in lines)
        return self._status_text(lines)

    async def _status_text(self, lines: list[str]) -> str:
        for more in await asyncio.gather(*(g.status_lines() for g in self.delegations)):
            lines += more
        return "".join(ln + "\n" for ln in lines)

    def status_line(self) -> str:
        pid = self.process.pid if self.process else "-"
        status = "-" if self.exit_status is None else str(self.exit_status)
        sub = self.path.split("/", 1)[1] if "/" in self.path else self.path
        line = f"{sub} {self.node.name} {self.slot} {self.state} {pid} {status}"
        errors = [self.error] if self.error else []
        errors += [t.describe() for t in self.transfers if t.state == "failed"]
        return line + "".join(f" {e}" for e in errors)

    def wait_lines(self) -> list[str]:
        out = []
        for leaf in self.leaves():
            sub = leaf.path.split("/", 1)[1] if "/" in leaf.path else leaf.path
            line = f"{sub} {'-' if leaf.exit_status is None else leaf.exit_status}"
            proc = leaf.process
            if leaf.exit_status and leaf.exit_status <= 128 and proc is not None \
                    and proc.input_left:
                line += " unread"  # it failed (not killed) before the end of its input
            out.append(line)
        for g in self.delegations:
            out += g.wait_lines()
        return out

    def state_line(self) -> str:
        """``session ID STATE subs N`` and how many sub-sessions are in each state, those on
        other nodes included (as last heard: running until their wait answers, then exited)."""
        counts: dict[str, int] = {}
        for leaf in self.leaves():
            counts[leaf.state] = counts.get(leaf.state, 0) + 1
        for g in self.delegations:
            key = "lost" if g.lost else "running" if g.running else \
                "exited" if g.wait_result is not None else "idle"
            counts[key] = counts.get(key, 0) + g.count
        parts = " ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        line = f"session {self.path} {self.state} subs {self.nsubs if not self.is_leaf else 1}"
        line += f" {parts}" if parts else ""
        line += f" mux {self.mux_text()} rs {self.rs}"
        if not self.is_leaf:
            line += f" user {self.user or '-'}"
        for sp in self.splices + self.transfers:
            line += f"; {sp.describe()}"
        if self.is_leaf and self.node.cut_through is not None:
            line += f"; data {self.node.cut_through.address}"
        return line

    # ---- the end ----

    def idle(self) -> bool:
        return (self.open_handles == 0 and self.all_done() and not self.unread_output()
                and all(sp.state != "running" for sp in self.splices))

    def close(self) -> None:
        if self.session_state == "closed":
            return
        freed = []
        for leaf in self.leaves():
            if leaf.process is not None:  # ended too: nothing it left may hold on to the slot
                leaf.process.kill(signal.SIGKILL)
            leaf.stdin.close()
            for o in (leaf.stdout, leaf.stderr):
                o.stream.break_()
            if leaf.slot is not None:
                freed.append(leaf.slot)
            leaf.slot_step("release")
        self.node.release_slots(freed)  # at once: one merge, not one sort per slot
        for agg in self._aggregators:
            agg.cancel()
        for sp in self.splices + [t for leaf in self.leaves() for t in leaf.transfers]:
            if getattr(sp, "task", None) is not None:
                sp.task.cancel()
        for g in self.delegations:
            asyncio.ensure_future(g.close())
        if not self.is_leaf:
            self.session_step("close")
        log.info("session %s: closed", self.path)
