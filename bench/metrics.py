"""The metrics' cost at the root does not grow with the tree (issue 20, "Speed and scale").

Three measurements, each in this one run:

1. The root of 1+8 and the root of 1+8+64 (real `brasil serve` processes, children joined over
   TCP on loopback, every daemon sampling each second): the root's CPU seconds and the bytes it
   received over TCP, per interval, over the same window. Its children each send one subtree
   summary per interval, whatever lies below them, so the ratio should be near 1 (target
   ≤ 1.5). The bytes include the links' heartbeats: everything the root is sent.
2. The flat model, as Ganglia or Prometheus run it: 73 daemons, none joined, each serving its own
   node's series over HTTP (``--metrics-listen``), scraped every second by a real Prometheus;
   Prometheus' CPU and bytes per interval, beside the tree's root.
3. Sampling at the default interval (5 s): a lone daemon's whole CPU over a window, as a share of
   one core (target < 1 %; sampling is part of it, heartbeats and timers the rest).

The figures are printed; PASS/FAIL lines say which targets held. No network beyond loopback.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import cpu_ns, proc_cpu, stop_process  # noqa: E402

PY = sys.executable


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Daemons:
    """`brasil serve` processes in one directory, stopped together."""

    def __init__(self, where: Path, secret: Path) -> None:
        self.where, self.secret = where, secret
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *extra: str, interval: float = 1.0) -> subprocess.Popen[bytes]:
        state = self.where / name
        state.mkdir(mode=0o700, parents=True, exist_ok=True)  # serve refuses one open to others
        log = open(state / "log", "wb")
        p = subprocess.Popen(
            [PY, "-m", "brasil.cli.main", "serve", "--name", name, "--slots", "1",
             "--state-dir", str(state), "--secret-file", str(self.secret),
             "--metrics-interval", str(interval), "--export", "", *extra],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = p
        return p

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            stop_process(p, 10)
        self.procs.clear()


def wait_for(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise SystemExit(f"bench/metrics.py: {what} within {timeout:.0f} s")
        time.sleep(0.1)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tcp_received(pid: int) -> int:
    """Bytes received so far on the TCP sockets of ``pid`` (ss -ti)."""
    out = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True,
                         text=True).stdout
    total = 0
    for block in re.split(r"\n(?=\S)", out):
        if f"pid={pid}," in block:
            m = re.search(r"bytes_received:(\d+)", block)
            if m:
                total += int(m.group(1))
    return total


def cat(sock: str, secret: Path, path: str) -> subprocess.CompletedProcess[bytes]:
    """`brasil cat PATH` at the daemon on ``sock``."""
    return subprocess.run([PY, "-m", "brasil.cli.main", "cat", "--at", f"unix:{sock}", path],
                          capture_output=True, env={**os.environ, "BRASIL_SECRET_FILE": str(secret)})


def children_of_root(sock: str, secret: Path) -> int:
    for line in cat(sock, secret, "/csrv/local/metrics/subtree").stdout.decode().splitlines():
        if line.startswith("slots "):
            return int(line.split()[1])
    return 0


def tree(where: Path, secret: Path, fanout: int, depth: int) -> tuple[Daemons, int, str]:
    """1 + fanout (+ fanout²): the root listens on TCP (its bytes are counted) and a socket."""
    d = Daemons(where, secret)
    port = free_ports(1)[0]
    sock = str(where / "n0.sock")
    root = d.start("n0", "--listen", f"127.0.0.1:{port}", "--listen", f"unix:{sock}",
                   "--fanout", str(fanout))
    wait_for(lambda: os.path.exists(sock) or root.poll() is not None, 20, "the root did not listen")
    if root.poll() is not None:
        raise SystemExit(f"bench/metrics.py: the root ended: {(where / 'n0' / 'log').read_text()}")
    for i in range(1, fanout + 1):
        csock = str(where / f"n{i}.sock")
        d.start(f"n{i}", "--listen", f"unix:{csock}", "--parent", f"127.0.0.1:{port}",
                "--fanout", str(fanout))
        if depth > 1:
            wait_for(lambda s=csock: os.path.exists(s), 20, f"n{i} did not listen")
            for j in range(1, fanout + 1):
                d.start(f"n{i}.{j}", "--listen", f"unix:{where}/n{i}.{j}.sock",
                        "--parent", f"unix:{csock}")
    n = 1 + fanout + (fanout * fanout if depth > 1 else 0)
    wait_for(lambda: children_of_root(sock, secret) == n, 120,
             f"the root's summary never covered {n} nodes")
    return d, root.pid, sock


def metrics_payload(sock: str, secret: Path) -> int:
    """Bytes of one child's ``subtree.json``: what the metrics add per child per interval."""
    r = cat(sock, secret, "/csrv/n1/local/metrics/subtree.json")
    if r.returncode != 0 or not r.stdout:
        raise SystemExit(f"bench/metrics.py: cannot read n1's subtree.json: {r.stderr.decode()}")
    return len(r.stdout)


def measure(pid: int, window: float) -> tuple[float, float]:
    """CPU seconds (every thread's, to the nanosecond: the root spends a few milliseconds an
    interval, and ticks of 10 ms made its ratio 4 against 6) and bytes received by ``pid``
    over ``window`` seconds."""
    c0, b0 = cpu_ns([pid]), tcp_received(pid)
    time.sleep(window)
    return (cpu_ns([pid]) - c0) / 1e9, tcp_received(pid) - b0


def flat(where: Path, secret: Path, n: int, window: float) -> tuple[float, float] | None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("flat model: skipped (no prometheus: apt-get install prometheus)")
        return None
    d = Daemons(where, secret)
    ports = free_ports(n + 1)
    try:
        for i in range(n):
            d.start(f"f{i}", "--listen", f"unix:{where}/f{i}.sock", "--metrics-listen",
                    f"127.0.0.1:{ports[i]}")
        for i in range(n):  # each endpoint up before Prometheus looks, or the one that is not named
            proc, port = d.procs[f"f{i}"], ports[i]
            wait_for(lambda p=proc, at=port: accepts(at) or p.poll() is not None, 60,
                     f"f{i} did not listen on 127.0.0.1:{port}")
            if proc.poll() is not None:
                log = (where / f"f{i}" / "log").read_text(errors="replace")[-500:]
                raise SystemExit(f"bench/metrics.py: f{i} (--metrics-listen 127.0.0.1:{port}) "
                                 f"ended: {log}")
        targets = ", ".join(f"'127.0.0.1:{p}'" for p in ports[:n])
        (where / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: flat\n"
            f"    static_configs: [{{targets: [{targets}]}}]\n")
        prom = subprocess.Popen(
            [prometheus, f"--config.file={where}/prometheus.yml",
             f"--storage.tsdb.path={where}/tsdb", f"--web.listen-address=127.0.0.1:{ports[n]}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            import json
            import urllib.request

            seen = ["none"]

            def up() -> bool:
                url = f"http://127.0.0.1:{ports[n]}/api/v1/query?query=count(up%3D%3D1)"
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        got = json.load(r)["data"]["result"]
                    seen[0] = got[0]["value"][1] if got else "0"
                    return seen[0] == str(n)
                except OSError as e:
                    seen[0] = f"no answer ({e})"
                    return False
            wait_for(up, 120, f"Prometheus never saw {n} targets up (last: {seen[0]} up)")
            cpu = proc_cpu(prom.pid)[0]
            time.sleep(window)
            cpu = proc_cpu(prom.pid)[0] - cpu
            # Each scrape is a connection of its own (the endpoints close after answering), so
            # ss cannot count them: the bytes are the 73 pages, fetched once each.
            page = 0
            for port in ports[:n]:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    page += len(r.read())
            return cpu, page * window
        finally:
            prom.terminate()
            stop_process(prom, 10)
    finally:
        d.stop()


def lone(where: Path, secret: Path, window: float) -> float:
    d = Daemons(where, secret)
    try:
        p = d.start("lone", "--listen", f"unix:{where}/lone.sock", interval=5.0)
        wait_for(lambda: os.path.exists(f"{where}/lone.sock"), 20, "the lone daemon did not listen")
        time.sleep(2)  # past its start-up
        c0 = proc_cpu(p.pid)[0]
        time.sleep(window)
        return (proc_cpu(p.pid)[0] - c0) / window
    finally:
        d.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=10.0,
                    help="seconds measured per tree (intervals of 1 s; default 10)")
    ap.add_argument("--lone-window", type=float, default=20.0,
                    help="seconds the lone daemon is measured at the default interval")
    ap.add_argument("--no-flat", action="store_true", help="skip the Prometheus flat model")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="brasil-bench-metrics-"))
    secret = tmp / "secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (os.urandom(24).hex() + "\n").encode())
    os.close(fd)
    ok = True
    try:
        rows: dict[str, tuple[float, float]] = {}
        payload: dict[str, int] = {}
        for name, depth in (("1+8", 1), ("1+8+64", 2)):
            d, pid, sock = tree(tmp / name.replace("+", "_"), secret, 8, depth)
            try:
                rows[name] = measure(pid, a.window)
                payload[name] = 8 * metrics_payload(sock, secret)
            finally:
                d.stop()
        print(f"{'':12} {'root CPU ms/interval':>22} {'root bytes/interval':>20} "
              f"{'of which metrics':>17}")
        for name, (cpu, got) in rows.items():
            print(f"{name:12} {1000 * cpu / a.window:22.2f} {got / a.window:20.0f} "
                  f"{payload[name]:17}")
        print("(the rest of the bytes is the links' heartbeat: each child's subtree's status "
              "lines that changed since the last beat, which reservations and query paths plan "
              "with)")
        cpu_ratio = rows["1+8+64"][0] / max(rows["1+8"][0], 1e-9)
        byte_ratio = rows["1+8+64"][1] / max(rows["1+8"][1], 1)
        metrics_ratio = payload["1+8+64"] / max(payload["1+8"], 1)
        print(f"ratio 73/9: CPU {cpu_ratio:.2f}, all bytes {byte_ratio:.2f}, metrics bytes "
              f"{metrics_ratio:.2f} (target ≤ 1.5)")
        for what, r in (("all bytes", byte_ratio), ("CPU", cpu_ratio),
                        ("metrics bytes", metrics_ratio)):
            print(f"{'PASS' if r <= 1.5 else 'FAIL'}: root {what} per interval, 73 nodes over 9")
            ok = ok and r <= 1.5
        if not a.no_flat:
            got = flat(tmp / "flat", secret, 73, a.window)
            if got is not None:
                cpu, received = got
                print(f"{'flat 73':12} {1000 * cpu / a.window:22.2f} {received / a.window:20.0f}"
                      "   (Prometheus scraping 73 daemons)")
                root = rows["1+8+64"]
                print(f"the tree's root against the flat scraper: CPU "
                      f"{root[0] / max(cpu, 1e-9):.2f}x, bytes {root[1] / max(received, 1):.2f}x")
        share = lone(tmp / "lone", secret, a.lone_window)
        print(f"a lone daemon at the default interval (5 s): {100 * share:.2f} % of a core "
              "(sampling, heartbeats, timers)")
        print(f"{'PASS' if share < 0.01 else 'FAIL'}: under 1 % of a core")
        ok = ok and share < 0.01
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
