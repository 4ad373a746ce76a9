"""The worker↔scheduler lines (batch/messages.py): every message survives its encoding, the
text is the previous versions' (old workers and schedulers interoperate), and what is not a
report is refused."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brasil.batch import messages as m
from brasil.batch.jobfile import MAX_ID

tokens = st.integers(0, MAX_ID)
statuses = st.integers(-(1 << 31), (1 << 31) - 1)
times = st.integers(0, 4_000_000_000_000_000).map(lambda n: n / 1_000_000)  # 6 decimals
words = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r "),
                min_size=1, max_size=20)
why = st.lists(words, max_size=5).map(" ".join)
# A tail of a few hundred bytes exercises the encoding as well as 4 KiB does; 4 KiB drew more
# data than hypothesis allows a case in a loaded run (its health check failed the suite).
tails = st.binary(max_size=256).map(lambda b: __import__("base64").b64encode(b).decode())

reports = st.one_of(
    st.builds(m.Start, tokens, statuses, times),
    st.builds(m.Done, tokens, statuses, times, times, why),
    st.builds(m.Clean, tokens, times, times),
    st.builds(m.Journaled, tokens, times),
    st.builds(m.Committed, tokens, times),
    st.builds(m.CommitFail, tokens, why),
    st.builds(m.Gone, st.lists(tokens, max_size=10)),
    st.builds(m.Renew, st.lists(tokens, max_size=10)),
    st.builds(m.Output, tokens, tokens, tails, words),
)
orders = st.one_of(
    st.builds(m.Order, st.sampled_from(sorted(m.ORDERS)), tokens),
    st.builds(m.Run, tokens, st.integers(1, MAX_ID), why, words,
              st.dictionaries(words, why, max_size=3), st.booleans(), st.integers(0, 10**6)),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(reports)
def test_a_report_survives_its_line(r):
    line = m.encode_report(r)
    assert "\n" not in line
    assert m.decode_report(line) == r
    assert m.encode_report(m.decode_report(line)) == line


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(orders)
def test_an_order_survives_its_line(o):
    line = m.encode_order(o)
    assert "\n" not in line
    assert m.decode_order(line) == o


@given(st.integers(0, MAX_ID), statuses, times, times)
def test_the_text_is_the_previous_versions(t, status, t0, t1):
    """As worker.py wrote them before this module (f-strings), word for word."""
    assert m.encode_report(m.Start(t, 3, t0)) == f"start {t} 3 {t0:.6f}"
    assert m.encode_report(m.Done(t, status, t0, t1, "no such file")) == \
        f"done {t} {status} {t0:.6f} {t1:.6f} no such file"
    assert m.encode_report(m.Done(t, status, t0, t1)) == f"done {t} {status} {t0:.6f} {t1:.6f}"
    assert m.encode_report(m.Clean(t, t0, t1)) == f"clean {t} {t0:.6f} {t1:.6f}"
    assert m.encode_report(m.Journaled(t, t0)) == f"journaled {t} {t0:.6f}"
    assert m.encode_report(m.Committed(t, t1)) == f"committed {t} {t1:.6f}"
    assert m.encode_report(m.CommitFail(t, "staging: x")) == f"commitfail {t} staging: x"
    assert m.encode_report(m.Gone([t])) == f"gone {t}"
    assert m.encode_report(m.Renew([t, 1])) == f"renew {t} 1"
    assert m.encode_report(m.Renew([])) == "renew"
    assert m.decode_order(f"ok {t}") == m.Order("ok", t)
    for verb in m.ORDERS:
        assert m.order(verb, t) == f"{verb} {t}"


def test_an_old_schedulers_run_line_decodes():
    line = 'run {"t": 7, "job": 3, "cmd": "true", "home": "/h", "env": {}, "isolate": false}'
    assert m.decode_order(line) == m.Run(7, 3, "true", "/h", {}, False, 0)
    assert m.encode_order(m.decode_order(line)) == line


@pytest.mark.parametrize("line", [
    "start 1 2", "done 1 0 1.0", "done -1 0 1.0 2.0", "done 1 0 nan 2.0", "done 1 0 inf 2.0",
    f"journaled {MAX_ID + 1} 1.0", "done 1 4294967296 1.0 2.0", "renew 1 x", "clean 1 1.0",
    "output 1 5 !!! host:/p", "output 1 5 aGk=", "output 1 5 aGk= ", "bogus 1", "commitfail",
    "start 1 2 " + "9" * 400,
])
def test_what_is_not_a_report_is_refused(line):
    with pytest.raises((ValueError, IndexError)):
        m.decode_report(line)


def test_lenient_where_it_always_was():
    assert m.decode_report("") is None
    assert m.decode_report(" done 1 0 1.0 2.0") is None  # an empty first word: skipped
    assert m.decode_report("gone -1 2") == m.Gone([2])
    assert m.decode_report("journaled 1 2.5 more") == m.Journaled(1, 2.5)
    assert m.decode_report("commitfail 4") == m.CommitFail(4, "")
