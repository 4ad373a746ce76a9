"""The figures bench/compare.py measures, one per run, printed as JSON on the last line.

    VENV/bin/python -I bench/figures.py FIGURE [--tree D,F,S] [--n N] [--repeats K]

Run under the interpreter of the version being measured (its virtualenv has that version of
brasil installed), so the same measuring code drives both sides of a comparison. It uses only
what every version since the foundation has: ``brasil cluster up/down``, ``brasil serve
--listen``, and ``brasil.ninep.client.Client`` on the owner's Unix socket (no secret needed).

Figures:
  deploy      clone, ``res N``, ``exec date``, read ``stdio`` to EOF, close, on a tree made by
              ``cluster up`` (Figure 4 of the paper); also reports ``res N`` alone
  roundtrips  1-byte reads of a static file, 16 in flight on one connection to ``brasil serve``
              on a Unix socket, for 3 s: round trips per second
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

L = "csrv/local"


def brasil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, timeout=600)


async def deploy(args: argparse.Namespace) -> dict[str, float]:
    from brasil.ninep.client import Client
    depth, fanout, slots = (int(x) for x in args.tree.split(","))
    d = tempfile.mkdtemp(prefix="brasil-fig-")
    try:
        r = brasil("cluster", "up", "--depth", str(depth), "--fanout", str(fanout), "--slots",
                   str(slots), "--dir", d)
        if r.returncode != 0:
            raise SystemExit(f"cluster up failed: {r.stderr}")
        c = await Client.connect(f"unix:{d}/n0.sock")
        try:
            total, res = [], []
            for i in range(args.repeats + 1):  # the first is a warm-up
                t0 = time.perf_counter()
                sid = (await c.read(f"{L}/clone")).decode().strip()
                await c.write(f"{L}/{sid}/ctl", f"res {args.n}\n")
                t1 = time.perf_counter()
                await c.write(f"{L}/{sid}/ctl", "exec date\n")
                out = await c.read(f"{L}/{sid}/stdio")
                await c.write(f"{L}/{sid}/ctl", "close\n")
                t2 = time.perf_counter()
                lines = out.count(b"\n")
                if lines != args.n:
                    raise SystemExit(f"{lines} lines of date, not {args.n}")
                if i:
                    total.append(t2 - t0)
                    res.append(t1 - t0)
                await settle(c, args.n)
        finally:
            await c.close()
        return {f"deploy {args.n} s": statistics.median(total),
                f"res {args.n} s": statistics.median(res)}
    finally:
        brasil("cluster", "down", "--dir", d)
        shutil.rmtree(d, ignore_errors=True)


async def settle(c: object, n: int, timeout: float = 30) -> None:
    """Wait until the tree has every slot free again (the release below the root is
    asynchronous), so one measurement does not pay for the last one's cleanup."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (await c.read(f"{L}/status")).decode()  # type: ignore[attr-defined]
        total = [ln.split() for ln in text.splitlines() if ln.startswith("total ")]
        if total and total[0][1] == total[0][2]:
            return
        await asyncio.sleep(0.05)


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


FIGURES = {"deploy": deploy, "roundtrips": roundtrips}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("figure", choices=sorted(FIGURES))
    ap.add_argument("--tree", default="2,8,32", help="depth,fanout,slots (default 2,8,32: "
                    "1+8+64 daemons)")
    ap.add_argument("--n", type=int, default=2048, help="commands per deployment (2048)")
    ap.add_argument("--repeats", type=int, default=3, help="deployments per run, median (3)")
    ap.add_argument("--seconds", type=float, default=3.0, help="roundtrips: duration (3)")
    args = ap.parse_args()
    result = asyncio.run(FIGURES[args.figure](args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
