"""Group reads and pcp on a 1+8+64 tree, and ``equiv`` against ``dshbak -c`` and ``clubak -b``.

    .venv/bin/python bench/group.py [--repeats 3] [--pcp-mb 100] [--only abc] [--no-json]
    .venv/bin/python bench/group.py --profile [--py-spy PATH] [--profile-nodes n0,n1,n1.1]

Issue 10's "Speed" figures, side by side. The tree is ``brasil cluster up --depth 2 --fanout 8
--slots 1 --dir DIR --export-root DIR/x`` (1 + 8 + 64 = 73 daemons; each node's ``fs/`` is
DIR/x/NAME), in a temporary directory, torn down with ``brasil cluster down`` whatever happens.
One client (``brasil.ninep.auth.dial("unix:DIR/n0.sock", "DIR/secret")``: one 9P connection to
the root's Unix socket) drives it.

a. ``equiv`` of a file identical on the 64 leaves: DIR/x/<leaf>/big holds the same 1 MiB (hex
   text: a group read decodes contents as UTF-8 and carries them in JSON, so binary bytes would
   be escaped and inflated on the way up). ``api.gread(c, "fs/big", "name=n*.*", agg="equiv")``
   against reading the 64 files one by one through the tree (``c.read("csrv/nI/nI.J/local/fs/
   big")``, sequentially, and 8 at a time), the client checking that all are equal. Median of
   ``--repeats``, interleaved, alternating who goes first, after one warm-up run of each. Bytes:
   the gread's own ``received`` (what the root got from its children), ``received_total`` (all
   levels) and ``held`` (bytes of the files read); and, measured on the wire for every method,
   the root daemon's TCP bytes received from its children (``ss -tinp``: the kernel's
   ``bytes_received`` of each TCP socket the root's pid holds, after minus before). Target: the
   root receives ≤ 9 MiB for the equiv (one result per child), not the 64 MiB held.
b. ``api.pcp(c, FILE, "fs/copy", "name=n*.*")`` of ``--pcp-mb`` MiB (default 100) of random bytes
   to the 64 leaves; seconds (after a 1 MiB warm-up pcp), then every leaf's copy is hashed
   (SHA-256, not timed) and the nodes that do not match ``n*.*`` checked to have none. The bytes
   each daemon sent: ``ss -tinp``'s ``bytes_sent`` of the TCP sockets each daemon's pid holds
   (its connections to its parent and its children: every link of the tree is TCP), after
   minus before, summed by level; what the client sent to the root (Unix socket) is the
   client's ``bytes_sent``. /proc/PID/io's ``wchar`` would not do: Python's sockets use
   send(2), which wchar does not count. Target: the root sends about 8 × the file (each byte
   once per child), ≤ 8.1 ×, not 64 ×. The daemons' user and system CPU by depth, and a floor:
   the same 64 copies written and fsynced (as pcp's are) by one process here, no network.
c. 2,048 hosts' outputs (4 lines each, one of 5 variants, weighted 60/20/10/7/3 %, fixed seed)
   condensed, for three naming schemes: names that form ranges (h0001…h2048), random 8-letter
   words (no digits: nothing to fold), and names with two numeric fields that mostly do not form
   ranges (a-N-b-M-c, the shape in clustershell#560). The flat text (``HOST: line``, 8,192
   lines) through ``dshbak -c`` (pdsh) and Debian's ``clubak -b`` (ClusterShell), each a
   process timed end to end (interpreter start included), median of 5. Brasil, in-process (no
   tree: 2,048 leaves do not map 1:1 onto 64): ``gread.leaf`` for each host and ``gread.merge``
   into one, then ``api.final`` (brasil.client.group), median of 5; the same in the tree's shape (64 groups of 32
   merged, then 8 of 8, then the root; JSON encoded and decoded between levels); and the time
   ``brasil.client.run.fold`` (ClusterShell's ``NodeSet.fromlist``, for display) takes to fold
   the groups' node lists, reported apart. Every tool's groups are checked: 5 groups, each with
   the right lines and hosts. Then the real thing in the tree, over its 64 leaves: each leaf's
   DIR/x/<leaf>/out holds one host's output (the same 5 variants), ``equiv`` read at the root
   and its node lists folded, median of ``--repeats``.

Results: tables and PASS/MISS lines on stdout, JSON in bench/results/group.json. Tools not
installed (``make bench-deps``, or ``sh scripts/bench-deps.sh``, installs Debian's pdsh
and clustershell) get a "not installed" row. A miss does not make the exit status non-zero; a
tree that will not start or a wrong result does. "Other processes used X cores" is the noise
guard: CPU the machine spent outside this script, its children and the daemons while measuring.

``--profile`` brings the tree up and samples the named daemons with py-spy (default
/tmp/venv-prof/bin/py-spy; ``--gil``: only samples holding the GIL, so the idle worker threads
stay out) through ``--repeats`` equiv reads and a pcp of ``--pcp-mb`` MiB, and prints where each
one's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import re
import shutil
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ClusterShell.NodeSet import NodeSet

from brasil.client import group as api
from brasil.client.run import fold
from brasil.group import gread
from brasil.ninep.auth import dial
from brasil.ninep.client import Client
from brasil.ninep.errors import NinepError
from common import CORES, TICK, BenchError, Sampled, add_profile_args, print_py_spy, proc_cpu
from tree import BRASIL, CpuWatch, Tree, node_depth

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "group.json"

DEPTH, FANOUT, SLOTS = 2, 8, 1
MIDS = [f"n{i}" for i in range(1, FANOUT + 1)]
LEAVES = [f"{m}.{j}" for m in MIDS for j in range(1, FANOUT + 1)]
WHERE = "name=n*.*"  # the 64 leaves
BIG = 1 << 20  # (a): bytes of the file on every leaf
CONCURRENT = 8  # (a): reads at a time in the concurrent variant
TARGET_RECEIVED = 9 << 20  # (a): bytes the root may receive for the equiv
TARGET_PCP = 8.1  # (b): root's bytes sent / file size (8 children: 8 is each byte once per child)
HOSTS = 2048  # (c)
LINES = 4  # (c): lines of each host's output
WEIGHTS = (60, 20, 10, 7, 3)  # (c): how common each of the 5 variants is, in %
TOOL_REPEATS = 5  # (c): runs of dshbak, clubak and the in-process reductions
NOISY = 0.25
TIMEOUT = 300.0
LOAD_AT_START = os.getloadavg()
MiB = 1 << 20


# ---- the tree, with exports ---------------------------------------------------------------------

class ExportTree(Tree):
    """tree.py's Tree, started with ``--export-root DIR/x``: node NAME's fs/ is DIR/x/NAME."""

    def __init__(self) -> None:
        super().__init__(DEPTH, FANOUT, SLOTS)
        self.export = os.path.join(self.dir, "x")
        self.up_args = ["--export-root", self.export]

    async def dial(self) -> Client:
        c: Client = await dial(f"unix:{self.dir}/n0.sock", f"{self.dir}/secret")
        return c

    def put(self, node: str, name: str, data: bytes) -> None:
        with open(os.path.join(self.export, node, name), "wb") as f:
            f.write(data)

    def cpu(self) -> dict[str, float]:
        """Each daemon's own CPU seconds so far (not its children's)."""
        return {name: proc_cpu(pid, (0.0, 0.0))[0] for name, pid in self.pids.items()}


def user_sys(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process itself, from /proc/PID/stat; (0, 0) once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rpartition(")")[2].split()
        return int(v[11]) / TICK, int(v[12]) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def by_level(before: dict[str, float], after: dict[str, float]) -> dict[int, float]:
    out: dict[int, float] = {}
    for name, v in after.items():
        d = node_depth(name)
        out[d] = out.get(d, 0.0) + v - before.get(name, 0.0)
    return out


# ---- bytes on the daemons' TCP sockets, from the kernel (ss -tinp) ----------------------------

SS_USER = re.compile(r"pid=(\d+),")
SS_SENT = re.compile(r"\bbytes_sent:(\d+)")
SS_RECV = re.compile(r"\bbytes_received:(\d+)")


def tcp_bytes(pids: dict[str, int]) -> dict[tuple[str, str], tuple[str, int, int]] | None:
    """(local, peer) of every TCP socket a daemon holds → (daemon, bytes sent, bytes received),
    as the kernel counts them (tcp_info); None when ``ss`` cannot say."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    r = subprocess.run([ss, "-tinpH"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    names = {pid: name for name, pid in pids.items()}
    out: dict[tuple[str, str], tuple[str, int, int]] = {}
    lines = r.stdout.splitlines()
    for i, line in enumerate(lines):
        if line[:1].isspace() or i + 1 >= len(lines) or not lines[i + 1][:1].isspace():
            continue  # a socket is a line, then its tcp_info indented on the next
        who = [names[int(p)] for p in SS_USER.findall(line) if int(p) in names]
        if not who:
            continue
        f = line.split()
        info = lines[i + 1]
        sent, recv = SS_SENT.search(info), SS_RECV.search(info)
        out[(f[3], f[4])] = (who[0], int(sent.group(1)) if sent else 0,
                             int(recv.group(1)) if recv else 0)
    return out


def tcp_delta(before: dict[tuple[str, str], tuple[str, int, int]] | None,
              after: dict[tuple[str, str], tuple[str, int, int]] | None
              ) -> dict[str, tuple[int, int]] | None:
    """Bytes sent and received per daemon between two tcp_bytes (a socket opened meanwhile
    counts from 0)."""
    if before is None or after is None:
        return None
    out: dict[str, tuple[int, int]] = {}
    for key, (name, sent, recv) in after.items():
        _, s0, r0 = before.get(key, (name, 0, 0))
        s, r = out.get(name, (0, 0))
        out[name] = (s + sent - s0, r + recv - r0)
    return out


def level_sums(delta: dict[str, tuple[int, int]] | None, which: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for name, v in (delta or {}).items():
        out[node_depth(name)] = out.get(node_depth(name), 0) + v[which]
    return out


# ---- a. equiv of one file identical on 64 leaves --------------------------------------------

def big_content() -> bytes:
    return random.Random(10).randbytes(BIG // 2).hex().encode()  # 1 MiB of text


async def equiv_big(c: Client, tree: ExportTree, want: bytes) -> dict[str, Any]:
    ss0, cpu0, in0 = tcp_bytes(tree.pids), tree.cpu(), c.bytes_received
    t0 = time.perf_counter()
    r = await api.gread(c, "fs/big", WHERE, agg="equiv")
    t = time.perf_counter() - t0
    ss1, cpu1 = tcp_bytes(tree.pids), tree.cpu()
    g = r.get("groups", [])
    if r["errors"] or len(g) != 1 or g[0]["nodes"] != sorted(LEAVES) \
            or g[0]["content"].encode() != want:
        raise BenchError(f"equiv of fs/big: errors {r['errors']}, {len(g)} group(s) "
                         f"{[(x['count'], len(x['content'])) for x in g]}; expected 1 of 64")
    if r["held"] != len(LEAVES) * len(want):
        raise BenchError(f"equiv of fs/big: held {r['held']}, expected {len(LEAVES) * len(want)}")
    delta = tcp_delta(ss0, ss1)
    return {"seconds": t, "received": r["received"], "received_total": r["received_total"],
            "held": r["held"], "root_in": delta["n0"][1] if delta else None,
            "client_in": c.bytes_received - in0,
            "cpu": sum(by_level(cpu0, cpu1).values()), "cpu_levels": by_level(cpu0, cpu1),
            "checked": "1 group of 64, content equal"}


async def read_leaves(c: Client, tree: ExportTree, want: bytes, concurrent: int
                      ) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrent)

    async def one(leaf: str) -> bytes:
        async with sem:
            return await c.read(f"csrv/{leaf.split('.')[0]}/{leaf}/local/fs/big")

    ss0, cpu0, in0 = tcp_bytes(tree.pids), tree.cpu(), c.bytes_received
    t0 = time.perf_counter()
    datas = await asyncio.gather(*(one(leaf) for leaf in LEAVES))
    same = all(d == datas[0] for d in datas)  # the client's part of the comparison
    t = time.perf_counter() - t0
    ss1, cpu1 = tcp_bytes(tree.pids), tree.cpu()
    if not same or datas[0] != want:
        raise BenchError(f"reads of fs/big: {sum(d == want for d in datas)} of {len(datas)} "
                         "hold the expected bytes")
    delta = tcp_delta(ss0, ss1)
    return {"seconds": t, "root_in": delta["n0"][1] if delta else None,
            "client_in": c.bytes_received - in0, "cpu": sum(by_level(cpu0, cpu1).values()),
            "cpu_levels": by_level(cpu0, cpu1),
            "checked": f"{len(datas)} × {len(want):,} B, all equal"}


async def equiv_part(c: Client, tree: ExportTree, repeats: int) -> dict[str, Any]:
    want = big_content()
    for leaf in LEAVES:
        tree.put(leaf, "big", want)
    runners: dict[str, Callable[[], Any]] = {
        "equiv": lambda: equiv_big(c, tree, want),
        "seq": lambda: read_leaves(c, tree, want, 1),
        "conc": lambda: read_leaves(c, tree, want, CONCURRENT),
    }
    for fn in runners.values():  # warm up: first walks through the tree, lazy imports
        await fn()
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in runners}
    names = list(runners)
    with CpuWatch(list(tree.pids.values())) as w:
        for r in range(repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                runs[name].append(await runners[name]())
    rows = {}
    for name, rs in runs.items():
        secs = [x["seconds"] for x in rs]
        rows[name] = {**rs[-1], "median": statistics.median(secs), "best": min(secs),
                      "cpu": statistics.median(x["cpu"] for x in rs), "samples": secs,
                      "cpu_levels": {d: statistics.mean(x["cpu_levels"].get(d, 0.0) for x in rs)
                                     for d in range(DEPTH + 1)}}
    return {"rows": rows, "file_bytes": len(want), "other_cores": w.other_cores, "wall": w.wall}


# ---- b. pcp ---------------------------------------------------------------------------------

def make_payload(path: str, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


async def pcp_part(c: Client, tree: ExportTree, size: int) -> dict[str, Any]:
    warm = os.path.join(tree.dir, "warm")
    make_payload(warm, MiB)
    await api.pcp(c, warm, "fs/warm", WHERE)  # first pcp connections everywhere
    src = os.path.join(tree.dir, "payload")
    digest = make_payload(src, size)
    with CpuWatch(list(tree.pids.values())) as w:
        ss0, out0 = tcp_bytes(tree.pids), c.bytes_sent
        us0 = {name: user_sys(pid) for name, pid in tree.pids.items()}
        t0 = time.perf_counter()
        sent = await api.pcp(c, src, "fs/copy", WHERE)
        t = time.perf_counter() - t0
        us1 = {name: user_sys(pid) for name, pid in tree.pids.items()}
        ss1 = tcp_bytes(tree.pids)
    if sent != size:
        raise BenchError(f"pcp sent {sent} bytes of {size}")
    t1 = time.perf_counter()
    bad = []
    for leaf in LEAVES:
        p = os.path.join(tree.export, leaf, "copy")
        got = api.sha256_of(p) if os.path.exists(p) else "missing"
        if got != digest:
            bad.append(f"{leaf}: {got[:16]}")
    stray = [n for n in tree.pids if n not in LEAVES
             and os.path.exists(os.path.join(tree.export, n, "copy"))]
    verify = time.perf_counter() - t1
    if bad or stray:
        raise BenchError(f"pcp: {len(bad)} leaf copies wrong ({', '.join(bad[:5])}); "
                         f"copies where none belong: {stray}")
    for leaf in LEAVES:  # 64 copies: give the disk back before the floor and (c)
        os.unlink(os.path.join(tree.export, leaf, "copy"))
    floor = local_copies(src, os.path.join(tree.dir, "floor"), len(LEAVES))
    os.unlink(src)
    delta = tcp_delta(ss0, ss1)
    cpu = {d: [sum(us1[n][k] - us0[n][k] for n in us1 if node_depth(n) == d) for k in (0, 1)]
           for d in range(DEPTH + 1)}
    return {"bytes": size, "seconds": t, "sha256": digest, "verify_seconds": verify,
            "client_sent": c.bytes_sent - out0, "sent_by_level": level_sums(delta, 0),
            "received_by_level": level_sums(delta, 1),
            "root_sent": delta["n0"][0] if delta else None,
            "mid_sent": {n: delta[n][0] for n in MIDS if n in delta} if delta else None,
            "cpu_by_level": cpu, "floor": floor, "other_cores": w.other_cores}


def local_copies(src: str, where: str, n: int) -> dict[str, float]:
    """The floor under pcp here: ``src`` written ``n`` times by one process, each copy fsynced
    as pcp's are (views.py), no network, no daemons; then removed."""
    os.makedirs(where, exist_ok=True)
    c0 = os.times()
    t0 = time.perf_counter()
    for i in range(n):
        with open(src, "rb") as f:
            fd = os.open(os.path.join(where, f"copy{i}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o644)
            try:
                for block in iter(lambda: f.read(MiB), b""):
                    os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
    t = time.perf_counter() - t0
    c1 = os.times()
    shutil.rmtree(where)
    return {"seconds": t, "user": c1.user - c0.user, "sys": c1.system - c0.system}


# ---- c. 2,048 hosts' outputs condensed --------------------------------------------------------

def host_names(kind: str, rnd: random.Random) -> list[str]:
    if kind == "ranges":
        return [f"h{i:04d}" for i in range(1, HOSTS + 1)]
    seen: set[str] = set()
    names: list[str] = []
    while len(names) < HOSTS:
        if kind == "words":
            n = "".join(rnd.choice(string.ascii_lowercase) for _ in range(8))
        else:  # clustershell#560's shape: a-1-b-2-c
            n = f"a-{rnd.randint(1, 99)}-b-{rnd.randint(1, 99)}-c"
        if n not in seen:
            seen.add(n)
            names.append(n)
    return names


NAMINGS = {"ranges": "h0001…h2048 (ranges)", "words": "random words (no digits)",
           "irregular": "a-N-b-M-c (#560's shape)"}


def variants() -> list[str]:
    return ["".join(f"{line}\n" for line in (f"Linux 6.1.0-{v + 20}-amd64 x86_64",
                                             f"openssl 3.0.{v + 11}-1~deb12u{v + 1}",
                                             "ntp synchronised" if v != 3 else "ntp: no server",
                                             f"mounts {40 + v * 3}"))
            for v in range(len(WEIGHTS))]


def outputs(kind: str) -> dict[str, str]:
    """host → its output: one of the variants, drawn with WEIGHTS (fixed seed)."""
    rnd = random.Random(f"group-bench-{kind}")
    names = host_names(kind, rnd)
    texts = variants()
    picks = rnd.choices(range(len(texts)), weights=WEIGHTS, k=len(names))
    return {n: texts[k] for n, k in zip(names, picks)}


def expected_groups(outs: dict[str, str]) -> dict[str, set[str]]:
    want: dict[str, set[str]] = {}
    for host, text in outs.items():
        want.setdefault(text, set()).add(host)
    return want


def check_groups(what: str, got: dict[str, set[str]], want: dict[str, set[str]]) -> None:
    if got != want:
        sizes = sorted((len(v) for v in got.values()), reverse=True)
        raise BenchError(f"{what}: {len(got)} group(s) of {sizes}; expected {len(want)} of "
                         f"{sorted((len(v) for v in want.values()), reverse=True)}")


def parse_banner(out: str, lead: str = "") -> dict[str, set[str]]:
    """dshbak -c / clubak -b output: dashes, a node set (clubak adds `` (N)``), dashes, lines
    (clubak's keep what followed the ':', ``lead``, the space)."""
    lines = out.splitlines()
    got: dict[str, set[str]] = {}
    i = 0
    while i < len(lines):
        if i + 2 < len(lines) and lines[i] and set(lines[i]) == {"-"} \
                and lines[i + 2] and set(lines[i + 2]) == {"-"}:
            header = re.sub(r" \(\d+\)$", "", lines[i + 1])
            j = i + 3
            while j < len(lines) and not (lines[j] and set(lines[j]) == {"-"}
                                          and j + 2 < len(lines) and lines[j + 2]
                                          and set(lines[j + 2]) == {"-"}):
                j += 1
            text = "".join(f"{ln.removeprefix(lead)}\n" for ln in lines[i + 3:j])
            got.setdefault(text, set()).update(NodeSet(header))
            i = j
        else:
            i += 1
    return got


def find_tools() -> dict[str, str | None]:
    """Debian's dshbak and clubak (not the virtualenv's pip clubak), None when missing."""
    return {"dshbak": shutil.which("dshbak"),
            "clubak": "/usr/bin/clubak" if os.access("/usr/bin/clubak", os.X_OK) else None}


def tool_version(tools: dict[str, str | None]) -> dict[str, str]:
    out = {}
    for pkg, tool in (("pdsh", "dshbak"), ("clustershell", "clubak")):
        if tools.get(tool):
            r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                               capture_output=True, text=True)
            out[tool] = f"{pkg} {r.stdout.strip()}" if r.returncode == 0 else "version unknown"
    return out


def run_tool(argv: list[str], flat: bytes) -> tuple[float, float, str]:
    k0 = proc_cpu()[1]
    t0 = time.perf_counter()
    r = subprocess.run(argv, input=flat, capture_output=True, timeout=TIMEOUT)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: status {r.returncode}: "
                         f"{r.stderr[-300:].decode(errors='replace')}")
    return t, proc_cpu()[1] - k0, r.stdout.decode()


def brasil_flat(outs: dict[str, str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    acc = gread.empty("equiv")
    for host, text in outs.items():
        gread.merge(acc, gread.leaf("equiv", host, text.encode(), None))
    r = api.final(acc)
    return {"seconds": time.perf_counter() - t0, "result": r}


def brasil_shaped(outs: dict[str, str]) -> dict[str, Any]:
    """64 leaves of 32 hosts, 8 mids of 8 leaves, the root of 8 mids; JSON between levels."""
    t0 = time.perf_counter()
    hosts = list(outs)
    per_leaf = len(hosts) // len(LEAVES)
    leaf_json = []
    for k in range(len(LEAVES)):
        acc = gread.empty("equiv")
        for host in hosts[k * per_leaf:(k + 1) * per_leaf]:
            gread.merge(acc, gread.leaf("equiv", host, outs[host].encode(), None))
        leaf_json.append(json.dumps(acc).encode())
    mid_json = []
    for m in range(FANOUT):
        acc = gread.empty("equiv")
        for data in leaf_json[m * FANOUT:(m + 1) * FANOUT]:
            acc["received"] += len(data)
            gread.merge(acc, json.loads(data))
        mid_json.append(json.dumps(acc).encode())
    root = gread.empty("equiv")
    for data in mid_json:
        root["received"] += len(data)
        gread.merge(root, json.loads(data))
    r = api.final(root)
    return {"seconds": time.perf_counter() - t0, "result": r}


def fold_groups(r: dict[str, Any]) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    headers = [fold(g["nodes"]) for g in r["groups"]]
    return time.perf_counter() - t0, headers


def result_groups(r: dict[str, Any]) -> dict[str, set[str]]:
    return {g["content"]: set(g["nodes"]) for g in r["groups"]}


def condense_naming(kind: str, tools: dict[str, str | None]) -> dict[str, Any]:
    outs = outputs(kind)
    want = expected_groups(outs)
    flat = "".join(f"{host}: {line}\n" for host, text in outs.items()
                   for line in text.splitlines()).encode()
    rows: dict[str, Any] = {}
    runners: dict[str, Callable[[], tuple[float, float, dict[str, set[str]]]]] = {}
    for tool, argv, lead in (("dshbak", [tools["dshbak"], "-c"], ""),
                             ("clubak", [tools["clubak"], "-b"], " ")):
        if argv[0]:
            def go(argv: list[str] = argv, lead: str = lead
                   ) -> tuple[float, float, dict[str, set[str]]]:
                t, cpu, out = run_tool(argv, flat)
                return t, cpu, parse_banner(out, lead)
            runners[tool] = go
        else:
            rows[tool] = {"missing": "not installed"}
    for name, fn in (("brasil", brasil_flat), ("brasil_tree", brasil_shaped)):
        def go(fn: Callable[[dict[str, str]], dict[str, Any]] = fn
               ) -> tuple[float, float, dict[str, set[str]]]:
            r = fn(outs)
            return r["seconds"], r["seconds"], result_groups(r["result"])
        runners[name] = go
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in runners}
    names = list(runners)
    for rep in range(TOOL_REPEATS + 1):  # the first round warms up and is not counted
        for name in (names if rep % 2 == 0 else names[::-1]):
            t, cpu, got = runners[name]()
            check_groups(f"{name} ({kind})", got, want)
            if rep:
                samples[name].append((t, cpu))
    for name, ss in samples.items():
        rows[name] = {"median": statistics.median(t for t, _ in ss), "best": min(t for t, _ in ss),
                      "cpu": statistics.median(c for _, c in ss), "groups": len(want)}
    r = brasil_flat(outs)["result"]
    folds = []
    for _ in range(TOOL_REPEATS):
        t, headers = fold_groups(r)
        folds.append(t)
    for h, g in zip(headers, r["groups"]):
        if set(NodeSet(h)) != set(g["nodes"]):
            raise BenchError(f"fold ({kind}): {h[:60]!r} is not the group's {g['count']} nodes")
    return {"rows": rows, "fold": statistics.median(folds), "fold_chars": sum(map(len, headers)),
            "flat_bytes": len(flat), "groups": sorted(len(v) for v in want.values())[::-1],
            "sample_names": list(outs)[:3]}


async def in_tree_part(c: Client, tree: ExportTree, repeats: int) -> dict[str, Any]:
    texts = variants()
    rnd = random.Random("group-bench-tree")
    picks = dict(zip(LEAVES, rnd.choices(range(len(texts)), weights=WEIGHTS, k=len(LEAVES))))
    for leaf, k in picks.items():
        tree.put(leaf, "out", texts[k].encode())
    want = expected_groups({leaf: texts[k] for leaf, k in picks.items()})
    await api.gread(c, "fs/out", WHERE, agg="equiv")  # warm up
    times, folds = [], []
    with CpuWatch(list(tree.pids.values())) as w:
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = await api.gread(c, "fs/out", WHERE, agg="equiv")
            times.append(time.perf_counter() - t0)
            if r["errors"]:
                raise BenchError(f"equiv of fs/out: errors {r['errors']}")
            check_groups("equiv of fs/out in the tree", result_groups(r), want)
            t, headers = fold_groups(r)
            folds.append(t)
    return {"median": statistics.median(times), "best": min(times),
            "fold": statistics.median(folds),
            "received": r["received"], "held": r["held"], "headers": headers,
            "groups": [g["count"] for g in r["groups"]], "other_cores": w.other_cores}


def condense_part(tools: dict[str, str | None]) -> dict[str, Any]:
    return {kind: condense_naming(kind, tools) for kind in NAMINGS}


# ---- the run ----------------------------------------------------------------------------------

async def measure(tree: ExportTree, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c = await tree.dial()
    try:
        if "a" in args.only:
            out["equiv"] = await equiv_part(c, tree, args.repeats)
        if "b" in args.only:
            out["pcp"] = await pcp_part(c, tree, args.pcp_mb * MiB)
        if "c" in args.only:
            out["in_tree"] = await in_tree_part(c, tree, args.repeats)
    finally:
        await c.close()
    return out


def mb(x: float | None) -> str:
    return "?" if x is None else f"{x / MiB:.2f}"


def noisy(w: float) -> str:
    return (f"other processes used {w:.2f} core(s) meanwhile"
            + ("  ← NOISY: figures suspect" if w > NOISY else ""))


def report(tree: ExportTree, tools: dict[str, str | None], r: dict[str, Any],
           args: argparse.Namespace) -> list[str]:
    verdicts: list[str] = []
    print(f"\nmachine: {CORES} cores, {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}; load average {LOAD_AT_START[0]:.1f} at the start")
    print(f"tree: 1+{FANOUT}+{FANOUT ** 2} = {tree.nodes} daemons (cluster up --depth {DEPTH} "
          f"--fanout {FANOUT} --slots {SLOTS} --export-root), up in {tree.up_seconds:.1f} s; one "
          f"9P connection to the root's Unix socket; selection {WHERE!r} = the {len(LEAVES)} "
          "leaves")
    print("MiB = 2^20 bytes; root bytes 'on the wire' are the kernel's TCP counters (ss -tinp) "
          "of the root daemon's sockets")

    if "equiv" in r:
        e = r["equiv"]
        rows = e["rows"]
        size = e["file_bytes"]
        print(f"\n(a) the same {size / MiB:g} MiB file on {len(LEAVES)} leaves: one equiv against "
              f"{len(LEAVES)} reads (median of {args.repeats}, interleaved)")
        labels = {"equiv": f"gread equiv fs/big ({WHERE})",
                  "seq": f"{len(LEAVES)} reads one by one + compare",
                  "conc": f"{len(LEAVES)} reads, {CONCURRENT} at a time + compare"}
        w = max(map(len, labels.values()))
        print(f"{'':<{w}} {'median s':>9} {'best s':>7} {'root got MiB':>13} "
              f"{'client got MiB':>15} {'daemon CPU s':>13}  checked")
        for k, label in labels.items():
            x = rows[k]
            print(f"{label:<{w}} {x['median']:>9.3f} {x['best']:>7.3f} {mb(x['root_in']):>13} "
                  f"{mb(x['client_in']):>15} {x['cpu']:>13.2f}  {x['checked']}")
        q = rows["equiv"]
        print(f"equiv's own counts: received {mb(q['received'])} MiB at the root "
              f"(from its {FANOUT} children), received_total {mb(q['received_total'])} MiB "
              f"(all levels), held {mb(q['held'])} MiB")
        print("daemon CPU s per run by depth (means; 10 ms ticks): " + "; ".join(
            f"{k} " + "/".join(f"{rows[k]['cpu_levels'][d]:.2f}" for d in range(DEPTH + 1))
            for k in labels) + f"  (depth 0/1/2; {CORES} cores)")
        for k in ("seq", "conc"):
            print(f"ratio equiv / {labels[k]} = {q['median'] / rows[k]['median']:.2f}")
        print(noisy(e["other_cores"]))
        ok = q["received"] <= TARGET_RECEIVED
        verdicts.append(f"{'PASS' if ok else 'MISS'}: equiv of {size / MiB:g} MiB on "
                        f"{len(LEAVES)} leaves: the root received {mb(q['received'])} MiB "
                        f"(target ≤ {TARGET_RECEIVED / MiB:g} MiB; {mb(q['held'])} MiB held); "
                        f"{q['median']:.2f} s vs {rows['seq']['median']:.2f} s one by one")

    if "pcp" in r:
        p = r["pcp"]
        size = p["bytes"]
        print(f"\n(b) pcp of {size / MiB:g} MiB to the {len(LEAVES)} leaves "
              f"(api.pcp(c, FILE, 'fs/copy', {WHERE!r})), one run after a 1 MiB warm-up")
        print(f"{'seconds':>8} {'MiB/s in':>9} {'leaf MiB/s':>11}  checked")
        print(f"{p['seconds']:>8.2f} {size / MiB / p['seconds']:>9.1f} "
              f"{len(LEAVES) * size / MiB / p['seconds']:>11.1f}  {len(LEAVES)} copies, SHA-256 "
              f"equal ({p['sha256'][:16]}…; hashing took {p['verify_seconds']:.1f} s, "
              "not counted)")
        print("bytes sent (sum over each level's daemons, TCP, ss -tinp), as multiples of the "
              "file:")
        print("  client → root (Unix socket, the client's bytes_sent): "
              f"{mb(p['client_sent'])} MiB "
              f"= {p['client_sent'] / size:.3f} ×")
        names = {0: "root (n0)", 1: f"{FANOUT} mids", 2: f"{len(LEAVES)} leaves"}
        for d in sorted(p["sent_by_level"]):
            s = p["sent_by_level"][d]
            print(f"  {names.get(d, d)} sent {mb(s)} MiB = {s / size:.3f} ×; received "
                  f"{mb(p['received_by_level'].get(d, 0))} MiB")
        if p["mid_sent"]:
            ms = p["mid_sent"].values()
            print(f"  each mid sent {min(ms) / size:.3f} … {max(ms) / size:.3f} × (to its "
                  f"{FANOUT} leaves)")
        print("daemon CPU s, user + system, by depth: " + ", ".join(
            f"depth {d} {u:.2f} + {k:.2f}" for d, (u, k) in sorted(p["cpu_by_level"].items()))
              + f"  ({CORES} cores × {p['seconds']:.1f} s = {CORES * p['seconds']:.1f} core-s)")
        f = p["floor"]
        print(f"floor: the same {len(LEAVES)} copies written here by one process (write + "
              f"fsync each, as pcp's; no network): {f['seconds']:.2f} s, CPU user {f['user']:.2f} "
              f"+ system {f['sys']:.2f} s; pcp / floor = {p['seconds'] / f['seconds']:.2f}")
        print(noisy(p["other_cores"]))
        if p["root_sent"] is None:
            verdicts.append("(no verdict) pcp: ss could not count the root's bytes")
        else:
            x = p["root_sent"] / size
            ok = x <= TARGET_PCP
            verdicts.append(f"{'PASS' if ok else 'MISS'}: pcp: the root sent {x:.3f} × the file "
                            f"to its {FANOUT} children (target ≤ {TARGET_PCP}, i.e. once per "
                            "child; "
                            f"not {len(LEAVES)} ×); {size / MiB:g} MiB to {len(LEAVES)} leaves in "
                            f"{p['seconds']:.1f} s, every copy's SHA-256 right")

    if "condense" in r:
        print(f"\n(c) {HOSTS:,} hosts' outputs ({LINES} lines each, {len(WEIGHTS)} variants) "
              f"condensed; median of {TOOL_REPEATS} (after a warm-up round), interleaved")
        print("    dshbak/clubak: a process each, on the flat 'HOST: line' text (interpreter "
              "start included; their folding inside);")
        print("    brasil: in-process, no tree and no 9P (gread.leaf + gread.merge + final); "
              "its display folding (run.fold) apart")
        print("    (CPU s = the process's user+system, counted in 10 ms ticks; in-process rows: "
              "wall time)")
        labels = {"dshbak": "dshbak -c", "clubak": "clubak -b",
                  "brasil": f"brasil merge, {HOSTS} partials into one",
                  "brasil_tree": "brasil merge, 64/8/1 shape, JSON between levels"}
        w = max(map(len, labels.values()))
        for kind, title in NAMINGS.items():
            x = r["condense"][kind]
            print(f"\n  {title}: e.g. {', '.join(x['sample_names'])}; flat text "
                  f"{x['flat_bytes'] / 1024:.0f} KiB; groups of {x['groups']}")
            print(f"  {'':<{w}} {'median ms':>10} {'best ms':>8} {'CPU s':>6}")
            for k, label in labels.items():
                row = x["rows"].get(k)
                if row is None:
                    continue
                if "missing" in row:
                    print(f"  {label:<{w}}   {row['missing']}")
                    continue
                print(f"  {label:<{w}} {row['median'] * 1000:>10.1f} {row['best'] * 1000:>8.1f} "
                      f"{row['cpu']:>6.2f}")
            print(f"  {'brasil fold for display (5 NodeSet.fromlist)':<{w}} "
                  f"{x['fold'] * 1000:>10.1f}   → {x['fold_chars']:,} characters of node sets")
            b = x["rows"]["brasil"]["median"] + x["fold"]
            for tool in ("dshbak", "clubak"):
                row = x["rows"].get(tool, {})
                if "median" in row:
                    print(f"  ratio brasil (merge + fold) / {labels[tool]} = "
                          f"{b / row['median']:.3f}")
        t = r.get("in_tree")
        if t:
            print(f"\n  in the tree: equiv of fs/out on its {len(LEAVES)} leaves (one host's "
                  f"output each, same variants; groups of {t['groups']}), median of "
                  f"{args.repeats}: {t['median'] * 1000:.1f} ms (best {t['best'] * 1000:.1f}); "
                  f"fold for display {t['fold'] * 1000:.2f} ms (largest group: "
                  f"{t['headers'][0]})")
            print(f"  the root received {t['received']:,} B for {t['held']:,} B held; "
                  f"{noisy(t['other_cores'])}")
        worst = max(x["rows"]["brasil"]["median"] + x["fold"] for x in r["condense"].values())
        verdicts.append(f"(no target) condense {HOSTS:,} outputs: brasil's merge + fold ≤ "
                        f"{worst * 1000:.0f} ms in every naming; dshbak/clubak figures above")
    print()
    for v in verdicts:
        print(v)
    return verdicts


def write_json(tree: ExportTree, tools: dict[str, str | None], r: dict[str, Any],
               verdicts: list[str], args: argparse.Namespace) -> None:
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cores": CORES, "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_start": LOAD_AT_START},
        "tree": {"depth": DEPTH, "fanout": FANOUT, "slots": SLOTS, "daemons": tree.nodes,
                 "up_seconds": tree.up_seconds},
        "repeats": args.repeats, "tools": {**tools, **tool_version(tools)},
        "targets": {"equiv_root_received_bytes": TARGET_RECEIVED,
                    "pcp_root_sent_ratio": TARGET_PCP},
        **r, "summary": verdicts,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"results written to {RESULTS.relative_to(ROOT)}")


# ---- profile ----------------------------------------------------------------------------------

async def profile_run(tree: ExportTree, args: argparse.Namespace) -> dict[str, float]:
    c = await tree.dial()
    try:
        want = big_content()
        for leaf in LEAVES:
            tree.put(leaf, "big", want)
        out = {}
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            await equiv_big(c, tree, want)
        out["equiv"] = (time.perf_counter() - t0) / args.repeats
        src = os.path.join(tree.dir, "payload")
        make_payload(src, args.pcp_mb * MiB)
        t0 = time.perf_counter()
        await api.pcp(c, src, "fs/copy", WHERE)
        out["pcp"] = time.perf_counter() - t0
        return out
    finally:
        await c.close()


def profile(tree: ExportTree, args: argparse.Namespace) -> None:
    names = args.profile_nodes.split(",")
    outs = {name: os.path.join(tree.dir, f"{name}.spy") for name in names}
    asyncio.run(_warm(tree))
    spy = [args.py_spy, "record", "--rate", "250", "--gil", "--full-filenames", "--format", "raw"]
    with Sampled(spy, {name: tree.pids[name] for name in names}, outs) as sampled:
        took = asyncio.run(profile_run(tree, args))
    cpu = sampled.cpu
    print(f"under py-spy: {args.repeats} equiv of fs/big, {took['equiv']:.2f} s each; then pcp "
          f"of {args.pcp_mb} MiB, {took['pcp']:.1f} s")
    for name in names:
        print(f"\n==== {name} (depth {node_depth(name)}): {cpu[name]:.2f} s CPU ====")
        print_py_spy(outs[name], args.profile_top)


async def _warm(tree: ExportTree) -> None:
    c = await tree.dial()
    try:
        warm = os.path.join(tree.dir, "warm")
        make_payload(warm, MiB)
        await api.pcp(c, warm, "fs/warm", WHERE)
        await api.gread(c, "fs/warm", WHERE, agg="equiv")
    finally:
        await c.close()


# ---- main ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs in (a) and in-tree (c)")
    ap.add_argument("--pcp-mb", type=int, default=100, help="MiB copied by pcp in (b) (100)")
    ap.add_argument("--only", default="abc", help="parts to run: any of a, b, c (abc)")
    ap.add_argument("--no-json", action="store_true", help=f"do not write {RESULTS.name}")
    add_profile_args(ap, "daemons through equiv reads and a pcp", "n0,n1,n1.1",
                     "default: the root, a mid-level one, a leaf", 20)
    args = ap.parse_args()
    if not BRASIL.exists():
        print(f"benchmark failed: no {BRASIL}; `make setup` first", file=sys.stderr)
        return 1
    tools = find_tools()
    missing = [t for t, p in tools.items() if not p]
    if missing:
        print(f"not installed: {', '.join(missing)} (make bench-deps)",
              file=sys.stderr)
    results: dict[str, Any] = {}
    if "c" in args.only and not args.profile:
        try:  # no tree needed: before the daemons start, so they do not share the CPU
            results["condense"] = condense_part(tools)
        except (BenchError, OSError, subprocess.SubprocessError) as e:
            print(f"benchmark failed: {e}", file=sys.stderr)
            return 1
    tree = ExportTree()
    try:
        tree.up()
        if args.profile:
            profile(tree, args)
            return 0
        results.update(asyncio.run(measure(tree, args)))
    except (BenchError, NinepError, OSError, subprocess.SubprocessError) as e:
        print(f"benchmark failed: {e}\n{tree.logs_tail()}", file=sys.stderr)
        return 1
    finally:
        tree.down()
    verdicts = report(tree, tools, results, args)
    if not args.no_json:
        write_json(tree, tools, results, verdicts, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
