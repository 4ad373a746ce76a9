"""Python breakpoints and values in a CPython rank held by gdb (exec/debugger.py).

gdb alone knows C: it cannot stop at a line of a ``.py`` file nor read a local of a Python
frame. The rank's own interpreter can, so we place a small agent in it (exec/pyagent.py;
pyrasite's technique, made safe): gdb maps a mailbox into the rank (``mmap``, a system call
that takes no lock), the daemon writes the agent's source, a fixed snippet and each request
there through /proc/PID/mem, and gdb runs the snippet with ``PyRun_SimpleString(address)``.
gdb's commands carry only numbers and our own function names: a user's expression or
breakpoint never reaches gdb's parser, so none can become a gdb command or a shell.

Python code may run only where the interpreter is consistent:
- at the agent's marker (a breakpoint hit: Python code called into C through ctypes),
- or where the main thread does not hold the GIL (blocked in a system call, as a hung rank
  mostly is): ``PyGILState_Ensure`` takes it as any C thread would;
- otherwise the main thread is inside the interpreter, perhaps halfway through an allocation:
  the snippet is queued with ``Py_AddPendingCall`` (run by the interpreter at its next safe
  point), the rank continued, and the agent calls the marker when done.
The agent stops the rank by calling ``Py_GetCopyright`` (never called by a running program)
with the mailbox's flag set; gdb's breakpoint there, conditional on the flag, is an ordinary
stop to gdb, so stopped/running stays gdb's exact word. A hit's label (``f (file.py:12)``)
is read from the mailbox as the stop is seen.

Bounds: an expression of at most ``MAX_EXPR`` bytes; its value shown by ``reprlib`` in at most
16 KiB; cut short after ``EVAL_SECONDS``, Python code by a trace function and a blocking call
by SIGALRM (a loop in C code is not: gdb's command limit then gives up on the rank, said so).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import struct
from pathlib import Path
from typing import Any

from . import debugger, procinfo
from .debugger import MARKER, Debugger, DebuggerError

SIZE = 1 << 16  # the mailbox: one anonymous mapping in the rank
SNIPPET, REQUEST, LABEL, ANSWER, SOURCE = 64, 1024, 9216, 10240, 32768
MAX_REQUEST, MAX_LABEL, MAX_ANSWER = 8192, 1024, 16384
HIT, SERVED = 1, 2
MAX_EXPR = 4096
MAX_WHERE = 512
MAX_BREAKS = 64  # Python breakpoints in one rank: each is checked at every call there
EVAL_SECONDS = 10.0
PENDING_WAIT = 20.0  # for the interpreter to reach a safe point when the main thread is busy
AGENT = Path(__file__).with_name("pyagent.py")

_FUNC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_<]\w*>?)*")
_LINE = re.compile(r"[^\x00-\x1f]+\.py:\d+")


def python_where(where: str, cpython: bool) -> str | None:
    """``break`` WHERE for Python, or None for C: ``py:`` says Python, ``FILE.py:LINE`` is
    Python on a CPython rank (no C file ends in .py); anything else is gdb's."""
    if where.startswith("py:"):
        return where[3:]
    if cpython and _LINE.fullmatch(where):
        return where
    return None


def check_where(where: str) -> None:
    if len(where) > MAX_WHERE or not (_LINE.fullmatch(where) or _FUNC.fullmatch(where)):
        raise DebuggerError(f"break: {where[:80]!r} is neither FILE.py:LINE nor a Python "
                            "function (module.function, Class.method or function)")


class PyDebug:
    """The agent in one rank, through the rank's gdb."""

    def __init__(self, d: Debugger) -> None:
        self.d = d
        self.base = 0
        self.breaks: list[str] = []
        self._ids = itertools.count(1)
        self._main = ""  # gdb's number for the main thread
        self._owed: int | None = None  # a GIL state to release once a late expression ends

    async def _value(self, expr: str) -> str:
        """One expression of ours (numbers and CPython's function names only)."""
        return str((await self.d.command(f'-data-evaluate-expression "{expr}"')).get("value", ""))

    async def _int(self, expr: str) -> int:
        got = await self._value(expr)
        try:
            return int(got)
        except ValueError:
            raise DebuggerError(f"process {self.d.pid}: {expr.split('(', 2)[1]}: gdb answered "
                                f"{got[:80]!r}, not a number (is this CPython?)") from None

    async def _setup(self) -> None:
        if self.base:
            return
        d = self.d
        base = await self._int(f"(long)mmap(0, {SIZE}, 3, 34, -1, 0)")  # RW, anonymous, private
        if base in (-1, 0):
            raise DebuggerError(f"process {d.pid}: no memory could be mapped for the agent")
        source = AGENT.read_bytes()
        if len(source) > SIZE - SOURCE:
            raise DebuggerError("the Python agent is larger than its mailbox")
        snippet = (f"exec(compile(__import__('ctypes').string_at({base + SOURCE}, {len(source)}),"
                   f" '<brasil agent>', 'exec'), {{'__builtins__': __builtins__, "
                   f"'BASE': {base}}})").encode() + b"\0"
        procinfo.write_mem(d.pid, base + SOURCE, source)
        procinfo.write_mem(d.pid, base + SNIPPET, snippet)
        info = await d.command("-thread-info")
        self._main = next((t["id"] for t in info.get("threads", [])
                           if re.search(rf"\b(LWP|process) {d.pid}\b", t.get("target-id", ""))),
                          "1")
        got = await d.command(f"-break-insert -c \"*(int*){base} != 0\" {MARKER}")
        d.marker_bp = str((got.get("bkpt") or {}).get("number", ""))
        d.on_marker = self._stopped_at
        self.base = base

    def _stopped_at(self) -> str | None:
        """At the marker: a hit's label, None (a request served: not a place to report), or
        "" (someone else's call of the function: not ours)."""
        flag, = struct.unpack("<i", procinfo.read_mem(self.d.pid, self.base, 4))
        if flag not in (HIT, SERVED):
            return ""
        if flag != HIT:
            return None
        n, = struct.unpack("<i", procinfo.read_mem(self.d.pid, self.base + 20, 4))
        return procinfo.read_mem(self.d.pid, self.base + LABEL, max(0, min(n, MAX_LABEL))
                                 ).decode(errors="replace")

    async def request(self, op: str, **args: Any) -> str:
        """One request to the agent; its answer, or DebuggerError with the Python error."""
        d = self.d
        await self._settle()
        if not d.stopped:
            raise DebuggerError(f"process {d.pid} is running: stop it first")
        await self._setup()
        req = {"id": next(self._ids), "op": op, **args}
        if not d.at_marker:
            await d.command(f"-thread-select {self._main}")
            await self._initialized()
            if await self._int("(int)PyGILState_Check()"):
                await self._pending(req)
                return self._answer()
        self._write(req)
        await self._run()
        return self._answer()

    async def _initialized(self) -> None:
        """A rank just started may still be setting its interpreter up (no pending calls, no
        thread state yet), or a rank stopped just after a request of ours may still be
        inside it (a queued call within a queued call would never run: CPython runs them
        one at a time): let it run on a little, until it is ready or the time is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PENDING_WAIT
        while not await self._int("(int)Py_IsInitialized()") or (
                self.base and procinfo.read_mem(self.d.pid, self.base + 24, 4) != bytes(4)) or (
                await self._in_pending_calls()):
            if loop.time() > deadline:
                raise DebuggerError(f"process {self.d.pid}: its Python did not finish starting "
                                    f"within {PENDING_WAIT:g}s")
            await self.d.cont()
            await asyncio.sleep(0.05)  # the rank's own pace: no event to wait for
            await self.d.stop()
            await self.d.command(f"-thread-select {self._main}")

    async def _in_pending_calls(self) -> bool:
        """Whether the main thread is stopped inside the interpreter's running of queued calls
        (ours, just served, on its way out). A call queued there runs inside the same loop with
        the interpreter's "calls to do" signal left set, and under the agent's trace function
        CPython 3.11 then re-enters the eval breaker at the expression's first instruction for
        ever (found by tests/test_stacks.py: read, cont, stop, read hung within 15 cycles)."""
        got = await self.d.command(f"-stack-list-frames --thread {self._main}")
        return any(f.get("func") == "make_pending_calls" for f in got.get("stack", []))

    async def _settle(self) -> None:
        """After an expression that outran gdb's command limit: refuse while it still runs
        (no second call may start), and once it has ended give back the GIL it took."""
        if self.d.late:
            raise DebuggerError(f"process {self.d.pid} still runs an earlier expression (over "
                                f"{debugger.COMMAND_TIMEOUT:g}s: a loop in C code?): ask again later; "
                                "detaching before it ends would crash it")
        if self._owed is not None:
            state, self._owed = self._owed, None
            await self._value(f"(void)PyGILState_Release({state})")

    async def _run(self) -> None:
        """The snippet, on the selected thread, at a safe point (see the module's note)."""
        state = await self._int("(int)PyGILState_Ensure()")
        try:
            rc = await self._value(f"(int)PyRun_SimpleString((char*){self.base + SNIPPET})")
        except DebuggerError:
            if self.d.late:  # still running in the rank: the GIL is given back when it ends
                self._owed = state
                raise DebuggerError(f"process {self.d.pid}: the expression still runs after "
                                    f"{debugger.COMMAND_TIMEOUT:g}s (a loop in C code?); the rank stays "
                                    "held until it ends") from None
            await self._value(f"(void)PyGILState_Release({state})")
            raise
        await self._value(f"(void)PyGILState_Release({state})")
        if rc != "0":
            raise DebuggerError(f"process {self.d.pid}: the Python agent failed (its error "
                                "went to the program's stderr)")

    def _write(self, req: dict[str, Any]) -> None:
        raw = json.dumps(req, ensure_ascii=False).encode()
        if len(raw) > MAX_REQUEST:
            raise DebuggerError(f"a request of {len(raw)} bytes (the limit is {MAX_REQUEST})")
        procinfo.write_mem(self.d.pid, self.base + REQUEST, raw)
        procinfo.write_mem(self.d.pid, self.base + 8, struct.pack("<i", len(raw)))

    async def _pending(self, req: dict[str, Any]) -> None:
        """The main thread holds the GIL, maybe halfway through something: the interpreter
        runs the snippet at its next safe point and the agent stops the rank there."""
        d = self.d
        self._write({**req, "notify": True})
        ok = await self._value(f"(int)Py_AddPendingCall((void*)PyRun_SimpleString, "
                               f"(void*){self.base + SNIPPET})")
        if ok != "0":
            raise DebuggerError(f"process {d.pid}: the interpreter's queue of calls is full")
        was = d.stopped_at, d.reason
        await d.cont()
        if not await d.wait_stopped(PENDING_WAIT):
            await d.stop()
            self._write({"id": req["id"], "op": "none"})  # the queued call will do nothing
            raise DebuggerError(f"process {d.pid}: Python did not reach a safe point within "
                                f"{PENDING_WAIT:g}s (busy in C code that holds the GIL?)")
        if d.served:
            d.stopped_at, d.reason = was
            return
        if d.at_marker:  # a breakpoint's hit came first: a safe point as good
            self._write(req)
            await self._run()
            return
        raise DebuggerError(f"process {d.pid} stopped at {d.stopped_at or d.reason} before "
                            "Python could run: try again")

    def _answer(self) -> str:
        head = procinfo.read_mem(self.d.pid, self.base + 12, 8)
        n, status = struct.unpack("<ii", head)
        text = procinfo.read_mem(self.d.pid, self.base + ANSWER, max(0, min(n, MAX_ANSWER))
                                 ).decode(errors="replace")
        if status:
            raise DebuggerError(text)
        return text

    async def break_at(self, where: str) -> None:
        check_where(where)
        if len(self.breaks) >= MAX_BREAKS:
            raise DebuggerError(f"break: {MAX_BREAKS} Python breakpoints already (the limit): "
                                "detach to clear them")
        await self.request("break", where=where)
        self.breaks.append(where)

    async def evaluate(self, expr: str) -> str:
        if not expr or len(expr.encode()) > MAX_EXPR:
            raise DebuggerError(f"eval: give a Python expression of 1 to {MAX_EXPR} bytes")
        return await self.request("eval", expr=expr, limit=EVAL_SECONDS)

    async def clear(self) -> None:
        """Before gdb lets go: no trace function left behind, the mailbox unmapped."""
        if not self.base:
            return
        await self._settle()
        if self.breaks:
            await self.d.stop()
            await self.request("clear")
            self.breaks.clear()
        if self.d.at_marker:
            return  # the agent's frames still run above the marker: the mapping stays
        await self._value(f"(int)munmap({self.base}, {SIZE})")
        self.base = 0
