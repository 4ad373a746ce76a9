"""FrameReader: splitting a byte stream into decoded messages without doing any I/O."""

from __future__ import annotations

import struct

import pytest

from brasil.ninep import messages as m
from brasil.ninep.errors import RemoteProtocolError
from brasil.ninep.framing import FrameReader
from brasil.ninep.messages import encode
from brasil.ninep.wire import Qid, Stat

MSGS = [
    m.Tversion(0xFFFF, 8192, "9P2000.u"),
    m.Twalk(1, 0, 1, ("a", "b")),
    m.Rread(2, b"x" * 100),
    m.Rstat(3, Stat(name="f", qid=Qid(0, 1, 2))),
    m.Rclunk(4),
]


def drain(reader: FrameReader) -> list[m.Message]:
    out = []
    while (got := reader.next_message()) is not None:
        out.append(got)
    return out


def test_reader_returns_none_until_the_whole_frame_has_arrived():
    buf = encode(m.Rread(1, b"hello"))
    reader = FrameReader(msize=8192)
    for i in range(len(buf) - 1):
        reader.feed(buf[i:i + 1])
        assert reader.next_message() is None
        assert reader.buffered == i + 1
    reader.feed(buf[-1:])
    assert reader.next_message() == m.Rread(1, b"hello")
    assert reader.buffered == 0
    assert reader.next_message() is None


def test_several_frames_fed_at_once_come_out_one_at_a_time_in_order():
    reader = FrameReader(msize=8192)
    reader.feed(b"".join(encode(x) for x in MSGS))
    assert reader.next_message() == MSGS[0]
    assert drain(reader) == MSGS[1:]


def test_partial_next_frame_stays_buffered_after_a_complete_one():
    first, second = encode(MSGS[1]), encode(MSGS[2])
    reader = FrameReader(msize=8192)
    reader.feed(first + second[:10])
    assert drain(reader) == [MSGS[1]]
    assert reader.buffered == 10
    reader.feed(second[10:])
    assert drain(reader) == [MSGS[2]]


@pytest.mark.parametrize("size", range(7))
def test_size_below_the_header_is_rejected_from_the_first_four_bytes(size):
    reader = FrameReader(msize=8192)
    reader.feed(struct.pack("<I", size))
    with pytest.raises(RemoteProtocolError, match="smaller than a 9P header"):
        reader.next_message()


def test_frame_larger_than_msize_is_rejected_before_its_body_arrives():
    reader = FrameReader(msize=8192)
    reader.feed(struct.pack("<I", 8193))
    with pytest.raises(RemoteProtocolError, match="exceeds the negotiated msize"):
        reader.next_message()


def test_frame_of_exactly_msize_is_accepted():
    msg = m.Rread(1, b"z" * (8192 - 11))
    buf = encode(msg)
    assert len(buf) == 8192
    reader = FrameReader(msize=8192)
    reader.feed(buf)
    assert reader.next_message() == msg


def test_fewer_than_four_bytes_is_not_yet_a_size():
    reader = FrameReader(msize=8192)
    reader.feed(b"\x00\x00\x00")
    assert reader.next_message() is None


def test_malformed_frame_body_raises_remote_protocol_error():
    reader = FrameReader(msize=8192)
    reader.feed(struct.pack("<IBH", 7, 106, 1))  # Terror does not exist
    with pytest.raises(RemoteProtocolError, match="unknown message type"):
        reader.next_message()


def test_dialect_can_change_between_frames():
    plain = encode(m.Rversion(0xFFFF, 8192, "9P2000.u"))
    dotu = encode(m.Rerror(1, "no", errno=2), dotu=True)
    reader = FrameReader(msize=8192)
    reader.feed(plain + dotu)
    assert reader.next_message() == m.Rversion(0xFFFF, 8192, "9P2000.u")
    reader.dotu = True
    assert reader.next_message() == m.Rerror(1, "no", errno=2)


def test_same_bytes_in_the_wrong_dialect_are_rejected():
    reader = FrameReader(msize=8192, dotu=False)
    reader.feed(encode(m.Rerror(1, "no", errno=2), dotu=True))
    with pytest.raises(RemoteProtocolError):
        reader.next_message()


def test_msize_can_shrink_between_frames():
    reader = FrameReader(msize=8192)
    reader.feed(encode(m.Rread(1, b"a" * 500)) * 2)
    assert reader.next_message() == m.Rread(1, b"a" * 500)
    reader.msize = 256
    with pytest.raises(RemoteProtocolError):
        reader.next_message()


def test_long_stream_through_buffer_compaction_keeps_every_message_intact():
    msgs = [m.Rread(i & 0xFFFF, bytes([i & 0xFF]) * (1000 + i % 7)) for i in range(400)]
    stream = b"".join(encode(x) for x in msgs)
    reader = FrameReader(msize=8192)
    out = []
    for i in range(0, len(stream), 777):  # chunks that never line up with frame edges
        reader.feed(stream[i:i + 777])
        if i % (777 * 5) == 0:  # let the buffer grow well past 64 KiB now and then
            continue
        out += drain(reader)
    out += drain(reader)
    assert out == msgs
    assert reader.buffered == 0


def test_decoded_messages_do_not_alias_the_reader_buffer():
    reader = FrameReader(msize=8192)
    reader.feed(encode(m.Rread(1, b"before")) + encode(m.Twalk(2, 0, 1, ("name",))))
    got = drain(reader)
    reader.feed(b"\xff" * 100_000)  # reuses and overwrites the buffer
    assert got == [m.Rread(1, b"before"), m.Twalk(2, 0, 1, ("name",))]
    assert type(got[0].data) is bytes


def test_tread_at_recognises_only_whole_treads():
    """The server's read path answers frames tread_at recognises without decoding them: it must
    say yes exactly for a well-formed Tread and leave everything else to decode_frame."""
    from brasil.ninep.messages import Tread, Twalk, decode_frame, encode, tread_at
    frame = bytearray(b"junk" + encode(Tread(7, 3, 2**40, 99)) + b"more")
    assert tread_at(frame, 4, 27) == (7, 3, 2**40, 99)
    assert decode_frame(frame, 4, 27) == Tread(7, 3, 2**40, 99)
    walk = encode(Twalk(1, 0, 1, ["abc"]))
    assert tread_at(walk, 0, len(walk)) is None
    bad = bytearray(encode(Tread(7, 3, 0, 1)))
    bad[0] = 24  # the size field disagrees with the frame
    assert tread_at(bad, 0, len(bad)) is None
