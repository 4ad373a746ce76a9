"""``brasil pstack`` on a hung job of 512 processes on a 1+8+64 tree, against a flat peer.

    .venv/bin/python bench/pstack.py [--repeats 3] [--ranks 512] [--no-json]

Issue 19's "Speed and scale". The tree is ``brasil cluster up --depth 2 --fanout 8 --slots 8``
(73 daemons); the job is tests/programs/hang.c built with ``gcc -g``, ``res 512 where
name=n*.*`` (8 ranks on each of the 64 leaves), every rank waiting in ``wait_here`` but rank 3,
which spins in ``spin_here``.

a. ``brasil pstack SESSION`` (a process, end to end: interpreter start, the tree's unwinding
   and merging, the picture) against the flat peer STAT is measured against: ``eu-stack -m -p
   PID`` for each of the 512 pids driven by ``xargs -P2`` (the machine has 2 cores), its text
   then merged into the same prefix tree by a script at the root (brasil.exec.stacks'
   parser, brasil.exec.stacktree's tree: the same merge, no tree of daemons). Median of
   ``--repeats``, alternating who goes first. Both must name rank 3 (the peer: its pid) as the
   odd one. Target: brasil ≤ 1.2 × the peer (the unwinding is the cost; the tree must add
   little). The bytes the root daemon received from its children during one pstack (``ss``:
   the kernel's bytes_received of its TCP sockets), against the size of one report: at most one
   merged tree per child.
b. STAT's 3D mode on 64 processes (8 leaves × 8), 5 samples 0.2 s apart, with every rank but
   rank 3 descending and climbing a recursion: ``progress`` must call rank 3 stuck and the 63 others
   moving.

Results: a table and PASS/MISS lines on stdout, JSON in bench/results/pstack.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from brasil.exec.stacktree import progress
from brasil.group import procs
from common import BenchError
from group import tcp_bytes, tcp_delta
from tree import BRASIL, Tree

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "pstack.json"
PROGRAM = ROOT / "tests" / "programs" / "hang.c"
TARGET = 1.2

MERGE = r"""
import sys
from brasil.exec.stacks import parse_eu_stack
from brasil.exec.stacktree import TraceTree
tree = TraceTree()
for block in sys.stdin.read().split("PID ")[1:]:
    pid = int(block.split()[0])
    for t in parse_eu_stack("PID " + block):
        tree.add(pid, "", [f.label() for f in t.frames])
for line in tree.lines():
    print(line)
"""


def build(where: str) -> str:
    out = os.path.join(where, "hang")
    subprocess.run(["gcc", "-g", "-O0", "-o", out, str(PROGRAM)], check=True)
    return out


async def start_job(c, ranks: int, program: str, env: str = "") -> str:  # type: ignore[no-untyped-def]
    sid = (await c.read("csrv/local/clone")).decode().strip()
    await c.write(f"csrv/local/{sid}/ctl", f"res {ranks} where name=n*.*\n")
    if env:
        await c.write(f"csrv/local/{sid}/ctl", f"env {env}\n")
    await c.write(f"csrv/local/{sid}/ctl", f"exec {program}\n")
    deadline = time.monotonic() + 120
    while True:
        report = await procs.stacks(c, sid)
        middle = [n for n in report.tree.root.children.values()]
        reached = 0
        stack = list(middle)
        while stack:
            n = stack.pop()
            if n.frame == "middle":
                reached = max(reached, len(n.ranks))
            stack.extend(n.children.values())
        if reached == ranks:
            return sid
        if time.monotonic() > deadline:
            raise BenchError(f"only {reached} of {ranks} ranks reached their loop")
        await asyncio.sleep(0.5)


def job_pids(program: str) -> list[int]:
    r = subprocess.run(["pgrep", "-f", "-x", program], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def run_pstack(tree: Tree, sid: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([str(BRASIL), "pstack", sid, "--at", tree.address, "--secret-file",
                        f"{tree.dir}/secret"], capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise BenchError(f"brasil pstack failed: {r.stderr[-800:]}")
    return took, r.stdout


def run_peer(pids: list[int]) -> tuple[float, str]:
    eu = shutil.which("eu-stack")
    if eu is None:
        raise BenchError("eu-stack is not installed (apt install elfutils)")
    t0 = time.perf_counter()
    xargs = subprocess.Popen(["xargs", "-P2", "-n1", eu, "-m", "-p"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    merge = subprocess.Popen([sys.executable, "-I", "-c", MERGE], stdin=xargs.stdout,
                             stdout=subprocess.PIPE, text=True)
    assert xargs.stdin is not None and xargs.stdout is not None
    xargs.stdin.write("".join(f"{p}\n" for p in pids).encode())
    xargs.stdin.close()
    xargs.stdout.close()
    out, _ = merge.communicate(timeout=600)
    xargs.wait()
    return time.perf_counter() - t0, out


def odd_line(text: str) -> str:
    return next((ln for ln in text.splitlines() if "spin_here" in ln), "")


async def part_a(tree: Tree, program: str, ranks: int, repeats: int) -> dict:
    c = await tree.client()
    try:
        sid = await start_job(c, ranks, program)
        pids = job_pids(program)
        if len(pids) != ranks:
            raise BenchError(f"{len(pids)} processes of the job found, not {ranks}")
        ours, peer = [], []
        run_pstack(tree, sid)  # warm: the binary's symbols in the page cache
        run_peer(pids)
        for i in range(repeats):
            for who in (("ours", "peer") if i % 2 == 0 else ("peer", "ours")):
                if who == "ours":
                    took, out = run_pstack(tree, sid)
                    if "[rank 3 (1) on n" not in odd_line(out):
                        raise BenchError(f"pstack did not name rank 3 alone:\n{out}")
                    ours.append(took)
                else:
                    took, out = run_peer(pids)
                    if "(1)" not in odd_line(out):
                        raise BenchError(f"the peer did not single out one process:\n{out}")
                    peer.append(took)
        before = tcp_bytes({"n0": tree.pids["n0"]})
        report = await procs.stacks(c, sid)
        after = tcp_bytes({"n0": tree.pids["n0"]})
        delta = tcp_delta(before, after)
        received = delta["n0"][1] if delta and "n0" in delta else None
        one = len(report.dumps())
        await c.write(f"csrv/local/{sid}/ctl", "close\n")
    finally:
        await c.close()
    return {"ours_s": statistics.median(ours), "peer_s": statistics.median(peer),
            "ours_all": ours, "peer_all": peer, "root_received": received,
            "report_bytes": one, "children": 8}


async def part_b(tree: Tree, program: str) -> dict:
    c = await tree.client()
    try:
        sid = await start_job(c, 64, program, "PROGRESS=1")
        _, _, trees = await procs.samples(c, sid, 5, 0.2)
        stuck, moving = progress(trees)
        await c.write(f"csrv/local/{sid}/ctl", "close\n")
    finally:
        await c.close()
    return {"stuck": str(stuck), "moving": len(moving)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=512)
    ap.add_argument("--no-json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        program = build(tmp)
        tree = Tree(2, 8, 8)
        try:
            tree.up()
            a = asyncio.run(part_a(tree, program, args.ranks, args.repeats))
            b = asyncio.run(part_b(tree, program))
        finally:
            tree.down()
    ratio = a["ours_s"] / a["peer_s"]
    print(f"{'':32} {'seconds':>9}")
    print(f"{'brasil pstack (tree)':32} {a['ours_s']:9.2f}")
    print(f"{'xargs -P2 eu-stack + merge':32} {a['peer_s']:9.2f}")
    print(f"ratio {ratio:.2f} (target ≤ {TARGET}): {'PASS' if ratio <= TARGET else 'MISS'}")
    if a["root_received"] is not None:
        ok = a["root_received"] <= a["children"] * a["report_bytes"] * 1.5 + 65536
        print(f"root received {a['root_received']} B from its 8 children for one pstack "
              f"(one report: {a['report_bytes']} B): {'PASS' if ok else 'MISS'}")
    ok_b = b["stuck"] == "3" and b["moving"] == 63
    print(f"3D, 64 ranks, 5 samples: stuck {b['stuck'] or 'none'}, moving {b['moving']}: "
          f"{'PASS' if ok_b else 'MISS'}")
    if not args.no_json:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"a": a, "b": b, "ratio": ratio}, indent=1) + "\n")
    return 0 if ok_b else 1


if __name__ == "__main__":
    sys.exit(main())
