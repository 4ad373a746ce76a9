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
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time
from dataclasses import asdict, dataclass
from typing import Callable

OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
OVERLAY_XATTR = ("trusted.overlay.", "user.overlay.")
SLOW = "BRASIL_BATCH_FAULT_SLOW_COMMIT"  # seconds to pause between operations: crash tests only


@dataclass
class Op:
    kind: str            # delete | put | replace | chmod
    path: str            # relative to the home
    staged: str = ""     # name under files/ (put, replace)
    mode: int = 0        # chmod


def staging_path(home: str, token: int) -> str:
    return os.path.join(home, f".brasil-commit-{token}")


def recover_path(home: str, token: int) -> str:
    return os.path.join(home, f".brasil-recover-{token}")


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
    """The operations that make ``home`` look like the overlay's merged view did."""
    ops: list[Op] = []
    _plan_dir(upper, home, "", ops)
    return ops


def _plan_dir(upper: str, home: str, rel: str, ops: list[Op]) -> None:
    with os.scandir(os.path.join(upper, rel)) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
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


def _move(src: str, dst: str) -> None:
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)


def write_journal(staging: str, ops: list[Op], sync: bool = True) -> None:
    tmp = os.path.join(staging, "journal.tmp")
    with open(tmp, "w") as f:
        json.dump([asdict(o) for o in ops], f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, os.path.join(staging, "journal"))
    if sync:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def stage_local(upper: str, home: str, token: int, ops: list[Op], sync: bool = True) -> str:
    """Stage ``ops`` from ``upper`` into the home and write the journal; returns the staging
    directory. Fails (FileExistsError) if one is there already: never two stagings of a token."""
    staging = staging_path(home, token)
    os.mkdir(staging, 0o700)
    os.mkdir(os.path.join(staging, "files"))
    os.mkdir(os.path.join(staging, "trash"))
    for op in ops:
        if op.kind in ("put", "replace"):
            dst = os.path.join(staging, "files", op.staged)
            _move(os.path.join(upper, op.path), dst)
            if op.kind == "replace":
                clean_tree(dst)
            if sync and op.kind == "put" and os.path.isfile(dst) and not os.path.islink(dst):
                fd = os.open(dst, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _pause()
    write_journal(staging, ops, sync)
    return staging


def read_journal(staging: str) -> list[Op] | None:
    try:
        with open(os.path.join(staging, "journal")) as f:
            return [Op(**o) for o in json.load(f)]
    except FileNotFoundError:
        return None


def _pause() -> None:
    delay = os.environ.get(SLOW)
    if delay:
        time.sleep(float(delay))


def apply(staging: str, home: str) -> None:
    """Replay the journal in ``staging`` onto ``home`` (idempotent), then remove ``staging``."""
    ops = read_journal(staging)
    if ops is None:
        raise FileNotFoundError(errno.ENOENT, "no journal: the changes were never all staged",
                                staging)
    files = os.path.join(staging, "files")
    trash = os.path.join(staging, "trash")
    for i, op in enumerate(ops):
        target = os.path.join(home, op.path)
        if op.kind == "delete":
            if os.path.lexists(target):
                os.rename(target, os.path.join(trash, str(i)))
        elif op.kind in ("put", "replace"):
            src = os.path.join(files, op.staged)
            if os.path.lexists(src):
                if os.path.lexists(target) and (op.kind == "replace" or (
                        os.path.isdir(target) and not os.path.islink(target))):
                    os.rename(target, os.path.join(trash, str(i)))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(src, target)
            elif not os.path.isdir(staging):
                raise FileNotFoundError(errno.ENOENT, "the commit was taken over", staging)
        elif op.kind == "chmod":
            if os.path.isdir(target):
                os.chmod(target, op.mode)
        _pause()
    shutil.rmtree(staging)


def rollback(staging: str) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def fence(home: str, token: int) -> str | None:
    """Take a commit over: its staging directory moves where its committer cannot reach it.
    Returns the directory to work on (None: there is nothing of that token in the home)."""
    staging, taken = staging_path(home, token), recover_path(home, token)
    try:
        os.rename(staging, taken)
    except FileNotFoundError:
        pass
    return taken if os.path.isdir(taken) else None


def recover_token(home: str, token: int, journaled: bool) -> bool:
    """After the committer of ``token`` went silent (or a restart): complete its commit if it
    had reached the commit point (``journaled``: the scheduler recorded it), else undo it.
    Returns whether the home now holds the execution's changes."""
    taken = fence(home, token)
    if not journaled:
        if taken is not None:
            rollback(taken)
        return False
    if taken is not None:
        apply(taken, home)
    return True  # applied now, or already applied whole (the staging directory goes last)


def stage_changes(upper: str, home: str, token: int, sync: bool = True,
                  on_op: Callable[[], None] | None = None) -> str | None:
    """Plan and stage an execution's changes; None if it changed nothing."""
    ops = plan(upper, home)
    if not ops:
        return None
    return stage_local(upper, home, token, ops, sync)
