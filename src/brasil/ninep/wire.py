"""Wire layouts: how each field kind is laid out in bytes, compiled once per message and dialect.

A message class declares its fields with ``Annotated[type, KIND]``; :func:`compile_layout` turns that
declaration into encode and decode functions for 9P2000 and 9P2000.u. Runs of fixed-size fields are
merged into one precompiled :class:`struct.Struct`, so a Tread decodes with one ``unpack_from`` and
a Rread encodes with two ``pack`` calls; that is most of the codec's speed. Every bound the protocol
sets (string and data lengths, name and qid counts, exact frame size) is checked here, on both
sides: decoding raises :class:`RemoteProtocolError`, encoding :class:`LocalProtocolError`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, get_type_hints

from .constants import MAXWELEM, NONUNAME
from .errors import LocalProtocolError, RemoteProtocolError


class Qid(NamedTuple):
    """The server's unique identity of a file: type bits, version, path."""

    type: int
    version: int
    path: int


@dataclass(frozen=True, slots=True)
class Stat:
    """A directory entry (stat(5)); the last four fields exist only in 9P2000.u."""

    type: int = 0
    dev: int = 0
    qid: Qid = Qid(0, 0, 0)  # noqa: RUF009 - a NamedTuple: immutable, safe to share
    mode: int = 0
    atime: int = 0
    mtime: int = 0
    length: int = 0
    name: str = ""
    uid: str = ""
    gid: str = ""
    muid: str = ""
    extension: str = ""
    n_uid: int = NONUNAME
    n_gid: int = NONUNAME
    n_muid: int = NONUNAME


@dataclass(frozen=True)
class Kind:
    """One field kind. ``code`` is its struct code when fixed-size; ``dotu`` marks 9P2000.u-only fields."""

    name: str
    code: str | None = None
    dotu: bool = False

    @property
    def u(self) -> Kind:
        """The same kind, present on the wire only when 9P2000.u was negotiated."""
        return Kind(self.name, self.code, True)


U8 = Kind("u8", "B")
U16 = Kind("u16", "H")
U32 = Kind("u32", "I")
U64 = Kind("u64", "Q")
MODE = Kind("mode", "I")  # a u32 shown in octal in the text form
QID = Kind("qid", "BIQ")
STR = Kind("str")
DATA = Kind("data")  # count[4] bytes
STRS = Kind("strs")  # n[2] n*str, at most MAXWELEM
QIDS = Kind("qids")  # n[2] n*qid, at most MAXWELEM
STAT = Kind("stat")  # n[2] stat — the wrapped form used by Rstat and Twstat

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_QID = struct.Struct("<BIQ")
_STAT_FIXED = struct.Struct("<HHIBIQIIIQ")  # size type dev qid(type vers path) mode atime mtime length
_STAT_U_TAIL = struct.Struct("<III")


# ---- variable-size readers: (buf, pos, end) -> (value, newpos) ---------------------------------

def _short(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"message too short: {what} runs past the end of the frame")


def read_str(buf: Any, pos: int, end: int) -> tuple[str, int]:
    if pos + 2 > end:
        raise _short("string length")
    (n,) = _U16.unpack_from(buf, pos)
    pos += 2
    if pos + n > end:
        raise _short(f"string of {n} bytes")
    try:
        return bytes(buf[pos:pos + n]).decode("utf-8"), pos + n
    except UnicodeDecodeError as e:
        raise RemoteProtocolError(f"string is not valid UTF-8: {e.reason}") from None


def _read_data(buf: Any, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 4 > end:
        raise _short("data count")
    (n,) = _U32.unpack_from(buf, pos)
    pos += 4
    if pos + n > end:
        raise _short(f"data of {n} bytes")
    return bytes(buf[pos:pos + n]), pos + n


def _read_count(buf: Any, pos: int, end: int, what: str) -> tuple[int, int]:
    if pos + 2 > end:
        raise _short(f"{what} count")
    (n,) = _U16.unpack_from(buf, pos)
    if n > MAXWELEM:
        raise RemoteProtocolError(f"{n} {what} in one message; 9P allows at most {MAXWELEM}")
    return n, pos + 2


def _read_strs(buf: Any, pos: int, end: int) -> tuple[tuple[str, ...], int]:
    n, pos = _read_count(buf, pos, end, "names")
    out = []
    for _ in range(n):
        s, pos = read_str(buf, pos, end)
        out.append(s)
    return tuple(out), pos


def _read_qids(buf: Any, pos: int, end: int) -> tuple[tuple[Qid, ...], int]:
    n, pos = _read_count(buf, pos, end, "qids")
    if pos + 13 * n > end:
        raise _short(f"{n} qids")
    out = tuple(Qid(*_QID.unpack_from(buf, pos + 13 * i)) for i in range(n))
    return out, pos + 13 * n


def read_stat(buf: Any, pos: int, end: int, dotu: bool) -> tuple[Stat, int]:
    """One stat entry as found in a directory read: size[2] then exactly that many bytes."""
    if pos + 2 > end:
        raise _short("stat size")
    (size,) = _U16.unpack_from(buf, pos)
    stop = pos + 2 + size
    if stop > end:
        raise _short(f"stat of {size} bytes")
    if pos + _STAT_FIXED.size > stop:
        raise _short("stat fixed fields")
    _, typ, dev, qt, qv, qp, mode, atime, mtime, length = _STAT_FIXED.unpack_from(buf, pos)
    p = pos + _STAT_FIXED.size
    name, p = read_str(buf, p, stop)
    uid, p = read_str(buf, p, stop)
    gid, p = read_str(buf, p, stop)
    muid, p = read_str(buf, p, stop)
    ext, nu, ng, nm = "", NONUNAME, NONUNAME, NONUNAME
    if dotu:
        ext, p = read_str(buf, p, stop)
        if p + 12 > stop:
            raise _short("9P2000.u stat numeric ids")
        nu, ng, nm = _STAT_U_TAIL.unpack_from(buf, p)
        p += 12
    if p != stop:
        raise RemoteProtocolError(f"stat declares {size} bytes but its fields take {p - pos - 2}")
    return Stat(typ, dev, Qid(qt, qv, qp), mode, atime, mtime, length, name, uid, gid, muid,
                ext, nu, ng, nm), stop


def _read_wrapped_stat(dotu: bool) -> Callable[[Any, int, int], tuple[Stat, int]]:
    def read(buf: Any, pos: int, end: int) -> tuple[Stat, int]:
        if pos + 2 > end:
            raise _short("stat wrapper size")
        (n,) = _U16.unpack_from(buf, pos)
        if pos + 2 + n > end:
            raise _short(f"wrapped stat of {n} bytes")
        st, stop = read_stat(buf, pos + 2, pos + 2 + n, dotu)
        if stop != pos + 2 + n:
            raise RemoteProtocolError("stat wrapper size does not match the stat inside it")
        return st, stop
    return read


# ---- variable-size writers: value -> bytes ------------------------------------------------------

def write_str(s: str) -> bytes:
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: no UTF-8 for it
        raise LocalProtocolError(f"string is not encodable as UTF-8: {e.reason}") from None
    if len(b) > 0xFFFF:
        raise LocalProtocolError(f"string of {len(b)} bytes; 9P strings hold at most 65535")
    return _U16.pack(len(b)) + b


def _write_data(d: bytes) -> bytes:
    if len(d) > 0xFFFFFFFF:
        raise LocalProtocolError("data too long for one message")
    return _U32.pack(len(d)) + d


def _check_count(n: int, what: str) -> None:
    if n > MAXWELEM:
        raise LocalProtocolError(f"{n} {what} in one message; 9P allows at most {MAXWELEM}")


def _write_strs(names: tuple[str, ...]) -> bytes:
    _check_count(len(names), "names")
    return _U16.pack(len(names)) + b"".join(write_str(s) for s in names)


def _write_qids(qids: tuple[Qid, ...]) -> bytes:
    _check_count(len(qids), "qids")
    return _U16.pack(len(qids)) + b"".join(_QID.pack(*q) for q in qids)


def write_stat(st: Stat, dotu: bool) -> bytes:
    """One stat entry with its own size[2] prefix, as directory reads carry it."""
    tail = b"".join((write_str(st.name), write_str(st.uid), write_str(st.gid), write_str(st.muid)))
    if dotu:
        tail += write_str(st.extension) + _STAT_U_TAIL.pack(st.n_uid, st.n_gid, st.n_muid)
    size = _STAT_FIXED.size - 2 + len(tail)
    if size > 0xFFFF:
        raise LocalProtocolError("stat entry longer than 65535 bytes")
    q = st.qid
    try:
        head = _STAT_FIXED.pack(size, st.type, st.dev, q.type, q.version, q.path, st.mode,
                                st.atime, st.mtime, st.length)
    except struct.error as e:
        raise LocalProtocolError(f"stat field out of range: {e}") from None
    return head + tail


def _write_wrapped_stat(dotu: bool) -> Callable[[Stat], bytes]:
    def write(st: Stat) -> bytes:
        inner = write_stat(st, dotu)
        return _U16.pack(len(inner)) + inner
    return write


_READERS: dict[str, Callable[[Any, int, int], tuple[Any, int]]] = {
    "str": read_str, "data": _read_data, "strs": _read_strs, "qids": _read_qids,
}
_WRITERS: dict[str, Callable[[Any], bytes]] = {
    "str": write_str, "data": _write_data, "strs": _write_strs, "qids": _write_qids,
}


# ---- layouts ------------------------------------------------------------------------------------

def field_kinds(cls: type) -> list[tuple[str, Kind]]:
    """The declared (name, kind) of every field after ``tag``, in wire order."""
    hints = get_type_hints(cls, include_extras=True)
    out = []
    for f in fields(cls):
        if f.name == "tag":
            continue
        meta = getattr(hints[f.name], "__metadata__", ())
        kinds = [m for m in meta if isinstance(m, Kind)]
        if len(kinds) != 1:
            raise TypeError(f"{cls.__name__}.{f.name} needs exactly one wire Kind in Annotated[...]")
        out.append((f.name, kinds[0]))
    return out


Encoder = Callable[[Any], list[bytes]]
Decoder = Callable[[Any, int, int, int], Any]


def compile_layout(cls: type, dotu: bool) -> tuple[Encoder, Decoder]:
    """Build (encode_body, decode_body) for one message class in one dialect."""
    present = [(n, k) for n, k in field_kinds(cls) if dotu or not k.dotu]
    # Group consecutive fixed fields into one Struct.
    steps: list[tuple[str, Any, list[tuple[str, Kind]]]] = []
    for name, kind in present:
        if kind.code is not None:
            if steps and steps[-1][0] == "fixed":
                steps[-1][2].append((name, kind))
            else:
                steps.append(("fixed", None, [(name, kind)]))
        else:
            steps.append(("var", kind, [(name, kind)]))
    compiled: list[tuple[bool, Any, Any, Any]] = []
    for what, kind, group in steps:
        if what == "fixed":
            st = struct.Struct("<" + "".join(k.code or "" for _, k in group))
            names = [n for n, _ in group]
            has_qid = any(k is QID or k.name == "qid" for _, k in group)
            compiled.append((True, st, names, has_qid))
        else:
            name = group[0][0]
            if kind.name == "stat":
                reader, writer = _read_wrapped_stat(dotu), _write_wrapped_stat(dotu)
            else:
                reader, writer = _READERS[kind.name], _WRITERS[kind.name]
            compiled.append((False, (reader, writer), name, None))
    kinds_by_name = dict(present)

    def encode_body(msg: Any) -> list[bytes]:
        parts = []
        for fixed, a, b, has_qid in compiled:
            if fixed:
                if has_qid:
                    vals: list[Any] = []
                    for n in b:
                        v = getattr(msg, n)
                        if kinds_by_name[n].name == "qid":
                            vals.extend(v)
                        else:
                            vals.append(v)
                    parts.append(a.pack(*vals))
                else:
                    parts.append(a.pack(*[getattr(msg, n) for n in b]))
            else:
                parts.append(a[1](getattr(msg, b)))
        return parts

    def decode_body(buf: Any, pos: int, end: int, tag: int) -> Any:
        vals: list[Any] = [tag]
        for fixed, a, b, has_qid in compiled:
            if fixed:
                if pos + a.size > end:
                    raise _short(", ".join(b))
                raw = a.unpack_from(buf, pos)
                pos += a.size
                if has_qid:
                    i = 0
                    for n in b:
                        if kinds_by_name[n].name == "qid":
                            vals.append(Qid(raw[i], raw[i + 1], raw[i + 2]))
                            i += 3
                        else:
                            vals.append(raw[i])
                            i += 1
                else:
                    vals.extend(raw)
            else:
                v, pos = a[0](buf, pos, end)
                vals.append(v)
        if pos != end:
            raise RemoteProtocolError(
                f"{cls.__name__} frame has {end - pos} bytes after its last field")
        return cls(*vals)

    return encode_body, decode_body
