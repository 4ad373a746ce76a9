"""Applying an isolated execution's changes to its home: all of them, or none.

An isolated execution ran on an overlay whose upper directory holds exactly what it changed:
new and modified files, whiteouts (character devices 0/0) for deletions, and directories marked
opaque (``trusted.overlay.opaque``, or ``user.overlay.opaque`` unprivileged) that replace a
directory whole. :func:`plan` turns that into operations on the home; committing is then

1. **stage**: everything the operations need goes into ``HOME/.brasil-commit-TOKEN/`` (moved out
   of the upper directory when it is on the same file system, copied otherwise, or uploaded over
   9P by a remote worker), and the list of operations is written last, as ``journal`` (written
   to a temporary name, fsynced, renamed). The journal's existence is the commit point on disk;
   the scheduler's record that the execution is *applying* is the commit point it trusts.
2. **apply**: each operation is a rename (of a staged file or directory into place, or of an old
   one into ``trash/``), idempotent: a staged file already moved is not moved again, a target
   already gone is not removed again. Replaying a journal any number of times, after a crash at
   any point, leaves the home exactly as one complete run would. The staging directory goes last.

Whoever replays a journal first renames the staging directory to ``.brasil-recover-TOKEN``: every
operation of the original committer names a path inside the staging directory, so a committer
that wakes up (SIGCONT) after the scheduler took over fails at its next step instead of racing it.

Nothing here may be turned against whoever commits (root, on most clusters). The home must be a
directory of ours that nobody else can write, under directories nobody else can use to replace
it (:func:`open_home`); it is opened once, and every operation is done from that descriptor with
``ninep/beneath.py``: no link is followed, no name leads out. The staging directory must be ours
and closed to others, checked on the descriptor we hold. The journal is checked whole
(``journal.py``) before a single operation is applied; the worker (:func:`apply`) and the
scheduler (:func:`recover_token`) replay journals through the same code, so that check is made
whoever wrote the journal.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict

from ..ninep.beneath import (
    DIR_FLAGS,
    fd_path,
    lstat_beneath,
    makedirs_beneath,
    open_beneath,
    open_dir_beneath,
    open_owned_dir,
)
from ..ninep.private import UnsafePathError, check_private_stat
from .journal import COMMIT, RECOVER, JournalRefused, Op, check_op, read_journal, write_journal

OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
OVERLAY_XATTR = ("trusted.overlay.", "user.overlay.")
SLOW = "BRASIL_BATCH_FAULT_SLOW_COMMIT"  # seconds to pause between operations: crash tests only


def staging_path(home: str, token: int) -> str:
    return os.path.join(home, f"{COMMIT}{token}")


def recover_path(home: str, token: int) -> str:
    return os.path.join(home, f"{RECOVER}{token}")


def open_home(home: str, within: str | None = None) -> int:
    """A descriptor of ``home``, refused (``UnsafePathError``, saying why and what to do) unless
    it is a directory of ours that others can neither write nor replace. ``within``: it must be
    inside that directory too (a remote worker's commit: the scheduler's export)."""
    return open_owned_dir(home, "home", within)


def check_home(home: str) -> None:
    """Refuse ``home`` now (before an isolated job runs there) rather than at its commit."""
    os.close(open_home(home))


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    for name in OPAQUE:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def plan(upper: str, home: str) -> list[Op]:
    """The operations that make ``home`` look like the overlay's merged view did. Commits'
    staging directories (another execution's, seen through the overlay) are not the job's."""
    ops: list[Op] = []
    _plan_dir(upper, home, "", ops)
    return ops


def _plan_dir(upper: str, home: str, rel: str, ops: list[Op]) -> None:
    with os.scandir(os.path.join(upper, rel)) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if not rel and e.name.startswith((COMMIT, RECOVER)):
            continue
        p = os.path.join(rel, e.name)
        st = e.stat(follow_symlinks=False)
        target = os.path.join(home, p)
        if is_whiteout(st):
            ops.append(Op("delete", p))
        elif stat.S_ISDIR(st.st_mode):
            if is_opaque(e.path) or not (os.path.isdir(target) and not os.path.islink(target)):
                ops.append(Op("replace", p, staged=str(len(ops))))
            else:
                _plan_dir(upper, home, p, ops)
                if stat.S_IMODE(st.st_mode) != stat.S_IMODE(os.lstat(target).st_mode):
                    ops.append(Op("chmod", p, mode=stat.S_IMODE(st.st_mode)))
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            ops.append(Op("put", p, staged=str(len(ops))))
        # sockets, fifos and devices an execution made are not outputs: left out


# ---- staging ----

def _open_staging(home: int, name: str, where: str) -> int:
    """The staging directory ``name`` of the home ``home``, opened without following a link and
    checked to be ours and closed to others: what it holds is renamed into the home as is."""
    try:
        fd = os.open(name, os.O_RDONLY | DIR_FLAGS, dir_fd=home)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        check_private_stat(os.stat(name, dir_fd=home, follow_symlinks=False), where,
                           "staging directory")
        raise
    try:
        check_private_stat(os.fstat(fd), where, "staging directory")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _staging_name(staging: str, home: str) -> str:
    name = os.path.basename(staging)
    if os.path.normpath(os.path.dirname(staging)) != os.path.normpath(home) \
            or not name.startswith((COMMIT, RECOVER)):
        raise UnsafePathError(f"{staging} is not a staging directory of {home}")
    return name


def clean_tree(path: str) -> None:
    """A directory staged whole: drop whiteouts and overlay attributes (meaningless outside)."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            st = os.lstat(full)
            if is_whiteout(st):
                os.unlink(full)
                continue
            _strip_xattrs(full)
    _strip_xattrs(path)


def _strip_xattrs(path: str) -> None:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return
    for n in names:
        if n.startswith(OVERLAY_XATTR):
            try:
                os.removexattr(path, n, follow_symlinks=False)
            except OSError:
                pass


def _move(src: str, files: int, name: str) -> None:
    """``src`` (in the worker's own scratch) to ``name`` in the staging directory's ``files/``."""
    try:
        os.rename(src, name, dst_dir_fd=files)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        dst = os.path.join(fd_path(files), name)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)


def stage_local(upper: str, home: str, token: int, ops: list[Op], sync: bool = True) -> str:
    """Stage ``ops`` from ``upper`` into the home and write the journal; returns the staging
    directory. Fails (FileExistsError) if one is there already: never two stagings of a token;
    fails (UnsafePathError) on a home others could turn against us, before anything is made."""
    for op in ops:
        check_op(asdict(op))
    h = open_home(home)
    name = f"{COMMIT}{token}"
    try:
        os.mkdir(name, 0o700, dir_fd=h)
        staging = _open_staging(h, name, staging_path(home, token))
        try:
            os.mkdir("files", 0o700, dir_fd=staging)
            os.mkdir("trash", 0o700, dir_fd=staging)
            files = open_dir_beneath(staging, ("files",))
            try:
                for op in ops:
                    if op.kind in ("put", "replace"):
                        _move(os.path.join(upper, op.path), files, op.staged)
                        if op.kind == "replace":
                            clean_tree(os.path.join(fd_path(files), op.staged))
                        if sync and op.kind == "put":
                            _fsync_file(files, op.staged)
                    _pause()
            finally:
                os.close(files)
            write_journal(staging, ops, sync)
        finally:
            os.close(staging)
    finally:
        os.close(h)
    return staging_path(home, token)


def _fsync_file(dirfd: int, name: str) -> None:
    if not stat.S_ISREG(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
        return
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause() -> None:
    delay = os.environ.get(SLOW)
    if delay:
        time.sleep(float(delay))


# ---- applying ----

def apply(staging: str, home: str, within: str | None = None) -> None:
    """Replay the journal in ``staging`` onto ``home`` (idempotent), then remove ``staging``.
    Refused whole (``UnsafePathError``: ``JournalRefused`` for the journal) before anything is
    applied if the home, the staging directory or any journal entry is not what it must be."""
    h = open_home(home, within)
    try:
        _apply(h, _staging_name(staging, home), staging)
    finally:
        os.close(h)


def _apply(h: int, name: str, where: str) -> None:
    staging = _open_staging(h, name, where)
    try:
        ident = os.fstat(staging)
        ops = read_journal(staging, where)
        if ops is None:
            raise FileNotFoundError(errno.ENOENT, "no journal: the changes were never all staged",
                                    where)
        for op, names in ops:  # a link where a directory was: refused before any change
            _no_link_on_the_way(h, names[:-1] if op.kind != "chmod" else names)
        for i, (op, names) in enumerate(ops):
            _still_there(h, name, ident, where)
            _apply_op(h, name, i, op, names)
            _pause()
    finally:
        os.close(staging)
    shutil.rmtree(name, dir_fd=h)


def _no_link_on_the_way(h: int, names: tuple[str, ...]) -> None:
    """``UnsafePathError`` if a directory on the way to ``names`` is a link (what is missing, or
    not a directory, is for the operation itself to meet)."""
    try:
        os.close(open_dir_beneath(h, names))
    except (FileNotFoundError, NotADirectoryError):
        pass


def _still_there(h: int, name: str, ident: os.stat_result, where: str) -> None:
    """The staging directory is still where it was: not taken over (renamed by whoever completes
    the commit instead of us), nor swapped for something else."""
    try:
        now = os.stat(name, dir_fd=h, follow_symlinks=False)
    except FileNotFoundError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (ident.st_dev, ident.st_ino):
        raise FileNotFoundError(errno.ENOENT, "the commit was taken over", where)


def _apply_op(h: int, name: str, i: int, op: Op, names: tuple[str, ...]) -> None:
    """One operation. The staging side is named through the staging directory's name, so that
    once it is taken over (renamed) every rename of ours fails; the home side is reached from
    descriptors opened beneath the home, never through a link."""
    trash = f"{name}/trash/{i}"
    if op.kind == "chmod":
        try:
            fd = open_beneath(h, names, os.O_RDONLY | DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            os.fchmod(fd, op.mode)
        finally:
            os.close(fd)
        return
    if op.kind == "delete":
        if lstat_beneath(h, names) is None:
            return
        parent = open_dir_beneath(h, names[:-1])
        try:
            os.rename(names[-1], trash, src_dir_fd=parent, dst_dir_fd=h)
        finally:
            os.close(parent)
        return
    src = f"{name}/files/{op.staged}"
    try:
        os.stat(src, dir_fd=h, follow_symlinks=False)
    except FileNotFoundError:
        return  # moved into place already
    parent = makedirs_beneath(h, names[:-1])
    try:
        try:
            old = os.stat(names[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and (op.kind == "replace" or stat.S_ISDIR(old.st_mode)):
            os.rename(names[-1], trash, src_dir_fd=parent, dst_dir_fd=h)
        os.rename(src, names[-1], src_dir_fd=h, dst_dir_fd=parent)
    finally:
        os.close(parent)


def _fence(h: int, token: int) -> bool:
    try:
        os.rename(f"{COMMIT}{token}", f"{RECOVER}{token}", src_dir_fd=h, dst_dir_fd=h)
    except FileNotFoundError:
        pass
    try:
        return stat.S_ISDIR(os.stat(f"{RECOVER}{token}", dir_fd=h, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def recover_token(home: str, token: int, journaled: bool, within: str | None = None) -> bool:
    """After the committer of ``token`` went silent (or a restart, or a remote worker's
    upload): complete its commit if it had reached the commit point (``journaled``: the
    scheduler recorded it), else undo it. Returns whether the home now holds the execution's
    changes. A journal refused (``JournalRefused``) is removed with its staging directory, and
    nothing of it is applied; a home or staging directory refused is left as it is."""
    h = open_home(home, within)
    try:
        if not _fence(h, token):
            return journaled  # applied whole (its staging directory goes last), or never staged
        name = f"{RECOVER}{token}"
        if not journaled:
            shutil.rmtree(name, dir_fd=h, ignore_errors=True)
            return False
        try:
            _apply(h, name, recover_path(home, token))
        except JournalRefused:
            shutil.rmtree(name, dir_fd=h, ignore_errors=True)
            raise
        return True
    finally:
        os.close(h)


def stage_changes(upper: str, home: str, token: int, sync: bool = True,
                  on_op: Callable[[], None] | None = None) -> str | None:
    """Plan and stage an execution's changes; None if it changed nothing."""
    ops = plan(upper, home)
    if not ops:
        return None
    return stage_local(upper, home, token, ops, sync)
