"""Sessions across the tree: reservations spill to neighbours, and everything else follows."""

from __future__ import annotations

import asyncio

import pytest

from brasil.ninep.client import Client
from brasil.ninep.constants import OWRITE
from brasil.ninep.errors import NinepError
from fixtures import L, daemon, date_wc, session, small_tree, status_rows, wait_for


async def test_res_spans_the_tree_and_every_process_knows_its_node(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 8", "exec echo $BRASIL_NODE"])
        out = sorted((await c.read(f"{L}/{sid}/stdio")).decode().split())
        assert out == sorted(["root", "root", "a", "a", "b", "b", "b.1", "b.1"])
        status = await status_rows(c, sid)
        assert [int(r[0]) for r in status] == list(range(8))
        assert sorted(r[1] for r in status) == sorted(["root"] * 2 + ["a"] * 2 + ["b"] * 2 + ["b.1"] * 2)
        assert all(r[3] == "exited" and r[5] == "0" for r in status)
        assert (await c.read(f"{L}/{sid}/wait")).decode().split("\n")[:8] == \
            [f"{i} 0" for i in range(8)]
        names = sorted(int(s.name) for s in await c.ls(f"{L}/{sid}") if s.name.isdigit())
        assert names == list(range(8))


async def test_more_than_the_tree_holds_fails_and_releases_everything(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = (await c.read(f"{L}/clone")).decode().strip()
        with pytest.raises(NinepError, match=r"res: not enough slots: asked 9, 8 free in reach"):
            await c.write(f"{L}/{sid}/ctl", "res 9\n")
        for d in nodes.values():
            await wait_for(lambda d=d: len(d.node.free) == 2, timeout=10)
        sid = await session(c, ["res 8"])  # and all of it is still there to be had
        assert len((await c.read(f"{L}/{sid}/status")).decode().splitlines()) == 8


async def test_remote_sub_sessions_work_like_local_ones(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 4"])
        rows = await status_rows(c, sid)
        remote = next(int(r[0]) for r in rows if r[1] != "root")
        await c.write(f"{L}/{sid}/{remote}/ctl", "exec echo direct from $BRASIL_NODE\n")
        out = (await c.read(f"{L}/{sid}/{remote}/stdio")).decode()
        assert out.startswith("direct from ") and out.split()[-1] == rows[remote][1]


async def test_xsplice_between_sub_sessions_on_different_nodes(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 8"])
        rows = await status_rows(c, sid)
        src = next(int(r[0]) for r in rows if r[1] == "a")
        dst = next(int(r[0]) for r in rows if r[1] == "b.1")
        await c.write(f"{L}/{sid}/{src}/ctl", "exec date\n")
        await c.write(f"{L}/{sid}/{dst}/ctl", "exec wc\n")
        await c.write(f"{L}/{sid}/ctl", f"xsplice {src} {dst}\n")
        got = (await c.read(f"{L}/{sid}/{dst}/stdio")).decode()
        assert got.split() == date_wc()
        # The bytes went from a straight to b.1's data endpoint, not through the root.
        addr = str(nodes["b.1"].node.cut_through.address)
        assert f"direct to {addr}" in (await c.read(f"{L}/{sid}/ctl")).decode()
        assert "done 29 bytes" in (await c.read(f"{L}/{sid}/{dst}/ctl")).decode()


async def test_without_a_direct_path_a_splice_goes_through_the_tree(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 8"])
        rows = await status_rows(c, sid)
        src = next(int(r[0]) for r in rows if r[1] == "a")
        dst = next(int(r[0]) for r in rows if r[1] == "b.1")
        nodes["b.1"].data.close()  # b.1's data endpoint is unreachable now
        await wait_for(lambda: not nodes["b.1"].data.server.is_serving())
        await c.write(f"{L}/{sid}/{src}/ctl", "exec seq 1000\n")
        await c.write(f"{L}/{sid}/{dst}/ctl", "exec wc -l\n")
        await c.write(f"{L}/{sid}/ctl", f"xsplice {src} {dst}\n")
        assert (await c.read(f"{L}/{sid}/{dst}/stdio")).split() == [b"1000"]
        assert "via the tree" in (await c.read(f"{L}/{sid}/ctl")).decode()


async def test_input_broadcast_and_rr_partition_across_nodes(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 8", "exec wc -l"])
        await c.write(f"{L}/{sid}/stdio", b"".join(b"%d\n" % i for i in range(500)))
        assert (await c.read(f"{L}/{sid}/stdio")).split() == [b"500"] * 8
        await c.write(f"{L}/{sid}/ctl", "close\n")  # give its slots back, everywhere
        for d in nodes.values():
            await wait_for(lambda d=d: len(d.node.free) == 2, timeout=10)
        await wait_for(lambda: sum(int(ln.split()[2]) for ln in
                                   nodes["root"].children.status_lines()) == 6, timeout=10)
        sid = await session(c, ["res 8", "mux rr", "exec cat"])
        lines = [b"record %d\n" % i for i in range(4000)]

        async def feed() -> None:
            async with await c.open(f"{L}/{sid}/stdio", OWRITE) as f:
                for i in range(0, len(lines), 100):
                    await f.write(b"".join(lines[i:i + 100]))
        _, out = await asyncio.gather(feed(), c.read(f"{L}/{sid}/stdio"))
        assert sorted(out.splitlines(keepends=True)) == sorted(lines)


async def test_a_child_asks_its_parent_when_its_subtree_is_short(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        await wait_for(lambda: nodes["a"].parent.client is not None, timeout=10)
        ca = await Client.connect(nodes["a"].unix)
        sid = await session(ca, ["res 5", "exec echo $BRASIL_NODE"])
        out = sorted((await ca.read(f"{L}/{sid}/stdio")).decode().split())
        assert out.count("a") == 2 and len(out) == 5
        assert set(out) <= {"a", "root", "b", "b.1"}
        await ca.close()


async def test_a_lost_node_fails_its_sub_sessions_and_the_rest_finish(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 8", "exec sleep 2; echo done"])
        b1 = nodes["b.1"]
        await b1.stop()  # the node dies mid-exec (its processes with it)
        wait = (await asyncio.wait_for(c.read(f"{L}/{sid}/wait"), 30)).decode().splitlines()
        failed = [ln for ln in wait if "failed" in ln]
        assert len(failed) == 2 and all("node b.1 lost" in ln for ln in failed), wait
        assert sum(1 for ln in wait if ln.endswith(" 0")) == 6
        out = (await c.read(f"{L}/{sid}/stdio")).decode().split()
        assert out == ["done"] * 6
        status = (await c.read(f"{L}/{sid}/status")).decode()
        assert status.count("failed") == 2 and "node b.1 lost" in status


async def test_when_the_node_that_asked_dies_its_sessions_below_end(tmp_path):
    async with daemon(str(tmp_path), "root", slots=1) as root, \
            daemon(str(tmp_path), "a", slots=2, parent=root.unix) as a:
        await wait_for(lambda: "a" in root.children.by_name and root.children.by_name["a"].status,
                       timeout=10)
        c = await Client.connect(root.unix)
        sid = await session(c, ["res 3", "exec sleep 60"])
        assert len(a.node.sessions) == 1 and a.node.free == []
        procs = [leaf.process for s in a.node.sessions.values() for leaf in s.leaves()]
        await c.close()
        await root.stop()  # the root goes: its connections to a close
        await wait_for(lambda: not a.node.sessions and len(a.node.free) == 2, timeout=10)
        await wait_for(lambda: all(p.exited.done() for p in procs), timeout=10)
        assert sid == "0"


async def test_kill_reaches_sub_sessions_on_every_node(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 8", "exec sleep 60"])
        await c.write(f"{L}/{sid}/ctl", "kill\n")
        wait = (await asyncio.wait_for(c.read(f"{L}/{sid}/wait"), 30)).decode().splitlines()
        assert wait == [f"{i} 143" for i in range(8)]  # 128 + SIGTERM, here and elsewhere
        rows = await status_rows(c, sid)
        assert {r[3] for r in rows} == {"killed"} and len({r[1] for r in rows}) == 4


async def test_a_reservation_right_after_another_is_closed_gets_every_slot(tmp_path):
    """The children's reports are up to a second old: a child that gave all it was asked is
    asked again, so slots freed since its report are found."""
    async with small_tree(str(tmp_path)) as (nodes, c):
        for _ in range(3):
            sid = await session(c, ["res 8"])
            await c.write(f"{L}/{sid}/ctl", "close\n")
