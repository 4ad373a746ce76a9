"""Node attributes and the one predicate language that selects nodes (issues 10 and 11)."""

from __future__ import annotations

import pytest

from brasil.ninep.errors import NinepError
from brasil.node.attrs import Filter, Selection, parse_selection, parse_size
from fixtures import L, ctl, new_session, small_tree, status_rows

A = {"name": "n1.2", "arch": "x86_64", "os": "linux", "mem": str(8 << 30), "cores": "4",
     "rack": "r7"}


@pytest.mark.parametrize("text,hit", [
    ("arch=x86_64", True), ("arch=arm*", False), ("os!=linux", False), ("os!=plan9", True),
    ("mem>=4G", True), ("mem>8G", False), ("mem<=8G", True), ("cores<4", False),
    ("name=n1.[1-3]", True), ("name=n1.[3-5]", False), ("name=n1.*", True),
    ("rack=r7/arch=x86_64/mem>=1G", True), ("rack=r7/arch=ppc", False), ("", True),
    ("nosuch=1", False),
])
def test_predicates(text, hit):
    assert Filter.parse(text).matches(A) is hit


@pytest.mark.parametrize("text,message", [
    ("arch", "expected KEY=VALUE"), ("mem>=lots", "is not a number or size"),
    ("arch=", "no value"), ("name=n[1-", "bad node set"),
])
def test_malformed_predicates_say_what_is_wrong(text, message):
    with pytest.raises(NinepError, match=message):
        Filter.parse(text)


def test_unknown_attributes_are_refused_naming_the_known_ones():
    with pytest.raises(NinepError, match=r"unknown attribute 'gpu'.*nodes have: arch, mem"):
        Filter.parse("gpu=1", known={"arch", "mem"})


def test_sizes():
    assert parse_size("4G") == 4 << 30 and parse_size("1.5K") == 1536 and parse_size("x") is None


def test_selections_from_res_words():
    assert parse_selection([]) == Selection()
    assert str(parse_selection(["linux", "*"])) == "where os=linux"
    s = parse_selection(["where", "arch=x86_64/mem>=1G", "pernode", "2"])
    assert s.pernode == 2 and s.take(A, 5) == 2 and s.take({**A, "arch": "arm"}, 5) == 0
    with pytest.raises(NinepError, match="pernode needs a number"):
        parse_selection(["pernode", "x"])


async def test_res_where_and_pernode_across_the_tree(tmp_path):
    async with small_tree(str(tmp_path), slots=2) as (nodes, c):
        await c.write(f"{L}/attrs", "rack=r1\n")  # a label on the root
        await c.write("csrv/b/local/attrs", "rack=r2\n")  # and on b, through the tree
        sid = await new_session(c)
        await ctl(c, sid, "res 4 pernode 1")
        assert sorted(r[1] for r in await status_rows(c, sid)) == ["a", "b", "b.1", "root"]
        await ctl(c, sid, "close")
        sid = await new_session(c)
        await ctl(c, sid, "res 3 where name=b,b.1,a pernode 1")
        assert sorted(r[1] for r in await status_rows(c, sid)) == ["a", "b", "b.1"]
        await ctl(c, sid, "close")
        sid = await new_session(c)
        await ctl(c, sid, "res 2 where rack=r2")
        assert [r[1] for r in await status_rows(c, sid)] == ["b", "b"]
        await ctl(c, sid, "close")
        sid = await new_session(c)
        with pytest.raises(NinepError, match=r"not enough slots: asked 3, 2 free in reach "
                                             r"\(where rack=r2\)"):
            await ctl(c, sid, "res 3 where rack=r2")
        with pytest.raises(NinepError, match="unknown attribute 'gpu'"):
            await ctl(c, sid, "res 1 where gpu=1")
        status = (await c.read(f"{L}/status")).decode()
        assert " rack=r1" in status and " rack=r2" in status and " arch=" in status
