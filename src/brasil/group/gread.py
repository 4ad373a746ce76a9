"""Group reads (TBON-FS): the same file on many nodes, read through a reduction done in the tree.

A query directory's ``gread`` file takes a request (JSON, one write) and answers with a partial
result (JSON, read back on the same open): this node's own file, if the node matches, combined
with each child's partial for the same request — asked in parallel — by the same reduction. So
each level sends condensed data up, and the root receives one result per child, not one copy per
leaf: an ``equiv`` of a file identical on 64 leaves reaches the root once per child.

Requests: ``{"path": "fs/etc/hosts", "agg": KIND, "grep": RE?}``. ``grep`` is RE2 syntax, matched
in linear time against each line without its newline (a pattern RE2 refuses is the request's
error). ``path`` is relative to each node's ``local/`` (never climbing out of it), and one of a
whitelist of files that do nothing but give their bytes when read: ``fs/…`` (the export: regular
files only), ``status``, ``attrs`` and a node's latest metrics (``metrics/now``, and
``metrics/row``: the values alone, one line in a fixed order, for the numeric kinds). Others, such as ``clone`` (which makes a session when
opened) or ``ctl``, are refused. And ``metrics/history?METRIC&start=S&end=E&step=STEP``: each
node's history of one metric over a range (:func:`history_range`), read from its ``history``
file, reduced by the numeric kinds step by step: a step is a cell ``[count, sum, min, max]``
as a column is, by time instead of by position. Kinds:

- ``concat``: every node's content, by node;
- ``equiv``: identical contents together, each with its node list (as ``dshbak -c``);
- ``sha256``: ``equiv`` of the contents' SHA-256 (what ``psync`` compares);
- ``sum``, ``min``, ``max``, ``mean``, ``count``: over the numeric fields, column by column
  (column j is the j-th whitespace-separated field of each line), and the count of nodes and lines;
  a line longer than ``MAX_LINE`` (1 MiB) is not numbers: it is skipped as it streams by and
  counted in ``long_lines``, so a file without newlines costs linear time and bounded memory;
- ``py:MODULE:FUNC``: a user's associative reducer, ``FUNC(a, b)``, over the nodes' contents
  (str); it runs in a child process of each daemon (``python -m brasil.group.reduce``), so a
  reducer that raises or hangs harms nothing: the error names the node where it happened;
- ``ls``: a directory's entries on every node (what the merge views are made of).

A group read holds at most ``MAX_CONTENT`` (8 MiB) of a node's file for the kinds that carry
content (``concat``, ``equiv``, ``py:``): a bigger file is that node's error (its size, the limit,
and what to do instead: ``sha256`` to compare, ``pcp``/``psync`` to distribute, or reading it on
that node), the rest still returned. ``sha256`` and the numeric kinds stream any size. Content
that is not UTF-8 travels base64-encoded (``"encoding": "base64"``): an equiv group carries it,
and a concat part is then ``{"content": …, "encoding": "base64"}`` instead of a string. Hashing,
parsing numbers and the JSON of big partials run off the event loop, so a big read never starves
the daemon (its heartbeats, its other clients).

``status`` is read as each node's own status line (``NAME SLOTS FREE LOAD MEMFREE_MB up k=v…``),
not its ``status`` file, which also lists its subtree and a total: so ``--agg sum status`` counts
every node once.

Every partial carries ``errors`` (by node: a missing file, a lost node — named, while the rest is
still returned), ``received`` (bytes this node got from its children) and ``held`` (bytes of the
files read in its subtree), so the condensing can be measured.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import json.scanner
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..client.group import KINDS
from ..exec.pychild import SAFE_CWD, python_argv
from ..exec.records import compile_regex
from ..metrics.history import RESOLUTIONS, HistoryError, absolute, plan
from ..metrics.sample import METRICS
from ..ninep.constants import OREAD
from ..ninep.errors import NinepError
from ..ninep.synthetic import Dir, Handle, Inode
from .fanout import LOST, Query, QueryService, check_path, exchange, readable, settled

if TYPE_CHECKING:
    from ..node.daemon import Node as Machine
    from ..tree.registry import Child

HISTORY = ["metrics", "history"]  # with a range: ``metrics/history?METRIC&start=…`` (below)
HISTORY_KEYS = ("metric", "start", "end", "step")
HISTORY_FORM = "metrics/history?METRIC[&start=S][&end=E][&step=STEP]"
MAX_CONTENT = 8 << 20  # a node's file, for the kinds that carry content (concat, equiv, py:)
CONTENT_KINDS = ("concat", "equiv")
NUMERIC_KINDS = ("sum", "min", "max", "mean", "count")
CHUNK = 1 << 20
MAX_LINE = 1 << 20  # the numeric kinds: a longer line is not numbers (skipped, counted)
BIG_GREP = 64 << 10  # content bigger than this is grepped on a thread
MAX_RESULT = 64 << 20  # the content of one partial (what a node holds, and sends up)
BIG_JSON = 256 << 10  # JSON bigger than this is made and parsed on a thread, a string at a time
REDUCER_TIMEOUT = 30.0
MAX_REQUEST = 64 << 10  # the JSON written to a gread file


def check_request(req: Any) -> dict[str, Any]:
    if not isinstance(req, dict) or not isinstance(req.get("path"), str):
        raise NinepError('gread: a request is JSON: {"path": "fs/…", "agg": "equiv"}')
    agg = req.get("agg", "concat")
    if agg not in KINDS and not (isinstance(agg, str) and re.fullmatch(
            r"py:[A-Za-z_][\w.]*:[A-Za-z_]\w*", agg)):
        raise NinepError(f"gread: unknown aggregation {agg!r}; one of {', '.join(KINDS)}, or "
                         "py:MODULE:FUNCTION")
    base, _, query = req["path"].partition("?")
    if check_path(base, empty=True) == HISTORY:
        if agg not in NUMERIC_KINDS:
            raise NinepError(f"gread: {HISTORY_FORM} is reduced step by step with "
                             f"{', '.join(NUMERIC_KINDS)}; not {agg!r}", errno.EINVAL)
        if req.get("grep") is not None:
            raise NinepError(f"gread: {HISTORY_FORM} has no lines to grep", errno.EINVAL)
        return {"path": history_path(history_range(query)), "agg": agg, "grep": None}
    parts = check_path(req["path"], empty=agg == "ls")
    if agg != "ls" and not readable(parts):
        raise NinepError(f"gread: {req['path']}: a group read reads only plain files: fs/… (the "
                         "nodes' exported files), status, attrs, metrics/now, metrics/row or "
                         f"{HISTORY_FORM}; not files that act when opened, such as clone (a new "
                         "session) or ctl", errno.EINVAL)
    if req.get("grep") is not None:
        grep_regex(req["grep"])  # refused now, saying why, rather than on every node
    return {"path": "/".join(parts), "agg": agg, "grep": req.get("grep")}


def grep_regex(grep: Any) -> Any:
    """A ``--grep`` pattern compiled with RE2 (linear time: no pattern can stall a daemon);
    a pattern RE2 refuses is the request's error, naming it and why."""
    if not isinstance(grep, str):
        raise NinepError(f"gread: --grep is a regular expression (a string), not {grep!r}",
                         errno.EINVAL)
    try:
        return compile_regex(grep, "--grep pattern")
    except ValueError as e:
        raise NinepError(f"gread: {e}", errno.EINVAL) from None


def grep_lines(content: bytes, rx: Any) -> bytes:
    """The lines of ``content`` that ``rx`` finds a match in, each with its newline (a last
    line without one is kept as it is): bytes in, bytes out, so nothing is lost or re-coded.
    A line is matched without its newline, so ``$`` ends it as grep's does."""
    lines = content.split(b"\n")
    last = lines.pop()
    out = [ln + b"\n" for ln in lines if rx.search(ln)]
    if last and rx.search(last):
        out.append(last)
    return b"".join(out)


def history_range(query: str) -> dict[str, Any]:
    """The range of a group read of ``metrics/history?METRIC&start=S&end=E&step=STEP``,
    planned here, at the node the read is asked of: relative times made absolute and the step
    rounded to the history's resolution, so that every node below answers for the same steps
    (their times are multiples of the step) and merging them is per time. An unknown metric,
    a bad number or too many points is the request's error, said once, here."""
    fields: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        key, value = (key, value) if eq else ("metric", key)
        if key not in HISTORY_KEYS:
            raise NinepError(f"gread: {HISTORY_FORM}: unknown {key!r}; the keys are "
                             f"{', '.join(HISTORY_KEYS)}", errno.EINVAL)
        fields[key] = value
    metric = fields.get("metric", "")
    if metric not in METRICS:
        what = f"unknown metric {metric!r}" if metric else "no metric named"
        raise NinepError(f"gread: {HISTORY_FORM}: {what}; one of {', '.join(METRICS)}",
                         errno.EINVAL)
    try:
        nums = {k: float(fields[k]) for k in ("start", "end", "step") if k in fields}
    except ValueError:
        raise NinepError(f"gread: {HISTORY_FORM}: start, end and step are seconds (start and "
                         "end since the epoch, or 0 and below: before now)",
                         errno.EINVAL) from None
    now = time.time()
    start, end = absolute(nums.get("start", -3600.0), nums.get("end", 0.0), now)
    try:
        _, step = plan(RESOLUTIONS, start, end, nums.get("step", 1.0), now)
    except HistoryError as e:
        raise NinepError(f"gread: {HISTORY_FORM}: {e}", errno.EINVAL) from None
    return {"metric": metric, "start": int(start) - int(start) % step, "end": int(end),
            "step": step}


def history_path(r: dict[str, Any]) -> str:
    """The canonical form of a planned range (what the children are sent)."""
    return f"metrics/history?{r['metric']}&start={r['start']}&end={r['end']}&step={r['step']}"


async def read_history(node: Machine, path: str) -> tuple[dict[str, list[float]], int]:
    """A node's own series over a planned range, from its ``metrics/history`` file: per step
    (its time, as a string: a JSON key), ``[1, mean, min, max]`` of the node's samples in it, a
    Columns cell of one node, so that steps merge as columns do. And the bytes read."""
    r = history_range(path.partition("?")[2])
    ask = f"{r['metric']} self {r['start']} {r['end']} {r['step']}".encode()
    text = await exchange(await walk_local(node, "metrics/history"), ask)
    steps: dict[str, list[float]] = {}
    for line in text.decode().splitlines():
        t, mean, lo, hi, _ = line.split()
        steps[t] = [1, float(mean), float(lo), float(hi)]
    return steps, len(text)


async def walk_local(node: Machine, path: str) -> Inode:
    d: Inode = node.local
    for name in check_path(path, empty=True):
        if not isinstance(d, Dir):
            raise NinepError(f"{path}: not a directory on the way")
        d = await settled(d.walk(name))
    return d


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n % (1 << 20) else f"{n >> 20} MiB"


def too_big(path: str, agg: str, size: int, node: str) -> NinepError:
    return NinepError(
        f"{path}: {size} bytes ({mib(size)}), over the {mib(MAX_CONTENT)} a group read's {agg} "
        f"holds per node; compare it with --agg sha256, distribute it with pcp/psync, or read it "
        f"on the node itself (/csrv/query/name={node}/{node}/local/{path})")


async def read_local(node: Machine, path: str, agg: str = "concat", grep: str | None = None
                     ) -> tuple[bytes | Columns, int]:
    """The file's content, read in chunks: for ``sha256`` its digest in hex, computed as it is
    read (any size); for the numeric kinds its columns, parsed as it is read (any size); else
    its bytes, at most MAX_CONTENT (more is an error that says so). And how many bytes were
    read. Hashing and parsing run on a thread: the event loop stays free."""
    f = await walk_local(node, path)
    if f.is_dir:
        raise NinepError(f"{path}: is a directory")
    limit = MAX_CONTENT if agg not in NUMERIC_KINDS and agg != "sha256" else None
    if limit is not None:
        st = await settled(f.stat())
        if st.length > limit:
            raise too_big(path, agg, st.length, node.name)
    h = await settled(f.open(OREAD))
    chunks: list[bytes] = []
    sha = hashlib.sha256() if agg == "sha256" else None
    cols = Columns(grep) if agg in NUMERIC_KINDS else None
    at = 0
    try:
        while True:
            chunk = await settled(h.read(at, CHUNK))
            if not chunk:
                break
            at += len(chunk)
            if sha is not None:
                await asyncio.to_thread(sha.update, chunk)  # hashlib lets go of the GIL
            elif cols is not None:
                await asyncio.to_thread(cols.feed, chunk)
            else:
                chunks.append(chunk)
                if limit is not None and at > limit:  # it grew since its stat
                    raise too_big(path, agg, at, node.name)
    finally:
        await settled(h.clunk())
    if sha is not None:
        return sha.hexdigest().encode(), at
    if cols is not None:
        await asyncio.to_thread(cols.feed, b"", True)
        return cols, at
    return b"".join(chunks), at


class Columns:
    """The numeric kinds' partial of one file: per column ``[count, sum, min, max]`` of the
    numbers in it, and its line count; fed in chunks (lines may straddle them).

    Linear and bounded whatever the file: only a line's start is held across chunks (in a
    bytearray, appended to, never re-joined), and a line longer than :data:`MAX_LINE` is not
    numbers: its bytes are dropped as they come and it is counted in ``long_lines``, not
    parsed, grepped or counted in ``lines``."""

    def __init__(self, grep: str | None) -> None:
        self.rx = grep_regex(grep) if grep is not None else None
        self.cols: list[list[float]] = []
        self.lines = 0
        self.long_lines = 0
        self.held = bytearray()  # the start of a line no newline has ended yet
        self.skipping = False  # inside a line over MAX_LINE: dropped until its newline

    def feed(self, chunk: bytes, final: bool = False) -> None:
        first = chunk.find(b"\n")
        if first < 0:
            self._hold(chunk)
        else:
            self._hold(chunk[:first])
            self._end_held()  # a newline ends it, even if empty
            last = chunk.rfind(b"\n")
            if last > first:
                for line in chunk[first + 1:last].split(b"\n"):
                    self._line(line)
            self._hold(chunk[last + 1:])
        if final and (self.held or self.skipping):
            self._end_held()  # the last line, without a newline

    def _hold(self, data: bytes) -> None:
        if self.skipping or not data:
            return
        self.held += data
        if len(self.held) > MAX_LINE:
            self.skipping, self.held = True, bytearray()

    def _end_held(self) -> None:
        if self.skipping:
            self.long_lines += 1
            self.skipping = False
        else:
            self._line(bytes(self.held))
        self.held = bytearray()

    def _line(self, raw: bytes) -> None:
        if len(raw) > MAX_LINE:
            self.long_lines += 1
            return
        if self.rx is not None and not self.rx.search(raw):
            return
        self.lines += 1
        for j, word in enumerate(raw.split()):
            try:
                v = float(word)
            except ValueError:
                continue
            while len(self.cols) <= j:
                self.cols.append([0, 0.0, float("inf"), float("-inf")])
            c = self.cols[j]
            c[0] += 1
            c[1] += v
            c[2] = min(c[2], v)
            c[3] = max(c[3], v)


async def list_local(node: Machine, path: str) -> dict[str, bool]:
    d = await walk_local(node, path)
    if not isinstance(d, Dir):
        raise NinepError(f"{path}: not a directory")
    kids = await settled(d.children())
    return {k.name: bool(k.is_dir or ((await settled(k.stat())).mode & 0x80000000))
            for k in kids}


# ---- reductions: a leaf's partial, and merging two ----

def empty(agg: str) -> dict[str, Any]:
    return {"agg": agg, "nodes": [], "errors": {}, "received": 0, "received_total": 0, "held": 0}


def text_or_base64(content: bytes) -> dict[str, str]:
    """Content as JSON can carry it exactly: text, or base64 when it is not UTF-8."""
    try:
        return {"content": content.decode()}
    except UnicodeDecodeError:
        return {"content": base64.b64encode(content).decode(), "encoding": "base64"}


def leaf(agg: str, node: str, content: bytes | Columns, grep: str | None,
         size: int | None = None) -> dict[str, Any]:
    p = empty(agg)
    p["nodes"] = [node]
    if isinstance(content, Columns):  # the numeric kinds: parsed as it was read
        p["held"] = size or 0
        p["lines"] = content.lines
        p["long_lines"] = content.long_lines
        p["columns"] = content.cols
        return p
    p["held"] = len(content) if size is None else size
    if agg == "sha256":  # ``content`` is the digest already (read_local(…, agg="sha256"))
        p["groups"] = [{"nodes": [node], "content": content.decode()}]
        return p
    if grep is not None and agg in CONTENT_KINDS:
        content = grep_lines(content, grep_regex(grep))  # bytes: not one is lost
    if agg in CONTENT_KINDS:
        # Grouping compares bytes, and a part is the file as it is: no lossy decode.
        c = text_or_base64(content)
        if agg == "concat":
            p["parts"] = {node: c["content"] if "encoding" not in c else c}
        else:
            p["groups"] = [{"nodes": [node], **c}]
        return p
    if agg.startswith("py:"):
        if grep is not None:
            content = grep_lines(content, grep_regex(grep))
        p["values"] = [content.decode("utf-8", "replace")]
        return p
    cols = Columns(grep)  # a numeric kind given bytes (status): parsed here
    cols.feed(content, final=True)
    return leaf(agg, node, cols, None, len(content))


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
        a["long_lines"] = a.get("long_lines", 0) + b.get("long_lines", 0)
        ca, cb = a.setdefault("columns", []), b.get("columns", [])
        for j, c in enumerate(cb):
            if j >= len(ca):
                ca.append(list(c))
            else:
                ca[j] = combined(ca[j], c)
        if "steps" in b:  # a history range: the same cells, by step
            sa = a.setdefault("steps", {})
            for t, c in b["steps"].items():
                sa[t] = combined(sa[t], c) if t in sa else list(c)
    return a


def combined(x: list[float], c: list[float]) -> list[float]:
    """Two ``[count, sum, min, max]`` cells as one (a column's, or a history step's)."""
    return [x[0] + c[0], x[1] + c[1], min(x[2], c[2]), max(x[3], c[3])]


async def reduce_values(func: str, values: list[Any]) -> Any:
    """A user's reducer over values, in a child process: its failure is a message, not ours."""
    p = await asyncio.create_subprocess_exec(
        *python_argv("brasil.group.reduce", func), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=SAFE_CWD)
    try:
        out, err = await asyncio.wait_for(p.communicate(json.dumps(values).encode()),
                                          REDUCER_TIMEOUT)
    except TimeoutError:
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
    history = check_path(path.partition("?")[0], empty=True) == HISTORY
    if history:
        result["steps"] = {}  # even when nothing is found: the answer is a series
    if s.matches_here(q):
        try:
            if agg == "ls":
                names = await list_local(s.node, path)
                result["nodes"] = [name]  # only once listed: a node that failed is in errors
                result["names"] = {k: [[name], d] for k, d in names.items()}
            elif history:
                steps, size = await read_history(s.node, path)
                merge(result, {"nodes": [name], "held": size, "steps": steps})
            elif check_path(path) == ["status"]:
                # The node's own line: its status file also lists its subtree and a total, which
                # a sum over nodes would count again at every level above.
                data = (s.node.status_line() + "\n").encode()
                merge(result, leaf(agg, name, hashlib.sha256(data).hexdigest().encode()
                                   if agg == "sha256" else data, req.get("grep"), len(data)))
            else:
                read, size = await read_local(s.node, path, agg, req.get("grep"))
                if req.get("grep") is not None and isinstance(read, bytes) and \
                        len(read) > BIG_GREP:  # up to MAX_CONTENT of lines: not on the loop
                    merge(result, await asyncio.to_thread(leaf, agg, name, read,
                                                          req.get("grep"), size))
                else:
                    merge(result, leaf(agg, name, read, req.get("grep"), size))
        except NinepError as e:
            result["errors"][name] = e.message

    async def child(c: Child) -> tuple[int, dict[str, Any]]:
        data = await exchange(await s.ask(c, q, "gread"), json.dumps(req).encode())
        return len(data), await loads(data)

    def lost(c: Child, e: Exception) -> tuple[int, dict[str, Any]]:
        part = empty(agg)
        below = [ln.split()[0] for ln in c.status if ln.split()] or [c.name]
        for n in below:
            part["errors"][n] = f"lost while reading: node {c.name} ({e})" if n == c.name \
                else f"lost while reading: through node {c.name}"
        return 0, part
    for size, part in await s.gather(q, child, lost, (*LOST, ValueError)):
        result["received"] += size
        result["received_total"] += size
        merge(result, bounded(result, part, name))
    if agg.startswith("py:") and len(result.get("values", [])) > 0:
        try:
            result["values"] = [await reduce_values(agg[3:], result["values"])]
        except NinepError as e:
            result["errors"][name] = e.message
            result["values"] = []
    return result


def bounded(result: dict[str, Any], part: dict[str, Any], here: str) -> dict[str, Any]:
    """``part`` as far as ``result`` may still take it: the content past MAX_RESULT is dropped,
    each node it came from named in ``errors``, so that no level holds more than that."""
    if result["agg"] not in CONTENT_KINDS:
        return part
    room = MAX_RESULT - rough_size(result)
    if rough_size(part) <= room:
        return part
    why = (f"dropped at {here}: the group read's result would pass {mib(MAX_RESULT)}; select "
           "fewer nodes (--where), or compare with --agg sha256")
    if "parts" in part:
        kept = {}
        for node, v in part["parts"].items():
            n = len(v) if isinstance(v, str) else len(v["content"])
            if n <= room:
                kept[node], room = v, room - n
            else:
                part["errors"][node] = why
                part["nodes"].remove(node)
        part["parts"] = kept
    kept_groups = []
    for g in part.get("groups", []):
        if len(g["content"]) <= room:
            kept_groups.append(g)
            room -= len(g["content"])
        else:
            for node in g["nodes"]:
                part["errors"][node] = why
                if node in part["nodes"]:
                    part["nodes"].remove(node)
    if "groups" in part:
        part["groups"] = kept_groups
    return part


async def dumps(obj: Any) -> bytes:
    """JSON of a partial. A big one is made on a thread by the pure-Python encoder, which hands
    the GIL back between strings (the C encoder would hold it for the whole document), so the
    event loop keeps running while it is made."""
    small = json.dumps(obj, ensure_ascii=False) if rough_size(obj) < BIG_JSON else None
    if small is not None:
        return small.encode()

    def make() -> bytes:
        enc = json.JSONEncoder(ensure_ascii=False)
        return "".join(enc.iterencode(obj)).encode()
    return await asyncio.to_thread(make)


async def loads(data: bytes) -> Any:
    """A partial from its JSON; a big one parsed on a thread, a string at a time (as dumps)."""
    if len(data) < BIG_JSON:
        return json.loads(data)

    def parse() -> Any:
        dec = json.JSONDecoder()
        # JSONDecoder sets scan_once in __init__; typeshed's stub does not declare it
        dec.scan_once = json.scanner.py_make_scanner(dec)  # type: ignore[attr-defined]
        return dec.decode(data.decode())
    return await asyncio.to_thread(parse)


def rough_size(p: Any) -> int:
    """The bytes of content a partial carries, roughly (what its JSON will mostly be)."""
    if not isinstance(p, dict):
        return 0
    n = sum(len(v) if isinstance(v, str) else len(v.get("content", ""))
            for v in p.get("parts", {}).values())
    n += sum(len(g.get("content", "")) for g in p.get("groups", []))
    n += sum(len(v) if isinstance(v, str) else 64 for v in p.get("values", []))
    return n + 64 * (len(p.get("nodes", [])) + len(p.get("names", {})) + len(p.get("errors", {})))


Rewrite = Callable[[Query, str], Awaitable[tuple[Query, str]]]


class GreadFile(Inode):
    """``rewrite`` may turn a request's path into the nodes' own (a view's file: the query
    narrowed to the nodes that have it, and their path), before the request is checked."""

    def __init__(self, s: QueryService, q: Query, rewrite: Rewrite | None = None) -> None:
        super().__init__("gread", 0o600)
        self.s, self.q, self.rewrite = s, q, rewrite

    def open(self, mode: int) -> Handle:
        return GreadHandle(self)


class GreadHandle(Handle):
    node: GreadFile

    def __init__(self, node: GreadFile) -> None:
        super().__init__(node)
        self.request = b""
        self.answer: bytes | None = None

    def write(self, offset: int, data: bytes) -> int:
        if len(self.request) + len(data) > MAX_REQUEST:  # else any writer could fill our memory
            self.request = b""
            raise NinepError(f"gread: a request is at most {MAX_REQUEST >> 10} KiB of JSON "
                             "(a path, a kind, a pattern)", errno.EFBIG)
        self.request += data
        self.answer = None
        return len(data)

    def read(self, offset: int, count: int) -> Any:
        if self.answer is not None:
            return self.answer[offset:offset + count]
        return self._answer(offset, count)

    async def _answer(self, offset: int, count: int) -> bytes:
        try:
            req = json.loads(self.request or b"null")
        except ValueError as e:
            raise NinepError(f"gread: the request is not JSON: {e}") from None
        q = self.node.q
        if self.node.rewrite is not None and isinstance(req, dict) and \
                isinstance(req.get("path"), str):
            q, req["path"] = await self.node.rewrite(q, req["path"])
        req = check_request(req)
        self.answer = await dumps(await partial(self.node.s, q, req))
        return self.answer[offset:offset + count]
