"""Opening paths beneath a directory descriptor, never following a link, never leaving it.

Whoever writes as root into a directory tree that names come from (a commit's journal, a client's
9P walk) must not let a name lead elsewhere: a symlink swapped in for a directory, a ``..``, an
absolute path. So a path is a tuple of plain names (:func:`relative_names` refuses anything else)
opened from a descriptor we hold: by ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` in one
system call where the kernel has it (Linux 5.6), else one name at a time with ``O_NOFOLLOW``.
Either way the kernel never follows a link for us, and what we get is a descriptor of something
inside the tree, whatever is renamed meanwhile. When a link is met, the error names it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Sequence

from .private import UnsafePathError, check_ancestors, check_owned_dir

O_PATH = getattr(os, "O_PATH", 0)
DIR_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# openat2(2): linux/openat2.h; the system call's number is the same on every architecture.
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_have_openat2 = hasattr(_libc, "syscall") and os.uname().sysname == "Linux"


def relative_names(path: object, what: str = "path") -> tuple[str, ...]:
    """``path`` as a tuple of plain names; refuses an absolute path, ``..``, ``.``, an empty name
    (``a//b``, a trailing ``/``) and NUL, which could lead out of (or be read differently in) the
    directory it is meant for."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} {path!r}: expected a relative path")
    if path.startswith("/"):
        raise ValueError(f"{what} {path!r}: an absolute path")
    if "\0" in path:
        raise ValueError(f"{what} {path!r}: contains a NUL byte")
    names = tuple(path.split("/"))
    for name in names:
        if name in ("", ".", ".."):
            raise ValueError(f"{what} {path!r}: {name or 'an empty name'!r} is not a plain name")
    return names


def _check_names(names: Sequence[str]) -> None:
    for name in names:
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise UnsafePathError(f"{name!r} is not a plain file name")


def _openat2(dirfd: int, path: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0,
                   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return int(fd)


def _walk(dirfd: int, names: Sequence[str], flags: int, mode: int) -> int:
    """One name at a time, each opened ``O_NOFOLLOW`` from the last; a link met is named."""
    fd = dirfd
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            try:
                nxt = os.open(name, (flags | os.O_NOFOLLOW | os.O_CLOEXEC) if last else
                              (O_PATH | DIR_FLAGS), mode, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    try:
                        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        info = None
                    if info is not None and stat.S_ISLNK(info.st_mode):
                        raise UnsafePathError(f"{'/'.join(names[:i + 1])} is a symbolic link, "
                                              "which is never followed here") from None
                raise
            if fd != dirfd:
                os.close(fd)
            fd = nxt
    except BaseException:
        if fd != dirfd:
            os.close(fd)
        raise
    return fd


def open_beneath(dirfd: int, names: Sequence[str], flags: int, mode: int = 0o666) -> int:
    """A descriptor of ``names`` (a tuple of plain names; empty: ``dirfd``'s directory again)
    opened with ``flags`` beneath ``dirfd``, no link followed on the way or at the end. A link
    met raises :class:`UnsafePathError` naming it; anything else raises its ``OSError``."""
    global _have_openat2
    _check_names(names)
    if not names:
        return os.open(".", flags | os.O_CLOEXEC, dir_fd=dirfd)
    if _have_openat2:
        try:
            return _openat2(dirfd, "/".join(names), flags | os.O_CLOEXEC, mode)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                _have_openat2 = False
            elif e.errno not in (errno.ELOOP, errno.EXDEV, errno.EAGAIN, errno.EPERM,
                                 errno.ENOTDIR):
                raise
            # which name is the link (or the race, or the refusal): the walk finds and says
    return _walk(dirfd, names, flags, mode)


def open_dir_beneath(dirfd: int, names: Sequence[str], listable: bool = False) -> int:
    """A descriptor of the directory ``names`` beneath ``dirfd`` (``O_PATH``, enough for the
    ``*at`` calls; ``listable``: opened for reading, as listing and ``fchmod`` need)."""
    return open_beneath(dirfd, names, (os.O_RDONLY if listable else O_PATH) | DIR_FLAGS)


def makedirs_beneath(dirfd: int, names: Sequence[str], mode: int = 0o777) -> int:
    """The directory ``names`` beneath ``dirfd``, made (``mode``) where missing; a descriptor."""
    _check_names(names)
    fd = os.open(".", O_PATH | DIR_FLAGS, dir_fd=dirfd)
    try:
        for name in names:
            try:
                os.mkdir(name, mode, dir_fd=fd)
            except FileExistsError:
                pass
            nxt = open_dir_beneath(fd, (name,))
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat_beneath(dirfd: int, names: Sequence[str]) -> os.stat_result | None:
    """What ``names`` beneath ``dirfd`` is, itself (a link is not followed); None if it is not
    there (nor its directory). A link on the way raises :class:`UnsafePathError`."""
    _check_names(names)
    if not names:
        return os.fstat(dirfd)
    try:
        parent = open_dir_beneath(dirfd, names[:-1]) if len(names) > 1 else None
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.stat(names[-1], dir_fd=dirfd if parent is None else parent,
                       follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        if parent is not None:
            os.close(parent)


def open_owned_dir(path: str, what: str = "directory", within: str | None = None) -> int:
    """A descriptor of the directory ``path``, which must be ours, closed to others' writes, and
    under directories nobody else can use to replace it (``private.check_owned_dir``,
    ``private.check_ancestors``); opened from ``/`` without following a link, so what was checked
    is what we hold. Links in ``path`` itself are resolved first (a link swapped in afterwards is
    refused). ``within``: the directory must also be there (or be it)."""
    real = os.path.realpath(path)
    if within is not None:
        top = os.path.realpath(within)
        if real != top and not real.startswith(top.rstrip("/") + "/"):
            raise UnsafePathError(f"{what} {path} is not inside {within}")
    try:
        check_ancestors(real)
    except UnsafePathError as e:
        raise UnsafePathError(f"{what} {path}: {e.message}") from None
    root = os.open("/", O_PATH | DIR_FLAGS)
    try:
        fd = open_dir_beneath(root, tuple(n for n in real.split("/") if n))
    finally:
        os.close(root)
    try:
        check_owned_dir(os.fstat(fd), path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_path(fd: int) -> str:
    """A path that leads to the directory of ``fd`` itself, whatever was renamed since, for the
    library functions that take only paths (``shutil.copytree``)."""
    return f"/proc/self/fd/{fd}"
