"""A session's processes as files (TBON-FS; UEM's ``debug``): ``proc/RANK/`` for each rank, and
group files on the session that act on every rank, reduced in the tree.

Per rank (``proc/RANK/``): ``status``, ``stack``, ``cmdline``, ``environ``, ``maps`` (read),
``signal`` (write a name or number), ``ctl`` (``stop``, ``cont``, ``detach``, ``break WHERE``),
``mem`` (read and write at an offset; writing only while the rank is stopped), ``eval`` (write an
expression, read its value; the rank must be under the debugger and stopped).

On the session: ``stacks`` (the merged prefix tree of every rank's stacks, one frame a line with
its ranks and nodes), ``signal``, ``stopped`` (blocks until every rank is stopped, then says where
they stopped, as classes), ``eval`` (write an expression, read its classes of values across
ranks) and ``pgroup``, the machine form of all of them: write a JSON request ``{"op": OP,
"arg": …}``, read back a JSON report (exec/procgroup.py). A session asks each of its delegations
(the neighbours holding some of its ranks) for their ``pgroup`` with the same request, in
parallel, and merges their reports with its own ranks': each level sends one report up, so the
root receives one per child whatever the number of ranks (STAT's reduction through its tree).

Only the processes this daemon started for the session are reachable: a rank names a leaf of the
session, never a pid, and a rank whose process has ended answers that it is gone.
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal as signals
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ..exec import procinfo
from ..exec.procgroup import (
    Debuggers,
    Rank,
    Report,
    check_request,
    parse_signal,
    send_signal,
    stacks,
)
from ..exec.stacks import ProcessGone, StackError
from ..ninep.errors import Enotfound, NinepError
from ..ninep.maybe import Maybe, is_awaitable
from ..ninep.synthetic import Dir, Entry, GeneratedFile, Handle, Inode, RequestFile, TableDir

WAIT_STOPPED = 60.0
OPS = ("stacks", "signal", "stop", "cont", "detach", "break", "wait", "eval")

_debuggers: weakref.WeakKeyDictionary[Any, Debuggers] = weakref.WeakKeyDictionary()


def debuggers(session: Any) -> Debuggers:
    """The gdbs held for a session on this node (its top session's), ended with it."""
    top = session.top
    d = _debuggers.get(top)
    if d is None:
        d = _debuggers[top] = Debuggers()
        weakref.finalize(top, _end, d)
    return d


def end_debuggers(session: Any) -> Awaitable[None] | None:
    """A closing session lets its gdbs go now (each detaches and exits), not when the session
    is collected; the finalizer below stays for a session dropped without a close."""
    d = _debuggers.pop(session.top, None)
    return d.detach() if d is not None and d.held else None


def _end(d: Debuggers) -> None:
    for dbg in d.held.values():
        if dbg.proc is not None and dbg.proc.returncode is None:
            dbg.proc.kill()


def rank_of(leaf: Any) -> int:
    top = leaf.top
    if leaf is top:
        return int(top.rank_base)
    return int(top.rank_base) + int(leaf.path.rsplit("/", 1)[-1])


def ranks_here(session: Any) -> tuple[list[Rank], list[int]]:
    """The ranks of ``session`` on this node whose process runs now, and those whose process
    has ended (gone: a rank of the group, named, never an error for the rest)."""
    live, gone = [], []
    for leaf in [session] if session.is_leaf else session.leaves():
        p = leaf.process
        if p is not None and p.pid:
            if p.exited.done():
                gone.append(rank_of(leaf))
            else:
                live.append(Rank(rank_of(leaf), p.pid, leaf.node.name))
    return live, gone


def _leaf_rank(leaf: Any) -> Rank:
    p = leaf.process
    if p is None or not p.pid:
        raise NinepError(f"rank {rank_of(leaf)} runs nothing (exec first)", errno.ESRCH)
    if p.exited.done():
        raise NinepError(f"rank {rank_of(leaf)} is gone: its process exited", errno.ESRCH)
    return Rank(rank_of(leaf), p.pid, leaf.node.name)


# The group operation, here and below -----------------------------------------------------

def parse_request(data: bytes) -> tuple[str, str]:
    try:
        req = json.loads(data)
        op, arg = req["op"], str(req.get("arg", ""))
    except (ValueError, KeyError, TypeError):
        raise NinepError('pgroup: write one JSON request {"op": OP, "arg": …}, OP one of '
                         + ", ".join(OPS), errno.EINVAL) from None
    if op not in OPS:
        raise NinepError(f"pgroup: unknown op {op!r}; one of {', '.join(OPS)}", errno.EINVAL)
    return op, arg


async def _local(session: Any, op: str, arg: str) -> Report:
    ranks, gone = ranks_here(session)
    report = await _act(session, ranks, op, arg)
    for r in gone:
        report.gone.add(r)
    return report


async def _act(session: Any, ranks: list[Rank], op: str, arg: str) -> Report:
    dbg = debuggers(session)
    if op == "stacks":
        return await stacks(ranks, dbg, lines=arg == "lines")
    if op == "signal":
        return send_signal(ranks, parse_signal(arg))
    if op == "stop":
        return await dbg.stop(ranks)
    if op == "cont":
        return await dbg.cont(ranks)
    if op == "break":
        return await dbg.break_at(ranks, arg)
    if op == "wait":
        return await dbg.wait_stopped(ranks, float(arg or WAIT_STOPPED))
    if op == "eval":
        return await dbg.evaluate(ranks, arg)
    await dbg.detach(ranks)
    return Report()


async def group_op(session: Any, op: str, arg: str) -> Report:
    """``op`` on every rank of ``session``: ours here, and each delegation's through its own
    ``pgroup``, in parallel; one merged report. A neighbour that fails is named, the rest kept."""
    try:
        if op == "signal":
            parse_signal(arg)
        check_request(op, arg)
    except ValueError as e:
        raise NinepError(str(e), errno.EINVAL) from None
    request = json.dumps({"op": op, "arg": arg}).encode()

    async def below(d: Any) -> Report:
        if d.lost:
            r = Report()
            r.error(f"lost before {op}: {d.lost}", None, d.neighbor)
            return r
        try:
            return Report.loads(await d.exchange("pgroup", request))
        except (TimeoutError, NinepError, OSError, ValueError) as e:
            r = Report()
            r.error(f"lost during {op}: {e}", None, d.neighbor)
            return r
    parts = await asyncio.gather(_local(session, op, arg),
                                 *(below(d) for d in getattr(session, "delegations", ())))
    out = parts[0]
    for p in parts[1:]:
        out.merge(p)
    return out


# Files ------------------------------------------------------------------------------------

class WriteFile(Inode):
    """Each write is one command, acted on before the write returns."""

    def __init__(self, act: Callable[[str], Maybe[None]]) -> None:
        super().__init__()
        self.act = act

    def open(self, mode: int) -> Handle:
        return _WriteHandle(self)


class _WriteHandle(Handle):
    def write(self, offset: int, data: bytes) -> Maybe[int]:
        assert isinstance(self.node, WriteFile)
        done = self.node.act(data.decode(errors="replace").strip())
        if done is not None:
            return _after(done, len(data))
        return len(data)


async def _after(pending: Awaitable[None], n: int) -> int:
    await pending
    return n


def _failed(report: Report, what: str) -> None:
    """A write that acted on a group fails, naming who, when any rank failed."""
    if report.errors:
        lines = [ln.removeprefix("error: ") for ln in report.trailer() if ln.startswith("error")]
        raise NinepError(f"{what} failed: " + "; ".join(lines[:5]))


def _text(report: Report, body: list[str]) -> bytes:
    return "".join(ln + "\n" for ln in body + report.trailer()).encode()


def _stacks_file(session: Any) -> Inode:
    async def answer(req: bytes) -> bytes:
        arg = req.decode(errors="replace").strip()
        if arg not in ("", "lines"):
            raise NinepError("stacks: write nothing, or 'lines' for line numbers", errno.EINVAL)
        report = await group_op(session, "stacks", arg)
        return _text(report, list(report.tree.lines()))
    return RequestFile(answer, b"")


def _signal_file(session: Any) -> Inode:
    async def act(word: str) -> None:
        _failed(await group_op(session, "signal", word), "signal")
    return WriteFile(act)


def _stopped_file(session: Any) -> Inode:
    async def answer(req: bytes) -> bytes:
        report = await group_op(session, "wait", req.decode(errors="replace").strip())
        return _text(report, report.value_lines("stopped at"))
    return RequestFile(answer, b"")


def _eval_file(session: Any) -> Inode:
    async def answer(req: bytes) -> bytes:
        expr = req.decode(errors="replace").strip()
        report = await group_op(session, "eval", expr)
        return _text(report, report.value_lines(expr.removeprefix("py:").removeprefix("c:")))
    return RequestFile(answer)


def _pgroup_file(session: Any) -> Inode:
    async def answer(req: bytes) -> bytes:
        op, arg = parse_request(req)
        return (await group_op(session, op, arg)).dumps()
    return RequestFile(answer)


async def group_ctl(session: Any, verb: str, arg: str) -> None:
    """The session ctl's debugger verbs (``stop``, ``cont``, ``detach``, ``break WHERE``)."""
    _failed(await group_op(session, verb, arg), verb)


GROUP_FILES = (
    Entry("stacks", 0o644, _stacks_file),
    Entry("signal", 0o200, _signal_file),
    Entry("stopped", 0o644, _stopped_file),
    Entry("eval", 0o644, _eval_file),
    Entry("pgroup", 0o600, _pgroup_file),
    Entry("proc", 0o555, lambda s: ProcDir(s)),
)


# proc/RANK --------------------------------------------------------------------------------

def _rank_call(leaf: Any, read: Callable[[int], str]) -> Inode:
    def generate() -> str:
        r = _leaf_rank(leaf)
        try:
            return read(r.pid)
        except ProcessGone:
            raise NinepError(f"rank {r.rank} is gone: its process exited", errno.ESRCH) from None
    return GeneratedFile(generate)


def _rank_stack(leaf: Any) -> Inode:
    async def generate() -> str:
        r = _leaf_rank(leaf)
        report = await stacks([r], debuggers(leaf), lines=True)
        if len(report.gone):
            raise NinepError(f"rank {r.rank} is gone: its process exited", errno.ESRCH)
        if report.errors:
            raise NinepError(next(iter(report.errors)))
        return "".join(ln + "\n" for ln in report.tree.lines())
    return GeneratedFile(generate)


def _rank_signal(leaf: Any) -> Inode:
    def act(word: str) -> None:
        r = _leaf_rank(leaf)
        try:
            sig = parse_signal(word)
        except ValueError as e:
            raise NinepError(str(e), errno.EINVAL) from None
        if len(send_signal([r], sig).gone):
            raise NinepError(f"rank {r.rank} is gone: its process exited", errno.ESRCH)
    return WriteFile(act)


def _rank_ctl(leaf: Any) -> Inode:
    async def act(line: str) -> None:
        verb, _, arg = line.partition(" ")
        if verb not in ("stop", "cont", "detach", "break"):
            raise NinepError(f"ctl: unknown {verb!r}; write stop, cont, detach or break WHERE",
                             errno.EINVAL)
        r, dbg = _leaf_rank(leaf), debuggers(leaf)
        try:
            check_request(verb, arg.strip())
        except ValueError as e:
            raise NinepError(str(e), errno.EINVAL) from None
        report = await (dbg.stop([r]) if verb == "stop" else dbg.cont([r]) if verb == "cont"
                        else dbg.break_at([r], arg.strip()) if verb == "break"
                        else _detached(dbg, r))
        _failed(report, verb)
    return WriteFile(act)


async def _detached(dbg: Debuggers, r: Rank) -> Report:
    await dbg.detach([r])
    return Report()


def _rank_eval(leaf: Any) -> Inode:
    async def answer(req: bytes) -> bytes:
        r, expr = _leaf_rank(leaf), req.decode(errors="replace").strip()
        try:
            check_request("eval", expr)
        except ValueError as e:
            raise NinepError(str(e), errno.EINVAL) from None
        report = await debuggers(leaf).evaluate([r], expr)
        _failed(report, "eval")
        return "".join(f"{v}\n" for v in report.values).encode()
    return RequestFile(answer)


class MemFile(Inode):
    """The rank's memory: the offset is the address (TBON-FS: ``lseek`` then ``read``/``write``)."""

    def __init__(self, leaf: Any) -> None:
        super().__init__()
        self.leaf = leaf

    def open(self, mode: int) -> Handle:
        _leaf_rank(self.leaf)
        return _MemHandle(self)


class _MemHandle(Handle):
    def _pid(self) -> Rank:
        assert isinstance(self.node, MemFile)
        return _leaf_rank(self.node.leaf)

    def read(self, offset: int, count: int) -> bytes:
        r = self._pid()
        try:
            return procinfo.read_mem(r.pid, offset, count)
        except StackError as e:
            raise NinepError(str(e), errno.EIO) from None

    def write(self, offset: int, data: bytes) -> int:
        r = self._pid()
        assert isinstance(self.node, MemFile)
        held = debuggers(self.node.leaf).get(r.rank)
        try:
            # Our debugger's word rules while it holds the rank: gdb answers a continue
            # before the kernel's state leaves "t", so /proc alone would still say stopped.
            return procinfo.write_mem(r.pid, offset, data,
                                      running=held is not None and not held.stopped)
        except StackError as e:
            raise NinepError(str(e), errno.EPERM if "running" in str(e) else errno.EIO) from None


RANK_TABLE = (
    Entry("status", 0o444, lambda s: _rank_call(s, procinfo.status_line)),
    Entry("stack", 0o444, _rank_stack),
    Entry("cmdline", 0o444, lambda s: _rank_call(s, procinfo.cmdline)),
    Entry("environ", 0o400, lambda s: _rank_call(s, procinfo.environ)),
    Entry("maps", 0o400, lambda s: _rank_call(s, procinfo.maps)),
    Entry("signal", 0o200, _rank_signal),
    Entry("ctl", 0o200, _rank_ctl),
    Entry("mem", 0o600, MemFile),
    Entry("eval", 0o644, _rank_eval),
)


class ProcDir(Dir):
    """``proc/``: one directory per rank of the session. A rank here is its leaf's files; one
    on a neighbour is that neighbour's ``proc/RANK``, reached through the sub-session's mount."""

    def __init__(self, session: Any) -> None:
        super().__init__("proc", 0o555)
        self.session = session
        self._made: dict[str, Inode] = {}

    def _names(self) -> list[str]:
        s = self.session
        if s.is_leaf:
            return [str(rank_of(s))]
        base = int(s.top.rank_base) if s is s.top else rank_of(s)
        return [str(base + i) for i in s.indexes()]

    def children(self) -> list[Inode]:
        out = []
        for name in self._names():
            node = self._made.get(name) or Dir(name, 0o555)
            node.parent = self
            out.append(node)
        return out

    def walk(self, name: str) -> Maybe[Inode]:
        if name in self._made:
            s = self.session
            if s.is_leaf or s.has_index(int(name) - (int(s.top.rank_base) if s is s.top
                                                      else rank_of(s))):
                return self._made[name]
            del self._made[name]  # a rank released since (`release RANKS`): gone for good
            raise NinepError(*Enotfound)
        if name not in self._names():
            raise NinepError(*Enotfound)
        s = self.session
        if s.is_leaf:
            return self._keep(name, TableDir(RANK_TABLE, s, name, 0o555))
        base = int(s.top.rank_base) if s is s.top else rank_of(s)
        sub = s.sub(str(int(name) - base))
        if not hasattr(sub, "mount"):  # a leaf here
            return self._keep(name, TableDir(RANK_TABLE, sub, name, 0o555))
        return self._through(name, sub)

    async def _through(self, name: str, sub: Any) -> Inode:
        subdir = await sub.mount()
        got = subdir.walk("proc")
        proc = await got if is_awaitable(got) else got
        got = proc.walk(name)
        node = await got if is_awaitable(got) else got
        return self._keep(name, node)

    def _keep(self, name: str, node: Inode) -> Inode:
        self._made.setdefault(name, node)
        node = self._made[name]
        node.name = name
        node.parent = self
        return node


def signal_name(sig: int) -> str:
    return signals.Signals(sig).name
