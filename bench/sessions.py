"""Sessions end to end: the Brasil paper's deployment against xargs, and the daemon's memory.

    .venv/bin/python bench/sessions.py [--quick] [--repeats N] [--max-n N] [--no-json]
    .venv/bin/python bench/sessions.py --profile [--py-spy PATH] [--profile-n N]

The daemon runs in its own process (``brasil serve`` on a temporary Unix socket, ``-q``), started
here; readiness is a connect poll with a deadline, and it is always terminated on the way out.
One client (brasil.ninep.client.Client, one connection, reused) drives it.

1. Deployment (``--slots 256``; slots are logical, the machine has what it has). For each N in
   1, 2, 4, … 256: read ``clone``; open the session's ``ctl`` and write ``res N``, then
   ``exec date``; read the session's aggregated ``stdio`` to end of file and check it has N lines;
   write ``close``. Timed end to end with time.perf_counter. Beside it, in the same run and
   interleaved with it, the same N ``date`` commands through ``xargs -P<cores> -I{} date`` (stdin
   ``seq N``, output captured and checked). Each point is the median of the repetitions; the table
   shows both and the ratio brasil/xargs, and the split of the Brasil time for the largest N:
   clone, res, exec (the write returns once every process has started), read (until EOF, so it
   includes waiting for the commands), close.

2. Memory (a second daemon, ``--slots`` 1024): VmRSS from /proc/PID/status at start, then with
   1,000 finished sessions kept — each one clone, ``exec true`` (no res: one local slot), a read of
   ``wait`` — none closed (the idle timeout, 300 s, is far off), then after closing them all.
   Reported per kept session, with the daemon's open file descriptors.

Results: a table and a PASS/MISS line for the target (brasil/xargs ≤ 1.3 at N = 256) on stdout,
JSON in bench/results/sessions.json. A miss does not make the exit status non-zero; a daemon that
will not start or a session that misbehaves does.

``--profile`` instead runs the daemon under cProfile (or samples it with py-spy given
``--py-spy PATH``) through a warm-up and ``--repeats`` deployments of N = 256, and prints where
its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from brasil.ninep.client import Client
from brasil.ninep.constants import OWRITE
from brasil.ninep.errors import NinepError
from common import (
    CORES,
    READY_TIMEOUT,
    BenchError,
    busy_cpu,
    check_stdio,
    print_profile,
    proc_cpu,
    stop_process,
    vm_rss,
    wait_listening,
    xargs,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "sessions.json"
BRASIL = Path(sys.executable).with_name("brasil")

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TARGET_N = 256
TARGET_RATIO = 1.3
KEPT_SESSIONS = 1000
MEMORY_SLOTS = 1024

# The daemon under cProfile: argv[1] is where the stats go, the rest is `brasil`'s command line.
PROFILED = """\
import cProfile, sys
from brasil.cli.main import main
out = sys.argv.pop(1)
prof = cProfile.Profile()
prof.enable()
try:
    main(sys.argv[1:])
finally:
    prof.disable()
    prof.dump_stats(out)
"""


# ---- the daemon ---------------------------------------------------------------------------------

class Daemon:
    """``brasil serve`` in its own process on a Unix socket."""

    def __init__(self, tmp: str, name: str, slots: int, profile_to: str | None = None) -> None:
        self.path = os.path.join(tmp, f"{name}.sock")
        args = ["serve", "--listen", f"unix:{self.path}", "--slots", str(slots), "--name", name, "-q"]
        if profile_to:
            cmd = [sys.executable, "-c", PROFILED, profile_to, *args]
        elif BRASIL.exists():
            cmd = [str(BRASIL), *args]
        else:
            cmd = [sys.executable, "-c", "import sys; from brasil.cli.main import main; "
                   "sys.exit(main(sys.argv[1:]))", *args]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, cwd=tmp)
        self.address = f"unix:{self.path}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        wait_listening(self.proc, self.stderr, "daemon", socket.AF_UNIX, self.path,
                       time.monotonic() + READY_TIMEOUT)

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        return proc_cpu(self.pid)[0]

    def stop(self) -> None:
        stop_process(self.proc, 15)
        self.stderr.close()


# ---- one deployment -----------------------------------------------------------------------------

PHASES = ("clone", "res", "exec", "read", "close")


async def deploy(c: Client, n: int, cmd: str = "date") -> dict[str, float]:
    """clone, res N, exec CMD, read stdio to EOF (N lines), close; seconds per phase and total."""
    t0 = time.perf_counter()
    async with await c.open("csrv/local/clone") as f:
        sid = (await f.read_all()).decode().strip()
    t1 = time.perf_counter()
    ctl = await c.open(f"csrv/local/{sid}/ctl", OWRITE)
    try:
        await ctl.write(f"res {n}")
        t2 = time.perf_counter()
        await ctl.write(f"exec {cmd}")
        t3 = time.perf_counter()
        out = await c.read(f"csrv/local/{sid}/stdio")
        t4 = time.perf_counter()
        await ctl.write("close")
    finally:
        await ctl.close()
    t5 = time.perf_counter()
    check_stdio(sid, out, n)
    return {"clone": t1 - t0, "res": t2 - t1, "exec": t3 - t2, "read": t4 - t3, "close": t5 - t4,
            "total": t5 - t0}


SH_DATE = ("sh", "-c", "date")


async def deployment(d: Daemon, sizes: list[int], repeats: int) -> dict[str, Any]:
    """Every N, ``repeats`` times, interleaved: brasil, xargs date, xargs sh -c date.

    The ratio per N is the median of the per-repetition ratios (each pair ran back to back, so
    under the same load from elsewhere). CPU: the daemon's own, and its commands' (children)."""
    keys = ("brasil", "xargs", "xargs_sh", *PHASES, "daemon_cpu", "cmd_cpu", "xargs_cpu", "ratio")
    samples: dict[int, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in sizes}
    c = await Client.connect(d.address)
    try:
        for n in (1, max(sizes)):  # warm up: first fork, lazy imports, the allocator's arenas
            await deploy(c, n)
        xargs(max(sizes))
        me0, busy0, d0 = proc_cpu(), busy_cpu(), sum(proc_cpu(d.pid))
        t0 = time.perf_counter()
        for r in range(repeats):
            for n in sizes:
                s = samples[n]
                # alternate who goes first, so neither always runs right after the other
                runs = ["brasil", "xargs", "xargs_sh"]
                for what in (runs if r % 2 == 0 else runs[::-1]):
                    if what == "brasil":
                        own, kids = proc_cpu(d.pid)
                        b = await deploy(c, n)
                        own2, kids2 = proc_cpu(d.pid)
                        s["brasil"].append(b["total"])
                        for p in PHASES:
                            s[p].append(b[p])
                        s["daemon_cpu"].append(own2 - own)
                        s["cmd_cpu"].append(kids2 - kids)
                    elif what == "xargs":
                        k0 = proc_cpu()[1]
                        s["xargs"].append(xargs(n))
                        s["xargs_cpu"].append(proc_cpu()[1] - k0)
                    else:
                        s["xargs_sh"].append(xargs(n, SH_DATE))
                s["ratio"].append(s["brasil"][-1] / s["xargs"][-1])
        wall = time.perf_counter() - t0
        me1, busy1, d1 = proc_cpu(), busy_cpu(), sum(proc_cpu(d.pid))
    finally:
        await c.close()
    ours = sum(me1) - sum(me0) + d1 - d0
    points: dict[int, dict[str, Any]] = {}
    for n, s in samples.items():
        # CPU times come in clock ticks (10 ms): their mean says more than their median
        points[n] = {**{k: (statistics.fmean if k.endswith("cpu") else statistics.median)(v)
                        for k, v in s.items()}, "samples": s}
    return {"points": points, "wall": wall,
            "other_cores": max(0.0, (busy1 - busy0) - ours) / wall}


# ---- memory -------------------------------------------------------------------------------------

async def keep_session(c: Client) -> str:
    """clone, exec true, read wait — and not close: the session stays, holding its slot."""
    async with await c.open("csrv/local/clone") as f:
        sid = (await f.read_all()).decode().strip()
    await c.write(f"csrv/local/{sid}/ctl", "exec true")
    w = (await c.read(f"csrv/local/{sid}/wait")).decode()
    if w.split() != ["0", "0"]:
        raise BenchError(f"session {sid}: wait said {w!r}, expected '0 0'")
    return sid


async def memory(d: Daemon, kept: int) -> dict[str, Any]:
    rss: dict[str, int] = {"start": vm_rss(d.pid)}
    fds: dict[str, int] = {"start": d.fds()}
    c = await Client.connect(d.address)
    try:
        sids = []
        t0 = time.perf_counter()
        marks = {10: "after 10", kept // 10: f"after {kept // 10}", kept: f"after {kept}"}
        for i in range(1, kept + 1):
            sids.append(await keep_session(c))
            if i in marks:
                rss[marks[i]] = vm_rss(d.pid)
                fds[marks[i]] = d.fds()
        elapsed = time.perf_counter() - t0
        for sid in sids:
            await c.write(f"csrv/local/{sid}/ctl", "close")
        rss["after closing all"] = vm_rss(d.pid)
        fds["after closing all"] = d.fds()
    finally:
        await c.close()
    full = rss[f"after {kept}"]
    tenth = rss[f"after {kept // 10}"]
    return {
        "kept": kept, "rss_kb": rss, "fds": fds, "seconds": elapsed,
        "per_session_kb": (full - rss["start"]) / kept,
        "marginal_per_session_kb": (full - tenth) / (kept - kept // 10),
    }


# ---- report -------------------------------------------------------------------------------------

NOISY = 0.25  # cores used by other processes meanwhile that make the figures suspect


def report(deployment: dict[str, Any], mem: dict[str, Any] | None, repeats: int) -> str:
    dep = deployment["points"]
    print(f"\ndeployment: clone, res N, exec date, read stdio to EOF, close (one 9P connection, "
          f"Unix socket)\nbeside: seq N | xargs -P{CORES} -I{{}} date  (and sh -c date, as the "
          f"daemon runs it). Medians of {repeats} (ratio: of the back-to-back pairs' ratios; "
          f"CPU: means); {CORES} cores.\n")
    print(f"{'N':>5} {'brasil':>8} {'xargs':>8} {'ratio':>6} {'xargs sh':>9} {'ms/cmd':>7}"
          f" {'daemon cpu':>11} {'cmds cpu':>9} {'xargs cpu':>10}")
    print(f"{'':>5} {'ms':>8} {'ms':>8} {'':>6} {'ms':>9} {'':>7} {'ms':>11} {'ms':>9} {'ms':>10}")
    for n, r in dep.items():
        print(f"{n:>5} {r['brasil'] * 1000:8.1f} {r['xargs'] * 1000:8.1f} {r['ratio']:6.2f} "
              f"{r['xargs_sh'] * 1000:9.1f} {r['brasil'] / n * 1000:7.2f} "
              f"{r['daemon_cpu'] * 1000:11.0f} {r['cmd_cpu'] * 1000:9.0f} {r['xargs_cpu'] * 1000:10.0f}")
    top = max(dep)
    r = dep[top]
    split = "  ".join(f"{p} {r[p] * 1000:.1f}" for p in PHASES)
    print(f"\nsplit at N={top} (ms, medians): {split}")
    print("(exec returns once every process has started; read waits for them to finish)")
    other = deployment["other_cores"]
    note = "  ← NOISY: figures suspect" if other > NOISY else ""
    print(f"other processes used {other:.2f} core(s) on average during the deployment runs{note}")
    if mem:
        k = mem["kept"]
        print(f"\nmemory: VmRSS (kB) / open fds of the daemon, {k} finished sessions kept "
              f"(clone, exec true, read wait; made in {mem['seconds']:.1f} s)")
        for label, kb in mem["rss_kb"].items():
            print(f"  {label:<18} {kb:>8} kB  {mem['fds'][label]:>5} fds")
        print(f"  per kept session: {mem['per_session_kb']:.1f} kB from start, "
              f"{mem['marginal_per_session_kb']:.1f} kB marginal ({k // 10} → {k})")
    if TARGET_N in dep:
        ratio = dep[TARGET_N]["ratio"]
        verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
        line = (f"{verdict}: brasil/xargs at N={TARGET_N} is {ratio:.2f} "
                f"(target ≤ {TARGET_RATIO}); {r['brasil'] * 1000:.0f} ms vs {r['xargs'] * 1000:.0f} ms"
                f"{' (noisy machine)' if other > NOISY else ''}")
    else:
        line = f"(N={TARGET_N} not measured: no verdict; ratio at N={top} is {r['ratio']:.2f})"
    print("\n" + line)
    return line


def write_json(dep: dict[str, Any], mem: dict[str, Any] | None, summary: str,
               args: argparse.Namespace) -> None:
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": CORES, "python": platform.python_version(),
                    "platform": platform.platform()},
        "quick": args.quick, "repeats": args.repeats,
        "target": {"n": TARGET_N, "ratio": TARGET_RATIO},
        "deployment": {"points": {str(n): r for n, r in dep["points"].items()},
                       "wall_seconds": dep["wall"], "other_cores": dep["other_cores"]},
        "memory": mem, "summary": summary,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


# ---- profile ------------------------------------------------------------------------------------

async def _profiled(d: Daemon, n: int, repeats: int, py_spy: str | None, out: str) -> list[float]:
    c = await Client.connect(d.address)
    try:
        await deploy(c, n)  # warm up, outside py-spy's window (cProfile sees it: it is one of many)
        spy = None
        if py_spy:
            spy = subprocess.Popen([py_spy, "record", "--pid", str(d.pid), "--rate", "500",
                                    "--idle", "--full-filenames", "--nolineno", "--format", "raw",
                                    "--output", out], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
            await asyncio.sleep(0.3)  # py-spy attaches (its samples meanwhile are idle ones)
        times = [(await deploy(c, n))["total"] for _ in range(repeats)]
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=30)
            if not os.path.exists(out):
                raise BenchError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
        return times
    finally:
        await c.close()


def profile(args: argparse.Namespace) -> None:
    n = args.profile_n
    with tempfile.TemporaryDirectory(prefix="brasil-bench-") as tmp:
        out = os.path.join(tmp, "daemon.prof")
        d = Daemon(tmp, "n0", max(n, 1), None if args.py_spy else out)
        try:
            d.wait_ready()
            cpu0 = d.cpu_seconds()
            times = asyncio.run(_profiled(d, n, args.repeats, args.py_spy, out))
            cpu = d.cpu_seconds() - cpu0
        finally:
            d.stop()
        how = "py-spy" if args.py_spy else "cProfile (it slows the daemon; the shares are what matter)"
        print(f"daemon under {how}: N={n}, {args.repeats} deployments, median "
              f"{statistics.median(times) * 1000:.0f} ms, daemon CPU {cpu:.2f} s in all\n")
        print_profile(out, args.profile_top, bool(args.py_spy))


# ---- main ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N up to 64, 2 repetitions")
    ap.add_argument("--repeats", type=int, help="repetitions per point; the median is reported (5)")
    ap.add_argument("--max-n", type=int, help="largest N (256; 64 with --quick)")
    ap.add_argument("--kept", type=int, default=KEPT_SESSIONS, help="sessions kept for memory (1000)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory part")
    ap.add_argument("--no-json", action="store_true", help=f"do not write {RESULTS.name}")
    ap.add_argument("--profile", action="store_true",
                    help="profile the daemon through deployments of --profile-n instead")
    ap.add_argument("--profile-n", type=int, default=TARGET_N, help="N profiled (256)")
    ap.add_argument("--py-spy", metavar="PATH", help="with --profile: sample with py-spy instead")
    ap.add_argument("--profile-top", type=int, default=25, help="rows of profile to print")
    args = ap.parse_args()
    args.repeats = args.repeats or (2 if args.quick else 5)
    max_n = args.max_n or (64 if args.quick else TARGET_N)
    sizes = [n for n in SIZES if n <= max_n]
    if args.profile:
        try:
            profile(args)
        except (BenchError, NinepError, OSError, subprocess.SubprocessError) as e:
            print(f"benchmark failed: {e}", file=sys.stderr)
            return 1
        return 0
    try:
        with tempfile.TemporaryDirectory(prefix="brasil-bench-") as tmp:
            d = Daemon(tmp, "n0", max(TARGET_N, max_n))
            try:
                d.wait_ready()
                dep = asyncio.run(deployment(d, sizes, args.repeats))
            finally:
                d.stop()
            mem = None
            if not args.no_memory:
                d = Daemon(tmp, "m0", max(MEMORY_SLOTS, args.kept))
                try:
                    d.wait_ready()
                    mem = asyncio.run(memory(d, args.kept))
                finally:
                    d.stop()
    except (BenchError, NinepError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    summary = report(dep, mem, args.repeats)
    if not args.no_json:
        write_json(dep, mem, summary, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
