"""A commit's journal: the list of operations, written whole, and checked whole before use.

The journal is data from disk — or, from a remote worker, from the network — and root renames,
deletes and changes modes by it. So :func:`parse_journal` refuses it whole unless every entry
names a plain path inside the home (:func:`check_op`: no ``..``, nothing absolute, no empty or
NUL name, nothing of a commit's staging directory), a plain name under ``files/`` and permission
bits; the worker's own journal goes through the same check. This is the only place that says
what a journal may name.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..ninep.beneath import relative_names
from ..ninep.private import UnsafePathError

COMMIT, RECOVER = ".brasil-commit-", ".brasil-recover-"  # staging directories in a home
KINDS = ("delete", "put", "replace", "chmod")
MAX_JOURNAL = 64 << 20  # bytes: some 800,000 operations


@dataclass
class Op:
    kind: str            # delete | put | replace | chmod
    path: str            # relative to the home
    staged: str = ""     # name under files/ (put, replace)
    mode: int = 0        # chmod


class JournalRefused(UnsafePathError):
    """A journal naming something other than plain paths inside its home: nothing is applied."""


def check_op(entry: Any) -> tuple[Op, tuple[str, ...]]:
    """One journal entry as an operation and its path's names; ``ValueError`` saying what is
    wrong unless it names a plain path inside the home (and, for put and replace, a plain name
    under ``files/``; for chmod, permission bits)."""
    if not isinstance(entry, dict):
        raise ValueError("an entry is an object")
    unknown = set(entry) - {f.name for f in fields(Op)}
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
    kind, staged, mode = entry.get("kind"), entry.get("staged", ""), entry.get("mode", 0)
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    names = relative_names(entry.get("path"), "path")
    if names[0].startswith((COMMIT, RECOVER)):
        raise ValueError(f"path {entry['path']!r} is a commit's staging directory")
    if kind in ("put", "replace") and len(relative_names(staged, "staged name")) != 1:
        raise ValueError(f"staged name {staged!r}: expected a name under files/")
    if not isinstance(staged, str):
        raise ValueError(f"staged name {staged!r}: expected a name under files/")
    if type(mode) is not int or not 0 <= mode <= 0o7777:
        raise ValueError(f"mode {mode!r}: expected permission bits (0 to 0o7777)")
    return Op(kind, entry["path"], staged, mode), names


def parse_journal(data: bytes, where: str) -> list[tuple[Op, tuple[str, ...]]]:
    """Every operation of a journal, checked (:func:`check_op`); :class:`JournalRefused`,
    naming the first bad entry, if any is bad."""
    try:
        entries = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise JournalRefused(f"journal {where}: not JSON ({e}); refused") from None
    if not isinstance(entries, list):
        raise JournalRefused(f"journal {where}: not a list of operations; refused")
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(check_op(entry))
        except ValueError as e:
            text = json.dumps(entry)
            raise JournalRefused(
                f"journal {where}: entry {i} {text[:120]}{'…' if len(text) > 120 else ''}: {e}; "
                "refused: a journal may name only plain paths inside its home") from None
    return out


def read_journal(staging: int, where: str) -> list[tuple[Op, tuple[str, ...]]] | None:
    try:
        fd = os.open("journal", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=staging)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise JournalRefused(f"journal {where}: cannot be opened as a file ({e.strerror}); "
                             "refused") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise JournalRefused(f"journal {where}: not a regular file of yours; refused")
        if info.st_size > MAX_JOURNAL:
            raise JournalRefused(f"journal {where}: {info.st_size} bytes, more than "
                                 f"{MAX_JOURNAL >> 20} MiB; refused")
        return parse_journal(f.read(MAX_JOURNAL + 1), where)


def encode(ops: list[Op]) -> bytes:
    """A journal's bytes (a local one on disk, a remote worker's uploaded through fs/)."""
    return json.dumps([asdict(o) for o in ops]).encode()


def write_journal(staging: int, ops: list[Op], sync: bool = True) -> None:
    """Write ``ops`` as the journal of the staging directory ``staging`` (a descriptor): to a
    temporary name, then renamed — the journal appears whole or not at all."""
    fd = os.open("journal.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600, dir_fd=staging)
    with os.fdopen(fd, "wb") as f:
        f.write(encode(ops))
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.rename("journal.tmp", "journal", src_dir_fd=staging, dst_dir_fd=staging)
    if sync:
        os.fsync(staging)
