"""Log lines a remote peer can cause, bounded: a hostile client must not fill the disk.

Each kind of line (a key: "wrong secret", "bad token", an internal error's place) may be logged
``burst`` times per ``period``; after that its lines are counted, and the next one logged after
the period says how many were left out. So a client trying 2,500 secrets a second costs a few
lines a minute, and the first of each kind is always there to read.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimited:
    def __init__(self, log: logging.Logger, burst: int = 5, period: float = 60.0) -> None:
        self.log = log
        self.burst = burst
        self.period = period
        self._windows: dict[str, list[float | int]] = {}  # key -> [window start, logged, dropped]

    def allow(self, key: str) -> tuple[bool, int]:
        """Whether a line of this kind may be logged now, and how many were left out before it."""
        now = time.monotonic()
        w = self._windows.get(key)
        if w is None or now - w[0] >= self.period:
            dropped = int(w[2]) if w is not None else 0
            if len(self._windows) > 1024:  # keys come from a bounded set, but be sure
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            return True, dropped
        if w[1] < self.burst:
            w[1] += 1
            return True, 0
        w[2] += 1
        return False, 0

    def emit(self, level: int, key: str, msg: str, *args: Any, exc_info: Any = None) -> None:
        ok, dropped = self.allow(key)
        if not ok:
            return
        if dropped:
            msg += f" (and {dropped} more like it in the last {self.period:.0f}s, not logged)"
        self.log.log(level, msg, *args, exc_info=exc_info)

    def warning(self, key: str, msg: str, *args: Any) -> None:
        self.emit(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: Any, exc_info: Any = None) -> None:
        self.emit(logging.ERROR, key, msg, *args, exc_info=exc_info)
