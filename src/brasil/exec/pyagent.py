"""The agent placed inside a CPython rank for Python breakpoints and values (exec/pydebug.py).

This file is not imported by brasil: its source is written into the rank's memory (the
mailbox, an anonymous mapping gdb made there) and run by the rank's own interpreter, as the
rank's user, through ``PyRun_SimpleString`` at a point where that is safe. It must therefore
run on the rank's Python (3.8 or later), use the standard library only, and bind no name in
the program's ``__main__``: it lives in ``sys.modules[NAME]``.

Requests and answers cross the mailbox as bytes the daemon writes and reads through
/proc/PID/mem while gdb holds the rank stopped, never as text gdb parses: no expression can
become a debugger command. A hit of a Python breakpoint calls ``Py_GetCopyright`` through
ctypes with the mailbox's flag set; gdb's breakpoint there, conditional on that flag, is what
stops the rank, so gdb's own stop bookkeeping says exactly when a rank is stopped at one.
"""

import ctypes
import json
import os
import reprlib
import signal
import sys
import threading
import time

NAME = "_brasil_pydebug"
FLAG, REQ_LEN, ANS_LEN, ANS_STATUS, LABEL_LEN, SERVING = 0, 8, 12, 16, 20, 24  # int32 fields
REQUEST, LABEL, ANSWER = 1024, 9216, 10240  # areas
LIMITS = {"request": 8192, "label": 1024, "answer": 16384}
HIT, SERVED = 1, 2  # FLAG while the marker is called: a breakpoint's hit, a request served


def _i32(addr):
    return ctypes.c_int32.from_address(addr)


class Breakpoint:
    """``FILE.py:LINE`` (a line of a file, matched by its path's end) or a dotted function
    name (``module.Class.method``, matched against the end of module + qualified name)."""

    def __init__(self, where):
        self.where = where
        file, _, line = where.rpartition(":")
        if file and line.isdigit():
            self.file, self.line, self.func = file, int(line), ""
        else:
            self.file, self.line, self.func = "", 0, where

    def file_matches(self, filename):
        return filename == self.file or filename.endswith("/" + self.file)

    def func_matches(self, frame):
        code = frame.f_code
        qual = getattr(code, "co_qualname", code.co_name)
        stem = os.path.splitext(os.path.basename(code.co_filename))[0]
        for module in (frame.f_globals.get("__name__") or "", stem):
            full = module + "." + qual
            if full == self.func or full.endswith("." + self.func):
                return True
        return False


class Agent:
    def __init__(self, base):
        self.base = base
        self.breaks = []  # Breakpoint objects
        self.frame = None  # the frame stopped at (a hit), where values are read
        self.busy = False
        self.served = -1
        self.marker = ctypes.pythonapi.Py_GetCopyright
        self.marker.restype = ctypes.c_void_p

    # Breakpoints ------------------------------------------------------------------------

    def _global(self, frame, event, arg):
        if self.busy or event != "call":
            return None
        local = None
        for bp in self.breaks:
            if bp.func and bp.func_matches(frame):
                self._hit(frame, bp, frame.f_code.co_firstlineno)
            elif bp.line and bp.file_matches(frame.f_code.co_filename):
                local = self._local
        return local

    def _local(self, frame, event, arg):
        if event == "line" and not self.busy:
            for bp in self.breaks:
                if bp.line == frame.f_lineno and bp.file_matches(frame.f_code.co_filename):
                    self._hit(frame, bp, bp.line)
        return self._local

    def _hit(self, frame, bp, line):
        if self.frame is not None:  # inside an eval of ours at a stop: not again
            return
        label = f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:{line})"
        self._put(LABEL, LABEL_LEN, label.encode("utf-8", "replace")[:LIMITS["label"]])
        self.frame = frame
        self._notify(HIT)
        self.frame = None

    def _notify(self, why):
        _i32(self.base + FLAG).value = why
        try:
            self.marker()  # gdb stops the rank here while FLAG is set
        finally:
            _i32(self.base + FLAG).value = 0

    def _arm(self, caller):
        on = bool(self.breaks)
        sys.settrace(self._global if on else None)
        threading.settrace(self._global if on else None)
        f = caller  # frames already running: their lines are traced from now on
        while f is not None:
            if on and any(bp.line and bp.file_matches(f.f_code.co_filename)
                          for bp in self.breaks):
                f.f_trace = self._local
            elif f.f_trace in (self._local, self._global):
                f.f_trace = None
            f = f.f_back

    # Requests ---------------------------------------------------------------------------

    def _put(self, area, length_field, data):
        ctypes.memmove(self.base + area, data, len(data))
        _i32(self.base + length_field).value = len(data)

    def serve(self, caller):
        """One request from the mailbox; the answer back into it. ``caller`` is the frame
        the rank was in (for breakpoints to trace and values to read when not at a hit)."""
        n = min(max(_i32(self.base + REQ_LEN).value, 0), LIMITS["request"])
        req = json.loads(ctypes.string_at(self.base + REQUEST, n).decode("utf-8", "replace"))
        if req["id"] == self.served or req["op"] == "none":  # a queued call answered already
            return
        _i32(self.base + SERVING).value = 1  # until the end: no request may start inside
        try:
            self._serve(req, caller)
        finally:
            _i32(self.base + SERVING).value = 0

    def _serve(self, req, caller):
        self.served = req["id"]
        here = self.frame or caller  # at a stop of ours, the program's frame stopped there
        self.busy = True
        try:
            status, text = 0, self._do(req, here)
        except BaseException as e:  # SystemExit too: the program must not end because of us
            status, text = 1, f"{type(e).__name__}: {e}"
        finally:
            self.busy = False
        self._put(ANSWER, ANS_LEN, text.encode("utf-8", "replace")[:LIMITS["answer"]])
        _i32(self.base + ANS_STATUS).value = status
        if req.get("notify"):
            before, self.frame = self.frame, here
            try:
                self._notify(SERVED)
            finally:
                self.frame = before

    def _do(self, req, caller):
        """``caller``: the program's frame (a hit's, or the one the rank was stopped in)."""
        op = req["op"]
        if op == "break":
            self.breaks.append(Breakpoint(req["where"]))
            self._arm(caller)
            return str(len(self.breaks))
        if op == "clear":
            del self.breaks[:]
            self._arm(caller)
            return "0"
        if op == "eval":
            frame = caller
            scope = (frame.f_globals, frame.f_locals) if frame is not None else (
                sys.modules["__main__"].__dict__, None)
            code = compile(req["expr"], "<brasil eval>", "eval")
            return self._bounded(req["limit"], eval, code, *scope)
        raise ValueError(f"unknown request {op!r}")

    def _bounded(self, seconds, fn, *args):
        """``fn(*args)``'s value shown in bounded size, cut short after ``seconds``: Python
        code by a trace function that checks the time (sys.call_tracing lets it run at a hit,
        where the rank is inside a trace function already), a blocking call (a sleep, a read)
        by SIGALRM, whose handler raises in the main thread; the program's own SIGALRM
        handler and timer are put back as they were, the time spent here deducted."""
        deadline = time.monotonic() + seconds
        out = []

        def expired(*_):
            raise TimeoutError(f"the expression ran over {seconds:g}s")

        def check(frame, event, arg):
            if time.monotonic() > deadline:
                expired()
            return check

        def run():
            before = sys.gettrace()
            sys.settrace(check)
            try:
                value = fn(*args)
                shown = reprlib.Repr()
                shown.maxstring = shown.maxother = shown.maxlong = 400
                shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 20
                out.append(shown.repr(value))
            finally:
                sys.settrace(before)

        alarm = threading.current_thread() is threading.main_thread()
        if alarm:
            handler = signal.signal(signal.SIGALRM, expired)
            timer = signal.setitimer(signal.ITIMER_REAL, seconds)
        started = time.monotonic()
        try:
            sys.call_tracing(run, ())
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, handler)
                if timer[0]:
                    left = max(timer[0] - (time.monotonic() - started), 0.001)
                    signal.setitimer(signal.ITIMER_REAL, left, timer[1])
        return out[0]


def _main():
    """Run by the mailbox's snippet with ``BASE`` (the mailbox's address) in its globals: the
    agent made once per mailbox and kept in ``sys.modules``, then one request served. The
    caller is the frame the rank was in: two up (past this source's frame and the snippet's)."""
    base = globals()["BASE"]
    module = sys.modules.get(NAME)
    if getattr(module, "base", None) != base:
        module = type(sys)(NAME)
        module.base = base
        module.agent = Agent(base)
        sys.modules[NAME] = module
    try:
        caller = sys._getframe(3)
    except ValueError:
        caller = None
    module.agent.serve(caller)


if "BASE" in globals():  # run by the snippet, not imported
    _main()
