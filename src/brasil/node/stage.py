"""Files staged down the tree and cached by content at every node (issue 21 §4; the Brasil
paper's "missed opportunity", Slurm's sbcast, LLNL's Spindle).

A client writes a file once to the root's ``/csrv/local/stage/HASH`` (HASH: its SHA-256, hex);
``stage HASH NAME`` on a session then gives it to every node holding some of the session's
ranks: each node passes it to the neighbours it delegated ranks to, only those that lack it,
so the bytes cross each link at most once and a second run of the same file sends nothing.
Each node links the file into a directory of the session's, ``$BRASIL_STAGE``, as NAME.

The cache is a private directory (0700) of the daemon's state; an upload goes to a temporary
file opened exclusively, is hashed as it arrives, and enters the cache only if its hash is its
name (mode 0500: nothing rewrites a cached file in place). Its size and the cache's are bounded;
the oldest entries go first (a session's link keeps its file meanwhile).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from typing import Any

from ..ninep.errors import Eexist, Enotfound, NinepError
from ..ninep.synthetic import Dir, GeneratedFile, Handle, Inode

log = logging.getLogger("brasil.stage")

HASH_RE = re.compile(r"[0-9a-f]{64}")
NAME_RE = re.compile(r"[A-Za-z0-9_.+-]{1,128}")
MAX_FILE = 1 << 30       # bytes of one staged file
MAX_CACHE = 8 << 30      # bytes the cache keeps before the oldest go
MAX_LISTED = 1000        # entries a listing of stage/ shows


def check_hash(h: str) -> None:
    if not HASH_RE.fullmatch(h):
        raise NinepError(f"stage: {h[:70]!r} is not a SHA-256 in hex (64 characters 0-9a-f)",
                         errno.EINVAL)


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise NinepError(f"stage: name {name[:70]!r}: 1-128 letters, digits, '.', '_', '+' or "
                         "'-' (a file name, no '/')", errno.EINVAL)


class StageCache:
    def __init__(self, path: str) -> None:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid() \
                or st.st_mode & 0o077:
            raise NinepError(f"stage cache {path}: not a private directory of ours")
        self.path = path
        os.makedirs(os.path.join(path, "sessions"), mode=0o700, exist_ok=True)
        self.received = 0        # files that entered the cache by upload
        self.received_bytes = 0

    def file(self, h: str) -> str:
        return os.path.join(self.path, h)

    def has(self, h: str) -> bool:
        return HASH_RE.fullmatch(h) is not None and os.path.isfile(self.file(h))

    def hashes(self) -> list[str]:
        return sorted(n for n in os.listdir(self.path) if HASH_RE.fullmatch(n))[:MAX_LISTED]

    def begin(self, h: str) -> Upload:
        if self.has(h):  # (h was checked where the name arrived: StageDir.create)
            raise NinepError(*Eexist)
        return Upload(self, h)

    def commit(self, up: Upload) -> None:
        got = up.sha.hexdigest()
        if got != up.h:
            os.unlink(up.tmp)
            raise NinepError(f"stage: the bytes written hash to {got}, not {up.h}: nothing "
                             "kept; write the file again", errno.EINVAL)
        os.chmod(up.tmp, 0o500)
        os.replace(up.tmp, self.file(up.h))
        self.received += 1
        self.received_bytes += up.size
        self._bound(up.h)

    def _bound(self, keep: str) -> None:
        entries = []
        for n in os.listdir(self.path):
            if HASH_RE.fullmatch(n):
                st = os.lstat(self.file(n))
                entries.append((st.st_mtime, st.st_size, n))
        total = sum(size for _, size, _ in entries)
        for _, size, n in sorted(entries):
            if total <= MAX_CACHE:
                break
            if n != keep:
                os.unlink(self.file(n))
                total -= size

    def place(self, h: str, session_dir: str, name: str) -> str:
        """The cached file linked as ``session_dir/name`` (made 0700); the directory."""
        check_name(name)
        if not self.has(h):
            raise NinepError(f"stage: {h} is not here; write it to /csrv/local/stage/{h} first",
                             errno.ENOENT)
        os.makedirs(session_dir, mode=0o700, exist_ok=True)
        target = os.path.join(session_dir, name)
        if os.path.lexists(target):
            os.unlink(target)
        os.link(self.file(h), target)
        return session_dir


class Upload:
    def __init__(self, cache: StageCache, h: str) -> None:
        self.cache, self.h = cache, h
        fd, self.tmp = tempfile.mkstemp(prefix=".up-", dir=cache.path)
        self.fd = fd
        self.sha = hashlib.sha256()
        self.size = 0

    def finish(self) -> None:
        """Closed and stored, or refused (the hash differs) and removed."""
        os.close(self.fd)
        self.cache.commit(self)


class UploadFile(Inode):
    """``stage/HASH`` being created (open it read-write): written from offset 0 on, in order;
    then a read stores it and answers ``stored HASH SIZE``, or fails saying why (the hash
    does not match). A clunk without that read stores it too, if it matches (a clunk cannot
    answer an error)."""

    def __init__(self, cache: StageCache, h: str) -> None:
        super().__init__(h, 0o600)
        self.cache, self.h = cache, h

    def open(self, mode: int) -> Handle:
        return UploadHandle(self, self.cache.begin(self.h))


class UploadHandle(Handle):
    def __init__(self, node: Inode, up: Upload) -> None:
        super().__init__(node)
        self.up: Upload | None = up
        self.answer = b""

    def read(self, offset: int, count: int) -> bytes:
        up, self.up = self.up, None
        if up is not None:
            up.finish()  # raises, saying why, when the bytes are not the name's
            self.answer = f"stored {up.h} {up.size}\n".encode()
        return self.answer[offset:offset + count]

    def write(self, offset: int, data: bytes) -> int:
        up = self.up
        if up is None:
            raise NinepError("stage: this upload has ended", errno.EBADF)
        if offset != up.size:
            raise NinepError(f"stage: write at {offset}, expected {up.size}: write the file in "
                             "order", errno.EINVAL)
        if up.size + len(data) > MAX_FILE:
            raise NinepError(f"stage: over {MAX_FILE} bytes: too large to stage", errno.EFBIG)
        os.write(up.fd, data)
        up.sha.update(data)
        up.size += len(data)
        return len(data)

    def clunk(self) -> None:
        up, self.up = self.up, None
        if up is None:
            return
        try:
            up.finish()
        except NinepError as e:
            log.info("%s", e.message)


class CachedFile(Inode):
    def __init__(self, cache: StageCache, h: str) -> None:
        super().__init__(h, 0o444)
        self.cache, self.h = cache, h

    def length(self) -> int:
        try:
            return os.stat(self.cache.file(self.h)).st_size
        except OSError:
            return 0

    def open(self, mode: int) -> Handle:
        try:
            fd = os.open(self.cache.file(self.h), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NinepError(*Enotfound) from None
        return FdHandle(self, fd)


class FdHandle(Handle):
    def __init__(self, node: Inode, fd: int) -> None:
        super().__init__(node)
        self.fd = fd

    def read(self, offset: int, count: int) -> bytes:
        return os.pread(self.fd, count, offset)

    def clunk(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class StageDir(Dir):
    """``/csrv/local/stage/``: the cached files by hash, ``stats``, and a create to upload."""

    def __init__(self, cache: Any) -> None:
        super().__init__("stage", 0o755)
        self._cache = cache  # a callable: the cache is made when first used
        self._stats = GeneratedFile(self._stats_text, "stats")
        self._stats.parent = self

    def _stats_text(self) -> str:
        c = self._cache()
        return f"files {len(c.hashes())}\nreceived {c.received}\nreceived_bytes {c.received_bytes}\n"

    def children(self) -> list[Inode]:
        c = self._cache()
        return [self._stats, *(self.adopt(CachedFile(c, h)) for h in c.hashes())]

    def walk(self, name: str) -> Inode:
        if name == "stats":
            return self._stats
        c = self._cache()
        if not c.has(name):
            raise NinepError(*Enotfound)
        return self.adopt(CachedFile(c, name))

    def create(self, name: str, perm: int, mode: int) -> Inode:
        check_hash(name)
        return self.adopt(UploadFile(self._cache(), name))


def remove_dir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)
