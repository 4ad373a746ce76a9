"""The heartbeat's report, sans-IO: a subtree's status lines, sent up as what changed.

A parent reads its child's ``heartbeat`` file every second. Sending the whole subtree each time
(one status line per node, as ``subtree`` does) made the root receive O(N) bytes a second: 73
nodes cost it twice what 9 did. Each node instead keeps a :class:`Ledger` of its subtree's lines
where every change is numbered, and each open of ``heartbeat`` is sent, from its first read, the
whole ledger, then at each read only the lines that changed and the names that left since its
previous read. An idle subtree costs its parent one short read a second, whatever its size.

What counts as a change: a line's steady words (slots, free slots, sessions, labels) changing,
or a drifting value (load, free memory) moving by more than a step (:func:`moved`). Otherwise the
load of every node would change the line of every node every second and the report would be the
whole subtree again. Those two values are therefore as the node last reported them, up to a
step off: reservations plan with them (and the node itself judges its own `where` afresh), and
query paths do not prune children on them (``Filter.could_match``).

The wire form, one line each: a status line (``NAME SLOTS FREE …``: set NAME's line), ``-NAME``
(NAME has left the subtree), and, first of a whole report, ``*``. Node names never start with
``*`` or ``-``.
"""

from __future__ import annotations

from ..node.attrs import DRIFTING, line_free

WHOLE = "*"
MAX_LEFT = 4096  # names that left, remembered for readers behind; beyond, a behind reader is sent all

LOAD_STEP, LOAD_SHARE = 0.25, 0.1  # load re-sent when it moves by 0.25 + 10 % of its last value
MEM_SHARE = 1 / 32  # free memory, when it moves by 1/32 of the node's memory


class Ledger:
    """Each name's line, every change numbered: what a reader has not seen is what is numbered
    after its last read. Entries are kept in the order of their last change, so a read of the
    changes walks back from the newest only as far as the reader's mark."""

    def __init__(self) -> None:
        self.version = 0
        self._entries: dict[str, tuple[int, str | None]] = {}  # None: the name left
        self._left = 0
        self._floor = 0  # changes at or before this may have been forgotten (names that left)

    def set(self, name: str, line: str) -> None:
        old = self._entries.get(name)
        if old is not None and old[1] == line:
            return
        if old is not None and old[1] is None:
            self._left -= 1
        self._bump(name, line)

    def drop(self, name: str) -> None:
        old = self._entries.get(name)
        if old is None or old[1] is None:
            return
        self._bump(name, None)
        self._left += 1
        if self._left > MAX_LEFT:
            self._forget_left()

    def get(self, name: str) -> str | None:
        e = self._entries.get(name)
        return None if e is None else e[1]

    def lines(self) -> list[str]:
        return [line for _, line in self._entries.values() if line is not None]

    def report(self, seen: int) -> tuple[str, int]:
        """The report for a reader whose last read saw changes up to ``seen`` (-1: none yet),
        and the mark to keep for its next read."""
        if seen < self._floor:
            return "".join(f"{ln}\n" for ln in [WHOLE, *self.lines()]), self.version
        out = []
        for name, (v, line) in reversed(self._entries.items()):
            if v <= seen:
                break
            out.append(f"-{name}\n" if line is None else f"{line}\n")
        out.reverse()
        return "".join(out), self.version

    def _bump(self, name: str, line: str | None) -> None:
        self.version += 1
        self._entries.pop(name, None)  # re-inserted last: the entries stay in change order
        self._entries[name] = (self.version, line)

    def _forget_left(self) -> None:
        for name, (v, line) in list(self._entries.items()):
            if line is None:
                del self._entries[name]
                self._floor = v
                self._left -= 1
                if self._left <= MAX_LEFT // 2:
                    return


class Replica:
    """A child's subtree as its reports told it: the reading end of a :class:`Ledger`."""

    def __init__(self) -> None:
        self.by_name: dict[str, str] = {}
        self._lines: list[str] | None = []
        self.free = 0  # the subtree's free slots, kept as lines change: a reservation plans
        # with it without walking a line per node (O(N) at the root, per res: brasil.sim)

    def _set(self, name: str, line: str | None) -> None:
        old = self.by_name.pop(name, None) if line is None else self.by_name.get(name)
        if old is not None:
            self.free -= line_free(old) or 0
        if line is not None:
            self.by_name[name] = line
            self.free += line_free(line) or 0

    def apply(self, text: str) -> tuple[list[str], list[str]]:
        """Takes one report; returns the names it set and the names that left."""
        rows = [ln for ln in text.splitlines() if ln]
        left: list[str] = []
        if rows[:1] == [WHOLE]:
            rows = rows[1:]
            named = {ln.split(None, 1)[0] for ln in rows if not ln.startswith("-")}
            left = [n for n in self.by_name if n not in named]
            for n in left:
                self._set(n, None)
        changed = []
        for ln in rows:
            if ln.startswith("-"):
                if ln[1:] in self.by_name:
                    self._set(ln[1:], None)
                    left.append(ln[1:])
            else:
                name = ln.split(None, 1)[0]
                self._set(name, ln)
                changed.append(name)
        if changed or left:
            self._lines = None
        return changed, left

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = list(self.by_name.values())
        return self._lines


def moved(old: str | None, new: str) -> bool:
    """Whether a node's status line has changed enough to be reported: any steady word, or a
    drifting value by more than its step."""
    if old is None:
        return True
    if old == new:
        return False
    a, b = old.split(), new.split()
    if len(a) != len(b) or len(a) < 6:
        return True
    if _steady(a) != _steady(b):
        return True
    fa, fb = _drifting(a), _drifting(b)
    load_a, load_b = fa.get("load", 0.0), fb.get("load", 0.0)
    if abs(load_b - load_a) >= LOAD_STEP + LOAD_SHARE * load_a:
        return True
    mem = fb.get("mem", 0.0)
    step = mem * MEM_SHARE if mem else 64 << 20
    return abs(fb.get("memfree", 0.0) - fa.get("memfree", 0.0)) >= step


def _steady(words: list[str]) -> list[str]:
    return [w for i, w in enumerate(words)
            if i not in (3, 4) and w.partition("=")[0] not in DRIFTING]


def _drifting(words: list[str]) -> dict[str, float]:
    out = {}
    for w in words[6:]:
        k, _, v = w.partition("=")
        if k in ("load", "memfree", "mem"):
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out
