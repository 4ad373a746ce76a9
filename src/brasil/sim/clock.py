"""A virtual clock over many event loops: one loop per simulated daemon, one driver stepping them.

Nothing a simulated daemon does waits on the operating system (its network is in memory,
``net.py``; its commands are simulated, ``commands.py``), so time need not pass while nothing
happens: the driver always runs the loop whose next piece of work is earliest, one callback at
a time, and moves the virtual clock to it. Timeouts, heartbeats and leases then run at simulated
speed, whatever the real machine takes to compute them.

Each daemon has its own simulated core: the real CPU time a callback takes (``time.thread_time``
around it, less the garbage collector's pauses, which belong to no daemon) is charged to its
loop, which is busy until ``now + cpu``; work arriving meanwhile waits, so a daemon doing O(N)
work queues what comes to it, as a real one would. While a callback runs its loop's clock moves
with the CPU it has used, so what it sends leaves when it would have.

Each loop is a real :class:`asyncio.BaseEventLoop` (futures, tasks, timers, contextvars,
``get_running_loop``): only its clock and its stepping are ours. Work a daemon hands to a thread
(``run_in_executor``, ``asyncio.to_thread``: the group reads parse there) is run at once, inline,
and its result delivered ``cpu`` virtual seconds later: it took its CPU on another core, in
parallel with the loop's, which is not charged for it. (Run in a real thread, the driver would
go on stepping the other daemons meanwhile and the clock would race ahead of it.) A thread the
code starts itself would still run in real time, its answers arriving at the virtual instant
they are noticed: so the batch store is given a writer on its daemon's loop instead
(``batch/store.WriterOnLoop``, ``batch.py``).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import heapq
import itertools
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
EPOCH = 1.7e9  # the virtual clock's 0 as a wall-clock time (November 2023)


class Deadlock(RuntimeError):
    """Nothing left to run, and what was waited for is not done."""


class SimLoop(asyncio.BaseEventLoop):
    """One simulated daemon's loop: its clock is the driver's, it is never run by itself."""

    # BaseEventLoop's own queues, which the driver steps (typeshed does not declare them)
    _ready: collections.deque[asyncio.Handle]
    _scheduled: list[asyncio.TimerHandle]
    _timer_cancelled_count: int

    def __init__(self, driver: Driver, name: str) -> None:
        super().__init__()
        self.driver = driver
        self.name = name
        self.busy_until = 0.0  # its core is taken until then (virtual seconds)
        self.cpu = 0.0  # real CPU seconds charged so far
        self.steps = 0
        self.frozen = False  # not stepped (a hung daemon: its peers see silence)
        self.queued = math.inf  # the time of its valid entry in the driver's heap
        self._clock_resolution = 1e-9

    # ---- the clock and the driver's view of the work ----

    def time(self) -> float:
        d = self.driver
        if d.current is self:
            return d.now + (time.thread_time() - d.step_cpu0 - d.off_core + d.extra) * d.cpu_scale
        return d.now

    # (the three overrides: typeshed types them with variadic generics; the same calls)
    def call_soon(self, callback: Callable[..., object], *args: Any, context: Any = None) -> asyncio.Handle:  # type: ignore[override]
        handle = super().call_soon(callback, *args, context=context)
        self.driver.wake(self, self.driver.now)
        return handle

    def call_at(self, when: float, callback: Callable[..., object], *args: Any, context: Any = None) -> asyncio.TimerHandle:  # type: ignore[override]
        handle = super().call_at(when, callback, *args, context=context)
        self.driver.wake(self, when)
        return handle

    def wall(self) -> float:
        """The virtual clock as a wall-clock time (from :data:`EPOCH`): what the code that
        records times (the batch scheduler, its workers) is given as ``time.time``."""
        return EPOCH + self.time()

    def next_time(self) -> float | None:
        """When this loop next has work (None: none, or frozen), its busy core included."""
        if self.frozen:
            return None
        if self._ready:
            return max(self.driver.now, self.busy_until)
        sched = self._scheduled
        while sched and sched[0]._cancelled:
            self._timer_cancelled_count -= 1
            _unscheduled(heapq.heappop(sched))
        if not sched:
            return None
        return max(sched[0].when(), self.busy_until)

    def _due(self) -> None:
        now, sched, ready = self.driver.now, self._scheduled, self._ready
        while sched and (sched[0]._cancelled or sched[0].when() <= now):
            h = heapq.heappop(sched)
            _unscheduled(h)
            if h._cancelled:
                self._timer_cancelled_count -= 1
            else:
                ready.append(h)

    # ---- what BaseEventLoop leaves to a subclass ----

    def _process_events(self, event_list: Any) -> None:
        pass

    def _write_to_self(self) -> None:  # call_soon_threadsafe: a thread's work came back
        self.driver.external.put(self)

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:  # type: ignore[override]
        """Run ``func`` now, here, off this loop's core; its result is due after its CPU."""
        d = self.driver
        fut: asyncio.Future[T] = self.create_future()
        t0 = time.thread_time()
        try:
            result, error = func(*args), None
        except Exception as e:  # (the future carries it, as an executor's would)
            result, error = None, e
        spent = time.thread_time() - t0
        if d.current is self:
            d.off_core += spent
        self.call_at(self.time() + spent * d.cpu_scale, _settle, fut, result, error)
        return fut


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def _unscheduled(h: asyncio.TimerHandle) -> None:
    """Out of its loop's heap (a cancel then no longer counts it there), as _run_once does."""
    h._scheduled = False  # type: ignore[attr-defined]  # (asyncio's own, undeclared)


class Driver:
    """Steps every loop in virtual-time order; :meth:`run` until a coroutine ends."""

    def __init__(self, cpu_scale: float = 1.0, cores: int | None = None) -> None:
        """``cores``: None, a core per daemon; or that many cores that every daemon (and every
        simulated command) shares, as the daemons of a tree on one machine do."""
        self.now = 0.0
        self.cpu_scale = cpu_scale  # simulated core seconds per real CPU second
        self.cores: list[float] | None = [0.0] * cores if cores else None  # when each is free
        self._held_after = 0.0  # when the core a step runs on is free again
        self.extra = 0.0  # modelled CPU the current step is charged on top of its own
        self.loops: list[SimLoop] = []
        self.current: SimLoop | None = None
        self.step_cpu0 = 0.0
        self.off_core = 0.0
        self.gc_total = 0.0
        self._gc_start = 0.0
        self.external: queue.SimpleQueue[SimLoop] = queue.SimpleQueue()
        self._heap: list[tuple[float, int, SimLoop]] = []
        self._seq = itertools.count()
        self.steps = 0
        self.longest: tuple[float, str, str] = (0.0, "", "")  # the longest step: cpu, where, what

    def loop(self, name: str) -> SimLoop:
        loop = SimLoop(self, name)
        self.loops.append(loop)
        return loop

    def wake(self, loop: SimLoop, when: float) -> None:
        """``loop`` has work at ``when``: make sure the heap holds an entry no later."""
        if when < loop.queued:
            loop.queued = when
            heapq.heappush(self._heap, (when, next(self._seq), loop))

    def freeze(self, loop: SimLoop) -> None:
        loop.frozen = True

    def thaw(self, loop: SimLoop) -> None:
        loop.frozen = False
        loop.queued = math.inf
        t = loop.next_time()
        if t is not None:
            self.wake(loop, t)

    def charge(self, seconds: float) -> None:
        """Charge the current step ``seconds`` of CPU it did not take here: what the kernel
        would have spent for it (a socket's system calls, net.LinkModel.cpu_per_message)."""
        if self.current is not None:
            self.extra += seconds

    def core_time(self, loop: SimLoop, seconds: float) -> float:
        """``seconds`` of CPU that is not a loop's (a simulated command, a fork): when it ends,
        from now on ``loop``'s clock; on a shared core when cores are shared."""
        start = loop.time()
        if self.cores is None:
            return start + seconds
        after_step = max(self._held_after, start)  # the core the asking step holds
        if not self.cores or after_step <= self.cores[0]:
            self._held_after = after_step + seconds
            return after_step + seconds
        start = max(start, heapq.heappop(self.cores))
        heapq.heappush(self.cores, start + seconds)
        return start + seconds

    @staticmethod
    def threads_alive() -> bool:
        return threading.active_count() > 1

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            spent = time.thread_time() - self._gc_start
            self.gc_total += spent
            if self.current is not None:
                self.off_core += spent

    def step(self) -> bool:
        """Run the earliest piece of work of any loop; False when there is none at all."""
        heap = self._heap
        t: float | None = None
        while True:
            while not self.external.empty():
                lp = self.external.get()
                self.wake(lp, self.now)
            if not heap:
                if self.threads_alive():
                    try:  # (real time: a thread of the code's own may still answer)
                        lp = self.external.get(timeout=1.0)
                    except queue.Empty:
                        return False
                    self.wake(lp, self.now)
                    continue
                return False
            when, _, loop = heapq.heappop(heap)
            if when != loop.queued:
                continue  # superseded by an earlier entry
            loop.queued = math.inf
            t = loop.next_time()
            if t is None:
                continue
            if t > when:
                self.wake(loop, t)
                continue
            if self.cores is not None and self.cores[0] > t:  # every shared core is busy
                t = self.cores[0]
                if t > when:
                    self.wake(loop, t)
                    continue
            break
        assert t is not None
        self.now = max(self.now, t)
        loop._due()
        ready = loop._ready
        handle = ready.popleft() if ready else None
        held = heapq.heappop(self.cores) if self.cores is not None else 0.0  # the step's core
        self._held_after = held
        if handle is not None and not handle._cancelled:
            self.current = loop
            self.off_core = self.extra = 0.0
            outer = asyncio.events._get_running_loop()
            asyncio.events._set_running_loop(loop)
            self.step_cpu0 = time.thread_time()
            try:
                handle._run()
            finally:
                cpu = time.thread_time() - self.step_cpu0 - self.off_core + self.extra
                asyncio.events._set_running_loop(outer)
                self.current = None
            loop.cpu += cpu
            loop.steps += 1
            self.steps += 1
            if cpu > self.longest[0]:
                self.longest = (cpu, loop.name, repr(handle)[:160])
            loop.busy_until = self.now + cpu * self.cpu_scale
            self._held_after = max(self._held_after, loop.busy_until)
        if self.cores is not None:  # (what the step reserved meanwhile is in the heap)
            heapq.heappush(self.cores, self._held_after)
        t = loop.next_time()
        if t is not None:
            self.wake(loop, t)
        return True

    def run(self, main: Awaitable[T], loop: SimLoop, *, limit: float = 3600.0) -> T:
        """Run ``main`` on ``loop`` (with every other loop stepping alongside) until it ends;
        Deadlock if everything stops first, TimeoutError past ``limit`` virtual seconds."""
        task: asyncio.Future[T] = asyncio.ensure_future(main, loop=loop)
        deadline = self.now + limit
        gc.callbacks.append(self._gc)
        try:
            while not task.done():
                if not self.step():
                    raise Deadlock(f"nothing left to run at t={self.now:.3f}s and the "
                                   "simulation's main task is not done")
                if self.now > deadline:
                    task.cancel()
                    raise TimeoutError(f"the simulation ran past {limit:g} virtual seconds")
        finally:
            gc.callbacks.remove(self._gc)
        return task.result()

    def run_for(self, seconds: float, loop: SimLoop) -> None:
        """Let every loop run for ``seconds`` of virtual time."""

        async def pause() -> None:
            await asyncio.sleep(seconds)
        self.run(pause(), loop, limit=seconds + 1)
