"""A pipeline of commands joined by OS pipes, that says which command broke it.

``/bin/sh -c 'a | b | c'`` reports only ``c``'s status: a failure of ``a`` is invisible, and
``set -o pipefail`` would report the SIGPIPE of a ``yes`` feeding ``head`` as one. PUSH wants to
name the command that failed, on this machine and on every node, so both use :func:`fault`, and
a node runs a multi-command stage through ``python -m brasil.exec.chain CMD…``: each command in
its own process, the pipes between them watched, and when one breaks the pipeline a line
``brasil-chain: command K `CMD`: WHY`` on stderr, and its status as ours.

A command breaks the pipeline when it cannot start (126, 127), is killed by a signal (but
SIGPIPE after its reader ended, which is how a shell pipe stops a producer), or exits non-zero
with input it never read (it quit early). A non-zero exit after reading everything is the
command's answer (``grep`` found nothing), not a failure; the last command's status is ours.

The pipeline's source, its first command (``--source``: the first command of PUSH's first stage),
reads the shell's own input, which it need not read at all: whether any was left is a race, so
for it any non-zero exit breaks the pipeline, as ``set -o pipefail`` would say. That makes the
verdict the same every time, here and on one machine.
"""

from __future__ import annotations

import array
import fcntl
import os
import signal
import subprocess
import sys
import termios

MARK = "brasil-chain:"


def describe_status(status: int) -> str:
    if status > 128 and status - 128 < signal.NSIG:
        try:
            return f"killed by {signal.Signals(status - 128).name}"
        except ValueError:
            pass
    return f"exit status {status}"


def fault(status: int, reader_gone: bool, unread_input: bool, source: bool = False) -> str:
    """Why a command's end breaks its pipeline ("" if it does not). ``source``: the pipeline's
    first command, for which any non-zero exit is a failure (see above)."""
    if status == 0:
        return ""
    if status in (126, 127):
        return f"cannot start ({describe_status(status)})"
    if reader_gone and status == 128 + signal.SIGPIPE:
        return ""
    if status > 128:
        return describe_status(status)
    if source:
        return describe_status(status)
    if unread_input:
        return f"{describe_status(status)} before the end of its input"
    return ""


def unread(fd: int) -> int:
    """Bytes waiting in a pipe (FIONREAD)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return 0
    return buf[0]


def status_of(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def run(commands: list[str], source: bool = False) -> int:
    procs: list[subprocess.Popen[bytes]] = []
    peeks: list[int] = [-1]  # our copy of each command's stdin read end (not the first's)
    fd_in = 0
    for i, cmd in enumerate(commands):
        last = i == len(commands) - 1
        r, w = (-1, -1) if last else os.pipe()
        procs.append(subprocess.Popen(["/bin/sh", "-c", cmd], stdin=fd_in,
                                      stdout=1 if last else w, process_group=0))
        if fd_in:
            peeks.append(fd_in)  # kept open: we look at what is left in it when it ends
        if not last:
            os.close(w)
        fd_in = r
    ended: dict[int, int] = {}
    broke: tuple[int, str] | None = None
    while len(ended) < len(procs):
        pid, raw = os.wait()
        i = next((k for k, p in enumerate(procs) if p.pid == pid), -1)
        if i < 0:
            continue
        status = status_of(os.waitstatus_to_exitcode(raw))
        ended[i] = status
        left = unread(peeks[i]) if i < len(peeks) and peeks[i] >= 0 else 0
        if i < len(peeks) and peeks[i] >= 0:
            os.close(peeks[i])  # the writer before it now gets EPIPE, as with a shell pipe
            peeks[i] = -1
        last = i == len(procs) - 1
        reader_gone = not last and (i + 1) in ended
        if not last and not reader_gone and status == 128 + signal.SIGPIPE:
            reader_gone = True  # its reader closed its input without exiting: the same
        why = fault(status, reader_gone, left > 0, source=source and i == 0)
        if why and broke is None and not last:
            broke = (i, why)
            for p in procs:
                if p.pid not in (q.pid for k, q in enumerate(procs) if k in ended):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
    if broke is not None:
        i, why = broke
        print(f"{MARK} command {i + 1} `{commands[i]}`: {why}", file=sys.stderr, flush=True)
        return ended[i] or 1
    return ended[len(procs) - 1]


if __name__ == "__main__":
    args = sys.argv[1:]
    is_source = args[:1] == ["--source"]
    sys.exit(run(args[is_source:], source=is_source))
