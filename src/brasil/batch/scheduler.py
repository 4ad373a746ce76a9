"""The scheduler: the database's decisions delivered to workers, leases, and crash recovery.

Theory of operation. Every decision is a transaction in ``ops.py`` (run by ``store.py`` in
batches on the database thread); this module is the part that lives in memory and may be lost in
a crash without harm:

* workers: each registered worker has an outbox of lines (``run``, ``commit``, ``kill``,
  ``discard``, ``ok``) that its blocking read of ``workers/NAME/next`` takes all at once. Lines are
  queued only after the transaction that decided them has committed.
* leases: token → expiry. A worker renews the leases of what it runs (and of a commit in
  progress); when one expires the execution is presumed lost (``ops.lose``), or, if it was
  committing, its commit journal decides (``commit.recover``): whole → completed and the job is
  done; not whole → rolled back and the job runs again. A restarted scheduler leases every active
  execution afresh, so workers that come back in time carry on as if nothing happened.
* connections: a worker keeps its ``next`` file open for as long as it is connected. When that
  open ends — its 9P connection closed: the worker died, even idle, or is dialling again — the
  worker is gone at once: its executions are lost (their jobs ready again, or committed or rolled
  back as their journal says), and it gets no new work until it registers again. A worker gone
  for ``forget_after`` seconds (and holding nothing) is dropped from the list.
* dispatch: whenever something may have made work (a submission, a job done, a slot freed), live
  workers with free slots are offered work in one claim transaction. A worker's report claims
  for that worker in the same transaction, so a finished job and the next assignment cost one
  commit and one reply.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..ninep.errors import NinepError
from ..ninep.private import UnsafePathError
from ..ninep.ratelimit import RateLimited
from ..ninep.server import loop_time
from ..ninep.ticks import STALLED, tick
from . import commit, isolate, ops
from .jobfile import JobFileError, JobSpec, Parser
from .messages import (
    USAGE,
    Clean,
    CommitFail,
    Committed,
    Done,
    Gone,
    Journaled,
    Output,
    Renew,
    Report,
    Run,
    Start,
    decode_order,
    decode_report,
    order,
)
from .policy import Policy, TrellisPolicy
from .store import Refused, Store, Tx

log = logging.getLogger("brasil.batch")
limited = RateLimited(log)  # lines a client can cause: a few of a kind a minute (events has all)

DEFAULT_LEASE = 10.0
DEFAULT_MAX_SUBMIT = 100_000      # jobs in one submission (brasil serve --max-jobs-per-submission)
DEFAULT_MAX_WORKLOAD = 1_000_000  # jobs of one tag not ended yet (--max-jobs-per-workload)
# seconds the count of live workers in ``ctl`` may be old: every worker reads ``ctl`` when it
# connects, and counting every worker each time made a storm of W connections O(W²)
LIVE_COUNT_AGE = 1.0
SHORT_JOB = 0.05  # seconds: below this, workers get a second assignment per slot queued


@dataclass
class ConnectedWorker:
    """The scheduler's record of a worker that registered (the worker process itself is
    ``worker.Worker``)."""
    name: str
    slots: int
    host: str = "?"
    pid: int = 0
    remote: bool = False
    domain: str = ""  # its availability domain (a rack…): redundant copies go to another one
    outbox: list[str] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    last_seen: float = field(default_factory=loop_time)
    registered: float = field(default_factory=time.time)
    run_time: float = 1.0  # a moving average of its executions' run time, in seconds
    attached: object | None = None  # the open of its ``next`` file, while it is connected
    gone_since: float | None = None  # the loop's clock: when its connection closed (None: not gone)

    def live(self, now_m: float, lease: float) -> bool:
        """Whether to give it work: registered with slots, connected, and heard of lately."""
        return (self.slots > 0 and self.gone_since is None
                and bool(self.waiters or now_m - self.last_seen < lease / 2))

    def capacity(self) -> int:
        """How many executions it may hold: its slots, and as many again queued on it while its
        jobs are very short — then a finished job's slot starts the next at once, instead of
        after a round trip to us. Long jobs are never queued behind one another."""
        return self.slots * 2 if self.run_time < SHORT_JOB else self.slots

    def push(self, line: str) -> None:
        self.outbox.append(line)
        for f in self.waiters:
            if not f.done():
                f.set_result(None)
        self.waiters.clear()


class Scheduler:
    def __init__(self, store: Store, *, export_root: str | None = None,
                 lease: float = DEFAULT_LEASE, policy: Policy | None = None,
                 max_submit: int = DEFAULT_MAX_SUBMIT,
                 max_workload: int = DEFAULT_MAX_WORKLOAD,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock``: the wall clock of what the database records (events, ends, retries'
        delays; the simulator's is virtual). Leases are timed on the loop's clock."""
        self.store = store
        self.clock = clock
        self.max_submit = max_submit
        self.max_workload = max_workload
        self.export_root = export_root.rstrip("/") + "/" if export_root else None
        self.lease = lease
        self.policy = policy or TrellisPolicy()
        self.workers: dict[str, ConnectedWorker] = {}
        self.leases: dict[int, float] = {}       # token → expiry (the loop's clock)
        self.owner: dict[int, str] = {}          # token → worker (set by _own, dropped by forget)
        self.held: collections.Counter[str] = collections.Counter()  # worker → its tokens
        self.hungry: set[str] = set()  # workers holding fewer tokens than their capacity
        self.homes: dict[int, str] = {}          # token → its job's home
        self.committing: set[int] = set()        # told to commit (staging, not yet journaled)
        self.applying: set[int] = set()          # journaled: the commit will be completed
        self.replaying: set[int] = set()         # commits the scheduler itself is completing
        self.isolation_problem: str | None = None
        self.changed = asyncio.Event()           # set after every transaction that changed state
        self._kick = asyncio.Event()
        self._maybe_work = True
        self._tasks: list[asyncio.Task[None]] = []
        self._recovering: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.started = self.clock()
        self.forget_after = max(60.0, 6 * lease)  # seconds a gone worker stays in the list
        self.on_forget: list[Callable[[str], object]] = []  # called with a dropped worker's name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live_count = (-math.inf, 0)  # (when, how many): state_line's count of workers

    # ---- lifetime ----

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.store.open)
        self.isolation_problem = await loop.run_in_executor(None, isolate.probe)
        now = loop_time()
        replay = []
        for token, worker, state, _job, home in await self.store.read(ops.active_executions):
            self.leases[token] = now + self.lease
            self._own(token, worker)
            self.homes[token] = home
            if state == "committing":
                self.committing.add(token)
            elif state == "applying":  # past the commit point: finish it now, whoever began it
                self.applying.add(token)
                replay.append(token)
            if worker not in self.workers:
                self.workers[worker] = ConnectedWorker(worker, 0, last_seen=0.0)
        if self.leases:
            log.info("batch: resuming with %d execution(s) in flight", len(self.leases))
        for token in replay:
            await self._recover(token)
        self._tasks = [asyncio.ensure_future(self._dispatcher()),
                       asyncio.ensure_future(self._lease_keeper())]
        self._kick.set()
        self._loop = loop
        self.wake_after([ops.RETRY_DELAY_CAP])  # retries left waiting by our last run

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self.workers.values():
            for f in w.waiters:
                if not f.done():
                    f.set_exception(NinepError("the scheduler is stopping"))
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    # ---- transactions, and what follows them ----

    async def write(self, op: Callable[[Tx], Any]) -> Any:
        try:
            result = await self.store.write(op)
        except Refused as e:
            raise NinepError(str(e)) from None
        self.changed.set()
        self.changed = asyncio.Event()
        return result

    def deliver(self, push: ops.Push) -> None:
        now = loop_time()
        orphans: list[int] = []
        for worker, line in push:
            order = decode_order(line)
            token = order.token
            if isinstance(order, Run):
                self.leases[token] = now + self.lease
                self._own(token, worker)
                self.homes[token] = order.home
                g = self.workers.get(worker)
                if g is not None and g.gone_since is not None:  # it went while we decided
                    orphans.append(token)
            elif order.verb == "commit":
                self.leases[token] = now + self.lease
                self.committing.add(token)
            elif order.verb == "go":
                self.leases[token] = now + self.lease
            elif token not in self.replaying:  # ok, discard, kill: no longer ours to watch
                self.forget(token)
            w = self.workers.get(worker)
            if w is None:
                w = self.workers[worker] = ConnectedWorker(worker, 0, last_seen=0.0)
            w.push(line)
        if orphans and not self._stopping:
            self._spawn(self._lost(orphans, "worker disconnected"))

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task of ours (cancelled when we stop)."""
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    def _own(self, token: int, worker: str) -> None:
        before = self.owner.get(token)
        if before == worker:
            return
        if before is not None:
            self._disown(token)
        self.owner[token] = worker
        self.held[worker] += 1
        self._recount(worker)

    def _disown(self, token: int) -> None:
        worker = self.owner.pop(token, None)
        if worker is not None:
            self.held[worker] -= 1
            if self.held[worker] <= 0:
                del self.held[worker]
            self._recount(worker)

    def _recount(self, name: str) -> None:
        """Whether ``name`` is hungry (fewer tokens than its capacity), after its tokens, its
        slots or its run time (hence its capacity) changed: kept as they change, so that a
        report asks only the hungry workers whether one is idle, not every worker."""
        w = self.workers.get(name)
        if w is not None and self.held[name] < w.capacity():
            self.hungry.add(name)
        else:
            self.hungry.discard(name)

    def forget(self, token: int) -> None:
        self.leases.pop(token, None)
        self._disown(token)
        self.homes.pop(token, None)
        self.committing.discard(token)
        self.applying.discard(token)

    def _others_idle(self, me: ConnectedWorker) -> bool:
        """Whether a live worker other than ``me`` has a free slot (by our count of its tokens):
        asked of the hungry ones only (it was every worker, at every report: O(workers) per
        job, the simulator found)."""
        now_m = loop_time()
        for name in self.hungry:
            w = self.workers.get(name)
            if w is not None and w is not me and w.live(now_m, self.lease):
                return True
        return False

    def _candidates(self, now_m: float) -> list[ConnectedWorker]:
        """The live workers a dispatch round claims for: the hungry ones, and those with a
        commit in flight (a commit holds its token but not, up to one per slot, its slot:
        ops.busy_slots). Another worker's claim would find it full: a round of claims for
        every worker was O(workers) transactions' work at every round."""
        names = set(self.hungry)
        for t in (*self.committing, *self.applying):
            owner = self.owner.get(t)
            if owner is not None:
                names.add(owner)
        return [w for w in self.workers.values() if w.name in names and w.live(now_m, self.lease)]

    def kick(self) -> None:
        self._maybe_work = True
        self._kick.set()

    # ---- submission ----

    def parser(self, defaults: Any = None) -> Parser:
        """A parser for one submission, with our limit on its jobs."""
        return Parser(defaults, max_jobs=self.max_submit)

    async def submit(self, specs: list[JobSpec]) -> tuple[int, int]:
        """Check and insert ``specs``; the checks, like the parse and the insert, run off the
        event loop (100,000 jobs take a while, and other clients are waiting)."""
        if not specs:
            raise NinepError("no jobs (every line was blank or a comment)")
        if len(specs) > self.max_submit:  # the parser says so first; an API caller may not
            raise NinepError(f"{len(specs)} jobs in one submission; the limit is "
                             f"{self.max_submit} (brasil serve --max-jobs-per-submission): "
                             "split the jobs and submit the parts one after another")
        await asyncio.to_thread(self._check_homes, specs)
        now = self.clock()
        first, n = await self.write(lambda tx: ops.submit(tx, specs, now, self.max_workload))
        limited.emit(logging.INFO, "submitted", "batch: jobs %d-%d submitted", first,
                     first + n - 1)  # a client may submit a thousand times a second
        self.kick()
        return first, n

    def _check_homes(self, specs: list[JobSpec]) -> None:
        homes: dict[str, str] = {}
        for s in specs:
            if s.home is None:
                raise NinepError(f"{s.where}: no home directory: give --home DIR "
                                 "(or %set home DIR, or home:DIR on the job line)")
            homes.setdefault(s.home, s.where)
            if s.isolate and self.isolation_problem:
                raise NinepError(f"{s.where}: cannot run isolated jobs here: "
                                 f"{self.isolation_problem}; submit without --isolate")
        for home, where in homes.items():
            if not os.path.isdir(home):
                raise NinepError(f"{where}: home {home} does not exist on the scheduler's "
                                 "node (or is not a directory); create it, or give --home DIR")

    async def cancel(self, ids: list[int] | None, tag: str | None) -> int:
        now = self.clock()
        n, push = await self.write(lambda tx: ops.cancel(tx, ids, tag, now))
        self.deliver(push)
        self.kick()
        return n

    async def retry(self, ids: list[int] | None, tag: str | None, retries: int) -> int:
        now = self.clock()
        n = await self.write(lambda tx: ops.retry(tx, ids, tag, retries, now))
        self.kick()
        return n

    # ---- workers ----

    def register(self, name: str, slots: int, host: str, pid: int, remote: bool,
                 domain: str = "") -> ConnectedWorker:
        w = self.workers.get(name)
        if w is None:
            w = self.workers[name] = ConnectedWorker(name, slots, host, pid, remote)
        w.slots, w.host, w.pid, w.remote, w.domain = slots, host, pid, remote, domain
        w.last_seen = loop_time()
        w.gone_since = None
        self._recount(name)
        self.kick()
        return w

    def attach(self, name: str, handle: object) -> None:
        """The worker opened its ``next`` file: it is connected until that open ends."""
        w = self.workers.get(name)
        if w is None:
            raise NinepError(f"worker {name} is not registered (did the scheduler restart?)")
        w.attached = handle
        w.gone_since = None

    def detach(self, name: str, handle: object) -> None:
        """An open of ``next`` ended. If it was the worker's current one, its connection closed:
        the worker is gone now, not when its leases expire."""
        w = self.workers.get(name)
        if w is None or w.attached is not handle or self._stopping:
            return  # an older connection's, closing after the worker dialled again
        w.attached = None
        w.gone_since = loop_time()
        self._spawn(self._worker_gone(name))

    async def _worker_gone(self, name: str) -> None:
        held = [t for t, o in self.owner.items() if o == name and t not in self.replaying]
        limited.emit(logging.INFO, "disconnected", "batch: worker %s disconnected%s", name,
                     f"; its execution(s) {' '.join(map(str, held))} are lost" if held else "")
        try:
            await self._lost(held, "worker disconnected")
        except Exception:  # noqa: BLE001
            log.exception("batch: handling worker %s's disconnection failed", name)

    def take(self, name: str, count: int) -> Any:
        """The worker's next lines (all queued, up to ``count`` bytes, whole lines); waits for some."""
        w = self.workers.get(name)
        if w is None:
            raise NinepError(f"worker {name} is not registered (did the scheduler restart?)")
        w.last_seen = loop_time()
        if w.outbox:
            return self._take(w, count)
        return self._take_later(w, count)

    def _take(self, w: ConnectedWorker, count: int) -> bytes:
        out, size = [], 0
        while w.outbox and size + len(w.outbox[0]) + 1 <= count:
            line = w.outbox.pop(0)
            out.append(line)
            size += len(line) + 1
        if not out:  # one line longer than a read: it cannot be split, so the read must grow
            raise NinepError(f"next: a line of {len(w.outbox[0])} bytes does not fit a read of "
                             f"{count}; read with a larger count")
        return ("\n".join(out) + "\n").encode()

    async def _take_later(self, w: ConnectedWorker, count: int) -> bytes:
        while not w.outbox:
            f = asyncio.get_running_loop().create_future()
            w.waiters.append(f)
            try:
                await asyncio.wait_for(f, self.lease / 3)
            except TimeoutError:
                if f in w.waiters:
                    w.waiters.remove(f)
            w.last_seen = loop_time()
            if not w.outbox:
                return b"\n"  # a heartbeat: the worker learns we are alive, and reads again
        return self._take(w, count)

    async def report(self, name: str, text: str) -> None:
        """Lines from a worker: start, done, clean, journaled, committed, commitfail, gone, renew."""
        w = self.workers.get(name)
        if w is None:
            raise NinepError(f"worker {name} is not registered (did the scheduler restart?)")
        now_m = loop_time()
        w.last_seen = now_m
        starts: list[tuple[int, int, float]] = []
        rest: list[Report] = []
        push: ops.Push = []
        for line in text.splitlines():
            try:
                m = decode_report(line)
            except (ValueError, IndexError):
                raise NinepError(f'bad report "{line[:100]}"; expected one of: {USAGE}') from None
            if isinstance(m, Renew):
                for t in m.tokens:
                    if t in self.leases and self.owner.get(t) == name:
                        if t not in self.replaying:
                            self.leases[t] = now_m + self.lease
                    else:
                        push.append((name, order("kill", t)))
            elif isinstance(m, Start):
                starts.append((m.token, m.slot, m.t0))
            elif m is not None:
                rest.append(m)
        if push:
            self.deliver(push)
        if not starts and not rest:
            return
        out, remote_commits = await self.write(lambda tx: self._reports(tx, w, starts, rest))
        self._recount(name)  # (its run time, hence its capacity, may have changed)
        self.deliver(out)
        for token in remote_commits:  # (not cancelled by stop: a commit runs to its end)
            task = asyncio.ensure_future(self._recover(token))
            self._recovering.add(task)
            task.add_done_callback(self._recovering.discard)
        self._maybe_work = True
        if self._others_idle(w):  # this worker was served in the same transaction
            self._kick.set()

    def _reports(self, tx: Tx, w: ConnectedWorker, starts: list[tuple[int, int, float]],
                 rest: list[Report]) -> tuple[ops.Push, list[int]]:
        now = self.clock()
        push = ops.started(tx, w.name, starts) if starts else []
        done: list[int] = []
        gone: list[int] = []
        remote: list[int] = []
        undo: list[tuple[str, int]] = []
        backoffs: list[float] = []
        for m in rest:
            if isinstance(m, Done):
                w.run_time = 0.8 * w.run_time + 0.2 * max(m.t1 - m.t0, 0.0)
                p, d = ops.finished(tx, w.name, m.token, m.status, m.t0, m.t1, now, m.why,
                                    remote=w.remote, backoffs=backoffs)
            elif isinstance(m, Clean):
                w.run_time = 0.8 * w.run_time + 0.2 * max(m.t1 - m.t0, 0.0)
                p, d = ops.finished(tx, w.name, m.token, 0, m.t0, m.t1, now, "", clean=True,
                                    remote=w.remote)
            elif isinstance(m, Journaled):
                p, d = [], []
                if ops.journaled(tx, w.name, m.token, m.c0, now):
                    self.applying.add(m.token)
                    if w.remote:  # its changes were uploaded: the scheduler applies them
                        remote.append(m.token)
                    else:
                        p = [(w.name, order("go", m.token))]
                else:
                    p = [(w.name, order("discard", m.token))]
            elif isinstance(m, Committed):
                p, d = ops.committed(tx, w.name, m.token, m.c1, now)
            elif isinstance(m, CommitFail):
                ops.commit_undone(tx, m.token, m.why or "commit failed", now, True)
                p, d = [(w.name, order("discard", m.token))], []
                if m.token in self.homes:  # what it staged in the home goes too
                    undo.append((self.homes[m.token], m.token))
            elif isinstance(m, Output):
                ops.record_output(tx, w.name, m.token, m.size, m.tail, m.where)
                continue
            elif isinstance(m, Gone):
                gone += m.tokens
                continue
            else:  # (start and renew are taken before the transaction)
                continue
            push += p
            done += d
        if gone:
            ops.gone(tx, w.name, gone, now)
        if done:
            ops.resolve_done(tx, done)
        push += ops.claim(tx, w.name, w.capacity(), self._prefix(w), now, self.policy,
                          avoid=self._domain(w))
        if backoffs and self._loop is not None:  # we are on the database's thread
            self._loop.call_soon_threadsafe(self.wake_after, backoffs)
        for home, token in undo:
            try:  # a rename and a removal: cheap enough here
                commit.recover_token(home, token, False)
            except OSError as e:  # a home refused (or gone) is left alone, and said so
                log.warning("batch: removing execution %d's staging in %s failed: %s", token,
                            home, e)
        return push, remote

    def _prefix(self, w: ConnectedWorker) -> str | None:
        if not w.remote:
            return None
        return self.export_root or "\0no export\0"

    def _committed(self, tx: Tx, worker: str, token: int, t1: float,
                   detail: str | None = None) -> tuple[ops.Push, list[int]]:
        push, done = ops.committed(tx, worker, token, t1, t1, detail)
        if done:
            ops.resolve_done(tx, done)
        return push, done

    # ---- background tasks ----

    async def _dispatcher(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            if not self._maybe_work:
                continue
            now_m = loop_time()
            live = self._candidates(now_m)
            if not live:
                continue
            self._maybe_work = False
            try:
                push = await self.write(functools.partial(self._claim_all, live=live))
            except Exception:  # noqa: BLE001
                log.exception("batch: dispatch failed")
                await asyncio.sleep(0.5)
                self._maybe_work = True
                self._kick.set()
                continue
            self.deliver(push)
            if push:
                self._maybe_work = True  # there may be more for the next free slot

    def _claim_all(self, tx: Tx, *, live: list[ConnectedWorker]) -> ops.Push:
        """Every live worker's free slots filled: first without the jobs that last failed on
        that worker (so another worker with a free slot takes them), then with them."""
        now = self.clock()
        push: ops.Push = []
        domains = self._domains()
        for fallback in (False, True):
            for w in live:
                push += ops.claim(tx, w.name, w.capacity(), self._prefix(w), now, self.policy,
                                  fallback, self._domain(w, domains))
        return push

    def _domains(self) -> dict[str, list[str]]:
        """Each availability domain's workers (made once per round of claims, not per claim)."""
        out: dict[str, list[str]] = {}
        for x in self.workers.values():
            if x.domain:
                out.setdefault(x.domain, []).append(x.name)
        return out

    def _domain(self, w: ConnectedWorker, domains: dict[str, list[str]] | None = None
                ) -> list[str]:
        """The workers that share ``w``'s availability domain (``w`` alone without one): where
        a redundant copy of a job already running there must not go."""
        if not w.domain:
            return [w.name]
        return (domains if domains is not None else self._domains())[w.domain]

    def wake_after(self, delays: list[float]) -> None:
        """Look for work again when a retry's delay has passed (nothing else may happen then)."""
        loop = asyncio.get_running_loop()
        for d in sorted(set(delays)):
            loop.call_later(d + 0.01, self._wake)

    def _wake(self) -> None:
        self._maybe_work = True
        self.kick()

    async def _lease_keeper(self) -> None:
        """Every eighth of a lease, but at least once a second, on the clock's multiples
        (ninep/ticks.py): the daemon's other housekeeping wakes it then anyway. Every 1.25 s on
        its own clock, it was nearly half the wakeups of an idle daemon."""
        while True:
            period = max(0.05, min(1.0, self.lease / 8))
            due = await tick(period)
            try:
                self._pardon(loop_time() - due)
                await self._expire()
                self._forget_gone()
            except Exception:  # noqa: BLE001
                log.exception("batch: lease check failed")

    def _pardon(self, late: float) -> None:
        """Leases are judged by the time we could have heard from the workers, not by the wall
        clock alone: if this check came ``late`` seconds after it was due — we were stopped
        (SIGSTOP), starved, or the loop was blocked — the renewals sent meanwhile are still
        queued in our sockets, unread. Every lease then gets a full one from now (and keeps what
        it had left), so a healthy worker is never blamed for our silence."""
        if late <= max(STALLED, self.lease / 4):
            return
        now_m = loop_time()
        limited.warning("stopped", "batch: the scheduler was stopped or starved for %.1fs "
                        "(its lease check came that late); %d lease(s) extended, to a lease "
                        "from now at least", late, len(self.leases))
        for token, until in self.leases.items():
            self.leases[token] = max(until + late, now_m + self.lease)
        for w in self.workers.values():
            if w.gone_since is None:
                w.last_seen = max(w.last_seen + late, now_m - self.lease / 4)

    async def _expire(self) -> None:
        now_m = loop_time()
        expired = [t for t, until in self.leases.items() if until < now_m]
        if not expired:
            return
        log.info("batch: lease lost: execution(s) %s", " ".join(map(str, expired)))
        await self._lost(expired, None)

    async def _lost(self, tokens: list[int], why: str | None) -> None:
        """These executions' worker is presumed dead (lease expired, or its connection closed):
        running ones are lost; a commit in progress is completed or rolled back (``_recover``)."""
        if not tokens:
            return
        plain = [t for t in tokens if t not in self.committing and t not in self.applying]
        if plain:
            for t in plain:
                self.leases.pop(t, None)
            now = self.clock()
            push = await self.write(lambda tx: ops.lose(tx, plain, now, why))
            self.deliver(push)
        for t in tokens:
            if t in self.committing or t in self.applying:
                await self._recover(t)
        self.kick()

    def _forget_gone(self) -> None:
        """Drop workers gone (or never heard of since a restart) for ``forget_after`` seconds
        that hold nothing: the list shows the workers there are, not every one there was."""
        now_m = loop_time()
        held = set(self.owner.values())
        for name, w in list(self.workers.items()):
            since = w.gone_since if w.gone_since is not None else (
                w.last_seen if w.attached is None and not w.waiters else None)
            if since is not None and now_m - since > self.forget_after and name not in held:
                del self.workers[name]
                self.hungry.discard(name)
                for cb in self.on_forget:
                    cb(name)

    async def _recover(self, token: int) -> None:
        """Finish or undo a commit whose committer is silent (or remote, or from before a restart):
        fence its staging directory off, then replay the journal if the execution had reached the
        commit point (``applying``), or roll it back if not."""
        if token in self.replaying:
            return
        self.replaying.add(token)
        self.leases.pop(token, None)
        home = self.homes.get(token)
        worker = self.owner.get(token, "?")
        journaled = token in self.applying
        try:
            if home is None:  # forgotten meanwhile (a renewal answered "kill" in the exchange
                # whose "done" was answered "commit"): the database knows; the job must not
                # wait for ever
                row = await self.store.read(lambda tx: ops.whose(tx, token))
                if row is None or row[2] not in ("committing", "applying"):
                    return
                worker, home = row[0], row[1]
                journaled = journaled or row[2] == "applying"  # past the commit point: replay
            w = self.workers.get(worker)
            # A remote worker's journal came over the network: its home must be in the export too.
            within = self.export_root if w is not None and w.remote else None
            loop = asyncio.get_running_loop()
            try:
                done = await loop.run_in_executor(None, commit.recover_token, home, token,
                                                  journaled, within)
            except UnsafePathError as e:  # refused whole: nothing of it was applied
                log.warning("batch: execution %d's commit in %s refused: %s", token, home, e)
                now, why = self.clock(), f"commit refused: {e}"
                await self.write(lambda tx: ops.commit_refused(tx, token, why, now))
                self.deliver([(worker, order("discard", token))])
                return
            except OSError as e:
                log.warning("batch: completing execution %d's commit in %s failed: %s", token,
                            home, e)
                now, why = self.clock(), f"commit could not be completed: {e}"
                await self.write(lambda tx: ops.commit_undone(tx, token, why, now, True))
                self.deliver([(worker, order("discard", token))])
                return
            now = self.clock()
            if done:
                push, _ = await self.write(
                    lambda tx: self._committed(tx, worker, token, now, "completed by scheduler"))
                push = [p for p in push if p[1] != order("ok", token)] + [(worker, order("ok", token))]
            else:
                log.warning("batch: execution %d went silent before its journal was whole: "
                            "rolled back", token)
                await self.write(lambda tx: ops.commit_undone(
                    tx, token, "committer lost before its journal was whole: rolled back", now))
                push = [(worker, order("kill", token))]
        finally:
            self.replaying.discard(token)
        self.deliver(push)
        self.kick()

    # ---- for the files ----

    def state_line(self) -> str:
        iso = "yes" if not self.isolation_problem else "no"
        now_m = loop_time()
        if now_m - self._live_count[0] >= LIVE_COUNT_AGE:
            self._live_count = (now_m, sum(
                1 for w in self.workers.values() if w.slots and w.gone_since is None and
                now_m - w.last_seen < self.lease))
        live = self._live_count[1]
        return (f"scheduler db {self.store.describe()} lease {self.lease:g} policy "
                f"{self.policy.name} workers {live} isolation {iso}"
                + (f" export {self.export_root}" if self.export_root else ""))


__all__ = ["Scheduler", "ConnectedWorker", "DEFAULT_LEASE", "JobFileError"]
