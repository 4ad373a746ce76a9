"""Properties of the codec over random messages: encode/decode and format/parse round-trip exactly,
framing does not care where the stream is split, and no byte string makes decoding fail with
anything but RemoteProtocolError."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brasil.ninep import messages as m
from brasil.ninep import text
from brasil.ninep.constants import MAXWELEM, NONUNAME
from brasil.ninep.errors import RemoteProtocolError
from brasil.ninep.framing import FrameReader
from brasil.ninep.messages import MESSAGES, decode_frame, encode
from brasil.ninep.wire import Qid, Stat, field_kinds

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MORE = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- strategies ---------------------------------------------------------------------------------


def uint(bits: int) -> st.SearchStrategy[int]:
    top = 2**bits - 1
    return st.one_of(st.sampled_from([0, 1, top, top - 1]), st.integers(0, top))


# Any unicode text without lone surrogates (UTF-8 cannot carry those): control characters,
# non-printables, characters beyond the BMP, quotes and backslashes all included.
strings = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
names = st.lists(strings, max_size=MAXWELEM).map(tuple)
qids = st.builds(Qid, uint(8), uint(32), uint(64))


def stats(dotu: bool) -> st.SearchStrategy[Stat]:
    u = {}
    if dotu:
        u = dict(extension=strings, n_uid=uint(32), n_gid=uint(32), n_muid=uint(32))
    return st.builds(Stat, type=uint(16), dev=uint(32), qid=qids, mode=uint(32), atime=uint(32),
                     mtime=uint(32), length=uint(64), name=strings, uid=strings, gid=strings,
                     muid=strings, **u)


def kind_strategy(kind_name: str, dotu: bool) -> st.SearchStrategy:
    return {
        "u8": uint(8), "u16": uint(16), "u32": uint(32), "u64": uint(64), "mode": uint(32),
        "qid": qids, "str": strings, "data": st.binary(max_size=64), "strs": names,
        "qids": st.lists(qids, max_size=MAXWELEM).map(tuple), "stat": stats(dotu),
    }[kind_name]


def message_strategy(cls: type, dotu: bool) -> st.SearchStrategy[m.Message]:
    """Random valid ``cls`` messages; in plain 9P2000 the .u fields stay at their defaults."""
    fields = {name: kind_strategy(kind.name, dotu)
              for name, kind in field_kinds(cls) if dotu or not kind.dotu}
    return st.builds(cls, tag=uint(16), **fields)


CLASSES = sorted(MESSAGES.values(), key=lambda c: c.TYPE)
CASES = [(cls, dotu) for cls in CLASSES for dotu in (False, True)]
CASE_IDS = [f"{cls.__name__}-{'u' if dotu else 'plain'}" for cls, dotu in CASES]


ANY_MESSAGE = {dotu: st.one_of([message_strategy(cls, dotu) for cls in CLASSES])
               for dotu in (False, True)}
# (dotu, message) and (dotu, [messages]) with every message valid in that dialect
dialect_and_message = st.one_of([ANY_MESSAGE[d].map(lambda x, d=d: (d, x)) for d in (False, True)])
dialect_and_messages = st.one_of([
    st.lists(ANY_MESSAGE[d], min_size=1, max_size=12).map(lambda xs, d=d: (d, xs))
    for d in (False, True)])


# ---- encode/decode ------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "dotu"), CASES, ids=CASE_IDS)
def test_random_message_survives_encode_then_decode(cls, dotu):
    @FAST
    @given(message_strategy(cls, dotu))
    def check(msg):
        buf = encode(msg, dotu)
        assert struct.unpack_from("<IBH", buf) == (len(buf), cls.TYPE, msg.tag)
        assert decode_frame(buf, dotu=dotu) == msg
        assert encode(decode_frame(buf, dotu=dotu), dotu) == buf

    check()


@MORE
@given(st.sampled_from(CLASSES).flatmap(lambda cls: message_strategy(cls, True)))
def test_plain_encoding_drops_exactly_the_9p2000u_fields(msg):
    plain = decode_frame(encode(msg, False), dotu=False)
    for name, kind in field_kinds(type(msg)):
        got, sent = getattr(plain, name), getattr(msg, name)
        if kind.dotu:
            assert got == type(msg).__dataclass_fields__[name].default
        elif kind.name == "stat":
            assert (got.extension, got.n_uid, got.n_gid, got.n_muid) == ("",) + (NONUNAME,) * 3
            assert (got.name, got.qid, got.length) == (sent.name, sent.qid, sent.length)
        else:
            assert got == sent


# ---- text form ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "dotu"), CASES, ids=CASE_IDS)
def test_random_message_survives_format_then_parse(cls, dotu):
    @FAST
    @given(message_strategy(cls, dotu))
    def check(msg):
        line = text.format(msg)
        assert "\n" not in line and "\r" not in line
        assert line.isprintable()
        assert text.parse(line) == msg

    check()


@MORE
@given(st.text(max_size=40), st.binary(max_size=64))
def test_text_form_carries_any_string_and_any_bytes_exactly(s, data):
    # st.text() here may include lone surrogates: the text form is for Python values, not wire bytes
    for msg in (m.Rerror(1, s, errno=3), m.Twrite(2, 3, 4, data), m.Twalk(1, 2, 3, (s, s, "x")),
                m.Rstat(1, Stat(name=s, extension=s)), m.Tcreate(1, 2, s, 0o644, 0, s)):
        line = text.format(msg)
        assert text.parse(line) == msg, line


# ---- framing ------------------------------------------------------------------------------------


@MORE
@given(dialect_and_messages, st.lists(st.integers(0, 10_000), max_size=30))
def test_frame_reader_returns_the_same_messages_however_the_stream_is_split(case, cuts):
    dotu, msgs = case
    stream = b"".join(encode(x, dotu) for x in msgs)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reader = FrameReader(msize=1 << 20, dotu=dotu)
    out = []
    for a, b in itertools.pairwise(points):
        reader.feed(stream[a:b])
        while (got := reader.next_message()) is not None:
            out.append(got)
    assert out == msgs
    assert reader.buffered == 0
    assert reader.next_message() is None


# ---- arbitrary bytes ----------------------------------------------------------------------------


def decode_or_reject(buf: bytes, dotu: bool) -> m.Message | None:
    """Decode; only RemoteProtocolError may escape. Anything decoded must re-encode to ``buf``."""
    try:
        msg = decode_frame(buf, dotu=dotu)
    except RemoteProtocolError:
        return None
    assert isinstance(msg, m.Message)
    assert encode(msg, dotu) == bytes(buf)
    return msg


@MORE
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_either_decode_or_raise_remote_protocol_error(buf, dotu):
    decode_or_reject(buf, dotu)


type_bytes = st.one_of(st.sampled_from(sorted(MESSAGES)), st.integers(0, 255))


@MORE
@given(type_bytes, uint(16), st.binary(max_size=200), st.booleans())
def test_arbitrary_body_behind_an_honest_header_decodes_or_raises_remote_protocol_error(
        typ, tag, body, dotu):
    decode_or_reject(struct.pack("<IBH", 7 + len(body), typ, tag) + body, dotu)


@MORE
@given(dialect_and_message,
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_valid_frame_decodes_or_raises_remote_protocol_error(case, edits):
    dotu, msg = case
    buf = bytearray(encode(msg, dotu))
    for where, value in edits:
        buf[4 + where % (len(buf) - 4)] = value  # keep the size field, corrupt the rest
    decode_or_reject(bytes(buf), dotu)


@MORE
@given(st.binary(max_size=300), st.booleans(), st.integers(1, 64))
def test_frame_reader_on_arbitrary_bytes_yields_messages_or_raises_remote_protocol_error(
        stream, dotu, chunk):
    reader = FrameReader(msize=8192, dotu=dotu)
    try:
        for i in range(0, len(stream), chunk):
            reader.feed(stream[i:i + chunk])
            while (got := reader.next_message()) is not None:
                assert isinstance(got, m.Message)
    except RemoteProtocolError:
        pass
