"""The canonical one-line text form: exact lines for known messages, parsing hand-written lines,
exact round-trips of awkward strings, and TextError for lines that are not messages."""

from __future__ import annotations

import pytest

from brasil.ninep import messages as m
from brasil.ninep import text
from brasil.ninep.constants import DMDIR, NOFID
from brasil.ninep.text import TextError
from brasil.ninep.wire import Qid, Stat

EXACT = [
    (m.Twalk(1, 1, 2, ("csrv", "local")), "Twalk tag 1 fid 1 newfid 2 wname csrv local"),
    (m.Twalk(1, 1, 2, ()), "Twalk tag 1 fid 1 newfid 2 wname"),
    (m.Twalk(1, 1, 2, ("a b", "")), "Twalk tag 1 fid 1 newfid 2 wname 'a b' ''"),
    (m.Tversion(0xFFFF, 8192, "9P2000"), "Tversion tag 65535 msize 8192 version 9P2000"),
    (m.Rwalk(1, (Qid(0x80, 0, 1), Qid(0xC4, 2, 0xABC))),
     "Rwalk tag 1 wqid (0000000000000001 0 d) (0000000000000abc 2 dat)"),
    (m.Rattach(3, Qid(0, 7, 0x2A)), "Rattach tag 3 qid (000000000000002a 7 -)"),
    (m.Rattach(3, Qid(0xFE, 0, 0)), "Rattach tag 3 qid (0000000000000000 0 dalmAtL)"),
    (m.Rread(1, b"ab\x00'\\\n\xff"), "Rread tag 1 data 'ab\\x00\\'\\\\\\n\\xff'"),
    (m.Rread(1, b"word"), "Rread tag 1 data 'word'"),
    (m.Tcreate(1, 2, "f", DMDIR | 0o755, 1),
     "Tcreate tag 1 fid 2 name f perm 0o20000000755 mode 1"),
    (m.Tattach(1, 2), "Tattach tag 1 fid 2 afid 4294967295 uname '' aname ''"),
    (m.Rerror(1, "it's gone"), "Rerror tag 1 ename 'it\\'s gone'"),
    (m.Rerror(1, "gone", errno=2), "Rerror tag 1 ename gone errno 2"),
    (m.Tauth(1, 5, "u", "", n_uname=1000), "Tauth tag 1 afid 5 uname u aname '' n_uname 1000"),
    (m.Rstat(1, Stat(name="a b", qid=Qid(0, 1, 2), mode=0o644)),
     "Rstat tag 1 stat (name 'a b' uid '' gid '' muid '' qid (0000000000000002 1 -) mode 0o644"
     " atime 0 mtime 0 length 0 type 0 dev 0)"),
    (m.Rstat(1, Stat(name="a", n_uid=5)),
     "Rstat tag 1 stat (name a uid '' gid '' muid '' qid (0000000000000000 0 -) mode 0o0"
     " atime 0 mtime 0 length 0 type 0 dev 0 n_uid 5)"),
    (m.Rclunk(9), "Rclunk tag 9"),
]


@pytest.mark.parametrize(("msg", "line"), EXACT, ids=[line.split(" ")[0] for _, line in EXACT])
def test_message_formats_to_its_exact_canonical_line(msg, line):
    assert text.format(msg) == line


@pytest.mark.parametrize(("msg", "line"), EXACT, ids=[line.split(" ")[0] for _, line in EXACT])
def test_canonical_line_parses_back_to_the_message(msg, line):
    assert text.parse(line) == msg


def test_9p2000u_fields_at_their_defaults_are_left_out_of_the_line():
    assert "errno" not in text.format(m.Rerror(1, "x"))
    assert "n_uname" not in text.format(m.Tattach(1, 2))
    assert "extension" not in text.format(m.Tcreate(1, 2, "f", 0, 0))
    line = text.format(m.Rstat(1, Stat()))
    assert not any(k in line for k in ("extension", "n_uid", "n_gid", "n_muid"))
    assert "n_uname 0" in text.format(m.Tattach(1, 2, n_uname=0))  # 0 is not the default


def test_hand_written_line_with_extra_blanks_and_other_number_bases_parses():
    got = text.parse("  Tread   tag 0x10 fid 0o7 offset 1_000 count 8192  ")
    assert got == m.Tread(16, 7, 1000, 8192)


def test_hand_written_line_may_give_fields_in_any_order_and_leave_defaults_out():
    assert text.parse("Tattach fid 3 tag 1") == m.Tattach(1, 3, NOFID, "", "")
    got = text.parse("Rstat tag 1 stat (name x mode 0o644)")
    assert got == m.Rstat(1, Stat(name="x", mode=0o644))


@pytest.mark.parametrize("s", [
    "", " ", "a b", "'", "\\", "(", ")", "()", "tab\there", "new\nline", "cr\r", "\x00\x01\x7f",
    "ünïcödé", "日本語", "\u00a0nbsp", "\u2028", "\u200b", "\ufeff", "emoji 🙂",
    "\U000e0001", "\U000f0000", "\U0010ffff", "\U0001d173", "...", "'...", "0x10", "wname",
], ids=repr)
def test_awkward_string_round_trips_exactly_through_the_text_form(s):
    for msg in (m.Rerror(1, s), m.Twalk(1, 2, 3, (s, "x", s)),
                m.Rstat(1, Stat(name=s, uid=s, extension=s)), m.Tcreate(1, 2, s, 0, 0, s)):
        line = text.format(msg)
        assert line.isprintable(), line  # one printable line, whatever the string held
        assert text.parse(line) == msg, line


def test_non_printable_characters_beyond_the_bmp_use_an_eight_digit_escape():
    assert text.format(m.Rerror(1, "\U000e0001")) == "Rerror tag 1 ename '\\U000e0001'"
    assert text.parse("Rerror tag 1 ename '\\U000e0001'").ename == "\U000e0001"


def test_every_byte_value_round_trips_through_data():
    data = bytes(range(256)) * 2
    for msg in (m.Rread(1, data), m.Twrite(1, 2, 3, data)):
        line = text.format(msg)
        assert line.isascii() and line.isprintable()
        assert text.parse(line) == msg


def test_every_qid_type_byte_round_trips():
    for qtype in range(256):
        msg = m.Rattach(1, Qid(qtype, 3, 0xFFFFFFFFFFFFFFFF))
        assert text.parse(text.format(msg)) == msg, qtype


def test_qid_type_bit_without_a_letter_is_written_in_hex():
    line = text.format(m.Rattach(1, Qid(0x81, 0, 0)))
    assert line == "Rattach tag 1 qid (0000000000000000 0 0x81)"


def test_cut_data_is_marked_and_still_parses_as_a_prefix():
    line = text.format(m.Rread(1, b"abcdefgh"), limit=3)
    assert line == "Rread tag 1 data 'abc'..."
    assert text.parse(line) == m.Rread(1, b"abc")
    assert text.format(m.Rread(1, b"abc"), limit=3) == "Rread tag 1 data 'abc'"


@pytest.mark.parametrize("line", [
    "",
    "Tnonsense tag 1",
    "tag 1 Tclunk",
    "Tclunk tag 1 fid",
    "Tclunk tag 1 fid x",
    "Tclunk tag 1 fd 2",
    "Tclunk tag 1 fid 2)",
    "Rattach tag 1 qid (0 0 -",
    "Rattach tag 1 qid (0 0)",
    "Rattach tag 1 qid (0 0 z)",
    "Rerror tag 1 ename 'unterminated",
    "Rerror tag 1 ename 'bad \\q escape'",
    "Rstat tag 1 stat (name)",
    "Rstat tag 1 stat (colour red)",
    "Tclunk fid 1",
    "Tversion tag 1 msize (1) version x",
])
def test_line_that_is_not_a_message_raises_text_error(line):
    with pytest.raises(TextError):
        text.parse(line)
