"""A node's CPU per short command against the floor of the system calls it makes for one.

    .venv/bin/python bench/floor.py [--blocks 8] [--rounds 30] [--slots 32]

Figure 4 (2,048 ``date`` on a tree) is CPU-bound on this machine, and what the daemons spend per
command decides it. This runs, in one process and alternating block by block, rounds of
``--slots`` ``date``s two ways:

- **node**: a :class:`~brasil.node.daemon.Node` as ``brasil serve`` makes it, driven without 9P
  (a session, ``res``, ``exec date``, its merged stdout read to end of file, ``close``);
- **floor**: the same system calls with nothing around them: each command spawned and moved
  into its slot's cgroup on one spawn thread (``exec.spawn.spawn_batch`` where it is built, as
  a node does; else ``spawn`` and a move), then on the loop a
  pidfd and its two pipes on one epoll (``exec.fdwatch``), read to end of file, reaped, the slots'
  cgroups killed at the end as a session's close does.

and prints the process's CPU (schedstat of every thread) per command for each, and their ratio
per block: how much of a node's CPU per command is its own structure (processes, streams,
outputs, the merge, slots and sessions) rather than the kernel's work. Over 9P a leaf costs
about what the node costs here (its 9P is a few requests per session, not per command).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run with -I: no script dir
from brasil.exec.cgroups import Cgroup, CommandCgroups  # noqa: E402
from brasil.exec.fdwatch import fd_watcher  # noqa: E402
from brasil.exec.spawn import native, spawn, spawn_batch  # noqa: E402
from brasil.node.daemon import Node  # noqa: E402
from common import cpu_ns  # noqa: E402

DATE = "/usr/bin/date"


class Floor:
    """The system calls of a round of short commands, with the least Python around them."""

    def __init__(self, slots: int) -> None:
        self.cgroups = CommandCgroups.create()
        self.slots: list[Cgroup | None] = [
            self.cgroups.slot(i) if self.cgroups else None for i in range(slots)]
        self.spawner = ThreadPoolExecutor(1, thread_name_prefix="floor-spawn")
        self.env = dict(os.environ)

    def _spawn_all(self) -> list[Any]:
        if native is not None:  # as a node starts them: one call, each moving itself
            started = spawn_batch([([DATE], self.env, None, slot.procs if slot else None)
                                   for slot in self.slots])
            for p in started:
                if isinstance(p, Exception):
                    raise p
            return started
        out = []
        for slot in self.slots:
            p = spawn([DATE], self.env)
            if slot is not None:
                slot.add(p.pid)
            out.append(p)
        return out

    async def round(self) -> None:
        loop = asyncio.get_running_loop()
        procs = await loop.run_in_executor(self.spawner, self._spawn_all)
        watcher = fd_watcher(loop)
        done = loop.create_future()
        left = 3 * len(procs)
        lines = 0

        def finish() -> None:
            nonlocal left
            left -= 1
            if left == 0:
                done.set_result(None)

        def reader(fd: int, pipe: Any) -> Any:
            def ready() -> None:
                nonlocal lines
                data = os.read(fd, 65536)
                if data:
                    lines += data.count(b"\n")
                    return
                watcher.unwatch(fd)
                pipe.close()
                finish()
            return ready

        def reaper(pidfd: int, pid: int) -> Any:
            def ready() -> None:
                watcher.unwatch(pidfd)
                os.close(pidfd)
                os.waitpid(pid, 0)
                finish()
            return ready

        for p in procs:
            p.stdin.close()
            pidfd = p.pidfd if p.pidfd >= 0 else os.pidfd_open(p.pid)
            for pipe in (p.stdout, p.stderr):
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                watcher.watch(fd, reader(fd, pipe))
            watcher.watch(pidfd, reaper(pidfd, p.pid))
        await done
        for slot in self.slots:
            if slot is not None:
                slot.signal(9)
        if lines != len(procs):
            raise SystemExit(f"floor: {lines} lines of date, not {len(procs)}")

    def close(self) -> None:
        self.spawner.shutdown()
        if self.cgroups is not None:
            for slot in self.slots:
                if slot is not None:
                    os.rmdir(slot.path)
            os.rmdir(self.cgroups.path)


async def node_round(node: Node, slots: int) -> None:
    s = node.new_session()
    await s.reserve(slots)
    await s.exec(DATE)
    out = s.output(1, "read")
    lines = 0
    while True:
        r = out.stream.read(65536)
        data = r if isinstance(r, bytes) else await r
        if not data:
            break
        lines += data.count(b"\n")
    node.close_session(s)
    if lines != slots:
        raise SystemExit(f"node: {lines} lines of date, not {slots}")


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    node = Node("floor", args.slots)
    floor = Floor(args.slots)
    rounds = {"node": lambda: node_round(node, args.slots), "floor": floor.round}
    got: dict[str, list[float]] = {"node": [], "floor": []}
    me = [os.getpid()]
    try:
        for i in range(args.blocks + 1):  # the first block warms up
            for k in (("node", "floor") if i % 2 else ("floor", "node")):
                before = cpu_ns(me)
                for _ in range(args.rounds):
                    await rounds[k]()
                if i:
                    got[k].append((cpu_ns(me) - before) / 1000 / args.rounds / args.slots)
    finally:
        floor.close()
        await node.shutdown()
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=8, help="measured blocks of each (8)")
    ap.add_argument("--rounds", type=int, default=30, help="rounds per block (30)")
    ap.add_argument("--slots", type=int, default=32, help="commands per round (32)")
    args = ap.parse_args()
    got = asyncio.run(measure(args))
    ratios = sorted(n / f for n, f in zip(got["node"], got["floor"]) if f)
    print(f"CPU per short command ({DATE}), {args.blocks} blocks of {args.rounds} rounds of "
          f"{args.slots}, alternating:")
    print(f"  node  {statistics.median(got['node']):6.0f} µs   (a Node, driven without 9P)")
    print(f"  floor {statistics.median(got['floor']):6.0f} µs   (the same system calls alone)")
    print(f"  node/floor {statistics.median(ratios):.2f} (blocks {ratios[0]:.2f}–{ratios[-1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
