"""`make demo`: a local cluster doing real work, driven through plain files.

It starts a small tree of daemons (`brasil cluster up`: a root and three children, two slots
each), mounts the root's namespace with `brasil mount`, and then uses nothing but `echo` and `cat`
on the mount: the Brasil paper's two examples, a command on every node, the aggregated status, and
a sum over a million numbers split record by record across the tree. Then the paper's word
histogram as a PUSH pipeline across the tree, and a batch workload with a slow worker. Everything
is torn down at the end, whatever happens.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time

from .exec.pychild import python_argv

STEPS = [
    ("The paper's first example: a session, 4 slots, `date` on each, the aggregated output", [
        "cat $M/clone",
        "echo 'res 4' > $M/0/ctl",
        "echo 'exec date' > $M/0/ctl",
        "cat $M/0/stdio",
        "cat $M/0/status",
        "echo close > $M/0/ctl",
    ]),
    ("The paper's second example: `date | wc` across two nodes, spliced node to node", [
        "cat $M/clone",
        "echo 'res 2' > $M/1/ctl",
        "echo 'exec date' > $M/1/0/ctl",
        "echo 'exec wc' > $M/1/1/ctl",
        "echo 'xsplice 0 1' > $M/1/ctl",
        "cat $M/1/1/stdio",
        "date | wc    # the same, locally",
        "echo close > $M/1/ctl",
    ]),
    ("A command on every slot of the tree", [
        "cat $M/clone",
        "echo 'res 8' > $M/2/ctl",
        "echo 'exec echo \"$BRASIL_NODE slot $BRASIL_SUB: $(uname -s) pid $$\"' > $M/2/ctl",
        "cat $M/2/stdio | sort",
        "cat $M/status   # every node of the tree, then the total",
        "echo close > $M/2/ctl",
    ]),
    ("Real work: sum 1..1,000,000, each line to one of 8 slots (mux rr), partial sums added", [
        "cat $M/clone",
        "echo 'res 8' > $M/3/ctl",
        "echo 'mux rr' > $M/3/ctl",
        r"""echo 'exec awk "{s+=\$1} END {printf \"%.0f\\n\", s}"' > $M/3/ctl""",
        "seq 1 1000000 > $M/3/stdio &  cat $M/3/stdio | tee /dev/stderr | "
        r"""awk '{t+=$1} END {printf "total %.0f\n", t}'; wait""",
        "echo 'expected total 500000500000'",
        "cat $M/3/wait",
        "echo close > $M/3/ctl",
    ]),
]


def sh(cmd: str, env: dict[str, str], show: str | None = None) -> int:
    print(f"$ {show or cmd}", flush=True)
    p = subprocess.run(["sh", "-c", cmd], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    for line in p.stdout.splitlines():
        print(f"  {line}")
    if p.returncode:
        print(f"  (exit status {p.returncode})")
    return p.returncode


def group_step(env: dict[str, str], tmp: str) -> int:
    """A query and an equiv read: the cluster filtered by path, and one file read on every node,
    condensed inside the tree (each node exports its own directory)."""
    exports = os.path.join(tmp, "exports")
    for name in ("n0", "n1", "n2", "n3"):
        with open(os.path.join(exports, name, "motd"), "w") as f:
            f.write("welcome to the cluster\n" if name != "n2" else "n2 is being serviced\n")
    env = {**env, "B": shlex.join(python_argv("brasil.cli.main"))}
    print("\n== Queries and group reads: the tree filtered by path, read condensed")
    failed = sh("ls \"$M/../query/name=n[1-3]/mem>=64M/\"", env,
                "ls 'mnt/csrv/query/name=n[1-3]/mem>=64M/'    # a query path, through the mount")
    failed |= sh("cat \"$M/../query/name=n[2-3]/status\" | cut -d' ' -f1-6", env,
                 "cat 'mnt/csrv/query/name=n[2-3]/status'")
    failed |= sh("$B gread --agg equiv fs/motd", env, "brasil gread --agg equiv fs/motd")
    failed |= sh("$B gread --agg sum --where 'name=n*' status | cut -c1-60", env,
                 "brasil gread --agg sum status    # every node's numbers, summed in the tree")
    return failed


def push_step(env: dict[str, str], tmp: str) -> int:
    """The paper's word histogram as a PUSH pipeline across the tree: words fanned out to three
    copies of tr, hashed so that each word is counted by one copy of sort | uniq -c, the counts
    fanned back in and sorted. The same pipeline on one machine gives the same lines."""
    corpus = os.path.join(tmp, "corpus")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(corpus, "w") as out:
        for _ in range(20):
            for name in sorted(os.listdir(here)):
                if name.endswith(".py"):
                    with open(os.path.join(here, name)) as f:
                        out.write(f.read())
    env = {**env, "CORPUS": corpus}
    pipeline = ("cat $CORPUS |<[3] tr -cs A-Za-z '\\n' |#[3]| sort | uniq -c >| sort -rn | "
                "head -5")
    print("\n== PUSH: the paper's word histogram, fanned out and hashed across the tree")
    env["PUSH"] = shlex.join(python_argv("brasil.cli.push"))
    failed = sh(f'$PUSH --explain -c "{pipeline}"', env, f'push --explain -c "{pipeline}"')
    failed |= sh(f'$PUSH -c "{pipeline}"', env, f'push -c "{pipeline}"')
    failed |= sh(f'$PUSH --local -c "{pipeline}"', env,
                 f'push --local -c "{pipeline}"   # the same, on this machine alone')
    return failed


def batch_step(root: str, env: dict[str, str], tmp: str) -> int:
    """A batch workload with dependencies on 4 workers, one slowed 10×; then its report."""
    print("\n== Batch: 30 jobs in a DAG on 4 workers, one of them 10x slower")
    try:
        import asyncio

        from .batch.demo import run_batch_demo
        keep = os.path.abspath("demo-output")  # the report's picture outlives the demo
        os.makedirs(keep, exist_ok=True)
        asyncio.run(run_batch_demo(root, env.get("BRASIL_SECRET_FILE"), keep, print))
    except Exception as e:  # noqa: BLE001 - the demo says what failed and goes on to clean up
        print(f"  batch demo failed: {e}")
        return 1
    return 0


def brasil(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_argv("brasil.cli.main", *args), env=env,
                          capture_output=True, text=True, timeout=120)


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="brasil-demo-")
    cluster, mnt = os.path.join(tmp, "cluster"), os.path.join(tmp, "mnt")
    os.makedirs(mnt)
    env = dict(os.environ)
    failed = 0
    print(f"Starting a tree of 4 daemons (n0 and its children n1 n2 n3, 2 slots each) in {cluster}")
    t0 = time.monotonic()
    up = brasil("cluster", "up", "--depth", "1", "--fanout", "3", "--slots", "2", "--dir", cluster,
                "--export-root", os.path.join(tmp, "exports"), env=env)
    if up.returncode:
        print(up.stderr, file=sys.stderr)
        return 1
    root = up.stdout.strip()
    env.update(BRASIL=root, BRASIL_SECRET_FILE=os.path.join(cluster, "secret"))
    try:
        print(f"  up in {time.monotonic() - t0:.1f}s; root at {root}")
        m = brasil("mount", mnt, env=env)
        if m.returncode:
            print(m.stderr, file=sys.stderr)
            return 1
        print(f"Mounted it on {mnt}: from here on, only echo and cat\n")
        env["M"] = os.path.join(mnt, "csrv", "local")
        sh("ls $M", env, f"ls {mnt}/csrv/local    # $M below")
        sh("ls $(dirname $M)", env, f"ls {mnt}/csrv          # the children, through the root")
        for title, cmds in STEPS:
            print(f"\n== {title}")
            for cmd in cmds:
                failed |= sh(cmd, env)
        failed |= group_step(env, tmp)
        failed |= push_step(env, tmp)
        failed |= batch_step(root, env, tmp)
    finally:
        print("\nCleaning up")
        brasil("umount", mnt, env=env)
        down = brasil("cluster", "down", "--dir", cluster, env=env)
        print(f"  {down.stderr.strip()}")
        subprocess.run(["rm", "-rf", tmp])
    print("done" if not failed else "done, with errors above")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
