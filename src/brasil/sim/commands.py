"""Simulated commands: a duration and an output in place of a process, behind the node's Launcher.

10,000 real ``date`` processes are not what the simulator measures; the infrastructure around
them is. So a simulated node's launcher (``exec/process.py``'s seam) starts a
:class:`SimProcess`: the same object a leaf holds for a real command (a :class:`Process`), whose
output is written into the same bounded streams, waiting when they are full as a real command
blocks in write(2), and whose end is reported by the same code. A few command lines are
understood (``sleep S``, ``echo WORDS``, ``true``, ``false``, ``date``); anything else behaves
as the :class:`Behaviour`'s default draws: a duration and an output size from distributions.

What a fork costs is the spawn threads' time, not the loop's: a launch waits ``spawn`` seconds
per command (the real launcher forks in two batches at once, so half of them in turn). A command
and a fork take their time on a core of their own, or, when the simulated machine has a few
cores that everything shares (``Driver(cores=…)``, what a tree on one machine has), on those.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import shlex
import signal
import time
from dataclasses import dataclass, field

from ..exec.process import Job, Pipes, Process
from ..ninep.stream import Stream
from .clock import SimLoop

_pids = itertools.count(100000)


@dataclass
class Behaviour:
    """How simulated commands behave: ``duration`` (s) and ``output`` (bytes) of an unknown
    command are drawn from a log-normal around the given medians (sigma 0 makes them exact);
    ``spawn``: a fork's cost, paid in turn by each half of a launch."""

    duration: float = 0.001
    output: int = 29  # `date`'s line
    sigma: float = 0.0
    spawn: float = 0.0005
    rng: random.Random = field(default_factory=lambda: random.Random(22))

    def draw(self, median: float) -> float:
        return median * self.rng.lognormvariate(0.0, self.sigma) if self.sigma else median

    def plan(self, argv: list[str]) -> tuple[float, bytes, int]:
        """What a command line does: seconds, stdout, exit status."""
        words = argv[2:] if argv[:2] == ["/bin/sh", "-c"] else argv
        if len(words) == 1 and " " in words[0]:  # a line for the shell: its words will do
            try:
                words = shlex.split(words[0])
            except ValueError:
                words = words[0].split()
        prog = words[0].rsplit("/", 1)[-1] if words else ""
        if prog == "sleep" and len(words) == 2:
            try:
                return float(words[1]), b"", 0
            except ValueError:
                return 0.0, b"", 1
        if prog == "echo":
            return self.draw(self.duration), (" ".join(words[1:]) + "\n").encode(), 0
        if prog in ("true", "false"):
            return self.draw(self.duration), b"", int(prog == "false")
        if prog == "date":
            line = time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(0)) + "\n"
            return self.draw(self.duration), line.encode(), 0
        size = max(0, round(self.draw(self.output)))
        return self.draw(self.duration), (b"x" * max(0, size - 1) + b"\n") if size else b"", 0


async def cpu(seconds: float) -> None:
    """Take ``seconds`` of CPU outside the loop (a command running, a fork): on a core of its
    own, or one of the machine's shared ones (``Driver(cores=…)``)."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, SimLoop) and seconds > 0:
        seconds = loop.driver.core_time(loop, seconds) - loop.time()
    await asyncio.sleep(seconds)


class SimProcess(Process):
    """A command that is not there: it waits its duration, writes its output, and ends."""

    def __init__(self, stdin: Stream, stdout: Stream, stderr: Stream) -> None:
        super().__init__(stdin, stdout, stderr)
        self.pid = next(_pids)
        self._body: asyncio.Task[None] | None = None

    def simulate(self, seconds: float, output: bytes, status: int) -> None:
        self._body = asyncio.ensure_future(self._run(seconds, output, status))
        self.stdin.when_ready(self._input_seen)

    def _input_seen(self) -> None:
        """Its input is never read; it counts as read whole only if it was empty (Process's
        rule for a child that got end of file)."""
        if self.stdin.broken or (self.stdin.eof and not len(self.stdin)):
            self._input_done = True

    async def _run(self, seconds: float, output: bytes, status: int) -> None:
        await cpu(seconds)
        for i in range(0, len(output), 65536):
            if self.stdout.broken:
                break
            wrote = self.stdout.write(output[i:i + 65536])
            if not isinstance(wrote, int):
                await wrote
        self._close_pipes()
        self._ended(status)

    def _close_pipes(self) -> None:
        self.stdout.close()
        self.stderr.close()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if not self.running:
            return
        if self._body is not None:
            self._body.cancel()
        self._close_pipes()
        self._ended(-sig)


class SimLauncher:
    """A simulated node's Launcher: no fork, no watchdog, no cgroup. It is also the node's
    machine (``Node(machine=…)``): 16 GiB, and a load of the commands it runs now, so each
    node's load is its own, not the real machine's shared by all."""

    MEMORY = 16 << 30

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.launched = 0
        self.running: set[SimProcess] = set()

    def _ended(self, proc: SimProcess, status: int) -> None:
        self.running.discard(proc)

    def machine(self) -> tuple[int, int, float]:
        return self.MEMORY, self.MEMORY // 2, float(len(self.running))

    async def launch(self, jobs: list[Job], pipes: list[Pipes],
                     setup_check: bool = False) -> list[Process | BaseException]:
        half = (len(jobs) + 1) // 2  # (two batches forked at once, as ForkLauncher does)
        await asyncio.gather(cpu(self.behaviour.spawn * half),
                             cpu(self.behaviour.spawn * (len(jobs) - half)))
        out: list[Process | BaseException] = []
        for (argv, _env, _cwd, _slot), (stdin, stdout, stderr) in zip(jobs, pipes):
            proc = SimProcess(stdin, stdout, stderr)
            proc.simulate(*self.behaviour.plan(argv))
            self.running.add(proc)
            proc.on_exit(functools.partial(self._ended, proc))
            out.append(proc)
        self.launched += len(out)
        return out
