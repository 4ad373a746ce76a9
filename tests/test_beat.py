"""The heartbeat's report (tree/beat.py): a replica fed the reports equals the ledger, whatever
happened between reads; an idle subtree is reported as nothing; small drifts are not news.
On real trees: the root of 1+3+9 hears all 13 nodes, a lost leaf leaves, an idle read is empty."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brasil.tree.beat import MAX_LEFT, WHOLE, Ledger, Replica, moved
from fixtures import tree_of, wait_for

NAMES = st.sampled_from([f"n{i}" for i in range(12)])
LINES = st.sampled_from(["2 2 0.10 100 up", "2 1 0.10 100 up", "2 0 3.00 90 up"])
OPS = st.lists(st.one_of(st.tuples(st.just("set"), NAMES, LINES),
                         st.tuples(st.just("drop"), NAMES, st.just("")),
                         st.tuples(st.just("read"), st.just(""), st.just(""))), max_size=60)


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_a_replica_fed_every_report_equals_the_ledger(ops):
    ledger, replica, seen = Ledger(), Replica(), -1
    for op, name, line in ops + [("read", "", "")]:
        if op == "set":
            ledger.set(name, f"{name} {line}")
        elif op == "drop":
            ledger.drop(name)
        else:
            text, seen = ledger.report(seen)
            replica.apply(text)
            # the free total a reservation plans with, kept as lines change, is the lines' sum
            assert replica.free == sum(int(ln.split()[2]) for ln in replica.by_name.values())
    assert replica.by_name == {ln.split()[0]: ln for ln in ledger.lines()}


def test_an_unchanged_subtree_reports_nothing_and_a_change_reports_only_itself():
    ledger = Ledger()
    for i in range(100):
        ledger.set(f"n{i}", f"n{i} 2 2 0.00 100 up")
    whole, seen = ledger.report(-1)
    assert whole.splitlines()[0] == WHOLE and len(whole.splitlines()) == 101
    assert ledger.report(seen) == ("", seen)
    ledger.set("n7", "n7 2 1 0.00 100 up")
    ledger.set("n9", "n9 2 2 0.00 100 up")  # the same line: not a change
    ledger.drop("n3")
    text, seen = ledger.report(seen)
    assert text == "n7 2 1 0.00 100 up\n-n3\n"


def test_a_reader_behind_forgotten_departures_is_sent_the_whole_ledger():
    ledger = Ledger()
    _, seen = ledger.report(-1)
    for i in range(MAX_LEFT + 10):
        ledger.set(f"n{i}", f"n{i} 1 1 0 1 up")
        ledger.drop(f"n{i}")
    ledger.set("last", "last 1 1 0 1 up")
    text, _ = ledger.report(seen)
    assert text == f"{WHOLE}\nlast 1 1 0 1 up\n"


def test_drifting_values_are_news_only_past_a_step():
    base = "n1 4 4 0.50 8000 up arch=x86_64 free=4 load=0.50 mem=8589934592 memfree=8388608000"
    assert not moved(base, base.replace("0.50", "0.60"))
    assert moved(base, base.replace("0.50", "0.90"))
    assert not moved(base, base.replace("memfree=8388608000", "memfree=8300000000"))
    assert moved(base, base.replace("memfree=8388608000", "memfree=6000000000"))
    assert moved(base, base.replace("4 4", "4 3").replace("free=4", "free=3"))
    assert moved(base, base + " rack=r1")
    assert moved(None, base)


async def test_the_root_hears_every_node_and_an_idle_subtree_sends_nothing(tmp_path):
    async with tree_of(str(tmp_path), 3, 3) as (nodes, _):
        root, mid = nodes["n0"], nodes["n1"]
        assert set(root.children.by_name["n1"].report.by_name) == {"n1", "n1.1", "n1.2", "n1.3"}
        # Idle: a report made right after another is empty (against the ledger n1 keeps, which
        # is what its parent is sent).
        _, seen = mid.children.heartbeat(-1)
        assert mid.children.heartbeat(seen)[0] == ""
        # A leaf lost leaves n1's ledger, and then the root's view.
        await nodes["n1.2"].stop()
        await wait_for(lambda: "n1.2" not in root.children.by_name["n1"].report.by_name, 20)
        assert "n1.2" not in {ln.split()[0] for ln in root.children.status_lines()}
        assert mid.children.ledger.get("n1.2") is None


async def test_a_child_of_an_older_version_is_read_whole_through_its_subtree(tmp_path):
    """An older child has no ``heartbeat``: its ``subtree``, read whole each time, stands in."""
    from brasil.ninep.client import Client
    from brasil.ninep.synthetic import Entry, LiveFile, TableDir
    from brasil.tree.registry import _open_heartbeat, _read_from_start
    from fixtures import serving

    lines = ["old 2 2 0.00 100 up", "old.1 2 1 0.00 100 up"]
    local = lambda o: TableDir([Entry("subtree", 0o444,  # noqa: E731
                                      lambda o: LiveFile(lambda: "".join(f"{x}\n" for x in lines)))])
    root = TableDir([Entry("csrv", 0o555, lambda o: TableDir([Entry("local", 0o555, local)]))])
    async with serving(root) as (_, address):
        c = await Client.connect(address)
        try:
            f, whole = await _open_heartbeat(c)
            replica = Replica()
            replica.apply(whole + (await _read_from_start(f)).decode())
            assert replica.lines == lines
            lines.pop()
            replica.apply(whole + (await _read_from_start(f)).decode())
            assert replica.lines == lines[:1]
        finally:
            await c.close()


async def test_a_child_s_endless_report_is_refused_not_read_into_memory(tmp_path, monkeypatch):
    """A broken or hostile child answering its heartbeat with no end: the parent stops at
    MAX_REPORT and says so (the poller then drops the child)."""
    from brasil.ninep.client import Client
    from brasil.ninep.errors import NinepError
    from brasil.ninep.synthetic import Entry, LiveFile, TableDir
    from brasil.tree import registry
    from fixtures import serving

    monkeypatch.setattr(registry, "MAX_REPORT", 1 << 20)
    big = "x" * (8 << 20)
    local = lambda o: TableDir([Entry("heartbeat", 0o444,  # noqa: E731
                                      lambda o: LiveFile(lambda: big))])
    root = TableDir([Entry("csrv", 0o555, lambda o: TableDir([Entry("local", 0o555, local)]))])
    async with serving(root) as (_, address):
        c = await Client.connect(address)
        try:
            f, _ = await registry._open_heartbeat(c)
            with pytest.raises(NinepError, match="its heartbeat is over 1 MiB"):
                await registry._read_from_start(f)
        finally:
            await c.close()
