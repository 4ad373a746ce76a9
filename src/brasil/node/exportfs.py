"""``fs/``: a real directory served read-write, with no way for a path to escape its root.

Paths are kept as tuples of names relative to the root and opened component by component from a
descriptor of the root with ``O_NOFOLLOW``, so the kernel never follows a symlink for us. A symlink
met during a walk is resolved here, by text: if its target stays inside the root the walk goes on
there; if it would leave (``..`` above the root, an absolute path elsewhere) the walk fails with a
clear error. ``..`` itself is the namespace's: from ``fs/`` it leads to ``/csrv/local``, never to
the host's parent directory.
"""

from __future__ import annotations

import errno as _errno
import grp
import os
import posixpath
import pwd
import stat as st
from functools import lru_cache

from ..ninep.beneath import DIR_FLAGS, O_PATH, makedirs_beneath, open_dir_beneath
from ..ninep.constants import (
    DMAPPEND,
    DMAUTH,
    DMDEVICE,
    DMDIR,
    DMEXCL,
    DMMOUNT,
    DMNAMEDPIPE,
    DMSETGID,
    DMSETUID,
    DMSOCKET,
    DMSYMLINK,
    OTRUNC,
)
from ..ninep.errors import Eexist, NinepError
from ..ninep.synthetic import Dir, Handle, Inode
from ..ninep.wire import Qid, Stat

MAX_LINKS = 40


def _oserror(e: OSError, what: str) -> NinepError:
    return NinepError(f"{what}: {e.strerror}", e.errno or _errno.EIO)


@lru_cache(maxsize=256)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@lru_cache(maxsize=256)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class Export:
    """The exported root and the rules for resolving paths beneath it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(f"--export {root}: not a directory")

    def open_dir(self, rel: tuple[str, ...], listable: bool = False) -> int:
        """A descriptor of directory ``rel``, opened beneath the root without following links
        (``ninep/beneath.py``); ``listable`` opens it for reading its entries (O_PATH
        descriptors cannot)."""
        root = os.open(self.root, O_PATH | DIR_FLAGS)
        try:
            return open_dir_beneath(root, rel, listable)
        finally:
            os.close(root)

    def make_dirs(self, dirs: tuple[str, ...]) -> int:
        """A descriptor of directory ``dirs`` (its links read as :meth:`resolve` reads them,
        never out of the root), the directories missing at its end made (0755) one at a time,
        each from its parent's descriptor and opened with ``O_NOFOLLOW``: a link planted on the
        way is refused, never followed. What a copy into ``fs/`` writes in (``pcp``)."""
        have = len(dirs)
        while have:
            try:
                self.resolve(dirs[:have])
                break
            except NinepError as e:
                if e.errno != _errno.ENOENT:  # a link out, a file on the way: said as it is
                    raise
                have -= 1
        top = self.open_dir(self.resolve(dirs[:have]))
        try:
            return makedirs_beneath(top, dirs[have:], 0o755)
        except OSError as e:
            raise _oserror(e, "fs/" + "/".join(dirs)) from None
        finally:
            os.close(top)

    def open_file(self, rel: tuple[str, ...], flags: int = os.O_RDONLY) -> int:
        """A descriptor of the regular file ``rel`` (a path :meth:`resolve` gave: no links left
        in it): opened from its directory's descriptor with ``O_NOFOLLOW`` on every name, so a
        link swapped in meanwhile is refused, not followed; without waiting (a named pipe would
        block the daemon for its other end); and refused unless it is a regular file. The one
        way ``fs/`` opens a file, and ``ptail -f`` follows one. OSError as the kernel says it."""
        parent = self.open_dir(rel[:-1])
        try:
            fd = os.open(rel[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=parent)
        finally:
            os.close(parent)
        try:
            if not st.S_ISREG(os.fstat(fd).st_mode):
                raise NinepError(f"fs/{'/'.join(rel)}: not a regular file (fs/ serves regular "
                                 "files and directories only)", _errno.EOPNOTSUPP)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def lstat(self, rel: tuple[str, ...]) -> os.stat_result:
        if not rel:
            return os.stat(self.root)
        fd = self.open_dir(rel[:-1])
        try:
            return os.stat(rel[-1], dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def resolve(self, rel: tuple[str, ...]) -> tuple[str, ...]:
        """``rel`` with every symlink replaced by its target; refuses targets outside the root."""
        done: list[str] = []
        todo = list(rel)
        hops = 0
        while todo:
            name = todo.pop(0)
            path = tuple(done + [name])
            try:
                info = self.lstat(path)
            except OSError as e:
                raise _oserror(e, "/".join(path)) from None
            if not st.S_ISLNK(info.st_mode):
                done.append(name)
                continue
            hops += 1
            if hops > MAX_LINKS:
                raise NinepError(f"{'/'.join(path)}: too many levels of symbolic links", _errno.ELOOP)
            try:
                fd = self.open_dir(tuple(done))
                try:
                    target = os.readlink(name, dir_fd=fd)
                finally:
                    os.close(fd)
            except OSError as e:  # it changed while we looked (a race): say so, quietly
                raise _oserror(e, "/".join(path)) from None
            if target.startswith("/"):
                real = posixpath.normpath(target)
                if real != self.root and not real.startswith(self.root + "/"):
                    raise self._escape(path, target)
                base: list[str] = []
                target = posixpath.relpath(real, self.root)
            else:
                base = done
            joined = posixpath.normpath(posixpath.join(*(base or ["."]), target))
            if joined == ".." or joined.startswith("../"):
                raise self._escape(path, target)
            done = []
            todo = [p for p in joined.split("/") if p not in ("", ".")] + todo
        return tuple(done)

    def _escape(self, path: tuple[str, ...], target: str) -> NinepError:
        return NinepError(f"{'/'.join(path)}: symlink to {target} points outside the exported tree",
                          _errno.EACCES)

    def node(self, rel: tuple[str, ...], name: str) -> Inode:
        try:
            info = self.lstat(rel)
        except OSError as e:
            raise _oserror(e, "/".join(rel) or "/") from None
        cls = ExportDir if st.S_ISDIR(info.st_mode) else ExportFile
        return cls(self, rel, name, info)


# What fs/ refuses to make: it serves regular files and directories, nothing that could point
# out of the export (a link), reach the host's devices, or run with someone else's rights.
SPECIAL = ((DMSYMLINK, "a symbolic link"), (DMDEVICE, "a device file"),
           (DMNAMEDPIPE, "a named pipe"), (DMSOCKET, "a socket"), (DMSETUID, "a setuid file"),
           (DMSETGID, "a setgid file"), (0o4000, "a setuid file"), (0o2000, "a setgid file"),
           (DMAPPEND, "an append-only file"), (DMEXCL, "an exclusive-use file"),
           (DMAUTH, "an authentication file"), (DMMOUNT, "a mount point"))


def refuse_special(perm: int, where: str, verb: str = "create") -> None:
    for bit, what in SPECIAL:
        if perm & bit:
            raise NinepError(f"{where}: cannot {verb} {what} here: fs/ holds only regular files "
                             "and directories", _errno.EOPNOTSUPP)


def _qid(info: os.stat_result) -> Qid:
    path = (1 << 63) | ((info.st_dev & 0x7FFF) << 48) | (info.st_ino & ((1 << 48) - 1))
    is_dir = st.S_ISDIR(info.st_mode)
    return Qid(0x80 if is_dir else 0, 0 if is_dir else info.st_mtime_ns & 0xFFFFFFFF, path)


class _ExportNode(Inode):
    def __init__(self, export: Export, rel: tuple[str, ...], name: str, info: os.stat_result) -> None:
        super().__init__(name, st.S_IMODE(info.st_mode))
        self.export, self.rel = export, rel
        self.qid = _qid(info)
        self.info = info

    def _where(self) -> str:
        return "fs/" + "/".join(self.rel)

    def stat(self) -> Stat:
        try:
            i = self.export.lstat(self.rel)
        except OSError as e:
            raise _oserror(e, self._where()) from None
        mode = st.S_IMODE(i.st_mode) | (DMDIR if st.S_ISDIR(i.st_mode) else 0)
        return Stat(qid=_qid(i), mode=mode, atime=int(i.st_atime), mtime=int(i.st_mtime),
                    length=0 if st.S_ISDIR(i.st_mode) else i.st_size, name=self.name or "fs",
                    uid=_user(i.st_uid), gid=_group(i.st_gid), muid=_user(i.st_uid))

    def _fd(self, flags: int) -> int:
        parent = self.export.open_dir(self.rel[:-1])
        try:
            return os.open(self.rel[-1] if self.rel else ".", flags | os.O_NOFOLLOW | os.O_CLOEXEC,
                           dir_fd=parent)
        finally:
            os.close(parent)

    def wstat(self, s: Stat) -> None:
        if s.mode != 0xFFFFFFFF:
            if bool(s.mode & DMDIR) != self.is_dir:
                raise NinepError(f"{self._where()}: wstat cannot change a file into a directory "
                                 "or back", _errno.EINVAL)
            refuse_special(s.mode & ~DMDIR, self._where(), "set")
        try:
            if s.mode != 0xFFFFFFFF:
                fd = self._fd(os.O_RDONLY)
                try:
                    os.fchmod(fd, s.mode & 0o1777)
                finally:
                    os.close(fd)
            if s.length != 0xFFFFFFFFFFFFFFFF:
                if self.is_dir:
                    raise NinepError(f"{self._where()}: a directory has no length", _errno.EISDIR)
                fd = self._fd(os.O_WRONLY)
                try:
                    os.ftruncate(fd, s.length)
                finally:
                    os.close(fd)
            if s.mtime != 0xFFFFFFFF or s.atime != 0xFFFFFFFF:
                fd = self._fd(os.O_RDONLY)
                try:
                    i = os.fstat(fd)
                    os.utime(fd, (i.st_atime if s.atime == 0xFFFFFFFF else s.atime,
                                  i.st_mtime if s.mtime == 0xFFFFFFFF else s.mtime))
                finally:
                    os.close(fd)
        except OSError as e:
            raise _oserror(e, self._where()) from None
        if s.name and s.name != self.name:
            if not isinstance(self.parent, ExportDir):
                raise NinepError(f"{self._where()}: cannot rename the exported root", _errno.EACCES)
            self.parent.rename(self, s.name)

    def remove(self) -> None:
        if not self.rel:
            raise NinepError("fs: the exported root cannot be removed", _errno.EACCES)
        parent = self.export.open_dir(self.rel[:-1])
        try:
            if self.is_dir:
                os.rmdir(self.rel[-1], dir_fd=parent)
            else:
                os.unlink(self.rel[-1], dir_fd=parent)
        except OSError as e:
            raise _oserror(e, self._where()) from None
        finally:
            os.close(parent)


class ExportFile(_ExportNode):
    def length(self) -> int:
        return self.info.st_size

    def open(self, mode: int) -> Handle:
        flags = (os.O_RDONLY, os.O_WRONLY, os.O_RDWR, os.O_RDONLY)[mode & 3]
        if mode & OTRUNC:
            flags |= os.O_TRUNC
        try:
            return FdHandle(self, self.export.open_file(self.rel, flags))
        except OSError as e:
            raise _oserror(e, self._where()) from None


class FdHandle(Handle):
    def __init__(self, node: Inode, fd: int) -> None:
        super().__init__(node)
        self.fd = fd

    def read(self, offset: int, count: int) -> bytes:
        try:
            return os.pread(self.fd, count, offset)
        except OSError as e:
            raise _oserror(e, self.node.name) from None

    def write(self, offset: int, data: bytes) -> int:
        try:
            return os.pwrite(self.fd, data, offset)
        except OSError as e:
            raise _oserror(e, self.node.name) from None

    def clunk(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ExportDir(_ExportNode, Dir):
    is_dir = True

    def walk(self, name: str) -> Inode:
        rel = self.export.resolve(self.rel + (name,))
        return self.adopt(self.export.node(rel, name))

    def children(self) -> list[Inode]:
        fd = -1
        try:
            fd = self.export.open_dir(self.rel, listable=True)
            names = sorted(os.listdir(fd))
        except OSError as e:
            raise _oserror(e, self._where()) from None
        finally:
            if fd >= 0:
                os.close(fd)
        out: list[Inode] = []
        for name in names:
            try:
                rel = self.export.resolve(self.rel + (name,))
                out.append(self.adopt(self.export.node(rel, name)))
            except NinepError:  # a link that leads out (or nowhere): list it as what it is
                try:
                    info = self.export.lstat(self.rel + (name,))
                except OSError:
                    continue
                out.append(self.adopt(ExportFile(self.export, self.rel + (name,), name, info)))
        return out

    def create(self, name: str, perm: int, mode: int) -> Inode:
        refuse_special(perm, f"{self._where()}/{name}")
        parent = self.export.open_dir(self.rel)
        try:
            if perm & DMDIR:
                os.mkdir(name, perm & 0o777, dir_fd=parent)
            else:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, perm & 0o777, dir_fd=parent))
        except FileExistsError:
            raise NinepError(*Eexist) from None
        except OSError as e:
            raise _oserror(e, f"{self._where()}/{name}") from None
        finally:
            os.close(parent)
        return self.adopt(self.export.node(self.rel + (name,), name))

    def rename(self, child: Inode, new_name: str) -> None:
        if new_name in (".", "..") or "/" in new_name:
            raise NinepError(f"rename: {new_name!r} is not a file name", _errno.EINVAL)
        parent = self.export.open_dir(self.rel)
        try:
            os.rename(child.name, new_name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as e:
            raise _oserror(e, f"rename {child.name} {new_name}") from None
        finally:
            os.close(parent)
        child.name = new_name
        if isinstance(child, _ExportNode):
            child.rel = self.rel + (new_name,)

    def unlink(self, child: Inode) -> None:
        child.remove()
