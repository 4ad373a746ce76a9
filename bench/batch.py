"""Batch workloads, Brasil beside Work Queue, Dask distributed and HyperQueue, in one run.

    .venv/bin/python bench/batch.py [--quick] [--no-peers] [--no-json] [--only medium]
                                    [--pairs N] [--medium-jobs N]

Every Brasil run is a fresh `brasil serve` (its scheduler on SQLite in a temporary state
directory) and `brasil worker` processes, each under `unshare --uts` with a host name of its own;
the client is brasil.batch.api. Makespans come from the scheduler's events (first submission →
last job ended, as `brasil report` computes them).

a. Straggler: 40 isolated jobs of `sleep 1` (stretched by the factor SLOW that a job reads from
   its worker's environment) on 4 workers × 2 slots, one worker with SLOW=10: makespan with
   redundancy (default 2), without it (--redundancy 1), and with no slow worker. Ideal: 6, 10,
   5 s. Targets: with/without ≤ 0.7; with-redundancy/no-slow ≤ 1.25.
b. Frozen worker: the same with no slow worker, one worker SIGSTOPped 1 s in (lease 10 s,
   the default). Target ≤ 1.5 × the no-failure makespan. Then it is thawed: its late reports
   must be refused, and each job committed exactly once.
c. Fine grain: 5,000 `true` jobs on 2 workers (2 slots each), non-isolated and isolated, in jobs
   per second from the first submission to the last job's end. Targets ≥ 1,000/s and ≥ 150/s.
d. Submission: 100,000 jobs from a file with `brasil submit --file`: seconds, database size.
e. Medium grain (--only medium for this one alone): 200 jobs of `sleep 0.2` on one worker with 2
   slots, non-isolated and isolated, and 200 isolated jobs that each write a file (`sleep 0.2 &&
   echo N > out.N`: every one goes through a commit), against GNU parallel -j2 on the same
   command lines, alternating in one run (--pairs rounds). Ratios brasil/parallel of the wall
   time (submission to the end of `wait`; parallel's start to its exit), with the per-round
   spread; and where Brasil's time goes per job, from the scheduler's events and the worker's
   trace (`brasil worker --trace-jobs`), plus what a spawn costs in a user+mount namespace with
   an overlay, measured apart. Targets: isolated ≤ 1.05, non-isolated ≤ 1.02. Sleep rather than
   a busy loop: it measures the latency we add without fighting the other users of the machine
   for the cores (a busy loop on 2 cores would measure them).

Peers, each in its own environment, installed by this script when missing (Debian packages
`coop-computing-tools` and `openmpi-bin` for Work Queue; virtualenvs under .peers/ for Dask
distributed and HyperQueue), measured on the same work where they can express it; a peer that
does not install is skipped with the reason. Results: a table on stdout, JSON in
bench/results/batch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from brasil.batch import report
from brasil.batch.api import Batch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS = ROOT / ".peers"
RESULTS = BENCH / "results" / "batch.json"
SLEEP = "sleep $(awk \"BEGIN {print 1 * ${SLOW:-1}}\")"


class Rig:
    """A scheduler daemon and workers, all real processes, in a temporary directory."""

    def __init__(self, tmp: str, workers: list[dict[str, Any]], trace: bool = False,
                 python: str | None = None) -> None:
        self.tmp = tmp
        # another version's interpreter (bench/compare.py installs it); -I: its brasil, not ours
        self.python = [python, "-I"] if python else [sys.executable]
        self.trace = trace  # workers log each execution's moments to w<i>.log
        self.sock = os.path.join(tmp, "s.sock")
        self.addr = f"unix:{self.sock}"
        self.spec = workers
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Rig:
        os.makedirs(self.tmp, exist_ok=True)
        log = open(os.path.join(self.tmp, "serve.log"), "wb")
        self.serve = subprocess.Popen(
            [*self.python, "-m", "brasil.cli.main", "serve", "--listen", self.addr, "--slots",
             "0", "--state-dir", os.path.join(self.tmp, "state"), "-q"],
            stdout=log, stderr=log, start_new_session=True)
        self.procs.append(self.serve)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.sock):
            if time.monotonic() > deadline or self.serve.poll() is not None:
                raise RuntimeError("brasil serve did not start")
            time.sleep(0.02)
        uts = shutil.which("unshare") is not None and os.geteuid() == 0
        for i, w in enumerate(self.spec):
            argv = [*self.python, "-m", "brasil.cli.main", "worker", "--at", self.addr,
                    "--slots", str(w.get("slots", 2)), "--name", f"w{i}", "-q",
                    "--workdir", os.path.join(self.tmp, f"w{i}")] + (
                        ["--trace-jobs"] if self.trace else [])
            if uts:  # a host name of its own
                argv = ["unshare", "--uts", "sh", "-c", f'hostname w{i} && exec "$@"', "sh", *argv]
            err = open(os.path.join(self.tmp, f"w{i}.log"), "wb") if self.trace \
                else subprocess.DEVNULL
            p = subprocess.Popen(argv, env={**os.environ, **w.get("env", {})},
                                 stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            self.procs.append(p)
            self.workers.append(p)
        return self

    def __exit__(self, *exc: Any) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    async def batch(self) -> Batch:
        for _ in range(400):
            try:
                b = await Batch.connect(self.addr)
                await b.state()
                if "workers" in (st := await b.state()) and int(
                        st.split("workers ")[1].split()[0]) >= len(self.spec):
                    return b
                await b.close()
            except Exception:  # noqa: BLE001 - still starting
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("the workers did not register")


async def brasil_run(rig: Rig, cmds: list[str], tag: str, freeze_after: float | None = None,
                     **opts: Any) -> dict[str, Any]:
    b = await rig.batch()
    try:
        t0 = time.monotonic()
        await b.submit(cmds, tag=tag, home=rig.tmp, **opts)
        if freeze_after is not None:
            await asyncio.sleep(freeze_after)
            os.kill(rig.workers[0].pid, signal.SIGSTOP)
        summary = await asyncio.wait_for(b.wait(tag=tag), 600)
        wall = time.monotonic() - t0
        rep = report.build(tag, await b.jobs(tag), await b.events(tag))
        out = {"makespan": rep.makespan, "wall": wall, "done": summary.get("done", 0),
               "figures": rep.figures}
        if freeze_after is not None:  # thaw it: its late reports must be refused
            os.kill(rig.workers[0].pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ev = await b.events(tag)
                mine = {e.execution for e in ev if e.worker == "w0" and e.kind == "assign"}
                settled = {e.execution for e in ev if e.worker == "w0" and e.kind in (
                    "rollback", "commit")}
                if mine <= settled:
                    break
                await asyncio.sleep(0.2)
            commits: dict[int, int] = {}
            for e in ev:
                if e.kind == "commit" and e.job is not None:
                    commits[e.job] = commits.get(e.job, 0) + 1
            out["refused"] = sum(1 for e in ev if e.kind == "refused" and e.worker == "w0")
            out["lost"] = sum(1 for e in ev if e.kind == "lease_lost" and e.worker == "w0")
            out["committed_once"] = all(v == 1 for v in commits.values()) and len(commits) == len(cmds)
        return out
    finally:
        await b.close()


def straggler_workers(slow: bool) -> list[dict[str, Any]]:
    return [{"slots": 2, "env": {"SLOW": "10" if slow and i == 0 else "1"}} for i in range(4)]


async def bench_brasil(quick: bool) -> dict[str, Any]:
    res: dict[str, Any] = {}
    jobs = [SLEEP] * (16 if quick else 40)
    for key, slow, redundancy in (("a_redundancy", True, None), ("a_no_redundancy", True, 1),
                                  ("a_no_slow", False, None)):
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as d, \
                Rig(d, straggler_workers(slow)) as rig:
            extra = {"redundancy": redundancy} if redundancy else {}
            res[key] = await brasil_run(rig, jobs, key, isolate=True, **extra)
            print(f"  brasil {key}: makespan {res[key]['makespan']:.2f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as d, \
            Rig(d, straggler_workers(False)) as rig:
        res["b_frozen"] = await brasil_run(rig, jobs, "frozen", freeze_after=1.0, isolate=True)
        print(f"  brasil b_frozen: makespan {res['b_frozen']['makespan']:.2f} s", flush=True)
    n = 1000 if quick else 5000
    for key, iso in (("c_plain", False), ("c_isolated", True)):
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as d, \
                Rig(d, [{"slots": 2}, {"slots": 2}]) as rig:
            r = await brasil_run(rig, ["true"] * n, key, isolate=iso)
            r["rate"] = n / r["makespan"]
            res[key] = r
            print(f"  brasil {key}: {r['rate']:.0f} jobs/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as d, Rig(d, []) as rig:
        n = 20_000 if quick else 100_000
        path = os.path.join(d, "jobs.txt")
        with open(path, "w") as f:
            f.write("".join(f"echo {i}\n" for i in range(n)))
        b = await rig.batch()
        await b.close()
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "brasil.cli.main", "submit", "--at", rig.addr,
                            "--tag", "sub", "--file", path], capture_output=True, text=True,
                           cwd=d)
        took = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"submit failed: {r.stderr}")
        db = os.path.join(d, "state", "batch.db")
        size = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
        res["d_submit"] = {"jobs": n, "seconds": took, "db_bytes": size}
        print(f"  brasil d_submit: {n} jobs in {took:.2f} s, database {size / 1e6:.1f} MB",
              flush=True)
    return res


# ---- e. medium grain ---------------------------------------------------------------------------

MEDIUM_SECONDS = 0.2
MEDIUM_KINDS = ("parallel", "plain", "isolated", "parallel_write", "isolated_write")
# The moments a worker traces (brasil worker --trace-jobs), in order, and the name of each step
# from the previous moment; "dispatch" runs from the previous execution on the slot ending.
STEPS = (("received", "dispatch: slot free → run line read"), ("prepared", "prepare: scratch, "
         "output file"), ("spawned", "spawn (namespace, overlay, exec)"), ("exited", "run − 0.2 s: "
         "exec to exit seen"), ("planned", "plan: walk the upper dir"), ("released", "slot freed; "
         "what follows runs beside the next job"), ("commit", "done → commit line"), ("journaled", "stage: copy, fsync, journal"), ("go", "journaled → go line"),
         ("applied", "apply"), ("ended", "report, scratch removed, slot free"))


def medium_cmds(n: int, write: bool) -> list[str]:
    if write:
        return [f"sleep {MEDIUM_SECONDS} && echo {i} > out.{i}" for i in range(n)]
    return [f"sleep {MEDIUM_SECONDS}"] * n


def parallel_run(home: str, cmds: list[str]) -> tuple[float, float]:
    """GNU parallel -j2 on ``cmds`` in ``home``: seconds from its start to its exit, and the CPU
    seconds it and its jobs used."""
    t0 = time.monotonic()
    p = subprocess.Popen(["parallel", "-j2"], stdin=subprocess.PIPE, cwd=home,
                         stdout=subprocess.DEVNULL)
    assert p.stdin is not None
    p.stdin.write("".join(c + "\n" for c in cmds).encode())
    p.stdin.close()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"parallel failed: exit {p.returncode}")
    return wall, ru.ru_utime + ru.ru_stime


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(its own CPU, its waited-for children's) in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    children = (int(fields[13]) + int(fields[14])) / tick
    return own, children


async def medium_brasil(rig: Rig, home: str, cmds: list[str], tag: str, isolate: bool
                        ) -> dict[str, Any]:
    b = await rig.batch()
    pids = [rig.serve.pid] + [w.pid for w in rig.workers]
    try:
        before = [cpu_seconds(p) for p in pids]
        t0 = time.monotonic()
        await b.submit(cmds, tag=tag, home=home, isolate=isolate)
        summary = await asyncio.wait_for(b.wait(tag=tag), 600)
        wall = time.monotonic() - t0
        after = [cpu_seconds(p) for p in pids]
        if summary.get("done", 0) != len(cmds):
            raise RuntimeError(f"medium {tag}: {summary}")
        own = sum(a[0] - b0[0] for a, b0 in zip(after, before))
        jobs = sum(a[1] - b0[1] for a, b0 in zip(after, before))
        return {"wall": wall, "cpu_own": own, "cpu": own + jobs, "events": await b.events(tag)}
    finally:
        await b.close()


def read_trace(path: str) -> dict[int, dict[str, Any]]:
    """token → {"slot": …, moment: time} from a worker's --trace-jobs lines."""
    out: dict[int, dict[str, Any]] = {}
    with open(path, errors="replace") as f:
        for line in f:
            words = line.split()
            if "trace" not in words:
                continue
            i = words.index("trace")
            token, slot = int(words[i + 1]), int(words[i + 4])
            marks: dict[str, Any] = {"slot": slot}
            for w in words[i + 5:]:
                k, _, v = w.partition("=")
                marks[k] = float(v)
            out[token] = marks
    return out


def breakdown(events: list[Any], traces: dict[int, dict[str, Any]]) -> dict[str, float]:
    """Mean milliseconds per job in each step (STEPS), from the worker's trace, the dispatch step
    split at the scheduler's assignment (its events)."""
    assign = {e.execution: e.t for e in events if e.kind == "assign"}
    mine = [(m["received"], t) for t, m in traces.items() if t in assign and "prepared" in m]
    sums: dict[str, list[float]] = {}
    last_end: dict[int, tuple[int, float]] = {}  # slot → (token, ended) of the last execution
    for _, t in sorted((traces[t]["prepared"], t) for _, t in mine):
        m = traces[t]
        prev = last_end.get(m["slot"])
        if prev is not None:
            pt, pend = prev
            sums.setdefault("dispatch: slot free → assigned (scheduler)", []).append(
                assign[t] - pend)
            sums.setdefault("dispatch: assigned → run line read", []).append(
                m["received"] - assign[t])
            sums.setdefault(STEPS[0][1], []).append(m["received"] - pend)
        before = m["received"]
        for moment, name in STEPS[1:]:
            if moment in m:
                d = m[moment] - before
                sums.setdefault(name, []).append(d - (MEDIUM_SECONDS if moment == "exited" else 0))
                before = m[moment]
        last_end[m["slot"]] = (t, m.get("released", m["ended"]))
    return {k: 1000 * sum(v) / len(v) for k, v in sums.items()}


def spawn_costs(home: str, rounds: int = 40) -> dict[str, float]:
    """Median milliseconds to start `true` (fork/posix_spawn to exec) as the worker does: plain
    (posix_spawn), through subprocess with a preexec function that does nothing, that enters a
    user+mount namespace, and that also mounts the overlay; alternating, measured here."""
    from brasil.batch import isolate
    from brasil.exec import nsexec
    true = shutil.which("true") or "/bin/true"
    scratch = tempfile.mkdtemp(prefix="bench-spawn-")

    def overlay(i: Any) -> Any:
        up, wk = os.path.join(scratch, f"u{i}"), os.path.join(scratch, f"w{i}")
        os.mkdir(up)
        os.mkdir(wk)
        return isolate.preexec(home, up, wk)

    from brasil.exec.forkserver import ForkServer
    server = ForkServer.start()
    variants = {
        "posix_spawn": None,
        "fork + exec (subprocess, preexec)": lambda i: (lambda: None),
        "+ user+mount namespace": lambda i: nsexec.enter_private_namespace,
        "+ overlay mount": overlay,
    }
    if server is not None:
        variants["fork server: namespace, overlay, exec"] = lambda i: ("server", overlay(f"s{i}"))
    times: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for i in range(rounds):
            for name, make in variants.items():
                pre = make(i) if make else None
                t0 = time.perf_counter()
                if isinstance(pre, tuple):  # the fork server, with the overlay's directories
                    d_up, d_wk = os.path.join(scratch, f"us{i}"), os.path.join(scratch, f"ws{i}")
                    assert server is not None
                    with open(os.devnull, "wb") as null:
                        pid = server.spawn([true], dict(os.environ), null.fileno(), home, d_up,
                                           d_wk)
                    t1 = time.perf_counter()
                    os.waitpid(pid, 0)
                elif pre is None:
                    pid = os.posix_spawn(true, [true], os.environ)
                    t1 = time.perf_counter()
                    os.waitpid(pid, 0)
                else:
                    p = subprocess.Popen([true], preexec_fn=pre, close_fds=True,
                                         start_new_session=True)
                    t1 = time.perf_counter()
                    p.wait()
                times[name].append(t1 - t0)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}


def spread(xs: list[float]) -> str:
    s = sorted(xs)
    return f"{s[len(s) // 2]:.3f} ({s[0]:.3f}–{s[-1]:.3f})"


async def bench_medium(n: int, pairs: int, against: str | None = None) -> dict[str, Any]:
    """e: brasil (plain, isolated, isolated and writing) against parallel -j2, alternating;
    with ``against`` (a git revision), that version of brasil too, in the same rounds."""
    if shutil.which("parallel") is None:
        raise RuntimeError("GNU parallel is missing (make bench-deps)")
    kinds = list(MEDIUM_KINDS)
    old_python = None
    if against:
        sys.path.insert(0, str(BENCH))
        from compare import install  # bench/compare.py: REV in a virtualenv of its own
        old_python = str(install(against))
        kinds = [k2 for k in MEDIUM_KINDS for k2 in ([k] if k.startswith("parallel")
                                                      else [k, k + "@" + against])]
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}  # CPU seconds, jobs included
    cpu_own: dict[str, list[float]] = {k: [] for k in kinds}  # brasil's daemons alone
    parts: dict[str, list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        d = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-medium-"))
        rigs = {"": stack.enter_context(Rig(os.path.join(d, "new"), [{"slots": 2}],
                                            trace=True))}
        if old_python:
            rigs["@" + str(against)] = stack.enter_context(
                Rig(os.path.join(d, "old"), [{"slots": 2}], python=old_python))
        for r in range(pairs):
            order = list(kinds)
            if r % 2:  # A B, then B A: a drift of the machine's load does not favour one side
                for i in range(len(order) - 1):
                    if order[i + 1] == order[i] + "@" + str(against):
                        order[i], order[i + 1] = order[i + 1], order[i]
            for kind in order:
                home = os.path.join(d, f"home-{kind}-{r}")
                os.mkdir(home)
                base, _, rev = kind.partition("@")
                write = base.endswith("_write")
                cmds = medium_cmds(n, write)
                if base.startswith("parallel"):
                    wall, used = parallel_run(home, cmds)
                    walls[kind].append(wall)
                    cpu[kind].append(used)
                    continue
                rig = rigs["@" + rev if rev else ""]
                res = await medium_brasil(rig, home, cmds, f"m{r}{base}", base != "plain")
                walls[kind].append(res["wall"])
                cpu[kind].append(res["cpu"])
                cpu_own[kind].append(res["cpu_own"])
                if rig.trace:
                    traces = read_trace(os.path.join(rig.tmp, "w0.log"))
                    parts.setdefault(kind, []).append(breakdown(res["events"], traces))
                if write and sorted(os.listdir(home)) != sorted(f"out.{i}" for i in range(n)):
                    raise RuntimeError(f"medium {kind}: the jobs' files were not all committed")
            print(f"  round {r + 1}: " + ", ".join(f"{k} {walls[k][-1]:.2f} s" for k in kinds),
                  flush=True)
        spawn = spawn_costs(d)
    ratios = {k: [b / p for b, p in zip(walls[k], walls["parallel_write" if "_write" in k
                                                       else "parallel"])]
              for k in kinds if not k.startswith("parallel")}
    mean_parts = {kind: {k: sum(p[k] for p in ps if k in p) / len(ps) for k in ps[0]}
                  for kind, ps in parts.items()}
    return {"jobs": n, "walls": walls, "ratios": ratios, "breakdown": mean_parts,
            "spawn_ms": spawn, "cpu": cpu, "cpu_own": cpu_own}


def medium_table(m: dict[str, Any]) -> str:
    n = m["jobs"]
    lines = [f"(e) medium grain: {n} jobs of {MEDIUM_SECONDS} s on 2 slots, brasil / GNU parallel "
             f"-j2, median (min–max) of {len(m['ratios']['plain'])} rounds:"]
    targets = {"plain": 1.02, "isolated": 1.05, "isolated_write": 1.05}
    for kind, rs in m["ratios"].items():
        med = sorted(rs)[len(rs) // 2]
        target = targets[kind.partition("@")[0]]
        per_job = [(m["walls"][kind][i] - m["walls"]["parallel_write" if "write" in kind
                                                       else "parallel"][i]) * 2 / n * 1000
                   for i in range(len(rs))]
        lines.append(f"  {kind:22} {spread(rs)}  ({sorted(per_job)[len(per_job) // 2]:+.1f} ms "
                     f"per job per slot) target ≤ {target:.2f} "
                     f"{'PASS' if med <= target else 'MISS'}")
    lines.append("  CPU per job, ms (median of rounds; everything / brasil's daemons alone): " +
                 ", ".join(f"{k} {sorted(v)[len(v) // 2] / n * 1000:.1f}" + (
                     f" / {sorted(m['cpu_own'][k])[len(v) // 2] / n * 1000:.1f}"
                     if m["cpu_own"][k] else "") for k, v in m["cpu"].items()))
    kinds = list(m["breakdown"])
    names = list(dict.fromkeys(k for b in m["breakdown"].values() for k in b))
    lines.append("  where brasil's time goes, mean ms per job: " + " / ".join(kinds))
    for name in names:
        lines.append(f"    {name:42} " + "  ".join(
            f"{m['breakdown'][k][name]:7.2f}" if name in m["breakdown"][k] else "      —"
            for k in kinds))
    lines.append("  a spawn, median ms (measured apart): " + ", ".join(
        f"{k} {v:.2f}" for k, v in m["spawn_ms"].items()))
    return "\n".join(lines)


# ---- peers -------------------------------------------------------------------------------------

def venv(name: str, packages: list[str]) -> Path:
    """A virtualenv of its own under .peers/ with ``packages`` (pinned); made once."""
    d = PEERS / name
    mark = d / ".installed"
    if not mark.exists():
        subprocess.run([sys.executable, "-m", "venv", str(d)], check=True)
        subprocess.run([str(d / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        *packages], check=True, capture_output=True, timeout=900)
        mark.touch()
    return d / "bin" / "python"


DASK_WORKLOAD = r"""
import os, subprocess, sys, time, json, signal
from dask.distributed import Client
addr, n, cmd, freeze = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def run(i, cmd=cmd):
    return subprocess.run(cmd, shell=True).returncode
c = Client(addr, timeout=30)
while len(c.scheduler_info()["workers"]) < int(sys.argv[5]):
    time.sleep(0.05)
t0 = time.monotonic()
fs = [c.submit(run, i, pure=False) for i in range(n)]
if freeze != "-":
    time.sleep(1.0)
    os.killpg(int(freeze), signal.SIGSTOP)
deadline = float(sys.argv[6])
done = False
try:
    c.gather(fs, errors="raise") if deadline <= 0 else [f.result(timeout=max(deadline - (time.monotonic() - t0), 0.1)) for f in fs]
    done = True
except Exception:
    pass
print(json.dumps({"seconds": time.monotonic() - t0, "done": done}))
c.close()
"""


def kill_groups(procs: list[subprocess.Popen[Any]]) -> None:
    """A peer's processes, each the leader of its group, gone with their children (thawed
    first: a frozen worker ignores everything but SIGKILL and SIGCONT, and must not linger)."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGCONT)
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def dask_run(py: Path, tmp: str, workers: list[dict[str, Any]], n: int, cmd: str,
             freeze: bool = False, cap: float = 120.0) -> dict[str, Any]:
    port = 8786 + os.getpid() % 1000
    procs = []
    try:
        sched = subprocess.Popen([str(py), "-m", "distributed.cli.dask_scheduler", "--host",
                                  "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        procs.append(sched)
        for w in workers:
            procs.append(subprocess.Popen(
                [str(py), "-m", "distributed.cli.dask_worker", f"127.0.0.1:{port}", "--nthreads",
                 str(w.get("slots", 2)), "--no-nanny", "--no-dashboard",
                 "--local-directory", tmp], env={**os.environ, **w.get("env", {})},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        script = os.path.join(tmp, "dask_workload.py")
        Path(script).write_text(DASK_WORKLOAD)
        r = subprocess.run([str(py), script, f"127.0.0.1:{port}", str(n), cmd,
                            str(procs[1].pid) if freeze else "-", str(len(workers)),
                            str(cap)], capture_output=True, text=True, timeout=cap + 120,
                           cwd=tmp)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-500:])
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        kill_groups(procs)


def bench_dask(quick: bool) -> dict[str, Any]:
    py = venv("dask", ["dask[distributed]==2026.8.0"])
    res: dict[str, Any] = {}
    n = 16 if quick else 40
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as d:
        for key, slow in (("a_slow", True), ("a_no_slow", False)):
            r = dask_run(py, d, straggler_workers(slow), n, SLEEP)
            res[key] = r["seconds"]
            print(f"  dask {key}: {r['seconds']:.2f} s", flush=True)
        r = dask_run(py, d, straggler_workers(False), n, SLEEP, freeze=True, cap=60.0)
        res["b_frozen"] = r["seconds"] if r["done"] else None
        frozen = f"{r['seconds']:.1f} s" if r["done"] else "> 60 s (capped)"
        print(f"  dask b_frozen: {frozen}", flush=True)
        m = 1000 if quick else 5000
        r = dask_run(py, d, [{"slots": 2}, {"slots": 2}], m, "true")
        res["c_plain"] = m / r["seconds"]
        print(f"  dask c_plain: {res['c_plain']:.0f} jobs/s", flush=True)
    return res


HQ_WORKLOAD = r"""
import sys, time, json
from hyperqueue import Job, LocalCluster
n = int(sys.argv[1])
with LocalCluster() as cluster:
    cluster.start_worker()
    client = cluster.client()
    job = Job()
    for i in range(n):
        job.program(["true"])
    t0 = time.monotonic()
    sub = client.submit(job)
    client.wait_for_jobs([sub])
    print(json.dumps({"seconds": time.monotonic() - t0}))
"""


def bench_hq(quick: bool) -> dict[str, Any]:
    py = venv("hyperqueue", ["hyperqueue==0.27.0"])
    n = 1000 if quick else 5000
    with tempfile.TemporaryDirectory(prefix="bench-hq-") as d:
        script = os.path.join(d, "hq_workload.py")
        Path(script).write_text(HQ_WORKLOAD)
        r = subprocess.run([str(py), script, str(n)], capture_output=True, text=True,
                           timeout=600, cwd=d)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-500:])
        secs = json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
    rate = n / secs
    print(f"  hyperqueue c_plain: {rate:.0f} jobs/s", flush=True)
    return {"c_plain": rate}


def apt_install(*packages: str) -> None:
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True)
               .returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"needs Debian packages {' '.join(missing)} (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       capture_output=True, env=env, timeout=900)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=900)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                            *missing], capture_output=True, env=env, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(missing)} failed")


WQ_LIBS = ("openmpi-bin", "libglobus-common0", "libglobus-gss-assist3", "libglobus-gssapi-gsi4",
           "libjsonparser1.1")


def wq_install() -> Path:
    """Work Queue's binaries, unpacked from Debian's coop-computing-tools into .peers/ rather than
    installed: the package depends on libfuse2, whose presence makes mfusepy (and so `brasil
    mount`) load FUSE 2 instead of 3. makeflow and work_queue_worker need only the libraries
    installed here."""
    d = PEERS / "workqueue"
    binary = d / "usr" / "bin" / "makeflow"
    if not binary.exists():
        apt_install(*WQ_LIBS)
        d.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["apt-get", "download", "coop-computing-tools"], cwd=d,
                           capture_output=True, timeout=600)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=900)
            subprocess.run(["apt-get", "download", "coop-computing-tools"], cwd=d, check=True,
                           capture_output=True, timeout=600)
        deb = next(d.glob("coop-computing-tools_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(d)], check=True)
        deb.unlink()
    return binary.parent


def wq_run(tmp: str, workers: list[dict[str, Any]], cmds: list[str], freeze: bool = False,
           cap: float = 120.0) -> float | None:
    """makeflow -T wq on a Makeflow of independent rules; workers: work_queue_worker."""
    port = 9123 + os.getpid() % 500
    mf = os.path.join(tmp, "Makeflow")
    scripts: dict[str, str] = {}
    with open(mf, "w") as f:  # each command in a script (makeflow would expand its $(...))
        for i, c in enumerate(cmds):
            name = scripts.setdefault(c, f"job{len(scripts)}.sh")
            f.write(f"out.{i}: {name}\n\tsh {name} && touch out.{i}\n\n")
    for c, name in scripts.items():
        Path(tmp, name).write_text(c + "\n")
    for p in Path(tmp).glob("out.*"):
        p.unlink()
    for p in Path(tmp).glob("Makeflow.makeflowlog"):
        p.unlink()
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    bindir = wq_install()
    procs = []
    try:
        t0 = time.monotonic()
        mk = subprocess.Popen([str(bindir / "makeflow"), "-T", "wq", "-p", str(port), "-N", "", mf],
                              cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(mk)
        for w in workers:
            procs.append(subprocess.Popen(
                [str(bindir / "work_queue_worker"), "--cores", str(w.get("slots", 2)), "localhost", str(port)],
                cwd=tmp, env={**env, **w.get("env", {})}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        if freeze:
            time.sleep(1.0)
            os.killpg(procs[1].pid, signal.SIGSTOP)
        try:
            mk.wait(cap)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - t0 if mk.returncode == 0 else None
    finally:
        kill_groups(procs)


def bench_wq(quick: bool) -> dict[str, Any]:
    wq_install()
    res: dict[str, Any] = {}
    n = 16 if quick else 40
    with tempfile.TemporaryDirectory(prefix="bench-wq-") as d:
        for key, slow in (("a_slow", True), ("a_no_slow", False)):
            res[key] = wq_run(d, straggler_workers(slow), [SLEEP] * n)
            print(f"  work queue {key}: {res[key]}", flush=True)
        res["b_frozen"] = wq_run(d, straggler_workers(False), [SLEEP] * n, freeze=True, cap=60)
        print(f"  work queue b_frozen: {res['b_frozen'] or '> 60 s (capped)'}", flush=True)
        m = 500 if quick else 2000
        t = wq_run(d, [{"slots": 2}, {"slots": 2}], ["true"] * m, cap=600)
        res["c_plain"] = m / t if t else None
        print(f"  work queue c_plain: {res['c_plain']}", flush=True)
    return res


# ---- the table ----------------------------------------------------------------------------------

def fmt(v: Any, unit: str = "s") -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.2f} {unit}" if unit == "s" else f"{v:.0f}{unit}"


def capped(peers: dict[str, Any], name: str, text: str) -> str:
    """A frozen-worker run that had not finished when the bench stopped waiting (60 s); a peer
    that did not run at all (--no-peers, not installed) stays "—"."""
    ran = isinstance(peers.get(name), dict) and "b_frozen" in peers[name]
    return "> 60 s" if ran and text == "—" else text


def table(b: dict[str, Any], peers: dict[str, Any]) -> str:
    def peer(name: str, key: str, unit: str = "s") -> str:
        p = peers.get(name)
        if isinstance(p, str):
            return "skipped"
        return fmt(p.get(key) if p else None, unit)
    a_r, a_n, a_s = (b[k]["makespan"] for k in ("a_redundancy", "a_no_redundancy", "a_no_slow"))
    rows = [
        ("(a) makespan, one worker 10x slow", fmt(a_r), fmt(a_n) + " (--redundancy 1)",
         peer("workqueue", "a_slow"), peer("dask", "a_slow"), "—"),
        ("(a) makespan, no slow worker", fmt(a_s), "", peer("workqueue", "a_no_slow"),
         peer("dask", "a_no_slow"), "—"),
        ("(b) makespan, a worker frozen at 1 s", fmt(b["b_frozen"]["makespan"]), "",
         capped(peers, "workqueue", peer("workqueue", "b_frozen")),
         capped(peers, "dask", peer("dask", "b_frozen")), "—"),
        ("(c) true jobs/s, not isolated", fmt(b["c_plain"]["rate"], "/s"), "",
         peer("workqueue", "c_plain", "/s"), peer("dask", "c_plain", "/s"),
         peer("hyperqueue", "c_plain", "/s")),
        ("(c) true jobs/s, isolated", fmt(b["c_isolated"]["rate"], "/s"), "", "—", "—", "—"),
        ("(d) 100,000 jobs submitted", fmt(b["d_submit"]["seconds"]),
         f"database {b['d_submit']['db_bytes'] / 1e6:.1f} MB", "—", "—", "—"),
    ]
    head = ("", "brasil", "", "work queue", "dask", "hyperqueue")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(6)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head] + rows]
    fz = b["b_frozen"]
    lines += ["",
              f"(a) with/without redundancy: {a_r / a_n:.2f} (target ≤ 0.70) "
              f"{'PASS' if a_r / a_n <= 0.7 else 'MISS'}; with redundancy/no slow: "
              f"{a_r / a_s:.2f} (target ≤ 1.25) {'PASS' if a_r / a_s <= 1.25 else 'MISS'}",
              f"(b) frozen/no failure: {fz['makespan'] / a_s:.2f} (target ≤ 1.5) "
              f"{'PASS' if fz['makespan'] / a_s <= 1.5 else 'MISS'}; after the thaw: "
              f"{fz['refused']} late report(s) refused, {fz['lost']} lease(s) lost, every job "
              f"committed exactly once: {fz['committed_once']}",
              f"(c) {b['c_plain']['rate']:.0f}/s (target ≥ 1000) "
              f"{'PASS' if b['c_plain']['rate'] >= 1000 else 'MISS'}; isolated "
              f"{b['c_isolated']['rate']:.0f}/s (target ≥ 150) "
              f"{'PASS' if b['c_isolated']['rate'] >= 150 else 'MISS'}"]
    for name, p in peers.items():
        if isinstance(p, str):
            lines.append(f"{name}: skipped: {p}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller workloads")
    ap.add_argument("--no-peers", action="store_true", help="Brasil only")
    ap.add_argument("--no-json", action="store_true")
    ap.add_argument("--only", choices=["medium"], help="run only this scenario (e)")
    ap.add_argument("--pairs", type=int, default=3, help="rounds of (e), alternating (default 3)")
    ap.add_argument("--medium-jobs", type=int, default=200, help="jobs per run of (e)")
    ap.add_argument("--against", metavar="REV", help="(e) also with brasil at git revision REV, "
                    "in the same rounds (installed as bench/compare.py does)")
    args = ap.parse_args()
    print(f"batch benchmark on {os.cpu_count()} cores", flush=True)
    medium = asyncio.run(bench_medium(args.medium_jobs, args.pairs, args.against))
    if args.only == "medium":
        print()
        print(medium_table(medium))
        return 0
    b = asyncio.run(bench_brasil(args.quick))
    peers: dict[str, Any] = {}
    if not args.no_peers:
        for name, fn in (("workqueue", bench_wq), ("dask", bench_dask), ("hyperqueue", bench_hq)):
            try:
                peers[name] = fn(args.quick)
            except Exception as e:  # noqa: BLE001 - a peer that will not run is reported
                peers[name] = f"{type(e).__name__}: {str(e)[:200]}"
                print(f"  {name}: skipped: {peers[name]}", flush=True)
    print()
    print(table(b, peers))
    print(medium_table(medium))
    if not args.no_json:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"brasil": b, "medium": medium, "peers": peers}, indent=1,
                                      default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
