"""Every 9P2000 message, declared once; the declaration drives encode, decode and the text form.

Each message is a frozen dataclass whose fields after ``tag`` carry their wire kind in
``Annotated[...]``. Fields marked ``.u`` exist on the wire only when 9P2000.u was negotiated and
have defaults, so 9P2000 code never mentions them. 9P2000.L messages would be added the same way,
with their own type numbers, when a dialect needs them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from .constants import HEADER_SIZE, NOFID, NONUNAME
from .errors import LocalProtocolError, RemoteProtocolError
from .wire import (
    DATA,
    MODE,
    QID,
    QIDS,
    STAT,
    STR,
    STRS,
    U8,
    U16,
    U32,
    U64,
    Qid,
    Stat,
    compile_layout,
)

__all__ = [
    "Message", "MESSAGES", "BY_NAME", "encode", "decode_frame",
    "Tversion", "Rversion", "Tauth", "Rauth", "Tattach", "Rattach", "Rerror", "Tflush", "Rflush",
    "Twalk", "Rwalk", "Topen", "Ropen", "Tcreate", "Rcreate", "Tread", "Rread", "Twrite", "Rwrite",
    "Tclunk", "Rclunk", "Tremove", "Rremove", "Tstat", "Rstat", "Twstat", "Rwstat",
]


class Message:
    """Base of every message: ``TYPE`` is the wire type byte; subclasses are frozen dataclasses."""

    __slots__ = ()
    TYPE: ClassVar[int]
    tag: int


MESSAGES: dict[int, type[Message]] = {}
BY_NAME: dict[str, type[Message]] = {}
_ENCODERS: dict[tuple[type, bool], Any] = {}
_DECODERS: dict[tuple[int, bool], Any] = {}

M = TypeVar("M", bound=type[Message])


def message(type_: int) -> Callable[[M], M]:
    def register(cls: M) -> M:
        cls.TYPE = type_
        MESSAGES[type_] = cls
        BY_NAME[cls.__name__] = cls
        for dotu in (False, True):
            enc, dec = compile_layout(cls, dotu)
            _ENCODERS[(cls, dotu)] = enc
            _DECODERS[(type_, dotu)] = dec
        return cls
    return register


Fid = Annotated[int, U32]


@message(100)
@dataclass(frozen=True, slots=True)
class Tversion(Message):
    tag: int
    msize: Annotated[int, U32]
    version: Annotated[str, STR]


@message(101)
@dataclass(frozen=True, slots=True)
class Rversion(Message):
    tag: int
    msize: Annotated[int, U32]
    version: Annotated[str, STR]


@message(102)
@dataclass(frozen=True, slots=True)
class Tauth(Message):
    tag: int
    afid: Fid
    uname: Annotated[str, STR]
    aname: Annotated[str, STR]
    n_uname: Annotated[int, U32.u] = NONUNAME


@message(103)
@dataclass(frozen=True, slots=True)
class Rauth(Message):
    tag: int
    aqid: Annotated[Qid, QID]


@message(104)
@dataclass(frozen=True, slots=True)
class Tattach(Message):
    tag: int
    fid: Fid
    afid: Fid = NOFID
    uname: Annotated[str, STR] = ""
    aname: Annotated[str, STR] = ""
    n_uname: Annotated[int, U32.u] = NONUNAME


@message(105)
@dataclass(frozen=True, slots=True)
class Rattach(Message):
    tag: int
    qid: Annotated[Qid, QID]


@message(107)
@dataclass(frozen=True, slots=True)
class Rerror(Message):
    tag: int
    ename: Annotated[str, STR]
    errno: Annotated[int, U32.u] = 0


@message(108)
@dataclass(frozen=True, slots=True)
class Tflush(Message):
    tag: int
    oldtag: Annotated[int, U16]


@message(109)
@dataclass(frozen=True, slots=True)
class Rflush(Message):
    tag: int


@message(110)
@dataclass(frozen=True, slots=True)
class Twalk(Message):
    tag: int
    fid: Fid
    newfid: Fid
    wname: Annotated[tuple[str, ...], STRS] = ()


@message(111)
@dataclass(frozen=True, slots=True)
class Rwalk(Message):
    tag: int
    wqid: Annotated[tuple[Qid, ...], QIDS] = ()


@message(112)
@dataclass(frozen=True, slots=True)
class Topen(Message):
    tag: int
    fid: Fid
    mode: Annotated[int, U8]


@message(113)
@dataclass(frozen=True, slots=True)
class Ropen(Message):
    tag: int
    qid: Annotated[Qid, QID]
    iounit: Annotated[int, U32]


@message(114)
@dataclass(frozen=True, slots=True)
class Tcreate(Message):
    tag: int
    fid: Fid
    name: Annotated[str, STR]
    perm: Annotated[int, MODE]
    mode: Annotated[int, U8]
    extension: Annotated[str, STR.u] = ""


@message(115)
@dataclass(frozen=True, slots=True)
class Rcreate(Message):
    tag: int
    qid: Annotated[Qid, QID]
    iounit: Annotated[int, U32]


@message(116)
@dataclass(frozen=True, slots=True)
class Tread(Message):
    tag: int
    fid: Fid
    offset: Annotated[int, U64]
    count: Annotated[int, U32]


@message(117)
@dataclass(frozen=True, slots=True)
class Rread(Message):
    tag: int
    data: Annotated[bytes, DATA]


@message(118)
@dataclass(frozen=True, slots=True)
class Twrite(Message):
    tag: int
    fid: Fid
    offset: Annotated[int, U64]
    data: Annotated[bytes, DATA]


@message(119)
@dataclass(frozen=True, slots=True)
class Rwrite(Message):
    tag: int
    count: Annotated[int, U32]


@message(120)
@dataclass(frozen=True, slots=True)
class Tclunk(Message):
    tag: int
    fid: Fid


@message(121)
@dataclass(frozen=True, slots=True)
class Rclunk(Message):
    tag: int


@message(122)
@dataclass(frozen=True, slots=True)
class Tremove(Message):
    tag: int
    fid: Fid


@message(123)
@dataclass(frozen=True, slots=True)
class Rremove(Message):
    tag: int


@message(124)
@dataclass(frozen=True, slots=True)
class Tstat(Message):
    tag: int
    fid: Fid


@message(125)
@dataclass(frozen=True, slots=True)
class Rstat(Message):
    tag: int
    stat: Annotated[Stat, STAT]


@message(126)
@dataclass(frozen=True, slots=True)
class Twstat(Message):
    tag: int
    fid: Fid
    stat: Annotated[Stat, STAT]


@message(127)
@dataclass(frozen=True, slots=True)
class Rwstat(Message):
    tag: int


_HEADER = struct.Struct("<IBH")


_RREAD = struct.Struct("<IBHI")
_TREAD = struct.Struct("<IBHIQI")


def encode_rread(tag: int, data: bytes) -> bytes:
    """An Rread frame, without a message object (the server's read path)."""
    try:
        return _RREAD.pack(11 + len(data), 117, tag, len(data)) + data
    except struct.error as e:
        raise LocalProtocolError(f"Rread: field out of range: {e}") from None


def tread_at(buf: Any, pos: int, end: int) -> tuple[int, int, int, int] | None:
    """(tag, fid, offset, count) when ``buf[pos:end]`` is one whole Tread frame, else None: the
    server answers most reads from this, without a message object either way."""
    if end - pos != 23 or buf[pos + 4] != 116:
        return None
    size, _, tag, fid, offset, count = _TREAD.unpack_from(buf, pos)
    return (tag, fid, offset, count) if size == 23 else None


def encode(msg: Message, dotu: bool = False) -> bytes:
    """The whole frame for ``msg``: size[4] type[1] tag[2] body."""
    if type(msg) is Rread and type(msg.data) is bytes:  # the hot path: no generic field loop
        return encode_rread(msg.tag, msg.data)
    try:
        body = _ENCODERS[(type(msg), dotu)](msg)
        size = HEADER_SIZE + sum(len(p) for p in body)
        return b"".join((_HEADER.pack(size, msg.TYPE, msg.tag), *body))
    except struct.error as e:
        raise LocalProtocolError(f"{type(msg).__name__}: field out of range: {e}") from None
    except (TypeError, AttributeError) as e:
        raise LocalProtocolError(f"{type(msg).__name__}: bad field value: {e}") from None


def decode_frame(buf: Any, pos: int = 0, end: int | None = None, dotu: bool = False) -> Message:
    """Decode one complete frame occupying ``buf[pos:end]``; the size field must say exactly that."""
    if end is None:
        end = len(buf)
    if end - pos < HEADER_SIZE:
        raise RemoteProtocolError(f"frame of {end - pos} bytes is shorter than a 9P header")
    size, typ, tag = _HEADER.unpack_from(buf, pos)
    if size != end - pos:
        raise RemoteProtocolError(f"size field says {size} bytes but the frame has {end - pos}")
    if typ == 116 and size == 23:  # Tread, the hot path: one unpack
        _, _, tag, fid, offset, count = _TREAD.unpack_from(buf, pos)
        return Tread(tag, fid, offset, count)
    dec = _DECODERS.get((typ, dotu))
    if dec is None:
        raise RemoteProtocolError(f"unknown message type {typ}")
    try:
        return dec(buf, pos + HEADER_SIZE, end, tag)
    except struct.error as e:  # belt and braces: every read is bounds-checked before unpacking
        raise RemoteProtocolError(f"malformed {MESSAGES[typ].__name__}: {e}") from None
