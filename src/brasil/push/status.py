"""The live status line: one line per stage, on a terminal only.

Each line says how many copies run and what went in and out (records and bytes), refreshed at
most twice a second on stderr. It is drawn only when both stdout and stderr are terminals, so
output piped or redirected never carries it, and it disappears when the pipeline ends.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Sequence

from .plan import Plan


def human(n: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def wanted() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


class StatusLine:
    def __init__(self, plan: Plan) -> None:
        from rich.console import Console
        from rich.live import Live
        self.plan = plan
        self.console = Console(stderr=True)
        self.live: Any = Live("", console=self.console, refresh_per_second=4, transient=True)
        self.started = time.monotonic()
        self.last = 0.0
        self.live.start()

    def update(self, stats: Sequence[Any], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        self.live.update(render(self.plan, stats, now - self.started))

    def close(self) -> None:
        self.live.stop()


def render(plan: Plan, stats: Sequence[Any], elapsed: float) -> str:
    """One line per stage: copies running, records and bytes in and out (rich markup)."""
    rows = []
    for seg, st in zip(plan.segments, stats):
        text = seg.text if len(seg.text) <= 40 else seg.text[:39] + "…"
        parts = [f"[bold]{seg.index + 1}[/] {text}", f"{st.running}/{st.copies} running"]
        for what, b, r in (("in", st.bytes_in, st.records_in), ("out", st.bytes_out,
                                                                st.records_out)):
            if b:
                recs = f"{human(r)} rec, " if r is not None else ""
                parts.append(f"{what} {recs}{human(b)}B")
        rows.append(" · ".join(parts))
    rows.append(f"[dim]{elapsed:.1f}s[/]")
    return "\n".join(rows)
