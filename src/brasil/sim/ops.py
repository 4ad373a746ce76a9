"""The operations the simulator measures, as a client drives them over 9P (bench/tree.py's).

Each is a coroutine of the client (run on the client's loop by ``SimCluster.measure``) that
returns its phases' virtual seconds and what it checked; a wrong answer raises
:class:`SimError`, so a figure is never of an operation that did not work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..ninep.client import Client, File
from ..ninep.constants import OWRITE

L = "csrv/local"


class SimError(RuntimeError):
    """A simulated operation gave a wrong answer."""


def _now() -> float:
    return asyncio.get_running_loop().time()


@contextlib.asynccontextmanager
async def session(c: Client) -> AsyncIterator[tuple[str, File]]:
    """A new session and its ``ctl``, open for writing; ``close``d and clunked at the end."""
    sid = (await c.read(f"{L}/clone")).decode().strip()
    ctl = await c.open(f"{L}/{sid}/ctl", OWRITE)
    try:
        yield sid, ctl
        await ctl.write("close\n")
    finally:
        await ctl.close()


async def deploy(c: Client, n: int, cmd: str = "date") -> dict[str, Any]:
    """The paper's Figure 4: clone, ``res N``, ``exec CMD``, read ``stdio`` to its end (one line
    per rank), close."""
    t0 = _now()
    async with session(c) as (sid, ctl):
        t1 = _now()
        await ctl.write(f"res {n}\n")
        t2 = _now()
        await ctl.write(f"exec {cmd}\n")
        t3 = _now()
        out = await c.read(f"{L}/{sid}/stdio")
        t4 = _now()
    t5 = _now()
    lines = out.count(b"\n")
    if lines != n:
        raise SimError(f"session {sid}: stdio had {lines} line(s) for {n} ranks: {out[:200]!r}")
    return {"clone": t1 - t0, "res": t2 - t1, "exec": t3 - t2, "read": t4 - t3,
            "close": t5 - t4, "lines": lines}


async def reserve(c: Client, n: int) -> dict[str, Any]:
    """``res N`` alone (the paper's Figure 5), then close."""
    async with session(c) as (_, ctl):
        t0 = _now()
        await ctl.write(f"res {n}\n")
        t1 = _now()
    return {"res": t1 - t0}


async def wait_free(c: Client, slots: int, timeout: float = 60.0) -> float:
    """Until the root's status shows ``slots`` free (a close releases below the root
    asynchronously); virtual seconds it took."""
    t0 = _now()
    while True:
        total = (await c.read(f"{L}/status")).decode().splitlines()[-1].split()
        if total[0] == "total" and int(total[2]) == slots:
            return _now() - t0
        if _now() - t0 > timeout:
            raise SimError(f"slots not all free {timeout:g}s after close: {' '.join(total)}")
        await asyncio.sleep(0.05)


async def status(c: Client, nodes: int) -> dict[str, Any]:
    """The root's ``status``: every node asked afresh, one line each and the total."""
    lines = (await c.read(f"{L}/status")).decode().splitlines()
    if len(lines) != nodes + 1:
        raise SimError(f"status: {len(lines)} lines for {nodes} nodes")
    return {"lines": len(lines)}


async def group_read(c: Client, path: str, agg: str, nodes: int) -> dict[str, Any]:
    """A group read over every node, reduced in the tree (group/gread.py); ``equiv`` must find
    one class of every node, ``sum`` count every node."""
    from ..client.group import gread  # (client/: a layer below; imported where it is used)
    r = await gread(c, path, agg=agg)
    if r.get("errors") or len(r.get("nodes", ())) != nodes:
        raise SimError(f"gread {agg} {path}: {len(r.get('nodes', ()))} node(s) of {nodes}, "
                       f"errors {str(r.get('errors'))[:200]}")
    return {"nodes": len(r["nodes"])}
