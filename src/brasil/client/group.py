"""The Python API for the cluster as one namespace: queries, group reads, the parallel tools.

A client of the daemons' query directories (``/csrv/query/<pred>/…``, served by ``group/``):
it knows their file names and the kinds of group reads, which both ends share from here, and
what the root's partial result means for people (:func:`final`).

Each function takes a connected :class:`~brasil.ninep.client.Client` (``brasil.ninep.auth.dial``)
and a query (``"arch=x86_64/mem>=4G"``, ``""`` for every node). The work happens in the daemons:
these functions write one request and read one answer, however many nodes there are.

    c = await dial("n0:5670", "secret")
    await nodes(c, "rack=r7")                       # ["n12", "n13", …]
    r = await gread(c, "fs/etc/hosts", agg="equiv")  # groups of identical contents
    ok, failed = await control(c, "user=alice", "kill")
    await pcp(c, "big.tar", "fs/tmp/big.tar")       # down the tree, once per child
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..ninep.client import Client
from ..ninep.constants import DMDIR, ORDWR, OWRITE
from ..ninep.errors import NinepError

# A query directory's files (anything else in it is a node); the kinds of group reads.
FILES = ("status", "ctl", "clone", "gread", "follow", "pcp", "merge", "deepmerge", "view")
KINDS = ("concat", "equiv", "sha256", "sum", "min", "max", "mean", "count", "ls")


def qpath(where: str, *rest: str) -> str:
    parts = [p for p in where.strip("/").split("/") if p]
    return "/".join(["csrv", "query", *parts, *rest])


async def nodes(c: Client, where: str = "") -> list[str]:
    """The names of the nodes a query selects (its directory's entries)."""
    return sorted(st.name for st in await c.ls(qpath(where))
                  if st.mode & DMDIR and st.name not in FILES)


async def status(c: Client, where: str = "") -> list[str]:
    return (await c.read(qpath(where, "status"))).decode().splitlines()


def control_result(text: str) -> tuple[int, list[str]]:
    """A query ctl's aggregated result, ``ok N`` then ``failed NODE/ID: why`` lines: (N, whys).
    Each level of the tree reads its children's this way, and so does the client at the top."""
    ok, failed = 0, []
    for line in text.splitlines():
        if line.startswith("ok "):
            ok = int(line.split()[1])
        elif line.startswith("failed "):
            failed.append(line[7:])
    return ok, failed


async def control(c: Client, where: str, command: str) -> tuple[int, list[str]]:
    """``command`` to every session the query selects, everywhere: (successes, failures as
    ``NODE/ID: why``)."""
    f = await c.open(qpath(where, "ctl"), ORDWR)
    try:
        try:
            await f.write(command.rstrip("\n") + "\n")
            refused = None
        except NinepError as e:  # some session failed: the result read back names each
            refused = e
        text = (await f.read(1 << 20, 0)).decode()
    finally:
        await f.close()
    ok, failed = control_result(text)
    if refused is not None and not failed:  # refused before reaching any session
        raise refused
    return ok, failed


async def gread(c: Client, path: str, where: str = "", agg: str = "concat",
                grep: str | None = None) -> dict[str, Any]:
    """A group read: ``path`` (relative to each node's ``local/``) on every selected node,
    reduced by ``agg`` in the tree (see group/gread.py). The result has ``errors`` by node."""
    if agg not in KINDS and not agg.startswith("py:"):
        raise ValueError(f"unknown aggregation {agg!r}: one of {', '.join(KINDS)} or "
                         "py:MODULE:FUNCTION")
    f = await c.open(qpath(where, "gread"), ORDWR)
    try:
        await f.write(json.dumps({"path": path, "agg": agg, "grep": grep}))
        chunks, at = [], 0
        while True:
            chunk = await f.read(None, at)
            if not chunk:
                break
            chunks.append(chunk)
            at += len(chunk)
    finally:
        await f.close()
    return final(json.loads(b"".join(chunks)))


def final(result: dict[str, Any]) -> dict[str, Any]:
    """What the root's partial means, for people: means, sorted groups."""
    agg = result["agg"]
    if agg in ("sum", "min", "max", "mean", "count") and "steps" in result:
        # A history range (metrics/history?…): per step, [TIME, VALUE] in time order; count is
        # the nodes with a sample in the step.
        key = {"sum": 1, "min": 2, "max": 3, "count": 0}.get(agg)
        result["series"] = [
            [int(t), c[1] / c[0] if key is None else c[key]]
            for t, c in sorted(result["steps"].items(), key=lambda kv: int(kv[0]))]
    elif agg in ("sum", "min", "max", "mean", "count"):
        cols = result.get("columns", [])
        key = {"sum": 1, "min": 2, "max": 3}.get(agg)
        if agg == "count":
            result["value"] = {"nodes": len(result["nodes"]), "lines": result.get("lines", 0)}
        elif agg == "mean":
            result["value"] = [c[1] / c[0] if c[0] else None for c in cols]
        else:
            result["value"] = [c[key] if c[0] else None for c in cols]
    elif agg in ("equiv", "sha256"):
        for g in result.get("groups", []):
            g["nodes"] = sorted(g["nodes"])
            g["count"] = len(g["nodes"])
        result.get("groups", []).sort(key=lambda g: (-g["count"], g["nodes"][:1]))
    elif agg.startswith("py:"):
        result["value"] = result.get("values", [None])[0] if result.get("values") else None
    return result


async def followable(c: Client, path: str, where: str = "") -> dict[str, str]:
    """What stands in the way of following ``path`` on the selected nodes: raises if it is a
    directory on any (naming them); returns the nodes where it cannot be read now, with why
    (those that lack it are followed anyway: it is read from its start when it appears)."""
    r = await gread(c, path, where, agg="ls")  # where it is a directory, it can be listed
    if r["nodes"]:
        raise NinepError(f"{path} is a directory on {','.join(sorted(r['nodes']))}; ptail "
                         "follows a file", errno.EISDIR)
    return {n: why for n, why in r["errors"].items() if not why.endswith(": not a directory")}


async def follow(c: Client, path: str, where: str = "",
                 notes: Callable[[dict[str, str]], None] | None = None,
                 lines: int = 0) -> AsyncIterator[str]:
    """The lines appended to ``path`` on every selected node (after its last ``lines`` lines),
    as ``NODE: line`` (``tail -F``:
    a node that lacks the file now shows it from its start once it appears). Raises if the
    path is a directory anywhere; ``notes`` gets the nodes that cannot read it now, with why."""
    problems = await followable(c, path, where)
    if notes is not None and problems:
        notes(problems)
    f = await c.open(qpath(where, "follow"), ORDWR)
    try:
        await f.write(json.dumps({"path": path, "lines": lines}))
        pending: list[bytes] = []  # a line's start: joined once its end comes (linear time)
        while True:
            chunk = await f.read(None, 0)
            if not chunk:
                break
            if b"\n" not in chunk:
                pending.append(chunk)
                continue
            whole = b"".join([*pending, chunk]).split(b"\n")
            pending = [whole.pop()]
            for line in whole:
                yield line.decode(errors="replace")
    finally:
        await f.close()


async def pcp(c: Client, source: str, dest: str, where: str = "", chunk: int = 1 << 20,
              progress: Callable[[int], None] | None = None) -> int:
    """Copy the local file ``source`` to ``dest`` (``fs/…``) on every selected node, through
    the tree: each node keeps a copy and passes the bytes on. Returns the bytes sent;
    ``progress`` is told the bytes sent so far after each chunk."""
    f = await c.open(qpath(where, "pcp"), OWRITE)
    sent = 0
    try:
        await f.write(json.dumps({"path": dest}))
        src = await asyncio.to_thread(open, source, "rb")  # the loop never waits on a disk
        with src:
            while True:
                data = await asyncio.to_thread(src.read, chunk)
                if not data:
                    break
                await f.write(data)
                sent += len(data)
                if progress is not None:
                    progress(sent)
    finally:
        await f.close()  # each node renames its copy into place: errors come back here
    return sent


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def local_files(source: str, dest: str) -> list[tuple[str, str]]:
    """``source`` (a file, or a directory's files) paired with where each goes under ``dest``."""
    if not os.path.exists(source):
        raise NinepError(f"{source}: no such file or directory (here, where psync reads it)",
                         errno.ENOENT)
    return [(source, dest)] if os.path.isfile(source) else [
        (os.path.join(root, name), "/".join([dest.rstrip("/"), os.path.relpath(
            os.path.join(root, name), source)]))
        for root, _, names in os.walk(source) for name in sorted(names)]


async def psync(c: Client, source: str, dest: str, where: str = "") -> list[tuple[str, list[str]]]:
    """Make ``dest`` (``fs/…``) on every selected node hold what ``source`` holds (a file, or a
    directory's files), sending each file only to the nodes whose copy differs or is missing.
    Returns, per file, the nodes it was sent to."""
    files = await asyncio.to_thread(local_files, source, dest)
    everyone = await nodes(c, where)
    out = []
    for local, remote in files:
        digest = await asyncio.to_thread(sha256_of, local)
        result = await gread(c, remote, where, agg="sha256")
        same = set()
        for g in result.get("groups", []):
            if g["content"] == digest:
                same |= set(g["nodes"])
        stale = [n for n in everyone if n not in same]
        if stale:
            names = ",".join(stale)
            await pcp(c, local, remote, f"{where}/name={names}".strip("/"))
        out.append((remote, stale))
    return out


__all__ = ["control", "follow", "gread", "nodes", "pcp", "psync", "qpath", "status",
           "NinepError"]
