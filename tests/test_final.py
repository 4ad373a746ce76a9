"""FiNAL views (issue 21 §5): the language's parser, and views defined and read on real trees
of daemons (fixtures.tree_of), each node exporting a directory of its own: the slides' global
/proc, the operators, group reads through a view, and the attacks (escaping the export, huge or
deep texts, cycles, another user's view)."""

from __future__ import annotations

import os
import pathlib

import pytest

from brasil.client import group as api
from brasil.group.final import MAX_LINES, MAX_TEXT, MAX_VIEWS, Entry, Parser, ViewError, parse
from brasil.ninep.client import Client
from brasil.ninep.constants import OWRITE
from brasil.ninep.errors import NinepError
from docblocks import blocks
from fixtures import tree_of
from helpers import run_cli
from trees import tree_1_3_9

# The view docs/reference.md shows ("Views: the FiNAL language"), as written there.
PROC = "\n".join(t for _, t in next(
    b for b in blocks(pathlib.Path(__file__).parent.parent / "docs/reference.md", "reference")
    if b.first.startswith("# the global /proc")).lines) + "\n"
V = "csrv/query/view"


# ---- the parser ----

def test_the_global_proc_view_parses_into_overlays_on_merges():
    v = parse(PROC)
    root = v.root
    assert root.base is not None and str(root.base.source) == "merge fs/proc"
    assert [g for g, _ in root.globs] == ["[0-9]*"]
    pids = root.entries["pids"]
    assert pids.line == 4 and str(pids.dir.base.source) == "deepmerge fs/proc"
    assert pids.dir.hides("cpuinfo") and not pids.dir.hides("42")
    assert root.hides("42") and not root.hides("cpuinfo")
    assert v.text == PROC


@pytest.mark.parametrize("text, message", [
    ("merge fs/proc\n\nmereg fs/x\n",
     "view line 3: unknown operator 'mereg'; operators are merge, deepmerge, insert, replace, "
     "remove, move"),
    ("merge /etc", "view line 1: '/etc' is an absolute path; a source is relative to each "
                   "node's local/"),
    ("insert each fs/../../etc/passwd at p", "view line 1: 'fs/../../etc/passwd': a source may "
                                             "not climb with '..'"),
    ("insert node n1 views/proc at me", "view line 1: 'views/proc' is not a source"),
    ("merge clone at c", "view line 1: 'clone' is not a source"),
    ("merge fs/a\nmove x to x/y", "view line 2: cannot move 'x' into itself ('x/y')"),
    ("insert each fs/a at a\ninsert each fs/b at a", "view line 2: 'a' is in the view already "
                                                     "(line 1)"),
    ("merge fs/a\nmerge fs/b", "view line 2: '.' shows merge fs/a already"),
    ("merge fs/a at ../up", "view line 1: '../up': a view path may not hold '..'"),
    ("replace x with each fs/a", "view line 1: 'x' is not in the view: replace changes"),
    ("remove *.log in nowhere", "view line 1: 'nowhere' is not in the view"),
    ("insert fs/a at b", "view line 1: a source is each PATH, node NAME PATH, merge PATH or "
                         "deepmerge PATH"),
    ("move a", "view line 1: move takes move VPATH to VPATH"),
    ("insert each fs/a at " + "/".join(["d"] * 40), "is 40 names deep; a path is at most 16"),
    ("# fine\nmerge fs/\xff", None),  # a name may be any UTF-8
])
def test_errors_name_the_line_and_say_what_to_write(text, message):
    if message is None:
        parse(text)
        return
    with pytest.raises(ViewError) as e:
        parse(text)
    assert e.value.message.startswith(message) or message in e.value.message, e.value.message


def test_huge_texts_too_many_lines_and_bytes_that_are_not_text_are_refused():
    with pytest.raises(ViewError, match=r"over the limit of 16 KiB"):
        parse("# x\n" * (MAX_TEXT // 4 + 1))
    with pytest.raises(ViewError, match=rf"view line {MAX_LINES + 1}: a view has at most"):
        parse("insert each fs/a at x\nremove x\n" * (MAX_LINES // 2 + 1))
    p = Parser()
    with pytest.raises(ViewError, match="view line 2: not UTF-8 text"):
        p.feed(b"merge fs/a\nremove \xff\xfe\n")


def test_a_text_fed_a_byte_at_a_time_is_the_same_view_and_errors_come_with_their_line():
    whole = parse(PROC)
    p = Parser()
    for i in range(len(PROC.encode())):
        p.feed(PROC.encode()[i:i + 1])
    assert p.finish() == whole
    p = Parser()
    p.feed(b"merge fs/a\nmer")  # a line not ended yet is not judged
    with pytest.raises(ViewError, match="view line 2: unknown operator 'merx'"):
        p.feed(b"x fs/b\n")


def test_move_takes_a_subtree_out_so_a_view_is_always_a_tree():
    v = parse("merge fs/proc\nmove cpuinfo to sys/cpu\nmove sys to top/sys\n")
    assert "cpuinfo" in v.root.gone and "sys" not in v.root.entries
    cpu = v.root.entries["top"].dir.entries["sys"].dir.entries["cpu"]
    assert isinstance(cpu, Entry) and cpu.dir.base is not None
    assert cpu.dir.base.rest == ("cpuinfo",) and str(cpu.dir.base.source) == "merge fs/proc"
    seen: set[int] = set()

    def walk(d):  # every directory reached once: no cycle, no sharing
        assert id(d) not in seen
        seen.add(id(d))
        for e in d.entries.values():
            walk(e.dir)
    walk(v.root)
    with pytest.raises(ViewError, match="cannot move 'top' into itself"):
        parse("merge fs/proc\nmove cpuinfo to top\nmove top to top/again\n")


# ---- on real daemons ----

def proc(root: pathlib.Path, name: str) -> None:
    """A node's made-up /proc: cpuinfo (n1's subtree has the other model), loadavg, processes
    1 (everywhere) and one of its own, each with a status."""
    p = root / name / "proc"
    p.mkdir(parents=True)
    model = "Xeon" if name.startswith("n1") else "EPYC"
    (p / "cpuinfo").write_text(f"model name : {model}\n")
    (p / "loadavg").write_text(f"{len(name)} 1 2\n")
    (p / "version").write_text(f"Linux version of {name}\n")
    for pid in (1, own_pid(name)):
        (p / str(pid)).mkdir()
        (p / str(pid) / "status").write_text(f"Name: proc{pid} on {name}\n")
        (p / str(pid) / "cmdline").write_text(f"cmd{pid}\n")


def own_pid(name: str) -> int:
    """n0: 100, n1: 101, n2.3: 123."""
    return 100 + int(name[1:].replace(".", ""))


async def define(c: Client, name: str, text: str) -> None:
    """The view ``name`` defined (made, or written anew) with ``text``."""
    if name in await names(c, "csrv/local/views"):
        await c.write(f"csrv/local/views/{name}", text, OWRITE)
        return
    f = await c.create(f"csrv/local/views/{name}", 0o644, OWRITE)
    async with f:
        await f.write(text)


async def names(c: Client, path: str) -> list[str]:
    return sorted(st.name for st in await c.ls(path))


NAMES_13 = ["n0", "n1", "n2", "n3"] + [f"n{i}.{j}" for i in (1, 2, 3) for j in (1, 2, 3)]


async def test_the_global_proc_on_1_3_9_read_through_and_group_read(tmp_path):
    x = tmp_path / "x"
    for n in NAMES_13:
        proc(x, n)
    async with tree_1_3_9(str(tmp_path), export_root=str(x)) as (nodes, c):
        await define(c, "proc", PROC)
        assert await names(c, "csrv/local/views") == ["proc"]
        assert (await c.read("csrv/local/views/proc")).decode() == PROC
        assert await names(c, V) == ["proc"]
        assert await names(c, f"{V}/proc") == ["cpuinfo", "loadavg", "pids", "version"]
        assert (await c.read(f"{V}/proc/version")).decode() == "Linux version of n1\n"
        assert await names(c, f"{V}/proc/cpuinfo") == sorted(NAMES_13)  # cpuinfo/NODE
        assert (await c.read(f"{V}/proc/cpuinfo/n2.3")).decode() == "model name : EPYC\n"
        pids = await names(c, f"{V}/proc/pids")
        assert pids == sorted({"1"} | {str(own_pid(n)) for n in NAMES_13})
        assert await names(c, f"{V}/proc/pids/1") == ["cmdline", "status"]  # merged down
        assert await names(c, f"{V}/proc/pids/1/status") == sorted(NAMES_13)
        assert await names(c, f"{V}/proc/pids/123/status") == ["n2.3"]
        assert (await c.read(f"{V}/proc/pids/123/status/n2.3")).decode() == \
            "Name: proc123 on n2.3\n"

        # the same view over the nodes a query selects
        q = "csrv/query/name=n1*/view/proc"
        assert await names(c, f"{q}/cpuinfo") == ["n1", "n1.1", "n1.2", "n1.3"]

        # group reads of a view's files, reduced in the tree
        r = await api.gread(c, "view/proc/cpuinfo", agg="equiv")
        assert [(g["content"], g["nodes"]) for g in r["groups"]] == [
            ("model name : EPYC\n", sorted(n for n in NAMES_13 if not n.startswith("n1"))),
            ("model name : Xeon\n", ["n1", "n1.1", "n1.2", "n1.3"])]
        assert r["errors"] == {}
        r = await api.gread(c, "view/proc/loadavg", agg="sum")
        assert r["value"][1:] == [13.0, 26.0] and r["nodes"] and len(r["nodes"]) == 13
        r = await api.gread(c, "view/proc/pids/1/status", agg="count")
        assert r["value"] == {"nodes": 13, "lines": 13}
        r = await api.gread(c, "view/proc/pids/123/status", agg="concat")
        assert r["parts"] == {"n2.3": "Name: proc123 on n2.3\n"}  # only the node that has it
        r = await api.gread(c, "view/proc/cpuinfo", where="name=n1*", agg="equiv")
        assert [g["nodes"] for g in r["groups"]] == [["n1", "n1.1", "n1.2", "n1.3"]]
        r = await api.gread(c, "view/proc/cpuinfo/n3.1", agg="concat")
        assert r["parts"] == {"n3.1": "model name : EPYC\n"}
        with pytest.raises(NinepError, match="view/proc/pids is a merged directory|holds"):
            await api.gread(c, "view/proc/pids", agg="concat")

        # the command line: brasil write makes the view, brasil gread reads through it
        env = {"BRASIL": f"unix:{tmp_path}/n0.sock"}
        rc, out, err = await run_cli("write", "/csrv/local/views/cpus", "insert", "each",
                                     "fs/proc/cpuinfo", "at", "cpuinfo", env=env)
        assert rc == 0, err
        rc, out, err = await run_cli("gread", "--agg", "equiv", "view/cpus/cpuinfo", env=env)
        assert rc == 0 and "Xeon" in out and "EPYC" in out, out + err


async def test_insert_replace_move_and_remove(tmp_path):
    x = tmp_path / "x"
    async with tree_of(str(tmp_path), 3, export_root=str(x)) as (nodes, c):
        for n in ("n0", "n1", "n2", "n3"):
            (x / n / "etc").mkdir()
            (x / n / "etc" / "hosts").write_text(f"hosts of {n}\n")
            (x / n / "etc" / "motd").write_text("hello\n")
            (x / n / "etc" / "secret.key").write_text("k\n")
            (x / n / "var").mkdir()
            (x / n / "var" / "app.log").write_text(f"log {n}\n")
        (x / "n2" / "etc" / "only-n2").write_text("2\n")
        await define(c, "etc", """\
merge   fs/etc
remove  *.key                          # hidden, on every node
insert  node n1 fs/etc/motd at motd-of-n1
insert  each fs/var/app.log at logs/app
replace motd with each fs/var/app.log  # motd's place, the logs' content
move    hosts to by-node/hosts
remove  n3 in by-node/hosts            # a node hidden inside a group
replace only-n2 with node n0 fs/etc/hosts
""")
        top = f"{V}/etc"
        assert await names(c, top) == ["by-node", "logs", "motd", "motd-of-n1", "only-n2"]
        assert (await c.read(f"{top}/motd-of-n1")).decode() == "hello\n"
        assert await names(c, f"{top}/logs") == ["app"]
        assert await names(c, f"{top}/logs/app") == ["n0", "n1", "n2", "n3"]
        assert (await c.read(f"{top}/motd/n2")).decode() == "log n2\n"
        assert await names(c, f"{top}/by-node/hosts") == ["n0", "n1", "n2"]
        assert (await c.read(f"{top}/only-n2")).decode() == "hosts of n0\n"
        for gone in ("secret.key", "hosts", "by-node/hosts/n3"):
            with pytest.raises(NinepError):
                await c.read(f"{top}/{gone}")
        r = await api.gread(c, "view/etc/by-node/hosts", agg="concat")
        assert sorted(r["parts"]) == ["n0", "n1", "n2"]  # the hidden node is not read
        r = await api.gread(c, "view/etc/motd-of-n1", agg="concat")
        assert r["parts"] == {"n1": "hello\n"}

        # replace shows a name only where the nodes have it: over n1 alone, no only-n2
        assert "only-n2" not in await names(c, "csrv/query/name=n1/view/etc")

        # a wrong line leaves the view as it was, and says which line
        with pytest.raises(NinepError, match="view line 3: unknown operator 'mereg'"):
            await define(c, "etc", "merge fs/etc\n# two\nmereg fs/var\n")
        assert "motd-of-n1" in await names(c, top)
        assert (await c.read("csrv/local/views/etc")).decode().startswith("merge   fs/etc")

        # removed: gone from both places
        await c.remove("csrv/local/views/etc")
        assert await names(c, V) == []
        with pytest.raises(NinepError, match="no view 'etc' here"):
            await c.ls(top)


async def test_a_view_never_leaves_the_export(tmp_path):
    x = tmp_path / "x"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:secret\n")
    async with tree_of(str(tmp_path), 3, export_root=str(x)) as (nodes, c):
        for n in ("n0", "n1", "n2", "n3"):
            (x / n / "d").mkdir()
            (x / n / "d" / "plain").write_text("ok\n")
            os.symlink(outside, x / n / "d" / "out")  # a link planted in the export
            os.symlink(outside / "passwd", x / n / "d" / "pw")
        await define(c, "d", "merge fs/d\ninsert node n1 fs/d/out/passwd at stolen\n"
                             "insert each fs/d/pw at pw2\ndeepmerge fs/d at deep\n")
        listed = await names(c, f"{V}/d")
        assert "plain" in listed and "stolen" not in listed
        for path in ("stolen", "out/n1/passwd", "pw/n1", "pw2/n1", "deep/out/passwd",
                     "deep/pw/n2"):
            with pytest.raises(NinepError):
                data = await c.read(f"{V}/d/{path}")
                assert b"secret" not in data
        r = await api.gread(c, "view/d/pw", agg="concat")
        assert "secret" not in str(r)
        for text, why in [("merge /etc", "absolute path"),
                          ("insert each fs/../../../../etc/passwd at p", "'..'"),
                          ("insert node n1 views/d at self", "not a source"),
                          ("merge fs/d\nmove plain to plain/again", "into itself")]:
            with pytest.raises(NinepError, match=why):
                await define(c, "bad", text)
        assert await names(c, "csrv/local/views") == ["d"]  # nothing half made


async def test_bounds_and_another_users_view(tmp_path):
    async with tree_of(str(tmp_path), 1, export_root=str(tmp_path / "x")) as (nodes, c):
        for n in ("n0", "n1"):
            (tmp_path / "x" / n / "a").write_text(n)
        addr = f"unix:{tmp_path}/n0.sock"
        alice = await Client.connect(addr, uname="alice")
        bob = await Client.connect(addr, uname="bob")
        try:
            await define(alice, "mine", "merge fs\n")
            with pytest.raises(NinepError, match="view mine is alice's: only they can change"):
                await define(bob, "mine", "merge fs/other\n")
            with pytest.raises(NinepError, match="view mine is alice's"):
                await bob.remove("csrv/local/views/mine")
            assert (await bob.read("csrv/local/views/mine")).decode() == "merge fs\n"
            assert await names(bob, f"{V}/mine") == ["a"]  # anyone may use it
            assert await names(bob, f"{V}/mine/a") == ["n0", "n1"]
            await define(alice, "mine", "merge fs at all\n")  # its owner may
            assert await names(bob, f"{V}/mine") == ["all"]

            f = await alice.create("csrv/local/views/huge", 0o644, OWRITE)
            with pytest.raises(NinepError, match="over the limit of 16 KiB"):
                await f.write("# padding\n" * 2000)
            await f.close()
            assert "huge" not in await names(alice, "csrv/local/views")
            with pytest.raises(NinepError, match="a path is at most 16 deep"):
                await define(alice, "deep", "insert each fs at " + "/".join(["a"] * 1000))
            for i in range(MAX_VIEWS - 1):
                await define(alice, f"v{i}", "merge fs\n")
            with pytest.raises(NinepError, match="64 views are defined here already"):
                await define(alice, "one-more", "merge fs\n")
            with pytest.raises(NinepError, match="a view is a file of text"):
                await alice.create("csrv/local/views/dir", 0o755 | 0x80000000, 0)
        finally:
            await alice.close()
            await bob.close()
