"""Where a process is: one stack per thread, from the unwinders that already do it well.

Native frames come from elfutils' ``eu-stack`` (function, and file:line where the binary has
debug information); a CPython process is read by ``py-spy dump --json``, which gives its Python
frames (function, file:line) with no cooperation from the process. Both attach with ptrace for
milliseconds and detach: ``eu-stack`` costs 7 ms a process without source lines and about 55 ms
with them, ``py-spy`` about 15 ms, where ``gdb -batch`` spends a third of a second loading
symbols (measured here; ARCHITECTURE.md says why these two).

Each unwinder runs as a child process with a time limit and a bound on what it may print, so a
process that cannot be unwound costs one error line, never the daemon. The caller names only
processes it started itself (a session's leaves: their pids stay theirs until reaped), so no pid
of anyone else's is ever reached through here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass

UNWIND_TIMEOUT = 20.0
MAX_OUTPUT = 4 << 20  # what one unwinder may print about one process


class StackError(Exception):
    """A process that could not be unwound: the sentence says why and what to do."""


class ProcessGone(StackError):
    """The process exited before or while it was unwound."""


@dataclass(frozen=True, slots=True)
class Frame:
    function: str  # "??" where neither symbols nor debug information name it
    file: str = ""
    line: int = 0
    python: bool = False

    def label(self, lines: bool = False) -> str:
        """How the frame is shown and merged: the function (a Python frame with its file's
        name), and its line only when asked, so ranks in one function but on different lines
        of it stay one class (STAT's default)."""
        where = os.path.basename(self.file) if self.file else ""
        if lines and where and self.line:
            where = f"{where}:{self.line}"
        if self.python:
            return f"{self.function} ({where})" if where else self.function
        return f"{self.function} at {where}" if lines and where else self.function


@dataclass(frozen=True, slots=True)
class ThreadStack:
    tid: int
    name: str
    frames: tuple[Frame, ...]  # outermost first (main, then what it called…)


def _tool(name: str) -> str | None:
    """The unwinder installed beside our interpreter (py-spy is a pip package), else the
    system's: never one found through a directory the caller's environment names."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(here, os.X_OK):
        return here
    return shutil.which(name, path="/usr/bin:/bin:/usr/local/bin")


def is_cpython(pid: int) -> bool:
    """A CPython process: its executable is a python, or it maps libpython."""
    try:
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except FileNotFoundError:
        raise ProcessGone(f"process {pid} is gone") from None
    except OSError:
        exe = ""
    if re.fullmatch(r"python[0-9.]*", exe):
        return True
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            return b"/libpython" in f.read(MAX_OUTPUT)
    except FileNotFoundError:
        raise ProcessGone(f"process {pid} is gone") from None
    except OSError:
        return False


_EU_FRAME = re.compile(r"#\d+\s+0x[0-9a-f]+(?:\s+(?P<fn>(?!- )\S.*?))?(?:\s+-\s+(?P<mod>\S+))?$")
_EU_SOURCE = re.compile(r"\s+(?P<file>\S+?):(?P<line>\d+)(?::\d+)?$")


def parse_eu_stack(text: str) -> list[ThreadStack]:
    """``eu-stack -s -m`` output → threads, outermost frame first."""
    threads: list[ThreadStack] = []
    tid = 0
    frames: list[Frame] = []

    def done() -> None:
        if tid:
            threads.append(ThreadStack(tid, "", tuple(reversed(frames))))

    for raw in text.splitlines():
        if raw.startswith("TID "):
            done()
            tid, frames = int(raw[4:].rstrip(":")), []
        elif raw.startswith("#"):
            m = _EU_FRAME.match(raw)
            if m:
                fn = (m.group("fn") or "").split("@", 1)[0]  # clock_nanosleep@GLIBC_2.2.5
                if not fn:  # no symbol: which binary it is in says something still
                    fn = f"?? in {os.path.basename(m.group('mod') or '') or 'unknown'}"
                frames.append(Frame(fn))
        elif frames:
            m = _EU_SOURCE.match(raw)
            if m:
                frames[-1] = Frame(frames[-1].function, m.group("file"), int(m.group("line")))
    done()
    return threads


AGENT_FILE = "<brasil agent>"  # the Python debugger's own frames (exec/pyagent.py): not shown


def parse_py_spy(text: str) -> list[ThreadStack]:
    """``py-spy dump --json`` output → threads, outermost frame first."""
    threads = []
    for t in json.loads(text):
        frames = tuple(Frame(f.get("name") or "??", f.get("filename") or "",
                             int(f.get("line") or 0), python=True)
                       for f in reversed(t.get("frames") or [])
                       if f.get("filename") not in (AGENT_FILE, "<brasil eval>"))
        threads.append(ThreadStack(int(t.get("os_thread_id") or t.get("thread_id") or 0),
                                   t.get("thread_name") or "", frames))
    return threads


def _check_alive(pid: int) -> None:
    """/proc answers from memory: no need to leave the loop for it."""
    if not os.path.exists(f"/proc/{pid}"):
        raise ProcessGone(f"process {pid} is gone")


async def _run(argv: list[str], pid: int, partial_ok: bool = False) -> str:
    """The unwinder's output. ``partial_ok``: eu-stack fails a thread it could not unwind to
    its end (a process still in the dynamic loader, a frame without unwind tables) after
    printing the frames it found; those are still where the process is."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd="/", limit=MAX_OUTPUT)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), UNWIND_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise StackError(f"{os.path.basename(argv[0])} took over {UNWIND_TIMEOUT:g}s on process "
                         f"{pid}") from None
    _check_alive(pid)
    if proc.returncode != 0 and not (partial_ok and b"\n#0 " in out):
        msg = err.decode(errors="replace").strip().splitlines()
        why = msg[-1] if msg else f"exit status {proc.returncode}"
        if "ptrace" in why.lower() or "permission" in why.lower() or "not permitted" in why:
            why += (" (the kernel refused to let us trace it: another debugger may hold it, or "
                    "/proc/sys/kernel/yama/ptrace_scope is 3; see docs/reference.md)")
        raise StackError(f"cannot unwind process {pid}: {why}")
    return out[:MAX_OUTPUT].decode(errors="replace")


async def capture(pid: int, python: bool | None = None, lines: bool = True,
                  held: bool = False) -> list[ThreadStack]:
    """Every thread's stack of ``pid``. ``python`` None: Python frames when it is CPython.
    ``lines``: native frames' file:line too (eu-stack then reads the DWARF: 55 ms against 7 ms
    a process here; a merged tree keyed by function does without). ``held``: our debugger
    holds it stopped, so py-spy reads its memory without attaching (it could not)."""
    _check_alive(pid)
    if python is None:
        python = is_cpython(pid)
    if python:
        tool = _tool("py-spy")
        if tool is None:
            raise StackError("py-spy is not installed: pip install py-spy (a dependency of brasil)")
        argv = [tool, "dump", "--json", *(["--nonblocking"] if held else []), "--pid", str(pid)]
        return parse_py_spy(await _run(argv, pid))
    tool = _tool("eu-stack")
    if tool is None:
        raise StackError("eu-stack is not installed: apt install elfutils")
    argv = [tool, *(["-s"] if lines else []), "-m", "-p", str(pid)]
    return parse_eu_stack(await _run(argv, pid, partial_ok=True))
