"""The canonical one-line text form of a message, for traces, logs and transcript tests.

``Twalk tag 1 fid 1 newfid 2 wname csrv local`` — the type, then ``field value`` pairs in wire
order, a list or data field last taking the rest of the line. Strings are bare when they can be
(no blanks, quotes, parentheses or backslashes), otherwise single-quoted with backslash escapes;
data is always quoted. A qid is ``(path version type)`` with the path in hex and the type as letters
(``d`` directory, ``a`` append, ``l`` exclusive, ``m`` mount, ``A`` auth, ``t`` temporary,
``L`` symlink, ``-`` plain file; a type with a bit that has no letter is written whole in hex,
``0x01``); a stat is a parenthesised list of its own ``field value`` pairs;
modes and perms are octal. 9P2000.u fields are shown only when they differ from their default.
:func:`parse` reads the same form back, so a transcript can be written by hand.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from .messages import BY_NAME, Message
from .wire import Kind, Qid, Stat, field_kinds

_BARE = re.compile(r"[^\s'()\\]+")
_QT_LETTERS = (("d", 0x80), ("a", 0x40), ("l", 0x20), ("m", 0x10), ("A", 0x08), ("t", 0x04),
               ("L", 0x02))
_QT_KNOWN = sum(bit for _, bit in _QT_LETTERS)
_ESC = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def quote(s: str) -> str:
    if s and _BARE.fullmatch(s) and s.isprintable():
        return s
    return "'" + "".join(_ESC.get(c) or (c if c.isprintable() else _hex(ord(c))) for c in s) + "'"


def _hex(n: int) -> str:
    if n < 0x100:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def quote_bytes(b: bytes, limit: int | None = None) -> str:
    cut = b if limit is None or len(b) <= limit else b[:limit]
    body = "".join(_ESC.get(chr(c)) or (chr(c) if 0x20 <= c < 0x7F else f"\\x{c:02x}") for c in cut)
    return "'" + body + "'" + ("..." if cut is not b else "")


def qid_text(q: Qid) -> str:
    if q.type & ~_QT_KNOWN:  # a bit with no letter (0x01): show the whole type in hex
        return f"({q.path:016x} {q.version} 0x{q.type:02x})"
    letters = "".join(ch for ch, bit in _QT_LETTERS if q.type & bit) or "-"
    return f"({q.path:016x} {q.version} {letters})"


def _value_text(kind: Kind, v: Any, limit: int | None) -> str:
    k = kind.name
    if k == "str":
        return quote(v)
    if k == "data":
        return quote_bytes(v, limit)
    if k == "mode":
        return f"0o{v:o}"
    if k == "qid":
        return qid_text(v)
    if k == "strs":
        return " ".join(quote(s) for s in v)
    if k == "qids":
        return " ".join(qid_text(q) for q in v)
    if k == "stat":
        return stat_text(v)
    return str(v)


_STAT_KINDS: list[tuple[str, str]] = [
    ("name", "str"), ("uid", "str"), ("gid", "str"), ("muid", "str"), ("qid", "qid"),
    ("mode", "mode"), ("atime", "u32"), ("mtime", "u32"), ("length", "u64"), ("type", "u16"),
    ("dev", "u32"), ("extension", "str"), ("n_uid", "u32"), ("n_gid", "u32"), ("n_muid", "u32"),
]
_STAT_DEFAULTS = Stat()


def stat_text(st: Stat) -> str:
    parts = []
    for name, k in _STAT_KINDS:
        v = getattr(st, name)
        if name in ("extension", "n_uid", "n_gid", "n_muid") and v == getattr(_STAT_DEFAULTS, name):
            continue
        parts.append(f"{name} {_value_text(Kind(k), v, None)}")
    return "(" + " ".join(parts) + ")"


def format(msg: Message, limit: int | None = None) -> str:  # noqa: A001 - the module's verb
    """The one-line form; ``limit`` cuts long data (for traces), ``None`` keeps it all."""
    cls = type(msg)
    parts = [cls.__name__, "tag", str(msg.tag)]
    for name, kind in _kinds(cls):
        v = getattr(msg, name)
        if kind.dotu and v == _defaults(cls).get(name):
            continue
        parts.append(name)
        text = _value_text(kind, v, limit)
        if text:
            parts.append(text)
    return " ".join(parts)


_KIND_CACHE: dict[type, list[tuple[str, Kind]]] = {}
_DEFAULT_CACHE: dict[type, dict[str, Any]] = {}


def _kinds(cls: type) -> list[tuple[str, Kind]]:
    if cls not in _KIND_CACHE:
        _KIND_CACHE[cls] = field_kinds(cls)
    return _KIND_CACHE[cls]


def _defaults(cls: type) -> dict[str, Any]:
    if cls not in _DEFAULT_CACHE:
        _DEFAULT_CACHE[cls] = {f.name: f.default for f in dataclasses.fields(cls)
                               if f.default is not dataclasses.MISSING}
    return _DEFAULT_CACHE[cls]


# ---- parsing ------------------------------------------------------------------------------------

class TextError(ValueError):
    """A line that is not a message's text form; says where and why."""


def tokenize(line: str) -> list[Any]:
    """Words, quoted strings (as ('q', text)) and parenthesised groups (as lists)."""
    stack: list[list[Any]] = [[]]
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
        elif c == "(":
            stack.append([])
            i += 1
        elif c == ")":
            if len(stack) == 1:
                raise TextError(f"unbalanced ')' at column {i}")
            group = stack.pop()
            stack[-1].append(group)
            i += 1
        elif c == "'":
            text, i = _unquote(line, i)
            stack[-1].append(("q", text))
        else:
            m = _BARE.match(line, i)
            assert m is not None
            stack[-1].append(m.group())
            i = m.end()
    if len(stack) != 1:
        raise TextError("unbalanced '(': missing ')'")
    return stack[0]


def _unquote(line: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    i += 1
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'"}
    while i < len(line):
        c = line[i]
        if c == "'":
            i += 1
            if line.startswith("...", i):  # a cut trace: accept, the rest is unknown
                i += 3
            return "".join(out), i
        if c == "\\":
            e = line[i + 1:i + 2]
            if e in simple:
                out.append(simple[e])
                i += 2
            elif e == "x":
                out.append(chr(int(line[i + 2:i + 4], 16)))
                i += 4
            elif e == "u":
                out.append(chr(int(line[i + 2:i + 6], 16)))
                i += 6
            elif e == "U":
                out.append(chr(int(line[i + 2:i + 10], 16)))
                i += 10
            else:
                raise TextError(f"unknown escape '\\{e}' at column {i}")
        else:
            out.append(c)
            i += 1
    raise TextError("unterminated quoted string")


def _word(tok: Any, what: str) -> str:
    if isinstance(tok, tuple):
        return str(tok[1])
    if isinstance(tok, str):
        return tok
    raise TextError(f"{what}: expected a word, got a parenthesised group")


def _parse_int(tok: Any, what: str) -> int:
    try:
        return int(_word(tok, what), 0)
    except ValueError:
        raise TextError(f"{what}: {tok!r} is not a number") from None


def parse_qid(tok: Any) -> Qid:
    if not isinstance(tok, list) or len(tok) != 3:
        raise TextError(f"qid must be (path version type), got {tok!r}")
    path = int(_word(tok[0], "qid path"), 16)
    version = _parse_int(tok[1], "qid version")
    letters = _word(tok[2], "qid type")
    if letters.startswith("0x"):
        return Qid(_parse_int(letters, "qid type"), version, path)
    typ = 0
    for ch in letters:
        if ch == "-":
            continue
        bits = dict(_QT_LETTERS)
        if ch not in bits:
            raise TextError(f"qid type letter {ch!r} is not one of d a l m A t L -")
        typ |= bits[ch]
    return Qid(typ, version, path)


def parse_stat(tok: Any) -> Stat:
    if not isinstance(tok, list) or len(tok) % 2:
        raise TextError(f"stat must be (field value …), got {tok!r}")
    kinds = dict(_STAT_KINDS)
    values: dict[str, Any] = {}
    for key_tok, val in zip(tok[::2], tok[1::2]):
        key = _word(key_tok, "stat field")
        if key not in kinds:
            raise TextError(f"unknown stat field {key!r}")
        values[key] = _scalar(Kind(kinds[key]), val, f"stat {key}")
    return Stat(**values)


def _scalar(kind: Kind, tok: Any, what: str) -> Any:
    k = kind.name
    if k == "str":
        return _word(tok, what)
    if k == "data":
        return _word(tok, what).encode("latin-1")
    if k == "qid":
        return parse_qid(tok)
    if k == "stat":
        return parse_stat(tok)
    return _parse_int(tok, what)


def parse(line: str) -> Message:
    toks = tokenize(line)
    if not toks or not isinstance(toks[0], str) or toks[0] not in BY_NAME:
        raise TextError(f"line does not start with a message name: {line!r}")
    cls = BY_NAME[toks[0]]
    kinds = [("tag", Kind("u16"))] + _kinds(cls)
    by_name = dict(kinds)
    values: dict[str, Any] = {}
    i = 1
    while i < len(toks):
        key = _word(toks[i], "field name")
        if key not in by_name:
            raise TextError(f"{cls.__name__} has no field {key!r} (fields: {', '.join(by_name)})")
        kind = by_name[key]
        if kind.name in ("strs", "qids"):
            rest = toks[i + 1:]
            values[key] = tuple(_word(t, key) for t in rest) if kind.name == "strs" \
                else tuple(parse_qid(t) for t in rest)
            break
        if i + 1 >= len(toks):
            raise TextError(f"{cls.__name__}: field {key!r} has no value")
        values[key] = _scalar(kind, toks[i + 1], key)
        i += 2
    try:
        return cls(**values)
    except TypeError as e:
        raise TextError(f"{cls.__name__}: {e}") from None
