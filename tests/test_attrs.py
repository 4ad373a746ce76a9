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


# ---- node sets by membership (issue 15 §9) and globs by RE2 (§8) ----

NAMES = ([f"n{i}" for i in range(25)] + [f"n{i:02d}" for i in range(25)] + ["n001", "n003"]
         + [f"r{a}n{b}" for a in range(4) for b in range(6)] + ["a", "b", "c", "d", "n1x"]
         + [f"n{a}.{b}" for a in range(5) for b in range(5)] + [f"n{i}-ib" for i in range(5)])


@pytest.mark.parametrize("text", [
    "n[1-3,7]", "n[01-10]", "n[1-9/2]", "r[1-2]n[1-4]", "n1[0-5]", "a,b,c", "n[1-10]!n[3-5]",
    "n[1-10]&n[5-20]", "n[1-10]^n[5-20]", "n[1-5],n[001-003]", "n[00-02]", "n[1-3].[1-3]",
    "n[1-3]-ib", "n[1-3]!n2,n9", "n[2-20/3,1]",
])
def test_node_set_membership_agrees_with_clustershell(text):
    from ClusterShell.NodeSet import NodeSet as Expanded

    from brasil.node.nodeset import NodeSet
    ns, every = NodeSet(text), set(Expanded(text))
    assert [n for n in NAMES if (n in ns) != (n in every)] == []


def test_a_huge_node_set_is_never_expanded():
    from brasil.node.nodeset import NodeSet
    ns = NodeSet("x[1-2000000000000],y[0001-9999]")
    assert "x1999999999999" in ns and "x02" not in ns and "y0042" in ns and "y42" not in ns


@pytest.mark.parametrize("text,message", [
    ("name=n[[1]]", "do not nest"), ("name=n[01-100]", "padding length mismatch"),
    ("name=@rack1,n1", "node groups"), ("name=n*,m1", "no wildcards"),
    ("name=x[1-2][3-4]", "two brackets in a row"), ("name=n[5-1]", "invalid values"),
    ("name=" + ",".join(f"n[1-{i}]x" for i in range(1, 300)), "over 256 bracketed names"),
    ("name=" + "n1," * 30000, "characters long, over the limit"),
])
def test_bad_node_sets_say_what_is_wrong(text, message):
    with pytest.raises(NinepError, match=message):
        Filter.parse(text)


@pytest.mark.parametrize("pattern", ["n1.*", "a?c", "[abc]x", "[!abc]x", "[a-c]*", "[]a]",
                                     "[!]a]", "[z-a]", "x[", "a*b*c", "*.[0-9]", "a.b", "[a-]"])
def test_globs_match_as_fnmatch_does(pattern):
    import fnmatch

    from brasil.node.attrs import glob
    for name in ["n1.1", "n1.", "abc", "ax", "dx", "]", "a", "x[", "aXbYc", "n.5", "a.b", "aXb",
                 "-", "z"]:
        assert (glob(pattern).fullmatch(name.encode()) is not None) == \
            fnmatch.fnmatchcase(name, pattern), (pattern, name)


def test_a_catastrophic_glob_is_linear():
    assert not Filter.parse("os=" + "*a" * 40 + "b").matches({"os": "a" * 5000})
    assert parse_size("1" + " " * 60000 + "x") is None  # a long text is not a size
