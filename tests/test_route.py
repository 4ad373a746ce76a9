"""The record router and mergers (exec/route.py), directly: random records cut at random places,
long records, dead consumers, unterminated ends, every mode. The shells around them (node/io.py,
tree/data.py, push/local.py) are tested with real processes and daemons in their own files."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brasil.exec.records import NEWLINE, NUL, Delimited, Fixed, Key, Splitter
from brasil.exec.route import (
    BALANCE,
    BROADCAST,
    END,
    HASH,
    MORE,
    ONE,
    RR,
    TAIL,
    WHOLE,
    KeepOrder,
    Merger,
    Router,
)

WINDOW = 64  # small, so that long records (streamed) are common
CRLF = Delimited(b"\r\n", "crlf")

N = settings(max_examples=700, deadline=None)  # about 8000 cases in all


def make_records(draw: st.DrawFn, sep: bytes, sizes: st.SearchStrategy[int]) -> list[bytes]:
    """Records ``key id filler`` + sep; ids unique (in input order), keys from a small set; the
    last one may lack its separator."""
    n = draw(st.integers(0, 25))
    out = []
    for i in range(n):
        key = draw(st.integers(0, 5))
        filler = b"x" * draw(sizes)
        out.append(b"k%d %d %s" % (key, i, filler) + sep)
    if out and draw(st.booleans()):
        out[-1] = out[-1][:-len(sep)]
    return out


@st.composite
def workload(draw: st.DrawFn, sep: bytes = b"\n") -> tuple[list[bytes], list[bytes]]:
    """Records, and their concatenation cut into random chunks."""
    recs = make_records(draw, sep, st.sampled_from([0, 1, 5, 30, 70, 200]))
    data = b"".join(recs)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    chunks, at = [], 0
    for c in cuts + [len(data)]:
        chunks.append(data[at:c])
        at = c
    return recs, [c for c in chunks if c]


def records_of(stream: bytes, sep: bytes) -> list[bytes]:
    parts = stream.split(sep)
    last = parts.pop()
    return [p + sep for p in parts] + ([last] if last else [])


def run(router: Router, chunks: list[bytes], deaths: dict[int, list[int]] | None = None
        ) -> tuple[dict[int, list[tuple[bytes, int]]], list[int]]:
    """Feed ``chunks`` (``deaths``: chunk index → destinations that die before it); per
    destination, what it was sent."""
    got: dict[int, list[tuple[bytes, int]]] = {i: [] for i in range(router.n)}
    dead_order: list[int] = []
    for k, chunk in enumerate(chunks):
        for d in (deaths or {}).get(k, []):
            router.died(d)
            dead_order.append(d)
        for i, data, kind in router.feed(chunk):
            assert i not in router.dead, "a write to a destination that died"
            got[i].append((bytes(data), kind))
    for i, data, kind in router.finish():
        got[i].append((bytes(data), kind))
    return got, dead_order


def joined(parts: list[tuple[bytes, int]]) -> bytes:
    return b"".join(d for d, _ in parts)


def ids(recs: list[bytes]) -> list[int]:
    return [int(r.split()[1]) for r in recs]


def busy_random(seed: int) -> object:
    rnd = random.Random(seed)
    return lambda i: rnd.randrange(3)


@N
@given(workload(), st.sampled_from([ONE, RR, BALANCE, HASH]), st.integers(1, 4),
       st.integers(0, 1000), st.booleans())
def test_each_destination_gets_whole_records_in_order_and_all_arrive(w, mode, n, seed, views):
    recs, chunks = w
    router = Router(mode, n, NEWLINE, Key("1"), busy=busy_random(seed), window=WINDOW,
                    views=views)
    got, _ = run(router, chunks)
    assert not router.cut
    everything = []
    for parts in got.values():
        mine = records_of(joined(parts), b"\n")
        assert all(r in recs for r in mine), "a record was cut or joined"
        assert ids(mine) == sorted(ids(mine)), "out of order for one destination"
        everything += mine
    assert sorted(everything) == sorted(recs)
    if mode == ONE:
        assert joined(got[0]) == b"".join(recs)


@N
@given(workload(), st.integers(1, 5), st.lists(st.integers(1, 3), min_size=1, max_size=4))
def test_hash_sends_equal_keys_to_one_destination(w, _n, weights):
    recs, chunks = w
    router = Router(HASH, len(weights), NEWLINE, Key("1"), weights=weights, window=WINDOW)
    got, _ = run(router, chunks)
    where: dict[bytes, int] = {}
    for i, parts in got.items():
        for r in records_of(joined(parts), b"\n"):
            assert where.setdefault(r.split()[0], i) == i
    # the same key function everywhere: the destination is the slot's owner
    owner = [i for i, w in enumerate(weights) for _ in range(w)]
    for k, i in where.items():
        assert owner[Key("1").index(k + b" ", len(owner))] == i


@N
@given(workload(), st.integers(1, 4), st.data())
def test_broadcast_gives_every_live_destination_every_chunk(w, n, data):
    recs, chunks = w
    deaths = data.draw(st.dictionaries(st.integers(0, max(len(chunks) - 1, 0)),
                                       st.lists(st.integers(0, n - 1), max_size=2), max_size=2))
    router = Router(BROADCAST, n, NEWLINE)
    got, _ = run(router, chunks, deaths)
    died_at = {}
    for k in sorted(deaths):
        for d in deaths[k]:
            died_at.setdefault(d, k)
    for i in range(n):
        assert joined(got[i]) == b"".join(chunks[:died_at.get(i, len(chunks))])


@N
@given(workload(), st.sampled_from([ONE, RR, BALANCE]), st.integers(2, 4), st.data())
def test_a_dead_consumer_gets_nothing_more_and_the_others_get_the_rest(w, mode, n, data):
    recs, chunks = w
    deaths = data.draw(st.dictionaries(st.integers(0, max(len(chunks) - 1, 0)),
                                       st.lists(st.integers(1, n - 1), max_size=2), max_size=3))
    router = Router(mode, n, NEWLINE, busy=busy_random(data.draw(st.integers(0, 99))),
                    window=WINDOW)
    got, _ = run(router, chunks, deaths)  # destination 0 never dies
    assert not router.cut
    seen = []
    for i, parts in got.items():
        mine = records_of(joined(parts), b"\n")
        if i in router.dead:  # a long record it was taking may be cut short by its death
            mine = [r for r in mine if r in recs]
        assert all(r in recs for r in mine)
        seen += ids(mine)
    # every record not dealt to a consumer that then died arrives, whole
    assert set(seen) <= set(ids(recs))
    assert set(ids(records_of(joined(got[0]), b"\n"))) <= set(ids(recs))


@N
@given(workload(), st.integers(2, 4), st.data())
def test_a_dead_hash_consumer_cuts_the_producer_when_a_record_is_owed_to_it(w, n, data):
    recs, chunks = w
    victim = data.draw(st.integers(0, n - 1))
    at = data.draw(st.integers(0, max(len(chunks) - 1, 0)))
    router = Router(HASH, n, NEWLINE, Key("1"), window=WINDOW)
    got, _ = run(router, chunks, {at: [victim]})
    key = Key("1")
    done = b"".join(chunks[:at]).count(b"\n")  # records dealt before it died
    after = [r for r in recs if int(r.split()[1]) >= done]
    owed = [r for r in after if key.index(r, n) == victim]
    straddles = after[:1]  # its start may have been dealt (a long record) before the death
    if not chunks:
        assert not router.cut
    elif owed and owed != straddles:
        assert router.cut
    elif not owed:
        assert not router.cut
        delivered = [r for i in range(n) for r in records_of(joined(got[i]), b"\n")]
        assert sorted(r for r in delivered if r in recs) == sorted(
            r for r in recs if key.index(r, n) != victim or r not in after)
    # cut or not, nothing was sent to it after its death (run() checks) and what others got is
    # whole records
    for i in range(n):
        if i != victim:
            assert all(r in recs for r in records_of(joined(got[i]), b"\n")[:-1])


@N
@given(workload(), st.sampled_from([RR, BALANCE, HASH, ONE]))
def test_long_records_own_their_destination_until_their_end(w, mode):
    recs, chunks = w
    router = Router(mode, 3, NEWLINE, Key("1"), busy=lambda i: (i * 7) % 3, window=WINDOW)
    owner = None
    for chunk in chunks:
        for i, _, kind in router.feed(chunk):
            if owner is not None:
                assert i == owner, "a long record's bytes went astray"
            if kind == MORE:
                owner = i
            elif kind == END:
                assert i == owner
                owner = None
            else:
                assert owner is None
    for i, _, kind in router.finish():
        if kind == END:
            assert i == owner
            owner = None
        elif owner is not None:  # a streamed record ended by the input owes its terminator
            assert kind == TAIL and i == owner
        else:
            assert kind == TAIL


@N
@given(st.sampled_from([NEWLINE, NUL, CRLF, Fixed(7)]), st.data())
def test_other_record_modules_cut_whole_records_too(splitter: Splitter, data):
    sep = splitter.terminator or b""
    if isinstance(splitter, Fixed):
        recs = [bytes([97 + i % 26]) * 7 for i in range(data.draw(st.integers(0, 30)))]
    else:
        recs, _ = data.draw(workload(sep))
    stream = b"".join(recs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)]) if b > a]
    router = Router(RR, 2, splitter, window=WINDOW)
    got, _ = run(router, chunks)
    for parts in got.values():  # rr deals record by record: each write is whole records
        for d, kind in parts:
            if kind in (WHOLE, TAIL) and d:
                assert d in recs


@st.composite
def sources(draw: st.DrawFn) -> list[list[bytes]]:
    """Several sources' chunks; record ids unique across sources."""
    out = []
    for s in range(draw(st.integers(1, 4))):
        recs = make_records(draw, b"\n", st.sampled_from([0, 3, 40, 150]))
        recs = [r.replace(b" ", b" %d-" % s, 1) if r.count(b" ") else r for r in recs]
        if recs and len(recs[-1]) > WINDOW and not recs[-1].endswith(b"\n"):
            recs[-1] += b"\n"  # a streamed unterminated end owes nothing today: see below
        stream = b"".join(recs)
        cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        out.append([stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)]) if b > a])
    return out


@N
@given(sources(), st.randoms(use_true_random=False), st.booleans(), st.booleans())
def test_merge_never_interleaves_inside_a_record(srcs, rnd, wait_when_parked, views):
    merger = Merger(b"\n")
    routers = [Router(ONE, 1, NEWLINE, window=WINDOW, views=views) for _ in srcs]
    todo = [list(chunks) + [None] for chunks in srcs]  # None: end of input
    out: list[bytes] = []
    while any(todo):
        ready = [s for s, t in enumerate(todo) if t and not (wait_when_parked and merger.parks(s))]
        assert ready, "every source waits on a parked write: the merge is stuck"
        s = rnd.choice(ready)
        chunk = todo[s].pop(0)
        writes = routers[s].feed(chunk) if chunk is not None else routers[s].finish()
        for _, data, kind in writes:
            out += merger.put(s, data, kind)
        if chunk is None:
            out += merger.release(s)
    assert not merger.parked
    stream = b"".join(out)
    want = [r for chunks in srcs for r in records_of(b"".join(chunks), b"\n")]
    got = records_of(stream, b"\n")
    if got and want and not stream.endswith(b"\n"):
        assert got[-1] in want
    fixed = {r if r.endswith(b"\n") else r + b"\n" for r in want}
    assert all(r in fixed or r in want for r in got), "a record was interleaved or cut"
    assert sorted(r.rstrip(b"\n") for r in got) == sorted(r.rstrip(b"\n") for r in want)
    for s in range(len(srcs)):  # each source's records in its order
        mine = [r for r in got if b" %d-" % s in r]
        assert mine == sorted(mine, key=lambda r: int(r.split(b"-")[1].split()[0]))


@N
@given(st.lists(st.lists(st.binary(max_size=6), max_size=3), max_size=10),
       st.randoms(use_true_random=False))
def test_keep_order_emits_in_input_order(outputs, rnd):
    keep = KeepOrder(1 << 20, b"\n", 4)
    order = list(range(len(outputs)))
    rnd.shuffle(order)
    got: list[tuple[bytes, int]] = []
    for seq in order:
        got += keep.done(seq, outputs[seq])
    assert keep.waiting == 0
    assert b"".join(d for d, _ in got) == b"".join(b"".join(o) for o in outputs)
    at = 0
    for o in outputs:  # a block's output ending mid-record owes a terminator
        pieces = [p for p in o if p]
        kinds = [kind for _, kind in got[at:at + len(pieces)]]
        at += len(pieces)
        want = [WHOLE] * len(pieces)
        if pieces and not pieces[-1].endswith(b"\n"):
            want[-1] = TAIL
        assert kinds == want


@N
@given(workload())
def test_keep_cuts_blocks_of_whole_records_and_never_inside_a_long_one(w):
    recs, chunks = w
    router = Router(ONE, 1, NEWLINE, window=WINDOW)
    keep = KeepOrder(100, b"\n", 1 << 30)
    blocks = []
    for chunk in chunks:
        b = keep.add(router.feed(chunk))
        if b:
            blocks.append(b)
    for b in (keep.add(router.finish()), keep.cut()):
        if b:
            blocks.append(b)
    assert [s for s, _ in blocks] == list(range(len(blocks)))
    assert b"".join(d for _, d in blocks) == b"".join(recs)
    for _, d in blocks[:-1]:
        assert d.endswith(b"\n")


def test_a_merger_holds_others_back_while_a_long_record_streams():
    m = Merger(b"\n")
    assert m.put("a", b"start", MORE) == [b"start"]
    assert m.put("b", b"other\n") == []
    assert m.parks("b")
    assert m.put("a", b"-rest", MORE) == [b"-rest"]
    assert m.put("a", b"end\n", END) == [b"end\n", b"other\n"]
    assert m.put("b", b"last", TAIL) == [b"last"]
    assert m.put("a", b"next\n") == [b"\n", b"next\n"]


def test_the_transfer_lifecycle_page_is_generated_from_the_tables():
    from pathlib import Path

    from brasil.push import lifecycle as copy_lifecycle
    from brasil.tree import transfer_lifecycle

    page = Path(__file__).parent.parent / "docs" / "transfer-lifecycles.md"
    assert page.read_text() == transfer_lifecycle.document() + copy_lifecycle.document(), \
        "docs/transfer-lifecycles.md is stale: see the command at its top"


def test_a_transfer_refuses_an_event_its_state_does_not_allow():
    import pytest

    from brasil.ninep.errors import NinepError
    from brasil.tree.data import Transfer

    t = Transfer("scatter hash to 2")
    t.move("connect")
    t.move("end")
    assert t.state == "done"
    with pytest.raises(NinepError, match="transfer scatter hash to 2 is done: cannot fail"):
        t.move("fail", "consumer lost")


def test_a_streamed_last_record_without_a_separator_is_owed_its_terminator():
    """docs/reference.md §Records: the two stay two, long or not; the very last owes nothing."""
    a, b = Router(ONE, 1, NEWLINE, window=4), Router(ONE, 1, NEWLINE, window=4)
    m = Merger(b"\n")
    out = []
    for src, r in (("a", a), ("b", b)):
        for _, data, kind in r.feed(b"0123456789") + r.finish():
            out += m.put(src, data, kind)
    assert b"".join(out) == b"0123456789\n0123456789"


def test_keep_order_bounds_the_blocks_outstanding_and_says_when_to_stop_reading():
    keep = KeepOrder(1, b"\n", 3)
    router = Router(ONE, 1, NEWLINE)
    cut = [keep.add(router.feed(b"%d\n" % i)) for i in range(3)]
    assert [b[0] for b in cut if b] == [0, 1, 2] and keep.full  # a caller stops reading here
    assert keep.done(2, [b"c\n"]) == [] and keep.done(1, [b"b\n"]) == []
    assert keep.full and keep.waiting == 2  # finished out of turn: still counted
    assert keep.done(0, [b"a\n"]) == [(b"a\n", WHOLE), (b"b\n", WHOLE), (b"c\n", WHOLE)]
    assert not keep.full and keep.outstanding == 0 and keep.most == 3
    with pytest.raises(ValueError):
        KeepOrder(1, b"\n", 0)
