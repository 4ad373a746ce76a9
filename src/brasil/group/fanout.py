"""The fan-out under every query file: what this node answers itself, and which children it asks.

A query is pushed down the tree: a node answers for itself and asks each child whose subtree may
hold a match for the same query path, in parallel, through the child's mount. Every file of a
query directory (``group/query.py``: status, ctl, listing; ``group/gread.py``; ``group/views.py``)
is made of the pieces here, so the rule for "which children may match" and how a child is asked
live in one place, below all of them: nothing here imports those files back.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, cast

from ..ninep.constants import ORDWR, OREAD
from ..ninep.errors import Enotfound, NinepError
from ..ninep.maybe import Maybe, is_awaitable
from ..ninep.synthetic import Inode
from ..node.attrs import DRIFTING, Filter, parse_status_line

if TYPE_CHECKING:
    from ..node.daemon import Node as Machine
    from ..node.session import Session
    from ..tree.daemon import Daemon
    from ..tree.registry import Child

SESSION_KEYS = {"user", "state", "command", "session"}
CHILD_TIMEOUT = 30.0
LOST = (TimeoutError, NinepError, ConnectionError)  # how asking a child fails
T = TypeVar("T")
CLUNKING: set[asyncio.Future[None]] = set()  # exchanges' clunks under way (kept referenced)


READABLE = (["status"], ["attrs"], ["metrics", "now"], ["metrics", "row"])


def check_path(path: str, empty: bool = False) -> list[str]:
    """A group path's names: relative to each node's ``local/``, never climbing out of it."""
    parts = [p for p in path.split("/") if p and p != "."]  # fs/./etc is fs/etc
    if path.startswith("/") or ".." in parts or (not parts and not empty):
        raise NinepError(f"{path!r}: a group path is relative to each node's local/ (fs/…, "
                         "status) and may not climb out of it")
    return parts


def readable(parts: list[str]) -> bool:
    """Whether a group read, or a view, may read ``local/PARTS`` on every node: the export
    (``fs/…``) and the files that do nothing but give their bytes, never one that acts when
    opened (``clone``, ``ctl``) nor the views (``views/``) or sessions of the node."""
    return parts[:1] == ["fs"] or parts in READABLE


async def settled(x: Maybe[T]) -> T:
    """A handler's answer (``ninep.maybe``): awaited only when it has to wait."""
    return await cast("Awaitable[T]", x) if is_awaitable(x) else cast(T, x)


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
    """One daemon's side of every query: its own matches, and its children to ask."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.node: Machine = daemon.node
        self.last: dict[str, str] = {}  # the last aggregated ctl result, by query

    # ---- here ----

    def sessions(self, q: Query) -> list[Session]:
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
        subtree whose report says no node matches is not asked at all). Load and free memory
        are reported only when they move by a step (tree/beat.py): they are judged where they
        are read, not here."""
        if not child.status:
            return True
        return any(q.nodes.could_match(parse_status_line(ln), DRIFTING) for ln in child.status)

    def matching(self, q: Query) -> list[Child]:
        """The children worth asking about ``q``."""
        return [c for c in self.children() if self.may_match(c, q)]

    async def gather(self, q: Query, each: Callable[[Child], Awaitable[T]],
                     lost: Callable[[Child, Exception], T],
                     errors: tuple[type[Exception], ...] = LOST) -> list[T]:
        """``each`` of the children that may match, in parallel, in their order; a child that
        fails with one of ``errors`` gives ``lost(child, error)`` instead (the rest go on)."""
        async def one(c: Child) -> T:
            try:
                return await each(c)
            except errors as e:
                return lost(c, e)
        return await asyncio.gather(*(one(c) for c in self.matching(q)))

    def child_holding(self, name: str) -> Child | None:
        for c in self.children():
            if any(ln.split()[:1] == [name] for ln in c.status):
                return c
        return None

    async def ask(self, child: Child, q: Query, *names: str) -> Inode:
        """The child's node at ``query/<q>/<names…>``, through its mount."""
        qids, node = await asyncio.wait_for(
            child.mount.walk_path(["query", *q.parts, *names]), CHILD_TIMEOUT)
        if node is None:
            raise NinepError(f"{child.name}: {'/'.join(['query', *q.parts, *names])}: "
                             "file does not exist", errno.ENOENT)
        return node

    def node_csrv(self, q: Query, name: str) -> Maybe[Inode]:
        """The ``/csrv`` of the node ``name`` of this subtree if it matches ``q``: ours, or
        (awaitable) a descendant's through the child holding it."""
        if name == self.node.name:
            if not self.matches_here(q):
                raise NinepError(*Enotfound)
            return self.node.csrv
        child = self.child_holding(name)
        if child is None or not self.may_match(child, q):
            raise NinepError(*Enotfound)
        return self.ask(child, q, name)


async def exchange(node: Inode, request: bytes | None = None, read_anyway: bool = False) -> bytes:
    """Open ``node`` (here, or a child's through its mount), write ``request`` if any, read all
    of the answer, close: how a node asks its children for their part. With ``read_anyway``,
    a write that fails is answered by reading all the same (a ctl's result says what failed)."""
    h = await settled(node.open(OREAD if request is None else ORDWR))
    chunks: list[bytes] = []
    at = 0
    try:
        if request is not None:
            try:
                await settled(h.write(0, request))
            except NinepError:
                if not read_anyway:
                    raise
        while True:
            chunk = await settled(h.read(at, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            at += len(chunk)
    finally:
        r = h.clunk()
        if r is not None and is_awaitable(r):  # not waited for: nobody needs its answer
            task = asyncio.ensure_future(cast("Awaitable[None]", r))
            CLUNKING.add(task)
            task.add_done_callback(CLUNKING.discard)
    return b"".join(chunks)
