"""`brasil run`: one command for the common case, as pdsh and clush users expect it.

It makes a session, reserves (``-n N`` slots anywhere, ``-w NODESET`` one slot on each named
node, default one on every node of the tree), turns on ``label`` so that every line of the
merged output arrives as ``NODE/RANK: line`` (the daemons add the prefix where each line is
produced, so the root reads one merged stream whatever the count), execs, prints, and closes.
The session's ctl is held open from start to end, so closing it never needs a new fid: a run
that fails halfway (a daemon out of fids, a lost node) still releases every slot it reserved.
``-b`` groups identical outputs under their folded node set, as ``clush -b`` and ``dshbak -c``
show them. The exit status is the largest of the ranks' (``pdsh -S``); ranks cut short by
``--timeout`` or Ctrl-C are killed everywhere and named; a lost node is named and the rest of the
output is still printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from ..ninep.client import Client
from ..ninep.constants import OWRITE
from ..ninep.errors import NinepError
from .session import LOCAL, SessionClient, rank_rows
from .stage import staged_name, upload

V = TypeVar("V")


class RunError(Exception):
    """The request cannot be run as asked (unknown nodes, too few slots…); the message says why."""


def fold(names: list[str]) -> str:
    """A compact node set for display only (never on a hot path: folding is costly)."""
    from ClusterShell.NodeSet import NodeSet
    try:
        return str(NodeSet.fromlist(names))
    except Exception:  # noqa: BLE001 - names NodeSet cannot parse: list them as they are
        return ",".join(names)


def ranges(numbers: list[int]) -> str:
    out, nums = [], sorted(numbers)
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        out.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ",".join(out)


@dataclass
class Result:
    status: int = 0
    statuses: dict[int, int | None] = field(default_factory=dict)  # rank -> status
    nodes: dict[int, str] = field(default_factory=dict)  # rank -> node
    lost: dict[int, str] = field(default_factory=dict)  # rank -> why
    cut: list[int] = field(default_factory=list)  # ranks killed by --timeout or Ctrl-C
    output: dict[int, list[str]] = field(default_factory=dict)  # rank -> lines (for -b)


def expand(nodeset: str) -> frozenset[str]:
    """Every name of ``-w``'s node set, by ClusterShell: here, in the user's own client, to
    name those not in the tree. (A daemon never expands one: ``node/nodeset.py``.)"""
    from ClusterShell.NodeSet import NodeSet, NodeSetParseError
    try:
        return frozenset(NodeSet(nodeset))
    except NodeSetParseError as e:
        raise RunError(f"bad node set {nodeset!r}: {e}; write it as n[1-3,7],m1") from None


async def tree_nodes(c: Client) -> list[str]:
    """Every node of the tree, from the root's status."""
    text = (await c.read(f"{LOCAL}/status")).decode()
    return [ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith("total ")]


async def run(c: Client, command: str, *, n: int | None = None, nodeset: str | None = None,
              group: bool = False, mux: str | None = None,
              timeout: float | None = None,  # noqa: ASYNC109 - the ranks' deadline (killed, named)
              stdin: IO[bytes] | None = None, out: Callable[[str], None] = print,
              err: Callable[[str], None] | None = None, workdir: str | None = None,
              exclude: str | None = None, label: bool = True,
              spread: str | None = None, stage: Sequence[str] = ()) -> Result:
    """``workdir``: where the ranks run on every node (`dir`), as srun runs in its caller's;
    ``exclude``: nodes left out (clush -x); ``label``: lines carry ``NODE/RANK: ``;
    ``spread``: with ``n``, the ranks dealt evenly over this label's values (``res N spread``);
    ``stage``: local files given to every node that runs a rank, as ``$BRASIL_STAGE/NAME``
    (sent once per link, cached by content: client/stage.py, node/stage.py)."""
    err = err or (lambda line: print(line, file=sys.stderr))
    if "\0" in command:
        raise RunError("the command holds a NUL byte, which no command line can carry")
    if spread and n is None:
        raise RunError("--spread deals -n N ranks over a label's values; -w (or none) names "
                       "the nodes already: give -n N")
    if n is None:
        names = await tree_nodes(c)
        if nodeset or exclude:
            wanted = expand(nodeset) if nodeset else frozenset(names)
            missing = sorted(wanted - set(names))
            if missing:
                raise RunError(f"no such node{'s' if len(missing) > 1 else ''} in the tree: "
                               f"{fold(missing)}")
            wanted -= expand(exclude) if exclude else frozenset()
            if not wanted:
                raise RunError(f"no node left once {exclude} is excluded")
            # the sets as typed (the daemons test membership without expanding them)
            where = "/".join(([f"name={nodeset}"] if nodeset else []) +
                             ([f"name!={exclude}"] if exclude else []))
            reserve = f"res {len(wanted)} where {shlex.quote(where)} pernode 1"
        else:  # one on every node: no need to name them all
            reserve = f"res {len(names)} pernode 1"
    elif exclude:
        raise RunError("-x leaves nodes out of -w NODESET or of every node; with -n N the tree "
                       "chooses where: use -w or drop -x")
    else:
        reserve = f"res {n}" + (f" spread {shlex.quote(spread)}" if spread else "")
    staged = []
    for path in stage:
        try:
            staged.append(f"stage {await upload(c, path)} {staged_name(path)}")
        except OSError as e:
            raise RunError(f"--stage {path}: {e.strerror}") from None
    session = await SessionClient.clone_held(c)  # (one whose ctl would not open: the reaper's)
    result = Result()
    try:
        setup = [f"label {'on' if label or group else 'off'}"] + ([f"mux {mux}"] if mux else []) + \
            ([f"dir {workdir}"] if workdir else [])
        try:
            await session.ctl(*setup, reserve)
            if staged:
                await session.ctl(*staged)
        except NinepError as e:
            raise RunError(e.message) from None
        try:
            await session.exec(command)
        except NinepError as e:  # as a shell says it: 127 not found, 126 cannot run
            err(f"brasil run: {e.message}")
            result.status = 127 if "not found" in e.message or "no such" in e.message else 126
            return result
        result.nodes.update(await session.nodes())
        work = [asyncio.ensure_future(_stdin(session, stdin)),
                asyncio.ensure_future(_lines(session, "stdio", result, out, group)),
                asyncio.ensure_future(_lines(session, "stderr", result, err, False))]
        waiter = asyncio.ensure_future(session.wait())
        try:
            done, _ = await asyncio.wait([waiter], timeout=timeout)
            if not done:
                await _cut_short(session, result)
            text = await waiter
            await asyncio.wait_for(asyncio.gather(*work[1:], return_exceptions=True), 10)
        except asyncio.CancelledError:
            await _cut_short(session, result)
            if result.cut:
                err(f"brasil run: interrupted; {_cut_text(result)}")
            raise
        finally:
            for t in work + [waiter]:
                t.cancel()
        _statuses(text, result)
    finally:  # through the ctl held from the start: closing needs no new fid, whatever ran out
        await session.close()
        session.forget()
    if group:
        _print_groups(result, out)
    for why, ranks in _ranks_by(result.lost).items():
        err(f"brasil run: {why}: rank{'s' if len(ranks) > 1 else ''} {ranges(ranks)} "
            f"({fold(sorted({result.nodes.get(r, '?') for r in ranks}))}) failed")
    if result.cut:
        err(f"brasil run: {_cut_text(result)}")
    for line in _failures(result, group):
        err(f"brasil run: {line}")
    codes = [s for s in result.statuses.values() if s is not None]
    result.status = max(codes + ([1] if result.lost else []), default=1)
    return result


async def _stdin(session: SessionClient, stdin: IO[bytes] | None) -> None:
    """Broadcast (or spread, by --mux) our stdin; a terminal is not input: end of file."""
    loop = asyncio.get_running_loop()
    async with await session.open("stdio", OWRITE) as f:
        if stdin is None or stdin.isatty():
            return
        fd = stdin.fileno()
        while True:
            data = await loop.run_in_executor(None, os.read, fd, 1 << 20)
            if not data:
                return
            await f.write(data)


async def _lines(session: SessionClient, name: str, result: Result, emit: Callable[[str], None],
                 group: bool) -> None:
    rest = b""
    async with await session.open(name) as f:
        while True:
            data = await f.read()
            if not data:
                break
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for raw in lines:
                _line(raw.decode(errors="replace"), result, emit, group)
    if rest:
        _line(rest.decode(errors="replace"), result, emit, group)


def _line(line: str, result: Result, emit: Callable[[str], None], group: bool) -> None:
    if not group:
        emit(line)
        return
    label, _, text = line.partition(": ")
    rank = label.rpartition("/")[2]
    if rank.isdigit():
        result.output.setdefault(int(rank), []).append(text)


def _statuses(text: str, result: Result) -> None:
    for w in rank_rows(text):
        rank = int(w[0])
        if len(w) >= 2 and w[1].lstrip("-").isdigit():
            result.statuses[rank] = int(w[1])
        elif "lost" in " ".join(w):
            result.lost[rank] = " ".join(w[2:]) or "lost"
            result.statuses[rank] = None


async def _cut_short(session: SessionClient, result: Result) -> None:
    """Kill every rank still running, everywhere, and remember which they were."""
    try:
        result.cut = [int(w[0]) for w in await session.rows()
                      if len(w) > 3 and w[3] in ("running", "waiting")]
        await session.kill("KILL")
    except (NinepError, ConnectionError):
        pass


def _cut_text(result: Result) -> str:
    nodes = fold(sorted({result.nodes.get(r, "?") for r in result.cut}))
    return f"cut short: rank{'s' if len(result.cut) > 1 else ''} {ranges(result.cut)} ({nodes})"


def _ranks_by(values: dict[int, V]) -> dict[V, list[int]]:
    """The ranks sharing each value (a reason lost, an exit code), in rank order."""
    out: dict[V, list[int]] = {}
    for rank, value in sorted(values.items()):
        out.setdefault(value, []).append(rank)
    return out


def _who(result: Result, ranks: list[int]) -> str:
    """``n[1-3] (3)``, or with the ranks where a node ran several: ``n0 (2 ranks: 0-1)``."""
    shared = len(set(result.nodes.values())) < len(result.nodes)  # a node runs several ranks
    head = fold(sorted({result.nodes.get(r, "?") for r in ranks}))
    return head + (f" ({len(ranks)} rank{'s' if len(ranks) > 1 else ''}: {ranges(ranks)})"
                   if shared else f" ({len(ranks)})")


def _failures(result: Result, group: bool) -> list[str]:
    """Which ranks exited non-zero, with which code, as clush says it: one line per rank, or
    (with -b) one per code, under the node set."""
    by_code = _ranks_by({rank: code for rank, code in result.statuses.items() if code})
    if group:
        return [f"{_who(result, ranks)}: exited with exit code {code}"
                for code, ranks in sorted(by_code.items())]
    return [f"{result.nodes.get(rank, '?')}/{rank}: exited with exit code {code}"
            for code, ranks in sorted(by_code.items()) for rank in ranks]


def _natural(name: str) -> list[Any]:
    """n2 before n10, as node sets count."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _print_groups(result: Result, out: Callable[[str], None]) -> None:
    """Identical outputs together, under their folded node set (clush -b, dshbak -c); ranks
    that ended differently are never in one group, and a group's non-zero code is shown."""
    groups: dict[tuple[tuple[str, ...], int | None], list[int]] = {}
    for rank in sorted(set(result.nodes) | set(result.output)):
        key = (tuple(result.output.get(rank, [])), result.statuses.get(rank))
        groups.setdefault(key, []).append(rank)
    def by_node(kv: Any) -> Any:
        return min(_natural(result.nodes.get(r, "?")) for r in kv[1])
    for (lines, code), ranks in sorted(groups.items(), key=by_node):
        head = _who(result, ranks) + (f" exit {code}" if code else "")
        out("-" * 15)
        out(head)
        out("-" * 15)
        for line in lines:
            out(line)
