"""Starting a session's processes: how a command line becomes an argv, and many children at once.

``exec CMD`` means what ``/bin/sh -c CMD`` means; a command of plain words that names a program is
run directly, sparing a shell per process (half the CPU of a short command), and a missing
program is reported when the ctl write happens rather than as an exit status 127 later. Children
are forked on the node's spawn threads in two batches, so the event loop keeps serving while a
few hundred processes start.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shlex
import shutil
from typing import TYPE_CHECKING

from ..exec.process import Process, spawn_many
from ..ninep.errors import NinepError

if TYPE_CHECKING:
    from .daemon import Node
    from .session import Session

SH_WORDS = set(""". : [ alias bg break cd command continue echo eval exec exit export false fg
getopts hash jobs kill local printf pwd read readonly return set shift test times trap true type
ulimit umask unalias unset wait if then else elif fi case esac for while until do done { } ! time
""".split())
SHELL_SYNTAX = set("$`\\\"'|&;<>(){}*?[]~#=!%\n")


def command_argv(cmd: str, path: str, direct: bool = True) -> list[str]:
    """How to run ``cmd`` exactly as ``/bin/sh -c`` would, failing early and with a sentence when
    a simple command names a program that does not exist.

    A simple command — plain words, no shell syntax, not a builtin — runs directly, sparing a
    shell per process (half the CPU of a short command); anything else goes through /bin/sh,
    whose exit status 127 then shows in ``status`` for what it could not find."""
    shell = ["/bin/sh", "-c", cmd]
    try:
        words = shlex.split(cmd, comments=True)
    except ValueError:
        return shell
    if not words:
        raise NinepError("exec: empty command; usage: exec CMD…")
    prog = words[0]
    if prog in SH_WORDS or "=" in prog or any(c in prog for c in "$`*?[~"):
        return shell
    if "/" in prog:
        if not os.access(prog, os.X_OK):
            raise NinepError(f"exec: {prog}: no such executable file", errno.ENOENT)
        found: str | None = prog
    else:
        found = shutil.which(prog, path=path)
        if found is None:
            raise NinepError(f"exec: {prog}: command not found (PATH={path})", errno.ENOENT)
    if not direct or any(c in SHELL_SYNTAX for c in cmd):
        return shell
    return [found, *words[1:]]


async def start_leaves(node: Node, leaves: list[Session], cmd: str, argv: list[str],
                       base_env: dict[str, str]) -> list[BaseException]:
    """One process per leaf: forked in two batches on the node's spawn threads (the forks overlap
    and the loop stays free), then attached here. Returns what failed to start."""
    for leaf in leaves:
        if leaf.state == "running":
            raise NinepError(f"exec: sub-session {leaf.path} is still running; kill it or wait first",
                             errno.EBUSY)
    jobs = []
    for leaf in leaves:
        if leaf.process is not None:  # a second exec: fresh pipes, the old output stays readable
            leaf._new_streams()
        env = {**base_env, **leaf.env, **leaf.rank_env()}
        jobs.append((argv, env, node.workdir))
    loop = asyncio.get_running_loop()
    half = (len(jobs) + 1) // 2
    batches = [b for b in (jobs[:half], jobs[half:]) if b]
    watchdog = node.get_watchdog()
    checked = argv[2:3] == ["brasil.exec.nsexec"]  # it reports whether the binds worked
    spawned = [p for batch in await asyncio.gather(
        *(loop.run_in_executor(node.spawner, spawn_many, b, watchdog, checked)
          for b in batches)) for p in batch]
    errors = [p for p in spawned if isinstance(p, BaseException)]
    started = [(leaf, Process(leaf.stdin, leaf.stdout.stream, leaf.stderr.stream, watchdog), popen)
               for leaf, popen in zip(leaves, spawned) if not isinstance(popen, BaseException)]
    await asyncio.gather(*(proc.attach(popen) for _, proc, popen in started))
    for leaf, proc, _ in started:
        leaf._started(cmd, proc)
    return errors
