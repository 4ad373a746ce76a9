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
  (``group/views.py``);
- ``view/NAME/``: the FiNAL view NAME, defined at this daemon, over the matching nodes
  (``group/viewdir.py``).

This module is the directory on top; the fan-out it and the files share (which children to ask,
asking them) is ``group/fanout.py``, below it. :func:`serve_queries` is its one mount point.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..client.group import FILES, control_result
from ..ninep.ctl import excerpt
from ..ninep.errors import NinepError
from ..ninep.synthetic import BytesHandle, Dir, GeneratedFile, Handle, Inode
from ..node.attrs import PRED, Filter, format_attrs
from ..node.session_files import SessionCtl
from ..tree.proxy import Listed
from . import gread, views
from .fanout import Query, QueryService, exchange, settled
from .final import ViewStore
from .viewdir import ViewsRoot, group_target

if TYPE_CHECKING:
    from ..tree.daemon import Daemon
    from ..tree.registry import Child

log = logging.getLogger("brasil.query")

FORMS = ("predicates are KEY=VALUE, KEY!=VALUE, KEY>=N, KEY<=N, KEY>N or KEY<N, joined by '/' "
         "(name=n[1-3], arch=x86_64/mem>=4G)")


class QueryDir(Dir):
    def __init__(self, service: QueryService, q: Query, views: ViewStore) -> None:
        super().__init__(q.parts[-1] if q.parts else "query", 0o555)
        self.service, self.q, self.views = service, q, views

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
            return self.adopt(QueryDir(s, q, self.views))
        if name in FILES:
            return self.adopt(make_file(name, s, self.q, self.views))
        if name != s.node.name and s.child_holding(name) is None and (
                name in s.known() or any(ch in name for ch in "=<>!")):
            raise NinepError(f"{name!r} is not a predicate (nor a file here, nor a node); "
                             f"{FORMS}", errno.EINVAL)
        node = s.node_csrv(self.q, name)
        return node if isinstance(node, Inode) else self._adopted(node)

    async def _adopted(self, node: Awaitable[Inode]) -> Inode:
        got = await node  # a descendant's /csrv, through the child holding it
        got.parent = self
        return got

    def children(self) -> Any:
        return self._children()

    async def _children(self) -> list[Inode]:
        s = self.service
        out: list[Inode] = [self.adopt(make_file(n, s, self.q, self.views)) for n in FILES]
        if s.matches_here(self.q):  # this node: an entry named after it, leading to its /csrv
            out.append(Listed(dataclasses.replace(await settled(s.node.csrv.stat()),
                                                  name=s.node.name)))

        async def listing(c: Child) -> list[Inode]:
            d = await s.ask(c, self.q)
            kids = list(await settled(d.children())) if isinstance(d, Dir) else []
            return [k for k in kids if k.name not in FILES]

        def lost(c: Child, e: Exception) -> list[Inode]:
            log.info("query %s: child %s: %s", self.q, c.name, e)
            return []
        for kids in await s.gather(self.q, listing, lost):
            out += kids
        return out


def make_file(name: str, s: QueryService, q: Query, store: ViewStore) -> Inode:
    if name == "status":
        node: Inode = GeneratedFile(lambda: status_text(s, q))
    elif name == "ctl":
        node = QueryCtl(s, q)
    elif name == "clone":
        node = QueryClone(s, q)
    elif name == "gread":
        node = gread.GreadFile(s, q, lambda q, path: group_target(s, store, q, path))
    elif name == "view":
        node = ViewsRoot(s, q, store)
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
        return (await exchange(await s.ask(c, q, "status"))).decode().splitlines()

    def lost(c: Child, e: Exception) -> list[str]:
        return [f"{c.name} lost: {e}"]
    for more in await s.gather(q, child_lines, lost):
        lines += more
    return "".join(ln + "\n" for ln in lines)


# ---- aggregated control ----

class QueryCtl(Inode):
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
        ok, failed = 0, list[str]()
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
            await settled(SessionCtl(sess).execute(line))
            ok += 1
        except NinepError as e:
            failed.append(f"{s.node.name}/{sess.path}: {excerpt(e.message, 200)}")

    async def child(c: Child) -> tuple[int, list[str]]:
        text = await exchange(await s.ask(c, q, "ctl"), (line + "\n").encode(), read_anyway=True)
        return control_result(text.decode())

    def lost(c: Child, e: Exception) -> tuple[int, list[str]]:
        return 0, [f"{c.name}: lost ({e})"]
    for k, more in await s.gather(q, child, lost):
        ok += k
        failed += more
    return ok, failed


# ---- clone ----

class QueryClone(Inode):
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


def serve_queries(daemon: Daemon, views: ViewStore) -> Inode:
    """A daemon's ``/csrv/query``, for the composition (``cli/compose.py``) to mount; ``views``
    are the views defined at the daemon (``/csrv/local/views``), served under ``view/``."""
    return QueryDir(QueryService(daemon), Query(""), views)


__all__ = ["Query", "QueryService", "serve_queries"]
