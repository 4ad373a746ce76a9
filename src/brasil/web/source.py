"""What the dashboard shows, read from the namespace through ONE 9P connection and kept as a
snapshot that every browser shares: a poll a second, whatever the number of browsers.

Each figure carries the 9P path it came from (``sources``), so the page can name it:

- the nodes: ``/csrv/local/subtree`` (every live node's status line, heard within a second),
  their place in the tree by listing ``/csrv/NAME/…`` (done again only when the set changes);
  a node seen before and gone from ``subtree`` is ``lost``;
- their latest samples: ``/csrv/local/metrics/nodes``; the tree's summary:
  ``/csrv/local/metrics/subtree``; history: ``…/local/metrics/history`` of the node asked;
- sessions: ``/csrv/query/session=*/status``, and each one's ranks from its ``status``;
- batch workloads: ``/csrv/local/batch/jobs`` and ``tags/T/events`` (the Gantt of
  `brasil report`).

Every read is bounded (``MAX_READ``); lists are cut (``MAX_SESSIONS``, ``MAX_FAILURES``…) and
say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ClusterShell.NodeSet import NodeSet

from ..batch import report
from ..batch.api import parse_event, parse_job
from ..batch.queries import parse_summary
from ..metrics.sample import METRICS
from ..ninep.client import Client
from ..ninep.constants import DMDIR, ORDWR
from ..ninep.errors import NinepError
from ..ninep.ratelimit import RateLimited

log = logging.getLogger("brasil.web")
limited = RateLimited(log)  # a daemon down for an hour is a few lines a minute, not 3,600

POLL = 1.0                 # seconds between two snapshots
MAX_READ = 4 << 20         # bytes read of any one file
MAX_SESSIONS = 200         # sessions listed
MAX_RANKS_READ = 32        # sessions whose ranks are read, per poll
MAX_RANKS = 256            # ranks kept per session
MAX_WORKLOADS = 50
MAX_FAILURES = 50          # failed jobs listed per workload
MAX_RUNS = 2000            # Gantt bars per workload
MAX_NODES = 4096
MAX_ASKING = 8             # on-demand reads (history, Gantt) in flight at once
MAX_TEXT = 512             # characters kept of any text from the cluster (command lines…)
NOT_CHILDREN = {"local", "query", "parent"}
TAG = re.compile(r"[A-Za-z0-9._-]{1,128}")
STEPS = ((3600, 5), (86400, 60), (math.inf, 3600))  # range up to … → step (history's buckets)


class SourceError(Exception):
    """A request the dashboard refuses, with a sentence for the page (HTTP 400)."""


def fold(names: list[str]) -> str:
    """Node names as a folded ClusterShell node set: ``n[0-3],n[1-3].[1-3]``."""
    if not names:
        return ""
    try:
        return str(NodeSet.fromlist(names))
    except Exception:  # noqa: BLE001 - a name NodeSet cannot fold is listed as it is
        return ",".join(sorted(names))


def clip(text: str, n: int = MAX_TEXT) -> str:
    return text if len(text) <= n else text[:n] + "…"


async def read_bounded(c: Client, path: str, limit: int = MAX_READ) -> tuple[bytes, bool]:
    """A file's first ``limit`` bytes and whether there was more."""
    async with await c.open(path) as f:
        out = bytearray()
        while len(out) < limit:
            chunk = await f.read(min(f.iounit or 8192, limit - len(out) + 1), len(out))
            if not chunk:
                return bytes(out), False
            out += chunk
        return bytes(out[:limit]), len(out) > limit


class Cluster:
    """The dashboard's view of the tree below the daemon ``c`` is connected to."""

    def __init__(self, c: Client, poll: float = POLL,
                 redial: Callable[[], Awaitable[Client]] | None = None) -> None:
        self.c = c
        self.redial = redial  # a new connection when the daemon's is lost (it restarted)
        self.poll = poll
        self.root = ""
        self.paths: dict[str, str] = {}     # node → its /csrv path ("csrv/n1/n1.2")
        self.parent: dict[str, str] = {}
        self.last_parent: dict[str, str] = {}  # kept for a lost node: where it was
        self.seen: dict[str, dict[str, Any]] = {}  # every node ever seen: its last status
        self.snapshot: dict[str, Any] = {}
        self.encoded = b"{}"  # the snapshot's JSON, made once for every page
        self.version = 0
        self.changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._gate = asyncio.Semaphore(MAX_ASKING)

    # The poll ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - shown on the page; the next poll tries again
                if not self.c.closed and isinstance(e, ConnectionError):
                    self.c.abort()
                limited.emit(logging.WARNING, "poll", "web: a poll failed: %s", e)
                self.snapshot = {**self.snapshot, "error": clip(str(e)), "t": time.time()}
                await self._publish()
                if self.c.closed and self.redial is not None:
                    with contextlib.suppress(Exception):
                        self.c = await asyncio.wait_for(self.redial(), 10)
                        self.paths = {}  # where each node is: asked again
            await asyncio.sleep(self.poll)

    async def _publish(self) -> None:
        self.encoded = json.dumps(self.snapshot, separators=(",", ":")).encode()
        async with self.changed:
            self.version += 1
            self.changed.notify_all()

    async def refresh(self) -> None:
        lines = (await read_bounded(self.c, "csrv/local/subtree"))[0].decode(errors="replace")
        live: dict[str, dict[str, Any]] = {}
        for line in lines.splitlines()[:MAX_NODES]:
            a = status_attrs(line)
            if a.get("name"):
                live[a["name"]] = a
        if live and not self.root:
            self.root = next(iter(live))
        if not self.paths or set(live) - set(self.paths) or any(
                n not in live for n in self.paths):
            await self._walk(set(live))
        metrics, summary, sessions, batch = await asyncio.gather(
            self._metrics(), self._summary(), self._sessions(), self._batch())
        nodes = []
        for name, a in live.items():
            self.seen[name] = a
        for name in [n for n in self.seen if n not in live][:max(0, len(self.seen) - MAX_NODES)]:
            del self.seen[name]  # lost nodes, earliest seen first: the list stays bounded
        for name in live:
            if name in self.parent:
                self.last_parent[name] = self.parent[name]
        below = self._descendants(live)
        for name in self.seen:
            a = self.seen[name]
            m = metrics.get(name, {}) if name in live else {}
            nodes.append({
                "name": name, "parent": self.last_parent.get(name, ""),
                "set": fold([name, *below[name]]) if below.get(name) else "",
                "path": "/" + self.csrv(name),
                "state": "up" if name in live else "lost",
                "slots": num(a.get("slots")), "free": num(a.get("free")),
                "load": num(a.get("load")), "cores": num(a.get("cores")),
                "sessions": num(a.get("sessions")), "metrics": m})
        up = [n for n in self.seen if n in live]
        lost = [n for n in self.seen if n not in live]
        self.snapshot = {
            "t": time.time(), "root": self.root, "nodes": nodes,
            "up": fold(up), "lost": fold(lost), "count": {"up": len(up), "lost": len(lost)},
            "summary": summary, "sessions": sessions, "batch": batch,
            "metrics": list(METRICS),
            "units": {k: m.unit for k, m in METRICS.items()},
            "sources": {"nodes": "/csrv/local/subtree", "metrics": "/csrv/local/metrics/nodes",
                        "summary": "/csrv/local/metrics/subtree",
                        "sessions": "/csrv/query/session=*/status",
                        "batch": "/csrv/local/batch/jobs"},
        }
        await self._publish()

    async def _walk(self, live: set[str]) -> None:
        """Where each node is: list /csrv, then each child's /csrv, level by level in parallel."""
        paths = {self.root: "csrv"} if self.root else {}
        parent: dict[str, str] = {}
        level = list(paths.items())
        while level and len(paths) < MAX_NODES:
            async def kids(path: str) -> list[str]:
                try:
                    return [st.name for st in await self.c.ls(path)
                            if st.mode & DMDIR and st.name not in NOT_CHILDREN]
                except (NinepError, OSError):
                    return []
            found = await asyncio.gather(*(kids(p) for _, p in level))
            nxt = []
            for (name, path), children in zip(level, found):
                for child in children:
                    if child not in paths:
                        paths[child] = f"{path}/{child}"
                        parent[child] = name
                        nxt.append((child, paths[child]))
            level = nxt
        self.paths, self.parent = paths, parent

    def _descendants(self, live: dict[str, Any]) -> dict[str, list[str]]:
        """Each live node's live descendants (for its subtree's folded node set)."""
        out: dict[str, list[str]] = {n: [] for n in live}
        for n in live:
            p, hops = self.parent.get(n), 0
            while p is not None and hops < 64:
                if p in out:
                    out[p].append(n)
                p, hops = self.parent.get(p), hops + 1
        return out

    def csrv(self, node: str) -> str:
        """The node's /csrv: through the tree where known, else through a query."""
        return self.paths.get(node) or f"csrv/query/name={node}/{node}"

    def node_path(self, node: str) -> str:
        if node not in self.paths:
            raise SourceError(f"no node {clip(node, 64)!r} in the tree")
        return self.paths[node]

    # The parts of a snapshot ----------------------------------------------------------------

    async def _metrics(self) -> dict[str, dict[str, float]]:
        try:
            raw, _ = await read_bounded(self.c, "csrv/local/metrics/nodes")
            got = json.loads(raw)
        except (NinepError, OSError, ValueError) as e:
            log.debug("web: no metrics/nodes: %s", e)
            return {}
        return {str(k): {m: float(v) for m, v in s.items() if m in METRICS}
                for k, s in list(got.items())[:MAX_NODES] if isinstance(s, dict)}

    async def _summary(self) -> dict[str, dict[str, Any]]:
        try:
            raw, _ = await read_bounded(self.c, "csrv/local/metrics/subtree")
        except (NinepError, OSError):
            return {}
        out = {}
        for line in raw.decode(errors="replace").splitlines():
            w = line.split()
            if len(w) == 8 and w[0] in METRICS:
                out[w[0]] = {"count": num(w[1]), "sum": num(w[2]), "mean": num(w[3]),
                             "min": num(w[4]), "min_node": w[5], "max": num(w[6]),
                             "max_node": w[7]}
        return out

    async def _sessions(self) -> dict[str, Any]:
        try:
            raw, more = await read_bounded(self.c, "csrv/query/session=*/status", 1 << 20)
        except (NinepError, OSError) as e:
            return {"rows": [], "error": clip(str(e))}
        rows = []
        for line in raw.decode(errors="replace").splitlines():
            w = line.split(" ", 3)
            if len(w) < 3:
                continue
            attrs = session_attrs(w[3] if len(w) > 3 else "")
            rows.append({"node": w[0], "id": w[1], "state": w[2],
                         "user": clip(attrs.get("user", "")),
                         "command": clip(attrs.get("command", "")),
                         "path": f"/{self.csrv(w[0])}/local/{w[1]}"})
        cut = len(rows) > MAX_SESSIONS or more
        rows = rows[:MAX_SESSIONS]

        async def ranks(row: dict[str, Any]) -> None:
            if row["node"] not in self.paths or not row["id"].isdigit():
                return
            try:
                raw, _ = await read_bounded(self.c, row["path"].lstrip("/") + "/status", 1 << 16)
            except (NinepError, OSError):
                return
            rs = []
            for ln in raw.decode(errors="replace").splitlines()[:MAX_RANKS]:
                v = ln.split()
                if len(v) >= 4:
                    rs.append({"rank": v[0], "node": v[1], "state": v[3]})
            row["ranks"] = rs
            row["where"] = fold([r["node"] for r in rs])
        await asyncio.gather(*(ranks(r) for r in rows[:MAX_RANKS_READ]))
        return {"rows": rows, "cut": cut}

    async def _batch(self) -> dict[str, Any]:
        try:
            summary = parse_summary((await read_bounded(
                self.c, "csrv/local/batch/summary", 1 << 12))[0].decode())
            raw, more = await read_bounded(self.c, "csrv/local/batch/jobs")
        except (NinepError, OSError, ValueError) as e:
            return {"summary": {}, "workloads": [], "error": clip(str(e))}
        tags: dict[str, dict[str, Any]] = {}
        for line in raw.decode(errors="replace").splitlines():
            if not line or line.startswith("summary "):
                continue
            try:
                j = parse_job(line)
            except (ValueError, IndexError):
                continue
            w = tags.get(j.tag)
            if w is None:
                if len(tags) >= MAX_WORKLOADS:
                    continue
                w = tags[j.tag] = {"tag": clip(j.tag, 128), "states": {}, "total": 0,
                                   "failures": [], "path": f"/csrv/local/batch/tags/{j.tag}/jobs"}
            w["total"] += 1
            w["states"][j.state] = w["states"].get(j.state, 0) + 1
            if j.state in ("failed", "cancelled") and len(w["failures"]) < MAX_FAILURES:
                w["failures"].append({"id": j.id, "name": clip(j.name or ""), "state": j.state,
                                      "cmd": clip(j.cmd), "reason": clip(j.reason),
                                      "worker": clip(j.worker or "")})
        return {"summary": summary, "workloads": list(tags.values()), "cut": more}

    # On demand ---------------------------------------------------------------------------

    async def cached(self, key: tuple[Any, ...], ttl: float,
                     make: Callable[[], Awaitable[Any]]) -> Any:
        """One answer per ``key`` for ``ttl`` seconds, whatever the number of browsers."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        if len(self._cache) > 256:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < ttl}
        async with self._gate:  # pages asking many questions at once wait their turn
            value = await make()
        self._cache[key] = (time.monotonic(), value)
        return value

    async def history(self, node: str, series: str, metric: str, seconds: float,
                      since: float | None = None) -> dict[str, Any]:
        if metric not in METRICS:
            raise SourceError(f"unknown metric {clip(metric, 64)!r}")
        if series not in ("self", "subtree"):
            raise SourceError("series: self or subtree")
        if not (0 < seconds <= 31 * 86400):
            raise SourceError("range: seconds, at most 31 days")
        node = node or self.root
        path = self.node_path(node) + "/local/metrics/history"
        step = next(s for r, s in STEPS if seconds <= r)
        now = time.time()
        start = now - seconds
        if since is not None and math.isfinite(since):
            start = max(start, since - step)
        start = step * math.floor(start / step)
        key = (path, series, metric, start, step)

        async def ask() -> list[list[float | None]]:
            f = await self.c.open(path, ORDWR)
            async with f:
                await f.write(f"{metric} {series} {start:.0f} 0 {step}".encode(), 0)
                raw = await f.read_all()
            pts = []
            for ln in raw.decode(errors="replace").splitlines()[:20000]:
                v = ln.split()
                if len(v) >= 4:
                    pts.append([num(v[0]), num(v[1]), num(v[2]), num(v[3])])
            return pts
        try:
            points = await self.cached(key, min(step, 1.0), ask)
        except NinepError as e:
            raise SourceError(str(e)) from None
        return {"node": node, "series": series, "metric": metric, "step": step,
                "unit": METRICS[metric].unit, "points": points, "path": "/" + path,
                "request": f"{metric} {series} {start:.0f} 0 {step}"}

    async def workload(self, tag: str) -> dict[str, Any]:
        """A workload's jobs and the Gantt of `brasil report` (its executions per slot)."""
        if not TAG.fullmatch(tag):
            raise SourceError("a workload's tag is letters, digits, '.', '_' or '-'")
        base = f"csrv/local/batch/tags/{tag}"

        async def make() -> dict[str, Any]:
            jraw, _ = await read_bounded(self.c, f"{base}/jobs")
            eraw, more = await read_bounded(self.c, f"{base}/events")
            jobs = [parse_job(ln) for ln in jraw.decode(errors="replace").splitlines()
                    if ln and not ln.startswith("summary ")]
            events = []
            for ln in eraw.decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError, IndexError):
                    events.append(parse_event(ln))
            rep = report.build(tag, jobs, events)
            now = time.time()
            runs = [{"job": r.job, "row": clip(r.row, 128), "start": r.started or r.assigned,
                     "end": r.ended or r.stopped or (now if r.outcome == "running" else
                                                    (r.started or r.assigned)),
                     "outcome": r.outcome, "redundant": r.redundant}
                    for r in rep.runs[-MAX_RUNS:]]
            return {"tag": tag, "makespan": rep.makespan, "first": rep.first_submit,
                    "figures": rep.figures, "runs": runs, "cut": more or len(rep.runs) > MAX_RUNS,
                    "path": "/" + base + "/events"}
        try:
            return dict(await self.cached(("workload", tag), 1.0, make))
        except NinepError as e:
            if e.errno == errno.ENOENT:
                raise SourceError(f"no workload {tag!r}") from None
            raise SourceError(str(e)) from None

    # Actions (only with --actions) -------------------------------------------------------

    async def kill(self, node: str, sid: str) -> str:
        if not sid.isdigit():
            raise SourceError("a session id is a number")
        path = f"{self.node_path(node)}/local/{sid}/ctl"
        try:
            await self.c.write(path, b"kill\n")
        except NinepError as e:
            raise SourceError(str(e)) from None
        return "/" + path

    async def cancel(self, tag: str) -> str:
        if not TAG.fullmatch(tag):
            raise SourceError("a workload's tag is letters, digits, '.', '_' or '-'")
        try:
            await self.c.write("csrv/local/batch/ctl", f"cancel tag {tag}\n".encode())
        except NinepError as e:
            raise SourceError(str(e)) from None
        return "/csrv/local/batch/ctl"


def num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def status_attrs(line: str) -> dict[str, str]:
    """``NAME SLOTS FREE LOAD MEMFREE_MB STATE k=v…`` as attributes."""
    w = line.split()
    if len(w) < 6:
        return {}
    out = {"name": w[0], "slots": w[1], "free": w[2], "load": w[3], "state": w[5]}
    for word in w[6:]:
        k, eq, v = word.partition("=")
        if eq and k not in ("name",):
            out[k] = v
    return out


def session_attrs(text: str) -> dict[str, str]:
    """``user=U command=C… session=S``: command= runs to the next ` session=`."""
    out: dict[str, str] = {}
    m = re.match(r"user=(\S*) command=(.*?)(?: session=(\S*))?$", text)
    if m:
        out["user"], out["command"] = m.group(1), m.group(2)
        out["session"] = m.group(3) or ""
    return out
