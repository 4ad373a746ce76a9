"""Node sets (ClusterShell's syntax) tested by membership, never expanded.

A daemon is handed node sets by clients (``/csrv/query/name=n[1-3]/``, ``res N where
name=…``). ClusterShell's ``NodeSet`` holds every name (its ``RangeSet`` is a ``set`` of every
index), so ``x[1-2000000]`` would cost two million strings and seconds of the event loop. Here
a node set is parsed into what its text says — literal names, and patterns of literal text and
bracketed ranges — and a name is tested against that, in time bounded by the name's length and
the text's size, whatever the ranges span.

The syntax is ClusterShell's, for names: ``a,b`` (union), ``n[1-3,7]``, ``n[01-10]`` (zero-padded:
``n01``…``n10``, not ``n1``), ``n[1-9/2]`` (a step), several brackets (``r[1-2]n[1-4]``), and the
operators ``!`` (minus), ``&`` (and), ``^`` (either but not both), applied left to right as
ClusterShell applies them. Node groups (``@name``) and wildcards are refused, saying so. The text
is at most :data:`MAX_TEXT` characters, and at most :data:`MAX_PATTERNS` of its names carry
brackets.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MAX_TEXT = 64 << 10  # characters of a node set (a 9P name holds no more)
MAX_PATTERNS = 256  # bracketed names in one node set (each costs a test per name)
MAX_BRACKETS = 16  # brackets in one name
MAX_DIGITS = 64  # digits of one number in a range
SEEN = 4096  # names whose answer a node set remembers
OPERATORS = ",!&^"
DIGITS = frozenset("0123456789")


class NodeSetError(ValueError):
    """A node set that cannot be read; the message says where and why."""


@dataclass
class Ranges:
    """The indexes of one bracket, ``[1-3,7,01-10,2-20/2]``: by padding, sorted disjoint
    intervals (searched by bisection); ranges with a step, as they are."""

    intervals: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)
    stepped: list[tuple[int, int, int, int]] = field(default_factory=list)
    width: int = 1  # the most digits an index may have

    def add(self, start: int, stop: int, step: int, pad: int) -> None:
        """One range; :meth:`merge` once all are added."""
        self.width = max(self.width, pad, len(str(stop)))
        if step > 1:
            self.stepped.append((start, stop, step, pad))
            return
        starts, stops = self.intervals.setdefault(pad, ([], []))
        starts.append(start)
        stops.append(stop)

    def merge(self) -> Ranges:
        """Each padding's intervals sorted, overlapping ones joined: one bisection finds one."""
        for pad, (starts, stops) in self.intervals.items():
            merged: tuple[list[int], list[int]] = ([], [])
            for a, b in sorted(zip(starts, stops)):
                if merged[0] and a <= merged[1][-1] + 1:
                    merged[1][-1] = max(merged[1][-1], b)
                else:
                    merged[0].append(a)
                    merged[1].append(b)
            self.intervals[pad] = merged
        return self

    def has(self, digits: str) -> bool:
        v = int(digits)
        for pad, (starts, stops) in self.intervals.items():
            if digits == _format(v, pad):
                i = bisect.bisect_right(starts, v) - 1
                if i >= 0 and v <= stops[i]:
                    return True
        return any(start <= v <= stop and (v - start) % step == 0 and digits == _format(v, pad)
                   for start, stop, step, pad in self.stepped)


def _format(v: int, pad: int) -> str:
    return str(v).zfill(pad) if pad else str(v)


@dataclass(frozen=True)
class Pattern:
    """A bracketed name: literal ``texts`` (maybe empty) around ``ranges``, one text more than
    ranges: ``r[1-2]n[1-4]`` is texts ``("r", "n", "")``, two ranges."""

    texts: tuple[str, ...]
    ranges: tuple[Ranges, ...]

    def has(self, name: str) -> bool:
        first, last = self.texts[0], self.texts[-1]
        if not (name.startswith(first) and name.endswith(last)):
            return False
        if len(self.ranges) == 1:  # one bracket: its digits are what lies between
            digits, r = name[len(first):len(name) - len(last)], self.ranges[0]
            return bool(digits) and len(digits) <= r.width and set(digits) <= DIGITS and \
                r.has(digits)
        at = {len(first)}  # where in ``name`` what matched so far may end
        for r, text in zip(self.ranges, self.texts[1:]):
            ends: set[int] = set()
            for p in at:
                end = p
                while end < len(name) and end - p < r.width and name[end] in DIGITS:
                    end += 1
                ends.update(e for e in range(p + 1, end + 1) if r.has(name[p:e]))
            at = {e + len(text) for e in ends if name.startswith(text, e)}
            if not at:
                return False
        return len(name) in at


@dataclass
class Union:
    """Names joined by ``,``: literal ones in a set, bracketed ones by their literal start."""

    names: set[str] = field(default_factory=set)
    patterns: dict[str, list[Pattern]] = field(default_factory=dict)

    def add(self, item: str | Pattern) -> None:
        if isinstance(item, str):
            self.names.add(item)
        else:
            self.patterns.setdefault(item.texts[0], []).append(item)

    def has(self, name: str) -> bool:
        if name in self.names:
            return True
        for prefix, patterns in self.patterns.items():
            if name.startswith(prefix) and any(p.has(name) for p in patterns):
                return True
        return False


class NodeSet:
    """A node set's text, parsed once; ``name in ns`` tests membership without expanding it."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_TEXT:
            raise NodeSetError(f"it is {len(text)} characters long, over the limit of {MAX_TEXT}; "
                               "give ranges (n[1-500]) or select by other attributes")
        self.text = text
        self._seen: dict[str, bool] = {}  # names tested already (the same ones come back)
        self.steps: list[tuple[str, Union]] = []
        patterns = 0
        for op, item in _split(text):
            parsed = _parse_name(item)
            if isinstance(parsed, Pattern):
                patterns += 1
                if patterns > MAX_PATTERNS:
                    raise NodeSetError(f"over {MAX_PATTERNS} bracketed names; fold them into "
                                       "fewer (n[1-4],m[1-4] rather than n1,n2,…)")
            if op == "," and self.steps and self.steps[-1][0] == ",":
                self.steps[-1][1].add(parsed)
            else:
                u = Union()
                u.add(parsed)
                self.steps.append((op, u))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        known = self._seen.get(name)
        if known is None:
            known = self._test(name)
            if len(self._seen) >= SEEN:
                self._seen.clear()
            self._seen[name] = known
        return known

    def _test(self, name: str) -> bool:
        hit = False
        for op, u in self.steps:
            if op == ",":
                hit = hit or u.has(name)
            elif op == "!":
                hit = hit and not u.has(name)
            elif op == "&":
                hit = hit and u.has(name)
            else:
                hit = hit != u.has(name)
        return hit

    def __str__(self) -> str:
        return self.text


def _split(text: str) -> list[tuple[str, str]]:
    """The names of a node set with the operator before each (``,`` before the first)."""
    out, op, start, depth = [], ",", 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch in OPERATORS and depth == 0:
            out.append((op, text[start:i].strip()))
            op, start = ch, i + 1
    out.append((op, text[start:].strip()))
    for op, item in out:
        if not item:
            raise NodeSetError(f"an empty name {'after ' + repr(op) if op != ',' else ''}".strip()
                               + " (names are joined by one ',', '!', '&' or '^')")
    return out


def shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message, cut at ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _parse_name(item: str) -> str | Pattern:
    if item.startswith("@"):
        raise NodeSetError(f"{shown(item)}: node groups (@…) are not known to the daemons; "
                           "name the nodes, or select them by an attribute (serve --label)")
    if "*" in item or "?" in item:
        raise NodeSetError(f"{shown(item)}: a node set holds no wildcards; give a glob alone "
                           "(name=n1.*) or ranges (n1.[1-9])")
    if "[" not in item and "]" not in item:
        return item
    texts: list[str] = []
    ranges: list[Ranges] = []
    at = 0
    while True:
        i = item.find("[", at)
        close = item.find("]", at)
        if i < 0:
            if close >= 0:
                raise NodeSetError(f"{shown(item)}: a ']' without its '['")
            texts.append(item[at:])
            break
        if 0 <= close < i:
            raise NodeSetError(f"{shown(item)}: a ']' without its '['")
        if close < 0:
            raise NodeSetError(f"{shown(item)}: a '[' without its ']'")
        if "[" in item[i + 1:close]:
            raise NodeSetError(f"{shown(item)}: brackets do not nest")
        if ranges and i == at:
            raise NodeSetError(f"{shown(item)}: two brackets in a row; put text between them "
                               "(r[1-2]n[1-4])")
        texts.append(item[at:i])
        ranges.append(_parse_ranges(item, item[i + 1:close]))
        at = close + 1
        if len(ranges) > MAX_BRACKETS:
            raise NodeSetError(f"{shown(item)}: over {MAX_BRACKETS} brackets in one name")
    return Pattern(tuple(texts), tuple(ranges))


def _parse_ranges(item: str, inside: str) -> Ranges:
    """``1-3,7,01-10,2-20/2`` as ClusterShell reads it (zero padding from a leading 0)."""
    r = Ranges()
    for sub in (s.strip() for s in inside.split(",")):
        what = f"{shown(item)}: range {shown(sub)}"
        base, slash, step_text = sub.partition("/")
        begin, dash, end = (w.strip() for w in base.partition("-"))
        if not dash:
            end = begin
        for w in (begin, end, step_text) if slash else (begin, end):
            if not w or not set(w) <= DIGITS:
                raise NodeSetError(f"{what}: expected N, N-M or N-M/STEP with N, M, STEP "
                                   "numbers ≥ 0")
            if len(w) > MAX_DIGITS:
                raise NodeSetError(f"{what}: a number of over {MAX_DIGITS} digits")
        step = int(step_text) if slash else 1
        if slash and not dash:
            raise NodeSetError(f"{what}: a step needs a range (N-M/STEP)")
        pad = len(begin) if len(begin) > 1 and begin[0] == "0" else 0
        endpad = len(end) if len(end) > 1 and end[0] == "0" else 0
        if (pad or endpad) and len(begin) != len(end):
            raise NodeSetError(f"{what}: padding length mismatch ({begin} and {end} have "
                               "different widths)")
        start, stop = int(begin), int(end)
        if start > stop or step < 1:
            raise NodeSetError(f"{what}: invalid values (the start is past the end, or the "
                               "step is 0)")
        r.add(start, stop, step, pad)
    return r.merge()
