"""`brasil run` against clush and pdsh: 2,048 dates on one machine, and a tree over ssh.

    .venv/bin/python bench/run.py [--repeats 3] [--no-ssh] [--no-json]
    .venv/bin/python bench/run.py --profile [--py-spy PATH] [--profile-nodes n0]

Issue 11's "Speed" figures, side by side, every command timed end to end (the wall time of the
process a user would type, interpreter start included) and its output checked:

a. 2,048 × ``date`` here. Brasil: ``brasil run -n 2048 -- date`` (and ``-b``, grouped) against a
   1 + 8 + 64 tree made by ``brasil cluster up --depth 2 --fanout 8 --slots 29`` (73 daemons ×
   29 = 2,117 slots: 28 would make 2,044, too few), with BRASIL=unix:DIR/n0.sock and
   BRASIL_SECRET_FILE=DIR/secret; 2,048 lines ``NODE/RANK: …`` with ranks 0…2047, status 0.
   The others where they run locally: ClusterShell's ``clush -R exec -f F -w 'h[1-2048]' date``
   (and ``clush -b``) and ``pdsh -R exec -f F -w 'h[1-2048]' date`` (and ``| dshbak -c``): the
   exec worker / rcmd module runs the command here once per "host", at most F at a time; 2,048
   lines ``hN: …`` for 2,048 distinct hosts. F is each tool's best of a one-run sweep (8, 32,
   64, 128) made first. ``seq 2048 | xargs -P<cores> -I{} date`` is the floor: no prefix, no
   per-host bookkeeping. Best and median of ``--repeats``, the commands interleaved, alternating
   who goes first. Before each ``brasil run`` the root's status is read until it shows every
   slot free (printed, not counted): the root plans a reservation with its children's status as
   last polled (once a second), so a second 2,048-rank run started within a second of the first
   is refused ("asked 2048, 1925 free in reach"); a read of the root's status refreshes that.
   CPU: core-seconds per run of the command and everything it started (for brasil: the client,
   the 73 daemons and their dates), from /proc.
b. 4 hosts over ssh (tests/services.py's start_ssh_hosts: network namespaces with sshd, on this
   machine): ``brasil cluster up --hosts IP0,…,IP3 --fanout 2`` until it returns (every daemon
   joined), then the first ``brasil run -- true`` (one rank per host): together, the time to a
   usable tree; then warm runs, against ``clush -w IPs true`` and ``pdsh -R ssh -w IPs true``
   over the same ssh, which need no setup but pay ssh on every command; ``brasil cluster down``.
   Needs root and sshd; otherwise that part says why it was skipped.

Results: tables on stdout, JSON in bench/results/run.json. Tools that are not installed
(``sh scripts/bench-deps.sh`` installs Debian's clustershell and pdsh) get a "not installed"
row. "Other processes used X cores" is the noise guard (CPU the machine spent outside this
script, its children and the daemons while measuring).

``--profile`` brings the tree up and samples the named daemons and the ``brasil run`` client
with py-spy (default /tmp/venv-prof/bin/py-spy, line numbers kept) through 3 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ClusterShell.NodeSet import NodeSet

from brasil.ninep.errors import NinepError
from common import CORES, BenchError, Sampled, add_profile_args, print_py_spy, proc_cpu, xargs
from tree import BRASIL, NOISY, CpuWatch, Tree, node_depth, wait_free

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "run.json"

N = 2048
DEPTH, FANOUT = 2, 8
NODES = sum(FANOUT ** d for d in range(DEPTH + 1))  # 73
SLOTS = -(-N // NODES)  # 29: the fewest slots per daemon that hold N ranks
FANOUTS = (8, 32, 64, 128)  # clush's and pdsh's -f, swept once each
HOSTS = f"h[1-{N}]"
SSH_HOSTS = 4
SSH_FANOUT = 2
SSH_WARM = 3  # warm runs over ssh, per tool
TIMEOUT = 300.0
IDLE_SECONDS = 3.0  # how long the idle tree's CPU use is measured, after the runs
LOAD_AT_START = os.getloadavg()  # 1, 5, 15 minutes, when the script starts

LABELLED = re.compile(r"^([^:/ ]+)/(\d+): ")  # brasil: NODE/RANK: line
HOSTED = re.compile(r"^([^: ]+): ")  # clush, pdsh: HOST: line
RANKS = re.compile(r"\((\d+)(?: ranks: [^)]*)?\)$")  # brasil -b: NODESET (N) / (N ranks: …)


# ---- running and checking commands --------------------------------------------------------------

class Run:
    """One timed command: wall seconds, core-seconds, and what its output check found."""

    def __init__(self, seconds: float, cpu: float, info: dict[str, Any]) -> None:
        self.seconds, self.cpu, self.info = seconds, cpu, info


def timed(argv: list[str], env: dict[str, str] | None = None,
          pipe_to: list[str] | None = None) -> tuple[float, float, bytes, bytes, int]:
    """Run ``argv`` (piped into ``pipe_to`` if given) to the end: (wall seconds, CPU seconds of
    the processes and their children, stdout, stderr, the worst exit status)."""
    k0 = proc_cpu()[1]
    t0 = time.perf_counter()
    if pipe_to is None:
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=TIMEOUT)
        out, err, status = r.stdout, r.stderr, r.returncode
    else:
        p1 = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        p2 = subprocess.Popen(pipe_to, env=env, stdin=p1.stdout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        assert p1.stdout is not None
        p1.stdout.close()  # p2 holds it now
        out, err2 = p2.communicate(timeout=TIMEOUT)
        err1 = p1.stderr.read() if p1.stderr else b""
        p1.wait()
        err, status = err1 + err2, max(p1.returncode, p2.returncode)
    t = time.perf_counter() - t0
    return t, proc_cpu()[1] - k0, out, err, status


def fail(what: str, why: str, out: bytes, err: bytes) -> BenchError:
    return BenchError(f"{what}: {why}\nstdout: {out[:300].decode(errors='replace')}\n"
                      f"stderr: {err[-600:].decode(errors='replace')}")


def check_lines(what: str, out: bytes, err: bytes, status: int, labelled: bool) -> dict[str, Any]:
    """N lines, each prefixed: NODE/RANK with ranks 0…N-1 (brasil), or N distinct hosts."""
    if status != 0:
        raise fail(what, f"exit status {status}", out, err)
    lines = out.decode(errors="replace").splitlines()
    if len(lines) != N:
        raise fail(what, f"{len(lines)} line(s), expected {N}", out, err)
    pattern = LABELLED if labelled else HOSTED
    matches = [pattern.match(ln) for ln in lines]
    bad = [ln for ln, m in zip(lines, matches) if m is None]
    if bad:
        raise fail(what, f"{len(bad)} line(s) without a prefix, e.g. {bad[0]!r}", out, err)
    names = {m.group(1) for m in matches if m}
    if labelled:
        ranks = {int(m.group(2)) for m in matches if m}
        if ranks != set(range(N)):
            raise fail(what, f"{len(ranks)} distinct ranks, expected 0…{N - 1}", out, err)
        return {"lines": N, "ranks": N, "nodes": len(names)}
    if len(names) != N:
        raise fail(what, f"{len(names)} distinct hosts, expected {N}", out, err)
    return {"lines": N, "hosts": N}


def check_groups(what: str, out: bytes, err: bytes, status: int, labelled: bool
                 ) -> dict[str, Any]:
    """Grouped output (``-b``, ``dshbak -c``): headers between dashed lines whose counts (ranks
    for brasil, hosts in the node set for the others) add up to N."""
    if status != 0:
        raise fail(what, f"exit status {status}", out, err)
    lines = out.decode(errors="replace").splitlines()
    dashed = {i for i, ln in enumerate(lines) if ln and set(ln) == {"-"}}
    headers, i = [], 0
    while i < len(lines):  # dashes, header, dashes, then the group's lines
        if i in dashed and i + 2 in dashed:
            headers.append(lines[i + 1])
            i += 3
        else:
            i += 1
    count = 0
    for h in headers:
        if labelled:
            m = RANKS.search(h)
            if m is None:
                raise fail(what, f"header without a rank count: {h[:80]!r}", out, err)
            count += int(m.group(1))
        else:
            count += len(NodeSet(h))
    if not headers or count != N:
        raise fail(what, f"{len(headers)} group(s) covering {count}, expected {N}", out, err)
    return {"groups": len(headers), "covered": count}


# ---- the tools ----------------------------------------------------------------------------------

def find_tools() -> dict[str, Any]:
    """Debian's clush (the virtualenv's pip one only if that is all there is), pdsh with its
    exec module, clubak/dshbak; None for what is missing, with why."""
    tools: dict[str, Any] = {}
    clush = "/usr/bin/clush" if os.access("/usr/bin/clush", os.X_OK) else shutil.which("clush")
    if clush:
        v = subprocess.run([clush, "--version"], capture_output=True, text=True)
        tools["clush"] = clush
        tools["clush_version"] = (v.stdout or v.stderr).strip()
    pdsh = shutil.which("pdsh")
    if pdsh:
        mods = subprocess.run([pdsh, "-L"], capture_output=True, text=True)
        if "rcmd/exec" in mods.stdout + mods.stderr:
            tools["pdsh"] = pdsh
            v = subprocess.run([pdsh, "-V"], capture_output=True, text=True)
            tools["pdsh_version"] = (v.stdout + v.stderr).split("\n")[0].strip()
        else:
            tools["pdsh_missing"] = "pdsh has no rcmd/exec module (pdsh -L)"
    tools["dshbak"] = shutil.which("dshbak")
    return tools


def brasil_env(tree: Tree) -> dict[str, str]:
    return {**os.environ, "BRASIL": f"unix:{tree.dir}/n0.sock",
            "BRASIL_SECRET_FILE": f"{tree.dir}/secret"}


async def _free(tree: Tree) -> float:
    c = await tree.client()
    try:
        return await wait_free(c, tree)
    finally:
        await c.close()


def brasil_run(tree: Tree, group: bool) -> Run:
    """``brasil run -n N [-b] -- date``, every slot free before; then how long until every slot
    is free again (not counted)."""
    asyncio.run(_free(tree))
    argv = [str(BRASIL), "run", "-n", str(N)] + (["-b"] if group else []) + ["--", "date"]
    d0 = {name: proc_cpu(pid, (0.0, 0.0)) for name, pid in tree.pids.items()}
    t, cpu, out, err, status = timed(argv, brasil_env(tree))
    split = {"client": cpu, "dates": 0.0}  # CPU seconds: the client, each level, their dates
    for name, pid in tree.pids.items():
        own, kids = proc_cpu(pid, (0.0, 0.0))
        level = f"depth {node_depth(name)}"
        split[level] = split.get(level, 0.0) + own - d0[name][0]
        split["dates"] += kids - d0[name][1]
    what = " ".join(argv[1:])
    info = (check_groups if group else check_lines)(what, out, err, status, labelled=True)
    info["release"] = asyncio.run(_free(tree))
    info["cpu_split"] = split
    return Run(t, sum(split.values()), info)


def tool_argv(tools: dict[str, Any], tool: str, fanout: int, group: bool = False) -> list[str]:
    if tool == "clush":
        return [tools["clush"], "-R", "exec", "-f", str(fanout), "-w", HOSTS] \
            + (["-b"] if group else []) + ["date"]
    return [tools["pdsh"], "-R", "exec", "-f", str(fanout), "-w", HOSTS, "date"]


def tool_run(tools: dict[str, Any], tool: str, fanout: int, group: bool = False) -> Run:
    argv = tool_argv(tools, tool, fanout, group)
    pipe_to = [tools["dshbak"], "-c"] if group and tool == "pdsh" else None
    t, cpu, out, err, status = timed(argv, pipe_to=pipe_to)
    what = " ".join(argv[1:]) + (" | dshbak -c" if pipe_to else "")
    check = check_groups if group else check_lines
    return Run(t, cpu, check(what, out, err, status, labelled=False))


def xargs_run() -> Run:
    k0 = proc_cpu()[1]
    t = xargs(N)
    return Run(t, proc_cpu()[1] - k0, {"lines": N})


# ---- a. 2,048 dates here ------------------------------------------------------------------------

def sweep(tools: dict[str, Any]) -> dict[str, dict[int, float]]:
    """One run of each tool at each fanout: the best fanout is what the repeats use."""
    out: dict[str, dict[int, float]] = {}
    for tool in ("clush", "pdsh"):
        if tool in tools:
            out[tool] = {f: tool_run(tools, tool, f).seconds for f in FANOUTS}
    return out


def local_part(tree: Tree, tools: dict[str, Any], repeats: int) -> dict[str, Any]:
    swept = sweep(tools)
    best_f = {tool: min(ts, key=lambda f: ts[f]) for tool, ts in swept.items()}
    runners: dict[str, Callable[[], Run]] = {
        "brasil": lambda: brasil_run(tree, False),
        "brasil -b": lambda: brasil_run(tree, True),
    }
    for tool in ("clush", "pdsh"):
        if tool in tools:
            f = best_f[tool]
            runners[tool] = lambda tool=tool, f=f: tool_run(tools, tool, f)
            if tool == "clush" or tools.get("dshbak"):
                runners[f"{tool} -b"] = lambda tool=tool, f=f: tool_run(tools, tool, f, True)
    runners["xargs"] = xargs_run
    for fn in runners.values():  # warm up: page cache, lazy imports, the daemons' first session
        fn()
    runs: dict[str, list[Run]] = {k: [] for k in runners}
    names = list(runners)
    with CpuWatch(list(tree.pids.values())) as w:
        for r in range(repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                runs[name].append(runners[name]())
    rows = {}
    for name, rs in runs.items():
        secs = [x.seconds for x in rs]
        info = dict(rs[-1].info)
        if "release" in info:
            info["release"] = statistics.median(x.info["release"] for x in rs)
            info["cpu_split"] = {k: statistics.mean(x.info["cpu_split"][k] for x in rs)
                                 for k in info["cpu_split"]}
        rows[name] = {"best": min(secs), "median": statistics.median(secs),
                      "cpu": statistics.mean(x.cpu for x in rs), "samples": secs, **info}
    c0 = sum(proc_cpu(pid, (0.0, 0.0))[0] for pid in tree.pids.values())
    time.sleep(IDLE_SECONDS)
    idle = (sum(proc_cpu(pid, (0.0, 0.0))[0] for pid in tree.pids.values()) - c0) / IDLE_SECONDS
    return {"sweep": swept, "fanout": best_f, "rows": rows, "other_cores": w.other_cores,
            "wall": w.wall, "idle_cores": idle}


# ---- b. a tree over ssh -------------------------------------------------------------------------

def ssh_part() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from services import ServiceUnavailable, start_ssh_hosts
    except ImportError as e:
        return {"skipped": f"tests/services.py cannot be imported: {e}"}
    try:
        with start_ssh_hosts(n=SSH_HOSTS) as hosts:
            return ssh_measure(hosts)
    except ServiceUnavailable as e:
        return {"skipped": str(e)}


def ssh_measure(hosts: Any) -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix="brasil-ssh-tree-", dir="/tmp")
    res: dict[str, Any] = {"hosts": list(hosts.ips)}
    up = [str(BRASIL), "cluster", "up", "--hosts", ",".join(hosts.ips), "--fanout",
          str(SSH_FANOUT), "--ssh-option=-F", f"--ssh-option={hosts.config}", "--dir", d]
    res["up_command"] = " ".join(up[1:])
    try:
        t, _, out, err, status = timed(up)
        if status != 0:
            raise fail("cluster up --hosts", f"exit status {status}", out, err)
        res["up"] = t
        root = out.decode().split()[0]
        env = {**os.environ, "BRASIL": root, "BRASIL_SECRET_FILE": f"{d}/secret"}
        runs = []
        for _ in range(1 + SSH_WARM):
            t, _, out, err, status = timed([str(BRASIL), "run", "--", "true"], env)
            if status != 0:
                raise fail("brasil run -- true (ssh tree)", f"exit status {status}", out, err)
            runs.append(t)
        res["first_run"], res["warm_runs"] = runs[0], runs[1:]
        t, _, out, err, status = timed([str(BRASIL), "run", "--", "hostname"], env)
        names = {ln.partition(": ")[2] for ln in out.decode().splitlines()}
        if status != 0 or len(names) != SSH_HOSTS:
            raise fail("brasil run -- hostname (ssh tree)",
                       f"status {status}, {len(names)} distinct hostname(s)", out, err)
        res["hostnames"] = sorted(names)
        res["peers"] = ssh_peers(hosts)
    finally:
        t0 = time.perf_counter()
        r = subprocess.run([str(BRASIL), "cluster", "down", "--dir", d], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        res["down"] = time.perf_counter() - t0
        if r.returncode != 0:
            print(f"warning: cluster down: {r.stderr.strip()}", file=sys.stderr)
        shutil.rmtree(d, ignore_errors=True)
    return res


def ssh_peers(hosts: Any) -> dict[str, Any]:
    """``true`` on the 4 hosts over the same ssh with clush and pdsh: no setup, ssh each time."""
    out: dict[str, Any] = {}
    tools = find_tools()
    ips = ",".join(hosts.ips)
    cmds = {}
    if "clush" in tools:
        cmds["clush"] = ([tools["clush"], "-o", f"-F {hosts.config}", "-w", ips, "true"], None)
    if shutil.which("pdsh"):
        cmds["pdsh"] = ([shutil.which("pdsh"), "-R", "ssh", "-w", ips, "true"],
                        {**os.environ, "PDSH_SSH_ARGS_APPEND": f"-F {hosts.config}"})
    for name, (argv, env) in cmds.items():
        times = []
        for _ in range(1 + SSH_WARM):
            t, _, o, e, status = timed(argv, env)
            if status != 0:
                out[name] = {"failed": f"status {status}: {e[-300:].decode(errors='replace')}"}
                break
            times.append(t)
        else:
            out[name] = {"first": times[0], "warm": times[1:], "command": " ".join(argv[1:])}
    return out


# ---- the report ---------------------------------------------------------------------------------

def s(x: float) -> str:
    return f"{x:.2f}"


def report(tree: Tree, tools: dict[str, Any], a: dict[str, Any], b: dict[str, Any] | None,
           repeats: int) -> None:
    print(f"\nmachine: {CORES} cores, {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}; load average {LOAD_AT_START[0]:.1f} before the tree "
          "was started")
    print(f"brasil tree: 1+{FANOUT}+{FANOUT ** 2} = {tree.nodes} daemons × {tree.slots} slots = "
          f"{tree.total} slots (cluster up --depth {DEPTH} --fanout {FANOUT} --slots {tree.slots}), "
          f"up in {tree.up_seconds:.1f} s; root on a Unix socket")
    if "clush" in tools:
        print(f"clush: {tools['clush']} ({tools['clush_version']}), exec worker")
    if "pdsh" in tools:
        print(f"pdsh: {tools['pdsh']} ({tools['pdsh_version']}), exec rcmd module")
    for tool, ts in a["sweep"].items():
        print(f"{tool} -f sweep (1 run each): "
              + "  ".join(f"-f {f}: {s(t)} s" for f, t in ts.items())
              + f"  → -f {a['fanout'][tool]}")

    rows = a["rows"]
    print(f"\n(a) {N:,} × date on this machine: wall time of the command, end to end "
          f"(best and median of {repeats}, interleaved)")
    fc, fp = a["fanout"].get("clush", "F"), a["fanout"].get("pdsh", "F")
    labels = {
        "brasil": f"brasil run -n {N} -- date",
        "brasil -b": f"brasil run -n {N} -b -- date",
        "clush": f"clush -R exec -f {fc} -w '{HOSTS}' date",
        "clush -b": f"clush -R exec -f {fc} -w '{HOSTS}' -b date",
        "pdsh": f"pdsh -R exec -f {fp} -w '{HOSTS}' date",
        "pdsh -b": f"pdsh -R exec -f {fp} -w '{HOSTS}' date | dshbak -c",
        "xargs": f"seq {N} | xargs -P{CORES} -I{{}} date  (floor)",
    }
    width = max(len(v) for v in labels.values())
    print(f"{'command':<{width}} {'best s':>7} {'median s':>9} {'CPU s':>6}  checked")
    for key, label in labels.items():
        if key in rows:
            r = rows[key]
            if "ranks" in r:
                check = f"{r['ranks']} ranks on {r['nodes']} nodes, status 0"
            elif "groups" in r:
                check = f"{r['groups']} group(s) covering {r['covered']}"
            elif "hosts" in r:
                check = f"{r['hosts']} hosts, status 0"
            else:
                check = f"{r['lines']} lines (no prefix)"
            print(f"{label:<{width}} {s(r['best']):>7} {s(r['median']):>9} {r['cpu']:>6.1f}  "
                  f"{check}")
        elif key.startswith(("clush", "pdsh")):
            tool = key.split()[0]
            why = tools.get(f"{tool}_missing", "not installed")
            if key == "pdsh -b" and "pdsh" in tools:
                why = "dshbak not installed"
            print(f"{label:<{width}}   {why}")
    br = rows["brasil"]
    print("brasil run's CPU s per run (means): "
          + ", ".join(f"{k} {v:.2f}" for k, v in br["cpu_split"].items()
                      if not k.startswith("depth"))
          + "; the daemons' own: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(br["cpu_split"].items())
                      if k.startswith("depth"))
          + f"\n  ({CORES} cores × {br['median']:.2f} s = {CORES * br['median']:.2f} core-s); "
          f"the idle tree afterwards: {a['idle_cores']:.2f} cores (parents poll their children's "
          "status every second)")
    print(f"brasil run: the root's status showed every slot free {br['release'] * 1000:.0f} ms "
          "(median) after it returned (waited for before the next run, not counted)")
    print(f"other processes used {a['other_cores']:.2f} core(s) meanwhile"
          + ("  ← NOISY: figures suspect" if a["other_cores"] > NOISY else ""))
    print()
    names = {"brasil": "brasil run", "brasil -b": "brasil run -b", "clush": "clush",
             "clush -b": "clush -b", "pdsh": "pdsh", "pdsh -b": "pdsh | dshbak -c",
             "xargs": "xargs"}
    for mine, theirs in (("brasil", "clush"), ("brasil", "pdsh"), ("brasil -b", "clush -b"),
                         ("brasil -b", "pdsh -b"), ("brasil", "xargs")):
        if theirs in rows:
            m, t = rows[mine]["median"], rows[theirs]["median"]
            ratio = f"{names[mine]} / {names[theirs]}"
            print(f"ratio {ratio:<34} = {m / t:.2f}  (medians; "
                  + (f"brasil {t / m:.1f}× faster)" if m < t else f"brasil {m / t:.1f}× slower)"))

    if b is None:
        return
    print(f"\n(b) {SSH_HOSTS} hosts over ssh (network namespaces with sshd on this machine)")
    if "skipped" in b:
        print(f"skipped: {b['skipped']}")
        return
    warm = b["warm_runs"]
    rows_b = [
        (f"brasil cluster up --hosts <4 IPs> --fanout {SSH_FANOUT} (all joined)", s(b["up"]), ""),
        ("first brasil run -- true (one rank per host)", s(b["first_run"]), ""),
        ("  → usable tree after", s(b["up"] + b["first_run"]), ""),
        (f"brasil run -- true, warm (best, median of {len(warm)})", s(min(warm)),
         s(statistics.median(warm))),
    ]
    for name, p in b["peers"].items():
        label = f"{name} {'-R ssh ' if name == 'pdsh' else ''}-w <4 IPs> true"
        if "failed" in p:
            rows_b.append((label, p["failed"][:40], ""))
        else:
            rows_b.append((f"{label}, first", s(p["first"]), ""))
            rows_b.append((f"{label}, again (best, median of {len(p['warm'])})",
                           s(min(p["warm"])), s(statistics.median(p["warm"]))))
    rows_b.append(("brasil cluster down", s(b["down"]), ""))
    w = max(len(r[0]) for r in rows_b)
    print(f"{'':<{w}} {'s':>7} {'median s':>9}")
    for label, x, y in rows_b:
        print(f"{label:<{w}} {x:>7} {y:>9}")
    print(f"(ranks answered from hosts {', '.join(b['hostnames'])})")


def write_json(tree: Tree, tools: dict[str, Any], a: dict[str, Any], b: dict[str, Any] | None,
               repeats: int) -> None:
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": CORES, "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_start": LOAD_AT_START},
        "n": N, "repeats": repeats,
        "tree": {"depth": DEPTH, "fanout": FANOUT, "slots": tree.slots, "daemons": tree.nodes,
                 "total_slots": tree.total, "up_seconds": tree.up_seconds},
        "tools": {k: v for k, v in tools.items() if isinstance(v, str)},
        "local": {**a, "sweep": {t: {str(f): x for f, x in v.items()}
                                 for t, v in a["sweep"].items()}},
        "ssh": b,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nresults written to {RESULTS.relative_to(ROOT)}")


# ---- profile ------------------------------------------------------------------------------------

def profile(tree: Tree, args: argparse.Namespace) -> None:
    """py-spy on the named daemons (attached) and on the client (started under py-spy) through
    3 ``brasil run -n N -- date``; where each one's time goes, by line."""
    brasil_run(tree, False)  # warm up
    names = args.profile_nodes.split(",")
    outs = {name: os.path.join(tree.dir, f"{name}.spy") for name in names + ["client"]}
    spy = [args.py_spy, "record", "--rate", "250", "--idle", "--full-filenames", "--format",
           "raw"]
    times = []
    with Sampled(spy, {name: tree.pids[name] for name in names}, outs) as sampled:
        for i in range(3):
            asyncio.run(_free(tree))
            argv = [str(BRASIL), "run", "-n", str(N), "--", "date"]
            if i == 0:  # the client under py-spy once (it slows the client a little)
                argv = spy + ["--output", outs["client"], "--"] + argv
            t, _, out, err, status = timed(argv, brasil_env(tree))
            if i == 0:  # py-spy's own messages go to stdout too
                out = b"".join(ln for ln in out.splitlines(keepends=True)
                               if ln.strip() and not ln.startswith(b"py-spy> "))
            check_lines("brasil run (profiled)", out, err, status, labelled=True)
            times.append(t)
    cpu = sampled.cpu
    print(f"brasil run -n {N} -- date under py-spy: {', '.join(s(t) for t in times)} s "
          "(the first with the client sampled too)")
    for name in names:
        print(f"\n==== {name} (depth {node_depth(name)}): {cpu[name]:.2f} s CPU over "
              f"{len(times)} runs ====")
        print_py_spy(outs[name], args.profile_top)
    print("\n==== the brasil run client (first run) ====")
    print_py_spy(outs["client"], args.profile_top)


# ---- main ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each command (3)")
    ap.add_argument("--no-ssh", action="store_true", help="skip the tree over ssh")
    ap.add_argument("--no-json", action="store_true", help=f"do not write {RESULTS.name}")
    add_profile_args(ap, "the root daemon and the client", "n0", "default: the root", 25)
    args = ap.parse_args()
    if not BRASIL.exists():
        print(f"benchmark failed: no {BRASIL}; `make setup` first", file=sys.stderr)
        return 1
    tools = find_tools()
    tree = Tree(DEPTH, FANOUT, SLOTS)
    try:
        tree.up()
        if args.profile:
            profile(tree, args)
            return 0
        a = local_part(tree, tools, args.repeats)
    except (BenchError, NinepError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}\n{tree.logs_tail()}", file=sys.stderr)
        return 1
    finally:
        tree.down()
    try:
        b = None if args.no_ssh else ssh_part()
    except (BenchError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed (ssh part): {e}", file=sys.stderr)
        return 1
    report(tree, tools, a, b, args.repeats)
    if not args.no_json:
        write_json(tree, tools, a, b, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
