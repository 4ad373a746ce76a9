"""PUSH's pipes against the pipe limit and GNU parallel: fan-out, the hash pipe, and a 1+3 tree.

    .venv/bin/python bench/push.py [--no-json] [--no-tree] [--repeats N]
    PUSH_BENCH_MB=64 .venv/bin/python bench/push.py          # a quick run on a 64 MB input

Input: PUSH_BENCH_MB (default 1024) MB (MiB) of 20-byte lines ``"%05x %013d\\n"``, generated once
into bench/results/push-input-<MB>M and reused while its size is right. The first field is one
of 100,000 keys drawn Zipf-like (key k with probability ∝ log((k+2)/(k+1))), the second a
function of the first, so whole lines repeat as the keys do. The file is read once before
measuring (page cache), and every command reads it from there.

1. Fan-out, line count: ``cat f | wc -l`` (the pipe limit), ``push -c 'cat f |<[2] wc -l >| awk
   …'``, ``cat f | parallel --pipe --block 10M -j2 wc -l | awk …`` and ``parallel --pipepart -a
   f --block 10M -j2 wc -l | awk …``.
2. Hash: ``push -c 'cat f |#[2]| wc -l' | awk …`` against ``parallel --pipe --shard 1 --colsep
   ' ' -j2 wc -l < f | awk …`` (key: the first field for both); then the word count on the first
   100 MB: ``push -c 'head -c 100M f |#[2]| sort | uniq -c' | sort -rn | head`` against ``head -c
   100M f | parallel --pipe --shard 1 … 'sort | uniq -c' | sort -rn | head``. (``|#|`` does not
   open a region that ``>|`` could close: the copies' outputs merge into push's output, and
   what follows runs outside push, as it does after parallel.)
3. The fan-out across a tree: ``brasil cluster up --depth 1 --fanout 3 --slots 2`` in a temporary
   directory (always ``cluster down`` after), then ``push -c 'cat f |<[3] wc -l >| awk …'`` with
   BRASIL and BRASIL_SECRET_FILE set; the daemons read f on this same machine.

Every answer is checked: the line count must be the file's, the top ten (count, line) pairs those
counted here in Python. A wrong answer or a non-zero status is a failed row, not a figure. Each
variant runs up to --repeats times (default 5; 3 when its first run took over 5 s, once over
30 s), interleaved, the order alternating: the median is shown, and the best run's MB/s (the
machine may be shared: "other" says how much). Memory: "own MB" is the peak RSS (VmHWM,
sampled every 20 ms) of push itself, or of GNU parallel's main process; "max MB" the largest
peak RSS of any process of the pipeline (each runs under GNU time: wait4's ru_maxrss of a child
of this Python process would count our pages too); for the tree, the daemons' peaks are given
below the table. "CPU s": all the pipeline's processes (and, for the
tree, the daemons and what they ran). "other": cores that processes outside the run used
meanwhile (noise; above 0.25 the figures are suspect).

Targets: push |<[2] ≥ 2× parallel --pipe; ≥ 50 % of the pipe limit; |#[2]| ≥ 5× --shard (line
count). GNU parallel comes from scripts/bench-deps.sh; without it its rows say "not installed".
Results: the table, notes and PASS/MISS lines on stdout, JSON in bench/results/push.json. A miss
does not make the exit status non-zero; a tree that will not start does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import CORES, BenchError, busy_cpu, proc_cpu
from tree import Tree

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "push.json"
PUSH = Path(sys.executable).with_name("push")
TIME = Path("/usr/bin/time")  # GNU time
MiB = 1 << 20

MB = int(os.environ.get("PUSH_BENCH_MB") or 1024)
LINE = 20  # bytes per line
KEYS = 100_000
SLICE_MB = 100  # the word count's share of the input
COPIES = 2  # local copies, GNU parallel's -j
TREE = {"depth": 1, "fanout": 3, "slots": 2}
TREE_COPIES = 3
REPEATS = 5
MEDIUM, FEWER = 5.0, 3  # seconds: a variant whose first run took longer runs FEWER times
LONG = 30.0  # seconds: a variant whose first run took longer is not repeated
RUN_TIMEOUT = 900.0
NOISY = 0.25
TARGET_PIPE = 2.0  # push |< over parallel --pipe
TARGET_LIMIT = 0.5  # push |< over cat | wc -l
TARGET_SHARD = 5.0  # push |#| over parallel --shard
TARGET_RSS = 100  # MB: push's own peak RSS, whatever the input's size
AWK_SUM = "{s+=$1} END {print s}"
AWK_IN_PUSH = 'awk "{s+=\\$1} END {print s}"'  # inside push -c '…'
SAMPLE = 0.02  # seconds between VmHWM samples
W = 33  # the table's first column


# ---- the input --------------------------------------------------------------------------------

def input_file(mb: int) -> tuple[Path, int]:
    """(path, lines) of the input: generated unless a file of the right size is there."""
    lines = mb * MiB // LINE
    path = BENCH / "results" / f"push-input-{mb}M"
    if path.exists() and path.stat().st_size == lines * LINE:
        return path, lines
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating {path.relative_to(ROOT)} ({mb} MB)…", file=sys.stderr)
    t0 = time.perf_counter()
    table = [b"%05x %013d\n" % (k, k * 2654435761 % 10**13) for k in range(KEYS)]
    cum = [math.log(k + 1) / math.log(KEYS) for k in range(1, KEYS + 1)]  # Zipf-like
    rng = random.Random(8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        left = lines
        while left:
            k = min(left, 1 << 20)
            f.write(b"".join(rng.choices(table, cum_weights=cum, k=k)))
            left -= k
    tmp.rename(path)
    print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path, lines


def read_through(path: Path, limit: int | None = None) -> Counter[bytes] | None:
    """Read the file (into the page cache); with ``limit``, count the lines of its first
    ``limit`` bytes."""
    counts: Counter[bytes] | None = Counter() if limit is not None else None
    left = limit if limit is not None else path.stat().st_size
    rest = b""
    with open(path, "rb") as f:
        while left > 0:
            block = f.read(min(left, 8 * MiB))
            if not block:
                break
            left -= len(block)
            if counts is not None:
                lines = (rest + block).split(b"\n")
                rest = lines.pop()  # a line cut by the block's end, or b""
                counts.update(lines)
    if counts is not None and rest:
        counts[rest] += 1
    return counts


# ---- running one pipeline -----------------------------------------------------------------------

@dataclass
class Variant:
    key: str  # short name, the table's label
    shown: str  # the command as a person would type it
    stages: list[list[str]]  # argv of each process, joined by OS pipes
    bytes: int  # input size, for MB/s
    check: str  # "lines" or "top"
    stdin: str | None = None  # a file as the first stage's stdin
    tool: int | None = None  # the stage whose own peak RSS is "own MB"
    env: dict[str, str] | None = None
    daemons: list[int] = field(default_factory=list)  # pids whose CPU counts too (the tree)
    needs: str = ""  # "parallel": not run when GNU parallel is missing
    runs: list[dict[str, Any]] = field(default_factory=list)
    failure: str = ""


def hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Sampler(threading.Thread):
    """The largest VmHWM read of one process until stopped. With ``child``, of the process's
    first child (the command GNU time runs) instead."""

    def __init__(self, pid: int, child: bool) -> None:
        super().__init__(daemon=True)
        self.pid, self.child, self.peak, self.halt = pid, child, 0, threading.Event()

    def run(self) -> None:
        pid = None if self.child else self.pid
        while True:
            if pid is None:
                try:
                    with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                        kids = f.read().split()
                    pid = int(kids[0]) if kids else None
                except OSError:
                    pass
            if pid is not None:
                v = hwm_kb(pid)
                if v is not None:
                    self.peak = max(self.peak, v)
            if self.halt.wait(SAMPLE):
                return


def run(v: Variant) -> dict[str, Any]:
    """Run the variant's pipeline once: wall seconds, output, statuses, memory, CPU, noise.

    Each process runs under GNU time, which reports its peak RSS: wait4's ru_maxrss of a child
    forked from this (larger) Python process would count our own pages, inherited through exec."""
    env = v.env if v.env is not None else {k: x for k, x in os.environ.items()
                                             if k not in ("BRASIL", "BRASIL_SECRET_FILE")}
    errs = [tempfile.TemporaryFile() for _ in v.stages]
    rss = [tempfile.NamedTemporaryFile(prefix="push-bench-rss-") for _ in v.stages]
    stdin = open(v.stdin, "rb") if v.stdin else subprocess.DEVNULL
    procs: list[subprocess.Popen[bytes]] = []
    d0 = sum(sum(proc_cpu(p, default=(0.0, 0.0))) for p in v.daemons)
    busy0, self0 = busy_cpu(), proc_cpu()[0]
    t0 = time.perf_counter()
    prev: Any = stdin
    try:
        for i, argv in enumerate(v.stages):
            wrap = [str(TIME), "-f", "%M", "-o", rss[i].name] if TIME.exists() else []
            p = subprocess.Popen(wrap + argv, stdin=prev, stdout=subprocess.PIPE,
                                 stderr=errs[i], env=env,
                                 process_group=procs[0].pid if procs else 0)
            if prev is not stdin:
                prev.close()
            prev = p.stdout
            procs.append(p)
    finally:
        if v.stdin:
            stdin.close()
    sampler = Sampler(procs[v.tool].pid, TIME.exists()) if v.tool is not None else None
    if sampler:
        sampler.start()
    out = bytearray()
    fd = prev.fileno()
    deadline = time.monotonic() + RUN_TIMEOUT
    timed_out = False
    while True:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            timed_out = True
            break
        b = os.read(fd, 65536)
        if not b:
            break
        out += b
    prev.close()
    if timed_out:
        _killpg(procs[0].pid)
    statuses, cpu = [], 0.0
    for p in procs:
        while True:
            pid, st, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                _killpg(procs[0].pid)
                pid, st, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.002)
        p.returncode = os.waitstatus_to_exitcode(st)
        statuses.append(p.returncode)
        cpu += ru.ru_utime + ru.ru_stime
    wall = time.perf_counter() - t0
    if sampler:
        sampler.halt.set()
        sampler.join()
    daemons = sum(sum(proc_cpu(p, default=(0.0, 0.0))) for p in v.daemons) - d0
    cpu += daemons
    mine = proc_cpu()[0] - self0
    other = max(0.0, busy_cpu() - busy0 - cpu - mine) / wall if wall > 0 else 0.0
    peaks = []
    for f in rss:
        last = Path(f.name).read_text().strip().rpartition("\n")[2]
        f.close()
        peaks.append(int(last) if last.isdigit() else None)
    tails = []
    for argv, e in zip(v.stages, errs):
        e.seek(0)
        text = e.read().decode(errors="replace").strip()
        e.close()
        if text:
            tails.append(f"{argv[0]}: {text[-600:]}")
    return {"seconds": wall, "output": out.decode(errors="replace"), "statuses": statuses,
            "timed_out": timed_out, "own_kb": sampler.peak if sampler else None,
            "max_kb": max(peaks) if peaks and None not in peaks else None,
            "peaks_kb": peaks, "cpu": cpu, "cpu_daemons": daemons, "other_cores": other,
            "stderr": "\n".join(tails)}


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def verify(v: Variant, r: dict[str, Any], lines: int, top: list[tuple[int, str]],
           counts: Counter[bytes]) -> str:
    """'' when the run is good, else why not."""
    if r["timed_out"]:
        return f"timed out after {RUN_TIMEOUT:g} s"
    last = len(r["statuses"]) - 1
    bad = [(i, s) for i, s in enumerate(r["statuses"])
           if s != 0 and not (i < last and s in (-signal.SIGPIPE, 128 + signal.SIGPIPE))]
    if bad:
        i, s = bad[0]
        return f"`{v.stages[i][0]}` exited with {s}" + (f":\n{r['stderr']}" if r["stderr"] else "")
    out = r["output"]
    if v.check == "lines":
        if out.strip() != str(lines):
            return f"printed {out.strip()[:200]!r}, expected {lines}"
        return ""
    got = []
    for ln in out.splitlines():
        m = re.fullmatch(r"\s*(\d+) (.*)", ln)
        if not m:
            return f"unexpected line {ln[:100]!r}"
        got.append((int(m.group(1)), m.group(2)))
    want_counts = [c for c, _ in top]
    if [c for c, _ in got] != want_counts or any(counts.get(s.encode()) != c for c, s in got):
        return f"top lines {got[:3]}…, expected {top[:3]}…"
    return ""


def measure(variants: list[Variant], repeats: int, lines: int, top: list[tuple[int, str]],
            counts: Counter[bytes]) -> None:
    """Interleaved rounds, alternating the order; failed and long variants are not repeated."""
    for rnd in range(repeats):
        order = variants if rnd % 2 == 0 else variants[::-1]
        for v in order:
            if v.failure or (v.runs and len(v.runs) >= wanted(v, repeats)):
                continue
            print(f"  {v.key} (run {len(v.runs) + 1})…", file=sys.stderr)
            r = run(v)
            why = verify(v, r, lines, top, counts)
            if why:
                v.failure = why
                print(f"    FAILED: {why}", file=sys.stderr)
                continue
            v.runs.append(r)


def wanted(v: Variant, repeats: int) -> int:
    """How many runs a variant gets, from its first run's time."""
    first = v.runs[0]["seconds"] if v.runs else 0.0
    return 1 if first > LONG else min(repeats, FEWER) if first > MEDIUM else repeats


# ---- the table --------------------------------------------------------------------------------

def med(v: Variant, k: str) -> float:
    return statistics.median(r[k] for r in v.runs)


def mbps(v: Variant) -> float:
    return v.bytes / MiB / med(v, "seconds")


def best_mbps(v: Variant) -> float:
    return v.bytes / MiB / min(r["seconds"] for r in v.runs)


def mb(v: Variant, k: str) -> str:
    vals = [r[k] for r in v.runs if r[k] is not None]
    return f"{statistics.median(vals) / 1024:.1f}" if vals and len(vals) == len(v.runs) else "—"


def row(v: Variant) -> str:
    if v.failure:
        return f"   {v.key:<{W}} {v.failure.splitlines()[0][:80]}"
    noisy = med(v, "other_cores") > NOISY
    return (f"   {v.key:<{W}} {'ok':>6} {med(v, 'seconds'):>7.2f} {mbps(v):>7.0f} "
            f"{best_mbps(v):>7.0f} {len(v.runs):>3} "
            f"{mb(v, 'own_kb'):>8} {mb(v, 'max_kb'):>8} {med(v, 'cpu'):>7.2f} "
            f"{med(v, 'other_cores'):>6.2f}{'  NOISY' if noisy else ''}")


def ratio(a: Variant, b: Variant) -> float | None:
    if a.failure or b.failure or not a.runs or not b.runs:
        return None
    return mbps(a) / mbps(b)


def verdict(name: str, r: float | None, target: float, pct: bool, a: Variant,
            b: Variant) -> str:
    fmt = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.2f}×")
    if r is None:
        failed = ", ".join(v.key for v in (a, b) if v.failure or not v.runs)
        return f"(no verdict) {name}: target ≥ {fmt(target)}; no figure for {failed}"
    best = best_mbps(a) / best_mbps(b)
    return (f"{'PASS' if r >= target else 'MISS'}: {name} = {fmt(r)} (target ≥ {fmt(target)}); "
            f"{mbps(a):.0f} vs {mbps(b):.0f} MB/s (best runs: {fmt(best)})")


# ---- main -------------------------------------------------------------------------------------

def parallel_ok() -> bool:
    exe = shutil.which("parallel")
    if not exe:
        return False
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return "GNU parallel" in r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-json", action="store_true", help=f"do not write {RESULTS.name}")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="runs per variant (median)")
    ap.add_argument("--no-tree", action="store_true", help="skip section 3")
    args = ap.parse_args()
    for exe in (PUSH, PUSH.with_name("brasil")):
        if not exe.exists():
            print(f"benchmark failed: no {exe}; `make setup` first", file=sys.stderr)
            return 1
    have_parallel = parallel_ok()
    path, lines = input_file(MB)
    size = lines * LINE
    slice_bytes = min(SLICE_MB * MiB, size) // LINE * LINE
    read_through(path)
    counts = read_through(path, slice_bytes) or Counter()
    top = [(c, s.decode()) for s, c in counts.most_common(10)]
    f = str(path)
    push = [str(PUSH), "--status", "off"]
    par = ["parallel", "--will-cite"]
    shard = ["--pipe", "--shard", "1", "--colsep", " ", f"-j{COPIES}"]
    sl = str(slice_bytes)
    fan = [
        Variant("cat f | wc -l (the pipe limit)", "cat f | wc -l", [["cat", f], ["wc", "-l"]],
                size, "lines"),
        Variant(f"push |<[{COPIES}]", f"push -c 'cat f |<[{COPIES}] wc -l >| {AWK_IN_PUSH}'",
                [push + ["--local", "-c",
                         f"cat {shlex.quote(f)} |<[{COPIES}] wc -l >| {AWK_IN_PUSH}"]],
                size, "lines", tool=0),
        Variant("parallel --pipe",
                f"cat f | parallel --pipe --block 10M -j{COPIES} wc -l | awk '{AWK_SUM}'",
                [["cat", f], par + ["--pipe", "--block", "10M", f"-j{COPIES}", "wc", "-l"],
                 ["awk", AWK_SUM]], size, "lines", tool=1, needs="parallel"),
        Variant("parallel --pipepart",
                f"parallel --pipepart -a f --block 10M -j{COPIES} wc -l | awk '{AWK_SUM}'",
                [par + ["--pipepart", "-a", f, "--block", "10M", f"-j{COPIES}", "wc", "-l"],
                 ["awk", AWK_SUM]], size, "lines", tool=0, needs="parallel"),
    ]
    hashed = [
        Variant(f"push |#[{COPIES}]|", f"push -c 'cat f |#[{COPIES}]| wc -l' | awk '{AWK_SUM}'",
                [push + ["--local", "-c", f"cat {shlex.quote(f)} |#[{COPIES}]| wc -l"],
                 ["awk", AWK_SUM]], size, "lines", tool=0),
        Variant("parallel --shard",
                f"parallel --pipe --shard 1 --colsep ' ' -j{COPIES} wc -l < f | awk '{AWK_SUM}'",
                [par + shard + ["wc", "-l"], ["awk", AWK_SUM]], size, "lines", stdin=f, tool=0,
                needs="parallel"),
    ]
    words = [
        Variant(f"push |#[{COPIES}]| sort | uniq -c",
                f"push -c 'head -c {slice_bytes / MiB:.0f}M f |#[{COPIES}]| sort | uniq -c' "
                "| sort -rn | head",
                [push + ["--local", "-c", f"head -c {sl} {shlex.quote(f)} |#[{COPIES}]| "
                                          "sort | uniq -c"],
                 ["sort", "-rn"], ["head"]], slice_bytes, "top", tool=0),
        Variant("parallel --shard sort | uniq -c",
                f"head -c {slice_bytes / MiB:.0f}M f | parallel --pipe --shard 1 --colsep ' ' "
                f"-j{COPIES} 'sort | uniq -c' | sort -rn | head",
                [["head", "-c", sl, f], par + shard + ["sort | uniq -c"], ["sort", "-rn"],
                 ["head"]], slice_bytes, "top", tool=1, needs="parallel"),
    ]
    if not have_parallel:
        for v in fan + hashed + words:
            if v.needs == "parallel":
                v.failure = "not installed (sh scripts/bench-deps.sh)"
    sections: list[tuple[str, list[Variant]]] = [
        (f"(1) fan-out, line count of the whole input ({size / MiB:.0f} MB)", fan),
        (f"(2) hash by the first field, line count of the whole input ({size / MiB:.0f} MB)",
         hashed),
        (f"(2') hash, word count (sort | uniq -c) of the first {slice_bytes / MiB:.0f} MB",
         words),
    ]
    for title, group in sections:
        print(title, file=sys.stderr)
        measure(group, args.repeats, lines if group is not words else slice_bytes // LINE,
                top, counts)

    tree_v: Variant | None = None
    daemon_peaks: dict[str, int] = {}
    status = 0
    if not args.no_tree:
        tree = Tree(TREE["depth"], TREE["fanout"], TREE["slots"])
        tree_info = f"1+{TREE['fanout']} daemons × {TREE['slots']} slots"
        tree_v = Variant(f"push |<[{TREE_COPIES}] on the tree",
                         f"BRASIL=unix:DIR/n0.sock BRASIL_SECRET_FILE=DIR/secret "
                         f"push -c 'cat f |<[{TREE_COPIES}] wc -l >| {AWK_IN_PUSH}'",
                         [push + ["-c", f"cat {shlex.quote(f)} |<[{TREE_COPIES}] wc -l >| "
                                        f"{AWK_IN_PUSH}"]], size, "lines", tool=0)
        try:
            tree.up()
            tree_info += f", up in {tree.up_seconds:.1f} s"
            print(f"(3) tree: {tree_info} in {tree.dir}", file=sys.stderr)
            tree_v.env = {**os.environ, "BRASIL": tree.address,
                          "BRASIL_SECRET_FILE": f"{tree.dir}/secret"}
            tree_v.daemons = list(tree.pids.values())
            measure([tree_v], args.repeats, lines, top, counts)
            daemon_peaks = {n: hwm_kb(p) or 0 for n, p in tree.pids.items()}
        except (BenchError, OSError, subprocess.SubprocessError) as e:
            tree_v.failure = f"the tree failed: {e}"
            print(f"benchmark failed: {e}\n{tree.logs_tail()}", file=sys.stderr)
            status = 1
        finally:
            tree.down()
        sections.append((f"(3) the fan-out across a tree: {tree_info}; the daemons read f here",
                         [tree_v]))

    verdicts = report(sections, path, size, lines, slice_bytes, tree_v, daemon_peaks, fan,
                      hashed, words, args.repeats)
    if not args.no_json:
        write_json(sections, size, lines, verdicts, daemon_peaks)
    return status


def report(sections: list[tuple[str, list[Variant]]], path: Path, size: int, lines: int,
           slice_bytes: int, tree_v: Variant | None, daemon_peaks: dict[str, int],
           fan: list[Variant], hashed: list[Variant], words: list[Variant],
           repeats: int) -> list[str]:
    print(f"\nmachine: {CORES} cores ({_cpu_model()}), Python {platform.python_version()}; "
          f"GNU parallel {_parallel_version()}")
    print(f"input: {path.relative_to(ROOT)}: {size / MiB:.0f} MB (MiB), {lines:,} lines of "
          f"{LINE} bytes, {KEYS:,} distinct first fields (Zipf-like); in the page cache")
    print(f"n runs of each (up to {repeats}; {min(repeats, FEWER)} for a variant over "
          f"{MEDIUM:g} s, one over "
          f"{LONG:g} s), interleaved; time s and MB/s: median; best: the fastest run's MB/s")
    print(f"\n   {'variant':<{W}} {'answer':>6} {'time s':>7} {'MB/s':>7} {'best':>7} {'n':>3} "
          f"{'own MB':>8} {'max MB':>8} {'CPU s':>7} {'other':>6}")
    for title, group in sections:
        print(title)
        for v in group:
            print(row(v))
    print("\n   own MB: peak RSS of push itself (of GNU parallel's main process); max MB: the "
          "largest peak\n   RSS of any process of the pipeline (GNU time); CPU s: all of its "
          "processes" + (", the daemons and\n   what they ran included" if tree_v else "")
          + f";{chr(10) + '  ' if not tree_v else ''} other: cores used by other processes "
          f"meanwhile (NOISY above {NOISY})")
    if daemon_peaks:
        top = max(daemon_peaks, key=lambda k: daemon_peaks[k])
        print(f"   tree daemons' peak RSS (VmHWM): max {daemon_peaks[top] / 1024:.1f} MB ({top}), "
              f"sum {sum(daemon_peaks.values()) / 1024:.1f} MB")
    print("\ncommands (f = the input file):")
    for _, group in sections:
        for v in group:
            print(f"   {v.key:<{W}} {v.shown}")
    failed = [v for _, g in sections for v in g if v.failure and "not installed" not in v.failure]
    for v in failed:
        print(f"\nFAILED {v.key}: {v.failure}")

    limit, pushf, pipe, part = fan
    ph, sh = hashed
    pw, sw = words
    print(f"\nratios (MB/s over MB/s){'':<26} {'median':>7} {'best':>7}")
    for name, a, b in ((f"push |<[{COPIES}] / parallel --pipe", pushf, pipe),
                       (f"push |<[{COPIES}] / parallel --pipepart", pushf, part),
                       (f"push |<[{COPIES}] / cat f | wc -l", pushf, limit),
                       (f"push |#[{COPIES}]| / parallel --shard, line count", ph, sh),
                       (f"push |#[{COPIES}]| / parallel --shard, word count", pw, sw),
                       (f"push |#[{COPIES}]| / push |<[{COPIES}]", ph, pushf)) + (
            ((f"tree |<[{TREE_COPIES}] / local |<[{COPIES}]", tree_v, pushf),
             (f"tree |<[{TREE_COPIES}] / cat f | wc -l", tree_v, limit)) if tree_v else ()):
        r = ratio(a, b)
        rb = best_mbps(a) / best_mbps(b) if r is not None else None
        print(f"   {name:<48} {'—' if r is None else f'{r:.2f}':>7} "
              f"{'—' if rb is None else f'{rb:.2f}':>7}")
    verdicts = [
        verdict(f"push |<[{COPIES}] / parallel --pipe", ratio(pushf, pipe), TARGET_PIPE, False,
                pushf, pipe),
        verdict(f"push |<[{COPIES}] / the pipe limit", ratio(pushf, limit), TARGET_LIMIT, True,
                pushf, limit),
        verdict(f"push |#[{COPIES}]| / parallel --shard (line count)", ratio(ph, sh),
                TARGET_SHARD, False, ph, sh),
    ]
    own = [(med(v, "own_kb") / 1024, v.key) for v in (pushf, ph, pw) + ((tree_v,) if tree_v else ())
           if not v.failure and v.runs and v.runs[0]["own_kb"] is not None]
    if own:
        peak, which = max(own)
        ok = peak <= TARGET_RSS
        verdicts.append(f"{'PASS' if ok else 'MISS'}: push's own peak RSS at most {peak:.0f} MB "
                        f"({which}), {peak / (size / MiB):.1%} of the {size / MiB:.0f} MB input "
                        f"(target ≤ {TARGET_RSS} MB whatever the input: no whole-input buffering)")
    print()
    for v in verdicts:
        print(v)
    return verdicts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _parallel_version() -> str:
    if not parallel_ok():
        return "not installed"
    r = subprocess.run(["parallel", "--version"], capture_output=True, text=True)
    return r.stdout.split("\n", 1)[0].split()[-1]


def write_json(sections: list[tuple[str, list[Variant]]], size: int, lines: int,
               verdicts: list[str], daemon_peaks: dict[str, int]) -> None:
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": CORES, "cpu": _cpu_model(), "python": platform.python_version(),
                    "platform": platform.platform(), "parallel": _parallel_version()},
        "input": {"bytes": size, "lines": lines, "keys": KEYS},
        "targets": {"push_over_pipe": TARGET_PIPE, "push_over_limit": TARGET_LIMIT,
                    "hash_over_shard": TARGET_SHARD},
        "sections": [{"title": t, "variants": [
            {"key": v.key, "command": v.shown, "failure": v.failure, "bytes": v.bytes,
             **({"seconds": med(v, "seconds"), "mb_per_s": mbps(v)} if v.runs else {}),
             "runs": [{k: x for k, x in r.items() if k not in ("stderr",)} for r in v.runs]}
            for v in g]} for t, g in sections],
        "tree_daemon_peak_kb": daemon_peaks,
        "summary": verdicts,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
