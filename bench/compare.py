"""Same-run comparison of two versions: REV against the working tree, alternating.

    make bench-compare REV=3cecb6d [FIGURES="deploy roundtrips"] [PAIRS=3] [ARGS="--n 512"]
    .venv/bin/python bench/compare.py REV [--figures deploy roundtrips] [--pairs 3]

On this machine an absolute figure moves ±30 % between runs, so a benchmark that runs one version
cannot see a 30 % regression. This script installs REV (any git revision) in a virtualenv of its
own under .bench-compare/<commit>/ (kept: the next comparison with the same commit reuses it),
then runs each figure of bench/figures.py under REV's interpreter and under the working tree's
(.venv), alternating A B B A A B… for at least three pairs, each run a fresh process and a fresh
tree. It prints, per figure, both medians and the ratio working/REV with the spread of the
per-pair ratios: the number to quote in a commit message that touches a hot path.

The measuring code is the working tree's bench/figures.py for both sides; it uses only what
every version since the foundation has.

``--together`` goes further for the tree's own operations: both versions' trees are up at once
(made by ``cluster up`` with each version's interpreter) and one ``res N`` (``--op res``) or one
whole deployment (``--op deploy``: res, exec date, read, close) is run on A, then on B, then on
B, then on A…, ``--repeats`` times each, from this process. Both see the same load at the same
moment, so the ratio of the medians holds still on a machine that other work shares, where two
runs minutes apart do not.

``--together --op leaves`` measures CPU rather than time, at the finest grain: one root (the
working tree's) with ``--leaves`` leaves of each version side by side under it, 32 slots each;
every deployment (res, exec date, read, close) covers all of them, so both versions' leaves do
the same work at the same moments, and the CPU of each side's daemons (schedstat of all their
threads) per command is compared block by block. Same code on both sides gives 0.97–1.02 here,
where the daemons' CPU for a whole deployment swings ±30 % between runs.

``--together --op idle`` is what the trees cost doing nothing (heartbeats, metrics, ticks): both
trees up at once and settled, each tree's CPU over the same windows of ``--window`` seconds
(``--repeats`` of them), compared window by window. Two runs of one version minutes apart
differ by up to a fifth here; side by side, the same code gives 1.004 (windows 0.992–1.022).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench-compare"
FIGURES = ROOT / "bench" / "figures.py"


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def install(rev: str) -> Path:
    """REV's source and a virtualenv with it installed, made once per commit."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    home = CACHE / commit[:12]
    python = home / "venv" / "bin" / "python"
    if (home / ".installed").exists():
        return python
    shutil.rmtree(home, ignore_errors=True)
    (home / "src").mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(home / "src")], input=archive, check=True)
    print(f"installing {rev} ({commit[:12]}) in {home.relative_to(ROOT)} …", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(home / "src")], check=True)
    (home / ".installed").touch()
    return python


def measure(python: Path, figure: str, extra: list[str]) -> dict[str, float]:
    # -I: the measured version's brasil comes from its own virtualenv, never from bench/ or cwd
    r = subprocess.run([str(python), "-I", str(FIGURES), figure, *extra], capture_output=True,
                       text=True, timeout=1800, cwd="/")
    if r.returncode != 0:
        raise SystemExit(f"{figure} under {python} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def together(sides: dict[str, Path], op: str, n: int, repeats: int, tree: str,
             window: float = 10.0) -> None:
    import asyncio
    import tempfile

    from brasil.ninep.client import Client
    from figures import L, settle

    depth, fanout, slots = tree.split(",")
    dirs: dict[str, str] = {}

    async def one(c: Client) -> float:
        sid = (await c.read(f"{L}/clone")).decode().strip()
        t0 = time.perf_counter()
        await c.write(f"{L}/{sid}/ctl", f"res {n}\n")
        if op == "deploy":
            await c.write(f"{L}/{sid}/ctl", "exec date\n")
            lines = (await c.read(f"{L}/{sid}/stdio")).count(b"\n")
            if lines != n:
                raise SystemExit(f"{lines} lines of date, not {n}")
        dt = time.perf_counter() - t0
        await c.write(f"{L}/{sid}/ctl", "close\n")
        await settle(c.read)
        return dt

    async def run() -> dict[str, list[float]]:
        cs = {k: await Client.connect(f"unix:{d}/n0.sock") for k, d in dirs.items()}
        got: dict[str, list[float]] = {"A": [], "B": []}
        try:
            for i in range(repeats + 1):  # the first round warms up
                for k in (("A", "B") if i % 2 else ("B", "A")):
                    dt = await one(cs[k])
                    if i:
                        got[k].append(dt)
        finally:
            for c in cs.values():
                await c.close()
        return got

    async def idle() -> dict[str, list[float]]:
        from common import cpu_ns
        from figures import daemon_pids
        pids = {k: daemon_pids(d) for k, d in dirs.items()}
        await asyncio.sleep(window)  # (the trees' joins and first beats are not idling)
        got: dict[str, list[float]] = {"A": [], "B": []}
        for _ in range(repeats):
            before = {k: cpu_ns(p) for k, p in pids.items()}
            t0 = time.perf_counter()
            await asyncio.sleep(window)
            dt = time.perf_counter() - t0
            for k, p in pids.items():
                got[k].append((cpu_ns(p) - before[k]) / 1e9 / dt)  # CPU seconds per second
        return got

    try:
        for k, python in sides.items():
            dirs[k] = tempfile.mkdtemp(prefix=f"brasil-cmp{k}-")
            r = subprocess.run([str(python), "-I", "-m", "brasil.cli.main", "cluster", "up",
                                "--depth", depth, "--fanout", fanout, "--slots", slots, "--dir",
                                dirs[k]], capture_output=True, text=True, cwd="/", timeout=600)
            if r.returncode != 0:
                raise SystemExit(f"cluster up under {python} failed:\n{r.stderr[-2000:]}")
        got = asyncio.run(idle() if op == "idle" else run())
    finally:
        for k, d in dirs.items():
            subprocess.run([str(sides[k]), "-I", "-m", "brasil.cli.main", "cluster", "down",
                            "--dir", d], capture_output=True, cwd="/", timeout=300)
            shutil.rmtree(d, ignore_errors=True)
    a, b = statistics.median(got["A"]), statistics.median(got["B"])
    if op == "idle":
        ratios = sorted(y / x for x, y in zip(got["A"], got["B"]) if x)
        print(f"\nidle trees ({tree}), both up at once, {repeats} windows of {window:g} s:")
        print(f"  the daemons' CPU: A median {a * 1000:.1f} ms/s, B median {b * 1000:.1f} ms/s, "
              f"B/A {statistics.median(ratios):.3f} (windows {ratios[0]:.3f}–{ratios[-1]:.3f})")
        return
    qa, qb = statistics.quantiles(got["A"], n=4), statistics.quantiles(got["B"], n=4)
    print(f"\n{op} {n}, both trees up at once, {repeats} each, interleaved:")
    print(f"  A median {a * 1000:.1f} ms (quartiles {qa[0] * 1000:.0f}–{qa[2] * 1000:.0f}), "
          f"B median {b * 1000:.1f} ms (quartiles {qb[0] * 1000:.0f}–{qb[2] * 1000:.0f}), "
          f"B/A {b / a:.3f}")


def leaves_together(sides: dict[str, Path], leaves: int, blocks: int, rounds: int) -> None:
    import asyncio
    import os
    import tempfile

    from brasil.ninep.auth import client_auth
    from brasil.ninep.client import Client
    from common import cpu_ns
    from figures import L

    slots = 32
    n = 2 * leaves * slots

    d = tempfile.mkdtemp(prefix="brasil-cmp-leaves-")
    secret = b"compare-" + os.urandom(16).hex().encode()
    with open(os.open(f"{d}/secret", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(secret + b"\n")
    procs: list[subprocess.Popen[bytes]] = []
    pids: dict[str, list[int]] = {"A": [], "B": []}

    def serve(python: Path, name: str, slots_: int, *more: str) -> subprocess.Popen[bytes]:
        os.mkdir(f"{d}/{name}", 0o700)
        p = subprocess.Popen([str(python), "-I", "-m", "brasil.cli.main", "serve", "--name", name,
                              "--listen", f"unix:{d}/{name}.sock", "--slots", str(slots_),
                              "--state-dir", f"{d}/{name}", "--export", "", "--secret-file",
                              f"{d}/secret", *more], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd="/")
        procs.append(p)
        return p

    async def run() -> list[tuple[float, float]]:
        serve(sides["B"], "root", 0)
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{d}/root.sock"):
            if time.monotonic() > deadline:
                raise SystemExit("the root did not start")
            await asyncio.sleep(0.05)
        for i in range(2 * leaves):
            side = "AB"[i % 2]
            pids[side].append(serve(sides[side], f"{side.lower()}{i}", slots, "--parent",
                                    f"unix:{d}/root.sock").pid)
        c = await Client.connect(f"unix:{d}/root.sock", auth=client_auth(secret))
        try:
            async def deploy() -> None:
                sid = (await c.read(f"{L}/clone")).decode().strip()
                await c.write(f"{L}/{sid}/ctl", f"res {n}\n")
                await c.write(f"{L}/{sid}/ctl", "exec date\n")
                lines = (await c.read(f"{L}/{sid}/stdio")).count(b"\n")
                if lines != n:
                    raise SystemExit(f"{lines} lines of date, not {n}")
                await c.write(f"{L}/{sid}/ctl", "close\n")

            deadline = time.monotonic() + 60
            while True:  # until every leaf has joined (res fails short before)
                try:
                    await deploy()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            for _ in range(4):
                await deploy()
            per: list[tuple[float, float]] = []
            for b in range(blocks):
                before = {k: cpu_ns(v) for k, v in pids.items()}
                for _ in range(rounds):
                    await deploy()
                used = {k: (cpu_ns(v) - before[k]) / (rounds * leaves * slots * 1000)
                        for k, v in pids.items()}
                per.append((used["A"], used["B"]))
                print(f"  block {b + 1}: A {used['A']:.0f} µs, B {used['B']:.0f} µs of the "
                      f"leaves' CPU per command, B/A {used['B'] / used['A']:.3f}",
                      file=sys.stderr, flush=True)
            return per
        finally:
            await c.close()

    try:
        per = asyncio.run(run())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)
    ratios = sorted(b / a for a, b in per)
    print(f"\nleaves' CPU per command, {leaves} leaf(s) of each version under one root, "
          f"{blocks} blocks of {rounds} deployments of {n} dates:")
    print(f"  A median {statistics.median(a for a, _ in per):.0f} µs, B median "
          f"{statistics.median(b for _, b in per):.0f} µs, B/A {statistics.median(ratios):.3f} "
          f"(blocks {ratios[0]:.3f}–{ratios[-1]:.3f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="any other options are passed to bench/figures.py "
                                 "(--tree D,F,S, --n N, --repeats K, --seconds S)")
    ap.add_argument("rev", metavar="REV", help="the version to compare with (a commit, tag, "
                    "branch, HEAD~3…)")
    ap.add_argument("--figures", nargs="+", default=["deploy", "roundtrips"],
                    choices=["deploy", "fuse", "roundtrips", "res-share", "server-cpu",
                             "batch-fine", "group", "push"],
                    help="what to measure (default: deploy and roundtrips)")
    ap.add_argument("--pairs", type=int, default=3, help="A/B pairs per figure (at least 3)")
    ap.add_argument("--together", action="store_true",
                    help="both versions' trees up at once, operations interleaved (--op)")
    ap.add_argument("--op", choices=["res", "deploy", "leaves", "idle"], default="res",
                    help="with --together: res N alone, a whole deployment, the leaves' "
                    "CPU per command with both versions' leaves under one root, or the "
                    "idle trees' CPU")
    ap.add_argument("--window", type=float, default=10.0,
                    help="with --op idle: seconds per measured window (10)")
    ap.add_argument("--leaves", type=int, default=1,
                    help="with --op leaves: leaves of each version (1)")
    ap.add_argument("--blocks", type=int, default=6,
                    help="with --op leaves: measured blocks of 20 deployments (6)")
    ap.add_argument("--n", type=int, help="N (2048)")
    ap.add_argument("--repeats", type=int, help="with --together: per side (30)")
    ap.add_argument("--tree", help="depth,fanout,slots (2,8,32)")
    args, extra = ap.parse_known_args()
    for opt in ("n", "repeats", "tree"):  # the figures' own options too, when not --together
        if getattr(args, opt) is not None and not args.together:
            extra += [f"--{opt}", str(getattr(args, opt))]
    if args.pairs < 3:
        ap.error("--pairs: at least 3, or the spread means nothing")
    base = install(args.rev)
    here = ROOT / ".venv" / "bin" / "python"
    # REV's install was compiled by pip; the working tree is installed editable and, where
    # PYTHONDONTWRITEBYTECODE is set (it is on this machine), recompiled at every start: push's
    # start-up then cost 13 ms more than REV's for no change in the code (found comparing push
    # balance+merge against the redesign's base, 0.85). Compile it too, so both start alike.
    subprocess.run([str(here), "-m", "compileall", "-q", str(ROOT / "src")], check=True)
    sides = {"A": base, "B": here}
    print(f"A = {args.rev} ({git('rev-parse', '--short', args.rev)}), B = working tree "
          f"({git('rev-parse', '--short', 'HEAD')}{'+changes' if git('status', '--porcelain', '--untracked-files=no') else ''}); "
          f"{args.pairs} pairs, alternating" if not args.together else "", flush=True)
    if args.together and args.op == "leaves":
        leaves_together(sides, args.leaves, args.blocks, 20)
        return 0
    if args.together:
        repeats = args.repeats or (6 if args.op == "idle" else 30)
        together(sides, args.op, args.n or 2048, repeats, args.tree or "2,8,32", args.window)
        return 0
    for figure in args.figures:
        runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        for i in range(args.pairs):
            order = ("A", "B") if i % 2 == 0 else ("B", "A")  # A B B A A B: drift cancels
            for side in order:
                t0 = time.monotonic()
                runs[side].append(measure(sides[side], figure, extra))
                print(f"  {figure} pair {i + 1} {side}: "
                      + ", ".join(f"{k} {v:.4g}" for k, v in runs[side][-1].items())
                      + f"  ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        print(f"\n{figure}:")
        print(f"  {'figure':<22} {'A median':>10} {'B median':>10} {'B/A':>6}  per-pair B/A")
        for key in runs["A"][0]:
            a = [r[key] for r in runs["A"]]
            b = [r[key] for r in runs["B"]]
            ratios = sorted(y / x for x, y in zip(a, b) if x)
            print(f"  {key:<22} {statistics.median(a):>10.4g} {statistics.median(b):>10.4g} "
                  f"{statistics.median(ratios):>6.3f}  {ratios[0]:.3f}–{ratios[-1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
