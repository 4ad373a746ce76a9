"""Running a plan on this machine: one process per copy of each segment, OS pipes, one loop.

Inside a segment the kernel moves the bytes (plain pipes between commands of one /bin/sh
pipeline). Between segments push does, in a single-threaded poll loop over non-blocking pipes
enlarged to 1 MiB: it reads up to 1 MiB at a time, cuts at the last record end
(``exec.records.Reassembler``), and writes whole blocks — two copies per byte, read and write,
where the paper counted six. A balance edge gives each block to the destination with the least
queued; a hash edge cuts blocks by key; a merge edge interleaves sources only on record
boundaries (the rules: ``exec.route``; this module only moves the bytes). Queues are bounded: a
source is read only while its destinations have room. A record too long for the reassembly
window streams through, its destination reserved for it until it ends, so nothing is ever cut.

Failures are located (SPEC.md §5, issue 8): a copy that cannot start (status 126/127), is killed
by a signal, or exits non-zero before the end of its input ends the pipeline with a message
naming the stage, the copy and the last lines of its stderr; everything still running is killed.
A copy that quits early on purpose (``head``) just closes its input: upstream writes fail, the
upstream copies are closed in turn and end by SIGPIPE, as in a shell.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import selectors
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..exec.chain import fault, unread
from ..exec.command import command_argv
from ..exec.records import Delimited, Key, Splitter
from ..exec.route import END, KEEP_HELD, ONE, WHOLE, KeepOrder, Merger, Router
from ..lifecycle import step
from ..ninep.errors import NinepError
from .lifecycle import COPY
from .plan import Edge, Plan, Route, Segment

CHUNK = 1 << 20
HIGH = 4 << 20  # queued bytes past which a destination stops its sources
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
TAIL_LINES = 5


class PipelineFailed(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Stats:
    """What the status line shows for one segment."""

    copies: int = 0
    running: int = 0
    bytes_in: int = 0
    records_in: int | None = 0
    bytes_out: int = 0
    records_out: int | None = 0


def count_records(splitter: Splitter, block: bytes | memoryview) -> int | None:
    if isinstance(splitter, Delimited) and len(splitter.sep) == 1:
        # a memoryview has no count(); the status line counts only at a person's pace
        return (block if isinstance(block, bytes) else bytes(block)).count(splitter.sep)
    return None


def fcntl_pipe_size(fd: int) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # a terminal or file, or a limit: the default size works too


def _nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)
    fcntl_pipe_size(fd)


@dataclass
class Proc:
    """One process: one command of a segment, in one copy."""

    copy: Copy
    stage: int  # which command of the segment
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    status: int | None = None
    stdin_peek: int = -1  # our copy of its stdin's read end: what it left unread, once it ends
    child_fds: tuple[int, int, int] = (-1, -1, -1)  # its stdin, stdout, stderr until started
    unread: bool = False  # it ended with input still waiting in its pipe
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    stderr_rest: bytes = b""

    @property
    def label(self) -> str:
        seg = self.copy.seg
        n = seg.copies
        copy = f", copy {self.copy.index + 1} of {n}" if n > 1 else ""
        return f"stage {seg.first + self.stage + 1} `{seg.stages[self.stage]}`{copy} " \
               "(on this machine)"


@dataclass
class Copy:
    """One copy of a segment: its commands, each a process, joined by OS pipes."""

    seg: Segment
    index: int
    procs: list[Proc] = field(default_factory=list)
    state: str = "new"  # push/lifecycle.py's COPY
    input_done: bool = True  # no input from us, or all of it delivered
    output_dead: bool = False  # whoever read its output is gone: SIGPIPE is expected
    on_exit: Callable[[], None] | None = None  # a keep job's: its output may be complete

    @property
    def status(self) -> int | None:
        return self.procs[-1].status if self.procs else 0

    @property
    def started(self) -> bool:
        """Started, or never to be (its input ended empty)."""
        return self.state not in ("new", "waiting")

    def move(self, event: str) -> None:
        self.state = step(COPY, self.state, event, f"copy {self.index + 1} of {self.seg.copies}")


class Writer:
    """A destination: our end of a copy's stdin (or our stdout), and what waits to go there.
    Its :class:`~brasil.exec.route.Merger` says what may go now when several sources feed it."""

    def __init__(self, loop: LocalRun, fd: int, copy: Copy | None, stats: Stats | None,
                 splitter: Splitter, owned: bool = True) -> None:
        self.loop, self.fd, self.copy, self.stats, self.splitter = loop, fd, copy, stats, splitter
        self.owned = owned  # ours to close (a copy's stdin), or not (our own stdout)
        self.queue: deque[memoryview] = deque()
        self.queued = 0
        self.dead = False
        self.closing = False  # close once the queue is empty
        self.merge = Merger(splitter.terminator)
        self.registered = False
        self.screen: Any = None  # the status line to take off the terminal before writing

    @property
    def full(self) -> bool:
        return self.queued >= HIGH or bool(self.merge.parked)

    def put(self, data: bytes, source: object, kind: int = WHOLE) -> None:
        """``kind``: what ``data`` is (``exec.route``: whole records, part of a long one, a
        source's last record without its separator)."""
        if self.dead:
            return
        c = self.copy
        if data and c is not None and not c.started:  # a lazy copy: its first block is here
            self.loop.launch(c)
        for d in self.merge.put(source, data, kind):
            self._enqueue(d)
        if kind == END:
            self.loop.dirty = True

    def _enqueue(self, data: bytes) -> None:
        if self.stats is not None:
            self.stats.bytes_in += len(data)
            if self.stats.records_in is not None and self.loop.counting:
                n = count_records(self.splitter, data)
                self.stats.records_in = None if n is None else self.stats.records_in + n
        self.queue.append(data if isinstance(data, memoryview) else memoryview(data))
        self.queued += len(data)
        self.flush()

    def flush(self) -> None:
        while self.queue and not self.dead:
            view = self.queue[0]
            try:
                if self.screen is None:
                    n = os.write(self.fd, view)
                else:
                    with self.screen.quiet():
                        n = os.write(self.fd, view)
            except BlockingIOError:
                break
            except (BrokenPipeError, OSError) as e:
                if e.errno not in (errno.EPIPE, errno.EBADF, errno.ECONNRESET):
                    raise
                self.kill()
                return
            self.queued -= n
            if n == len(view):
                self.queue.popleft()
            else:
                self.queue[0] = view[n:]
        want = bool(self.queue) and not self.dead
        if want != self.registered:
            if want:
                self.loop.sel.register(self.fd, selectors.EVENT_WRITE, self.on_writable)
            else:
                self.loop.sel.unregister(self.fd)
            self.registered = want
        if not self.queue and self.closing and not self.dead:
            self._close()
        self.loop.dirty = True

    def on_writable(self, mask: int) -> None:
        self.flush()

    def finish(self) -> None:
        """No more data: end of file for the destination once its queue has drained."""
        self.closing = True
        if not self.queue:
            self._close()

    def _release(self) -> None:
        if self.registered:
            self.loop.sel.unregister(self.fd)
            self.registered = False
        if self.fd >= 0 and self.owned:
            os.close(self.fd)
        self.fd = -1

    def _close(self) -> None:
        self._release()
        self.closing = False
        if self.copy is not None:
            self.copy.input_done = True

    def kill(self) -> None:
        """The destination closed its input (it quit, like head): drop what was for it."""
        if self.dead:
            return
        self.dead = True
        self.queue.clear()
        self.queued = 0
        self.merge.clear()
        self._release()
        self.loop.dirty = True


class Source:
    """A source: our end of a copy's stdout, cut into records by its router."""

    def __init__(self, loop: LocalRun, fd: int, copy: Copy, route: RouteIO) -> None:
        self.loop, self.fd, self.copy, self.route = loop, fd, copy, route
        self.router = route.router()
        self.eof = False
        self.registered = False

    def on_readable(self, mask: int) -> None:
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        stats = self.loop.stats[self.copy.seg.index]
        if not data:
            self.close()
            self.route.deliver(self, None)
            self.route.source_done(self)
            return
        stats.bytes_out += len(data)
        if stats.records_out is not None and self.loop.counting:
            n = count_records(self.route.splitter, data)
            stats.records_out = None if n is None else stats.records_out + n
        self.route.deliver(self, data)

    def close(self) -> None:
        if self.registered:
            self.loop.sel.unregister(self.fd)
            self.registered = False
        if not self.eof:
            self.eof = True
            os.close(self.fd)

    def stop(self) -> None:
        """Nobody wants our output any more: close it, and the copy will get SIGPIPE."""
        self.copy.output_dead = True
        if not self.eof:
            self.close()
            self.route.source_done(self)


class RouteIO:
    """One instance of an edge at run time (or the final merge into our output): the I/O
    around each source's :class:`~brasil.exec.route.Router` (``merge`` is its ``one``)."""

    def __init__(self, loop: LocalRun, mode: str, splitter: Splitter, key: Key | None,
                 dests: list[Writer]) -> None:
        self.loop, self.mode, self.splitter, self.key = loop, mode, splitter, key
        self.dests = dests
        self.sources: list[Source] = []
        self.live_sources = 0

    def router(self) -> Router:
        return Router(ONE if self.mode == "merge" else self.mode, len(self.dests), self.splitter,
                      self.key, busy=self.rank, views=True)

    def add_source(self, fd: int, copy: Copy) -> None:
        self.sources.append(Source(self.loop, fd, copy, self))
        self.live_sources += 1

    def live(self) -> list[Writer]:
        return [d for d in self.dests if not d.dead]

    def wants_input(self, src: Source) -> bool:
        live = self.live()
        if not live:
            return False
        if src.router.long is not None:
            d = self.dests[src.router.long]
            return not d.full or (d.merge.owner is src and d.queued < HIGH)
        if self.mode == "balance":
            return any(not d.full for d in live)
        return all(not d.full for d in live)

    def deliver(self, src: Source, data: bytes | None) -> None:
        """A chunk of ``src``'s output, or (None) its end."""
        router = src.router
        for i, d in enumerate(self.dests):
            if d.dead and i not in router.dead:
                router.died(i)
        if data is not None and len(router.dead) == len(self.dests):
            src.stop()
            return
        writes = router.feed(data) if data is not None else router.finish()
        if router.cut:
            src.stop()  # a record for a copy that quit: as a shell write to a closed pipe,
            return      # the producer gets SIGPIPE (the route then ends)
        dests = self.dests
        for i, part, kind in writes:
            dests[i].put(part, src, kind)

    def rank(self, i: int) -> int:
        """Balance: a running copy whose pipe took everything so far; else a copy not yet
        running (started by the block); else the one with the least queued."""
        d = self.dests[i]
        if d.copy is not None and not d.copy.started:
            return 1
        return 0 if d.queued == 0 else 2 + d.queued

    def source_done(self, src: Source) -> None:
        self.live_sources -= 1
        if self.live_sources == 0:
            for d in self.dests:
                d.finish()
                if d.copy is not None and not d.copy.started:
                    self.loop.never_needed(d.copy)

    def check_dead(self) -> None:
        """Every destination quit: stop reading, so the sources end by SIGPIPE."""
        if self.dests and not self.live():
            for s in self.sources:
                s.stop()


def keep_window(n: int) -> int:
    """Blocks a keep region may have outstanding with ``n`` copies at once: ``n`` running and as
    many finished early and held, so one slow block does not stall the others at once."""
    return 2 * n


class KeepRoute(RouteIO):
    """A fan-out region that keeps input order (``|<[keep]`` … ``>|``), as GNU parallel's
    ``--pipe -k`` does: the source is cut into blocks of whole records, the region's command
    runs once per block (at most ``n`` at once), and the blocks' outputs go on in input order
    (``exec.route.KeepOrder``)."""

    BLOCK = 1 << 20
    HELD = KEEP_HELD  # a run out of turn holds this much output, then is not read until its turn

    def __init__(self, loop: LocalRun, seg: Segment, group: int, argv: list[list[str]], n: int,
                 splitter: Splitter, dest: Writer) -> None:
        super().__init__(loop, "merge", splitter, None, [dest])
        self.seg, self.group, self.argv, self.n = seg, group, argv, n
        self.order = KeepOrder(self.BLOCK, dest.splitter.terminator, keep_window(n))
        self.paused: dict[int, Callable[[], None]] = {}  # runs not read until their turn
        self.most_held = 0  # the most one run held out of turn, for the tests
        self.blocks: deque[tuple[int, bytes]] = deque()  # cut, not started
        self.jobs = 0
        self.src_eof = False

    def wants_input(self, src: Source) -> bool:
        return not self.dests[0].dead and not self.order.full and len(self.blocks) < self.n \
            and not self.dests[0].full

    def deliver(self, src: Source, data: bytes | None) -> None:
        writes = src.router.feed(data) if data is not None else src.router.finish()
        block = self.order.add(writes)
        if block is not None:
            self.blocks.append(block)
            self._start_jobs()
            self.loop.dirty = True  # the window may be full now: look before reading again

    def source_done(self, src: Source) -> None:
        self.src_eof = True
        block = self.order.cut()
        if block is not None:
            self.blocks.append(block)
        self._start_jobs()
        self._maybe_finish()

    def _start_jobs(self) -> None:
        loop = self.loop
        while self.blocks and self.jobs < self.n and loop.failure is None and not loop.interrupted:
            seq, block = self.blocks.popleft()
            copy = Copy(self.seg, self.group * self.seg.per + seq % self.seg.per)
            out: list[bytes] = []
            loop.spawn_job(self, copy, seq, block, out)
            self.jobs += 1

    def got_output(self, seq: int, out: list[bytes], pause: Callable[[], None],
                   resume: Callable[[], None]) -> None:
        """As the tree's KeepOut.room: the run whose turn it is streams (all but its last
        piece, which ``done`` needs to tell whether it ends mid-record); a later one holding
        HELD bytes is not read until its turn, so its pipe fills and it waits."""
        if seq == self.order.next_out:
            for piece in self.order.in_turn(seq, out):
                self.dests[0].put(piece, self, WHOLE)
            return
        held = sum(len(p) for p in out)
        self.most_held = max(self.most_held, held)
        if held >= self.HELD:
            pause()
            self.paused[seq] = resume

    def resume_due(self) -> None:
        """Read again the paused run whose turn has come, or every one when the pipeline ends
        (their outputs must reach end of file for the run to finish)."""
        loop = self.loop
        for seq in [q for q in self.paused if q == self.order.next_out or loop.failure is not None
                    or loop.interrupted]:
            self.paused.pop(seq)()

    def job_done(self, seq: int, out: list[bytes]) -> None:
        self.jobs -= 1
        for piece, kind in self.order.done(seq, out):  # an output may end mid-record (printf x)
            self.dests[0].put(piece, self, kind)
        self._start_jobs()
        self._maybe_finish()
        self.loop.dirty = True

    def _maybe_finish(self) -> None:
        if self.src_eof and not self.blocks and not self.jobs and not self.order.waiting:
            self.dests[0].finish()


class LocalRun:
    def __init__(self, plan: Plan, env: dict[str, str] | None = None, stdin: int = 0,
                 stdout: int = 1, stderr: int = 2,
                 on_stats: Callable[[list[Stats]], None] | None = None,
                 screen: Any = None) -> None:
        self.plan = plan
        self.screen = screen  # a status line: then our stdout is written by us, around it
        self.env = {**os.environ, **(env or {})}
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.sel = selectors.DefaultSelector()
        self.stats = [Stats(copies=s.copies) for s in plan.segments]
        self.copies: list[list[Copy]] = [[Copy(s, i) for i in range(s.copies)]
                                         for s in plan.segments]
        self.routes: list[RouteIO] = []
        self.failure: PipelineFailed | None = None
        self.dirty = True
        self.on_stats = on_stats
        self.running = 0
        self.pending_io = 0  # outputs of keep jobs still being read
        self.counting = on_stats is not None  # records are counted only when someone looks
        self.interrupted = False
        self._stdout_blocking = False

    # ---- setting up ----

    def _argvs(self, seg: Segment) -> list[list[str]]:
        out = []
        for i, text in enumerate(seg.stages):
            try:
                out.append(command_argv(text, self.env.get("PATH", os.defpath)))
            except NinepError as e:
                msg = e.message.removeprefix("exec: ").split(" (PATH=")[0]
                raise PipelineFailed(f"push: stage {seg.first + i + 1} `{text}` cannot start: "
                                     f"{msg}", 127) from None
        return out

    def _make_procs(self, c: Copy, argvs: list[list[str]], stdin: int, stdout: int) -> None:
        """The processes of one copy, with their pipes made (not started yet)."""
        n = len(argvs)
        fd_in = stdin
        for i, argv in enumerate(argvs):
            if i < n - 1:
                r, w = os.pipe()
                fcntl_pipe_size(w)
                fd_out, next_in = w, r
            else:
                fd_out, next_in = stdout, -1
            err_r, err_w = os.pipe()
            p = Proc(c, i, argv, child_fds=(fd_in, fd_out, err_w))
            c.procs.append(p)
            os.set_blocking(err_r, False)
            self.sel.register(err_r, selectors.EVENT_READ,
                              lambda m, p=p, fd=err_r: self._stderr(p, fd))
            fd_in = next_in

    def start(self) -> None:
        plan = self.plan
        writers: list[list[Writer | None]] = [[None] * s.copies for s in plan.segments]
        readers: list[list[int | None]] = [[None] * s.copies for s in plan.segments]
        argvs = [self._argvs(seg) for seg in plan.segments]
        keep = {e.downstream for e in plan.edges if e.mode == "balance" and e.keep}
        lazy = {e.downstream for e in plan.edges if e.mode == "balance" and not e.keep}
        for seg in plan.segments:
            if seg.index in keep:
                continue  # started per block by its KeepRoute
            has_input = seg.index > 0
            has_output = seg.index < len(plan.edges) or seg.copies > 1 or self.screen is not None
            for c in self.copies[seg.index]:
                stdin_r = stdin_w = stdout_r = stdout_w = -1
                if has_input:
                    stdin_r, stdin_w = os.pipe()
                if has_output:
                    stdout_r, stdout_w = os.pipe()
                self._make_procs(c, argvs[seg.index], stdin_r if has_input else self.stdin,
                                 stdout_w if has_output else self.stdout)
                if seg.index in lazy:
                    c.move("defer")
                else:
                    self.launch(c)
                if has_input:
                    _nonblocking(stdin_w)
                    c.input_done = False
                    writers[seg.index][c.index] = Writer(
                        self, stdin_w, c, self.stats[seg.index],
                        plan.edges[seg.index - 1].rs)
                if has_output:
                    _nonblocking(stdout_r)
                    readers[seg.index][c.index] = stdout_r

        def writer(seg: int, copy: int) -> Writer:
            w = writers[seg][copy]
            assert w is not None, "a segment after an edge has an input"
            return w

        def reader(seg: int, copy: int) -> tuple[int, Copy]:
            fd = readers[seg][copy]
            assert fd is not None, "a segment before an edge has an output"
            return fd, self.copies[seg][copy]

        for e in plan.edges:
            if e.upstream in keep:
                continue  # the keep route before it delivers to this edge's destination
            for r in e.routes:
                if e.downstream in keep:  # runs per block, delivering straight past the region
                    after = plan.edges[e.downstream]
                    seg = plan.segments[e.downstream]
                    for src in r.sources:
                        k = KeepRoute(self, seg, src, argvs[seg.index], seg.per, e.rs,
                                      writer(after.downstream, src))
                        k.add_source(*reader(e.upstream, src))
                        self.routes.append(k)
                    continue
                self._route(e.mode, e.rs, e.key, [writer(e.downstream, d) for d in r.dests],
                            [reader(e.upstream, s) for s in r.sources])
        last = plan.last
        if last.copies > 1 or self.screen is not None:
            self._stdout_blocking = os.get_blocking(self.stdout)
            os.set_blocking(self.stdout, False)
            out = Writer(self, self.stdout, None, None, plan.out_rs, owned=False)
            out.screen = self.screen
            self._route("merge", plan.out_rs, None, [out],
                        [reader(last.index, c) for c in range(last.copies)])

    def launch(self, c: Copy) -> None:
        """Start a copy's processes: at once, or — fed by a fan-out — when its first block is
        dealt to it, so a small input starts only the copies it needs, as GNU parallel does."""
        c.move("start")
        env = {**self.env, "BRASIL_NODE": "local", "BRASIL_RANK": str(c.index),
               "BRASIL_SIZE": str(c.seg.copies)}
        for p in c.procs:
            stdin_r, stdout_w, err_w = p.child_fds
            try:
                p.proc = subprocess.Popen(p.argv, stdin=stdin_r, stdout=stdout_w, stderr=err_w,
                                          env=env, process_group=0, close_fds=True)
            except OSError as e:
                self.failure = PipelineFailed(f"push: {p.label} cannot start: {e.strerror}", 126)
                self.kill_all()
                self._release_child_fds(p)
                return
            self._release_child_fds(p, keep_stdin=True)
            self.running += 1
            self.stats[c.seg.index].running += 1
            p.pidfd = os.pidfd_open(p.proc.pid)
            self.sel.register(p.pidfd, selectors.EVENT_READ, lambda m, p=p: self._exited(p))

    def _release_child_fds(self, p: Proc, keep_stdin: bool = False) -> None:
        stdin_r, stdout_w, err_w = p.child_fds
        p.child_fds = (-1, -1, -1)
        for fd in (stdout_w, err_w):
            if fd > 2 and fd != self.stdout:
                os.close(fd)
        if stdin_r > 2 and stdin_r != self.stdin:
            if keep_stdin:
                p.stdin_peek = stdin_r  # kept to see, when it ends, whether it read it all
            else:
                os.close(stdin_r)

    def never_needed(self, c: Copy) -> None:
        """A lazy copy whose input ended before any block was dealt to it: it never runs, and
        whoever reads its output sees end of file."""
        if not c.started:
            c.move("skip")
            for p in c.procs:
                self._release_child_fds(p)
                p.status = 0
            c.input_done = True
            self.dirty = True

    def _route(self, mode: str, rs: Splitter, key: Key | None, dests: list[Writer],
               sources: list[tuple[int, Copy]]) -> None:
        r = RouteIO(self, mode, rs, key, dests)
        for fd, copy in sources:
            r.add_source(fd, copy)
        self.routes.append(r)

    def spawn_job(self, route: KeepRoute, c: Copy, seq: int, block: bytes, out: list[bytes]) -> None:
        """One run of a keep region on one block: its input written, its output collected."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        self._make_procs(c, route.argv, stdin_r, stdout_w)
        self.copies[route.seg.index].append(c)
        self.launch(c)
        if self.failure is not None:
            for fd in (stdin_w, stdout_r):
                os.close(fd)
            return
        state = {"eof": False}

        def complete() -> None:
            if state["eof"] and all(p.status is not None for p in c.procs):
                route.job_done(seq, out)

        def read_out(mask: int) -> None:
            try:
                data = os.read(stdout_r, CHUNK)
            except BlockingIOError:
                return
            if data:
                out.append(data)
                self.stats[route.seg.index].bytes_out += len(data)
                route.got_output(seq, out, pause, resume)
                return
            self.sel.unregister(stdout_r)
            os.close(stdout_r)
            self.pending_io -= 1
            state["eof"] = True
            complete()
        def pause() -> None:
            self.sel.unregister(stdout_r)

        def resume() -> None:
            self.sel.register(stdout_r, selectors.EVENT_READ, read_out)
            route.got_output(seq, out, pause, resume)  # its turn: what it holds goes on

        c.on_exit = complete
        os.set_blocking(stdout_r, False)
        self.sel.register(stdout_r, selectors.EVENT_READ, read_out)
        self.pending_io += 1
        _nonblocking(stdin_w)
        c.input_done = False
        w = Writer(self, stdin_w, c, self.stats[route.seg.index], route.splitter)
        w.put(block, route)
        w.finish()

    # ---- events ----

    def _stderr(self, p: Proc, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            self.sel.unregister(fd)
            os.close(fd)
            if p.stderr_rest:
                p.stderr_tail.append(p.stderr_rest.decode(errors="replace"))
            return
        try:
            if self.screen is None:
                os.write(self.stderr, data)  # shown as it comes, as a shell would
            else:
                with self.screen.quiet():
                    os.write(self.stderr, data)
        except OSError:
            pass
        lines = (p.stderr_rest + data).split(b"\n")
        p.stderr_rest = lines.pop()[-4096:]
        for ln in lines[-TAIL_LINES:]:
            p.stderr_tail.append(ln.decode(errors="replace")[:300])

    def _exited(self, p: Proc) -> None:
        self.sel.unregister(p.pidfd)
        os.close(p.pidfd)
        assert p.proc is not None
        rc = p.proc.wait()
        p.status = 128 - rc if rc < 0 else rc
        if all(q.status is not None for q in p.copy.procs):
            p.copy.move("exit")
        if p.stdin_peek >= 0:
            p.unread = unread(p.stdin_peek) > 0
            os.close(p.stdin_peek)  # now writes to it fail at once, as for a dead reader
            p.stdin_peek = -1
        self.running -= 1
        self.stats[p.copy.seg.index].running -= 1
        self.dirty = True
        if self.failure is None and not self.interrupted:
            why = self._fault(p)
            if why:
                self._fail(p, why)
        if p.copy.on_exit is not None:
            p.copy.on_exit()

    def _fault(self, p: Proc) -> str:
        """Why this process's end breaks the pipeline ("" if it does not): the rule of
        ``exec/chain.py``, which nodes use too."""
        c = p.copy
        last = p.stage == len(c.procs) - 1
        reader_gone = c.output_dead if last else c.procs[p.stage + 1].status is not None
        source = p.stage == 0 and c.seg.index == 0  # reads our own input: see exec/chain.py
        return fault(p.status or 0, reader_gone, p.unread or (p.stage == 0 and not c.input_done),
                     source=source)

    def _fail(self, p: Proc, why: str) -> None:
        tail = "".join(f"\n    {ln}" for ln in p.stderr_tail if ln.strip())
        msg = f"push: {p.label}: {why}" + (f"\n  last lines of its stderr:{tail}" if tail else "")
        self.failure = PipelineFailed(msg, p.status or 1)
        self.kill_all()
        self.dirty = True  # paused keep runs are read to their end (KeepRoute.resume_due)

    def procs(self) -> list[Proc]:
        return [p for copies in self.copies for c in copies for p in c.procs]

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        for p in self.procs():
            if p.proc is not None and p.status is None:
                try:
                    os.killpg(p.proc.pid, sig)
                except ProcessLookupError:
                    pass

    # ---- the loop ----

    def _update_interest(self) -> None:
        for r in self.routes:
            if isinstance(r, KeepRoute):
                r.resume_due()
            r.check_dead()
            for s in r.sources:
                want = not s.eof and r.wants_input(s)
                if want != s.registered:
                    if want:
                        self.sel.register(s.fd, selectors.EVENT_READ, s.on_readable)
                    else:
                        self.sel.unregister(s.fd)
                    s.registered = want
        self.dirty = False

    def run(self) -> int:
        """Run to the end; the exit status is the last stage's (the largest over its copies).
        Raises PipelineFailed when a copy breaks the pipeline."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old_int = signal.signal(signal.SIGINT, lambda *a: None)
        old_term = signal.signal(signal.SIGTERM, lambda *a: None)
        self.sel.register(wake_r, selectors.EVENT_READ, lambda m: self._signalled(wake_r))
        try:
            try:
                self.start()
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                copies = sum(s.copies for s in self.plan.segments)
                soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                raise PipelineFailed(f"push: {copies} commands need more open files than push may "
                                     f"have (ulimit -n: {soft}, about 7 per copy); ask for "
                                     "fewer copies (|<[N]) or raise the limit", 1) from None
            # Once the pipeline has failed (every copy killed) a source left unread, say one a
            # full keep window stopped reading, would never reach its end: only the copies and
            # the keep runs' outputs are waited for then.
            while self.running or self.pending_io or (
                    self.failure is None and not self.interrupted and (
                        any(not s.eof for r in self.routes for s in r.sources) or
                        any(d.queue for r in self.routes for d in r.dests if not d.dead))):
                if self.dirty:
                    self._update_interest()
                for key, mask in self.sel.select(1.0 if self.on_stats else None):
                    key.data(mask)
                if self.on_stats:
                    self.on_stats(self.stats)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            self.kill_all()
            self._close_all()
            if self._stdout_blocking:
                os.set_blocking(self.stdout, True)
            os.close(wake_r)
            os.close(wake_w)
            self.sel.close()
        if self.interrupted:
            raise PipelineFailed("push: interrupted; every stage was stopped", 130)
        if self.failure is not None:
            raise self.failure
        return max((c.status or 0) for c in self.copies[-1] if c.started)

    def _signalled(self, fd: int) -> None:
        try:
            os.read(fd, 512)
        except BlockingIOError:
            pass
        self.interrupted = True
        self.kill_all()
        self.dirty = True

    def _close_all(self) -> None:
        for r in self.routes:
            for s in r.sources:
                if not s.eof:
                    s.eof = True
                    os.close(s.fd)
            for d in r.dests:
                if d.fd >= 0 and d.owned:
                    os.close(d.fd)
                d.fd = -1
        for p in self.procs():
            if p.proc is not None and p.status is None:
                p.proc.wait()
            for fd in p.child_fds:  # a copy that never started
                if fd > 2 and fd not in (self.stdin, self.stdout):
                    os.close(fd)
            p.child_fds = (-1, -1, -1)


class LocalEngine:
    """The shell's engine for this machine."""

    def __init__(self, status: bool | None = None) -> None:
        self.status = status

    def default_copies(self) -> int:
        return os.cpu_count() or 1

    def explain(self, plan: Plan) -> str:
        return plan.describe({s.index: ["this machine"] for s in plan.segments})

    def run(self, plan: Plan) -> int:
        from . import status
        line = status.StatusLine(plan) if (self.status if self.status is not None
                                           else status.wanted()) else None
        try:
            try:
                return LocalRun(plan, plan.env, on_stats=line.update if line else None,
                                screen=line).run()
            finally:
                if line is not None:
                    line.close()  # before any message: the last screen holds no status
        except PipelineFailed as e:
            print(e, file=sys.stderr)
            return e.status


__all__ = ["LocalEngine", "LocalRun", "PipelineFailed", "Route", "Edge"]
