"""Periodic work on the multiples of its period: a daemon's housekeeping shares its wakeups.

What an idle daemon costs is its wakeups more than its work: each one here takes 100–150 µs of
CPU, most of it an interpreter finding its caches cold after other processes ran. Every periodic
task (the server's sweep, the heartbeat polls and checks, the idle-session reaper, the batch
scheduler's lease check) slept its period from whenever it had last finished, so they drifted
apart and woke the daemon separately, ten times a second for a leaf of a 73-daemon tree.
Sleeping instead until the next multiple of the period on the loop's clock (CLOCK_MONOTONIC: the
same for every daemon of a machine) makes the tasks of one daemon, and a parent's polls of its
children, fall due together.
"""

from __future__ import annotations

import asyncio

EARLY = 0.005  # seconds: a timer run up to this early is on its multiple, not before the next
# Seconds: a tick this late means our own process stood still (stopped, starved of CPU, its loop
# blocked). Whatever a peer sent meanwhile is still unread in our sockets, so a silence measured
# across such a stall is ours, not the peer's: the checks that judge peers by it pardon them.
STALLED = 0.5


def until_next(now: float, period: float) -> float:
    """Seconds from ``now`` to the next multiple of ``period``; never less than ``EARLY`` (a loop
    runs a timer when it is due within the clock's resolution: it must not tick twice)."""
    delay = period - now % period
    return delay + period if delay < EARLY else delay


async def tick(period: float) -> float:
    """Sleep until the next multiple of ``period`` on the running loop's clock; returns that
    multiple (how late the wakeup came is then the loop's time minus it)."""
    now = asyncio.get_running_loop().time()
    delay = until_next(now, period)
    await asyncio.sleep(delay)
    return now + delay
