"""`push`: the PUSH dataflow shell (SPEC.md §5). Not built yet: it comes with its own issue, on top
of the node daemon's sessions. Until then this entry point says so instead of pretending."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("push: the PUSH shell is not built yet (see ARCHITECTURE.md for what exists today)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
