"""What the benchmark scripts share, so that each piece of logic lives in one place.

ninep_roundtrips.py, sessions.py and tree.py read CPU and memory figures from /proc, wait for
and stop their server processes, check and time ``xargs`` and print profiles the same way;
echo_server.py, aio9p_server.py and serve_static.py listen until SIGTERM the same way. Standard
library only: aio9p_server.py imports it under aio9p's own interpreter (bench/ is sys.path[0]
for every ``python bench/x.py``).
"""

from __future__ import annotations

import asyncio
import os
import pstats
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CORES = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 15.0  # seconds a server process gets to start listening


class BenchError(Exception):
    """A server, daemon or command misbehaved: the figures would mean nothing."""


# ---- CPU and memory from /proc ------------------------------------------------------------------

def proc_cpu(pid: int | str = "self",
             default: tuple[float, float] | None = None) -> tuple[float, float]:
    """(own, reaped children's) user+system CPU seconds of a process, from /proc/PID/stat.

    When that cannot be read (the process is gone, no /proc) ``default`` is returned if given;
    otherwise the error propagates."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rpartition(")")[2].split()
        return (int(v[11]) + int(v[12])) / TICK, (int(v[13]) + int(v[14])) / TICK
    except (OSError, IndexError, ValueError):
        if default is None:
            raise
        return default


def cpu_ns(pids: list[int]) -> int:
    """On-CPU nanoseconds of every thread of ``pids`` (/proc/PID/task/*/schedstat): a
    figure of a few milliseconds, where /proc/PID/stat counts 10 ms ticks."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def busy_cpu(default: float | None = None) -> float:
    """CPU seconds the whole machine has spent not idle (all cores), from /proc/stat.

    ``default`` as for proc_cpu."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / TICK  # user..steal, less idle and iowait
    except (OSError, IndexError, ValueError):
        if default is None:
            raise
        return default


def vm_rss(pid: int) -> int:
    """VmRSS of a process in kB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


# ---- processes and commands ---------------------------------------------------------------------

def wait_listening(proc: subprocess.Popen[Any], stderr: IO[bytes], what: str, family: int,
                   addr: Any, deadline: float) -> None:
    """Poll until ``addr`` (of socket ``family``) accepts a connection. BenchError, with the end
    of the process's ``stderr`` file, if ``proc`` exits first or time.monotonic() passes
    ``deadline``."""
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{_tail(stderr)}")
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(addr)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{what} not listening on {addr} after {READY_TIMEOUT:g}s:\n"
                                 f"{_tail(stderr)}") from None
            time.sleep(0.01)


def _tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    return stderr.read().decode(errors="replace")[-2000:]


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_stdio(sid: str, out: bytes, n: int) -> None:
    """A session's stdio must hold one line per command."""
    lines = out.count(b"\n")
    if lines != n:
        raise BenchError(f"session {sid}: stdio had {lines} line(s), expected {n}:\n"
                         f"{out[:300].decode(errors='replace')}")


def xargs(n: int, cmd: tuple[str, ...] = ("date",), parallel: int = CORES) -> float:
    """``seq N | xargs -P<parallel> -I{} CMD``: seconds, output checked (one line per command)."""
    seq = "".join(f"{i}\n" for i in range(1, n + 1)).encode()
    t0 = time.perf_counter()
    r = subprocess.run(["xargs", f"-P{parallel}", "-I{}", *cmd], input=seq, capture_output=True)
    t = time.perf_counter() - t0
    lines = r.stdout.count(b"\n")
    if r.returncode != 0 or lines != n:
        raise BenchError(f"xargs -P{parallel}: status {r.returncode}, {lines} line(s) for {n}: "
                         f"{r.stderr[-300:]!r}")
    return t


# ---- profiles -----------------------------------------------------------------------------------

def print_profile(path: str, top: int, py_spy: bool, explain: bool = False) -> None:
    """Where the time went: py-spy's raw stacks (print_py_spy) or cProfile's stats in ``path``."""
    if py_spy:
        print_py_spy(path, top, explain)
    else:
        st = pstats.Stats(path)
        st.sort_stats("tottime").print_stats(top)
        st.sort_stats("cumulative").print_stats("brasil", top)


DEFAULT_PY_SPY = "/tmp/venv-prof/bin/py-spy"


def add_profile_args(ap: Any, what: str, nodes: str, nodes_help: str, top: int) -> None:
    """--profile and its options, the same in every benchmark that samples daemons."""
    ap.add_argument("--profile", action="store_true", help=f"sample {what} with py-spy instead")
    ap.add_argument("--py-spy", default=DEFAULT_PY_SPY, metavar="PATH", help="py-spy to use")
    ap.add_argument("--profile-nodes", default=nodes, help=f"daemons to sample ({nodes_help})")
    ap.add_argument("--profile-top", type=int, default=top)


class Sampled:
    """py-spy attached to some daemons for the length of a ``with``: their CPU seconds in it
    (``cpu``), and the raw stacks each wrote (``outs``, for print_py_spy). A sampler that wrote
    nothing is an error, so a profile never silently shows fewer daemons."""

    def __init__(self, spy: list[str], pids: dict[str, int], outs: dict[str, str]) -> None:
        self.spy, self.pids, self.outs = spy, pids, outs
        self.cpu: dict[str, float] = {}

    def __enter__(self) -> Sampled:
        self.procs = {name: subprocess.Popen(self.spy + ["--pid", str(pid), "--output",
                                                         self.outs[name]],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                      for name, pid in self.pids.items()}
        time.sleep(1.0)  # py-spy attaches
        self.cpu0 = {name: proc_cpu(pid)[0] for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cpu = {name: proc_cpu(pid)[0] - self.cpu0[name] for name, pid in self.pids.items()}
        for p in self.procs.values():
            p.send_signal(signal.SIGINT)
        for name, p in self.procs.items():
            _, err = p.communicate(timeout=60)
            if exc[0] is None and not os.path.exists(self.outs[name]):
                raise BenchError(f"py-spy wrote nothing for {name}: "
                                 f"{err.decode(errors='replace')[-500:]}")


def print_py_spy(path: str, top: int, explain: bool = False) -> None:
    """Self and inclusive shares of py-spy's raw (collapsed) stacks, per function.

    ``explain`` adds to the headings what the columns count."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short_frame(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for f in set(frames):
            incl[f] = incl.get(f, 0) + int(count)
    if not total:
        print("py-spy recorded no samples")
        return
    print(f"{total} samples ({'epoll wait included: ' if explain else ''}"
          "idle time shows under EpollSelector.select)")
    print(f"\n{'self':>7}  function"
          + ("  (time in the function itself, C calls included)" if explain else ""))
    for f, k in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{k / total:>7.1%}  {f}")
    print(f"\n{'incl':>7}  function in brasil"
          + ("  (time in it and everything it calls)" if explain else ""))
    ours = [(f, k) for f, k in incl.items() if "brasil/" in f]
    for f, k in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"{k / total:>7.1%}  {f}")


def _short_frame(frame: str) -> str:
    """``name (path)`` with the path cut to what follows src/, site-packages/ or lib/python3.X/."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/src/", "/site-packages/", "/lib/python3."):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "/lib/python3.":
                where = where.split("/", 1)[-1]
            break
    return f"{name} ({where})"


# ---- servers ------------------------------------------------------------------------------------

async def until_signalled(loop: asyncio.AbstractEventLoop) -> None:
    """Return once the process gets SIGTERM or SIGINT."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_until_signalled(loop: asyncio.AbstractEventLoop,
                                factory: Callable[[], asyncio.BaseProtocol],
                                tcp: str | None, unix: str | None) -> None:
    """Serve ``factory``'s protocol on TCP ``HOST:PORT`` and/or Unix socket ``PATH`` (a stale
    socket file there is removed) until SIGTERM or SIGINT; then close the listeners."""
    servers = []
    if tcp:
        host, _, port = tcp.rpartition(":")
        servers.append(await loop.create_server(factory, host, int(port), reuse_address=True))
    if unix:
        if os.path.exists(unix):
            os.unlink(unix)
        servers.append(await loop.create_unix_server(factory, path=unix))
    await until_signalled(loop)
    for s in servers:
        s.close()
