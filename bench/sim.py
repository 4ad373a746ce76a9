"""The simulator (brasil.sim): how every operation grows with the tree, to 10,000 daemons.

    .venv/bin/python bench/sim.py                       # N = 64, 512; fan-out 8 and 32 (~1 min)
    .venv/bin/python bench/sim.py --full                # N = 64, 512, 4096, 10000 (minutes)
    .venv/bin/python bench/sim.py --nodes 4096 --fanout 32 [--slots S] [--plots DIR]
    .venv/bin/python bench/sim.py --validate            # 1+8+64 real daemons against simulated

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

QUICK = {"nodes": (64, 512), "fanouts": (8, 32)}
FULL = {"nodes": (64, 512, 4096, 10000), "fanouts": (8, 32)}


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


def command_figures() -> Behaviour:
    """``date``'s run and a fork's cost here: the median wall time of a Popen of ``date`` to its
    exit, split as the launcher's spawn cost (Popen's return) and the rest (the run)."""
    spawn, total = [], []
    for _ in range(100):
        t0 = time.perf_counter()
        p = subprocess.Popen(["date"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # (lost children are logged: expected here)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # (teardown of killed links)
    if args.plot_from:
        for p in plot(json.loads(Path(args.plot_from).read_text())["trees"], Path(args.plots)):
            print(f"plot: {p}")
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
    else:
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
    if not args.no_json:
        path = VALIDATION if args.validate else RESULTS
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
