"""FiNAL views served: their definitions in ``/csrv/local/views/``, their namespaces in
``/csrv/query/<pred>/view/NAME/``, and group reads of a view's files.

- ``/csrv/local/views/NAME``: the view's text. Writing it (made by create, or opened for
  writing) defines or redefines the view when the file is closed, if every line is right: each
  line is checked as its write arrives (``final.Parser``), so a wrong one fails that write,
  naming its line, and the view stays as it was. Reading gives the text back; removing the file
  removes the view. Only the user who defined a view (the name the client attached with) may
  change or remove it; anyone may read or use it.
- ``/csrv/query/<pred>/view/NAME/``: the view over the nodes ``<pred>`` selects. A directory of
  the view is an :class:`Overlay`: its base (a merge of the nodes' directories, ``group/views``'
  MergeDir, one algorithm for merge/ and for views) less what it hides, and over it the entries
  the lines made.
- A group read whose path is ``view/NAME/PATH`` (:func:`group_target`) reads the nodes' own
  files that the view shows at PATH: a group (a merged name, ``each``) is each node's file at
  its path; a node's entry is that node's file. The read is then an ordinary one, reduced in
  the tree, over those nodes only: no node needs to know the view.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from typing import Any

from ..ninep.constants import DMDIR, ORDWR, OTRUNC, OWRITE
from ..ninep.errors import Eexist, Enotfound, NinepError
from ..ninep.server import current_user
from ..ninep.synthetic import BytesHandle, Dir, Handle, Inode
from ..tree.proxy import Listed
from .fanout import Query, QueryService, check_path, settled
from .final import Entry, Parser, Ref, Source, VDir, ViewStore, locate_names
from .views import MergeDir, node_path

log = logging.getLogger("brasil.views")


# ---- /csrv/local/views ----

class ViewsDir(Dir):
    """The views defined here: a file each, made by create."""

    def __init__(self, store: ViewStore) -> None:
        super().__init__("views", 0o755)
        self.store = store

    def children(self) -> list[Inode]:
        return [self.adopt(ViewText(self.store, n)) for n in sorted(self.store.views)]

    def walk(self, name: str) -> Inode:
        if name not in self.store.views:
            raise NinepError(*Enotfound)
        return self.adopt(ViewText(self.store, name))

    def create(self, name: str, perm: int, mode: int) -> Inode:
        if perm & DMDIR:
            raise NinepError("views/: a view is a file of text (write its lines into "
                             "/csrv/local/views/NAME); no directories here", errno.EINVAL)
        if name in self.store.views:
            raise NinepError(*Eexist)
        self.store.check_room(name)
        return self.adopt(ViewText(self.store, name))


class ViewText(Inode):
    def __init__(self, store: ViewStore, name: str) -> None:
        super().__init__(name, 0o644)
        self.store = store

    def text(self) -> bytes:
        d = self.store.views.get(self.name)
        return d.view.text.encode() if d is not None else b""

    def length(self) -> int:
        return len(self.text())

    def open(self, mode: int) -> Handle:
        if mode & 3 in (OWRITE, ORDWR) or mode & OTRUNC:
            user = current_user.get()
            self.store.check_writer(self.name, user)
            self.store.check_room(self.name)
            return ViewWriter(self, user)
        return BytesHandle(self, self.text())

    def remove(self) -> None:
        if self.name not in self.store.views:
            raise NinepError(*Enotfound)
        self.store.remove(self.name, current_user.get())


class ViewWriter(Handle):
    """A view's new text, checked line by line as it comes, defined when the file is closed
    (only if every line was right: nothing half-done)."""

    node: ViewText

    def __init__(self, node: ViewText, user: str) -> None:
        super().__init__(node)
        self.user = user
        self.parser = Parser()
        self.failed: NinepError | None = None

    def read(self, offset: int, count: int) -> bytes:
        return self.node.text()[offset:offset + count]

    def write(self, offset: int, data: bytes) -> int:
        if self.failed is not None:
            raise self.failed
        if offset != self.parser.size:
            self.failed = NinepError(f"view {self.node.name}: write its text in order, from the "
                                     "start (the whole text, each time)", errno.EINVAL)
            raise self.failed
        try:
            self.parser.feed(data)
        except NinepError as e:
            self.failed = e
            raise
        return len(data)

    def clunk(self) -> Any:
        if self.failed is not None:
            return None  # said at the write; the view is as it was
        return self._define()

    async def _define(self) -> None:
        view = self.parser.finish()  # the last line, if it had no newline: said here
        self.node.store.define(self.node.name, view, self.user)


def views_dir(store: ViewStore) -> Dir:
    """``/csrv/local/views``, for the composition (``cli/compose.py``) to mount."""
    return ViewsDir(store)


# ---- /csrv/query/<pred>/view ----

class ViewsRoot(Dir):
    """The views defined at this daemon, each over the query's nodes."""

    def __init__(self, s: QueryService, q: Query, store: ViewStore) -> None:
        super().__init__("view", 0o555)
        self.s, self.q, self.store = s, q, store

    def children(self) -> list[Inode]:
        return [self.adopt(Overlay(self.s, self.q, d.view.root, n, None))
                for n, d in sorted(self.store.views.items())]

    def walk(self, name: str) -> Inode:
        d = self.store.views.get(name)
        if d is None:
            raise NinepError(f"no view {name!r} here: define it in /csrv/local/views/{name}",
                             errno.ENOENT)
        return self.adopt(Overlay(self.s, self.q, d.view.root, name, None))


async def source_root(s: QueryService, q: Query, src: Source) -> Inode:
    """Where a source stands: a merged directory, the nodes that have a path, or one node's."""
    head, _, last = src.path.rpartition("/")
    if src.kind in ("merge", "deepmerge"):
        return MergeDir(s, q, src.path, src.kind == "deepmerge", last)
    if src.kind == "each":
        return await settled(MergeDir(s, q, head, False, head).walk(last))
    return await node_path(s, q, src.node, src.path)


async def resolve(s: QueryService, q: Query, ref: Ref, start: Inode | None = None) -> Inode:
    """``ref`` walked from its source (or from ``start``, where it stands already)."""
    d = start if start is not None else await source_root(s, q, ref.source)
    for name in ref.rest if start is None else ref.rest[-1:]:
        if not isinstance(d, Dir):
            raise NinepError(*Enotfound)
        d = await settled(d.walk(name))
    return d


class Overlay(Dir):
    """A directory of a view: its base's names less those it hides, and its entries over them.
    ``key`` is its name in ``up``'s entries (a materialized base name resolves from ``up``'s
    base: one walk, not one from the source)."""

    def __init__(self, s: QueryService, q: Query, vd: VDir, name: str, up: Overlay | None
                 ) -> None:
        super().__init__(name, 0o555)
        self.s, self.q, self.vd, self.up = s, q, vd, up
        self._base: list[Inode | None] = []  # resolved once, when first needed

    async def base(self) -> Inode | None:
        """The base's directory (or file), or None where the nodes have nothing there."""
        if not self._base:
            ref, got = self.vd.base, None
            if ref is not None:
                try:
                    start = None
                    up = self.up
                    if up is not None and up.vd.base is not None and \
                            ref == up.vd.base.child(self.name):
                        start = await up.base()
                        if start is None:
                            raise NinepError(*Enotfound)
                    got = await resolve(self.s, self.q, ref, start)
                except NinepError as e:
                    if e.errno != errno.ENOENT:  # a node lost, say: shown as missing
                        log.info("view %s: %s: %s", self.name, ref.source, e.message)
            self._base.append(got)
        return self._base[0]

    def walk(self, name: str) -> Any:
        return self._walk(name)

    async def _walk(self, name: str) -> Inode:
        s = self.vd.step(name)
        if isinstance(s, Entry):
            return await self.entry(name, s)
        b = await self.base() if s is not None else None
        if not isinstance(b, Dir):
            raise NinepError(*Enotfound)
        child = await settled(b.walk(name))
        child.parent = self
        return child

    async def entry(self, name: str, e: Entry, known: set[str] | None = None) -> Inode:
        """What a line put at ``name``: an overlay, or (a plain graft of a file) the file."""
        if e.conditional:  # replace: only where the base has the name
            if known is None:
                b = await self.base()
                known = set()
                if isinstance(b, Dir):
                    try:
                        await settled(b.walk(name))
                        known = {name}
                    except NinepError:
                        pass
            if name not in known:
                raise NinepError(*Enotfound)
        child = Overlay(self.s, self.q, e.dir, name, self)
        child.parent = self
        if e.dir.base is not None:
            got = await child.base()
            if got is None and not e.dir.entries:
                raise NinepError(*Enotfound)
            if got is not None and not isinstance(got, Dir) and e.dir.plain:
                return self.adopt(Renamed(got, name))
        return child

    def children(self) -> Any:
        return self._children()

    async def _children(self) -> list[Inode]:
        out: list[Inode] = []
        known: set[str] = set()
        b = await self.base()
        if isinstance(b, Dir):
            for k in await settled(b.children()):
                known.add(k.name)
                if k.name not in self.vd.entries and not self.vd.hides(k.name):
                    out.append(k)
        for name, e in self.vd.entries.items():
            try:
                got = await self.entry(name, e, known)
            except NinepError:
                continue  # not there (a node lost, a name the nodes lack): not listed
            out.append(got if isinstance(got, Overlay) else
                       Listed(dataclasses.replace(await settled(got.stat()), name=name)))
        return out


class Renamed(Inode):
    """A node's file grafted under another name: itself, but its stat says the view's name."""

    def __init__(self, inner: Inode, name: str) -> None:
        super().__init__(name, inner.mode)
        self.inner, self.qid = inner, inner.qid

    def stat(self) -> Any:
        return self._stat()

    async def _stat(self) -> Any:
        return dataclasses.replace(await settled(self.inner.stat()), name=self.name)

    def open(self, mode: int) -> Any:
        return self.inner.open(mode)


# ---- group reads of a view's files ----

async def group_target(s: QueryService, store: ViewStore, q: Query, path: str
                       ) -> tuple[Query, str]:
    """A group read's ``view/NAME/PATH`` as the nodes' own files: the query narrowed to the
    nodes that have it, and its path on each. Any other path is left as it is."""
    parts = check_path(path.partition("?")[0], empty=True)
    if parts[:1] != ["view"]:
        return q, path
    if len(parts) < 3:
        raise NinepError(f"gread: {path}: name a file of a view: view/NAME/PATH", errno.EINVAL)
    d = store.views.get(parts[1])
    if d is None:
        raise NinepError(f"gread: no view {parts[1]!r} here (/csrv/local/views)", errno.ENOENT)
    vd, rest = locate_names(d.view, tuple(parts[2:]))
    if vd.base is None:
        raise NinepError(f"gread: {path} is a directory the view made; a group read reads the "
                         "nodes' files: name a group (a merged name, whose entries are nodes)",
                         errno.EISDIR)
    if not rest and vd.entries:
        raise NinepError(f"gread: {path} holds names the view added; name one of them",
                         errno.EISDIR)
    where, nodes = await source_files(s, q, vd.base.source, (*vd.base.rest, *rest), path)
    if not rest:  # the group itself: the nodes the view hides in it are not read
        nodes = [n for n in nodes if not vd.hides(n)]
    if not nodes:
        raise NinepError(f"gread: {path}: no node has it", errno.ENOENT)
    return Query("/".join([*q.parts, "name=" + ",".join(sorted(nodes))])), where


async def source_files(s: QueryService, q: Query, src: Source, names: tuple[str, ...],
                       path: str) -> tuple[str, list[str]]:
    """``names`` walked in a source, as a path on the nodes and the nodes to read it on."""
    if src.kind == "node":
        return "/".join([src.path, *names]), [src.node]
    at, names = src.path, names
    if src.kind == "each":  # each P: the nodes that have P, as a merge of its directory has it
        at, _, last = src.path.rpartition("/")
        names = (last, *names)
    while True:
        if not names:
            raise NinepError(f"gread: {path} is a merged directory; name a file in it",
                             errno.EISDIR)
        have = await MergeDir(s, q, at, False, "").names()
        if names[0] not in have:
            raise NinepError(f"gread: {path}: no node has it", errno.ENOENT)
        nodes, is_dir = have[names[0]]
        at = f"{at}/{names[0]}" if at else names[0]
        if not (src.kind == "deepmerge" and is_dir):  # a group: one name, an entry per node
            more = names[1:]
            if not more:
                return at, list(nodes)
            if more[0] not in nodes:
                raise NinepError(f"gread: {path}: {more[0]} does not have it", errno.ENOENT)
            return "/".join([at, *more[1:]]), [more[0]]
        names = names[1:]
