"""The live status line: one line per stage, on stderr when it is a terminal.

Each line says how many copies run and what went in and out (records and bytes), redrawn at most
twice a second. Output and status never share a line: the engines write every byte of output
and stderr inside ``quiet()``, which erases the status first; it is drawn again at the next tick,
below what was written, and erased for good when the pipeline ends, so the last screen holds the
output alone. The drawing is synchronous (no refresh thread of its own): a thread that redraws on
its own clock is what glued the timer to the first result and left stale lines behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .plan import Plan


def human(n: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def wanted() -> bool:
    """By default the status is drawn when stderr is a terminal: it is where a person looks."""
    return sys.stderr.isatty()


class StatusLine:
    def __init__(self, plan: Plan, fd: int = 2) -> None:
        self.plan, self.fd = plan, fd
        self.started = time.monotonic()
        self.last = 0.0
        self.drawn = 0  # lines of status on the screen now
        self.closed = False
        self.lock = threading.Lock()  # output written from a thread holds it (remote engine)

    def update(self, stats: Sequence[Any], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return
        if not self.lock.acquire(blocking=False):
            return  # output is being written: draw at the next tick
        try:
            if self.closed:
                return
            self.last = now
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            rows = [r[:width] for r in render(self.plan, stats, now - self.started)]
            self._write(self._erasure() + "\n".join(rows[:-1] + ["\x1b[2m" + rows[-1] + "\x1b[0m"]))
            self.drawn = len(rows)
        finally:
            self.lock.release()

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """Around every write of output or stderr: the status is off the screen meanwhile."""
        with self.lock:
            if self.drawn:
                self._write(self._erasure())
                self.drawn = 0
            yield

    def close(self) -> None:
        with self.quiet():
            self.closed = True

    def _erasure(self) -> str:
        return ("\r\x1b[K" + "\x1b[1A\x1b[K" * (self.drawn - 1)) if self.drawn else ""

    def _write(self, text: str) -> None:
        data = text.encode()
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(self.fd, data):]


def render(plan: Plan, stats: Sequence[Any], elapsed: float) -> list[str]:
    """One line per stage: copies running, records and bytes in and out; then the time."""
    rows = []
    for seg, st in zip(plan.segments, stats):
        text = seg.text if len(seg.text) <= 40 else seg.text[:39] + "…"
        parts = [f"{seg.index + 1} {text}", f"{st.running}/{st.copies} running"]
        for what, b, r in (("in", st.bytes_in, st.records_in), ("out", st.bytes_out,
                                                                st.records_out)):
            if b:
                recs = f"{human(r)} rec, " if r is not None else ""
                parts.append(f"{what} {recs}{human(b)}B")
        rows.append(" · ".join(parts))
    rows.append(f"{elapsed:.1f}s")
    return rows
