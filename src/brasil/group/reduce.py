"""``python -m brasil.group.reduce MODULE:FUNC``: a user's reducer, away from the daemon.

Reads a JSON list of values on stdin, folds them with ``FUNC(a, b)`` (which must be
associative, as every level of the tree folds what it has), and writes the JSON result. The
daemon runs it as a child process with a time limit, so a reducer that raises, loops or crashes
costs a message naming the node, never the daemon.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m brasil.group.reduce MODULE:FUNCTION", file=sys.stderr)
        return 2
    mod, _, name = argv[0].partition(":")
    sys.path.insert(0, ".")
    try:
        func = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
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
