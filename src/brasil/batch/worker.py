"""`brasil worker`: a placeholder that pulls jobs over one persistent 9P connection.

Theory of operation. The worker registers (``worker NAME SLOTS`` on ``batch/ctl``) and keeps two
files of ``batch/workers/NAME/`` open for its whole life: a read of ``next`` blocks until the
scheduler has lines for it (``run``, ``commit``, ``go``, ``kill``, ``discard``, ``ok``) and returns
all of them; a write of ``ctl`` carries every report queued meanwhile (``start``, ``done``,
``clean``, ``journaled``, ``committed``, ``commitfail``, ``gone``, ``renew``). No connection is set
up per job, and under load one round trip moves many jobs.

A job runs directly (no shell for a plain command, as the node's sessions do) in its home, in a
process group of its own; an isolated one in an overlay of its home (``isolate.py``), its changes
staged and committed only when the scheduler says it won (``commit.py``). Every report that
expects an answer is kept until the answer comes: if the connection breaks — the scheduler was
restarted, say — the worker dials again, registers under the same name, and sends them again
with a renewal of everything it still holds; the scheduler answers each idempotently. So what
finished while the scheduler was away is reported when it is back, and a report it no longer
wants (the execution was presumed lost meanwhile) is answered ``discard``: the work is thrown
away, never committed.

Jobs do not outlive the worker, however it dies: each runs in a process group of its own, listed
with the node daemon's watchdog (``exec/reaper.py``), a tiny process holding a pipe from us that
kills the groups still listed when the pipe ends — kill -9 of the worker included. Otherwise its
jobs would run on as orphans while the scheduler, once their lease expired, ran them again.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import logging
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..exec.command import command_argv
from ..exec.forkserver import ForkServer
from ..exec.spawn import Spawned
from ..lifecycle import step
from ..ninep.client import Client
from ..ninep.constants import OREAD, OWRITE
from ..ninep.errors import NinepError
from . import commit, isolate
from .lifecycle import WORK
from .messages import (
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
    encode_report,
)
from .processes import HostProcesses, JobProcesses
from .remote_homes import fetch_tree, relative, upload

log = logging.getLogger("brasil.batch.worker")
# One line per execution with the moments it passed (brasil worker --trace-jobs; bench/batch.py
# reads them for its per-job breakdown). Off, it costs a dictionary store per moment.
trace = logging.getLogger("brasil.batch.worker.trace")
B = "csrv/local/batch"
OUTPUT_TAIL = 4096  # bytes of an execution's output sent to the scheduler (brasil output)
DEFAULT_KEEP_OUTPUTS = 1000  # output files kept in out/ (brasil worker --keep-outputs)
TIMED_OUT = 124  # the exit status of an execution killed at its time limit (as timeout(1))
REPORT_WRITE = 256 * 1024  # bytes of reports per write: never more than a 9P message holds


def default_name() -> str:
    """HOST-PID-RANDOM: unique per process, and the same across reconnections."""
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}-{random.randrange(1 << 16):04x}"


@dataclass
class Execution(Run):
    """A ``run`` order (the scheduler's fields, decoded in batch/messages.py) and what this
    worker knows of it as it goes."""
    slot: int = -1
    pid: int = 0
    popen: subprocess.Popen[bytes] | Spawned | None = None  # waited through it, if any
    scratch: str = ""
    lower: str | None = None
    state: str = "received"  # along lifecycle.WORK: every change is a step (see move)
    killed: bool = False
    t0: float = 0.0
    t1: float = 0.0
    status: int = 0
    pending: Report | None = None  # the last report that awaits an answer
    ops: list[Any] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    marks: dict[str, float] = field(default_factory=dict)  # moment → time.time() (the trace)

    def mark(self, moment: str) -> None:
        self.marks[moment] = time.time()

    def move(self, event: str) -> None:
        """One step along :data:`lifecycle.WORK` (an event it does not allow here raises)."""
        self.state = step(WORK, self.state, event, f"execution {self.token} here")


class Worker:
    def __init__(self, connect: Any, slots: int, workdir: str, *, name: str | None = None,
                 remote_homes: bool | None = None, env: dict[str, str] | None = None,
                 keep_outputs: int = DEFAULT_KEEP_OUTPUTS, domain: str = "",
                 processes: JobProcesses | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``connect``: an async function returning a fresh Client to the scheduler's node.
        ``remote_homes``: read homes through the scheduler's fs/ (None: only when the scheduler
        runs on another machine). ``env``: laid over this process's environment for every job
        (jobs see the worker's environment, then their own). ``keep_outputs``: how many output
        files ``out/`` keeps (the oldest go first), so it never grows without bound.
        ``domain``: this worker's availability domain (a rack, a power domain): the scheduler
        never runs two executions of one job in one domain. ``processes``: what the jobs run
        as (default: this machine's processes, ``processes.HostProcesses``; the simulator's are
        simulated). ``clock``: the wall clock of the times reported (an execution's start and
        end; the simulator's is virtual)."""
        self.connect = connect
        self.slots = slots
        self.workdir = workdir
        self.host = socket.gethostname().split(".")[0]
        self.name = name or default_name()
        self.remote_homes = remote_homes
        self.domain = domain
        self.env = env or {}
        self.execs: dict[int, Execution] = {}
        self.free = list(range(slots))
        self.waiting: list[Execution] = []
        self.outq: list[Report] = []
        self.starts: dict[int, Start] = {}  # start reports not sent yet
        self.lease = 10.0
        self.export_root: str | None = None
        self.client: Client | None = None
        self._ctl: Any = None
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self.connected = asyncio.Event()
        self.completed = 0
        self.processes: JobProcesses = processes or HostProcesses()
        self.clock = clock
        self._forkserver: ForkServer | None = None
        self._no_forkserver = False  # it could not start: fork as subprocess does
        os.makedirs(os.path.join(workdir, "out"), exist_ok=True)
        os.makedirs(os.path.join(workdir, "scratch"), exist_ok=True)
        self.keep_outputs = keep_outputs
        self.outputs = self._existing_outputs()

    # ---- the connection ----

    QUIET = 30.0  # seconds between two log lines about the same failure to reach the scheduler

    async def run(self) -> None:
        delay = 0.05
        ever = False         # whether we were ever connected
        failing = 0          # attempts that failed since we were last connected
        said = (-1e9, "")    # when we last logged a failure, and which
        self.processes.open()
        while not self._stop.is_set():
            try:
                await self._session()
                delay = 0.05
            except (TimeoutError, ConnectionError, OSError, NinepError) as e:
                was_connected = self.connected.is_set()
                ever = ever or was_connected
                self.connected.clear()
                if self._stop.is_set():
                    break
                failing = 0 if was_connected else failing + 1
                now, why = time.monotonic(), str(e) or type(e).__name__
                if was_connected and (why != said[1] or now - said[0] >= self.QUIET):
                    log.info("worker %s: connection to the scheduler lost (%s); dialling again",
                             self.name, why)
                    said = (now, why)
                elif not was_connected and (now - said[0] >= self.QUIET or why != said[1]):
                    # A scheduler that is not there makes the same error many times a second:
                    # say it once, then at most every QUIET seconds.
                    what = "cannot reach the scheduler" if ever else \
                        "cannot reach the scheduler (never connected yet)"
                    log.info("worker %s: %s: %s; %s, every %gs at most", self.name, what, why,
                             "trying again" if failing == 1 else f"{failing} attempts so far",
                             2.0)
                    said = (now, why)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 2.0)
        await self._shutdown()

    def stop(self) -> None:
        self._stop.set()
        if self.client is not None:
            self.client.abort()

    async def _session(self) -> None:
        c = self.client = await self.connect()
        try:
            state = (await c.read(f"{B}/ctl")).decode().split()
            info = {k: state[i + 1] for i, k in enumerate(state[:-1]) if k in ("lease", "export")}
            self.lease = float(info.get("lease", self.lease))
            self.export_root = info.get("export")
            if self.remote_homes is None:
                self.remote_homes = False
            words = [f"worker {self.name} {self.slots}"] + (["remote"] if self.remote_homes else [])
            words += [f"host={self.host}", f"pid={os.getpid()}"]
            if self.domain:
                words.append(f"domain={self.domain}")
            await c.write(f"{B}/ctl", " ".join(words) + "\n")
            nxt = await c.open(f"{B}/workers/{self.name}/next", OREAD)
            self._ctl = await c.open(f"{B}/workers/{self.name}/ctl", OWRITE)
            resend = [e.pending for e in self.execs.values() if e.pending]
            held = list(self.execs)
            self.outq[:0] = resend + ([Renew(held)] if held else [])
            self.connected.set()
            tasks = [asyncio.ensure_future(self._reader(nxt)), asyncio.ensure_future(self._flusher()),
                     asyncio.ensure_future(self._renewer())]
            self._wake.set()
            try:
                done, _ = await asyncio.wait(tasks + [asyncio.ensure_future(self._stop.wait())],
                                             return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    err = None if t.cancelled() else t.exception()
                    if err is not None:
                        raise err
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.client = None
            self._ctl = None
            c.abort()

    async def _reader(self, nxt: Any) -> None:
        while True:
            data = await nxt.read(1 << 20, 0)
            if not data:
                raise ConnectionError("next: end of file")
            for line in data.decode().splitlines():
                if line:
                    self._handle(line)

    def report(self, m: Report, pending: Execution | None = None) -> None:
        if pending is not None:
            pending.pending = m
        self.outq.append(m)
        self._wake.set()

    def report_start(self, e: Execution) -> None:
        """A start needs no answer: it waits for the next write (a short job's start then goes
        with its end, and costs the scheduler nothing more), or a quarter lease at most."""
        self.starts[e.token] = Start(e.token, e.slot, e.t0)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.outq or self._ctl is None:
                continue
            lines, self.outq = self.outq, []
            if self.starts:  # those still running; a finished one's end carries its start
                ended = {m.token for m in lines if isinstance(m, (Done, Clean))}
                lines[:0] = [m for t, m in self.starts.items() if t not in ended]
                self.starts.clear()
            try:  # whole lines in each write
                for chunk in _chunks([encode_report(m) for m in lines], REPORT_WRITE):
                    await self._ctl.write(chunk, 0)
            except NinepError as e:
                if "not registered" in e.message:
                    self.outq[:0] = lines
                    raise ConnectionError(e.message) from None
                log.warning("worker %s: report refused: %s", self.name, e.message)
            except BaseException:
                self.outq[:0] = lines
                raise

    async def _renewer(self) -> None:
        """Every quarter lease, the leases of what we hold. Holding nothing, we say nothing: our
        read of ``next``, answered every third of a lease, already tells the scheduler we are
        alive, and an empty renewal from each idle placeholder was a third of the scheduler's
        core at 10,000 of them (docs/sim.md)."""
        while True:
            await asyncio.sleep(max(0.05, self.lease / 4))
            held = [t for t, e in self.execs.items() if e.state != "ended"]
            if held or self.starts:
                self.report(Renew(held))

    # ---- what the scheduler says ----

    def _handle(self, line: str) -> None:
        order = decode_order(line)
        if isinstance(order, Run):
            if order.token in self.execs:
                return
            new = Execution(order.token, order.job, order.cmd, order.home, order.env,
                            order.isolate, order.timeout)
            new.mark("received")
            self.execs[new.token] = new
            self._background(self._start(new))
            return
        verb, token = order.verb, order.token
        e = self.execs.get(token)
        if e is None:
            return
        if verb == "commit" and e.state == "exited":
            e.mark("commit")
            e.pending = None
            self._background(self._commit(e))
        elif verb == "go" and e.state == "journaled":
            e.mark("go")
            e.pending = None
            self._background(self._apply(e))
        elif verb in ("kill", "discard"):
            e.pending = None
            e.killed = True
            if e.state == "running" and e.pid:
                self.processes.kill(e.pid)
            elif e.state in ("exited", "journaled", "received"):
                self._rollback(e)
            # starting: killed as soon as it is spawned, its end then rolls it back;
            # committing/applying: the commit step notices (its staging is gone) and ends it
        elif verb == "ok":
            e.pending = None
            if e.state != "ended":
                self._end(e)
            self.execs.pop(token, None)

    def _background(self, coro: Any) -> None:
        """Run ``coro`` as a task held until it ends (the loop holds tasks only weakly)."""
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    # ---- running a job ----

    async def _start(self, e: Execution) -> None:
        if e.killed or self.execs.get(e.token) is not e:  # killed while queued here
            return
        if not self.free:
            self.waiting.append(e)
            return
        e.slot = self.free.pop(0)
        e.move("slot")
        e.t0 = self.clock()
        self.report_start(e)
        env = {**os.environ, **self.env, **e.env, "BRASIL_JOB": str(e.job), "BRASIL_EXECUTION": str(e.token),
               "BRASIL_WORKER": self.name, "BRASIL_SLOT": str(e.slot), **self.processes.env()}
        try:
            if self.remote_homes:
                await self._fetch_home(e)
            pid = self._spawn(e, env)
        except Exception as err:  # noqa: BLE001 - whatever it is, the job failed, not the slot
            # (a NUL in its command, say: ValueError). Left to escape, the slot stayed taken
            # and the job "running" for ever, its lease renewed by us.
            why = getattr(err, "message", None) or str(err) or type(err).__name__
            e.t1 = self.clock()
            e.move("fail")
            self._finish(e, 127, f"cannot start: {' '.join(why.split())[:1000]}")
            return
        e.pid = pid
        e.move("spawned")
        self._watch(e)

    async def _fetch_home(self, e: Execution) -> None:
        """A home read through the scheduler's fs/: copied into the scratch, the overlay's lower
        layer (the home itself is an empty mount point here)."""
        assert self.client is not None and self.export_root
        self._scratch(e)
        e.lower = os.path.join(e.scratch, "lower")
        await fetch_tree(self.client, relative(e.home, self.export_root), e.lower)
        os.makedirs(e.home, exist_ok=True)

    def _scratch(self, e: Execution) -> None:
        e.scratch = os.path.join(self.workdir, "scratch", str(e.token))
        os.makedirs(os.path.join(e.scratch, "upper"))
        os.makedirs(os.path.join(e.scratch, "work"))

    def _spawn(self, e: Execution, env: dict[str, str]) -> int:
        """Start the execution's process, in an overlay of its home if it is isolated (or its
        home remote); its pid."""
        argv = command_argv(e.cmd, env.get("PATH", os.defpath))
        preexec = None
        cwd: str | None = e.home
        overlay: tuple[str, str, str, str | None] | None = None  # home, upper, work, lower
        if e.isolate or self.remote_homes:
            if not self.remote_homes:  # its commit would be refused: say so now, not after
                commit.check_home(e.home)
                self._scratch(e)
            overlay = (e.home, os.path.join(e.scratch, "upper"),
                       os.path.join(e.scratch, "work"), e.lower)
            preexec = isolate.preexec(*overlay)
            cwd = None
        elif not os.path.isdir(e.home):
            raise NinepError(f"home {e.home} does not exist on {self.host}")
        out = os.open(self._out_path(e),
                      os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._kept(self._out_path(e))
        e.mark("prepared")
        try:
            pid = 0
            server = self.forkserver() if overlay is not None else None
            if server is not None and overlay is not None:  # no fork of us (forkserver.py)
                try:
                    pid = server.spawn(argv, env, out, *overlay)
                except OSError:
                    if server.alive():
                        raise  # the job's own setup failed: its reason is the job's
                    pid = 0  # the server died under us: not the job's fault; fork instead
            if preexec is None:
                e.popen = self.processes.spawn(argv, env, cwd, out)
                pid = e.popen.pid
            elif not pid:
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     cwd=cwd, env=env, start_new_session=True,
                                     close_fds=True, preexec_fn=preexec)
                e.popen, pid = p, p.pid
        finally:
            os.close(out)
        e.mark("spawned")
        return pid

    def _watch(self, e: Execution) -> None:
        """Its group listed with the watchdog (it dies with us, even if we are killed with -9),
        and its end awaited; one that cannot be watched must not run unwatched."""
        pid = e.pid
        try:
            self.processes.watch(pid, e.popen, functools.partial(self._exited, e))
        except OSError as err:
            log.warning("worker %s: job %d: cannot watch its process: %s; killed", self.name,
                        e.job, err)
            self.processes.reap(pid, e.popen)
            e.t1 = self.clock()
            e.move("exit")
            self._finish(e, 127, f"cannot watch its process: {err}")
            return
        if e.killed:  # killed while starting
            self.processes.kill(pid)
        if e.timeout > 0:
            e.timer = asyncio.get_running_loop().call_later(e.timeout, self._time_out, e)

    def _time_out(self, e: Execution) -> None:
        """The execution ran past its time limit: its whole process group is killed, and its
        end reported as a failure (exit status 124, as timeout(1)), saying why."""
        e.timer = None
        if e.state != "running" or not e.pid:
            return
        e.timed_out = True
        log.info("worker %s: job %d execution %d: timed out after %d s; killed", self.name,
                 e.job, e.token, e.timeout)
        self.processes.kill(e.pid)

    def forkserver(self) -> ForkServer | None:
        """The process that starts isolated jobs as our children (started at the first, and
        again if it died); None where there can be none: then we fork, as subprocess does."""
        if self._forkserver is not None and not self._forkserver.alive():
            self._forkserver.close()
            self._forkserver = None
        if self._forkserver is None and not self._no_forkserver:
            self._forkserver = ForkServer.start()
            self._no_forkserver = self._forkserver is None
            if self._no_forkserver:
                log.info("worker %s: no fork server here; isolated jobs are forked from the "
                         "worker (slower to start)", self.name)
        return self._forkserver

    def _exited(self, e: Execution, rc: int) -> None:
        if e.timer is not None:
            e.timer.cancel()
            e.timer = None
        e.t1 = self.clock()
        e.move("exit")
        e.mark("exited")
        if e.timed_out:
            self._finish(e, TIMED_OUT, f"timed out after {e.timeout} s")
        else:
            self._finish(e, 128 - rc if rc < 0 else rc, "")

    def _finish(self, e: Execution, status: int, why: str) -> None:
        e.status = status
        if e.killed:
            self._rollback(e)
            return
        tail = self._report_output(e)
        if status != 0 or not (e.isolate or self.remote_homes):
            if status != 0 and not why:
                why = " ".join(tail[-200:].decode(errors="replace").split())[-160:]
            self.report(Done(e.token, status, e.t0, e.t1, why), e)
            self._end(e, keep=True)
            return
        e.ops = commit.plan(os.path.join(e.scratch, "upper"), e.lower or e.home)
        e.mark("planned")
        if not e.ops:
            self.report(Clean(e.token, e.t0, e.t1), e)
            self._end(e, keep=True)
            return
        self.report(Done(e.token, 0, e.t0, e.t1), e)
        self._release(e)  # the commit runs no command: the slot takes the next job meanwhile

    def _out_path(self, e: Execution) -> str:
        return os.path.join(self.workdir, "out", f"{e.job}.{e.token}")

    def _report_output(self, e: Execution) -> bytes:
        """Send the scheduler the end of the execution's output (``output T SIZE TAIL PATH``,
        the tail in base64), before its end is reported: `brasil output` reads it from the
        scheduler's database, wherever this worker runs and even after it is gone. The whole
        file stays here, in out/, until retention removes it. Returns the tail."""
        path = self._out_path(e)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - OUTPUT_TAIL))
                tail = f.read(OUTPUT_TAIL)
        except OSError:
            return b""
        if size:
            self.report(Output(e.token, size, base64.b64encode(tail).decode(),
                               f"{self.host}:{path}"))
        return tail

    def _existing_outputs(self) -> collections.deque[str]:
        """The output files already in out/ (from an earlier run), oldest first."""
        out = os.path.join(self.workdir, "out")
        found = []
        with os.scandir(out) as it:
            for d in it:
                if d.is_file(follow_symlinks=False) and _is_output_name(d.name):
                    found.append((d.stat(follow_symlinks=False).st_mtime, d.path))
        q = collections.deque(p for _, p in sorted(found))
        self._trim(q)
        return q

    def _kept(self, path: str) -> None:
        """A new output file: the oldest go beyond ``keep_outputs`` (retention)."""
        self.outputs.append(path)
        self._trim(self.outputs)

    def _trim(self, q: collections.deque[str]) -> None:
        while len(q) > self.keep_outputs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(q.popleft())

    async def _commit(self, e: Execution) -> None:
        e.move("commit")
        c0 = self.clock()
        loop = asyncio.get_running_loop()
        try:
            if self.remote_homes:
                assert self.client is not None and self.export_root
                await upload(self.client, os.path.join(e.scratch, "upper"),
                             relative(e.home, self.export_root), e.token, e.ops)
            else:
                await loop.run_in_executor(None, commit.stage_local, os.path.join(
                    e.scratch, "upper"), e.home, e.token, e.ops)
        except (OSError, NinepError) as err:
            if not e.killed:
                self.report(CommitFail(e.token, f"staging: {err}"), e)
            self._rollback(e)
            return
        if e.killed:
            self._rollback(e)
            return
        e.move("journaled")
        e.mark("journaled")
        self.report(Journaled(e.token, c0), e)
        if self.remote_homes:
            self._end(e, keep=True)  # the scheduler applies; its "ok" ends it here

    async def _apply(self, e: Execution) -> None:
        e.move("go")
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, commit.apply, commit.staging_path(e.home, e.token), e.home)
        except OSError as err:
            if not e.killed:
                self.report(CommitFail(e.token, f"apply: {err}"), e)
            self._rollback(e)
            return
        e.mark("applied")
        self.report(Committed(e.token, self.clock()), e)
        self._end(e, keep=True)

    # ---- slots and scratch ----

    def _rollback(self, e: Execution) -> None:
        self._end(e)
        self.execs.pop(e.token, None)
        self.report(Gone([e.token]))

    def _end(self, e: Execution, keep: bool = False) -> None:
        """The execution no longer needs its slot (``keep``: its token stays, awaiting an answer)."""
        if e.state == "ended":
            return
        e.move("end")
        self.completed += 1
        if e.scratch:
            shutil.rmtree(e.scratch, ignore_errors=True)
        if trace.isEnabledFor(logging.DEBUG):
            e.mark("ended")
            slot = int(e.marks.pop("slot", e.slot))
            trace.debug("trace %d %d %d %d %s", e.token, e.job, int(e.isolate), slot, " ".join(
                f"{k}={v:.6f}" for k, v in e.marks.items()))
        self._release(e)
        if not keep:
            self.execs.pop(e.token, None)

    def _release(self, e: Execution) -> None:
        """The execution's slot is free for the next job."""
        if e.slot >= 0:
            if trace.isEnabledFor(logging.DEBUG):
                e.marks["slot"] = e.slot
                e.mark("released")
            self.free.append(e.slot)
            self.free.sort()
            e.slot = -1
            if self.waiting:
                self._background(self._start(self.waiting.pop(0)))

    async def _shutdown(self) -> None:
        for e in list(self.execs.values()):
            if e.state == "running" and e.pid:
                self.processes.kill(e.pid)
            if e.scratch:
                shutil.rmtree(e.scratch, ignore_errors=True)
        if self._forkserver is not None:
            server, self._forkserver = self._forkserver, None
            await asyncio.get_running_loop().run_in_executor(None, server.close)
        await self.processes.close()


def _is_output_name(name: str) -> bool:
    job, dot, token = name.partition(".")
    return bool(dot) and job.isdigit() and token.isdigit()


def _chunks(lines: list[str], limit: int) -> list[bytes]:
    """``lines`` as writes of whole lines, each at most ``limit`` bytes (unless one line is)."""
    out: list[bytes] = []
    buf: list[bytes] = []
    size = 0
    for ln in lines:
        b = (ln + "\n").encode()
        if buf and size + len(b) > limit:
            out.append(b"".join(buf))
            buf, size = [], 0
        buf.append(b)
        size += len(b)
    if buf:
        out.append(b"".join(buf))
    return out
