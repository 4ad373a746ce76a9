"""A debugger held on one of our processes: gdb through its machine interface (MI), driven
asynchronously so that hundreds of them share one event loop.

What the TBON-FS slides' distributed debugger needs of each rank: stop and continue it, set a
breakpoint at a function, know when it is stopped there, read a variable, its stack while held.
gdb does all of it for C and anything with DWARF; its MI output is parsed by ``pygdbmi``'s
parser (a well-kept library), and the I/O is ours, on the loop, with a time limit per command.

gdb runs as the daemon's user on processes of other users' sessions, so it must not run
anything those users wrote: no init files (``-nx -nh``), no auto-loaded scripts from the
binaries' debug sections (``set auto-load off``), no debuginfod (no network), from ``/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

from pygdbmi.gdbmiparser import parse_response

from .stacks import Frame, StackError, ThreadStack

COMMAND_TIMEOUT = 30.0
MAX_LINE = 1 << 20


class DebuggerError(StackError):
    """gdb refused or failed: the sentence is gdb's own, with what we asked."""


MARKER = "Py_GetCopyright"  # the function the Python agent calls to be stopped (pydebug.py)
MAX_HELD = 128  # gdbs on one node at once (about 20 MB each): a bound no request can pass


class Debugger:
    """gdb attached to one process. States: running or stopped (``stopped_at`` says where)."""

    held = 0  # gdbs alive on this node

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc: asyncio.subprocess.Process | None = None
        self.stopped = False
        self.stopped_at = ""  # the function of the last stop ("" when running)
        self.reason = ""  # gdb's reason for the last stop (breakpoint-hit, signal-received…)
        # The Python agent's marker (exec/pydebug.py): its breakpoint's number, what says where
        # a stop there is (None: not a place, a request served), and whether we are there.
        self.marker_bp = ""
        self.on_marker: Callable[[], str | None] | None = None
        self.at_marker = False
        self.served = False
        self.runs = 0  # *running notifications read: cont() waits for its own
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.late: set[int] = set()  # commands given up on that gdb still runs
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._pidfd = -1
        self._closing: asyncio.Future[None] | None = None

    async def attach(self) -> None:
        gdb = shutil.which("gdb", path="/usr/bin:/bin:/usr/local/bin")
        if gdb is None:
            raise DebuggerError("gdb is not installed: apt install gdb")
        if Debugger.held >= MAX_HELD:
            raise DebuggerError(f"this node holds {MAX_HELD} processes under the debugger "
                                "already (the limit): detach some first")
        Debugger.held += 1
        try:
            self.proc = await asyncio.create_subprocess_exec(
                gdb, "--interpreter=mi3", "-nx", "-nh", "-q",
                "-iex", "set auto-load off", "-iex", "set debuginfod enabled off",
                "-iex", "set confirm off", "-iex", "set pagination off", "-iex", "set mi-async on",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, cwd="/", limit=MAX_LINE)
        except OSError:
            Debugger.held -= 1
            raise DebuggerError("cannot start gdb") from None
        self._reader = asyncio.create_task(self._read())
        try:
            await self.command(f"-target-attach {self.pid}")
        except DebuggerError:
            await self.close()
            raise
        self.stopped, self.reason = True, "attached"
        self._watch()

    def _watch(self) -> None:
        """When the process dies (killed while held, say), let it go at once: while gdb
        traces it, the kernel keeps its exit status for gdb, and its parent (the daemon) would
        never see it end."""
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._pidfd = -1
        loop = asyncio.get_running_loop()
        if self._pidfd >= 0:
            loop.add_reader(self._pidfd, self._target_gone)
        else:
            self._target_gone()

    def _target_gone(self) -> None:
        self._unwatch()
        self._closing = asyncio.ensure_future(self.close())

    def _unwatch(self) -> None:
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout
        try:
            while line := await out.readline():
                text = line.decode(errors="replace").rstrip("\n")
                if not text or text.startswith("(gdb)"):
                    continue
                rec = parse_response(text)
                if rec["type"] == "result" and rec["token"] in self._waiting:
                    fut = self._waiting.pop(rec["token"])
                    if not fut.done():
                        fut.set_result(rec)
                elif rec["type"] == "result" and rec["token"] in self.late:
                    self.late.discard(rec["token"])  # gdb is free again
                    self._changed.set()
                elif rec["type"] == "notify" and rec["message"] == "stopped":
                    self._stopped(rec["payload"] or {})
                elif rec["type"] == "notify" and rec["message"] == "running":
                    self.runs += 1
                    self.stopped, self.stopped_at, self.reason = False, "", ""
                    self.at_marker = self.served = False
                    self._changed.set()
        except (ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(DebuggerError(f"gdb on process {self.pid} exited"))
            self._waiting.clear()
            self._changed.set()

    def _stopped(self, payload: dict[str, Any]) -> None:
        self.stopped = True
        self.stopped_at = (payload.get("frame") or {}).get("func", "")
        self.reason = payload.get("reason", "")
        # At the marker: its breakpoint, or interrupted inside it (a stop right after a cont)
        self.at_marker = bool(self.marker_bp) and (
            (self.reason == "breakpoint-hit" and str(payload.get("bkptno", "")) == self.marker_bp)
            or self.stopped_at == MARKER)
        if self.at_marker and self.on_marker is not None:
            try:  # memory of a stopped process: read at once, no gdb command
                label = self.on_marker()
            except StackError:
                label = ""
            self.at_marker = label != ""
            self.served = label is None
            self.stopped_at = label or self.stopped_at
        self._changed.set()

    async def command(self, mi: str) -> dict[str, Any]:
        """One MI command; its result's payload, or DebuggerError with gdb's message."""
        if self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            raise DebuggerError(f"no debugger on process {self.pid}")
        if "\n" in mi:
            raise DebuggerError("one line per debugger command")
        async with self._lock:
            token = next(self._tokens)
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[token] = fut
            self.proc.stdin.write(f"{token}{mi}\n".encode())
            try:
                rec = await asyncio.wait_for(fut, COMMAND_TIMEOUT)
            except TimeoutError:
                self._waiting.pop(token, None)
                self.late.add(token)
                raise DebuggerError(f"gdb took over {COMMAND_TIMEOUT:g}s on: {mi}") from None
        if rec["message"] == "error":
            msg = (rec["payload"] or {}).get("msg", "error")
            if "extended state" in msg:  # (gdb 13 sizes it wrong where the CPU has AMX)
                msg += (" (this gdb cannot call a function in a process on this CPU, which a"
                        " Python rank's breakpoints and values need: install gdb 14 or later)")
            raise DebuggerError(f"process {self.pid}: {mi.split()[0].lstrip('-')}: {msg}")
        return rec["payload"] or {}

    @property
    def at_python_break(self) -> bool:
        """Stopped where a Python breakpoint was hit (the agent's marker, not a request's)."""
        return self.stopped and self.at_marker and not self.served

    async def wait_stopped(self, within: float) -> bool:
        """Until the process is stopped (True) or ``within`` seconds pass (False)."""
        return await self._until(lambda: self.stopped, within)

    async def _until(self, done: Callable[[], bool], within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not done():
            if self.proc is None or self.proc.returncode is not None:
                return False
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def stop(self) -> None:
        if not self.stopped:
            await self.command("-exec-interrupt")
            if not await self.wait_stopped(COMMAND_TIMEOUT):
                raise DebuggerError(f"process {self.pid} did not stop")

    async def cont(self) -> None:
        if self.stopped:
            self.stopped, self.stopped_at = False, ""
            runs = self.runs
            await self.command("-exec-continue")
            # gdb writes *running after its ^running: until that is read, a *stopped written
            # before it (the attach's, late) may still come and say stopped while the process
            # runs, and a stop() then would not interrupt it (seen once in CI)
            await self._until(lambda: self.runs > runs, COMMAND_TIMEOUT)

    async def break_at(self, where: str) -> str:
        """A breakpoint at a function (or FILE:LINE); its number."""
        if not where or any(c.isspace() for c in where) or where.startswith("-"):
            raise DebuggerError(f"break: {where!r} is not a function or FILE:LINE")
        payload = await self.command(f"-break-insert {where}")
        return str((payload.get("bkpt") or {}).get("number", ""))

    async def evaluate(self, expr: str) -> str:
        if not self.stopped:
            raise DebuggerError(f"process {self.pid} is running: stop it before reading it")
        quoted = expr.replace("\\", "\\\\").replace('"', '\\"')
        return str((await self.command(f'-data-evaluate-expression "{quoted}"')).get("value", ""))

    async def threads(self) -> list[ThreadStack]:
        """Every thread's stack while the process is held (eu-stack cannot attach then)."""
        if not self.stopped:
            raise DebuggerError(f"process {self.pid} is running: stop it to see its stack")
        info = await self.command("-thread-info")
        out = []
        for t in info.get("threads", []):
            got = await self.command(f"-stack-list-frames --thread {t['id']}")
            frames = [Frame(f.get("func") or "??", f.get("fullname") or f.get("file") or "",
                            int(f.get("line") or 0)) for f in got.get("stack", [])]
            lwp = re.search(r"(?:LWP|process) (\d+)", t.get("target-id", ""))
            out.append(ThreadStack(int(lwp.group(1)) if lwp else 0, t.get("name", ""),
                                   tuple(reversed(frames))))
        return out

    async def close(self) -> None:
        """Detach (the process goes on as it was: running if it ran) and end gdb."""
        self._unwatch()
        proc, self.proc = self.proc, None
        if proc is None:
            return
        Debugger.held -= 1
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.write(b"-target-detach\n-gdb-exit\n")
                await asyncio.wait_for(proc.wait(), 5)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
