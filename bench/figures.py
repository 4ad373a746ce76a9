"""The figures bench/compare.py measures, one per run, printed as JSON on the last line.

    VENV/bin/python -I bench/figures.py FIGURE [--tree D,F,S] [--n N] [--repeats K]

Run under the interpreter of the version being measured (its virtualenv has that version of
brasil installed), so the same measuring code drives both sides of a comparison. It uses only
what every version since the foundation has: ``brasil cluster up/down``, ``brasil serve
--listen``, and ``brasil.ninep.client.Client`` on the owner's Unix socket (no secret needed).

Figures:
  deploy      clone, ``res N``, ``exec date``, read ``stdio`` to EOF, close, on a tree made by
              ``cluster up`` (Figure 4 of the paper); also reports ``res N`` alone, and the
              median ratio of each deployment to ``seq N | xargs -P2 -I{} date`` run right
              after it
  fuse        the same deployment through `brasil mount`, with open/write/read on the mount
  roundtrips  1-byte reads of a static file, 16 in flight on one connection to ``brasil serve``
              on a Unix socket, for 3 s: round trips per second
  res-share   ``res 512`` and ``res 2048`` alternately on the tree: the daemons' CPU (schedstat,
              every thread) from the write until it returns, less the tree's idle pace measured
              at the same phase of the second before (the daemons' periodic work falls on
              whole seconds: both are away from it), per node holding slots (the paper's claim: a
              reservation's cost per node does not grow with N), and the ratio of the two;
              medians of 2 x ``--repeats``
  server-cpu  the 9P server's own CPU per 1-byte read: a Connection in this process fed chunks
              of 16 Treads through a transport that drops the replies (process time, best of 5:
              the figure a noisy machine disturbs least)
  group       on the same tree: group reads at the root (``csrv/query/gread``: ``sum`` and
              ``count`` of every node's ``status``, reduced at each level: bench/group.py's
              path without the files), and ``brasil run`` of ``true`` once on every node
              (the client library in this process: reserve, exec, output, wait, close);
              medians of ``--repeats`` after a warm-up
  batch-fine  bench/batch.py's fine grain: ``--n`` `true` jobs (non-isolated) and a quarter as
              many isolated on `brasil serve` and 2 workers of 2 slots: jobs per second
  push        the record routers (exec/route.py and its shells): PUSH on this machine over
              ``--mb`` (64) MiB of 20-byte keyed lines, ``cat f |#[2]| cat`` (hash, then the
              copies merged into push's output) and ``cat f |<[2] cat >| wc -l`` (balance, then
              a merge); and ``cat f |#[2]| cat`` on a tree of 1+2 daemons made by ``cluster up``
              (scatter and gather between daemons, then the aggregated output): MB/s, medians
              of ``--repeats`` after a warm-up; every answer's size checked
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run with -I: no script dir
from common import cpu_ns, xargs  # noqa: E402

L = "csrv/local"


def brasil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, timeout=600)


@contextlib.contextmanager
def tree_up(args: argparse.Namespace) -> Iterator[str]:
    """A tree made by ``cluster up`` in a fresh directory, torn down whatever happens."""
    depth, fanout, slots = (int(x) for x in args.tree.split(","))
    d = tempfile.mkdtemp(prefix="brasil-fig-")
    try:
        r = brasil("cluster", "up", "--depth", str(depth), "--fanout", str(fanout), "--slots",
                   str(slots), "--dir", d)
        if r.returncode != 0:
            raise SystemExit(f"cluster up failed: {r.stderr}")
        yield d
    finally:
        brasil("cluster", "down", "--dir", d)
        shutil.rmtree(d, ignore_errors=True)


Read = Callable[[str], Awaitable[bytes]]
Write = Callable[[str, str], Awaitable[object]]


async def deployments(args: argparse.Namespace, read: Read, write: Write,
                      label: str) -> dict[str, float]:
    """clone, res N, exec date, read stdio, close; medians of ``--repeats`` after a warm-up.
    Between two, the tree settles (every slot free again: the release below the root is
    asynchronous), so one measurement does not pay for the last one's cleanup."""
    total, res, ratios = [], [], []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        sid = (await read(f"{L}/clone")).decode().strip()
        await write(f"{L}/{sid}/ctl", f"res {args.n}\n")
        t1 = time.perf_counter()
        await write(f"{L}/{sid}/ctl", "exec date\n")
        out = await read(f"{L}/{sid}/stdio")
        await write(f"{L}/{sid}/ctl", "close\n")
        t2 = time.perf_counter()
        lines = out.count(b"\n")
        if lines != args.n:
            raise SystemExit(f"{lines} lines of date, not {args.n}")
        if i:
            total.append(t2 - t0)
            res.append(t1 - t0)
        await settle(read)
        if i:  # what users would otherwise run, right after: the ratio is of one moment
            ratios.append(total[-1] / xargs(args.n, parallel=2))
    return {f"{label}deploy {args.n} s": statistics.median(total),
            f"{label}res {args.n} s": statistics.median(res),
            f"{label}deploy/xargs -P2": statistics.median(ratios)}


async def deploy(args: argparse.Namespace) -> dict[str, float]:
    from brasil.ninep.client import Client
    with tree_up(args) as d:
        c = await Client.connect(f"unix:{d}/n0.sock")
        try:
            return await deployments(args, c.read, c.write, "")
        finally:
            await c.close()


async def fuse(args: argparse.Namespace) -> dict[str, float]:
    """The deployment as the issue measured it: through `brasil mount`, with plain file I/O on
    the mount (what a shell's echo and cat do)."""
    with tree_up(args) as d:
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        r = brasil("mount", mnt, "--at", f"unix:{d}/n0.sock")
        if r.returncode != 0:
            raise SystemExit(f"mount failed: {r.stderr}")

        async def read(path: str) -> bytes:
            with open(os.path.join(mnt, path), "rb") as f:
                return f.read()

        async def write(path: str, text: str) -> None:
            with open(os.path.join(mnt, path), "w") as f:
                f.write(text)
        try:
            return await deployments(args, read, write, "fuse ")
        finally:
            brasil("umount", mnt)


async def roundtrips(args: argparse.Namespace) -> dict[str, float]:
    from brasil.ninep.client import Client
    d = tempfile.mkdtemp(prefix="brasil-fig-")
    sock = f"{d}/n.sock"
    proc = subprocess.Popen([sys.executable, "-m", "brasil.cli.main", "serve", "--listen",
                             f"unix:{sock}", "--slots", "1", "--state-dir", f"{d}/state", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("brasil serve did not start")
            await asyncio.sleep(0.02)
        c = await Client.connect(f"unix:{sock}")
        try:
            files = [await c.open(f"{L}/arch") for _ in range(16)]
            count = 0
            stop = time.monotonic() + args.seconds

            async def loop(f: object) -> None:
                nonlocal count
                while time.monotonic() < stop:
                    await f.read(1, 0)  # type: ignore[attr-defined]
                    count += 1
            t0 = time.perf_counter()
            await asyncio.gather(*(loop(f) for f in files))
            elapsed = time.perf_counter() - t0
        finally:
            await c.close()
        return {"9P round trips /s": count / elapsed}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(d, ignore_errors=True)


async def until_phase(phase: float) -> None:
    """Sleep until ``phase`` seconds past the next whole second of the loop's clock (the
    daemons' periodic work falls on whole seconds of the same clock)."""
    now = asyncio.get_running_loop().time()
    await asyncio.sleep((phase - now % 1.0) % 1.0 or 1.0)


def daemon_pids(d: str) -> list[int]:
    """The tree's daemons, from the pid files ``cluster up`` writes in its directory."""
    pids = []
    for name in os.listdir(d):
        if name.endswith(".pid"):
            with open(os.path.join(d, name)) as f:
                pids.append(int(f.read().split()[0]))
    return pids


async def res_share(args: argparse.Namespace) -> dict[str, float]:
    from brasil.ninep.client import Client
    sizes = (512, 2048)
    with tree_up(args) as d:
        pids = daemon_pids(d)
        c = await Client.connect(f"unix:{d}/n0.sock")
        try:
            per: dict[int, list[float]] = {n: [] for n in sizes}
            for i in range(2 * args.repeats + 1):
                for n in (sizes if i % 2 == 0 else sizes[::-1]):
                    sid = (await c.read(f"{L}/clone")).decode().strip()
                    # The tree's housekeeping falls on whole seconds (ninep/ticks.py): its pace
                    # is measured over 0.3 s from 0.3 s past one second, and subtracted from the
                    # res written at the same phase of the next, away from the heartbeats.
                    await until_phase(0.3)
                    b0, t0 = cpu_ns(pids), time.perf_counter()
                    await asyncio.sleep(0.3)
                    cpu1, t1 = cpu_ns(pids), time.perf_counter()
                    await until_phase(0.3)
                    cpu0, t2 = cpu_ns(pids), time.perf_counter()
                    await c.write(f"{L}/{sid}/ctl", f"res {n}\n")
                    cpu = cpu_ns(pids) - cpu0
                    cpu -= (cpu1 - b0) / (t1 - t0) * (time.perf_counter() - t2)
                    rows = (await c.read(f"{L}/status")).decode().splitlines()
                    held = sum(1 for r in (ln.split() for ln in rows)
                               if len(r) > 2 and r[0] != "total" and r[2].isdigit()
                               and int(r[2]) < int(r[1]))
                    await c.write(f"{L}/{sid}/ctl", "close\n")
                    await settle(c.read)
                    if i:  # the first round warms up
                        per[n].append(cpu / 1e6 / max(held, 1))
        finally:
            await c.close()
    a, b = statistics.median(per[512]), statistics.median(per[2048])
    return {"res 512 CPU ms per holder": a, "res 2048 CPU ms per holder": b,
            "res 2048/512 per holder": b / a}


async def settle(read: Read) -> None:
    """Until every slot is free again (the release below the root is asynchronous)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = (await read(f"{L}/status")).decode().splitlines()
        total_row = [ln.split() for ln in rows if ln.startswith("total ")]
        if total_row and total_row[0][1] == total_row[0][2]:
            return
        await asyncio.sleep(0.05)


async def server_cpu(args: argparse.Namespace) -> dict[str, float]:
    from brasil.ninep import messages as m
    from brasil.ninep.server import Connection, Server
    from brasil.ninep.synthetic import Entry, StaticFile, TableDir

    class Drop(asyncio.Transport):
        def write(self, data: object) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

    server = Server(TableDir([Entry("file", 0o444, lambda _owner: StaticFile(b"x" * 64))]))
    try:
        conn = Connection(server, 1, None, kind="unix")
    except TypeError:  # before the Unix socket was told apart (3cecb6d and older)
        conn = Connection(server, 1, None)
    conn.transport = Drop()
    for msg in (m.Tversion(0xFFFF, 65536, "9P2000"), m.Tattach(1, 0, 0xFFFFFFFF, "bench", ""),
                m.Twalk(1, 0, 1, ["file"]), m.Topen(1, 1, 0)):
        conn.data_received(m.encode(msg))
    chunk = b"".join(m.encode(m.Tread(tag, 1, 0, 1)) for tag in range(16))
    best, n = float("inf"), 20000
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            conn.data_received(chunk)
        best = min(best, (time.process_time() - t0) / (n * 16))
    return {"server CPU per read us": best * 1e6}


async def group(args: argparse.Namespace) -> dict[str, float]:
    import importlib

    from brasil.ninep.client import Client
    from brasil.ninep.constants import ORDWR
    try:
        run = importlib.import_module("brasil.client.run").run  # since the redesign (issue 18)
    except ImportError:
        run = importlib.import_module("brasil.group.run").run  # before it
    depth, fanout, _ = (int(x) for x in args.tree.split(","))
    nodes = sum(fanout ** k for k in range(depth + 1))

    async def gread(c: Client, agg: str) -> dict[str, Any]:
        f = await c.open("csrv/query/gread", ORDWR)
        try:
            await f.write(json.dumps({"path": "status", "agg": agg}))
            chunks: list[bytes] = []
            while chunk := await f.read(None, sum(map(len, chunks))):  # the answer from 0
                chunks.append(chunk)
            answer = b"".join(chunks)
        finally:
            await f.close()
        result: dict[str, Any] = json.loads(answer)
        if result.get("errors") or len(result["nodes"]) != nodes:
            raise SystemExit(f"gread {agg}: {result.get('errors')}, {result.get('nodes')}")
        return result

    times: dict[str, list[float]] = {"gread sum": [], "gread count": [], "run": []}
    with tree_up(args) as d:
        c = await Client.connect(f"unix:{d}/n0.sock")
        try:
            for i in range(args.repeats + 1):
                for agg in ("sum", "count"):
                    t0 = time.perf_counter()
                    await gread(c, agg)
                    if i:
                        times[f"gread {agg}"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                r = await run(c, "true", out=lambda line: None, err=lambda line: None)
                if i:
                    times["run"].append(time.perf_counter() - t0)
                if r.status != 0 or len(r.statuses) != nodes:
                    raise SystemExit(f"run: status {r.status}, {len(r.statuses)} ranks")
                await settle(c.read)
        finally:
            await c.close()
    return {f"{k} {nodes} nodes s": statistics.median(v) for k, v in times.items()}


async def batch_fine(args: argparse.Namespace) -> dict[str, float]:
    """bench/batch.py's fine grain (c): ``--n`` `true` jobs non-isolated, a quarter as many
    isolated, on a fresh `brasil serve` and 2 `brasil worker` processes of 2 slots each."""
    from batch import Rig, brasil_run  # bench/batch.py
    out = {}
    for key, n, iso in (("plain", args.n, False), ("isolated", max(args.n // 4, 1), True)):
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as d, \
                Rig(d, [{"slots": 2}, {"slots": 2}]) as rig:
            r = await brasil_run(rig, ["true"] * n, key, isolate=iso)
            out[f"batch {key} jobs/s"] = n / r["makespan"]
    return out


def _push_input(mb: int, d: str) -> tuple[str, int]:
    """``mb`` MiB of lines ``"%05x %013d\\n"`` (keys repeat, as in bench/push.py)."""
    import random
    rnd = random.Random(7)
    path = os.path.join(d, "input")
    lines = (mb << 20) // 20
    with open(path, "wb") as f:
        for _ in range(0, lines, 4096):
            f.write(b"".join(b"%05x %013d\n" % (k, k * 7919) for k in
                             (rnd.randrange(4096) for _ in range(4096))))
    return path, os.path.getsize(path)


def _push_rate(cmd: str, size: int, env: dict[str, str], lines: bool) -> float:
    """MB/s of one ``push -c CMD`` whose output is checked: the input's size, or line count."""
    push = os.path.join(os.path.dirname(sys.executable), "push")
    t0 = time.perf_counter()
    r = subprocess.run([push, "-c", cmd], capture_output=True, env=env, timeout=600)
    dt = time.perf_counter() - t0
    got = int(r.stdout.split()[0]) if lines and r.stdout.strip() else len(r.stdout)
    want = size // 20 if lines else size
    if r.returncode != 0 or got != want:
        raise SystemExit(f"push -c {cmd!r}: status {r.returncode}, {got} instead of {want}: "
                         f"{r.stderr.decode(errors='replace')[-500:]}")
    return size / dt / 1e6


async def push(args: argparse.Namespace) -> dict[str, float]:
    local = {k: v for k, v in os.environ.items() if k not in ("BRASIL", "BRASIL_SECRET_FILE")}
    with tempfile.TemporaryDirectory(prefix="brasil-fig-push-") as tmp:
        path, size = _push_input(args.mb, tmp)
        cases = {"push hash local MB/s": (f"cat {path} |#[2]| cat", local, False),
                 "push balance+merge local MB/s": (f"cat {path} |<[2] cat >| wc -l", local, True)}
        rates: dict[str, list[float]] = {k: [] for k in cases}
        for i in range(args.repeats + 1):
            for name, (cmd, env, lines) in cases.items():
                rate = _push_rate(cmd, size, env, lines)
                if i:  # the first round warms the page cache
                    rates[name].append(rate)
        tree = argparse.Namespace(tree="1,2,2")
        with tree_up(tree) as d:
            env = {**local, "BRASIL": f"unix:{d}/n0.sock", "BRASIL_SECRET_FILE": f"{d}/secret"}
            key = "push hash tree MB/s"
            rates[key] = []
            for i in range(args.repeats + 1):
                rate = _push_rate(f"cat {path} |#[2]| cat", size, env, False)
                if i:
                    rates[key].append(rate)
    return {k: statistics.median(v) for k, v in rates.items()}


FIGURES = {"deploy": deploy, "fuse": fuse, "roundtrips": roundtrips, "res-share": res_share,
           "server-cpu": server_cpu, "batch-fine": batch_fine, "group": group, "push": push}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("figure", choices=sorted(FIGURES))
    ap.add_argument("--tree", default="2,8,32", help="depth,fanout,slots (default 2,8,32: "
                    "1+8+64 daemons)")
    ap.add_argument("--n", type=int, default=2048, help="commands per deployment (2048)")
    ap.add_argument("--repeats", type=int, default=3, help="deployments per run, median (3)")
    ap.add_argument("--mb", type=int, default=64, help="push: MiB of input (64)")
    ap.add_argument("--seconds", type=float, default=3.0, help="roundtrips: duration (3)")
    args = ap.parse_args()
    result = asyncio.run(FIGURES[args.figure](args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
