"""Issue 7: what hostile testing broke in the daemon, one test (or a few) per finding."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from brasil.ninep.client import Client, dont_touch
from brasil.ninep.constants import (DMDEVICE, DMNAMEDPIPE, DMSETUID, DMSOCKET, DMSYMLINK, ORDWR,
                                    OWRITE)
from brasil.ninep.errors import NinepError
from fixtures import node_daemon, small_tree, status_rows, wait_for

L = "csrv/local"


async def new_session(c: Client) -> str:
    return (await c.read(f"{L}/clone")).decode().strip()


async def ctl(c: Client, sid: str, cmd: str) -> None:
    await c.write(f"{L}/{sid}/ctl", cmd + "\n")


@pytest.fixture
async def node(tmp_path):
    (tmp_path / "export").mkdir()
    async with node_daemon(str(tmp_path), slots=4, export=str(tmp_path / "export")) as (n, addr):
        c = await Client.connect(addr)
        yield n, c
        await c.close()


# ---- §2: special files through 9P2000.u ----

@pytest.mark.parametrize("bit,what", [(DMSYMLINK, "symbolic link"), (DMDEVICE, "device"),
                                      (DMNAMEDPIPE, "named pipe"), (DMSOCKET, "socket"),
                                      (DMSETUID, "setuid")])
async def test_special_files_are_refused_not_faked(node, tmp_path, bit, what):
    n, _ = node
    async with await Client.connect(n.addresses[0], dotu=True) as c:
        with pytest.raises(NinepError, match=f"cannot create a {what}") as e:
            await c.create(f"{L}/fs/special", perm=bit | 0o755)
        assert e.value.errno == errno.EOPNOTSUPP
    assert not os.path.lexists(tmp_path / "export" / "special")


async def test_wstat_cannot_make_a_setuid_file(node, tmp_path):
    n, c = node
    (tmp_path / "export" / "prog").write_text("#!/bin/sh\n")
    with pytest.raises(NinepError, match="cannot set a setuid file"):
        await c.wstat(f"{L}/fs/prog", dont_touch(mode=0o4755))
    assert os.stat(tmp_path / "export" / "prog").st_mode & 0o7777 == 0o644
    await c.wstat(f"{L}/fs/prog", dont_touch(mode=0o755))  # plain permission bits still work
    assert os.stat(tmp_path / "export" / "prog").st_mode & 0o7777 == 0o755


# ---- §3: a regex record separator cannot freeze the event loop ----

async def test_a_catastrophic_regex_separator_does_not_stall_the_daemon(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, "rs regex (a+)+c")  # exponential with a backtracking engine
    await ctl(c, sid, "exec printf 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\\n'")
    out = await asyncio.wait_for(c.read(f"{L}/{sid}/stdio"), 30)
    assert out == b"a" * 39 + b"b\n" + b"a" * 39 + b"b\n"


# ---- §4: long records: linear, bounded, never split ----

async def test_two_long_lines_without_newlines_arrive_whole_and_the_daemon_stays_responsive(node):
    n, c = node
    size = 24 << 20  # 24 MiB each: far over the reassembly window
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, f"exec head -c {size} /dev/zero | tr '\\0' \"$BRASIL_RANK\"")
    other = await new_session(c)  # an unrelated session keeps answering meanwhile
    reads = 0

    async def unrelated() -> None:
        nonlocal reads
        while not done.is_set():
            await c.read(f"{L}/{other}/ctl")
            reads += 1
            await asyncio.sleep(0.05)
    done = asyncio.Event()
    probe = asyncio.ensure_future(unrelated())
    try:
        out = await asyncio.wait_for(c.read(f"{L}/{sid}/stdio"), 120)
    finally:
        done.set()
        await probe
    assert len(out) == 2 * size
    first = out[:size]
    assert first in (b"0" * size, b"1" * size), "a long record was cut or interleaved"
    assert out[size:] == (b"1" if first[:1] == b"0" else b"0") * size
    assert reads > 0
    for agg in n.sessions[sid]._aggregators:
        assert not agg.lock.locked()


async def test_a_long_record_written_under_mux_rr_goes_whole_to_one_sub_session(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, "mux rr")
    await ctl(c, sid, "exec wc -c")
    outs = [await c.open(f"{L}/{sid}/{i}/stdout") for i in range(2)]
    big = b"y" * (20 << 20)

    async def feed() -> None:
        async with await c.open(f"{L}/{sid}/stdio", OWRITE) as f:
            await f.write(b"first\n")
            for i in range(0, len(big), 1 << 20):
                await f.write(big[i:i + (1 << 20)])
            await f.write(b"\nlast")  # a last record with no separator is delivered too
    results = await asyncio.gather(feed(), *(o.read_all() for o in outs))
    counts = sorted(int(r.split()[0]) for r in results[1:])
    assert counts == sorted([len(b"first\n") + len(b"last"), len(big) + 1])


async def test_rs_fixed_has_a_bound(node):
    n, c = node
    sid = await new_session(c)
    with pytest.raises(NinepError, match="between 1 and 1048576"):
        await ctl(c, sid, "rs fixed 99999999999999")


# ---- §7, §8, §10, §11: sessions whose sub-sessions live on other nodes ----

async def session(c: Client, cmds: list[str]) -> str:
    sid = await new_session(c)
    for cmd in cmds:
        await ctl(c, sid, cmd)
    return sid


async def test_a_root_with_no_slots_serves_sessions_that_live_elsewhere(tmp_path):
    """§7: `res` landed on children only; the session's stdio, and splices into it, failed."""
    async with small_tree(str(tmp_path), root_slots=0) as (nodes, c):
        sid = await session(c, ["res 2", "exec echo $BRASIL_NODE"])
        out = sorted((await c.read(f"{L}/{sid}/stdio")).decode().split())
        assert len(out) == 2 and "root" not in out
        feeder = await session(c, ["res 1", "exec seq 5"])
        summer = await session(c, ["res 2", "exec wc -l"])
        await ctl(c, summer, f"splice /csrv/local/{feeder}/0 1 0")  # into the whole session
        counts = (await c.read(f"{L}/{summer}/stdio")).decode().split()
        assert counts == ["5", "5"]  # broadcast to both sub-sessions, on other nodes


async def test_splice_paths_mean_what_they_mean_where_they_were_written(tmp_path):
    """§8: a splice written to a sub-session on another node named a path on that node."""
    async with small_tree(str(tmp_path), root_slots=0) as (nodes, c):
        for _ in range(3):  # ids here then differ from the ids the children give their sessions
            await new_session(c)
        src = await session(c, ["res 1", "exec seq 7"])
        dst = await session(c, ["res 1"])
        await c.write(f"{L}/{dst}/0/ctl", "exec wc -l\n")
        await c.write(f"{L}/{dst}/0/ctl", f"splice /csrv/local/{src}/0 1 0\n")
        assert (await c.read(f"{L}/{dst}/0/stdio")).decode().split() == ["7"]


async def test_the_ctl_state_line_counts_sub_sessions_on_other_nodes(tmp_path):
    """§10: it said `subs 8 running 2` while all 8 ran."""
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 8", "exec sleep 30"])
        state = (await c.read(f"{L}/{sid}/ctl")).decode()
        assert " subs 8 running 8 " in state, state
        await ctl(c, sid, "kill KILL")
        await c.read(f"{L}/{sid}/wait")
        state = (await c.read(f"{L}/{sid}/ctl")).decode()
        assert "running" not in state.split(" mux ")[0], state


async def test_every_process_knows_its_rank_in_the_whole_session(tmp_path):
    """§11: BRASIL_SUB was per node (0 or 1 everywhere); now ranks are 0…N-1 over the tree."""
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 6", "exec echo $BRASIL_RANK $BRASIL_SIZE $BRASIL_SESSION "
                                "$BRASIL_NODE"])
        rows = sorted(ln.split() for ln in (await c.read(f"{L}/{sid}/stdio")).decode().splitlines())
        assert [int(r[0]) for r in sorted(rows, key=lambda r: int(r[0]))] == list(range(6))
        assert {r[1] for r in rows} == {"6"} and {r[2] for r in rows} == {f"root:/csrv/local/{sid}"}
        status = {int(r[0]): r[1] for r in await status_rows(c, sid)}
        assert all(status[int(r[0])] == r[3] for r in rows)  # rank i runs where status says i is
        await c.write(f"{L}/{sid}/5/ctl", "exec echo $BRASIL_RANK\n")  # one remote sub-session
        assert (await c.read(f"{L}/{sid}/5/stdio")).decode().split() == ["5"]
