"""FiNAL views (TBON-FS's File Namespace Aggregation Language): the language, and the view it
makes, with no I/O.

A view is a small text, one operator a line, building a namespace over the nodes a query
selects (docs/reference.md, "Views"). Each line sees only what the lines above it made, so a
view is a tree at every step (a move takes a subtree out before it puts it back; an insert adds
a fresh one): it cannot hold a cycle, and resolving a name in it costs at most its depth.

The view is a tree of :class:`VDir`. A VDir may stand on a *base*, a place in the nodes'
namespaces (:class:`Ref`: a :class:`Source` — ``merge``, ``deepmerge``, ``each`` or ``node`` —
and the names walked inside it), whose names it shows, less those it hides (``remove``'s globs,
and names moved or replaced away), and over which its own *entries* (what ``insert``, ``merge
… at``, ``replace`` and ``move`` put there) take precedence. Editing a name that only the base
has makes an entry for it (an overlay on ``Ref.child``), so that every operator works the same
on names the lines made and on names the nodes have. Serving a view (``group/viewdir.py``)
asks the nodes, through the merge views of ``group/views.py``; nothing here does.

Sources name paths relative to each node's ``local/`` and only those a group read may read
(``fanout.readable``): ``fs/…``, ``status``, ``attrs``, ``metrics/now``, ``metrics/row``. A
view can therefore not name a view (itself or another), a session, or a file that acts when
opened, and never a host path: ``fs/`` resolves what is under it inside the export.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from ..ninep.errors import NinepError
from ..node.attrs import glob
from .fanout import check_path, readable

OPERATORS = ("merge", "deepmerge", "insert", "replace", "remove", "move")
SOURCES = ("each", "node", "merge", "deepmerge")
MAX_TEXT = 16 << 10  # bytes of a view's text
MAX_LINES = 256  # lines with an operator on them
MAX_DEPTH = 16  # names in one path (of the view or of a source)
MAX_NAME = 255  # bytes of one name
MAX_WORDS = 8  # words on one line (the longest form has 6)
MAX_VIEWS = 64  # views defined at one daemon

FORMS = {
    "merge": "merge PATH [at VPATH]",
    "deepmerge": "deepmerge PATH [at VPATH]",
    "insert": "insert SOURCE at VPATH",
    "replace": "replace VPATH with SOURCE",
    "remove": "remove GLOB [in VPATH]",
    "move": "move VPATH to VPATH",
}
SOURCE_FORMS = "each PATH, node NAME PATH, merge PATH or deepmerge PATH"


class ViewError(NinepError):
    """A view's text is wrong: the message names the line and says what to write instead."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"view line {line}: {message}" if line else f"view: {message}",
                         errno.EINVAL)
        self.line = line


@dataclass(frozen=True)
class Source:
    """A place in the nodes' namespaces: ``kind`` one of :data:`SOURCES`, ``path`` relative to
    each node's ``local/``, ``node`` the one node of a ``node`` source."""

    kind: str
    path: str
    node: str = ""

    def __str__(self) -> str:
        return f"node {self.node} {self.path}" if self.kind == "node" else \
            f"{self.kind} {self.path}"


@dataclass(frozen=True)
class Ref:
    """``rest``, walked from ``source``: a name the nodes have, beneath a source."""

    source: Source
    rest: tuple[str, ...] = ()

    def child(self, name: str) -> Ref:
        return Ref(self.source, (*self.rest, name))


@dataclass
class Entry:
    """A name a line put in a directory. ``conditional``: shown only where the directory's base
    has the name (``replace`` changes a name's content; it never adds one)."""

    dir: VDir
    line: int
    conditional: bool = False


@dataclass
class VDir:
    base: Ref | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    globs: list[tuple[str, Any]] = field(default_factory=list)  # hidden base names (RE2)
    gone: set[str] = field(default_factory=set)  # base names moved or replaced away

    @property
    def plain(self) -> bool:
        """Nothing changed in it: its base shown as it is (a file stays a file)."""
        return not (self.entries or self.globs or self.gone)

    def hides(self, name: str) -> bool:
        return name in self.gone or any(rx.fullmatch(name.encode()) is not None
                                        for _, rx in self.globs)

    def step(self, name: str) -> Entry | Ref | None:
        """What ``name`` is here: a line's entry, a base name (not hidden), or nothing. The one
        rule for every walk of a view, serving it or locating a group read in it."""
        e = self.entries.get(name)
        if e is not None:
            return e
        if self.base is None or self.hides(name):
            return None
        return self.base.child(name)


@dataclass
class View:
    root: VDir
    text: str


def parse(text: str) -> View:
    """A view from its text, or :class:`ViewError` naming the first wrong line."""
    p = Parser()
    p.feed(text.encode())
    return p.finish()


class Parser:
    """A view's text read as it comes (a write at a time): each whole line is checked as soon
    as it arrives, so a wrong line is said at the write that brought it, and the work is linear
    in the text however it is cut."""

    def __init__(self) -> None:
        self.builder = Builder()
        self.size = 0
        self.number = 0  # lines read
        self.count = 0  # operator lines
        self.pending = bytearray()  # a line not ended yet
        self.chunks: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_TEXT:
            raise ViewError(0, f"the text is over the limit of {MAX_TEXT >> 10} KiB; split it "
                               "into several views")
        self.chunks.append(data)
        last = data.rfind(b"\n")
        if last < 0:
            self.pending += data
            return
        self.pending += data[:last]
        lines = bytes(self.pending).split(b"\n")
        self.pending = bytearray(data[last + 1:])
        for raw in lines:
            self.line(raw)

    def line(self, raw: bytes) -> None:
        self.number += 1
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise ViewError(self.number, "not UTF-8 text") from None
        words = text.split("#", 1)[0].split()
        if not words:
            return
        self.count += 1
        if self.count > MAX_LINES:
            raise ViewError(self.number, f"a view has at most {MAX_LINES} operator lines; split "
                                         "it into several views")
        self.builder.line(self.number, words)

    def finish(self) -> View:
        if self.pending:
            self.line(bytes(self.pending))
            self.pending = bytearray()
        text = b"".join(self.chunks)
        return View(self.builder.root, text.decode(errors="replace"))


class Builder:
    """The view as the lines so far made it, and each operator's edit of it."""

    def __init__(self) -> None:
        self.root = VDir()
        self.n = 0

    def fail(self, message: str) -> ViewError:
        return ViewError(self.n, message)

    def line(self, n: int, words: list[str]) -> None:
        self.n = n
        op, args = words[0], words[1:]
        if op not in OPERATORS:
            raise self.fail(f"unknown operator {op[:40]!r}; operators are "
                            f"{', '.join(OPERATORS)}")
        if len(words) > MAX_WORDS:
            raise self.fail(f"too many words; {op}'s form is {FORMS[op]}")
        getattr(self, f"op_{op}")(op, args)

    # ---- the words of a line ----

    def form(self, op: str, args: list[str], shapes: tuple[tuple[str | None, ...], ...]
             ) -> list[str]:
        """``args`` read against the forms ``shapes`` (None: any word; a string: that keyword;
        a trailing optional part is a second shape): the non-keyword words, or an error that
        gives the operator's form."""
        for shape in shapes:
            if len(shape) == len(args) and all(s is None or s == a for s, a in zip(shape, args)):
                return [a for s, a in zip(shape, args) if s is None]
        raise self.fail(f"{op} takes {FORMS[op]}; got {' '.join([op, *args])[:120]!r}")

    def vpath(self, text: str) -> tuple[str, ...]:
        """A path in the view; ``.`` is its top."""
        if text.startswith("/"):
            raise self.fail(f"{text[:80]!r}: a view path is relative to the view's top (. is "
                            "the top itself)")
        parts = tuple(p for p in text.split("/") if p and p != ".")
        if ".." in parts:
            raise self.fail(f"{text[:80]!r}: a view path may not hold '..'")
        self.check_names(text, parts)
        return parts

    def check_names(self, text: str, parts: tuple[str, ...]) -> None:
        if len(parts) > MAX_DEPTH:
            raise self.fail(f"{text[:80]!r} is {len(parts)} names deep; a path is at most "
                            f"{MAX_DEPTH} deep")
        for p in parts:
            if len(p.encode()) > MAX_NAME or "\0" in p:
                raise self.fail(f"{p[:40]!r}: a name is at most {MAX_NAME} bytes, with no NUL")

    def path(self, text: str) -> str:
        """A path on the nodes (relative to each one's local/), one a view may read."""
        if text.startswith("/"):
            raise self.fail(f"{text[:80]!r} is an absolute path; a source is relative to each "
                            "node's local/: fs/… is its export (serve --export)")
        parts = [p for p in text.split("/") if p and p != "."]
        if ".." in parts:
            raise self.fail(f"{text[:80]!r}: a source may not climb with '..'; it is relative "
                            "to each node's local/ (fs/…, status, attrs)")
        if not parts:
            raise self.fail(f"{text!r} names no file; a source is a path on the nodes (fs/…)")
        self.check_names(text, tuple(parts))
        parts = check_path(text)
        if not readable(parts):
            raise self.fail(f"{text[:80]!r} is not a source: a view reads the nodes' fs/… (their "
                            "export), status, attrs, metrics/now or metrics/row; never a view, a "
                            "session, or a file that acts when opened (clone, ctl)")
        return "/".join(parts)

    def source(self, words: list[str]) -> Source:
        if len(words) == 2 and words[0] in ("each", "merge", "deepmerge"):
            return Source(words[0], self.path(words[1]))
        if len(words) == 3 and words[0] == "node":
            if len(words[1].encode()) > MAX_NAME:
                raise self.fail("a node's name is at most 255 bytes")
            return Source("node", self.path(words[2]), words[1])
        raise self.fail(f"a source is {SOURCE_FORMS}; got {' '.join(words)[:120]!r}")

    # ---- walking the view as built so far ----

    def find(self, parts: tuple[str, ...], make: bool) -> VDir:
        """The directory at ``parts``; with ``make``, what is missing on the way is made (a
        name only the base has becomes an entry: an overlay on it, shown from now on)."""
        d = self.root
        for i, name in enumerate(parts):
            s = d.step(name)
            if isinstance(s, Entry):
                if make:
                    s.conditional = False
                d = s.dir
                continue
            if s is None and not make:
                raise self.fail(f"{'/'.join(parts[:i + 1])!r} is not in the view (no line above "
                                "made it, and no merge above shows it)")
            e = Entry(VDir(base=s), self.n, conditional=not make)
            d.entries[name] = e
            d = e.dir
        return d

    def split(self, text: str) -> tuple[tuple[str, ...], str]:
        parts = self.vpath(text)
        if not parts:
            raise self.fail("the view's top (.) has no name to change; name a path in it")
        return parts[:-1], parts[-1]

    # ---- the operators ----

    def op_merge(self, op: str, args: list[str]) -> None:
        words = self.form(op, args, ((None,), (None, "at", None)))
        src = Source(op, self.path(words[0]))
        at = self.vpath(words[1]) if len(words) > 1 else ()
        d = self.root
        if at:  # a directory a line made takes the merge; any other name is made for it
            up = self.find(at[:-1], make=True)
            e = up.entries.get(at[-1])
            if e is None:
                e = up.entries[at[-1]] = Entry(VDir(), self.n)
            e.conditional = False
            d = e.dir
        if d.base is not None:
            where = words[1] if len(words) > 1 else "."
            raise self.fail(f"{where!r} shows {d.base.source} already; merge into a new name "
                            f"({op} {words[0]} at NAME)")
        d.base = Ref(src)

    op_deepmerge = op_merge

    def op_insert(self, op: str, args: list[str]) -> None:
        if len(args) < 3 or args[-2] != "at":
            raise self.fail(f"insert takes {FORMS['insert']}; a source is {SOURCE_FORMS}")
        src = self.source(args[:-2])
        where, name = self.split(args[-1])
        d = self.find(where, make=True)
        if name in d.entries:
            raise self.fail(f"{args[-1]!r} is in the view already (line {d.entries[name].line}); "
                            "replace it, or remove it first")
        d.entries[name] = Entry(VDir(base=Ref(src)), self.n)

    def op_replace(self, op: str, args: list[str]) -> None:
        if len(args) < 3 or args[1] != "with":
            raise self.fail(f"replace takes {FORMS['replace']}; a source is {SOURCE_FORMS}")
        where, name = self.split(args[0])
        src = self.source(args[2:])
        d = self.find(where, make=False)
        s = d.step(name)
        if s is None:
            raise self.fail(f"{args[0]!r} is not in the view: replace changes what a name "
                            "holds; insert adds a name")
        conditional = s.conditional if isinstance(s, Entry) else True
        d.entries[name] = Entry(VDir(base=Ref(src)), self.n, conditional)

    def op_remove(self, op: str, args: list[str]) -> None:
        words = self.form(op, args, ((None,), (None, "in", None)))
        try:
            rx = glob(words[0])
        except NinepError as e:
            raise self.fail(e.message) from None
        where = self.vpath(words[1]) if len(words) > 1 else ()
        d = self.find(where, make=False)
        hit = [n for n in d.entries if rx.fullmatch(n.encode()) is not None]
        for n in hit:
            del d.entries[n]
        if d.base is None and not hit:
            raise self.fail(f"nothing in {'/'.join(where) or '.'!r} matches {words[0][:80]!r}")
        if d.base is not None:
            d.globs.append((words[0], rx))

    def op_move(self, op: str, args: list[str]) -> None:
        a_text, b_text = self.form(op, args, ((None, "to", None),))
        (a_dir, a_name), (b_dir, b_name) = self.split(a_text), self.split(b_text)
        a, b = (*a_dir, a_name), (*b_dir, b_name)
        if b[:len(a)] == a:
            raise self.fail(f"cannot move {a_text!r} into itself ({b_text!r})")
        d = self.find(a_dir, make=False)
        s = d.step(a_name)
        if s is None:
            raise self.fail(f"{a_text!r} is not in the view")
        moved = d.entries.pop(a_name) if isinstance(s, Entry) else Entry(VDir(base=s), self.n)
        moved.conditional = False  # it stands where it was put, whatever its old directory had
        if d.base is not None:
            d.gone.add(a_name)  # what the base has there moved too
        target = self.find(b_dir, make=True)
        if b_name in target.entries:
            raise self.fail(f"{b_text!r} is in the view already (line "
                            f"{target.entries[b_name].line}); remove it first")
        target.entries[b_name] = moved


def locate_names(view: View, parts: tuple[str, ...]) -> tuple[VDir, tuple[str, ...]]:
    """The deepest directory of the view's own making on the way to ``parts``, and the names
    left after it (walked in its base by whoever asks the nodes). Raises ENOENT for a name
    the view hides or never made."""
    d = view.root
    for i, name in enumerate(parts):
        s = d.step(name)
        if s is None:
            raise NinepError(f"{'/'.join(parts[:i + 1])}: not in the view", errno.ENOENT)
        if isinstance(s, Ref):
            return d, parts[i:]
        d = s.dir
    return d, ()


@dataclass
class Defined:
    view: View
    owner: str  # the 9P user who defined it: only they change or remove it


class ViewStore:
    """The views defined at one daemon, by name: at most :data:`MAX_VIEWS`, each changed or
    removed only by the user who defined it (the name a client attached with)."""

    def __init__(self) -> None:
        self.views: dict[str, Defined] = {}

    def check_writer(self, name: str, user: str) -> None:
        d = self.views.get(name)
        if d is not None and d.owner != user:
            raise NinepError(f"view {name} is {d.owner or 'the daemon owner'}'s: only they can "
                             "change or remove it; define one of your own "
                             "(/csrv/local/views/OTHER)", errno.EACCES)

    def check_room(self, name: str) -> None:
        if name not in self.views and len(self.views) >= MAX_VIEWS:
            raise NinepError(f"{MAX_VIEWS} views are defined here already, the most a daemon "
                             "holds; remove one (rm /csrv/local/views/NAME)", errno.ENOSPC)

    def define(self, name: str, view: View, user: str) -> None:
        self.check_writer(name, user)
        self.check_room(name)
        self.views[name] = Defined(view, user)

    def remove(self, name: str, user: str) -> None:
        self.check_writer(name, user)
        self.views.pop(name, None)
