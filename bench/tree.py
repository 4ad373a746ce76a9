"""A tree of real daemons: reservation cost against N, the Brasil paper's Figure 4 deployment
against xargs, the root's status read, and the daemons' memory.

    .venv/bin/python bench/tree.py [--quick] [--no-json]
    .venv/bin/python bench/tree.py --profile [--py-spy PATH] [--profile-nodes n0,n1,n1.1]

The tree is ``brasil cluster up --depth 2 --fanout 8 --slots 32`` (1 + 8 + 64 = 73 daemons, 2,336
slots; ``--quick``: fanout 4, 8 slots, 21 daemons, 168 slots) in a temporary directory, torn down
with ``brasil cluster down`` whatever happens. One client (brasil.ninep.client.Client, one
connection to the root's Unix socket, with the cluster secret) drives it.

a. ``res N`` for N = 1, 16, 128, 2048 (quick: 1, 16, 64, 128): read ``clone``, then the write of
   ``res N`` to the session's ``ctl`` is timed until it returns; then ``close``, and the root's
   ``status`` is polled until its total line shows every slot free again (the release is
   asynchronous below the root; its time is reported too) before the next measurement. Median of
   5, the Ns interleaved. While the slots are held, the root's status says which nodes hold them:
   the table shows how many and how deep. SPEC §4 (the paper's Figure 5): the cost grows with the
   depth reached, not with N. Printed: t(max N)/t(1), and — the verdict — t(max N)/t(smallest N
   that reaches the same depth) ≤ 1.5.
b. Figure 4: clone, ``res N``, ``exec date``, read ``stdio`` to EOF (N lines checked), close, with
   N = 2048 (quick: 128), against ``seq N | xargs -P<cores> -I{} date`` and ``… sh -c date``, in
   the same run, interleaved, alternating who goes first. Median of 3; ratio brasil/xargs (median
   of the back-to-back pairs' ratios) ≤ 1.2. The split res/exec/read/close is printed.
c. 20 reads of the root's ``/csrv/local/status`` (every node's line and a total line): median and
   p95 < 100 ms.
d. VmRSS of the daemons (pids from DIR/*.pid): sum and max, idle (tree just up), while a
   Figure 4 deployment holds its slots (after the read, before close), and after the deployments.

Results: tables and PASS/MISS lines on stdout, JSON in bench/results/tree.json. A miss does not
make the exit status non-zero; a tree that will not start or a session that misbehaves does.
"Other processes used X cores" is the noise guard: CPU the machine spent outside this script,
its children and the daemons while measuring.

``--profile`` brings the tree up and samples the named daemons with py-spy (default
/tmp/venv-prof/bin/py-spy) through Figure 4 deployments, and prints where each one's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from brasil.ninep.auth import client_auth, load_secret
from brasil.ninep.client import Client
from brasil.ninep.constants import OWRITE
from brasil.ninep.errors import NinepError
from common import (
    CORES,
    TICK,
    BenchError,
    Sampled,
    add_profile_args,
    busy_cpu,
    check_stdio,
    print_py_spy,
    vm_rss,
    xargs,
)
from common import proc_cpu as _proc_cpu

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "tree.json"
BRASIL = Path(sys.executable).with_name("brasil")

FULL = {"depth": 2, "fanout": 8, "slots": 32, "sizes": (1, 16, 128, 2048), "res_repeats": 5,
        "deploy_repeats": 3}
QUICK = {"depth": 2, "fanout": 4, "slots": 8, "sizes": (1, 16, 64, 128), "res_repeats": 3,
         "deploy_repeats": 2}
STATUS_READS = 20
TARGET_FLAT = 1.5      # t(max N) / t(smallest N reaching the same depth)
TARGET_RATIO = 1.2     # Figure 4: brasil / xargs (issue 17)
TARGET_STATUS = 0.100  # seconds, median and p95 of the root's status read
FREE_TIMEOUT = 60.0
NOISY = 0.25  # cores used by other processes meanwhile that make the figures suspect
SH_DATE = ("sh", "-c", "date")


# ---- CPU from /proc -----------------------------------------------------------------------------

def proc_cpu(pid: int | str = "self") -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process; (0, 0) once a daemon has gone."""
    return _proc_cpu(pid, default=(0.0, 0.0))


class CpuWatch:
    """How much CPU went elsewhere than us, our children and the daemons (and theirs)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def ours(self) -> float:
        return sum(proc_cpu()) + sum(sum(proc_cpu(p)) for p in self.pids)

    def __enter__(self) -> CpuWatch:
        self.t0, self.busy0, self.ours0 = time.perf_counter(), busy_cpu(), self.ours()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.t0
        self.daemons_and_us = self.ours() - self.ours0
        other = (busy_cpu() - self.busy0) - self.daemons_and_us
        self.other_cores = max(0.0, other) / self.wall if self.wall > 0 else 0.0


# ---- the tree ---------------------------------------------------------------------------------

class Tree:
    def __init__(self, depth: int, fanout: int, slots: int) -> None:
        self.depth, self.fanout, self.slots = depth, fanout, slots
        self.nodes = sum(fanout ** d for d in range(depth + 1))
        self.total = self.nodes * slots
        self.dir = tempfile.mkdtemp(prefix="brasil-tree-", dir="/tmp")  # short socket paths
        self.pids: dict[str, int] = {}
        self.address = ""
        self.up_seconds = 0.0
        self.up_args: list[str] = []  # more `cluster up` options (bench/group.py: --export-root)

    def up(self) -> None:
        t0 = time.perf_counter()
        r = subprocess.run([str(BRASIL), "cluster", "up", "--depth", str(self.depth), "--fanout",
                            str(self.fanout), "--slots", str(self.slots), "--dir", self.dir,
                            *self.up_args],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        self.up_seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise BenchError(f"cluster up failed ({r.returncode}):\n{r.stderr[-1500:]}")
        self.address = r.stdout.split()[0]
        for f in os.listdir(self.dir):
            if f.endswith(".pid"):
                with open(os.path.join(self.dir, f)) as fh:
                    self.pids[f[:-4]] = int(fh.read().strip())
        if len(self.pids) != self.nodes:
            raise BenchError(f"{len(self.pids)} pid files for {self.nodes} daemons")
        print(f"{self.nodes} daemons up in {self.up_seconds:.1f} s in {self.dir}", file=sys.stderr)

    def down(self) -> None:
        if any(f.endswith(".pid") for f in os.listdir(self.dir)):
            r = subprocess.run([str(BRASIL), "cluster", "down", "--dir", self.dir],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                print(f"warning: cluster down: {r.stderr.strip()}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs_tail(self) -> str:
        out = []
        for name in ("n0", "n1", "n1.1"):
            try:
                text = Path(self.dir, f"{name}.log").read_text(errors="replace")
            except OSError:
                continue
            out.append(f"--- {name}.log\n{text[-600:]}")
        return "\n".join(out)

    def memory(self) -> dict[str, Any]:
        rss = {name: vm_rss(pid) for name, pid in self.pids.items()}
        top = max(rss, key=lambda k: rss[k])
        return {"sum_kb": sum(rss.values()), "max_kb": rss[top], "max_node": top,
                "root_kb": rss.get("n0", 0), "per_node_kb": rss}

    async def client(self) -> Client:
        return await Client.connect(self.address,
                                    auth=client_auth(load_secret(f"{self.dir}/secret")))


def node_depth(name: str) -> int:
    return 0 if name == "n0" else name.count(".") + 1


async def status(c: Client) -> list[list[str]]:
    return [ln.split() for ln in (await c.read("csrv/local/status")).decode().splitlines()]


async def wait_free(c: Client, tree: Tree) -> float:
    """Until the root's total line shows every slot of every node free; seconds it took."""
    t0 = time.perf_counter()
    while True:
        rows = await status(c)
        total = rows[-1]
        if (total[0] == "total" and int(total[1]) == tree.total and int(total[2]) == tree.total
                and total[-1] == f"nodes={tree.nodes}"):
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > FREE_TIMEOUT:
            raise BenchError(f"slots not all free {FREE_TIMEOUT:g}s after close: {' '.join(total)}")
        await asyncio.sleep(0.01)


async def holders(c: Client) -> tuple[int, int]:
    """(nodes holding reserved slots, deepest level among them), from the root's status."""
    used = [r[0] for r in (await status(c))[:-1] if len(r) > 2 and int(r[2]) < int(r[1])]
    return len(used), max((node_depth(n) for n in used), default=0)


# ---- a. res N ---------------------------------------------------------------------------------

async def one_res(c: Client, tree: Tree, n: int) -> dict[str, float]:
    sid = (await c.read("csrv/local/clone")).decode().strip()
    ctl = await c.open(f"csrv/local/{sid}/ctl", OWRITE)
    try:
        cpu0 = sum(sum(proc_cpu(pid)) for pid in tree.pids.values())
        t0 = time.perf_counter()
        await ctl.write(f"res {n}\n")
        t = time.perf_counter() - t0
        cpu = sum(sum(proc_cpu(pid)) for pid in tree.pids.values()) - cpu0
        nodes, deepest = await holders(c)
        await ctl.write("close\n")
    finally:
        await ctl.close()
    release = await wait_free(c, tree)
    return {"res": t, "nodes": nodes, "depth": deepest, "release": release, "cpu": cpu}


async def res_part(c: Client, tree: Tree, sizes: tuple[int, ...], repeats: int) -> dict[str, Any]:
    for n in sizes:  # warm up: first remote sessions, mounts, lazy imports everywhere
        await one_res(c, tree, n)
    samples: dict[int, dict[str, list[float]]] = {n: {"res": [], "nodes": [], "depth": [],
                                                      "release": [], "cpu": []} for n in sizes}
    for r in range(repeats):
        for n in (sizes if r % 2 == 0 else sizes[::-1]):
            for k, v in (await one_res(c, tree, n)).items():
                samples[n][k].append(v)
    points = {n: {"res": statistics.median(s["res"]), "nodes": max(s["nodes"]),
                  "depth": max(s["depth"]), "release": statistics.median(s["release"]),
                  "cpu": statistics.median(s["cpu"]), "samples": s} for n, s in samples.items()}
    top, low = max(sizes), min(sizes)
    same = min(n for n in sizes if points[n]["depth"] == points[top]["depth"])
    return {"points": points, "ratio_max_over_1": points[top]["res"] / points[low]["res"],
            "same_depth_n": same, "flat_ratio": points[top]["res"] / points[same]["res"]}


# ---- b. Figure 4 ------------------------------------------------------------------------------

PHASES = ("clone", "res", "exec", "read", "close")


async def deploy(c: Client, tree: Tree, n: int, mem_at_hold: list[dict[str, Any]] | None = None
                 ) -> dict[str, float]:
    t0 = time.perf_counter()
    sid = (await c.read("csrv/local/clone")).decode().strip()
    t1 = time.perf_counter()
    ctl = await c.open(f"csrv/local/{sid}/ctl", OWRITE)
    try:
        await ctl.write(f"res {n}\n")
        t2 = time.perf_counter()
        await ctl.write("exec date\n")
        t3 = time.perf_counter()
        out = await c.read(f"csrv/local/{sid}/stdio")
        t4 = time.perf_counter()
        if mem_at_hold is not None:  # outside the timed phases
            mem_at_hold.append(tree.memory())
            t4b = time.perf_counter()
        else:
            t4b = t4
        await ctl.write("close\n")
    finally:
        await ctl.close()
    t5 = time.perf_counter()
    check_stdio(sid, out, n)
    release = await wait_free(c, tree)
    return {"clone": t1 - t0, "res": t2 - t1, "exec": t3 - t2, "read": t4 - t3,
            "close": t5 - t4b, "total": (t5 - t0) - (t4b - t4), "release": release}


async def deploy_part(c: Client, tree: Tree, n: int, repeats: int) -> dict[str, Any]:
    await deploy(c, tree, n)  # warm up
    xargs(n)
    keys = ("brasil", "xargs", "xargs_sh", "ratio", "release", *PHASES)
    s: dict[str, list[float]] = {k: [] for k in keys}
    held: list[dict[str, Any]] = []
    cpu: dict[str, float] = {}  # CPU seconds per run, means (CPU times come in 10 ms ticks)
    for r in range(repeats):
        runs = ["brasil", "xargs", "xargs_sh"]
        for what in (runs if r % 2 == 0 else runs[::-1]):
            if what == "brasil":
                cpu0 = {name: proc_cpu(pid) for name, pid in tree.pids.items()}
                b = await deploy(c, tree, n, held if r == repeats - 1 else None)
                for name, pid in tree.pids.items():
                    own, kids = proc_cpu(pid)
                    lvl = f"cpu_daemons_depth{node_depth(name)}"
                    cpu[lvl] = cpu.get(lvl, 0.0) + (own - cpu0[name][0]) / repeats
                    cpu["cpu_cmds"] = cpu.get("cpu_cmds", 0.0) + (kids - cpu0[name][1]) / repeats
                s["brasil"].append(b["total"])
                s["release"].append(b["release"])
                for p in PHASES:
                    s[p].append(b[p])
            elif what == "xargs":
                k0 = proc_cpu()[1]
                s["xargs"].append(xargs(n))
                cpu["cpu_xargs"] = cpu.get("cpu_xargs", 0.0) + (proc_cpu()[1] - k0) / repeats
            else:
                s["xargs_sh"].append(xargs(n, SH_DATE))
        s["ratio"].append(s["brasil"][-1] / s["xargs"][-1])
    return {"n": n, **{k: statistics.median(v) for k, v in s.items()}, "samples": s,
            "cpu": dict(sorted(cpu.items())), "memory_held": held[-1] if held else None}


# ---- c. status --------------------------------------------------------------------------------

async def status_part(c: Client, tree: Tree, reads: int) -> dict[str, Any]:
    await c.read("csrv/local/status")
    times = []
    for _ in range(reads):
        t0 = time.perf_counter()
        text = await c.read("csrv/local/status")
        times.append(time.perf_counter() - t0)
        lines = text.decode().splitlines()
        if len(lines) != tree.nodes + 1 or not lines[-1].startswith("total "):
            raise BenchError(f"status: {len(lines)} lines, expected {tree.nodes + 1} ending with total")
    st = sorted(times)
    p95 = st[min(len(st) - 1, -(-95 * len(st) // 100) - 1)]  # nearest rank
    return {"reads": reads, "median": statistics.median(times), "p95": p95, "max": st[-1],
            "lines": tree.nodes + 1, "samples": times}


# ---- the run ----------------------------------------------------------------------------------

async def measure(tree: Tree, cfg: dict[str, Any]) -> dict[str, Any]:
    mem_idle = tree.memory()
    c = await tree.client()
    try:
        await wait_free(c, tree)
        with CpuWatch(list(tree.pids.values())) as w_res:
            res = await res_part(c, tree, cfg["sizes"], cfg["res_repeats"])
        with CpuWatch(list(tree.pids.values())) as w_dep:
            dep = await deploy_part(c, tree, max(cfg["sizes"]), cfg["deploy_repeats"])
        mem_after = tree.memory()
        with CpuWatch(list(tree.pids.values())) as w_st:
            st = await status_part(c, tree, STATUS_READS)
    finally:
        await c.close()
    return {"res": {**res, "other_cores": w_res.other_cores, "wall": w_res.wall},
            "deployment": {**dep, "other_cores": w_dep.other_cores, "wall": w_dep.wall,
                           "cpu_daemons_and_us": w_dep.daemons_and_us},
            "status": {**st, "other_cores": w_st.other_cores},
            "memory": {"idle": mem_idle, "held": dep.pop("memory_held"), "after": mem_after}}


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def noisy(w: float) -> str:
    return (f"\n  other processes used {w:.2f} core(s) meanwhile"
            + ("  ← NOISY: figures suspect" if w > NOISY else ""))


def report(tree: Tree, cfg: dict[str, Any], r: dict[str, Any]) -> list[str]:
    verdicts = []
    print(f"\ntree: depth {tree.depth}, fanout {tree.fanout}: {tree.nodes} daemons × {tree.slots} "
          f"slots = {tree.total} slots; up in {tree.up_seconds:.1f} s; {CORES} cores; "
          f"one 9P connection to the root (Unix socket)")

    a = r["res"]
    print(f"\n(a) res N: write of 'res N' to a fresh session's ctl until it returns "
          f"(median of {cfg['res_repeats']});\n    then close, and wait until the root's status "
          f"shows all slots free ('release')")
    print("    daemon CPU: all daemons' CPU time during the res (from /proc; clock ticks of "
          f"{1000 / TICK:.0f} ms),\n    per node: that divided by the nodes holding slots")
    print(f"{'N':>6} {'res ms':>9} {'nodes':>6} {'depth':>6} {'release ms':>11} "
          f"{'daemon CPU ms':>14} {'per node ms':>12} {'cores busy':>11}")
    for n, p in a["points"].items():
        busy = p["cpu"] / p["res"] if p["res"] else 0.0
        print(f"{n:>6} {ms(p['res']):>9} {p['nodes']:>6} {p['depth']:>6} {ms(p['release']):>11} "
              f"{ms(p['cpu']):>14} {ms(p['cpu'] / max(1, p['nodes'])):>12} {busy:>11.2f}")
    print("    (when 'cores busy' reaches the machine's cores, the daemons queue for CPU: wall time\n"
          "     then grows with how many take part, not with the depth of the tree)")
    top = max(cfg["sizes"])
    print(f"t({top})/t({min(cfg['sizes'])}) = {a['ratio_max_over_1']:.1f}   "
          f"t({top})/t({a['same_depth_n']}) = {a['flat_ratio']:.2f} (both reach depth "
          f"{a['points'][top]['depth']}){noisy(a['other_cores'])}")
    if a["same_depth_n"] == top:
        verdicts.append(f"(no verdict) res: no smaller N reaches depth {a['points'][top]['depth']}")
    else:
        ok = a["flat_ratio"] <= TARGET_FLAT
        verdicts.append(f"{'PASS' if ok else 'MISS'}: res flat in N: t({top})/t({a['same_depth_n']}) = "
                        f"{a['flat_ratio']:.2f} at the same depth (target ≤ {TARGET_FLAT}); "
                        f"t({top})/t(1) = {a['ratio_max_over_1']:.1f}")

    d = r["deployment"]
    n = d["n"]
    print(f"\n(b) Figure 4, N={n}: clone, res, exec date, read stdio to EOF, close  vs  "
          f"seq {n} | xargs -P{CORES} -I{{}} date (median of {cfg['deploy_repeats']})")
    print(f"{'brasil ms':>10} {'xargs ms':>9} {'ratio':>6} {'xargs sh -c ms':>15} {'ratio sh':>9}")
    print(f"{ms(d['brasil']):>10} {ms(d['xargs']):>9} {d['ratio']:>6.2f} {ms(d['xargs_sh']):>15} "
          f"{d['brasil'] / d['xargs_sh']:>9.2f}")
    print("split (ms): " + "  ".join(f"{p} {ms(d[p])}" for p in PHASES)
          + f"   (then release {ms(d['release'])}, not counted){noisy(d['other_cores'])}")
    cpu = d["cpu"]
    levels = "  ".join(f"depth {k[-1]} {v:.2f}" for k, v in cpu.items() if k.startswith("cpu_daemons"))
    print(f"CPU s per run (means): daemons: {levels}; their date processes {cpu['cpu_cmds']:.2f}"
          f"  |  xargs and its dates {cpu['cpu_xargs']:.2f}  ({CORES} cores × {d['brasil']:.2f} s "
          f"= {CORES * d['brasil']:.2f} core-s)")
    ok = d["ratio"] <= TARGET_RATIO
    verdicts.append(f"{'PASS' if ok else 'MISS'}: Figure 4 brasil/xargs at N={n} is {d['ratio']:.2f} "
                    f"(target ≤ {TARGET_RATIO}); {ms(d['brasil'])} ms vs {ms(d['xargs'])} ms"
                    f"{' (noisy)' if d['other_cores'] > NOISY else ''}")

    s = r["status"]
    print(f"\n(c) read of the root's /csrv/local/status ({s['lines']} lines), {s['reads']} reads: "
          f"median {ms(s['median'])} ms, p95 {ms(s['p95'])} ms, max {ms(s['max'])} ms"
          f"{noisy(s['other_cores'])}")
    ok = s["median"] < TARGET_STATUS and s["p95"] < TARGET_STATUS
    verdicts.append(f"{'PASS' if ok else 'MISS'}: status read median {ms(s['median'])} ms, p95 "
                    f"{ms(s['p95'])} ms (target < {TARGET_STATUS * 1000:.0f} ms)")

    m = r["memory"]
    print(f"\n(d) VmRSS of the {tree.nodes} daemons")
    print(f"{'':<36} {'sum MB':>8} {'max MB':>8} {'(node)':>7} {'root MB':>8}")
    for label, key in (("idle (tree just up)", "idle"),
                       (f"held (N={n} after read, pre-close)", "held"),
                       ("after the deployments", "after")):
        v = m[key]
        if v:
            print(f"{label:<36} {v['sum_kb'] / 1024:>8.1f} {v['max_kb'] / 1024:>8.1f} "
                  f"{v['max_node']:>7} {v['root_kb'] / 1024:>8.1f}")
    print()
    for v in verdicts:
        print(v)
    return verdicts


def write_json(tree: Tree, cfg: dict[str, Any], r: dict[str, Any], verdicts: list[str],
               args: argparse.Namespace) -> None:
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": CORES, "python": platform.python_version(),
                    "platform": platform.platform()},
        "quick": args.quick,
        "tree": {"depth": tree.depth, "fanout": tree.fanout, "slots": tree.slots,
                 "daemons": tree.nodes, "total_slots": tree.total, "up_seconds": tree.up_seconds},
        "targets": {"res_flat_ratio": TARGET_FLAT, "brasil_over_xargs": TARGET_RATIO,
                    "status_seconds": TARGET_STATUS},
        "res": {**r["res"], "points": {str(n): p for n, p in r["res"]["points"].items()}},
        "deployment": r["deployment"], "status": r["status"], "memory": r["memory"],
        "summary": verdicts,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


# ---- profile ----------------------------------------------------------------------------------

async def profile_run(tree: Tree, n: int, repeats: int) -> list[dict[str, float]]:
    c = await tree.client()
    try:
        await deploy(c, tree, n)  # warm up before sampling starts
        return [await deploy(c, tree, n) for _ in range(repeats)]
    finally:
        await c.close()


def profile(tree: Tree, cfg: dict[str, Any], args: argparse.Namespace) -> None:
    n = max(cfg["sizes"])
    names = args.profile_nodes.split(",")
    outs = {name: os.path.join(tree.dir, f"{name}.spy") for name in names}
    asyncio.run(_warm(tree, n))
    spy = [args.py_spy, "record", "--rate", "250", "--idle", "--full-filenames", "--nolineno",
           "--format", "raw"]
    with Sampled(spy, {name: tree.pids[name] for name in names}, outs) as sampled:
        runs = asyncio.run(profile_run(tree, n, args.profile_repeats))
    cpu = sampled.cpu
    tot = statistics.median(x["total"] for x in runs)
    split = "  ".join(f"{p} {ms(statistics.median(x[p] for x in runs))}" for p in PHASES)
    print(f"Figure 4 N={n} under py-spy, {len(runs)} deployments: median {ms(tot)} ms ({split})")
    for name in names:
        print(f"\n==== {name} (depth {node_depth(name)}): {cpu[name]:.2f} s CPU over the "
              f"{len(runs)} deployments ====")
        print_py_spy(outs[name], args.profile_top)


async def _warm(tree: Tree, n: int) -> None:
    c = await tree.client()
    try:
        await wait_free(c, tree)
        await deploy(c, tree, n)
    finally:
        await c.close()


# ---- main -------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1+4+16 daemons with 8 slots, N up to 128, fewer repetitions")
    ap.add_argument("--no-json", action="store_true", help=f"do not write {RESULTS.name}")
    add_profile_args(ap, "daemons through Figure 4 deployments", "n0,n1,n1.1",
                     "default: root, a mid-level one, a leaf", 20)
    ap.add_argument("--profile-repeats", type=int, default=5)
    args = ap.parse_args()
    cfg = QUICK if args.quick else FULL
    if not BRASIL.exists():
        print(f"benchmark failed: no {BRASIL}; `make setup` first", file=sys.stderr)
        return 1
    tree = Tree(cfg["depth"], cfg["fanout"], cfg["slots"])
    try:
        tree.up()
        if args.profile:
            profile(tree, cfg, args)
            return 0
        results = asyncio.run(measure(tree, cfg))
    except (BenchError, NinepError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}\n{tree.logs_tail()}", file=sys.stderr)
        return 1
    finally:
        tree.down()
    verdicts = report(tree, cfg, results)
    if not args.no_json:
        write_json(tree, cfg, results, verdicts, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
