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
    args, extra = ap.parse_known_args()
    if args.pairs < 3:
        ap.error("--pairs: at least 3, or the spread means nothing")
    base = install(args.rev)
    here = ROOT / ".venv" / "bin" / "python"
    sides = {"A": base, "B": here}
    print(f"A = {args.rev} ({git('rev-parse', '--short', args.rev)}), B = working tree "
          f"({git('rev-parse', '--short', 'HEAD')}{'+changes' if git('status', '--porcelain', '--untracked-files=no') else ''}); "
          f"{args.pairs} pairs, alternating", flush=True)
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
