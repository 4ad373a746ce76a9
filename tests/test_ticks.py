"""Periodic tasks wake on the multiples of their period (ninep/ticks.py), so a daemon's
housekeeping shares its wakeups; a timer run a little early must not tick twice."""

import asyncio

import pytest

import brasil.batch.scheduler as sched
from batch_fixtures import scheduler
from brasil.ninep.ticks import EARLY, tick, until_next
from fixtures import wait_for


@pytest.mark.parametrize("now,period,expected", [
    (10.25, 1.0, 0.75),     # to the next whole second
    (10.0, 1.0, 1.0),       # on a multiple: a whole period, not zero
    (9.999, 1.0, 1.001),    # a timer run 1 ms early: the next multiple, not this one again
    (12.0, 5.0, 3.0),
    (14.9, 5.0, 0.1),       # 0.1 s before the multiple: that one
    (14.998, 5.0, 5.002),   # within the early margin: the next
])
def test_until_next(now: float, period: float, expected: float) -> None:
    assert until_next(now, period) == pytest.approx(expected)
    assert until_next(now, period) >= EARLY


def test_tasks_of_any_phase_fall_due_together() -> None:
    """What the module is for: tasks that last ran at different instants of a period, or a
    little late, next fall due at the same instant (computed, not timed: no clock in a test)."""
    for period in (0.2, 1.0, 5.0):
        base = 1000 * period
        dues = {round(now + until_next(now, period), 9)
                for now in (base + period * f for f in (0.0, 0.06, 0.3, 0.5, 0.94))}
        assert dues == {round(base + period, 9)}, (period, dues)


def test_tick_sleeps_until_the_multiple_and_says_which() -> None:
    """It does not return before the multiple ``until_next`` names (a loop may run a timer
    up to its clock's resolution early; late is the machine's business, not asserted), and
    returns that multiple, from which a caller tells how late it woke."""
    async def main() -> tuple[float, float, float]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        said = await tick(0.05)
        return now + until_next(now, 0.05), said, loop.time()
    due, said, woke = asyncio.run(main())
    assert said == pytest.approx(due)
    assert said / 0.05 == pytest.approx(round(said / 0.05))
    assert woke >= due - 1e-6, (due, woke)


@pytest.mark.parametrize("lease,period", [(10.0, 1.0), (30.0, 1.0), (2.0, 0.25)])
async def test_the_batch_lease_check_shares_the_daemons_ticks(tmp_path, monkeypatch, lease,
                                                              period) -> None:
    """The scheduler (in every daemon) checked its leases every lease/8 seconds on a clock of
    its own: 0.8 wakeups a second of an idle daemon's 2.3. On the ticks, at most a second
    apart, it wakes with the daemon's other housekeeping."""
    periods: list[float] = []

    async def recorded(p: float) -> float:
        periods.append(p)
        return await tick(p)
    monkeypatch.setattr(sched, "tick", recorded, raising=False)
    async with scheduler(str(tmp_path), lease=lease):
        await wait_for(lambda: len(periods) >= 2, timeout=10)
    assert set(periods) == {period}
