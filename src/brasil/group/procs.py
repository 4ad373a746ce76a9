"""Process groups from Python, as ``brasil.group.api`` is for group reads: a session's ranks
inspected and controlled through its ``pgroup`` file, the answer one merged report.

    from brasil.group import procs
    report = await procs.stacks(client, "3")
    print("\\n".join(report.tree.lines()))
    await procs.op(client, "3", "break", "compute")
    await procs.op(client, "3", "cont")
    print((await procs.op(client, "3", "wait")).value_lines("stopped at"))
    print((await procs.op(client, "3", "eval", "x")).value_lines("x"))

A CPython session the same way, in Python: ``op(client, "3", "break", "py:solver.exchange")``,
then ``"cont"``, ``"wait"`` and ``op(client, "3", "eval", "len(queue)")`` (docs/reference.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..exec.procgroup import Report
from ..exec.stacktree import TraceTree, progress
from ..ninep.constants import ORDWR

OPS = ("stacks", "signal", "stop", "cont", "detach", "break", "wait", "eval")


def session_path(session: str) -> str:
    """A session's directory from its number at the daemon asked (``3``) or a path."""
    session = session.strip().strip("/")
    return f"csrv/local/{session}" if session.isdigit() else session


async def the_running_session(c: Any) -> str:
    """The session to act on when none is named: the one running at the daemon, or a
    ValueError listing the candidates."""
    running = []
    for st in await c.ls("csrv/local"):
        if st.name.isdigit():
            state = (await c.read(f"csrv/local/{st.name}/ctl")).decode().split()
            if "running" in state:
                args = (await c.read(f"csrv/local/{st.name}/args")).decode().strip()
                running.append(f"{st.name} ({args})")
    if len(running) == 1:
        return running[0].split()[0]
    if not running:
        raise ValueError("no session is running here: name one, or --at the daemon where it runs")
    raise ValueError(f"{len(running)} sessions are running: {', '.join(running[:10])}; name one")


async def sessions_of(c: Any, where: str) -> list[tuple[str, str]]:
    """The sessions a query selects, everywhere: (``NODE/ID command``, the session's path
    through the query directory), for ``pstack --where``."""
    from ..client.group import qpath, status
    out = []
    for line in await status(c, where):
        words = line.split()
        if len(words) >= 3 and words[1].isdigit():
            command = line.split("command=", 1)[1] if "command=" in line else ""
            out.append((f"{words[0]}/{words[1]} {command}".rstrip(),
                        f"{qpath(where, words[0])}/local/{words[1]}"))
    return out


async def started(c: Any, session: str) -> bool:
    """Every rank's process started (the ctl state line counts no idle or waiting rank)."""
    words = (await c.read(f"{session_path(session)}/ctl")).decode().split(";")[0].split()
    # session ID STATE subs N [STATE COUNT]… mux MODE rs SEPARATOR
    states = words[5:words.index("mux")][::2] if "mux" in words else []
    return "running" in states and not ({"idle", "waiting"} & set(states))


async def op(c: Any, session: str, what: str, arg: str = "") -> Report:
    """One group operation on every rank of ``session``; the merged report (errors and gone
    ranks in it, never raised for one rank)."""
    if what not in OPS:
        raise ValueError(f"{what!r} is not one of {', '.join(OPS)}")
    f = await c.open(f"{session_path(session)}/pgroup", ORDWR)
    try:
        await f.write(json.dumps({"op": what, "arg": arg}).encode(), 0)
        return Report.loads(await f.read_all())
    finally:
        await f.close()


async def stacks(c: Any, session: str, lines: bool = False) -> Report:
    return await op(c, session, "stacks", "lines" if lines else "")


async def samples(c: Any, session: str, n: int, interval: float, lines: bool = False
                  ) -> tuple[Report, TraceTree, list[TraceTree]]:
    """STAT's 3D trace-space-time: ``n`` snapshots ``interval`` apart, merged into one report,
    with each snapshot's tree (for :func:`brasil.exec.stacktree.progress`)."""
    merged, trees = Report(), []
    for i in range(n):
        if i:
            await asyncio.sleep(interval)
        got = await stacks(c, session, lines)
        trees.append(TraceTree.loads(got.tree.dumps()))
        merged.merge(got)
    return merged, merged.tree, trees


__all__ = ["OPS", "Report", "op", "progress", "samples", "session_path", "stacks"]
