"""Signal a recorded pid only while it is still the process we started.

``cluster down`` reads pids written by ``cluster up``, possibly long before: the daemon may have
died and its pid gone to someone else's process (or a file edited to name one). A pid is ours
when the process runs as our real uid and its command line holds the words we started it with,
including a path unique to it (its state directory). The check and the signals go through a
pidfd opened first, so a pid reused after the check can never receive them.
"""

from __future__ import annotations

import os
import select
import signal
import time


def _words_in(cmdline: list[str], words: list[str]) -> bool:
    n = len(words)
    return any(cmdline[i:i + n] == words for i in range(len(cmdline) - n + 1))


def _cmdline(pid: int, wait: float = 1.0) -> list[str]:
    """The process's arguments. A process just past exec shows none for a moment: wait for
    them a little (a kernel thread never has any)."""
    deadline = time.monotonic() + wait
    while True:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
        if raw or time.monotonic() > deadline:
            return [w.decode(errors="replace") for w in raw.split(b"\0")[:-1]]
        time.sleep(0.01)


def why_not_ours(pid: int, *words: list[str]) -> str:
    """"" when ``pid`` is a live process of our real uid whose command line holds each of
    ``words`` (each a run of consecutive arguments); else what it is instead."""
    if pid <= 0:
        return "no pid"
    try:
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        cmdline = _cmdline(pid)
    except (FileNotFoundError, ProcessLookupError):
        return "no such process"
    if status.get("State", "").split()[:1] == ["Z"]:
        return "no such process"
    uid = int(status["Uid"].split()[0])
    if uid != os.getuid():
        return f"it runs as uid {uid}"
    if not all(_words_in(cmdline, w) for w in words):
        shown = " ".join(cmdline)
        return f"it runs {shown[:120]!r}" if cmdline else "it is a kernel thread"
    return ""


def claim(pid: int, *words: list[str]) -> tuple[int | None, str]:
    """(a pidfd of ``pid``, "") if it is ours as :func:`why_not_ours` says, else (None, why)."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, ValueError, OSError):
        return None, "no such process"
    why = why_not_ours(pid, *words)
    if why:
        os.close(fd)
        return None, why
    return fd, ""


def _gone(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])  # a pidfd reads ready once its process ends


def stop(pidfds: list[int], grace: float = 10.0) -> None:
    """SIGTERM each claimed process, SIGKILL those still there after ``grace`` seconds; closes
    the pidfds."""
    try:
        for fd in pidfds:
            try:
                signal.pidfd_send_signal(fd, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while not all(map(_gone, pidfds)) and time.monotonic() < deadline:
            select.select([fd for fd in pidfds if not _gone(fd)], [], [],
                          max(0.0, min(0.5, deadline - time.monotonic())))
        for fd in pidfds:
            if not _gone(fd):
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    finally:
        for fd in pidfds:
            os.close(fd)
