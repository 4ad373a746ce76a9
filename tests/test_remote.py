"""Serving another daemon's files as ours: the proxy nodes of the tree."""

from __future__ import annotations

import asyncio

import pytest

from brasil.ninep.client import Client
from brasil.ninep.constants import ORDWR
from brasil.ninep.errors import NinepError
from brasil.ninep.messages import Tclunk
from brasil.ninep.synthetic import DynamicDir
from brasil.tree.proxy import mount
from fixtures import FixtureTree, serving


@pytest.fixture
async def proxied():
    """Server A serves a FixtureTree; server B serves A's tree as /a; yields a client of B."""
    tree = FixtureTree()
    async with serving(tree.root) as (_, a_addr):
        a_client = await Client.connect(a_addr)
        b_root = DynamicDir()
        b_root.add("a", await mount(a_client, "", "a", "node a"))
        async with serving(b_root) as (_, b_addr):
            c = await Client.connect(b_addr)
            yield tree, c
            await c.close()
        await a_client.close()


async def test_reads_walks_and_listings_go_through(proxied):
    tree, c = proxied
    assert await c.read("a/hello") == b"hello, world\n"
    assert await c.read("a/dir/../dir/bbb") == b"b" * 10
    assert [s.name for s in await c.ls("a/dir")][:3] == ["aaa", "bbb", "ccc"]
    assert [s.name for s in await c.ls("")] == ["a"]
    st = await c.stat("a/hello")
    assert st.name == "hello" and st.length == 13
    with pytest.raises(NinepError, match="a/nosuch: file does not exist"):
        await c.read("a/nosuch")
    # '..' from inside the proxy climbs back into B's own tree
    fid, _ = await c.walk("a/dir/../..")
    await c.clunk(fid)


async def test_ctl_writes_and_errors_are_forwarded(proxied):
    tree, c = proxied
    await c.write("a/ctl", "add 7\n")
    assert await c.read("a/ctl") == b"count 7\n"
    with pytest.raises(NinepError, match='unknown command "nope"'):
        await c.write("a/ctl", "nope\n")


async def test_a_blocked_remote_read_can_be_flushed_and_loses_nothing(proxied):
    tree, c = proxied
    f = await c.open("a/pipe", ORDWR)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(f.read(100), 0.1)
    await f.write(b"through two servers\n")
    assert await f.read(100) == b"through two servers\n"


async def test_create_write_remove_through_the_proxy(proxied):
    tree, c = proxied
    async with await c.create("a/tmp/note", 0o644, ORDWR) as f:
        await f.write(b"remote ink\n")
    assert tree.root.walk("tmp").walk("note").content == b"remote ink\n"
    assert await c.read("a/tmp/note") == b"remote ink\n"
    await c.remove("a/tmp/note")
    assert [s.name for s in await c.ls("a/tmp")] == []


async def test_dotdot_after_a_multi_name_remote_walk_can_walk_down_again(proxied):
    tree, c = proxied
    await c.create("a/tmp/sub", 0x80000000 | 0o755, 0)
    async with await c.create("a/tmp/note", 0o644, ORDWR) as f:
        await f.write(b"found again\n")
    # "tmp/sub" goes to A in one Twalk; ".." comes back to "tmp" here; "note" must go on from it.
    assert await c.read("a/tmp/sub/../note") == b"found again\n"
    assert sorted(s.name for s in await c.ls("a/tmp/sub/..")) == ["note", "sub"]
    st = await c.stat("a/tmp/sub/..")
    assert st.mode & 0x80000000


async def test_a_clone_cancelled_in_flight_never_hands_its_fid_out_while_the_server_holds_it():
    """The walk of a clone went out when the clone was cancelled: the server made the new fid.
    Freed here at once, the next walk on the link named it again and the server answered
    "fid already in use" (a push torn down while its stages were being set up did this, on
    a README tree, to 12 of 150 pushes). It is clunked instead, and free once answered."""
    from brasil.tree.proxy import Remote
    tree = FixtureTree()
    async with serving(tree.root) as (_, addr):
        client = await Client.connect(addr)
        try:
            remote = Remote(client, "node a")
            dir_fid, _ = await client.walk("dir")
            for _ in range(5):
                task = asyncio.ensure_future(remote.clone(dir_fid))
                await asyncio.sleep(0)  # its Twalk is sent
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                fid = await remote.clone(dir_fid)  # the next one: never the one in use
                assert (await client.rpc(Tclunk, fid)) is not None
                client.free_fid(fid)
        finally:
            await client.close()
