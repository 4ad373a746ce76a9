"""The simulator (brasil.sim): how every operation grows with the tree, to 10,000 daemons.

    .venv/bin/python bench/sim.py                       # N = 64, 512; fan-out 8 and 32 (~1 min)
    .venv/bin/python bench/sim.py --full                # N = 64, 512, 4096, 10000 (minutes)
    .venv/bin/python bench/sim.py --nodes 4096 --fanout 32 [--slots S] [--plots DIR]
    .venv/bin/python bench/sim.py --validate            # 1+8+64 real daemons against simulated
    .venv/bin/python bench/sim.py --batch [--full]      # the batch scheduler alone: W placeholders

Each tree is the real daemon code (brasil.sim.cluster: compose's daemons on simulated loops,
joined over an in-memory network), one slot per node unless ``--slots``; every daemon is charged
the real CPU its handlers take, on a core of its own. Per tree, a row per operation:

- ``idle 3s``: nothing but the heartbeats (each parent reads each child's ``subtree`` once a
  second): what the root receives and spends per second of an idle tree;
- ``res N``: reserve every slot of the tree (the paper's Figure 5), then close;
- ``deploy N``: clone, ``res N``, ``exec date`` (simulated: 1 ms, 29 bytes), read ``stdio``
  (one line per rank), close (the paper's Figure 4, Flux's ``flux exec``);
- ``status``: the root's ``status`` (every node asked afresh);
- ``gread equiv``, ``gread sum``: group reads over every node (an identical exported file's
  ``equiv``; ``sum`` of ``status``), reduced in the tree;
- ``kill leaf`` / ``freeze leaf`` / ``kill interior``: virtual seconds until the parent drops
  it, until the root's view lost it, and (interior) until its subtree re-homed under the root.

Columns: virtual seconds the operation took, the root's charged CPU, bytes the root received
and sent, every daemon's CPU together, and the real seconds the simulation took. Memory per
simulated daemon: the process's RSS growth over the tree's start, divided by N. Tables on
stdout; JSON in bench/results/sim.json (sim-validation.json for ``--validate``); plots (PNG) in ``--plots`` (default bench/results/sim/;
docs/sim/ holds the published ones).

The batch scenario (after the trees, or alone with ``--batch``; brasil.sim.batch): the real
scheduler on one simulated daemon, its SQLite store's writes on that daemon's loop, and W real
placeholders (``brasil worker``'s Worker, 1 slot each unless ``--batch-slots``) on loops of
their own, pulling ``--jobs-per`` (10) jobs per slot of ``--duration`` (20 ms median,
log-normal sigma 0.4: 9–44 ms) submitted at once. W = 16, 64, 512 (``--full``: and 4096,
10000; ``--placeholders`` to choose). Per W: the registrations' cost, then the makespan
(virtual), the ideal one (every slot busy throughout), jobs/s, the scheduler's CPU per job and
its busy fraction (1.0: dispatch has saturated), bytes at the scheduler per job; and, before
the jobs, 5 virtual seconds of the placeholders idle: the scheduler's CPU (core fraction) and
bytes received per second. JSON in
bench/results/sim-batch.json, the plot batch.png beside the others.

``--validate``: the same deployment (``res 2048``, ``exec date``, read, close) and ``res 2048``
on bench/tree.py's 1+8+64 real daemons of 32 slots, then simulated with this machine's link
figures (loopback latency and bandwidth, measured here; the commands' duration and a fork's
cost measured here too); the ratio simulated/real per phase is the margin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from brasil.sim import failures, ops
from brasil.sim.cluster import Figures, SimCluster
from brasil.sim.commands import Behaviour
from brasil.sim.net import LinkModel

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "sim.json"
VALIDATION = BENCH / "results" / "sim-validation.json"
PLOTS = BENCH / "results" / "sim"

QUICK = {"nodes": (64, 512), "fanouts": (8, 32), "placeholders": (16, 64, 512)}
FULL = {"nodes": (64, 512, 4096, 10000), "fanouts": (8, 32),
        "placeholders": (16, 64, 512, 4096, 10000)}
BATCH_RESULTS = BENCH / "results" / "sim-batch.json"
BATCH_VALIDATION = BENCH / "results" / "sim-batch-validation.json"


@contextlib.contextmanager
def exported_dir() -> Iterator[str]:
    """One directory every simulated node exports (fs/): the file an ``equiv`` reads."""
    with tempfile.TemporaryDirectory(prefix="brasil-sim-") as d:
        Path(d, "conf").write_text("the same on every node\n")
        yield d


def one_tree(n: int, fanout: int, slots: int, model: LinkModel, behaviour: Behaviour,
             export: str, failures_too: bool = True) -> dict[str, Any]:
    c = SimCluster(n, fanout, slots=slots, model=model, behaviour=behaviour, export=export)
    c.up()
    depth = max(name.count(".") + (name != "n0") for name, _ in c.layout)
    print(f"\n{n} daemons, fan-out {fanout} (depth {depth}), {slots} slot(s) each: up in "
          f"{c.up_virtual:.2f} virtual s, {c.up_real:.1f} real s; "
          f"{c.rss_per_node / 1024:.0f} KiB per daemon", file=sys.stderr, flush=True)
    total = n * slots
    up_virtual, rss = c.up_virtual, c.rss_per_node
    rows: list[Figures] = []
    try:
        rows.append(c.idle(3))
        c.measure("warm", lambda cl: ops.deploy(cl, total))  # first sessions, lazy imports
        c.run(_wait_free(c, total))
        rows.append(c.measure(f"res {total}", lambda cl: ops.reserve(cl, total)))
        c.run(_wait_free(c, total))
        rows.append(c.measure(f"deploy {total}", lambda cl: ops.deploy(cl, total)))
        c.run(_wait_free(c, total))
        rows.append(c.measure("status", lambda cl: ops.status(cl, n)))
        rows.append(c.measure("gread equiv", lambda cl: ops.group_read(cl, "fs/conf", "equiv",
                                                                        n)))
        rows.append(c.measure("gread sum", lambda cl: ops.group_read(cl, "status", "sum", n)))
        losses: dict[str, Any] = {}
        if failures_too and n >= 1 + fanout + 2:
            names = [name for name, _ in c.layout]
            leaves = [x for x in names if not any(y.startswith(x + ".") for y in names)
                      and x != "n0"]
            losses["kill leaf"] = failures.lose(c, leaves[-1], "kill")
            losses["freeze leaf"] = failures.lose(c, leaves[-2], "freeze")
            losses["kill interior"] = failures.lose(c, "n1", "kill")
    finally:
        c.down()
        del c
        gc.collect()
    out = {"nodes": n, "fanout": fanout, "depth": depth, "slots": slots,
           "up_virtual_s": up_virtual, "memory_per_daemon_kib": rss / 1024,
           "rows": [r.row() for r in rows], "failures": losses}
    return out


def in_child(n: int, fanout: int, args: argparse.Namespace) -> dict[str, Any]:
    """One tree in a process of its own: its memory is the process's growth alone, and no
    tree inherits another's heap."""
    cmd = [sys.executable, __file__, "--one", "--nodes", str(n), "--fanout", str(fanout),
           "--slots", str(args.slots), "--latency", str(args.latency),
           "--bandwidth", str(args.bandwidth)] + (["--no-failures"] if args.no_failures else [])
    if args.lock:  # a machine shared with others: one tree at a time holds the lock
        cmd = ["flock", args.lock, *cmd]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"the simulation of N={n} k={fanout} failed ({r.returncode})")
    return dict(json.loads(r.stdout.splitlines()[-1]))


def one_batch(w: int, args: argparse.Namespace) -> dict[str, Any]:
    from brasil.sim.batch import SimBatch
    sb = SimBatch(w, slots=args.batch_slots, duration=args.duration,
                  model=LinkModel(args.latency, args.bandwidth))
    try:
        reg = sb.up()
        print(f"\n{w} placeholders registered in {reg['virtual_s']:.2f} virtual s "
              f"({reg['real_s']:.1f} real s); {reg['rss_per_placeholder'] / 1024:.0f} KiB each",
              file=sys.stderr, flush=True)
        idle = sb.idle(5.0)
        run = sb.run(args.jobs_per)
    finally:
        sb.down()
    return {"placeholders": w, "register": reg, **idle, **run}


def batch_in_child(w: int, args: argparse.Namespace) -> dict[str, Any]:
    """One batch run in a process of its own (as in_child)."""
    cmd = [sys.executable, __file__, "--one-batch", str(w), "--batch-slots", str(args.batch_slots),
           "--jobs-per", str(args.jobs_per), "--duration", str(args.duration),
           "--latency", str(args.latency), "--bandwidth", str(args.bandwidth)]
    if args.lock:
        cmd = ["flock", args.lock, *cmd]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"the batch simulation of W={w} failed ({r.returncode})")
    return dict(json.loads(r.stdout.splitlines()[-1]))


def print_batch(rows: list[dict[str, Any]]) -> None:
    print(f"\n  {'W':>6} {'jobs':>7} {'register ms':>11} {'makespan s':>10} {'ideal s':>8} "
          f"{'jobs/s':>7} {'CPU/job ms':>10} {'busy':>5} {'rx B/job':>8} {'tx B/job':>8} "
          f"{'idle CPU':>8} {'idle rx/s':>9} {'real s':>7}")
    for r in rows:
        print(f"  {r['placeholders']:>6} {r['jobs']:>7} {ms(r['register']['virtual_s']):>11} "
              f"{r['makespan_s']:10.2f} {r['ideal_s']:8.2f} {r['jobs_per_s']:7.0f} "
              f"{r['cpu_per_job_ms']:10.3f} {r['busy']:5.2f} {r['rx_per_job']:8.0f} "
              f"{r['tx_per_job']:8.0f} {r.get('idle_cpu_per_s', 0):8.3f} "
              f"{r.get('idle_rx_per_s', 0) / 1e3:7.1f}KB {r['real_s']:7.1f}")


def plot_batch(rows: list[dict[str, Any]], where: Path) -> Path:
    """Against W: the makespan beside the ideal one, jobs/s, the scheduler's CPU per job and
    its busy fraction."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    where.mkdir(parents=True, exist_ok=True)
    xs = [r["placeholders"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    a = axes[0][0]
    a.plot(xs, [r["makespan_s"] for r in rows], marker="o", label="makespan")
    a.plot(xs, [r["ideal_s"] for r in rows], marker=".", linestyle="--", label="ideal")
    a.set_ylabel("virtual seconds")
    a.set_yscale("log")
    a.legend()
    a = axes[0][1]
    a.plot(xs, [r["jobs_per_s"] for r in rows], marker="o", label="dispatched")
    a.plot(xs, [r["jobs"] / r["ideal_s"] for r in rows], marker=".", linestyle="--",
           label="demand (ideal)")
    a.set_ylabel("jobs per virtual second")
    a.set_yscale("log")
    a.legend()
    a = axes[1][0]
    a.plot(xs, [r["cpu_per_job_ms"] for r in rows], marker="o")
    a.set_ylabel("scheduler CPU per job (ms)")
    a.set_ylim(0, max(r["cpu_per_job_ms"] for r in rows) * 1.2)
    a = axes[1][1]
    a.plot(xs, [r["busy"] for r in rows], marker="o")
    a.axhline(1.0, color="grey", linewidth=0.8)
    a.set_ylabel("scheduler's busy fraction")
    a.set_ylim(0, 1.1)
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    for a in (ax for row in axes for ax in row):
        a.set_xscale("log")
        a.set_xticks(xs, [f"{x // 1000}k" if x >= 10000 else f"{x:,}" for x in xs])
        a.xaxis.set_minor_formatter(NullFormatter())
        a.yaxis.set_minor_formatter(NullFormatter())
        if a.get_yscale() == "log":
            a.yaxis.set_major_formatter(ScalarFormatter())
        a.set_xlabel("placeholders (W)")
        a.grid(True, which="both", alpha=0.3)
    j = rows[0]["jobs"] // (rows[0]["placeholders"] * rows[0]["slots"])
    fig.suptitle(f"simulated batch scheduler: {j} short jobs per placeholder slot")
    fig.tight_layout()
    path = where / "batch.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


async def _wait_free(c: SimCluster, total: int) -> None:
    assert c.client is not None
    await ops.wait_free(c.client, total)


def ms(x: float) -> str:
    return f"{x * 1000:9.1f}"


def print_table(r: dict[str, Any]) -> None:
    print(f"\nN={r['nodes']} fan-out {r['fanout']} depth {r['depth']}: "
          f"{r['memory_per_daemon_kib']:.0f} KiB per daemon")
    print(f"  {'operation':<16} {'virtual ms':>10} {'root CPU ms':>11} {'root rx KB':>10} "
          f"{'root tx KB':>10} {'all CPU s':>9} {'real s':>7}")
    for row in r["rows"]:
        print(f"  {row['op']:<16} {ms(row['virtual_s']):>10} {ms(row['root_cpu_s']):>11} "
              f"{row['root_rx_bytes'] / 1000:10.1f} {row['root_tx_bytes'] / 1000:10.1f} "
              f"{row['all_cpu_s']:9.2f} {row['real_s']:7.1f}")
    for what, f in r["failures"].items():
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in f.items())
        print(f"  {what:<16} {parts}")


def plot(results: list[dict[str, Any]], where: Path) -> list[Path]:
    """One figure per measure: virtual time, the root's CPU, the root's bytes received, and
    memory per daemon, each against N, a line per operation and fan-out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    where.mkdir(parents=True, exist_ok=True)
    made = []
    ops_seen = [row["op"].split()[0] if row["op"].split()[0] in ("res", "deploy")
                else row["op"] for row in results[0]["rows"]]
    measures = (("virtual_s", "virtual seconds", "time"),
                ("root_cpu_s", "root's CPU seconds (charged)", "root_cpu"),
                ("root_rx_bytes", "bytes received by the root", "root_rx"))
    fanouts = sorted({r["fanout"] for r in results})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for key, label, stem in measures:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for k in fanouts:
            mine = sorted((r for r in results if r["fanout"] == k), key=lambda r: r["nodes"])
            for i, op in enumerate(ops_seen):
                if key == "virtual_s" and op.startswith("idle"):
                    continue  # (its time is the time it was left idle)
                xs = [r["nodes"] for r in mine]
                ys = [max(r["rows"][i][key], 1e-7) for r in mine]
                ax.plot(xs, ys, marker="o", linestyle="-" if k == fanouts[0] else "--",
                        color=colours[i % len(colours)], label=f"{op} (k={k})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("daemons (N)")
        ax.set_ylabel(label)
        ax.set_title(f"simulated tree: {label} per operation")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = where / f"{stem}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in fanouts:
        mine = sorted((r for r in results if r["fanout"] == k), key=lambda r: r["nodes"])
        ax.plot([r["nodes"] for r in mine], [r["memory_per_daemon_kib"] for r in mine],
                marker="o", label=f"k={k}")
    ax.set_xscale("log")
    ax.set_xlabel("daemons (N)")
    ax.set_ylabel("KiB per simulated daemon")
    ax.set_title("memory per simulated daemon (RSS growth / N)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = where / "memory.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    made.append(path)
    return made


# ---- validation against real daemons ------------------------------------------------------------

def loopback_figures() -> LinkModel:
    """This machine's loopback: one-way latency (half a TCP ping-pong of 1 byte, median of
    2,000) and bandwidth (64 MiB through one connection)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def echo() -> None:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            if len(data) == 1:
                conn.sendall(data)
        conn.close()
    th = threading.Thread(target=echo, daemon=True)
    th.start()
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    for _ in range(2000):
        t0 = time.perf_counter()
        c.sendall(b"x")
        c.recv(1)
        rtts.append(time.perf_counter() - t0)
    block = b"y" * (1 << 20)
    t0 = time.perf_counter()
    for _ in range(64):
        c.sendall(block)
    c.shutdown(socket.SHUT_WR)
    th.join()
    bw = (64 << 20) / (time.perf_counter() - t0)
    c.close()
    srv.close()
    return LinkModel(latency=statistics.median(rtts) / 2, bandwidth=bw)


def socket_cpu() -> float:
    """CPU a real socket costs per message end here: an asyncio TCP ping-pong of 1-byte
    messages on loopback (both ends in this process), the process's CPU over four ends per
    round trip (the echo's own Python is a few lines: counted in)."""
    rounds = 5000

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    class Ping(Echo):
        def __init__(self, done: asyncio.Future[None]) -> None:
            self.done, self.left = done, rounds

        def data_received(self, data: bytes) -> None:
            self.left -= 1
            if self.left:
                self.transport.write(data)
            elif not self.done.done():
                self.done.set_result(None)

    async def run() -> float:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(lambda: Ping(done), "127.0.0.1", port)
        t0 = time.process_time()
        transport.write(b"x")
        await done
        cpu = time.process_time() - t0
        transport.close()
        server.close()
        return cpu / (4 * rounds)
    return asyncio.run(run())


def command_figures(prog: str = "date") -> Behaviour:
    """``prog``'s run and a fork's cost here: the median wall time of a Popen of it to its
    exit, split as the launcher's spawn cost (Popen's return) and the rest (the run)."""
    spawn, total = [], []
    for _ in range(100):
        t0 = time.perf_counter()
        p = subprocess.Popen([prog], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.PIPE, start_new_session=True)
        t1 = time.perf_counter()
        p.communicate()
        t2 = time.perf_counter()
        spawn.append(t1 - t0)
        total.append(t2 - t0)
    return Behaviour(duration=statistics.median(total) - statistics.median(spawn),
                     spawn=statistics.median(spawn))


def validate(repeats: int) -> dict[str, Any]:
    """res 2048 and the Figure 4 deployment on real 1+8+64 daemons (bench/tree.py), then on
    the simulated tree with this machine's figures: medians, and simulated/real."""
    sys.path.insert(0, str(BENCH))
    import tree as real  # bench/tree.py's machinery: `brasil cluster up`, its client
    link, behaviour = loopback_figures(), command_figures()
    model = LinkModel(link.latency, link.bandwidth, socket_cpu())
    print(f"this machine: loopback {model}, {model.cpu_per_message * 1e6:.1f} µs of CPU per "
          f"message end; date: spawn {behaviour.spawn * 1e3:.2f} ms, run "
          f"{behaviour.duration * 1e3:.2f} ms", file=sys.stderr, flush=True)
    n = 2048
    t = real.Tree(2, 8, 32)
    t.up()
    real_res: list[float] = []
    real_dep: list[dict[str, float]] = []
    try:
        async def drive() -> None:
            c = await t.client()
            try:
                await real.deploy(c, t, n)  # warm up
                for _ in range(repeats):
                    real_res.append((await real.one_res(c, t, n))["res"])
                    real_dep.append(await real.deploy(c, t, n))
            finally:
                await c.close()
        asyncio.run(drive())
    finally:
        t.down()
    sims = {"own": simulate_deploy(n, repeats, model, behaviour, None),
            "shared": simulate_deploy(n, repeats, model, behaviour, os.cpu_count() or 1)}
    phases = ("res", "exec", "read", "total")
    out: dict[str, Any] = {"link": {"latency_s": model.latency, "bandwidth_Bps": model.bandwidth,
                                    "cpu_per_message_s": model.cpu_per_message},
                           "date": {"spawn_s": behaviour.spawn, "run_s": behaviour.duration},
                           "cores": os.cpu_count()}
    real_of = {"res_alone": statistics.median(real_res),
               **{p: statistics.median(d[p] for d in real_dep) for p in phases}}
    print(f"\nvalidation: 1+8+64 daemons, 32 slots, N = {n}; median of {repeats}; real: 73 "
          f"daemons on this machine's {os.cpu_count()} cores; simulated with a core per daemon "
          "(own) and with the machine's cores shared (shared)")
    print(f"  {'phase':<10} {'real ms':>9} {'own ms':>9} {'own/real':>8} {'shared ms':>9} "
          f"{'shared/real':>11}")
    for k, r in real_of.items():
        own, shared = sims["own"][k], sims["shared"][k]
        out[k] = {"real": r, "sim_own": own, "sim_shared": shared,
                  "own_ratio": own / r if r else None, "shared_ratio": shared / r if r else None}
        print(f"  {k:<10} {ms(r)} {ms(own)} {own / r:8.2f} {ms(shared)} {shared / r:11.2f}")
    return out


def validate_batch(n: int) -> dict[str, Any]:
    """bench/batch.py's fine-grain run (c): ``n`` ``true`` jobs on 2 real workers of 2 slots
    and a real ``brasil serve``, then simulated with ``true``'s measured time (its spawn and
    run), on a core each and on this machine's cores shared: the makespan and the scheduler's
    CPU per job (the real one from /proc: its process, every thread)."""
    sys.path.insert(0, str(BENCH))
    import batch as real  # bench/batch.py's Rig: brasil serve and brasil worker processes
    true = command_figures("true")
    took = true.duration + true.spawn
    link = loopback_figures()
    model = LinkModel(link.latency, link.bandwidth, socket_cpu())
    print(f"this machine: true takes {took * 1e3:.2f} ms (spawn and run); loopback {model}, "
          f"{model.cpu_per_message * 1e6:.1f} µs of CPU per message end", file=sys.stderr,
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-simbatch-") as d, \
            real.Rig(d, [{"slots": 2}, {"slots": 2}]) as rig:
        async def drive() -> dict[str, Any]:
            b = await rig.batch()  # (the workers registered)
            await b.close()
            cpu0 = sum(real.cpu_seconds(rig.serve.pid))
            r = await real.brasil_run(rig, ["true"] * n, "validate")
            return {"makespan_s": r["makespan"], "done": r["done"],
                    "cpu_per_job_ms": 1e3 * (sum(real.cpu_seconds(rig.serve.pid)) - cpu0) / n}
        measured = asyncio.run(drive())
    out: dict[str, Any] = {"jobs": n, "true_s": took, "real": measured,
                           "link": {"latency_s": model.latency, "bandwidth_Bps": model.bandwidth,
                                    "cpu_per_message_s": model.cpu_per_message}}
    from brasil.sim.batch import SimBatch
    for key, cores in (("own", None), ("shared", os.cpu_count() or 1)):
        sb = SimBatch(2, slots=2, duration=took, sigma=0.0, cores=cores, model=model)
        try:
            sb.up()
            f = sb.run(n // 4, cmd="true")
        finally:
            sb.down()
        out[key] = {"makespan_s": f["makespan_s"], "cpu_per_job_ms": f["cpu_per_job_ms"],
                    "done": f["summary"].get("done", 0)}
    print(f"\nvalidation of the batch scenario: {n} `true` jobs on 2 workers of 2 slots")
    print(f"  {'':<14} {'real':>8} {'sim own':>8} {'own/real':>8} {'sim shared':>10} "
          f"{'shared/real':>11}")
    for k, label in (("makespan_s", "makespan s"), ("cpu_per_job_ms", "CPU/job ms")):
        r, o, sh = measured[k], out["own"][k], out["shared"][k]
        print(f"  {label:<14} {r:8.3f} {o:8.3f} {o / r:8.2f} {sh:10.3f} {sh / r:11.2f}")
    return out


def simulate_deploy(n: int, repeats: int, model: LinkModel, behaviour: Behaviour,
                    cores: int | None) -> dict[str, float]:
    """bench/tree.py's res N and Figure 4 on a simulated 1+8+64 tree of 32 slots: medians."""
    sim = SimCluster(73, 8, slots=32, model=model, behaviour=behaviour, cores=cores)
    sim.up()
    res: list[float] = []
    dep: list[dict[str, Any]] = []
    try:
        sim.measure("warm", lambda cl: ops.deploy(cl, n))
        sim.run(_wait_free(sim, 73 * 32))
        for _ in range(repeats):
            res.append(sim.measure("res", lambda cl: ops.reserve(cl, n)).virtual)
            sim.run(_wait_free(sim, 73 * 32))
            f = sim.measure("deploy", lambda cl: ops.deploy(cl, n))
            dep.append({**f.extra, "total": f.virtual})
            sim.run(_wait_free(sim, 73 * 32))
    finally:
        sim.down()
    return {"res_alone": statistics.median(res),
            **{p: statistics.median(d[p] for d in dep) for p in ("res", "exec", "read", "total")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default=None, help="N, or N1,N2,… (default 64,512)")
    ap.add_argument("--fanout", default=None, help="K, or K1,K2 (default 8,32)")
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="N = 64, 512, 4096, 10000")
    ap.add_argument("--no-failures", action="store_true", help="skip the kill/freeze rows")
    ap.add_argument("--latency", type=float, default=LinkModel.latency, help="one way, seconds")
    ap.add_argument("--bandwidth", type=float, default=LinkModel.bandwidth, help="bytes/s")
    ap.add_argument("--plots", default=str(PLOTS), help="directory for the PNG figures")
    ap.add_argument("--validate", action="store_true",
                    help="real 1+8+64 daemons against the simulated tree (needs the tree's "
                         "`brasil cluster up`)")
    ap.add_argument("--repeats", type=int, default=3, help="for --validate")
    ap.add_argument("--no-json", action="store_true")
    ap.add_argument("--plot-from", help="only draw the plots of a results JSON (sim.json)")
    ap.add_argument("--lock", help="run each tree under `flock LOCK` (a shared machine)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # (in_child's)
    ap.add_argument("--batch", action="store_true", help="the batch scenario alone")
    ap.add_argument("--no-batch", action="store_true", help="the trees alone")
    ap.add_argument("--placeholders", default=None,
                    help="W, or W1,W2,… (default 16,64,512; --full: to 10000)")
    ap.add_argument("--batch-slots", type=int, default=1, help="slots per placeholder")
    ap.add_argument("--jobs-per", type=int, default=10, help="jobs per placeholder slot")
    ap.add_argument("--duration", type=float, default=0.02, help="a job's median seconds")
    ap.add_argument("--one-batch", type=int, help=argparse.SUPPRESS)  # (batch_in_child's)
    ap.add_argument("--validate-batch", type=int, metavar="JOBS", nargs="?", const=2000,
                    help="real brasil serve and 2 workers against the simulated scheduler "
                         "(JOBS `true` jobs, default 2000)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # (lost children are logged: expected here)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # (teardown of killed links)
    if args.plot_from:
        for p in plot(json.loads(Path(args.plot_from).read_text())["trees"], Path(args.plots)):
            print(f"plot: {p}")
        return 0
    if args.validate_batch:
        r = validate_batch(args.validate_batch)
        if not args.no_json:
            BATCH_VALIDATION.parent.mkdir(parents=True, exist_ok=True)
            BATCH_VALIDATION.write_text(json.dumps(r, indent=1))
            print(f"results: {BATCH_VALIDATION}")
        return 0
    if args.one_batch:
        print(json.dumps(one_batch(args.one_batch, args)))
        return 0
    if args.one:
        with exported_dir() as export:
            r = one_tree(int(args.nodes), int(args.fanout), args.slots,
                         LinkModel(args.latency, args.bandwidth), Behaviour(), export,
                         not args.no_failures)
        print(json.dumps(r))
        return 0
    cfg = FULL if args.full else QUICK
    nodes = tuple(int(x) for x in args.nodes.split(",")) if args.nodes else cfg["nodes"]
    fanouts = tuple(int(x) for x in args.fanout.split(",")) if args.fanout else cfg["fanouts"]
    report: dict[str, Any] = {"model": {"latency_s": args.latency,
                                        "bandwidth_Bps": args.bandwidth}}
    if args.validate:
        report["validation"] = validate(args.repeats)
    elif not args.batch:
        results = []
        for k in fanouts:
            for n in nodes:
                r = in_child(n, k, args)
                print_table(r)
                results.append(r)
        report["trees"] = results
        if len(nodes) > 1:
            for p in plot(results, Path(args.plots)):
                print(f"plot: {p}")
    if not args.no_json and not args.batch:
        path = VALIDATION if args.validate else RESULTS
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        print(f"results: {path}")
    if args.validate or args.no_batch:
        return 0
    ws = tuple(int(x) for x in args.placeholders.split(",")) if args.placeholders else \
        cfg["placeholders"]
    rows = []
    for w in ws:
        rows.append(batch_in_child(w, args))
        print_batch(rows[-1:])
    print("\nthe batch scheduler, simulated:")
    print_batch(rows)
    if len(rows) > 1:
        print(f"plot: {plot_batch(rows, Path(args.plots))}")
    if not args.no_json:
        BATCH_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        BATCH_RESULTS.write_text(json.dumps({"model": report["model"], "batch": rows},
                                            indent=1))
        print(f"results: {BATCH_RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
