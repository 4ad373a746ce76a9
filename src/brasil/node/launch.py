"""Starting a session's processes, many children at once.

``exec CMD`` means what ``/bin/sh -c CMD`` means (``exec/command.py`` says how it becomes an
argv). Children are forked on the node's spawn threads in two batches, so the event loop keeps
serving while a few hundred processes start.
"""

from __future__ import annotations

import asyncio
import errno
from typing import TYPE_CHECKING

from ..exec.process import Process, spawn_many
from ..exec.pychild import runs_module
from ..ninep.errors import NinepError

if TYPE_CHECKING:
    from .daemon import Node
    from .session import Session

async def start_leaves(node: Node, leaves: list[Session], cmd: str, argv: list[str],
                       base_env: dict[str, str]) -> list[BaseException]:
    """One process per leaf: forked in two batches on the node's spawn threads (the forks overlap
    and the loop stays free), then attached here. Returns what failed to start."""
    for leaf in leaves:
        if leaf.slot_state == "running" or (leaf.slot_state == "waiting" and not leaf.starting):
            raise NinepError(f"exec: sub-session {leaf.path} is still running; kill it or wait first",
                             errno.EBUSY)
    lazy = [leaf for leaf in leaves if leaf.top.lazy and not leaf.starting]
    if lazy:
        for leaf in lazy:
            if leaf.process is not None:
                leaf._new_streams()
            leaf.defer(cmd, argv, base_env)
        leaves = [leaf for leaf in leaves if leaf not in lazy]
        if not leaves:
            return []
    jobs = []
    for leaf in leaves:
        if leaf.process is not None and not leaf.starting:  # a second exec: fresh pipes
            leaf._new_streams()
        env = {**base_env, **leaf.env, **leaf.rank_env()}
        jobs.append((argv, env, leaf.effective_dir() or node.workdir, leaf.slot))
    loop = asyncio.get_running_loop()
    half = (len(jobs) + 1) // 2
    batches = [b for b in (jobs[:half], jobs[half:]) if b]
    watchdog = node.get_watchdog()
    checked = runs_module(argv, "brasil.exec.nsexec")  # it reports whether the binds worked
    spawned = [p for batch in await asyncio.gather(
        *(loop.run_in_executor(node.spawner, spawn_many, b, watchdog, checked)
          for b in batches)) for p in batch]
    moved = watchdog.cgroups.moved() if watchdog.cgroups is not None else None
    if moved is not None:  # each in its cgroup before its exit is watched (before any reap)
        await asyncio.wrap_future(moved)
    errors = [p for p in spawned if isinstance(p, BaseException)]
    started = [(leaf, Process(leaf.stdin, leaf.stdout.stream, leaf.stderr.stream, watchdog), popen)
               for leaf, popen in zip(leaves, spawned) if not isinstance(popen, BaseException)]
    for _, proc, popen in started:
        proc.attach(popen)
    for leaf, proc, _ in started:
        leaf._started(cmd, proc)
    return errors
