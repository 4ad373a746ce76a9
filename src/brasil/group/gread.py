"""Group reads (TBON-FS): the same file on many nodes, read through a reduction done in the tree.

A query directory's ``gread`` file takes a request (JSON, one write) and answers with a partial
result (JSON, read back on the same open): this node's own file, if the node matches, combined
with each child's partial for the same request — asked in parallel — by the same reduction. So
each level sends condensed data up, and the root receives one result per child, not one copy per
leaf: an ``equiv`` of a file identical on 64 leaves reaches the root once per child.

Requests: ``{"path": "fs/etc/hosts", "agg": KIND, "grep": RE?}``, ``path`` relative to each
node's ``local/`` (never climbing out of it). Kinds:

- ``concat``: every node's content, by node;
- ``equiv``: identical contents together, each with its node list (as ``dshbak -c``);
- ``sha256``: ``equiv`` of the contents' SHA-256 (what ``psync`` compares);
- ``sum``, ``min``, ``max``, ``mean``, ``count``: over the numeric fields, column by column
  (column j is the j-th whitespace-separated field of each line), and the count of nodes and lines;
- ``py:MODULE:FUNC``: a user's associative reducer, ``FUNC(a, b)``, over the nodes' contents
  (str); it runs in a child process of each daemon (``python -m brasil.group.reduce``), so a
  reducer that raises or hangs harms nothing: the error names the node where it happened;
- ``ls``: a directory's entries on every node (what the merge views are made of).

Every partial carries ``errors`` (by node: a missing file, a lost node — named, while the rest is
still returned), ``received`` (bytes this node got from its children) and ``held`` (bytes of the
files read in its subtree), so the condensing can be measured.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sys
from typing import TYPE_CHECKING, Any

from ..ninep.constants import OREAD
from ..ninep.errors import NinepError
from ..ninep.maybe import is_awaitable
from ..ninep.synthetic import Handle, Node

if TYPE_CHECKING:
    from .query import Query, QueryService

KINDS = ("concat", "equiv", "sha256", "sum", "min", "max", "mean", "count", "ls")
MAX_FILE = 64 << 20
REDUCER_TIMEOUT = 30.0


def check_request(req: Any) -> dict[str, Any]:
    if not isinstance(req, dict) or not isinstance(req.get("path"), str):
        raise NinepError('gread: a request is JSON: {"path": "fs/…", "agg": "equiv"}')
    agg = req.get("agg", "concat")
    if agg not in KINDS and not (isinstance(agg, str) and re.fullmatch(
            r"py:[A-Za-z_][\w.]*:[A-Za-z_]\w*", agg)):
        raise NinepError(f"gread: unknown aggregation {agg!r}; one of {', '.join(KINDS)}, or "
                         "py:MODULE:FUNCTION")
    check_path(req["path"], empty=agg == "ls")
    if req.get("grep") is not None:
        try:
            re.compile(req["grep"])
        except re.error as e:
            raise NinepError(f"gread: bad --grep pattern: {e}") from None
    return {"path": req["path"], "agg": agg, "grep": req.get("grep")}


def check_path(path: str, empty: bool = False) -> list[str]:
    parts = [p for p in path.split("/") if p]
    if path.startswith("/") or any(p in ("..", ".") for p in parts) or (not parts and not empty):
        raise NinepError(f"{path!r}: a group path is relative to each node's local/ (fs/…, "
                         "status) and may not climb out of it")
    return parts


async def walk_local(node: Any, path: str) -> Node:
    d = node.local
    for name in check_path(path, empty=True):
        if not d.is_dir:
            raise NinepError(f"{path}: not a directory on the way")
        nxt = d.walk(name)
        d = await nxt if is_awaitable(nxt) else nxt
    return d  # type: ignore[no-any-return]


async def read_local(node: Any, path: str, digest: bool = False) -> tuple[bytes, int]:
    """The file's bytes (at most MAX_FILE), or with ``digest`` its SHA-256 in hex, computed as
    it is read (any size); and how many bytes were read."""
    f = await walk_local(node, path)
    if f.is_dir:
        raise NinepError(f"{path}: is a directory")
    h = f.open(OREAD)
    h = await h if is_awaitable(h) else h
    chunks: list[bytes] = []
    sha = hashlib.sha256() if digest else None
    at = 0
    try:
        while sha is not None or at < MAX_FILE:
            chunk = h.read(at, 1 << 20)
            chunk = await chunk if is_awaitable(chunk) else chunk
            if not chunk:
                break
            at += len(chunk)
            if sha is not None:
                sha.update(chunk)
            else:
                chunks.append(chunk)
    finally:
        r = h.clunk()
        if is_awaitable(r):
            await r
    if sha is not None:
        return sha.hexdigest().encode(), at
    return b"".join(chunks), at


async def list_local(node: Any, path: str) -> dict[str, bool]:
    d = await walk_local(node, path)
    if not d.is_dir:
        raise NinepError(f"{path}: not a directory")
    kids = d.children()
    kids = await kids if is_awaitable(kids) else kids
    return {k.name: bool(k.is_dir or (k.stat().mode & 0x80000000)) for k in kids}


# ---- reductions: a leaf's partial, and merging two ----

def empty(agg: str) -> dict[str, Any]:
    return {"agg": agg, "nodes": [], "errors": {}, "received": 0, "received_total": 0, "held": 0}


def leaf(agg: str, node: str, content: bytes, grep: str | None, size: int | None = None
         ) -> dict[str, Any]:
    p = empty(agg)
    p["nodes"] = [node]
    p["held"] = len(content) if size is None else size
    if agg == "sha256":  # ``content`` is the digest already (read_local(…, digest=True))
        p["groups"] = [{"nodes": [node], "content": content.decode()}]
        return p
    if agg == "equiv" and grep is None:
        # Grouping compares bytes: a lossy decode would put different binaries in one group.
        try:
            p["groups"] = [{"nodes": [node], "content": content.decode()}]
        except UnicodeDecodeError:
            p["groups"] = [{"nodes": [node], "content": base64.b64encode(content).decode(),
                            "encoding": "base64"}]
        return p
    text = content.decode("utf-8", "replace")
    if grep is not None:
        rx = re.compile(grep)
        text = "".join(ln for ln in text.splitlines(keepends=True) if rx.search(ln))
    if agg == "concat":
        p["parts"] = {node: text}
    elif agg == "equiv":
        p["groups"] = [{"nodes": [node], "content": text}]
    elif agg.startswith("py:"):
        p["values"] = [text]
    else:
        cols: list[list[float]] = []
        lines = text.splitlines()
        for line in lines:
            for j, word in enumerate(line.split()):
                try:
                    v = float(word)
                except ValueError:
                    continue
                while len(cols) <= j:
                    cols.append([0, 0.0, float("inf"), float("-inf")])
                c = cols[j]
                c[0] += 1
                c[1] += v
                c[2] = min(c[2], v)
                c[3] = max(c[3], v)
        p["lines"] = len(lines)
        p["columns"] = cols
    return p


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` into ``a`` (associative: any order of merging gives the same final result)."""
    a["nodes"] += b.get("nodes", [])
    a["errors"].update(b.get("errors", {}))
    a["held"] += b.get("held", 0)
    a["received_total"] += b.get("received_total", 0)
    agg = a["agg"]
    if agg == "concat":
        a.setdefault("parts", {}).update(b.get("parts", {}))
    elif agg in ("equiv", "sha256"):
        by = {(g["content"], g.get("encoding")): g for g in a.setdefault("groups", [])}
        for g in b.get("groups", []):
            key = (g["content"], g.get("encoding"))
            if key in by:
                by[key]["nodes"] += g["nodes"]
            else:
                a["groups"].append(g)
                by[key] = g
    elif agg.startswith("py:"):
        a.setdefault("values", []).extend(b.get("values", []))
    elif agg == "ls":
        names = a.setdefault("names", {})
        for name, (nodes, is_dir) in b.get("names", {}).items():
            have = names.setdefault(name, [[], False])
            have[0] += nodes
            have[1] = have[1] or is_dir
    else:
        a["lines"] = a.get("lines", 0) + b.get("lines", 0)
        ca, cb = a.setdefault("columns", []), b.get("columns", [])
        for j, c in enumerate(cb):
            if j >= len(ca):
                ca.append(list(c))
            else:
                x = ca[j]
                ca[j] = [x[0] + c[0], x[1] + c[1], min(x[2], c[2]), max(x[3], c[3])]
    return a


async def reduce_values(func: str, values: list[Any]) -> Any:
    """A user's reducer over values, in a child process: its failure is a message, not ours."""
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.group.reduce", func, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(p.communicate(json.dumps(values).encode()),
                                          REDUCER_TIMEOUT)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        raise NinepError(f"reducer {func} took over {REDUCER_TIMEOUT:g}s") from None
    if p.returncode:
        lines = err.decode(errors="replace").strip().splitlines()
        raise NinepError(f"reducer {func} failed: {lines[-1] if lines else 'no message'}")
    return json.loads(out)


# ---- a node's part ----

async def partial(s: QueryService, q: Query, req: dict[str, Any]) -> dict[str, Any]:
    agg, path = req["agg"], req["path"]
    name = s.node.name
    result = empty(agg)
    if s.matches_here(q):
        try:
            if agg == "ls":
                result["nodes"] = [name]
                result["names"] = {k: [[name], d] for k, d in (await list_local(s.node, path)).items()}
            else:
                data, size = await read_local(s.node, path, digest=agg == "sha256")
                merge(result, leaf(agg, name, data, req.get("grep"), size))
        except NinepError as e:
            result["errors"][name] = e.message

    async def child(c: Any) -> tuple[int, dict[str, Any]]:
        try:
            from .query import exchange
            data = await exchange(await s.ask(c, q, "gread"), json.dumps(req).encode())
            return len(data), json.loads(data)
        except (NinepError, ConnectionError, asyncio.TimeoutError, ValueError) as e:
            lost = empty(agg)
            below = [ln.split()[0] for ln in c.status if ln.split()] or [c.name]
            for n in below:
                lost["errors"][n] = f"lost while reading: node {c.name} ({e})" if n == c.name \
                    else f"lost while reading: through node {c.name}"
            return 0, lost
    for size, part in await asyncio.gather(*(child(c) for c in s.children()
                                             if s.may_match(c, q))):
        result["received"] += size
        result["received_total"] += size
        merge(result, part)
    if agg.startswith("py:") and len(result.get("values", [])) > 0:
        try:
            result["values"] = [await reduce_values(agg[3:], result["values"])]
        except NinepError as e:
            result["errors"][name] = e.message
            result["values"] = []
    return result


def final(result: dict[str, Any]) -> dict[str, Any]:
    """What the root's partial means, for people: means, sorted groups."""
    agg = result["agg"]
    if agg in ("sum", "min", "max", "mean", "count"):
        cols = result.get("columns", [])
        key = {"sum": 1, "min": 2, "max": 3}.get(agg)
        if agg == "count":
            result["value"] = {"nodes": len(result["nodes"]), "lines": result.get("lines", 0)}
        elif agg == "mean":
            result["value"] = [c[1] / c[0] if c[0] else None for c in cols]
        else:
            result["value"] = [c[key] if c[0] else None for c in cols]
    elif agg in ("equiv", "sha256"):
        for g in result.get("groups", []):
            g["nodes"] = sorted(g["nodes"])
            g["count"] = len(g["nodes"])
        result.get("groups", []).sort(key=lambda g: (-g["count"], g["nodes"][:1]))
    elif agg.startswith("py:"):
        result["value"] = result.get("values", [None])[0] if result.get("values") else None
    return result


class GreadFile(Node):
    def __init__(self, s: QueryService, q: Query) -> None:
        super().__init__("gread", 0o600)
        self.s, self.q = s, q

    def open(self, mode: int) -> Handle:
        return GreadHandle(self)


class GreadHandle(Handle):
    node: GreadFile

    def __init__(self, node: GreadFile) -> None:
        super().__init__(node)
        self.request = b""
        self.answer: bytes | None = None

    def write(self, offset: int, data: bytes) -> int:
        self.request += data
        self.answer = None
        return len(data)

    def read(self, offset: int, count: int) -> Any:
        if self.answer is not None:
            return self.answer[offset:offset + count]
        return self._answer(offset, count)

    async def _answer(self, offset: int, count: int) -> bytes:
        try:
            req = check_request(json.loads(self.request or b"null"))
        except ValueError as e:
            raise NinepError(f"gread: the request is not JSON: {e}") from None
        self.answer = json.dumps(await partial(self.node.s, self.node.q, req)).encode()
        return self.answer[offset:offset + count]
