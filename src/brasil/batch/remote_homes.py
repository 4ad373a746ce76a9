"""Homes on another host: a remote worker reads them, and commits to them, through 9P.

A worker on another host cannot see the scheduler's disk, so it goes through the scheduler node's
exported tree (``/csrv/local/fs``, ``brasil serve --export DIR``; a home must be inside it). We
chose **staged inputs**: before an execution starts, the home is copied over the worker's one 9P
connection into the execution's scratch, and that copy is the overlay's lower layer (mounted, as
always, at the home's own path). It costs a copy per execution, which suits the homes batch jobs
have (inputs of kilobytes to megabytes); a home of gigabytes wants a shared file system, where
the worker runs as a local one. The commit goes back the same way: the worker uploads its staged
changes and the journal into ``HOME/.brasil-commit-TOKEN/`` through ``fs/``, journal last, then
says ``journaled``; the scheduler — on whose disk the home is — applies the journal
(``commit.apply``), so the all-or-nothing guarantee is exactly the local one.
"""

from __future__ import annotations

import asyncio
import os
import stat

from ..ninep.client import Client
from ..ninep.constants import DMDIR, OTRUNC, OWRITE
from ..ninep.errors import NinepError
from .commit import clean_tree
from .journal import COMMIT, Op, encode

FS = "csrv/local/fs"


def relative(home: str, export_root: str) -> str:
    """The home's path inside the export, e.g. ``csrv/local/fs/work/run1``."""
    root = export_root.rstrip("/") + "/"
    if not (home + "/").startswith(root):
        raise NinepError(f"home {home} is not under the scheduler's export {export_root}")
    rel = home[len(root):].strip("/")
    return f"{FS}/{rel}" if rel else FS


async def fetch_tree(c: Client, src: str, dst: str) -> int:
    """Copy the directory ``src`` (a 9P path) into the local directory ``dst``; returns bytes."""
    os.makedirs(dst, exist_ok=True)
    total = 0
    for st in await c.ls(src):
        path = f"{src}/{st.name}"
        local = os.path.join(dst, st.name)
        if st.mode & DMDIR:
            total += await fetch_tree(c, path, local)
            os.chmod(local, st.mode & 0o777)
        else:
            data = await c.read(path)
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, st.mode & 0o777)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            total += len(data)
    return total


async def _put_file(c: Client, local: str, path: str) -> None:
    info = os.lstat(local)
    if stat.S_ISLNK(info.st_mode):
        raise NinepError(f"{local}: a symbolic link cannot be committed to a remote home")
    f = await c.create(path, info.st_mode & 0o777, OWRITE | OTRUNC)
    async with f:  # the disk reads in a thread: a large file must not stall the worker's loop
        with await asyncio.to_thread(open, local, "rb") as src:
            while chunk := await asyncio.to_thread(src.read, 1 << 20):
                await f.write(chunk)


async def _put_tree(c: Client, local: str, path: str) -> None:
    info = os.lstat(local)
    f = await c.create(path, DMDIR | (info.st_mode & 0o777), 0)
    await f.close()
    for name in sorted(os.listdir(local)):
        full = os.path.join(local, name)
        if stat.S_ISDIR(os.lstat(full).st_mode):  # a directory, not a link to one
            await _put_tree(c, full, f"{path}/{name}")
        else:
            await _put_file(c, full, f"{path}/{name}")


async def upload(c: Client, upper: str, remote_home: str, token: int, ops: list[Op]) -> None:
    """Stage ``ops`` into the remote home's ``.brasil-commit-TOKEN`` and write the journal last."""
    staging = f"{remote_home}/{COMMIT}{token}"
    for d in (staging, f"{staging}/files", f"{staging}/trash"):
        f = await c.create(d, DMDIR | 0o700, 0)
        await f.close()
    for op in ops:
        local = os.path.join(upper, op.path)
        if op.kind == "put":
            await _put_file(c, local, f"{staging}/files/{op.staged}")
        elif op.kind == "replace":
            clean_tree(local)
            await _put_tree(c, local, f"{staging}/files/{op.staged}")
    f = await c.create(f"{staging}/journal", 0o600, OWRITE | OTRUNC)
    async with f:
        await f.write(encode(ops))
