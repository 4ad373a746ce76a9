"""A leaf: one sub-session bound to one slot, running at most one process at a time.

Its slot moves along ``lifecycle.SLOT`` (idle, waiting for its first input when ``lazy``,
running, then exited, killed or failed, until the session releases it). :func:`start` starts
many leaves' processes at once: ``exec CMD`` means what ``/bin/sh -c CMD`` means
(``exec/command.py`` says how it becomes an argv); children are forked on the node's spawn
threads in two batches, so the event loop keeps serving while a few hundred processes start.
What a leaf needs of the session holding it is :class:`~brasil.node.host.Owner`.
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
from collections.abc import Awaitable

from ..exec.process import Job, Process
from ..exec.pychild import runs_module
from ..exec.records import Key, Splitter
from ..lifecycle import step
from ..ninep.errors import NinepError
from ..ninep.stream import Stream
from . import lifecycle
from .host import FarSub, Host, Owner, Transfer
from .io import SPLICE, Aggregator, Output, Sink, StreamSink
from .scope import Scope, background

log = logging.getLogger("brasil.session")


class Leaf(Scope):
    is_leaf = True
    parent: Owner
    process: Process | None = None
    exit_status: int | None = None
    starting = False  # a deferred process is being started now
    _counted = False  # counted among its session's running processes
    _aggregators: tuple[Aggregator, ...] = ()  # `gather`: merging direct connections into stdin
    slot_state = lifecycle.SLOT_START  # then only along lifecycle.SLOT (slot_step)
    # Its pipes' streams, made when first used: most slots of a big `res` are released without
    # ever running anything here, and three streams each were a fifth of a delegated res/close.
    _stdin: Stream | None = None
    _stdout: Output | None = None
    _stderr: Output | None = None
    _ended_as = ""  # released: how a stream made later is born ("close": end of file; "break")

    def __init__(self, node: Host, path: str, parent: Owner, slot: int) -> None:
        super().__init__(node, path, {})
        self.parent = parent
        self.slot = slot
        self.transfers: list[Transfer] = []  # this leaf's ends of direct splices (tree/data.py)

    def _new_streams(self) -> None:
        """Fresh pipes for the next process (made when first used)."""
        self._stdin = self._stdout = self._stderr = None

    @staticmethod
    def _born(stream: Stream, ended_as: str) -> Stream:
        if ended_as == "close":
            stream.close()
        elif ended_as == "break":
            stream.break_()
        return stream

    @property
    def stdin(self) -> Stream:
        if self._stdin is None:  # (released: its input is at its end, whatever the output's fate)
            self._stdin = self._born(Stream(self.node.output_limit), self._ended_as and "close")
        return self._stdin

    @property
    def stdout(self) -> Output:
        if self._stdout is None:
            self._stdout = self._new_output("stdout")
        return self._stdout

    @property
    def stderr(self) -> Output:
        if self._stderr is None:
            self._stderr = self._new_output("stderr")
        return self._stderr

    def _new_output(self, name: str) -> Output:
        stream = self._born(Stream(self.node.output_limit), self._ended_as)
        return Output(stream, f"{self.path} {name}")

    def slot_step(self, event: str) -> None:
        """Move this leaf's slot along lifecycle.SLOT (an event not drawn there raises)."""
        self.slot_state = step(lifecycle.SLOT, self.slot_state, event, f"sub-session {self.path}")

    # ---- shape ----

    @property
    def top(self) -> Owner:
        return self.parent

    @property
    def index(self) -> int:
        """Its index in the session (``3/5`` → 5): its rank there, less the session's base."""
        return int(self.path.rsplit("/", 1)[-1])

    @property
    def state(self) -> str:
        return self.slot_state

    def effective_dir(self) -> str | None:
        return self.dir if self.dir is not None else self.parent.effective_dir()

    def effective_env(self) -> dict[str, str]:
        return {**self.parent.effective_env(), **self.env}

    def effective_ns(self) -> list[str]:
        return self.parent.effective_ns() + self.ns

    def rank_env(self) -> dict[str, str]:
        """What a process here learns of its place: its node, its rank in the whole session
        (0…N-1, unique across every node) and N, and the session's name."""
        top = self.parent
        rank = str(top.rank_base + self.index)
        env = {"BRASIL_NODE": self.node.name, "BRASIL_RANK": rank,
               "BRASIL_SIZE": str(top.size or top.nsubs), "BRASIL_SUB": rank,
               "BRASIL_SESSION": top.origin, "BRASIL_PYTHON": sys.executable,
               "BRASIL_SESSION_DIR": f"/csrv/{top.route}"}
        for a in self.node.addresses:  # where `brasil ctl` finds this node (no secret needed)
            if a.startswith("unix:"):
                env["BRASIL_AT"] = a
                break
        if top.stage_dir:  # files staged for the session (node/stage.py)
            env["BRASIL_STAGE"] = top.stage_dir
        if self.node.state_dir:  # this node's, never a neighbour's (brasil workers keeps its
            env["BRASIL_STATE_DIR"] = self.node.state_dir  # worker directories there)
        return env

    def label_prefix(self) -> bytes:
        """``label on``: what each of this sub-session's records is prefixed with in the merged
        output, as pdsh and clush print lines: ``NODE/RANK: ``."""
        return f"{self.node.name}/{self.rank_env()['BRASIL_RANK']}: ".encode()

    def _sub(self, i: int) -> Scope | FarSub:
        raise AssertionError("a leaf has no sub-sessions")  # sub() refused it already

    # ---- its process ----

    async def exec(self, cmd: str) -> None:
        cmd, argv, env = self.command(cmd)
        self.check_dir()
        errors = await start(self.node, [self], cmd, argv, env)
        if errors:
            raise errors[0]

    def _count_running(self) -> None:
        if not self._counted:
            self._counted = True
            self.parent.sub_started()  # an exec in one sub-session makes its session run too

    def _uncount_running(self) -> None:
        if self._counted:
            self._counted = False
            self.parent.sub_ended()

    def _started(self, cmd: str, proc: Process) -> None:
        self.process, self.args, self.exit_status, self.error = proc, cmd, None, ""
        self.slot_step("start")
        self.starting = False
        self._count_running()
        proc.on_exit(self._exited)
        self.touch()

    def defer(self, cmd: str, argv: list[str], env: dict[str, str]) -> None:
        """``lazy on``: the process starts when the first bytes of its input arrive; if the
        input ends empty it never runs (status 0, no output), as a copy of a fan-out that was
        dealt no record does not run in PUSH."""
        self.args, self.exit_status, self.error = cmd, None, ""
        self.slot_step("defer")
        self._count_running()
        stdin = self.stdin
        self.stdin.when_ready(lambda: self._input_ready(stdin, cmd, argv, env))

    def _input_ready(self, stdin: Stream, cmd: str, argv: list[str], env: dict[str, str]) -> None:
        if self.slot_state != "waiting" or stdin is not self.stdin:
            return  # killed or closed meanwhile
        if len(stdin):
            self.starting = True
            background(self._start_deferred(cmd, argv, env))
            return
        self.slot_step("skip")
        self.exit_status = 0
        for o in (self.stdout, self.stderr):
            o.stream.close()
        self._uncount_running()
        self.touch()
        self.notify_done()

    async def _start_deferred(self, cmd: str, argv: list[str], env: dict[str, str]) -> None:
        errors = await start(self.node, [self], cmd, argv, env)
        if errors and self.slot_state == "waiting":
            self.starting = False
            self.error = errors[0].message if isinstance(errors[0], NinepError) else str(errors[0])
            self.slot_step("fail")
            self.exit_status = 127
            for o in (self.stdout, self.stderr):
                o.stream.close()
            self.stdin.break_()
            self._uncount_running()
            self.notify_done()

    def _exited(self, status: int) -> None:
        self.exit_status = status
        proc = self.process
        event = "killed" if proc is not None and proc.signalled else "exit"
        if self.slot_state == "running":
            self.slot_step(event)
        log.debug("session %s: pid %d %s, status %d", self.path,
                  proc.pid if proc else 0, self.slot_state, status)
        self._uncount_running()
        self.touch()
        self.notify_done()

    def notify_done(self) -> None:
        if self.all_done():
            self._wake_waiters()
        self.parent.notify_done()

    def all_done(self) -> bool:
        return self.slot_state not in ("running", "waiting")

    def send_signal(self, sig: int) -> int:
        """``kill``: a process waiting for its first input ends now, unstarted; a running one
        gets ``sig``. Returns how many process groups were signalled."""
        if self.slot_state == "waiting" and not self.starting:  # never started: ends now
            self.slot_step("killed")
            self.exit_status = 128 + sig
            for o in (self.stdout, self.stderr):
                o.stream.close()
            self.stdin.break_()
            self._uncount_running()
            self.notify_done()
        elif self.process is not None:
            n = self.process.running
            self.process.kill(sig)  # ended: what it left in its cgroup (setsid'd)
            return n
        return 0

    def kill(self, sig: int = signal.SIGTERM) -> Awaitable[object] | None:
        n = self.send_signal(sig)
        log.info("session %s: signal %d to %d process group(s) here, %d group(s) elsewhere",
                 self.path, sig, n, 0)
        return None

    def release(self, keep_output: bool = False) -> None:
        """The session is closed, or this rank released (``release RANKS``): whatever still
        runs is killed, its pipes end, the slot is given back (by the session, all at once).
        ``keep_output``: what it wrote is still read, then end of file, without waiting for
        the process's own."""
        if self.process is not None:  # ended too: nothing it left may hold on to the slot
            self.process.kill(signal.SIGKILL)
        self._ended_as = "close" if keep_output else "break"  # for streams not made yet
        if self._stdin is not None:
            self._stdin.close()
        for o in (self._stdout, self._stderr):
            if o is not None:
                self._born(o.stream, self._ended_as)
        self.slot_step("release")
        self._uncount_running()
        for agg in self._aggregators:
            agg.cancel()
        for t in self.transfers:
            task = t.task
            if task is not None:
                task.cancel()

    # ---- data ----

    def output(self, fd: int, who: str) -> Output:
        """Claim output ``fd`` (1 stdout, 2 stderr) for ``who``."""
        if fd not in (1, 2):
            raise NinepError(f"fd {fd} is not an output; use 1 (stdout) or 2 (stderr)")
        out = self.stdout if fd == 1 else self.stderr
        out.take(who)
        return out

    def input(self) -> Sink:
        return StreamSink(self.stdin)

    def gather(self, k: int, token: str, rs: Splitter) -> None:
        """Expect ``k`` direct data connections presenting ``token``; their bytes are merged into
        our stdin on record boundaries, which reaches end of file when all ``k`` have ended."""
        cut = self.node.cut_through
        if cut is None:
            return super().gather(k, token, rs)
        limit = self.node.output_limit
        sources = [Output(Stream(limit), f"{self.path} gather {i}") for i in range(k)]
        self._aggregators += (Aggregator(sources, rs, limit, out=self.stdin),)
        self.transfers += cut.expect(token, [StreamSink(o.stream) for o in sources],
                                     f"gather {k} {token[:8]}")

    async def scatter(self, mode: str, key: Key | None, rs: Splitter,
                      dests: list[tuple[str, str]]) -> None:
        """Send our stdout straight to ``dests`` (TOKEN, ADDR pairs), cut into records: all to
        one, each block to whichever has room (balance), or each record by its key (hash)."""
        cut = self.node.cut_through
        if cut is None:
            return await super().scatter(mode, key, rs, dests)
        if self.stdout.claim is not None:
            self.stdout.take(SPLICE)  # raises, saying who has it
        t = await cut.scatter(dests, lambda: self.output(1, SPLICE), mode, key, rs,
                              f"scatter {mode} to {len(dests)}")
        self.transfers.append(t)

    def splice_in(self, token: str, label: str) -> None:
        """Expect a direct connection presenting ``token``; its bytes become our stdin."""
        cut = self.node.cut_through
        if cut is None:
            return super().splice_in(token, label)
        self.transfers += cut.expect(token, [StreamSink(self.stdin)], label)

    async def splice_out(self, token: str, address: str, label: str) -> None:
        """Send our stdout straight to the endpoint at ``address`` (ConnectionError if unreachable)."""
        cut = self.node.cut_through
        if cut is None:
            return await super().splice_out(token, address, label)
        if self.stdout.claim is not None:
            self.stdout.take(SPLICE)  # raises, saying who has it
        t = await cut.send(address, token, lambda: self.output(1, SPLICE), label)
        self.transfers.append(t)

    def unread_output(self) -> bool:
        return any(o is not None and len(o.stream) for o in (self._stdout, self._stderr))

    # ---- reporting ----

    def status_text(self) -> str:
        return self.status_line() + "\n"

    def status_line(self) -> str:
        pid = self.process.pid if self.process else "-"
        status = "-" if self.exit_status is None else str(self.exit_status)
        sub = self.path.split("/", 1)[1]
        line = f"{sub} {self.node.name} {self.slot} {self.state} {pid} {status}"
        errors = [self.error] if self.error else []
        errors += [t.describe() for t in self.transfers if t.state == "failed"]
        return line + "".join(f" {e}" for e in errors)

    def wait_lines(self) -> list[str]:
        line = f"{self.path.split('/', 1)[1]} {'-' if self.exit_status is None else self.exit_status}"
        proc = self.process
        if self.exit_status and self.exit_status <= 128 and proc is not None and proc.input_left:
            line += " unread"  # it failed (not killed) before the end of its input
        return [line]

    def state_line(self) -> str:
        line = self._state_line({self.state: 1}, 1, self.transfers)
        cut = self.node.cut_through
        if cut is not None:
            line += f"; data {cut.address}"
        return line


async def start(node: Host, leaves: list[Leaf], cmd: str, argv: list[str],
                base_env: dict[str, str]) -> list[BaseException]:
    """One process per leaf (``lazy`` ones: when their input first has bytes), started by the
    node's launcher (exec/process.py: forked, or simulated). Returns what failed to start."""
    for leaf in leaves:
        if leaf.slot_state == "released":  # (a file of it still open: `release RANKS` took it)
            raise NinepError(f"exec: sub-session {leaf.path} was released; its slot is no "
                             "longer the session's", errno.ENOENT)
        if leaf.slot_state == "running" or (leaf.slot_state == "waiting" and not leaf.starting):
            raise NinepError(f"exec: sub-session {leaf.path} is still running; kill it or wait first",
                             errno.EBUSY)
    lazy = [leaf for leaf in leaves if leaf.parent.lazy and not leaf.starting]
    if lazy:
        for leaf in lazy:
            if leaf.process is not None:
                leaf._new_streams()
            leaf.defer(cmd, argv, base_env)
        leaves = [leaf for leaf in leaves if leaf not in lazy]
        if not leaves:
            return []
    jobs: list[Job] = []
    for leaf in leaves:
        if leaf.process is not None and not leaf.starting:  # a second exec: fresh pipes
            leaf._new_streams()
        env = {**base_env, **leaf.env, **leaf.rank_env()}
        jobs.append((argv, env, leaf.effective_dir() or node.workdir, leaf.slot))
    checked = runs_module(argv, "brasil.exec.nsexec")  # it reports whether the binds worked
    launched = await node.launcher.launch(
        jobs, [(leaf.stdin, leaf.stdout.stream, leaf.stderr.stream) for leaf in leaves], checked)
    errors = [p for p in launched if isinstance(p, BaseException)]
    for leaf, proc in zip(leaves, launched):
        if not isinstance(proc, BaseException):
            leaf._started(cmd, proc)
    return errors
