"""Running a plan across the cluster: each segment a session, its copies sub-sessions anywhere.

For every segment the shell makes a session and reserves its copies (``res N``), so the tree
decides where they run. Edges become direct node-to-node streams, arranged over 9P and never
carried by the shell: each destination copy is told ``gather K TOKEN RS`` (K senders, merged on
record boundaries into its stdin), each source copy ``scatter MODE … TOKEN@ADDR…`` (its stdout
cut into records and sent straight to those nodes' data endpoints: all to one, each block to
whichever has room, or by key). Copies fed by a fan-out are ``lazy``: a copy dealt nothing never
runs. The shell itself carries only the first stage's input (its stdin) and the last stage's
output (the last session's ``stdio``), and forwards every copy's stderr.

Failures are located as on one machine: a copy that cannot start, is killed, or (outside the
last stage) exits non-zero, or whose node is lost, ends the pipeline with the stage, the copy,
the node, the status and its stderr's last lines; every session is then killed and closed, so
nothing is left running anywhere. A segment of several commands joined by plain pipes runs
through ``brasil.exec.chain`` on its node, which names the command that broke it.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..client.session import LOCAL, SessionClient
from ..exec.chain import MARK, describe_status, fault
from ..exec.pychild import python_argv
from ..exec.route import KEEP_HELD, ONE, WHOLE, KeepOrder, Merger, Router
from ..lifecycle import step
from ..ninep.auth import dial
from ..ninep.client import Client
from ..ninep.constants import OWRITE
from ..ninep.errors import NinepError
from .lifecycle import REMOTE_COPY
from .local import KeepRoute, PipelineFailed, Stats, keep_window
from .plan import Edge, Plan, PlanError, Segment

TAIL_LINES = 5


@dataclass
class RemoteCopy:
    seg: Segment
    index: int
    node: str = "?"
    status: int | None = None
    unread: bool = False  # it failed before the end of its input (the node's wait says)
    lost: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    verdict: str = ""  # the chain's line naming the command that broke it, if it did
    block: int | None = None  # a keep region's run on one block (its number, from 0)
    session: SessionClient | None = None  # that run's own session
    stderr_done: asyncio.Event = field(default_factory=asyncio.Event)
    state: str = "new"  # along lifecycle.REMOTE_COPY

    def move(self, event: str) -> None:
        self.state = step(REMOTE_COPY, self.state, event, f"copy {self.index} of `{self.seg.text}`")

    def label(self) -> str:
        n = self.seg.copies
        copy = f", copy {self.index + 1} of {n}" if n > 1 else ""
        if self.block is not None:
            copy = f", its run on block {self.block + 1}"
        first = self.seg.first + 1
        stages = f"stage {first}" if len(self.seg.stages) == 1 else \
            f"stages {first}-{first + len(self.seg.stages) - 1}"
        return f"{stages} `{self.seg.text}`{copy} (on node {self.node})"


def chain_command(seg: Segment) -> str:
    """What a copy runs: the command, or a chain that names which of its commands failed."""
    if len(seg.stages) == 1:
        return seg.stages[0]
    source = ["--source"] if seg.index == 0 else []
    return '"$BRASIL_PYTHON" ' + shlex.join(python_argv("brasil.exec.chain", *source,
                                                        *seg.stages)[1:])


class ClusterRun:
    def __init__(self, client: Client, plan: Plan, stdin: int = 0, stdout: int = 1,
                 stderr: int = 2, on_stats: Any = None, screen: Any = None,
                 keep_block: int = KeepRoute.BLOCK) -> None:
        self.c = client
        self.on_stats = on_stats
        self.screen = screen  # a status line, taken off the terminal around every write
        self.plan = plan
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.sessions: dict[int, SessionClient] = {}  # by segment (none for a keep region)
        self.made: list[SessionClient] = []  # every session we made
        self.copies = [[RemoteCopy(s, i) for i in range(s.copies)] for s in plan.segments]
        self.stats = [Stats(copies=s.copies, running=s.copies) for s in plan.segments]
        self.runs: set[asyncio.Future[None]] = set()  # keep regions' runs, one per block
        self.keep_holding = 0  # runs holding a slot
        self.keep_blocked = 0  # of those, the ones waiting for their turn (KeepOut.room)
        self.keep_freed = asyncio.Event()  # one of those two changed: a slot may come
        self.failure: PipelineFailed | None = None
        self.done = asyncio.Event()
        # keep regions (``|<[keep]`` … ``>|``) run per block, each run a session of its own,
        # fed and collected by the shell: the order is restored where every block is seen
        self.keep = {e.downstream: e for e in plan.edges if e.mode == "balance" and e.keep}
        self.keep_block = keep_block
        self.orders: list[KeepOrder] = []  # one per region instance, as it runs: its state
        self.outs: list[KeepOut] = []  # and where its runs' outputs go
        for r in self.keep:
            self.copies[r] = []  # its runs, one per block, are not kept
            self.stats[r].running = 0

    def copy(self, seg: int, copy: int) -> SessionClient:
        """A copy of a segment: its session's sub-session."""
        return self.sessions[seg].sub(copy)

    def _of(self, c: RemoteCopy) -> SessionClient:
        return c.session if c.session is not None else self.copy(c.seg.index, c.index)

    # ---- setting up ----

    def _setup(self) -> list[str]:
        lines = [f"env {k}={v}" for k, v in self.plan.env.items() if "\n" not in v]
        lines.append(f"dir {os.getcwd()}")  # as srun: where the shell is (`cd` moves it)
        return lines

    async def _session(self, seg: Segment) -> SessionClient:
        session = await SessionClient.clone(self.c)
        self.made.append(session)  # closed at the end whatever happens
        fed_by_fanout = seg.index > 0 and self.plan.edges[seg.index - 1].mode == "balance"
        lines = self._setup()
        if seg is self.plan.last:
            lines.append(f"rs {self.plan.out_rs}")
        if fed_by_fanout:
            lines.append("lazy on")
        try:
            await session.ctl(*lines, f"res {seg.copies}")
        except NinepError as e:
            raise PipelineFailed(f"push: stage {seg.first + 1} `{seg.text}`: cannot reserve "
                                 f"{seg.copies} slot(s): {e.message}", 1) from None
        return session

    async def reserve(self) -> None:
        self.sessions = {}
        segs = [s for s in self.plan.segments if s.index not in self.keep]
        made = await asyncio.gather(*(self._session(s) for s in segs), return_exceptions=True)
        errors = [r for r in made if isinstance(r, BaseException)]
        self.sessions = {s.index: r for s, r in zip(segs, made) if isinstance(r, SessionClient)}
        if errors:
            raise errors[0]
        for seg in segs:
            session = self.sessions[seg.index]
            for rank, node in (await session.nodes()).items():
                if rank < seg.copies:
                    self.copies[seg.index][rank].node = node

    def where(self) -> dict[int, list[str]]:
        out = {}
        for seg in self.plan.segments:
            nodes: dict[str, int] = {}
            for c in self.copies[seg.index]:
                nodes[c.node] = nodes.get(c.node, 0) + 1
            out[seg.index] = [f"{n}×{k}" if k > 1 else n for n, k in nodes.items()]
            if seg.index in self.keep:
                out[seg.index] = ["a slot anywhere in the tree per block, at most "
                                  f"{seg.per} at once"]
        return out

    async def _data_address(self, seg: int, copy: int) -> str:
        addr = await self.copy(seg, copy).data_address()
        if addr is not None:
            return addr
        raise PipelineFailed(f"push: {self.copies[seg][copy].label()}: its node has no data "
                             "endpoint", 1)

    async def wire(self) -> None:
        """Every edge's routes: gathers on the destinations first, then the scatters."""
        scatters: list[tuple[SessionClient, str]] = []
        for e in self.plan.edges:
            if e.keep:
                continue  # carried by the shell (_keep)
            rs = shlex.quote(str(e.rs))
            for r in e.routes:
                dests = []
                for d in r.dests:
                    token = os.urandom(16).hex()
                    addr = await self._data_address(e.downstream, d)
                    await self.copy(e.downstream, d).ctl(f"gather {len(r.sources)} {token} {rs}")
                    dests.append(f"{token}@{addr}")
                mode = {"balance": "balance", "merge": "one",
                        "hash": f"hash {shlex.quote(str(e.key))}"}[e.mode]
                for s in r.sources:
                    scatters.append((self.copy(e.upstream, s),
                                     f"scatter {mode} {rs} {' '.join(dests)}"))
        await asyncio.gather(*(copy.ctl(line) for copy, line in scatters))

    # ---- running ----

    async def _stdin(self) -> None:
        loop = asyncio.get_running_loop()
        async with await self.sessions[0].open("stdio", OWRITE) as f:
            if os.isatty(self.stdin):
                return  # a terminal is not a pipeline's input: end of file at once
            while True:
                data = await loop.run_in_executor(None, os.read, self.stdin, 1 << 20)
                if not data:
                    return
                self.stats[0].bytes_in += len(data)
                await f.write(data)

    async def _stdout(self) -> None:
        loop = asyncio.get_running_loop()
        async with await self.sessions[self.plan.last.index].open("stdio") as f:
            while True:
                data = await f.read()
                if not data:
                    return
                self.stats[-1].bytes_out += len(data)
                try:
                    await loop.run_in_executor(None, self._write, self.stdout, data)
                except BrokenPipeError:
                    return

    async def _stderr(self, c: RemoteCopy) -> None:
        rest = b""
        try:
            async with await self._of(c).open("stderr") as f:
                while True:
                    data = await f.read()
                    if not data:
                        break
                    shown = data
                    if MARK.encode() in data:  # the chain's verdict goes into our message
                        shown = b"".join(ln for ln in data.splitlines(keepends=True)
                                         if not ln.startswith(MARK.encode()))
                    try:
                        self._write(self.stderr, shown)
                    except OSError:
                        pass
                    lines = (rest + data).split(b"\n")
                    rest = lines.pop()[-4096:]
                    for ln in lines:
                        if ln.startswith(MARK.encode()):
                            c.verdict = ln.decode(errors="replace")[:300]
                    for ln in lines[-TAIL_LINES:]:
                        c.tail.append(ln.decode(errors="replace")[:300])
        except (NinepError, ConnectionError):
            pass
        finally:
            c.stderr_done.set()
        if rest:
            c.tail.append(rest.decode(errors="replace")[:300])

    def _write(self, fd: int, data: bytes) -> None:
        if self.screen is None:
            _write_all(fd, data)
        else:
            with self.screen.quiet():
                _write_all(fd, data)

    async def _wait(self, c: RemoteCopy) -> None:
        try:
            text = await self._of(c).wait()
            words = text.split()
            if len(words) >= 2 and words[1].lstrip("-").isdigit():
                c.status = int(words[1])
                c.unread = words[2:3] == ["unread"]
            else:
                c.lost = " ".join(words[1:]) or "ended without a status"
        except (NinepError, ConnectionError) as e:
            c.lost = f"lost ({e})"
        c.move("lost" if c.lost else "exit")
        self.stats[c.seg.index].running -= 1
        if c.status:  # its stderr ends with it: wait for the last bytes (and the verdict)
            try:
                await asyncio.wait_for(c.stderr_done.wait(), 5)
            except TimeoutError:
                pass
        if self.failure is None:
            why = self._fault(c)
            if why:
                self._fail(c, why)

    def _fault(self, c: RemoteCopy) -> str:
        """As on one machine (exec/chain.py): the node's ``wait`` says whether a copy that
        failed ended before the end of its input (``unread``)."""
        if c.lost:
            return c.lost if "lost" in c.lost else f"its node {c.node} was lost: {c.lost}"
        if c.verdict:  # a chain judged its own commands, as exec/chain.py does here
            return describe_status(c.status or 1)
        source = c.seg.index == 0 and len(c.seg.stages) == 1  # reads our input: exec/chain.py
        return fault(c.status or 0, True, c.unread, source=source)

    def _fail(self, c: RemoteCopy, why: str) -> None:
        if c.verdict:
            why += f"; {c.verdict.removeprefix(MARK).strip()}"
        tail = "".join(f"\n    {ln}" for ln in c.tail if ln.strip() and not ln.startswith(MARK))
        msg = f"push: {c.label()}: {why}" + (f"\n  last lines of its stderr:{tail}" if tail else "")
        self.failure = PipelineFailed(msg, c.status or 1)
        self.done.set()

    # ---- keep regions ----

    async def _keep(self, e: Edge, u: int) -> None:
        try:
            await self._keep_region(e, u)
        except (NinepError, ConnectionError) as x:  # a stream of ours broke: never a success
            if self.failure is None:
                seg = self.plan.segments[e.downstream]
                self.failure = PipelineFailed(f"push: stage {seg.first + 1} `{seg.text}` (input "
                                              f"order kept): its input or output was lost: {x}", 1)
                self.done.set()

    async def _keep_region(self, e: Edge, u: int) -> None:
        """One instance of a keep region: upstream copy ``u``'s output cut into blocks, each
        run in a session of its own (at most ``per`` at once, wherever the tree has a slot),
        and their outputs written to downstream copy ``u`` in input order. The order and its
        bound are ``exec.route.KeepOrder``'s, as on one machine (``push.local.KeepRoute``):
        while its window is full the upstream copy's output is not read, and its node pauses
        it once its output bound is reached."""
        seg = self.plan.segments[e.downstream]
        after = self.plan.edges[seg.index]
        order = KeepOrder(self.keep_block, after.rs.terminator, keep_window(seg.per))
        self.orders.append(order)
        router = Router(ONE, 1, e.rs)
        slots = asyncio.Semaphore(seg.per)
        stats = self.stats[seg.index]

        async with await self.copy(after.downstream, u).open("stdio", OWRITE) as dest:
            out = KeepOut(order, after.rs.terminator, dest, self._blocked)
            self.outs.append(out)
            async with await self.copy(e.upstream, u).open("stdio") as src:
                while True:
                    while order.full:
                        await out.moves()
                    data = await src.read(self.keep_block)  # a block is one read or two
                    block = order.add(router.feed(data) if data else router.finish())
                    if not data and block is None:
                        block = order.cut()
                    if block is not None:
                        await slots.acquire()
                        stats.bytes_in += len(block[1])
                        run = asyncio.ensure_future(self._run_block(seg, u, block, slots, out))
                        self.runs.add(run)
                        run.add_done_callback(self.runs.discard)
                    if not data:
                        break
                    if out.gone:  # as in a shell, the region's source ends by SIGPIPE
                        await self._quiet(self.copy(e.upstream, u).kill("PIPE"))
                        break
                while self.runs:
                    await asyncio.gather(*self.runs)

    def _blocked(self, n: int) -> None:
        self.keep_blocked += n
        self.keep_freed.set()

    async def _reserve_run(self, c: RemoteCopy, session: SessionClient) -> None:
        """A slot for one run. Other stages and the tree's other users may hold every slot for a
        while: a run then waits for one of ours to end and tries again, as long as one of ours
        is running and can end without it; else it fails, saying so."""
        while True:
            try:
                await session.ctl("res 1")
                self.keep_holding += 1
                return
            except NinepError as e:
                if "not enough slots" not in e.message or \
                        self.keep_holding - self.keep_blocked <= 0:
                    raise PipelineFailed(
                        f"push: {c.label()}: cannot reserve a slot: {e.message}; a keep region "
                        f"runs each block in a slot of its own ({c.seg.per} at once here): ask "
                        "for fewer copies (|<[n keep]) or free slots", 1) from None
            self.keep_freed.clear()
            await self.keep_freed.wait()

    async def _run_block(self, seg: Segment, u: int, block: tuple[int, bytes],
                         slots: asyncio.Semaphore, keep: KeepOut) -> None:
        """One run of a keep region on one block, in a session of one slot: the block as its
        input, its output handed to ``keep`` (streamed if its turn has come, else held up to
        a bound), the rest once its status says it did not break the pipeline."""
        seq, data = block
        c = RemoteCopy(seg, u * seg.per + seq % seg.per, block=seq)
        stats = self.stats[seg.index]
        err: asyncio.Future[None] | None = None
        session: SessionClient | None = None
        holding = False
        try:
            session = c.session = await SessionClient.clone(self.c)
            self.made.append(session)
            await session.ctl(*self._setup())
            await self._reserve_run(c, session)
            holding = True
            if self.failure is not None:
                return  # the pipeline broke meanwhile: run nothing more
            c.node = (await session.nodes()).get(0, "?")
            try:
                await session.exec(chain_command(seg))
            except NinepError as e:
                status = 127 if "not found" in e.message or "no such" in e.message else 126
                raise PipelineFailed(f"push: stage {seg.first + 1} `{seg.text}` cannot "
                                     f"start: {e.message.removeprefix('exec: ')}",
                                     status) from None
            c.move("exec")
            stats.running += 1
            if self.failure is not None:  # it broke while we started it: kill() missed this one
                await session.kill()
            err = asyncio.ensure_future(self._stderr(c))
            out: list[bytes] = []

            async def feed() -> None:
                try:
                    async with await session.open("stdio", OWRITE) as f:
                        await f.write(data)
                except NinepError:
                    pass  # it stopped reading: its status (``unread``) says whether that broke it

            async def collect() -> None:
                async with await session.open("stdio") as f:
                    while True:
                        await keep.room(seq, out)
                        chunk = await f.read()
                        if not chunk:
                            return
                        out.append(chunk)
                        stats.bytes_out += len(chunk)
            await asyncio.gather(feed(), collect())
            await self._wait(c)
            if self.failure is None:
                await keep.given(seq, out)
        except PipelineFailed as e:
            if self.failure is None:
                self.failure = e
                self.done.set()
        except (NinepError, ConnectionError) as e:
            if self.failure is None:
                self._fail(c, f"lost ({e})")
        finally:
            slots.release()
            if err is not None:
                err.cancel()
            if session is not None:
                await session.close()
            if holding:
                self.keep_holding -= 1
                self.keep_freed.set()
                if session in self.made:  # only now: cancelled before, run() closes it
                    self.made.remove(session)

    async def _runs_end(self) -> None:
        """Let the keep regions' runs end by themselves (their sessions were killed, or a
        failure stops them before they start) rather than cancel them: one cancelled while its
        node reserves its slot would leave that reservation half made."""
        if self.runs:
            _, late = await asyncio.wait(list(self.runs), timeout=10)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _tick(self) -> None:
        """The status line: copies running per stage, and the bytes the shell sees."""
        while True:
            self.on_stats(self.stats)
            await asyncio.sleep(0.5)

    async def kill(self) -> None:
        await asyncio.gather(*(self._quiet(s.kill("KILL")) for s in self.made))

    async def close(self) -> None:
        made, self.made = self.made, []
        await asyncio.gather(*(s.close() for s in made))

    @staticmethod
    async def _quiet(coro: Any) -> None:
        try:
            await coro
        except (NinepError, ConnectionError):
            pass

    async def run(self) -> int:
        tasks: list[asyncio.Future[Any]] = []
        try:
            try:
                await self.reserve()
                await self.wire()
            except (NinepError, ConnectionError) as e:
                lost = "lost" in str(e) or "closed" in str(e)
                raise PipelineFailed(f"push: the pipeline could not be set up: {e}" + (
                    " (a node was lost meanwhile)" if lost else ""), 1) from None
            for seg in self.plan.segments:
                if seg.index in self.keep:
                    continue
                session = self.sessions[seg.index]
                try:
                    await session.exec(chain_command(seg))
                    for c in self.copies[seg.index]:
                        c.move("exec")
                except NinepError as e:
                    status = 127 if "not found" in e.message or "no such" in e.message else 126
                    raise PipelineFailed(f"push: stage {seg.first + 1} `{seg.text}` cannot "
                                         f"start: {e.message.removeprefix('exec: ')}",
                                         status) from None
            copies = [c for cs in self.copies for c in cs]
            tasks += [asyncio.ensure_future(self._stdin()), asyncio.ensure_future(self._stdout())]
            tasks += [asyncio.ensure_future(self._stderr(c)) for c in copies]
            tasks += [asyncio.ensure_future(self._wait(c)) for c in copies]
            for region in self.keep.values():
                tasks += [asyncio.ensure_future(self._keep(region, u)) for u in range(
                    self.plan.segments[region.upstream].copies)]
            if self.on_stats is not None:
                tasks.append(asyncio.ensure_future(self._tick()))
            everything = asyncio.gather(*tasks[1:len(tasks) - (self.on_stats is not None)],
                                        return_exceptions=True)
            failed = asyncio.ensure_future(self.done.wait())
            tasks += [failed, everything]  # for Ctrl-C's cleanup below
            either: list[asyncio.Future[Any]] = [everything, failed]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if self.failure is not None:
                await self.kill()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._runs_end()
            if self.failure is not None:
                raise self.failure
            last = self.copies[-1]
            return max((c.status or 0) for c in last)
        except asyncio.CancelledError:  # Ctrl-C: stop everything, ours and the nodes'
            for t in [*tasks, *self.runs]:
                t.cancel()
            await asyncio.gather(*tasks, *self.runs, return_exceptions=True)
            await self.kill()
            raise
        finally:
            await self.close()


class KeepOut:
    """Where the runs of one keep region instance hand their outputs: on to the copy after the
    region, in input order (``exec.route.KeepOrder.done``). The run whose turn it is streams
    (all but its last piece, which ``done`` needs to tell whether it ends mid-record); a later
    one holds at most :attr:`HELD` bytes, then stops reading until its turn, and its node
    pauses it: with the window, memory stays under about window × (block + HELD)."""

    HELD = KEEP_HELD

    def __init__(self, order: KeepOrder, terminator: bytes | None, dest: Any,
                 blocked: Callable[[int], None] = lambda n: None) -> None:
        self.order, self.dest = order, dest
        self.blocked = blocked  # told when a run starts (+1) and stops (-1) waiting its turn
        self.merge = Merger(terminator)
        self.turn = asyncio.Lock()  # one writer at a time, in the order done() gives
        self.moved = asyncio.Event()  # the oldest block was given back
        self.gone = False  # the copy after the region stopped reading (head): output dropped
        self.most_held = 0  # the most one run held out of turn, for the tests

    async def moves(self) -> None:
        """Until a block is given back (callers check their condition again)."""
        self.moved.clear()
        await self.moved.wait()

    async def _write(self, pieces: list[tuple[bytes, int]]) -> None:
        try:
            for piece, kind in pieces:
                for d in self.merge.put(self, piece, kind):
                    if not self.gone:
                        await self.dest.write(d)
        except (NinepError, ConnectionError):
            self.gone = True

    async def room(self, seq: int, out: list[bytes]) -> None:
        """Before a run reads more output: out of turn, wait once it holds HELD; in turn,
        write what it holds but the last piece."""
        held = sum(len(p) for p in out)
        self.most_held = max(self.most_held, held if self.order.next_out != seq else 0)
        if held >= self.HELD and self.order.next_out != seq:
            self.blocked(1)
            try:
                while self.order.next_out != seq:
                    await self.moves()
            finally:
                self.blocked(-1)
        pieces = self.order.in_turn(seq, out)
        if pieces:
            async with self.turn:
                await self._write([(p, WHOLE) for p in pieces])

    async def given(self, seq: int, out: list[bytes]) -> None:
        """Run ``seq`` is over: the rest of its output, and whatever it held back."""
        async with self.turn:
            await self._write(self.order.done(seq, out))
        self.moved.set()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class ClusterEngine:
    """The shell's engine for a cluster: one connection, kept for the whole script."""

    def __init__(self, at: str, secret_file: str | None = None, status: bool | None = None) -> None:
        self.at, self.secret_file, self.status = at, secret_file, status
        self.loop = asyncio.new_event_loop()
        self.client: Client | None = None

    def _client(self) -> Client:
        if self.client is None or self.client.closed:
            self.client = self.loop.run_until_complete(dial(self.at, self.secret_file))
        return self.client

    def default_copies(self) -> int:
        """A share of the free slots: the stages of a pipeline run at once."""
        text = self.loop.run_until_complete(self._client().read(f"{LOCAL}/status")).decode()
        total = text.splitlines()[-1].split()
        free = int(total[2]) if len(total) > 2 and total[2].isdigit() else 1
        return max(1, (free - 2) // 3)

    def explain(self, plan: Plan) -> str:
        run = ClusterRun(self._client(), plan)

        async def go() -> dict[int, list[str]]:
            try:
                await run.reserve()
                return run.where()
            finally:
                await run.close()
        try:
            return plan.describe(self.loop.run_until_complete(go()))
        except PipelineFailed as e:
            return str(e)

    def run(self, plan: Plan) -> int:
        from . import status
        line = status.StatusLine(plan) if (self.status if self.status is not None
                                           else status.wanted()) else None
        try:
            return self._run(plan, line)
        finally:
            if line is not None:
                line.close()

    def _run(self, plan: Plan, line: Any) -> int:
        try:
            run = ClusterRun(self._client(), plan, on_stats=line.update if line else None,
                            screen=line)
        except PlanError as e:
            print(f"push: {e}", file=sys.stderr)
            return 2
        task = self.loop.create_task(run.run())
        interrupted = False

        def interrupt() -> None:
            # Ctrl-C (or TERM) cancels the run on the loop, between callbacks. Python's default
            # handler raises KeyboardInterrupt wherever the loop is, mid-callback too, which can
            # leave a future unresolved that the cleanup then waits for forever.
            nonlocal interrupted
            interrupted = True
            task.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, interrupt)
        try:
            try:
                return self.loop.run_until_complete(task)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self.loop.remove_signal_handler(sig)
                if line is not None:
                    line.close()  # before any message: the last screen holds no status
        except (KeyboardInterrupt, asyncio.CancelledError):
            if not task.done():
                task.cancel()
                try:
                    self.loop.run_until_complete(task)
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
            if not interrupted and not task.cancelled():
                raise
            print("push: interrupted; every stage was stopped", file=sys.stderr)
            return 130
        except PipelineFailed as e:
            print(e, file=sys.stderr)
            return e.status
        except (NinepError, ConnectionError) as e:
            print(f"push: {e}", file=sys.stderr)
            return 1

    def close(self) -> None:
        if self.client is not None:
            self.loop.run_until_complete(self.client.close())
        self.loop.close()


__all__ = ["ClusterEngine", "ClusterRun", "describe_status"]
