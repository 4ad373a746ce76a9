"""What a node says about itself, and the predicates that select nodes by it.

Every node publishes attributes — ``name``, ``arch``, ``os``, ``cores``, ``slots``, ``free``
(free slots), ``mem`` and ``memfree`` (bytes), ``load`` (one-minute load average), and labels
set with ``serve --label k=v`` or by writing ``k=v`` lines to ``/csrv/local/attrs`` — at the end
of its ``status`` line as ``k=v`` words. One predicate language serves everything that selects
nodes: ``res N where …`` (and so ``brasil run -w``), query paths (``/csrv/query/arch=x86_64/``),
group reads. A filter is predicates joined by ``/``:

- ``k=v`` and ``k!=v``: equality, with shell globs (``os=lin*``, matched by RE2 in linear
  time); for ``name``, ``v`` may be a node set (``name=n[1-3,7]``, ClusterShell syntax), tested
  by membership, never expanded (``node/nodeset.py``);
- ``k>=v``, ``k<=v``, ``k>v``, ``k<v``: numbers, with sizes (``mem>=4G``: K, M, G, T, powers of
  1024).

A predicate naming an attribute no node has, or malformed, is an error that says which; so is a
value over :data:`MAX_VALUE` characters.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import re2

from ..exec.records import compile_regex
from ..metrics.sample import memory
from ..ninep.errors import NinepError
from .nodeset import NodeSet, NodeSetError, shown

BUILTIN = ("name", "arch", "os", "cores", "slots", "free", "mem", "memfree", "load", "sessions")
# Values that move every second: the tree passes them up only when they move by a step
# (tree/beat.py), so above a node they may be a little stale.
DRIFTING = frozenset({"load", "memfree"})
LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
PRED = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)(!=|>=|<=|=|>|<)(.*)$")
SIZES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
MAX_VALUE = 64 << 10  # characters of a predicate's value (a 9P name holds no more)
MAX_SIZE_TEXT = 64  # a number or size is short; a longer text is not one


def parse_size(text: str) -> float | None:
    if len(text) > MAX_SIZE_TEXT:  # and the pattern below never sees a long run of blanks
        return None
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*", text, re.I)
    if not m:
        return None
    return float(m.group(1)) * SIZES[m.group(2).upper()]


Machine = Callable[[], tuple[int, int, float]]  # memory total and available (bytes), load


def real_machine() -> tuple[int, int, float]:
    """This machine's memory and one-minute load: what a node reports, unless it is told
    otherwise (the simulator's nodes each report their own)."""
    total, avail, _, _ = memory()
    return total, avail, os.getloadavg()[0]


@functools.lru_cache(maxsize=1)
def _fixed() -> tuple[str, str, str]:
    return platform.machine(), platform.system().lower(), str(os.cpu_count() or 1)


def system_attrs(name: str, slots: int, free: int,
                 machine: Machine = real_machine) -> dict[str, str]:
    """Asked every second of every node (its parent polls it): kept cheap."""
    total, avail, load = machine()
    arch, os_name, cores = _fixed()
    return {"name": name, "arch": arch, "os": os_name, "cores": cores, "slots": str(slots),
            "free": str(free), "mem": str(total), "memfree": str(avail),
            "load": f"{load:.2f}"}


def check_label(key: str, value: str) -> None:
    if not LABEL.fullmatch(key) or key in BUILTIN:
        raise NinepError(f"attrs: bad label name {key!r}: letters, digits, '_', '.', '-', not one "
                         f"of {', '.join(BUILTIN)}", errno.EINVAL)
    if not value or any(c.isspace() for c in value) or "\0" in value or len(value) > 256:
        raise NinepError(f"attrs: bad value for {key}: {value[:40]!r} (1-256 characters, no "
                         "blanks)", errno.EINVAL)


def format_attrs(attrs: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in attrs.items())


def line_free(line: str) -> int | None:
    """A status line's free slots (its third word), None for a malformed line."""
    w = line.split(None, 3)
    return int(w[2]) if len(w) > 2 and w[2].isdigit() else None


def parse_status_line(line: str) -> dict[str, str]:
    """``NAME SLOTS FREE LOAD MEMFREE_MB STATE k=v…`` as attributes (older lines: the first
    six only)."""
    w = line.split()
    attrs = {"name": w[0]} if w else {}
    if len(w) >= 6:
        attrs.update(slots=w[1], free=w[2], load=w[3])
    for word in w[6:]:
        k, eq, v = word.partition("=")
        if eq:
            attrs[k] = v
    return attrs


@dataclass(frozen=True)
class Pred:
    key: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def matches(self, attrs: dict[str, str]) -> bool:
        have = attrs.get(self.key)
        if have is None:
            return False
        if self.op in ("=", "!="):
            if is_node_set(self.key, self.value):
                hit = have in node_set(self.value)
            else:
                hit = glob(self.value).fullmatch(have.encode()) is not None
            return hit if self.op == "=" else not hit
        a, b = parse_size(have), parse_size(self.value)
        if a is None or b is None:
            return False
        return {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b}[self.op]


def is_node_set(key: str, value: str) -> bool:
    """Whether a value is read as a node set (``name=n[1-3]``, ``name=a,b``) rather than a glob."""
    return key == "name" and any(c in value for c in "[,")


@functools.lru_cache(maxsize=64)
def node_set(text: str) -> NodeSet:
    """A node set, parsed once (not expanded: ``name in node_set(…)`` tests membership)."""
    try:
        return NodeSet(text)
    except NodeSetError as e:
        raise NinepError(f"bad node set {shown(text)}: {e}", errno.EINVAL) from None


@functools.lru_cache(maxsize=64)
def glob(pattern: str) -> Any:
    """A shell glob (``*``, ``?``, ``[…]``, ``[!…]``, as fnmatchcase) compiled with RE2."""
    try:
        return compile_regex(glob_regex(pattern), "glob")
    except ValueError:
        raise NinepError(f"bad glob {shown(pattern)}: not a shell pattern (*, ?, [abc], [!abc], "
                         "[a-z])", errno.EINVAL) from None


def glob_regex(pattern: str) -> str:
    """The RE2 regular expression of a shell glob (fnmatch's translation, for RE2)."""
    out, i, n = ["(?s)"], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + (i < n and pattern[i] == "!")
            j += j < n and pattern[j] == "]"
            close = pattern.find("]", j)
            if close < 0:
                out.append(r"\[")
                continue
            out.append(_char_class(pattern[i:close]))
            i = close + 1
        else:
            out.append(_escape(c))
    return "".join(out)


def _char_class(inside: str) -> str:
    """``[…]`` of a glob (``!`` negates; ``a-z`` ranges; a reversed range matches nothing)."""
    negate = inside.startswith("!")
    chars = inside[1:] if negate else inside
    items, k = [], 0
    while k < len(chars):
        if k + 2 < len(chars) and chars[k + 1] == "-":
            if chars[k] <= chars[k + 2]:
                items.append(f"{_escape(chars[k])}-{_escape(chars[k + 2])}")
            k += 3
        else:
            items.append(_escape(chars[k]))
            k += 1
    if not items:
        return "." if negate else r"[^\x00-\x{10FFFF}]"
    return f"[{'^' if negate else ''}{''.join(items)}]"


def _escape(c: str) -> str:
    return re2.escape(c)


class Filter:
    """Predicates joined by ``/``; an empty filter matches every node."""

    def __init__(self, preds: Iterable[Pred] = ()) -> None:
        self.preds = tuple(preds)

    @classmethod
    def parse(cls, text: str, known: Iterable[str] | None = None) -> Filter:
        """``arch=x86_64/mem>=4G``. ``known``: attribute names that exist; a predicate on any
        other is refused (labels are known once some node has them)."""
        preds = []
        for part in (p for p in text.split("/") if p):
            m = PRED.match(part)
            if not m:
                raise NinepError(f"bad predicate {shown(part)}: expected KEY=VALUE, KEY!=VALUE, "
                                 "KEY>=N, KEY<=N, KEY>N or KEY<N (sizes like 4G)", errno.EINVAL)
            key, op, value = m.groups()
            if not value:
                raise NinepError(f"bad predicate {shown(part)}: no value after {op!r}",
                                 errno.EINVAL)
            if len(value) > MAX_VALUE and not is_node_set(key, value):
                raise NinepError(f"bad predicate {shown(part)}: its value is {len(value)} "
                                 f"characters long, over the limit of {MAX_VALUE}", errno.EINVAL)
            if op not in ("=", "!=") and parse_size(value) is None:
                raise NinepError(f"bad predicate {shown(part)}: {shown(value)} is not a number or "
                                 "size (e.g. 4, 2.5, 512M, 4G)", errno.EINVAL)
            if op in ("=", "!=") and is_node_set(key, value):
                node_set(value)  # refused now if malformed (or too long)
            elif op in ("=", "!="):
                glob(value)
            if known is not None and key not in known:
                raise NinepError(f"unknown attribute {shown(key)} in {shown(part)}; nodes have: "
                                 f"{', '.join(sorted(known))}", errno.EINVAL)
            preds.append(Pred(key, op, value))
        return cls(preds)

    def matches(self, attrs: dict[str, str]) -> bool:
        return all(p.matches(attrs) for p in self.preds)

    def could_match(self, attrs: dict[str, str], unsure: frozenset[str]) -> bool:
        """Whether a node could match when its values of ``unsure`` may be stale: only the
        other predicates are judged."""
        return all(p.matches(attrs) for p in self.preds if p.key not in unsure)

    def keys(self) -> set[str]:
        return {p.key for p in self.preds}

    def __bool__(self) -> bool:
        return bool(self.preds)

    def __str__(self) -> str:
        return "/".join(str(p) for p in self.preds)


@dataclass(frozen=True)
class Selection:
    """Which slots a reservation may take: on nodes matching ``filter``, at most ``pernode`` on
    each (``res N where FILTER pernode P``; ``brasil run -w`` is one per named node)."""

    filter: Filter = Filter()
    pernode: int | None = None
    spread: str | None = None  # a label: ranks dealt evenly over its values (node/daemon.py)

    def words(self) -> str:
        """As passed on to a neighbour (``resupto K`` + this; a spread is resolved at the
        origin into one filtered reservation per value, so it is never passed on)."""
        out = f" where {self.filter}" if self.filter else ""
        return out + (f" pernode {self.pernode}" if self.pernode else "")

    def take(self, attrs: dict[str, str], free: int) -> int:
        if not self.filter.matches(attrs):
            return 0
        return min(free, self.pernode) if self.pernode else free

    def free_in(self, status_lines: Iterable[str]) -> int:
        """Slots a subtree could give, from its status lines."""
        return sum(k for _, k in self._offers(status_lines))

    def free_by(self, label: str, status_lines: Iterable[str]) -> dict[str, int]:
        """The same, per value of ``label`` (nodes without it left out): ``spread``'s domains."""
        room: dict[str, int] = {}
        for attrs, k in self._offers(status_lines, want_attrs=True):
            if label in attrs:
                room[attrs[label]] = room.get(attrs[label], 0) + k
        return room

    def _offers(self, status_lines: Iterable[str], want_attrs: bool = False
                ) -> Iterator[tuple[dict[str, str], int]]:
        """Each well-formed line's attributes and the slots it offers under this selection."""
        for line in status_lines:
            free = line_free(line)
            if free is not None:
                # Without a filter the attributes are not needed (free_in, the hot path of
                # every reservation, reads the free column only): parse a line only to match it.
                attrs = parse_status_line(line) if want_attrs or self.filter else {}
                yield attrs, self.take(attrs, free)

    @property
    def plain(self) -> bool:
        """Every free slot counts (no filter, no per-node cap): a subtree's free total does."""
        return not self.filter and not self.pernode

    def __bool__(self) -> bool:
        return bool(self.filter) or self.pernode is not None or self.spread is not None

    def __str__(self) -> str:
        return (self.words() + (f" spread {self.spread}" if self.spread else "")).strip()


def parse_selection(args: list[str], known: Iterable[str] | None = None) -> Selection:
    """What follows N in ``res N``: ``where FILTER``, ``pernode P`` (either, both, any order),
    or the original ``os [arch]`` (``*`` for any)."""
    usage = "res N [where FILTER] [pernode P] [spread LABEL] | res N [os [arch]]"
    if not args:
        return Selection()
    if args[0] not in ("where", "pernode", "spread"):
        if len(args) > 2:
            raise NinepError(f"res: too many words; usage: {usage}", errno.EINVAL)
        preds = [Pred(k, "=", v) for k, v in zip(("os", "arch"), args) if v != "*"]
        return Selection(Filter(preds))
    filt, pernode, spread = Filter(), None, None
    i = 0
    while i < len(args):
        word = args[i]
        if i + 1 >= len(args):
            raise NinepError(f"res: {word} needs a value; usage: {usage}", errno.EINVAL)
        if word == "where":
            filt = Filter.parse(args[i + 1], known)
        elif word == "pernode":
            if not args[i + 1].isdigit() or int(args[i + 1]) < 1:
                raise NinepError(f"res: pernode needs a number ≥ 1, got {args[i + 1]!r}",
                                 errno.EINVAL)
            pernode = int(args[i + 1])
        elif word == "spread":
            key = args[i + 1]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", key):
                raise NinepError(f"res: spread needs a label name (e.g. rack), got {shown(key)}",
                                 errno.EINVAL)
            if known is not None and key not in known:
                raise NinepError(f"res: spread {shown(key)}: no node has that label; nodes "
                                 f"have: {', '.join(sorted(known))}", errno.EINVAL)
            spread = key
        else:
            raise NinepError(f"res: unknown word {word!r}; usage: {usage}", errno.EINVAL)
        i += 2
    return Selection(filt, pernode, spread)
