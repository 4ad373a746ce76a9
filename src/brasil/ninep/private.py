"""Private directories and files: the runtime, cluster and state directories, and what goes in them.

The daemon runs commands for whoever reaches its socket or knows its secret, so a file brasil
writes must never land where someone else chose. A predictable path such as ``/tmp/brasil-0`` can
be created first by any local user, with a symlink waiting inside; writing the secret through it
would hand that user the cluster. So:

- a directory is made 0700 in one ``mkdir``; one that exists already must be a real directory
  (not a link), owned by us, and closed to others — otherwise it is refused with a sentence that
  says whose it is and what to do. Its ancestors must not let others swap it out either (owned by
  us or root, and not writable by others unless sticky, as ``/tmp`` is);
- a file is written to a fresh name made with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and renamed into
  place (a rename replaces a planted link, it never follows it), or opened for appending with
  ``O_NOFOLLOW`` and checked to be a regular file of ours;
- a file we read for a secret must be a regular file of ours that nobody else can read.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat


class UnsafePathError(OSError):
    """A path someone else could control; the message says whose it is and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EPERM, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _who(uid: int) -> str:
    import pwd
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_ancestors(path: str) -> None:
    """Refuse ``path`` if a directory above it lets someone else rename or replace it."""
    me = os.geteuid()
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            info = os.stat(parent)
        except FileNotFoundError:
            info = None
        if info is not None:
            if info.st_uid not in (me, 0):
                raise UnsafePathError(f"{parent} belongs to {_who(info.st_uid)}, who could replace "
                                      f"{path}; use a directory of your own")
            if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
                raise UnsafePathError(f"{parent} is writable by others (mode "
                                      f"{stat.S_IMODE(info.st_mode):o}), who could replace {path}; "
                                      f"use a directory of your own")
        up = os.path.dirname(parent)
        if up == parent:
            return
        parent = up


def private_dir(path: str, what: str = "directory") -> str:
    """Make ``path`` (and missing parents) mode 0700, or check that the existing one is ours and
    closed to others. Returns the absolute path."""
    path = os.path.abspath(path)
    check_ancestors(path)
    parent = os.path.dirname(path)
    if parent != path and not os.path.lexists(parent):
        private_dir(parent, what)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    check_private_dir(path, what)
    return path


def check_private_dir(path: str, what: str = "directory") -> None:
    info = os.lstat(path)
    check_private_stat(info, path, what)


def check_private_stat(info: os.stat_result, path: str, what: str = "directory") -> None:
    """:func:`check_private_dir` on what ``lstat`` (or ``fstat`` of a descriptor opened without
    following links) said ``path`` is."""
    fix = f"remove it (rm -r {path}) or choose another"
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(f"{what} {path} is a symbolic link; {fix}")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{what} {path} is not a directory; {fix}")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(f"{what} {path} belongs to {_who(info.st_uid)}, not to you: "
                              f"someone else may have made it first; {fix}")
    if info.st_mode & 0o077:
        raise UnsafePathError(f"{what} {path} is open to others (mode "
                              f"{stat.S_IMODE(info.st_mode):o}); chmod 700 {path}, or {fix}")


def check_owned_dir(info: os.stat_result, path: str, what: str = "directory") -> None:
    """Refuse a directory we are to write into on someone's behalf (a job's home) unless it is a
    real directory of ours that nobody else can write: whoever can write it could swap what is
    in it for links to our files while we write there, and make us write through them."""
    risk = "could swap what is in it for links to your files while brasil writes there"
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(f"{what} {path} is a symbolic link; give the directory itself")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{what} {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(f"{what} {path} belongs to {_who(info.st_uid)}, not to you: its "
                              f"owner {risk}; use a directory of your own (or chown "
                              f"{os.geteuid()} {path})")
    if info.st_mode & 0o022:
        raise UnsafePathError(f"{what} {path} is writable by others (mode "
                              f"{stat.S_IMODE(info.st_mode):o}): they {risk}; chmod go-w {path}, "
                              "or use a directory of your own")


def write_private(path: str, data: bytes | str, mode: int = 0o600, replace: bool = True) -> bool:
    """Replace ``path`` with ``data`` atomically, never through a link someone planted. With
    ``replace`` False an existing ``path`` is kept (False is returned): the file is published
    with a hard link, which fails if the name is taken, so two writers racing to make the same
    file never see a half-written one and only one of them wins."""
    if isinstance(data, str):
        data = data.encode()
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path, follow_symlinks=False)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def open_private(path: str, flags: int = os.O_WRONLY | os.O_APPEND, mode: int = 0o600) -> int:
    """A descriptor of the regular file ``path`` of ours (created ``mode`` if missing), opened
    without following a link."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise UnsafePathError(f"{path} is not a regular file of yours; remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_private_fd(fd: int, path: str, what: str = "file") -> None:
    """Refuse the file open at ``fd`` (as ``path``) unless it is a regular file of ours that
    nobody else can read or write. Checked on the descriptor: what was opened, not what the
    name points to now."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafePathError(f"{what} {path} is not a regular file")
    if info.st_uid != os.geteuid():
        raise UnsafePathError(f"{what} {path} belongs to {_who(info.st_uid)}, not to you: "
                              f"someone else may have made it first; remove it")
    if info.st_mode & 0o077:
        raise UnsafePathError(f"{what} {path} is open to others (mode "
                              f"{stat.S_IMODE(info.st_mode):o}); chmod 600 {path}")


def open_checked(path: str, what: str = "file", flags: int = os.O_RDONLY,
                 create: int | None = None) -> int:
    """A descriptor of ``path``, a regular file of ours closed to others (see
    :func:`check_private_fd`), never through a link. ``create``: the mode to make it with,
    ``O_EXCL``, if it does not exist."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a planted FIFO must not block us
    try:
        if create is not None:
            try:
                return os.open(path, flags | os.O_CREAT | os.O_EXCL, create)
            except FileExistsError:
                pass
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"{what} {path} is a symbolic link; give the file itself") \
                from None
        raise
    try:
        check_private_fd(fd, path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_closed_dir(path: str, what: str = "directory") -> None:
    """Refuse the directory ``path`` unless it is a real directory of ours (or root's) that
    nobody else can write — not even a sticky one like /tmp: a file we create there must not get
    neighbours someone else chose (SQLite's -wal and -shm, say)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{what} {path} is not a directory (a symbolic link?); give a "
                              f"directory of your own")
    if info.st_uid not in (os.geteuid(), 0):
        raise UnsafePathError(f"{what} {path} belongs to {_who(info.st_uid)}, not to you; use a "
                              f"directory of your own")
    if info.st_mode & 0o022:
        raise UnsafePathError(f"{what} {path} is writable by others (mode "
                              f"{stat.S_IMODE(info.st_mode):o}); use a directory of your own "
                              f"(mode 700 or 755)")


def read_private(path: str, what: str = "file") -> bytes:
    """The contents of ``path``, which must be a regular file of ours that nobody else can read
    or write (a secret someone else could read, or replace, is no secret)."""
    with os.fdopen(open_checked(path, what), "rb") as f:
        os.set_blocking(f.fileno(), True)
        return f.read()
