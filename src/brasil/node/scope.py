"""What a session and a leaf have alike: a directory of files (session_files.py) over one path.

A session (``3``, session.py) and each of its leaves (``3/1``, leaf.py) answer the same ctl
commands and serve the same ten files; this class holds what they do the same way — ``dir``,
``env``, ``ns``, ``mux`` and ``rs`` as set through ctl, splices, waiting until done, the
``session …`` line — and refuses, with the sentence the client sees, what only the other kind
does. Defaults that are never changed in place are class attributes: a reservation makes one
leaf per slot, so each attribute set in ``__init__`` is paid per slot.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import shlex
import time
from collections.abc import Awaitable

from ..exec.command import command_argv
from ..exec.pychild import python_argv
from ..exec.records import NEWLINE, Key, Splitter, quote
from ..ninep.ctl import excerpt
from ..ninep.errors import NinepError
from ..ninep.maybe import Maybe
from .attrs import Selection
from .host import FarEnd, FarSub, Host, Input, Owner, Transfer
from .io import SPLICE, Distributor, Output, Splice
from .ranks import Ranks, fold

log = logging.getLogger("brasil.session")

EVERYWHERE = Selection()  # res with no `where`: any slot in reach

_background: set[asyncio.Future[object]] = set()


def background(aw: Awaitable[object]) -> None:
    """Run ``aw`` with nobody waiting for it (a close, a rank told to a neighbour), holding it
    until it ends: the loop keeps only a weak reference to a task."""
    task = asyncio.ensure_future(aw)
    _background.add(task)
    task.add_done_callback(_background.discard)

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def data_address(state_line: str) -> str:
    """The data endpoint a leaf's ctl line names (``…; data HOST:PORT``)."""
    for part in state_line.split(";"):
        words = part.split()
        if len(words) == 2 and words[0] == "data":
            return words[1]
    raise NinepError("the sub-session did not say where its data endpoint is")


class Delegated:
    """A splice this session arranged between two other nodes: they carry it, and say how it goes."""

    state = "delegated"
    task = None

    def __init__(self, label: str) -> None:
        self.label = label

    def describe(self) -> str:
        return f"splice {self.label}"


class Scope:
    is_leaf = False
    parent: Owner | None = None  # a leaf's session; None for a session
    came_from: str | None = None  # the neighbour that asked for this session (`from`)
    dir: str | None = None  # `dir PATH`: where its commands run (else the session's, the node's)
    args = ""
    mux = "broadcast"
    key = Key()  # replaced, never changed, by `mux hash KEY`
    rs: Splitter = NEWLINE
    error = ""
    writers = 0  # open files writing its input: the last one closed is end of file
    _input: Distributor | None = None  # a session's, once its input has started flowing

    def __init__(self, node: Host, path: str, env: dict[str, str]) -> None:
        self.node = node
        self.path = path  # "3" for a session, "3/1" for its sub-session 1
        self.env = env
        self.ns: list[str] = []
        self.splices: list[Splice | Delegated] = []  # Delegated when the bytes go node to node
        self._done_waiters: list[asyncio.Future[None]] = []

    # ---- what each kind answers its own way ----

    @property
    def top(self) -> Owner:
        raise NotImplementedError

    @property
    def state(self) -> str:
        raise NotImplementedError

    @property
    def nsubs(self) -> int:
        return 0

    def all_done(self) -> bool:
        raise NotImplementedError

    def effective_dir(self) -> str | None:
        raise NotImplementedError

    def effective_env(self) -> dict[str, str]:
        raise NotImplementedError

    def effective_ns(self) -> list[str]:
        raise NotImplementedError

    def output(self, fd: int, who: str) -> Output:
        raise NotImplementedError

    def input(self) -> Input:
        raise NotImplementedError

    async def exec(self, cmd: str) -> None:
        raise NotImplementedError

    def kill(self, sig: int) -> Awaitable[object] | None:
        raise NotImplementedError

    def status_text(self) -> Maybe[str]:
        raise NotImplementedError

    def wait_lines(self) -> list[str]:
        raise NotImplementedError

    def state_line(self) -> str:
        raise NotImplementedError

    def _sub(self, i: int) -> Scope | FarSub:
        raise NotImplementedError

    def indexes(self) -> list[int]:
        return []

    def has_index(self, i: int) -> bool:
        return False

    # ---- what only the other kind does: refused in its words ----

    async def reserve(self, n: int, sel: Selection = EVERYWHERE, upto: bool = False) -> None:
        raise NinepError(f"res: {self.path} is a sub-session and holds exactly one slot")

    async def grow(self, n: int, sel: Selection | None = None) -> None:
        raise NinepError(f"res +{n}: {self.path} is a sub-session and holds exactly one slot; "
                         "grow the session", errno.EINVAL)

    def set_cap(self, key: str, n: int) -> None:
        raise NinepError(f"cap: {self.path} is a sub-session; set caps on the session's ctl",
                         errno.EINVAL)

    def release_ranks(self, ranks: Ranks) -> Awaitable[None] | None:
        raise NinepError(f"release: {self.path} is a sub-session; release ranks through the "
                         "session's ctl", errno.EINVAL)

    async def exec_ranks(self, which: str, cmd: str) -> None:
        raise NinepError(f"exec {which}: {self.path} is a sub-session, one rank; name ranks "
                         "through the session's ctl (or exec CMD here)", errno.EINVAL)

    def set_rank(self, base: int, size: int, origin: str, user: str = "",
                 route: str = "") -> None:
        raise NinepError("rank: set on the session, not on a sub-session")

    async def stage(self, h: str, name: str) -> None:
        raise NinepError("stage: on the session, not on a sub-session", errno.EINVAL)

    def gather(self, k: int, token: str, rs: Splitter) -> None:
        raise NinepError(f"gather: {self.path} does not run a process; gather into a "
                         "sub-session", errno.EINVAL)

    async def scatter(self, mode: str, key: Key | None, rs: Splitter,
                      dests: list[tuple[str, str]]) -> None:
        raise NinepError(f"scatter: {self.path} does not run a process; scatter from a "
                         "sub-session", errno.EINVAL)

    def splice_in(self, token: str, label: str) -> None:
        raise NinepError(f"splicein: {self.path} does not run a process; splice to a sub-session")

    async def splice_out(self, token: str, address: str, label: str) -> None:
        raise NinepError(f"spliceout: {self.path} does not run a process; splice from a sub-session")

    # ---- settings ----

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

    def set_env(self, assignment: str) -> None:
        key, value = parse_env(assignment)
        self.env[key] = value

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

    def touch(self) -> None:
        self.top.last_active = time.monotonic()

    def command(self, cmd: str) -> tuple[str, list[str], dict[str, str]]:
        """``exec CMD``: the command checked, its argv (``exec/command.py``, or the shell inside
        a private namespace when ``ns`` binds) and its environment."""
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
        return cmd, argv, env

    # ---- waiting ----

    async def wait(self) -> None:
        while not self.all_done():
            f = asyncio.get_running_loop().create_future()
            self._done_waiters.append(f)
            await f

    def _wake_waiters(self) -> None:
        waiters, self._done_waiters = self._done_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # ---- splices ----

    def sub(self, index: str) -> Scope | FarSub:
        """Sub-session ``index``: a leaf here, or one held by a neighbour."""
        if not index.isdigit() or not self.has_index(int(index)):
            raise NinepError(f"session {self.path} has no sub-session {excerpt(index)!r} "
                             f"(it has {fold(self.indexes())})")
        return self._sub(int(index))

    def xsplice(self, a: str, b: str) -> Splice | Awaitable[None]:
        src, dst = self.sub(a), self.sub(b)
        if src is dst:
            raise NinepError("xsplice: a sub-session cannot feed itself")
        return self.connect(src, 1, dst, f"{src.path}>{dst.path}")

    def splice(self, path: str, srcfd: int, localfd: int) -> Splice | Awaitable[None]:
        other = self.node.find_end(path)
        if srcfd in (1, 2) and localfd == 0:
            return self.connect(other, srcfd, self, f"{other.path}:{srcfd}>{self.path}:0")
        if srcfd == 0 and localfd in (1, 2):
            return self.connect(self, localfd, other, f"{self.path}:{localfd}>{other.path}:0")
        raise NinepError(f"splice: connect an output (1 or 2) to an input (0); got {srcfd} and {localfd}")

    def connect(self, src: Scope | FarEnd, fd: int, dst: Scope | FarEnd,
                label: str) -> Splice | Awaitable[None]:
        """``src``'s output ``fd`` into ``dst``'s input: in this process when both ends are here,
        otherwise straight between their nodes (cut-through), through the tree only failing that."""
        if isinstance(src, Scope) and isinstance(dst, Scope):
            return self._splice(src.output(fd, SPLICE), dst.input(), label, src, dst)
        return self._cut_through(src, fd, dst, label)

    async def _cut_through(self, src: Scope | FarEnd, fd: int, dst: Scope | FarEnd,
                           label: str) -> None:
        cut = self.node.cut_through
        leafish = [not isinstance(x, Scope) or x.is_leaf for x in (src, dst)]
        if cut is not None and fd == 1 and all(leafish):
            token = cut.new_token()
            try:
                if isinstance(dst, Scope):
                    dst.splice_in(token, label)
                    addr = str(cut.address)
                else:
                    await dst.ctl(f"splicein {token}\n")
                    addr = data_address(await dst.ctl_state())
                if isinstance(src, Scope):
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

    def _splice(self, src: Output, dst: Input, label: str, a: Scope | FarEnd,
                b: Scope | FarEnd) -> Splice:
        # io.Splice annotates its consumer as a Sink but uses only write and close, which a
        # session's Distributor has (no `load`): io.py is another branch's to retype.
        sp = Splice(src, dst, label,  # type: ignore[arg-type]
                    on_end=lambda s: log.info("session %s: %s", self.path, s.describe()))
        self.splices.append(sp)
        for other in (a, b):
            if isinstance(other, Scope) and other.top is not self.top and sp not in other.splices:
                other.splices.append(sp)
        return sp

    # ---- reporting ----

    def _state_line(self, counts: dict[str, int], subs: int,
                    transfers: list[Transfer], extra: str = "") -> str:
        """``session ID STATE subs N``, how many sub-sessions are in each state, then settings
        (and ``extra``) and splices."""
        parts = " ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        line = f"session {self.path} {self.state} subs {subs}"
        line += f" {parts}" if parts else ""
        line += f" mux {self.mux_text()} rs {self.rs}"
        if not self.is_leaf:
            line += f" user {self.top.user or '-'}"
        line += extra
        for sp in [*self.splices, *transfers]:
            line += f"; {sp.describe()}"
        return line
