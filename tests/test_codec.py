"""The 9P codec by example: every message in both dialects, hand-written golden frames, and the
strict checks that turn malformed bytes into RemoteProtocolError (and unsendable values into
LocalProtocolError)."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from brasil.ninep import messages as m
from brasil.ninep.constants import DMDIR, NOFID, NONUNAME, NOTAG, QTDIR
from brasil.ninep.errors import LocalProtocolError, RemoteProtocolError
from brasil.ninep.messages import MESSAGES, decode_frame, encode
from brasil.ninep.wire import Qid, Stat, field_kinds

# ---- helpers ------------------------------------------------------------------------------------


def h(text: str) -> bytes:
    """Hex with blanks between fields, as the golden vectors are written."""
    return bytes.fromhex(text.replace(" ", ""))


def frame(typ: int, body: bytes, tag: int = 1) -> bytes:
    """A frame built by hand, size field correct for whatever body it is given."""
    return struct.pack("<IBH", 7 + len(body), typ, tag) + body


def s(text: str | bytes) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<H", len(b)) + b


def resize(buf: bytes, n: int | None = None) -> bytes:
    """``buf`` with its size field rewritten to say ``n`` (default: its true length)."""
    return struct.pack("<I", len(buf) if n is None else n) + buf[4:]


# ---- the table: every message type, 9P2000.u fields set away from their defaults ----------------

QD = Qid(QTDIR, 7, 0x1122334455667788)
QF = Qid(0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
STAT_U = Stat(type=0xFFFF, dev=0xDEADBEEF, qid=QD, mode=DMDIR | 0o755, atime=1, mtime=0xFFFFFFFF,
              length=2**64 - 1, name="dir", uid="glenda", gid="sys", muid="bootes",
              extension="ext→", n_uid=1000, n_gid=1001, n_muid=0)

# (message, bytes that 9P2000.u adds to its frame)
TABLE: list[tuple[m.Message, int]] = [
    (m.Tversion(NOTAG, 8192, "9P2000.u"), 0),
    (m.Rversion(NOTAG, 8192, "9P2000"), 0),
    (m.Tauth(1, 5, "glenda", "", n_uname=1000), 4),
    (m.Rauth(1, Qid(0x08, 0, 9)), 0),
    (m.Tattach(2, 0, NOFID, "glenda", "main", n_uname=0), 4),
    (m.Rattach(2, QD), 0),
    (m.Rerror(3, "file does not exist", errno=2), 4),
    (m.Tflush(4, 3), 0),
    (m.Rflush(4), 0),
    (m.Twalk(5, 0, 1, ("usr", "glenda", "lib", "ünïcode")), 0),
    (m.Rwalk(5, (QD, QF)), 0),
    (m.Topen(6, 1, 0x10 | 2), 0),
    (m.Ropen(6, QF, 8168), 0),
    (m.Tcreate(7, 1, "link", 0o777 | 0x02000000, 1, extension="/target"), 2 + len("/target")),
    (m.Rcreate(7, QF, 0), 0),
    (m.Tread(8, 1, 2**64 - 1, 8168), 0),
    (m.Rread(8, bytes(range(256))), 0),
    (m.Twrite(9, 1, 12, b"\x00\xff hello"), 0),
    (m.Rwrite(9, 9), 0),
    (m.Tclunk(10, 1), 0),
    (m.Rclunk(10), 0),
    (m.Tremove(11, 2), 0),
    (m.Rremove(11), 0),
    (m.Tstat(12, 3), 0),
    (m.Rstat(12, STAT_U), 2 + len("ext→".encode()) + 12),
    (m.Twstat(13, 3, STAT_U), 2 + len("ext→".encode()) + 12),
    (m.Rwstat(13), 0),
]
TABLE_IDS = [type(msg).__name__ for msg, _ in TABLE]
ALL_FRAMES = [(msg, dotu) for msg, _ in TABLE for dotu in (False, True)]
ALL_FRAME_IDS = [f"{type(msg).__name__}-{'u' if dotu else 'plain'}" for msg, dotu in ALL_FRAMES]


def plain_view(msg: m.Message) -> m.Message:
    """What a 9P2000 peer sees of ``msg``: every 9P2000.u field back at its default."""
    defaults = {f.name: f.default for f in dataclasses.fields(msg)}
    changes = {name: defaults[name] for name, kind in field_kinds(type(msg)) if kind.dotu}
    for name, kind in field_kinds(type(msg)):
        if kind.name == "stat":
            st = getattr(msg, name)
            changes[name] = dataclasses.replace(st, extension="", n_uid=NONUNAME, n_gid=NONUNAME,
                                                n_muid=NONUNAME)
    return dataclasses.replace(msg, **changes)


def test_table_covers_every_message_type():
    assert {type(msg) for msg, _ in TABLE} == set(MESSAGES.values())
    assert sorted(MESSAGES) == [t for t in range(100, 128) if t != 106]


@pytest.mark.parametrize(("msg", "extra"), TABLE, ids=TABLE_IDS)
def test_message_round_trips_in_9p2000u_with_every_field(msg, extra):
    buf = encode(msg, dotu=True)
    assert struct.unpack_from("<I", buf)[0] == len(buf)
    assert buf[4] == msg.TYPE
    assert decode_frame(buf, dotu=True) == msg


@pytest.mark.parametrize(("msg", "extra"), TABLE, ids=TABLE_IDS)
def test_9p2000u_fields_are_not_on_the_wire_in_plain_9p2000(msg, extra):
    plain, dotu = encode(msg, dotu=False), encode(msg, dotu=True)
    assert len(dotu) - len(plain) == extra
    decoded = decode_frame(plain, dotu=False)
    assert decoded == plain_view(msg)
    if extra:
        assert decoded != msg  # the .u values really were dropped, not carried some other way
    assert encode(plain_view(msg), dotu=False) == plain


def test_plain_decode_gives_9p2000u_defaults():
    assert decode_frame(encode(m.Rerror(1, "x", errno=5)), dotu=False).errno == 0
    assert decode_frame(encode(m.Tattach(1, 0, n_uname=7))).n_uname == NONUNAME
    assert decode_frame(encode(m.Tauth(1, 0, "u", "a", n_uname=7))).n_uname == NONUNAME
    assert decode_frame(encode(m.Tcreate(1, 0, "n", 0, 0, extension="e"))).extension == ""
    st = decode_frame(encode(m.Rstat(1, STAT_U))).stat
    assert (st.extension, st.n_uid, st.n_gid, st.n_muid) == ("", NONUNAME, NONUNAME, NONUNAME)
    assert st.name == "dir" and st.muid == "bootes"


def test_decode_reads_a_frame_inside_a_larger_buffer_of_any_bytes_type():
    msg = m.Twalk(5, 0, 1, ("a", "b"))
    buf = encode(msg)
    padded = b"junk" + buf + b"tail"
    for container in (padded, bytearray(padded), memoryview(padded)):
        got = decode_frame(container, 4, 4 + len(buf))
        assert got == msg
        assert all(type(n) is str for n in got.wname)
    got = decode_frame(memoryview(b"xx" + encode(m.Rread(1, b"data"))), 2)
    assert type(got.data) is bytes and got.data == b"data"


# ---- golden frames, written by hand from the layouts in intro(5) and the 9P2000.u draft ----------

STAT_PLAIN_HEX = (
    "3300"  # size[2] = 51: the bytes after this field
    " 0100 02000000"  # type[2] dev[4]
    " 80 03000000 0400000000000000"  # qid: type[1] vers[4] path[8]
    " ed010080 05000000 06000000 0700000000000000"  # mode atime mtime length[8]
    " 0100 64 0100 75 0100 67 0100 6d"  # name uid gid muid
)
STAT_U_HEX = (
    "4100 0100 02000000 80 03000000 0400000000000000 ed010080 05000000 06000000 0700000000000000"
    " 0100 64 0100 75 0100 67 0100 6d"
    " 0000 e8030000 e9030000 ffffffff"  # extension[s] n_uid[4] n_gid[4] n_muid[4]
)
GOLDEN_STAT = Stat(type=1, dev=2, qid=Qid(0x80, 3, 4), mode=DMDIR | 0o755, atime=5, mtime=6,
                   length=7, name="d", uid="u", gid="g", muid="m")
GOLDEN_STAT_U = dataclasses.replace(GOLDEN_STAT, n_uid=1000, n_gid=1001)

GOLDEN: list[tuple[str, m.Message, bool, str]] = [
    ("Tversion", m.Tversion(0xFFFF, 8192, "9P2000"), False,
     "13000000 64 ffff 00200000 0600 395032303030"),
    ("Rversion-u", m.Rversion(0xFFFF, 8192, "9P2000.u"), True,
     "15000000 65 ffff 00200000 0800 395032303030 2e75"),
    ("Tattach", m.Tattach(1, 0, NOFID, "u", ""), False,
     "14000000 68 0100 00000000 ffffffff 0100 75 0000"),
    ("Tattach-u", m.Tattach(1, 0, NOFID, "u", "", n_uname=1000), True,
     "18000000 68 0100 00000000 ffffffff 0100 75 0000 e8030000"),
    ("Rerror", m.Rerror(2, "x"), False, "0a000000 6b 0200 0100 78"),
    ("Rerror-u", m.Rerror(2, "x", errno=2), True, "0e000000 6b 0200 0100 78 02000000"),
    ("Tflush", m.Tflush(1, 0x1234), False, "09000000 6c 0100 3412"),
    ("Twalk", m.Twalk(1, 1, 2, ("usr", "glenda")), False,
     "1e000000 6e 0100 01000000 02000000 0200 0300 757372 0600 676c656e6461"),
    ("Twalk-empty", m.Twalk(1, 1, 2, ()), False, "11000000 6e 0100 01000000 02000000 0000"),
    ("Rwalk", m.Rwalk(1, (Qid(0x80, 0, 0x10), Qid(0, 3, 0x11))), False,
     "23000000 6f 0100 0200 80 00000000 1000000000000000 00 03000000 1100000000000000"),
    ("Ropen", m.Ropen(1, Qid(0, 1, 2), 8168), False,
     "18000000 71 0100 00 01000000 0200000000000000 e81f0000"),
    ("Tcreate", m.Tcreate(5, 3, "f", 0o644, 1), False,
     "13000000 72 0500 03000000 0100 66 a4010000 01"),
    ("Tcreate-u", m.Tcreate(5, 3, "f", 0o644, 1, extension="x"), True,
     "16000000 72 0500 03000000 0100 66 a4010000 01 0100 78"),
    ("Tread", m.Tread(1, 7, 0x0102030405060708, 8192), False,
     "17000000 74 0100 07000000 0807060504030201 00200000"),
    ("Rread", m.Rread(3, b"hello"), False, "10000000 75 0300 05000000 68656c6c6f"),
    ("Twrite", m.Twrite(1, 2, 3, b"ab"), False,
     "19000000 76 0100 02000000 0300000000000000 02000000 6162"),
    ("Rclunk", m.Rclunk(7), False, "07000000 79 0700"),
    # Rstat: size[4] type tag n[2] stat[n], where the stat starts with its own size[2]
    ("Rstat", m.Rstat(1, GOLDEN_STAT), False, "3e000000 7d 0100 3500 " + STAT_PLAIN_HEX),
    ("Rstat-u", m.Rstat(1, GOLDEN_STAT_U), True, "4c000000 7d 0100 4300 " + STAT_U_HEX),
    ("Twstat", m.Twstat(1, 9, GOLDEN_STAT), False,
     "42000000 7e 0100 09000000 3500 " + STAT_PLAIN_HEX),
]


@pytest.mark.parametrize(("msg", "dotu", "hexbytes"), [g[1:] for g in GOLDEN],
                         ids=[g[0] for g in GOLDEN])
def test_encoding_matches_the_hand_written_9p_layout(msg, dotu, hexbytes):
    assert encode(msg, dotu).hex(" ") == h(hexbytes).hex(" ")


@pytest.mark.parametrize(("msg", "dotu", "hexbytes"), [g[1:] for g in GOLDEN],
                         ids=[g[0] for g in GOLDEN])
def test_decoding_the_hand_written_9p_layout_gives_the_message(msg, dotu, hexbytes):
    assert decode_frame(h(hexbytes), dotu=dotu) == msg


# ---- strict decoding: malformed bytes raise RemoteProtocolError and nothing else -----------------


@pytest.mark.parametrize("n", range(7))
def test_frame_shorter_than_the_7_byte_header_is_rejected(n):
    with pytest.raises(RemoteProtocolError, match="shorter than a 9P header"):
        decode_frame(resize(h("07000000 79 0700"), n)[:n])


def test_size_field_below_7_is_rejected_even_with_bytes_following():
    for size in range(7):
        with pytest.raises(RemoteProtocolError):
            decode_frame(resize(h("07000000 79 0700"), size))


@pytest.mark.parametrize("size", [7, 20, 22, 24, 25, 1000, 2**32 - 1])
def test_size_field_that_disagrees_with_the_frame_length_is_rejected(size):
    buf = encode(m.Tread(1, 2, 3, 4))
    assert len(buf) == 23
    with pytest.raises(RemoteProtocolError, match="size field says"):
        decode_frame(resize(buf, size))


@pytest.mark.parametrize(("msg", "dotu"), ALL_FRAMES, ids=ALL_FRAME_IDS)
def test_every_truncation_of_a_frame_is_rejected(msg, dotu):
    buf = encode(msg, dotu)
    for cut in range(len(buf)):
        with pytest.raises(RemoteProtocolError):  # size field still says the full length
            decode_frame(buf[:cut], dotu=dotu)
        if cut >= 7:
            with pytest.raises(RemoteProtocolError):  # size field honest: a field runs out
                decode_frame(resize(buf[:cut]), dotu=dotu)


@pytest.mark.parametrize(("msg", "dotu"), ALL_FRAMES, ids=ALL_FRAME_IDS)
def test_trailing_bytes_after_the_last_field_are_rejected(msg, dotu):
    buf = encode(msg, dotu)
    for extra in (b"\x00", b"\x00\x00\x00\x00", b"junk" * 10):
        with pytest.raises(RemoteProtocolError):
            decode_frame(resize(buf + extra), dotu=dotu)


def test_9p2000u_frame_decoded_as_plain_9p2000_is_rejected_for_its_extra_bytes():
    with pytest.raises(RemoteProtocolError, match="after its last field"):
        decode_frame(encode(m.Rerror(1, "x", errno=2), dotu=True), dotu=False)
    with pytest.raises(RemoteProtocolError):
        decode_frame(encode(m.Rerror(1, "x"), dotu=False), dotu=True)


def test_string_length_running_past_the_end_of_the_frame_is_rejected():
    body = h("00200000") + struct.pack("<H", 7) + b"9P2000"  # says 7 bytes, has 6
    with pytest.raises(RemoteProtocolError, match="string of 7 bytes"):
        decode_frame(frame(100, body))
    with pytest.raises(RemoteProtocolError):
        decode_frame(frame(100, h("00200000") + b"\xff\xff"))


INVALID_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"ok\x80", b"\xf4\x90\x80\x80"]


@pytest.mark.parametrize("raw", INVALID_UTF8, ids=lambda b: b.hex())
def test_invalid_utf8_in_a_string_is_rejected(raw):
    bad = [
        frame(100, h("00200000") + s(raw)),  # Tversion.version
        frame(107, s(raw)),  # Rerror.ename
        frame(110, h("01000000 02000000 0200") + s("ok") + s(raw)),  # second Twalk name
    ]
    for buf in bad:
        with pytest.raises(RemoteProtocolError, match="UTF-8"):
            decode_frame(buf)
    stat = encode(m.Rstat(1, Stat(name="NAME")))
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        decode_frame(stat.replace(b"NAME", b"NAM\xff"))


def test_walk_with_17_names_is_rejected():
    body = h("01000000 02000000") + struct.pack("<H", 17) + s("a") * 17
    with pytest.raises(RemoteProtocolError, match="at most 16"):
        decode_frame(frame(110, body))
    with pytest.raises(RemoteProtocolError, match="at most 16"):
        decode_frame(frame(110, h("01000000 02000000 ffff")))


def test_walk_with_16_names_is_accepted():
    body = h("01000000 02000000") + struct.pack("<H", 16) + s("a") * 16
    assert decode_frame(frame(110, body)).wname == ("a",) * 16


def test_rwalk_with_17_qids_is_rejected():
    qid = h("00 00000000 0000000000000000")
    with pytest.raises(RemoteProtocolError, match="at most 16"):
        decode_frame(frame(111, struct.pack("<H", 17) + qid * 17))
    assert len(decode_frame(frame(111, struct.pack("<H", 16) + qid * 16)).wqid) == 16


def test_rwalk_with_fewer_qids_than_its_count_is_rejected():
    qid = h("00 00000000 0000000000000000")
    with pytest.raises(RemoteProtocolError, match="3 qids"):
        decode_frame(frame(111, struct.pack("<H", 3) + qid * 2))


@pytest.mark.parametrize("count", [6, 100, 2**31, 2**32 - 1])
def test_data_count_past_the_end_of_the_frame_is_rejected(count):
    with pytest.raises(RemoteProtocolError, match="data of"):
        decode_frame(frame(117, struct.pack("<I", count) + b"hello"))
    with pytest.raises(RemoteProtocolError, match="data of"):
        decode_frame(frame(118, h("01000000 0000000000000000") + struct.pack("<I", count) + b"x"))


def test_data_count_short_of_the_end_of_the_frame_is_rejected():
    with pytest.raises(RemoteProtocolError, match="after its last field"):
        decode_frame(frame(117, struct.pack("<I", 4) + b"hello"))


def _rstat_with(inner: bytes, wrapper: int | None = None) -> bytes:
    n = len(inner) if wrapper is None else wrapper
    return frame(125, struct.pack("<H", n) + inner)


def test_stat_whose_inner_size_overstates_its_fields_is_rejected():
    inner = h(STAT_PLAIN_HEX)
    longer = struct.pack("<H", 53) + inner[2:] + b"\x00\x00"  # two spare bytes inside the stat
    with pytest.raises(RemoteProtocolError, match="stat declares 53 bytes"):
        decode_frame(_rstat_with(longer))


def test_stat_whose_inner_size_understates_its_fields_is_rejected():
    inner = h(STAT_PLAIN_HEX)
    with pytest.raises(RemoteProtocolError):
        decode_frame(_rstat_with(struct.pack("<H", 50) + inner[2:]))
    with pytest.raises(RemoteProtocolError):
        decode_frame(_rstat_with(struct.pack("<H", 10) + inner[2:]))


def test_stat_wrapper_size_that_disagrees_with_the_stat_inside_is_rejected():
    inner = h(STAT_PLAIN_HEX)
    assert decode_frame(_rstat_with(inner)) == m.Rstat(1, GOLDEN_STAT)  # control
    with pytest.raises(RemoteProtocolError):
        decode_frame(_rstat_with(inner + b"\x00", wrapper=len(inner) + 1))
    with pytest.raises(RemoteProtocolError):
        decode_frame(_rstat_with(inner, wrapper=len(inner) - 1))
    with pytest.raises(RemoteProtocolError):
        decode_frame(_rstat_with(inner, wrapper=len(inner) + 1))


def test_stat_shorter_than_its_fixed_fields_is_rejected():
    with pytest.raises(RemoteProtocolError):
        decode_frame(_rstat_with(struct.pack("<H", 4) + b"\x00" * 4))
    with pytest.raises(RemoteProtocolError):
        decode_frame(frame(125, b"\x01"))


def test_plain_stat_read_in_9p2000u_lacks_the_numeric_ids_and_is_rejected():
    with pytest.raises(RemoteProtocolError):
        decode_frame(encode(m.Rstat(1, GOLDEN_STAT), dotu=False), dotu=True)
    with pytest.raises(RemoteProtocolError):
        decode_frame(encode(m.Twstat(1, 2, GOLDEN_STAT_U), dotu=True), dotu=False)


@pytest.mark.parametrize("typ", [0, 99, 106, 128, 200, 255])
def test_unknown_message_type_is_rejected(typ):
    for dotu in (False, True):
        with pytest.raises(RemoteProtocolError, match=f"unknown message type {typ}"):
            decode_frame(frame(typ, b""), dotu=dotu)


# ---- strict encoding: what 9P cannot carry raises LocalProtocolError -----------------------------


def test_string_of_65535_bytes_is_the_longest_that_encodes():
    msg = m.Rerror(1, "x" * 65535)
    assert decode_frame(encode(msg)) == msg
    with pytest.raises(LocalProtocolError, match="65535"):
        encode(m.Rerror(1, "x" * 65536))


def test_string_limit_counts_utf8_bytes_not_characters():
    with pytest.raises(LocalProtocolError):
        encode(m.Tversion(1, 8192, "€" * 21846))  # 21846 characters, 65538 bytes


def test_string_with_a_lone_surrogate_is_refused_locally():
    with pytest.raises(LocalProtocolError):
        encode(m.Tversion(1, 8192, "a\ud800b"))
    with pytest.raises(LocalProtocolError):
        encode(m.Twalk(1, 1, 2, ("ok", "\udfff")))


@pytest.mark.parametrize("msg", [
    m.Tflush(1, 65536),
    m.Tflush(1, -1),
    m.Rclunk(65536),
    m.Rclunk(-1),
    m.Topen(1, 1, 256),
    m.Tclunk(1, 2**32),
    m.Tread(1, 1, 2**64, 1),
    m.Rattach(1, Qid(256, 0, 0)),
    m.Rstat(1, Stat(type=65536)),
    m.Rstat(1, Stat(qid=Qid(0, 0, 2**64))),
], ids=repr)
def test_number_out_of_range_for_its_field_is_refused_locally(msg):
    with pytest.raises(LocalProtocolError):
        encode(msg)


def test_9p2000u_number_out_of_range_is_refused_only_where_it_goes_on_the_wire():
    msg = m.Rerror(1, "x", errno=2**32)
    with pytest.raises(LocalProtocolError):
        encode(msg, dotu=True)
    assert decode_frame(encode(msg, dotu=False)) == m.Rerror(1, "x")
    with pytest.raises(LocalProtocolError):
        encode(m.Rstat(1, Stat(n_gid=-1)), dotu=True)


def test_walk_with_17_names_is_refused_locally():
    with pytest.raises(LocalProtocolError, match="at most 16"):
        encode(m.Twalk(1, 1, 2, ("a",) * 17))
    assert len(encode(m.Twalk(1, 1, 2, ("a",) * 16))) == 17 + 16 * 3


def test_rwalk_with_17_qids_is_refused_locally():
    with pytest.raises(LocalProtocolError, match="at most 16"):
        encode(m.Rwalk(1, (QF,) * 17))


def test_stat_longer_than_65535_bytes_is_refused_locally():
    with pytest.raises(LocalProtocolError):
        encode(m.Rstat(1, Stat(name="n" * 40000, uid="u" * 40000)))


@pytest.mark.parametrize("msg", [
    m.Tversion(1, 8192, None),
    m.Tversion(1, "8192", "9P2000"),
    m.Rread(1, "not bytes"),
    m.Twalk(1, 1, 2, (1, 2)),
], ids=repr)
def test_value_of_the_wrong_type_is_refused_locally(msg):
    with pytest.raises(LocalProtocolError):
        encode(msg)
