"""Record modules (exec/records.py): blocks of whole records, linear time, bounded memory."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brasil.exec.records import (
    NEWLINE,
    NUL,
    WINDOW,
    Blank,
    Delimited,
    Fixed,
    Key,
    Reassembler,
    Regex,
    Splitter,
    parse_rs,
)


def run(splitter: Splitter, chunks: list[bytes], window: int = WINDOW) -> tuple[list[bytes], bytes]:
    """Feed ``chunks``; returns the pieces in output order (each tagged by kind) and all bytes."""
    rs = Reassembler(splitter, window)
    out: list[bytes] = []
    for c in chunks:
        out += [p for p in rs.feed(c) if p]
    out.append(rs.finish())
    return out, b"".join(out)


def records_of(splitter: Splitter, data: bytes) -> list[bytes]:
    return splitter.split(data)


@pytest.mark.parametrize("splitter,data", [
    (NEWLINE, b"a\nbb\n\nccc"),
    (NUL, b"x\0y\0\0z"),
    (Fixed(3), b"abcdefgh"),
    (Blank(), b"p1 l1\np1 l2\n\n\np2\n  \n\np3"),
    (Regex("END;"), b"aEND;bbEND;cEND"),
    (Delimited(b"--", "dash"), b"a--b----c"),
])
def test_blocks_hold_whole_records_whatever_the_chunking(splitter, data):
    expected = records_of(splitter, data)
    for size in range(1, len(data) + 1):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        rs = Reassembler(splitter)
        got: list[bytes] = []
        for c in chunks:
            fed = rs.feed(c)
            assert not fed.end and not fed.more
            got += splitter.split(fed.block) if fed.head or fed.whole else []
        tail = rs.finish()
        got += [tail] if tail else []
        assert got == expected, (size, got)


def test_a_last_record_without_a_separator_is_delivered():
    assert run(NEWLINE, [b"a\nb"])[1] == b"a\nb"
    assert NEWLINE.split(b"a\nb") == [b"a\n", b"b"]


@settings(max_examples=150, deadline=None)
@given(records=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
       final=st.booleans(), cuts=st.lists(st.integers(0, 2000), max_size=20),
       window=st.integers(1, 64))
def test_streamed_records_are_never_cut_and_nothing_is_lost(records, final, cuts, window):
    """With a tiny window long records stream through: every piece up to a record's end belongs
    to that record alone, pieces come in order, and every byte comes out once."""
    data = b"".join(r + b"\n" for r in records)
    if not final and data:
        data = data[:-1]
    bounds = sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]
    chunks, at = [], 0
    for b in bounds:
        chunks.append(data[at:b])
        at = b
    rs = Reassembler(NEWLINE, window)
    got: list[bytes] = []
    streaming = b""
    for c in chunks:
        if not c:
            continue
        end, head, whole, more = rs.feed(c)
        if end:
            got.append(streaming + end)
            streaming = b""
        if head or whole:
            got += NEWLINE.split(head + whole)
        streaming += more
        assert rs.nheld <= window + len(c)  # never more than a window (plus the chunk) held
    tail = rs.finish()
    if streaming or tail:
        got.append(streaming + tail)
    assert b"".join(got) == data
    assert got == NEWLINE.split(data)


def test_a_400_mb_line_is_streamed_in_linear_time_with_bounded_memory():
    """Issue 7 §4: each chunk used to be re-joined onto everything before it (quadratic, and
    unbounded). Now at most a window is held and the rest passes through as it comes."""
    rs = Reassembler(NEWLINE)
    chunk = b"x" * 65536
    passed = 0
    for _ in range(400 * 16):  # 400 MiB, no newline
        end, head, whole, more = rs.feed(chunk)
        assert not end and not whole
        passed += len(more)
        assert rs.nheld <= WINDOW
    end, head, whole, more = rs.feed(b"tail\nnext")
    assert end == b"tail\n" and not whole and not more
    assert passed == 400 * 16 * 65536
    assert rs.finish() == b"next"


def test_a_catastrophic_regex_is_linear():
    """Issue 7 §3: `rs regex (a+)+c` with backtracking took 13.5 s on 28 characters."""
    sp = parse_rs(["regex", "(a+)+c"])
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(run(sp, [b"a" * 5000 + b"b\n"] * 20)),
                         daemon=True)
    t.start()
    t.join(30)
    assert result, "the regex separator did not finish: it is not linear"


@pytest.mark.parametrize("args,message", [
    (["fixed", "99999999999999"], "between 1 and"),
    (["fixed", "0"], "between 1 and"),
    (["fixed", "x"], "is not a number"),
    (["regex", "("], r"missing \)"),
    (["regex", "a*"], "matches the empty string"),
    (["bogus"], "unknown record separator"),
    (["pkg.mod:Class"], "unknown record separator"),  # no user modules in the daemon
])
def test_bad_separators_are_refused_with_the_reason(args, message):
    with pytest.raises(ValueError, match=message):
        parse_rs(args)


def test_keys_are_fields_or_regex_matches():
    assert Key("2").of(b"a  b c\n") == b"b"
    assert Key("5").of(b"a b\n") == b""
    assert Key(r"user=(\w+)").of(b"x user=alice y") == b"alice"
    assert Key(r"\d+").of(b"abc 123 4") == b"123"
    assert Key("1").index(b"k v\n", 7) == Key("1").index(b"k w\n", 7)
    with pytest.raises(ValueError):
        Key("(")


class Semicolons(Splitter):
    """A user module: only ``ends`` is needed."""

    name = "semicolons"

    def ends(self, buf, start, held):
        i = buf.find(b";", start)
        while i >= 0:
            yield i + 1
            i = buf.find(b";", i + 1)


def test_a_user_module_needs_only_ends():
    sp = parse_rs([f"{__name__}:Semicolons"], user_modules=True)
    out, data = run(sp, [b"a;b", b"b;c"])
    assert data == b"a;bb;c" and sp.split(b"a;bb;c") == [b"a;", b"bb;", b"c"]
