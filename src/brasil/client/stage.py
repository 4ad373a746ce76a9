"""A local file given to the root's stage cache once (node/stage.py): hashed here, sent only
if the root lacks it, so a second run of the same binary sends nothing."""

from __future__ import annotations

import errno
import hashlib
import os

from ..ninep.client import Client
from ..ninep.constants import ORDWR
from ..ninep.errors import NinepError

LOCAL = "csrv/local"
CHUNK = 1 << 20


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


async def upload(c: Client, path: str) -> str:
    """``path``'s SHA-256, after making sure the daemon at ``c`` has it in its stage cache."""
    h = file_hash(path)
    target = f"{LOCAL}/stage/{h}"
    try:
        await c.stat(target)
    except NinepError:
        await send(c, target, path)
    return h


async def send(c: Client, target: str, source: str) -> None:
    """``source`` written to ``target`` (a ``stage/HASH`` to create) in the connection's
    message size, the daemon checking the hash at the close; one that meanwhile got the same
    bytes from someone else is as good. (A daemon passing a file to a neighbour sends it so
    too.)"""
    try:
        f = await c.create(target, 0o400, ORDWR)
    except NinepError as e:
        if e.errno == errno.EEXIST:
            return
        raise
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        while chunk := os.pread(fd, CHUNK, offset):
            await f.write(chunk)
            offset += len(chunk)
        await f.read(256, 0)  # stores it, or says why not (the bytes changed meanwhile)
    finally:
        os.close(fd)
        await f.close()


def staged_name(path: str) -> str:
    return os.path.basename(path.rstrip("/"))
