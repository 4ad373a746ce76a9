"""Query paths: the cluster filtered by path, and commanded and read as a whole (SPEC.md §7).

``/csrv/query/<pred>/<pred>/…/`` is a directory whose entries are the nodes of this node's subtree
that match every predicate (``node/attrs.py``'s language: ``arch=x86_64/mem>=4G``), each leading
to that node's ``/csrv``. Predicates on ``user``, ``state``, ``command`` or ``session`` select
sessions instead: a node is listed when some session of its own matches. Evaluation is pushed
down the tree: a node answers for itself and asks each child for the same query path, in
parallel, and merges; so the answer costs one round trip per level. In a query directory:

- ``status``: one line per match — a node's status line, or ``NODE ID STATE user=… command=…``
  for a session;
- ``ctl``: a command written there goes to the ``ctl`` of every matching session, everywhere, in
  parallel (``echo kill > /csrv/query/user=alice/ctl``); reading it gives the aggregated result:
  ``ok N`` then one ``failed NODE/ID: why`` line per failure; the write itself fails, naming
  the failures, when any session failed;
- ``clone``: a session whose ``res`` draws only from the matching nodes;
- ``gread``: a group read, reduced at every level (``group/gread.py``);
- ``follow/PATH``, ``pcp/PATH``, ``merge/PATH``, ``deepmerge/PATH``: the parallel tools' views
  (``group/views.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
from typing import TYPE_CHECKING, Any

from ..ninep.client import File
from ..ninep.constants import ORDWR, OREAD
from ..ninep.ctl import excerpt
from ..ninep.errors import Enotfound, NinepError
from ..ninep.maybe import is_awaitable
from ..ninep.synthetic import BytesHandle, Dir, GeneratedFile, Handle, Node
from ..node.attrs import PRED, Filter, format_attrs, parse_status_line
from ..node.session_files import SessionCtl
from ..tree.remote import Listed

if TYPE_CHECKING:
    from ..tree.daemon import Daemon
    from ..tree.registry import Child

log = logging.getLogger("brasil.query")

SESSION_KEYS = {"user", "state", "command", "session"}
FILES = ("status", "ctl", "clone", "gread", "follow", "pcp", "merge", "deepmerge")
CHILD_TIMEOUT = 30.0
FORMS = ("predicates are KEY=VALUE, KEY!=VALUE, KEY>=N, KEY<=N, KEY>N or KEY<N, joined by '/' "
         "(name=n[1-3], arch=x86_64/mem>=4G)")


class Query:
    """A parsed query path: its node predicates and its session predicates."""

    def __init__(self, text: str) -> None:
        self.text = text
        f = Filter.parse(text)
        self.nodes = Filter(p for p in f.preds if p.key not in SESSION_KEYS)
        self.sessions = Filter(p for p in f.preds if p.key in SESSION_KEYS)

    @property
    def parts(self) -> list[str]:
        return [p for p in self.text.split("/") if p]

    def __str__(self) -> str:
        return self.text


class QueryService:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.node = daemon.node
        self.last: dict[str, str] = {}  # the last aggregated ctl result, by query

    # ---- here ----

    def sessions(self, q: Query) -> list[Any]:
        """This node's sessions a query selects (those made for a neighbour are its origin's)."""
        if not q.sessions or not q.nodes.matches(self.node.attrs()):
            return []
        return [s for s in list(self.node.sessions.values())
                if s.came_from is None and q.sessions.matches(s.attrs())]

    def matches_here(self, q: Query) -> bool:
        if not q.nodes.matches(self.node.attrs()):
            return False
        return not q.sessions or bool(self.sessions(q))

    def known(self) -> set[str]:
        return self.node.known_attrs() | SESSION_KEYS

    # ---- the children ----

    def children(self) -> list[Child]:
        return [c for c in self.daemon.children.by_name.values() if not c.gone]

    def may_match(self, child: Child, q: Query) -> bool:
        """Whether the child's subtree could hold a match (from its last status report: a
        subtree whose report says no node matches is not asked at all)."""
        if not child.status:
            return True
        return any(q.nodes.matches(parse_status_line(ln)) for ln in child.status)

    def child_holding(self, name: str) -> Child | None:
        for c in self.children():
            if any(ln.split()[:1] == [name] for ln in c.status):
                return c
        return None

    async def ask(self, child: Child, q: Query, *names: str) -> Any:
        """The child's node at ``query/<q>/<names…>``, through its mount."""
        qids, node = await asyncio.wait_for(
            child.mount.walk_path(["query", *q.parts, *names]), CHILD_TIMEOUT)
        if node is None:
            raise NinepError(f"{child.name}: {'/'.join(['query', *q.parts, *names])}: "
                             "file does not exist", errno.ENOENT)
        return node


class QueryDir(Dir):
    def __init__(self, service: QueryService, q: Query) -> None:
        super().__init__(q.parts[-1] if q.parts else "query", 0o555)
        self.service, self.q = service, q

    def walk(self, name: str) -> Any:
        s = self.service
        m = PRED.match(name)
        if m and m.group(2) in ("=", "!=", "<", ">") and m.group(3).startswith("="):
            key, op, value = m.group(1), m.group(2), m.group(3)[1:]
            fix = {"=": "=", "!=": "!=", "<": "<=", ">": ">="}[op]
            raise NinepError(f"{name!r}: not a predicate: one '=' compares ({key}{fix}{value}); "
                             f"{FORMS}", errno.EINVAL)
        if m:
            q = Query(f"{self.q.text}/{name}" if self.q.text else name)
            Filter.parse(name, s.known())  # an unknown attribute: said here, clearly
            return self.adopt(QueryDir(s, q))
        if name in FILES:
            return self.adopt(make_file(name, s, self.q))
        if name == s.node.name:
            if not s.matches_here(self.q):
                raise NinepError(*Enotfound)
            return s.node.csrv
        child = s.child_holding(name)
        if child is None and (name in s.known() or any(ch in name for ch in "=<>!")):
            raise NinepError(f"{name!r} is not a predicate (nor a file here, nor a node); "
                             f"{FORMS}", errno.EINVAL)
        if child is None or not s.may_match(child, self.q):
            raise NinepError(*Enotfound)
        return self._through(child, name)

    async def _through(self, child: Child, name: str) -> Node:
        node = await self.service.ask(child, self.q, name)
        node.parent = self
        return node  # type: ignore[no-any-return]

    def children(self) -> Any:
        return self._children()

    async def _children(self) -> list[Node]:
        s = self.service
        out: list[Node] = [self.adopt(make_file(n, s, self.q)) for n in FILES]
        if s.matches_here(self.q):  # this node: an entry named after it, leading to its /csrv
            out.append(Listed(dataclasses.replace(s.node.csrv.stat(), name=s.node.name)))

        async def listing(c: Child) -> list[Node]:
            try:
                d = await s.ask(c, self.q)
                kids = d.children()
                kids = await kids if is_awaitable(kids) else kids
                return [k for k in kids if k.name not in FILES]
            except (TimeoutError, NinepError, ConnectionError) as e:
                log.info("query %s: child %s: %s", self.q, c.name, e)
                return []
        for kids in await asyncio.gather(*(listing(c) for c in s.children()
                                           if s.may_match(c, self.q))):
            out += kids
        return out


def make_file(name: str, s: QueryService, q: Query) -> Node:
    from . import gread, views
    if name == "status":
        node: Node = GeneratedFile(lambda: status_text(s, q))
    elif name == "ctl":
        node = QueryCtl(s, q)
    elif name == "clone":
        node = QueryClone(s, q)
    elif name == "gread":
        node = gread.GreadFile(s, q)
    else:
        node = views.make_view(name, s, q)
    node.name = name
    return node


# ---- status ----

async def status_text(s: QueryService, q: Query) -> str:
    lines: list[str] = []
    if q.sessions:
        for sess in s.sessions(q):
            a = sess.attrs()
            lines.append(f"{s.node.name} {sess.path} {a['state']} "
                         f"{format_attrs({k: v for k, v in a.items() if k != 'state'})}")
    elif s.matches_here(q):
        lines.append(s.node.status_line())

    async def child_lines(c: Child) -> list[str]:
        try:
            return (await exchange(await s.ask(c, q, "status"))).decode().splitlines()
        except (TimeoutError, NinepError, ConnectionError) as e:
            return [f"{c.name} lost: {e}"]
    for more in await asyncio.gather(*(child_lines(c) for c in s.children()
                                       if s.may_match(c, q))):
        lines += more
    return "".join(ln + "\n" for ln in lines)


async def exchange(node: Node, request: bytes | None = None, read_anyway: bool = False) -> bytes:
    """Open ``node`` (here, or a child's through its mount), write ``request`` if any, read all
    of the answer, close: how a node asks its children for their part. With ``read_anyway``,
    a write that fails is answered by reading all the same (a ctl's result says what failed)."""
    h = node.open(OREAD if request is None else ORDWR)
    h = await h if is_awaitable(h) else h
    chunks, at = [], 0
    try:
        if request is not None:
            try:
                w = h.write(0, request)
                if is_awaitable(w):
                    await w
            except NinepError:
                if not read_anyway:
                    raise
        while True:
            chunk = h.read(at, 1 << 20)
            chunk = await chunk if is_awaitable(chunk) else chunk
            if not chunk:
                break
            chunks.append(chunk)
            at += len(chunk)
    finally:
        r = h.clunk()
        if is_awaitable(r):
            asyncio.ensure_future(r)
    return b"".join(chunks)


# ---- aggregated control ----

class QueryCtl(Node):
    def __init__(self, s: QueryService, q: Query) -> None:
        super().__init__("ctl", 0o600)
        self.s, self.q = s, q

    def open(self, mode: int) -> Handle:
        return QueryCtlHandle(self)


class QueryCtlHandle(Handle):
    node: QueryCtl

    def __init__(self, node: QueryCtl) -> None:
        super().__init__(node)
        self.result: bytes | None = None

    def read(self, offset: int, count: int) -> bytes:
        text = self.result if self.result is not None else \
            self.node.s.last.get(self.node.q.text, "ok 0\n").encode()
        return text[offset:offset + count]

    def write(self, offset: int, data: bytes) -> Any:
        return self._write(data)

    async def _write(self, data: bytes) -> int:
        try:
            lines = [ln.strip() for ln in data.decode().splitlines() if ln.strip()]
        except UnicodeDecodeError:
            raise NinepError("ctl commands must be UTF-8 text", errno.EINVAL) from None
        ok, failed = 0, []
        for line in lines:
            k, f = await control(self.node.s, self.node.q, line)
            ok, failed = ok + k, failed + f
        text = f"ok {ok}\n" + "".join(f"failed {f}\n" for f in failed)
        self.result = text.encode()
        self.node.s.last[self.node.q.text] = text
        if failed:  # the write fails, saying why; reading the file still gives the whole result
            raise NinepError(excerpt(f"failed on {len(failed)} session(s), ok on {ok}: "
                                     + "; ".join(failed), 1000), errno.EIO)
        return len(data)


async def control(s: QueryService, q: Query, line: str) -> tuple[int, list[str]]:
    """``line`` to every matching session of the subtree: (successes, failures)."""
    ok, failed = 0, []
    for sess in s.sessions(q) if q.sessions else [x for x in s.node.sessions.values()
                                                   if x.came_from is None and
                                                   q.nodes.matches(s.node.attrs())]:
        try:
            r = SessionCtl(sess).execute(line)
            if is_awaitable(r):
                await r
            ok += 1
        except NinepError as e:
            failed.append(f"{s.node.name}/{sess.path}: {excerpt(e.message, 200)}")

    async def child(c: Child) -> tuple[int, list[str]]:
        try:
            text = await exchange(await s.ask(c, q, "ctl"), (line + "\n").encode(),
                                  read_anyway=True)
        except (TimeoutError, NinepError, ConnectionError) as e:
            return 0, [f"{c.name}: lost ({e})"]
        k, more = 0, []
        for ln in text.decode().splitlines():
            if ln.startswith("ok "):
                k = int(ln.split()[1])
            elif ln.startswith("failed "):
                more.append(ln[7:])
        return k, more
    for k, more in await asyncio.gather(*(child(c) for c in s.children()
                                          if s.may_match(c, q))):
        ok += k
        failed += more
    return ok, failed


# ---- clone ----

class QueryClone(Node):
    """A session whose reservations draw only from the query's nodes."""

    def __init__(self, s: QueryService, q: Query) -> None:
        super().__init__("clone", 0o444)
        self.s, self.q = s, q

    def open(self, mode: int) -> Handle:
        if self.q.sessions:
            raise NinepError("clone: a query of sessions selects no nodes to reserve on; use "
                             "node attributes (arch=…, mem>=…, name=…)", errno.EINVAL)
        session = self.s.node.new_session()
        session.default_where = self.q.nodes
        return BytesHandle(self, f"{session.path}\n".encode())


def serve_queries(daemon: Daemon) -> Node:
    """A daemon's ``/csrv/query``, for the composition (``cli/compose.py``) to mount."""
    return QueryDir(QueryService(daemon), Query(""))


__all__ = ["Query", "QueryService", "serve_queries", "File"]
