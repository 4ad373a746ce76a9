"""``python -m brasil.group.reduce MODULE:FUNC``: a user's reducer, away from the daemon.

Reads a JSON list of values on stdin, folds them with ``FUNC(a, b)`` (which must be
associative, as every level of the tree folds what it has), and writes the JSON result. The
daemon runs it as a child process with a time limit, so a reducer that raises, loops or crashes
costs a message naming the node, never the daemon.

The child runs isolated (``python -I``, from ``/``: exec/pychild.py), so MODULE is looked up
among the interpreter's installed packages, never in the directory the daemon was started from
(where someone else may have put a ``json.py``), and ``PYTHONPATH`` is ignored. Reducers kept
elsewhere are found in the directories of ``BRASIL_REDUCER_PATH`` (the daemon's environment,
``:``-separated): each must be absolute, and a directory of its owner's or root's that nobody
else can write, in directories nobody else can replace.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import stat
import sys

from ..ninep.private import UnsafePathError, check_ancestors

REDUCER_PATH = "BRASIL_REDUCER_PATH"


def reducer_path(value: str) -> list[str]:
    """The directories of ``BRASIL_REDUCER_PATH``; a relative, missing or writable-by-others one
    is refused, with the reason."""
    dirs = []
    for d in filter(None, value.split(os.pathsep)):
        if not os.path.isabs(d):
            raise UnsafePathError(f"{REDUCER_PATH}: {d!r} is not an absolute path")
        info = os.stat(d)
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePathError(f"{REDUCER_PATH}: {d} is not a directory")
        if info.st_uid not in (os.geteuid(), 0) or info.st_mode & 0o022:
            raise UnsafePathError(f"{REDUCER_PATH}: {d} can be written by others (owner uid "
                                  f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}); keep "
                                  "reducers in a directory only you can write")
        check_ancestors(os.path.join(d, "-"))
        dirs.append(d)
    return dirs


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m brasil.group.reduce MODULE:FUNCTION", file=sys.stderr)
        return 2
    mod, _, name = argv[0].partition(":")
    try:
        sys.path += reducer_path(os.environ.get(REDUCER_PATH, ""))  # after the standard library
        func = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError, OSError) as e:
        print(f"cannot load {argv[0]}: {e}", file=sys.stderr)
        return 1
    values = json.load(sys.stdin)
    try:
        result = functools.reduce(func, values) if values else None
    except Exception as e:  # noqa: BLE001 - the user's error, reported as such
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
