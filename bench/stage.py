"""Staging a program down the tree (issue 21 §4): what the root sends, first run and second.

On a tree made by `cluster up` (default 1+8+64, 32 slots a leaf: 2,048 ranks), one program of
``--mb`` MiB (a shell script padded with a comment, so it runs anywhere) is run on every rank:

- ``brasil run --stage`` twice: the bytes the root sent (its children's stage/stats) and the
  time of each run;
- the alternative a user has today, ``brasil pcp`` to every node's fs/ and then ``brasil run``:
  the same tree, the root sending the file to each child every time;
- a flat copy to every node (scp, sbcast without a tree): the client sends it once per node,
  computed (nodes × size), since every node is on this machine.

Prints the figures and PASS/FAIL: the first staged run sends the file once per child, the second
sends nothing to a child that has it (a child that held no rank the first time may get it then).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from figures import tree_up  # noqa: E402


def received(d: str, node_paths: list[str]) -> dict[str, int]:
    """Bytes each node has received for staging so far."""
    env = {**os.environ, "BRASIL": f"unix:{d}/n0.sock", "BRASIL_SECRET_FILE": f"{d}/secret"}
    total: dict[str, int] = {}
    for p in node_paths:
        total[p] = 0
        r = subprocess.run([sys.executable, "-m", "brasil.cli.main", "cat", f"{p}/stage/stats"],
                           capture_output=True, text=True, env=env, timeout=60)
        for line in r.stdout.splitlines():
            k, _, v = line.partition(" ")
            if k == "received_bytes":
                total[p] += int(v)
    return total


def run(d: str, *args: str) -> float:
    env = {**os.environ, "BRASIL": f"unix:{d}/n0.sock", "BRASIL_SECRET_FILE": f"{d}/secret"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                       text=True, env=env, timeout=900)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"brasil {' '.join(args)}: {r.stderr[-800:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default="2,8,32", help="DEPTH,FANOUT,SLOTS (default 2,8,32)")
    ap.add_argument("--mb", type=int, default=50, help="the program's size in MiB (default 50)")
    ap.add_argument("--ranks", type=int, default=2048, help="ranks per run (default 2048)")
    a = ap.parse_args()
    depth, fanout, slots = (int(x) for x in a.tree.split(","))
    nodes = sum(fanout ** k for k in range(depth + 1))
    ranks = min(a.ranks, nodes * slots)
    with tempfile.TemporaryDirectory(prefix="brasil-bench-stage-") as tmp:
        prog = os.path.join(tmp, "prog.sh")
        with open(prog, "wb") as f:
            f.write(b'#!/bin/sh\necho "$BRASIL_NODE"\nexit 0\n#')
            pad = b"x" * (1 << 20)
            for _ in range(a.mb):
                f.write(pad)
        os.chmod(prog, 0o755)
        size = os.path.getsize(prog)
        with tree_up(argparse.Namespace(tree=a.tree)) as d:
            children = [f"/csrv/n{i}/local" for i in range(1, fanout + 1)]
            t1 = run(d, "run", "-n", str(ranks), "--stage", prog, "--", prog)
            got1 = received(d, children)
            t2 = run(d, "run", "-n", str(ranks), "--stage", prog, "--", prog)
            got2 = received(d, children)
            b1, b2 = sum(got1.values()), sum(got2.values()) - sum(got1.values())
            t3 = run(d, "pcp", prog, "fs" + os.path.join(tmp, "copy.sh"))
            t4 = run(d, "run", "-n", str(ranks), "--", "sh", os.path.join(tmp, "copy.sh"))
    mb = 1 << 20
    print(f"{a.mb} MiB program, {ranks} ranks on {nodes} nodes ({a.tree})")
    print(f"  staged run 1: {t1:7.2f} s, root sent {b1 / mb:8.1f} MiB "
          f"({b1 / size:.1f} × the file; {fanout} children)")
    print(f"  staged run 2: {t2:7.2f} s, root sent {b2 / mb:8.1f} MiB (to children that held no "
          "rank the first time: where 2,048 ranks go on 2,336 slots depends on the nodes' load)")
    print(f"  pcp then run: {t3 + t4:7.2f} s ({t3:.2f} + {t4:.2f}), root sends "
          f"{fanout * size / mb:.1f} MiB every time")
    print(f"  flat copy:    the client sends {nodes * size / mb:.1f} MiB every time")
    ok1 = b1 % size == 0 and 0 < b1 <= fanout * size
    again = [c for c in children if got1[c] and got2[c] != got1[c]]
    ok2 = not again and all(n in (0, size) for n in got2.values())
    print(f"{'PASS' if ok1 else 'FAIL'}: the first run sends the file once per child holding "
          "ranks, at most")
    print(f"{'PASS' if ok2 else 'FAIL'}: the second run sends nothing to a child that has it "
          f"(each child got it once at most{'; again: ' + ', '.join(again) if again else ''})")
    return 0 if ok1 and ok2 else 1


if __name__ == "__main__":
    sys.exit(main())
