"""Elastic sessions (issue 21 §3): `res +N` grows a running session, `release RANKS` shrinks it,
from outside or from one of its own processes (`brasil ctl`, through $BRASIL_SESSION_DIR), on
real trees of daemons running real processes."""

from __future__ import annotations

import asyncio
import os
import stat
import sys

import pytest

from brasil.ninep.errors import NinepError
from brasil.node.policy import parse as parse_policy
from fixtures import L, alive, ctl, session, status_rows, wait_for
from trees import label_racks, tree_1_3_9

pytestmark = pytest.mark.asyncio

BRASIL = f"{sys.executable} -I -m brasil.cli.main"


def script(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, stat.S_IRWXU)
    return path


def free(nodes: dict, name: str) -> int:  # type: ignore[type-arg]
    return len(nodes[name].node.free)


def all_free(nodes: dict) -> dict[str, int]:  # type: ignore[type-arg]
    return {name: len(d.node.free) for name, d in nodes.items()}


async def state_line(c, sid: str) -> str:  # type: ignore[no-untyped-def]
    return (await c.read(f"{L}/{sid}/ctl")).decode()


async def test_a_job_grows_from_2_to_8_ranks_for_a_phase_and_shrinks_back_output_merged_throughout(
        tmp_path):  # type: ignore[no-untyped-def]
    """The issue's job: rank 0 drives it from inside (brasil ctl): 2 ranks, then 6 more for a
    phase, then back to 2; one reader of stdio, opened at the start, gets all three phases."""
    worker = script(f"{tmp_path}/worker.sh",
                    'echo "phase2 rank $BRASIL_RANK size $BRASIL_SIZE on $BRASIL_NODE"\n')
    driver = script(f"{tmp_path}/driver.sh", f"""
B="{BRASIL}"
echo "phase1 rank $BRASIL_RANK size $BRASIL_SIZE"
[ "$BRASIL_RANK" = 0 ] || exit 0
$B ctl res +6 || exit 1
$B ctl exec + sh {worker} || exit 1
i=0
until [ "$($B cat --at "$BRASIL_AT" "$BRASIL_SESSION_DIR/status" | awk '$1 >= 2 && $4 == "exited"' | wc -l)" = 6 ]; do
  i=$((i + 1)); [ $i -lt 600 ] || {{ echo "phase2 never ended"; exit 1; }}
  sleep 0.1
done
$B ctl release 2-7 || exit 1
echo "phase3 $($B cat --at "$BRASIL_AT" "$BRASIL_SESSION_DIR/ctl" | grep -o 'subs [0-9]*') $($B cat --at "$BRASIL_AT" "$BRASIL_SESSION_DIR/ctl" | grep -o 'ranks [0-9,-]*')"
""")
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        before = all_free(nodes)
        sid = await session(c, ["res 2", f"exec sh {driver} 2>&1"])
        out = (await asyncio.wait_for(c.read(f"{L}/{sid}/stdio"), 60)).decode().splitlines()
        assert sorted(ln for ln in out if ln.startswith("phase1")) == \
            ["phase1 rank 0 size 2", "phase1 rank 1 size 2"], out
        phase2 = sorted(ln for ln in out if ln.startswith("phase2"))
        assert [ln.split()[:4] for ln in phase2] == \
            [["phase2", "rank", str(r), "size"] for r in range(2, 8)], out
        assert all(ln.split()[4] == "8" for ln in phase2), out  # the size at their exec
        assert {ln.split()[-1] for ln in phase2} <= set(nodes) - {"n0"}, out  # grown below
        assert out[-1] == "phase3 subs 2 ranks 0-1", out
        rows = await status_rows(c, sid)
        assert [r[0] for r in rows] == ["0", "1"] and {r[1] for r in rows} == {"n0"}, rows
        # the six slots are back where they were taken; the root's two are still held
        await wait_for(lambda: all_free(nodes) == {**before, "n0": before["n0"] - 2}, 10)
        await ctl(c, sid, "close")
        await wait_for(lambda: all_free(nodes) == before, 10)


async def test_release_of_a_remote_rank_frees_its_slot_on_that_node_and_kills_it(tmp_path
                                                                                 ):  # type: ignore[no-untyped-def]
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 2", "res +2", "exec sleep 300"])
        rows = {r[0]: r for r in await status_rows(c, sid)}
        assert set(rows) == {"0", "1", "2", "3"} and rows["3"][1] != "n0", rows
        where, pid = rows["3"][1], int(rows["3"][4])
        held = free(nodes, where)
        await ctl(c, sid, "release 3")
        await wait_for(lambda: free(nodes, where) == held + 1, 10)
        await wait_for(lambda: not alive(pid), 10)
        rows = {r[0]: r for r in await status_rows(c, sid)}
        assert set(rows) == {"0", "1", "2"} and rows["2"][3] == "running", rows
        assert "subs 3" in await state_line(c, sid) and "ranks 0-2" in await state_line(c, sid)
        # ranks are never given twice: the next growth is numbered after 3
        await ctl(c, sid, "res +1")
        assert "ranks 0-2,4" in await state_line(c, sid)
        await ctl(c, sid, "exec @4 echo $BRASIL_RANK of $BRASIL_SIZE")
        await ctl(c, sid, "release 0-2")  # the output of 4 alone, not waiting for 0-2's sleep
        assert await asyncio.wait_for(c.read(f"{L}/{sid}/stdio"), 30) == b"4 of 4\n"
        await ctl(c, sid, "close")


async def test_a_growth_that_cannot_be_met_leaves_the_session_exactly_as_it_was(tmp_path
                                                                               ):  # type: ignore[no-untyped-def]
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        before = all_free(nodes)
        sid = await session(c, ["res 2", "exec echo hi"])
        await c.read(f"{L}/{sid}/wait")
        status_before, line_before = await status_rows(c, sid), await state_line(c, sid)
        with pytest.raises(NinepError, match=r"res: not enough slots: asked 100, \d+ free in "
                                             r"reach"):
            await ctl(c, sid, "res +100")
        assert await status_rows(c, sid) == status_before
        assert await state_line(c, sid) == line_before
        await wait_for(lambda: all_free(nodes) == {**before, "n0": before["n0"] - 2}, 10)
        with pytest.raises(NinepError, match=r"spread 'rack': no node has that label"):
            await ctl(c, sid, "res +4 spread rack")
        assert await state_line(c, sid) == line_before
        await ctl(c, sid, "res +2")  # the refusals used no index
        assert "ranks 0-3" in await state_line(c, sid)
        await ctl(c, sid, "close")


async def test_bad_ranks_and_verbs_out_of_place_are_refused_saying_why(tmp_path
                                                                       ):  # type: ignore[no-untyped-def]
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, [])
        with pytest.raises(NinepError, match="holds no slots yet; reserve with res N first"):
            await ctl(c, sid, "res +2")
        await ctl(c, sid, "res 2")
        with pytest.raises(NinepError, match=r"res: asked for 0 slots; .* \(or res \+N to grow"):
            await ctl(c, sid, "res +0")
        with pytest.raises(NinepError, match=r'res: "x" is not a number'):
            await ctl(c, sid, "res +x")
        # the way back to the session a neighbour names stays under /csrv
        with pytest.raises(NinepError, match="rank: bad route"):
            await ctl(c, sid, "rank 0 2 n0:/csrv/local/0 - parent/../../etc")
        with pytest.raises(NinepError, match=r"release 9: session \d+ has no rank 9; its ranks "
                                             r"are 0-1"):
            await ctl(c, sid, "release 9")
        with pytest.raises(NinepError, match="has no rank 2; its ranks are 0-1"):
            await ctl(c, sid, "release 1-5")
        with pytest.raises(NinepError, match=r'give ranks as N, N-M .*"x" is not one'):
            await ctl(c, sid, "release 1,x")
        with pytest.raises(NinepError, match="3-1 runs backwards"):
            await ctl(c, sid, "release 3-1")
        # a rank set spanning a billion ranks is refused by its first one, never expanded
        with pytest.raises(NinepError, match="has no rank 2"):
            await ctl(c, sid, "release 0-999999999999999999")
        with pytest.raises(NinepError, match="has no rank 5"):
            await ctl(c, sid, "exec @5 true")
        with pytest.raises(NinepError, match="holds no ranks from a res \\+N"):
            await ctl(c, sid, "exec + true")
        with pytest.raises(NinepError, match="is a sub-session"):
            await c.write(f"{L}/{sid}/0/ctl", "release 0\n")
        await ctl(c, sid, "exec @1 sleep 300")
        with pytest.raises(NinepError, match=r"exec @0-1: sub-session\(s\) \d+/1 still running"):
            await ctl(c, sid, "exec @0-1 true")
        assert [r[3] for r in await status_rows(c, sid)] == ["idle", "running"]
        await ctl(c, sid, "exec @0 true")  # the idle one may run beside it
        # a released rank's files, held open or walked to again, run nothing more
        from brasil.ninep.constants import OWRITE
        assert await c.read(f"{L}/{sid}/proc/1/cmdline")
        held = await c.open(f"{L}/{sid}/1/ctl", OWRITE)
        await ctl(c, sid, "release 1")
        with pytest.raises(NinepError, match="sub-session \\d+/1 was released"):
            await held.write(b"exec true\n")
        await held.close()
        for gone in ("1/status", "proc/1/cmdline"):
            with pytest.raises(NinepError, match="does not exist"):
                await c.read(f"{L}/{sid}/{gone}")
        await ctl(c, sid, "close")
        fresh = await session(c, [])
        with pytest.raises(NinepError, match=r"session \d+ is new: cannot release now"):
            await ctl(c, fresh, "release 0")


async def test_growth_past_a_policy_cap_is_refused_with_the_policys_sentence(tmp_path
                                                                            ):  # type: ignore[no-untyped-def]
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        nodes["n0"].node.policy = parse_policy({"caps": {"*": {"slots": 3,
                                                               "reservation": 4}}}, "caps.toml")
        sid = await session(c, ["res 2"])
        with pytest.raises(NinepError, match=r"refused by policy caps.toml: user \S+ \(caps "
                                             r'"\*"\) may hold at most 3 slots at once \(2 '
                                             r"held, 2 asked\)"):
            await ctl(c, sid, "res +2")
        with pytest.raises(NinepError, match="at most 4 slots in one res"):
            await ctl(c, sid, "res +5")
        assert "subs 2" in await state_line(c, sid)
        await ctl(c, sid, "res +1")
        assert "subs 3 " in await state_line(c, sid)
        await ctl(c, sid, "close")


async def test_a_rank_on_a_child_grows_its_session_through_the_parent(tmp_path
                                                                      ):  # type: ignore[no-untyped-def]
    """$BRASIL_SESSION_DIR on a neighbour leads back to the origin (/csrv/parent/…/local/ID)."""
    async with tree_1_3_9(str(tmp_path), slots=1) as (nodes, c):
        sid = await session(c, ["res 1", "res +1"])
        rows = await status_rows(c, sid)
        assert rows[1][1] != "n0", rows
        await ctl(c, sid, f'exec @1 echo "$BRASIL_SESSION_DIR"; {BRASIL} ctl res +2')
        out = (await asyncio.wait_for(c.read(f"{L}/{sid}/stdio"), 30)).decode()
        assert out.startswith("/csrv/parent/") and out.strip().endswith(f"/local/{sid}"), out
        await wait_for(lambda: nodes["n0"].node.sessions[sid].nsubs == 4, 10)
        assert "ranks 0-3" in await state_line(c, sid)
        await ctl(c, sid, "close")


async def test_growth_keeps_the_first_res_spread_over_racks(tmp_path):  # type: ignore[no-untyped-def]
    """`res +N` alone is placed as the first res was: spread over the racks again."""
    async with tree_1_3_9(str(tmp_path), slots=2) as (nodes, c):
        rack = await label_racks(nodes)
        sid = await session(c, ["res 3 spread rack", "res +3"])
        rows = await status_rows(c, sid)
        assert [r[0] for r in rows] == ["0", "1", "2", "3", "4", "5"], rows
        assert sorted(rack[r[1]] for r in rows[:3]) == ["r1", "r2", "r3"], rows
        assert sorted(rack[r[1]] for r in rows[3:]) == ["r1", "r2", "r3"], rows
        before = await state_line(c, sid)
        with pytest.raises(NinepError, match=r"cannot spread 30 slots over rack"):
            await ctl(c, sid, "res +30")
        assert await state_line(c, sid) == before
        await ctl(c, sid, "close")


async def test_concurrent_growths_and_large_rank_sets_stay_bounded(tmp_path
                                                                   ):  # type: ignore[no-untyped-def]
    """Two `res +N` at once: the second is refused while the first is in flight (never queued)
    or runs after it; either way every slot is accounted for. A rank set of too many parts is
    refused before anything is built from it."""
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        before = all_free(nodes)
        sid = await session(c, ["res 2"])
        got = await asyncio.gather(ctl(c, sid, "res +3"), ctl(c, sid, "res +3"),
                                   return_exceptions=True)
        refused = [r for r in got if isinstance(r, BaseException)]
        assert all("another res +N of session" in str(r) and "is in flight" in str(r)
                   for r in refused), got
        grown = 3 * (2 - len(refused))
        line = await state_line(c, sid)
        assert f"subs {2 + grown} " in line and f"ranks 0-{1 + grown}" in line, line
        taken = sum(before.values()) - sum(all_free(nodes).values())
        assert taken == 2 + grown
        with pytest.raises(NinepError, match="at most 1024 parts"):
            await ctl(c, sid, "release " + ",".join(str(i) for i in range(2000)))
        await ctl(c, sid, "close")
        await wait_for(lambda: all_free(nodes) == before, 10)


async def test_input_keeps_flowing_to_the_ranks_left_after_a_release(tmp_path
                                                                     ):  # type: ignore[no-untyped-def]
    """Broadcast input goes on to the ranks that are left (one of them on a child); a release
    while input is dealt round-robin is refused, since records would go to a dead rank."""
    from brasil.ninep.constants import OWRITE
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 2", "res +1", "exec cat"])
        async with await c.open(f"{L}/{sid}/stdio") as out:
            async with await c.open(f"{L}/{sid}/stdio", OWRITE) as w:
                await w.write(b"one\n")
                got = b""
                while got.count(b"one\n") < 3:
                    got += await asyncio.wait_for(out.read(), 30)
                await ctl(c, sid, "release 1")
                await w.write(b"two\n")
            rest = b""
            while chunk := await asyncio.wait_for(out.read(), 30):
                rest += chunk
        assert (got + rest).count(b"one\n") == 3 and rest.count(b"two\n") == 2, got + rest
        sid = await session(c, ["res 2", "mux rr", "exec cat"])
        async with await c.open(f"{L}/{sid}/stdio", OWRITE) as w:
            await w.write(b"x\n")
            with pytest.raises(NinepError, match=r"release 1: the session's input is being dealt "
                                                 r"\(mux rr\).*end the input first"):
                await ctl(c, sid, "release 1")
        await ctl(c, sid, "release 1")  # once the input has ended
        line = await state_line(c, sid)
        assert line.split()[-2:] == ["ranks", "0"], line


async def test_a_reader_opened_before_any_exec_gets_each_rank_once(tmp_path
                                                                   ):  # type: ignore[no-untyped-def]
    """stdio opened while the session only holds slots waits for every rank; ranks started
    one group at a time (here, then on neighbours) each reach it once, and it ends after all."""
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 2", "res +3"])
        async with await c.open(f"{L}/{sid}/stdio") as out:
            await ctl(c, sid, "exec @0-1 echo here $BRASIL_RANK")
            await ctl(c, sid, "exec + echo grown $BRASIL_RANK")
            got = b""
            while chunk := await asyncio.wait_for(out.read(), 30):
                got += chunk
        assert sorted(got.decode().splitlines()) == \
            ["grown 2", "grown 3", "grown 4", "here 0", "here 1"], got
        await ctl(c, sid, "close")


async def test_what_a_released_rank_wrote_is_still_read_and_the_merge_does_not_wait_for_it(
        tmp_path):  # type: ignore[no-untyped-def]
    """A rank's output nobody read yet survives its release (the next reader of stdio gets it);
    a reader's merge ends once the last running rank is released, its sleep notwithstanding."""
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 2", "res +1", "exec echo hi-$BRASIL_RANK; exec sleep 300"])
        s = nodes["n0"].node.sessions[sid]
        await wait_for(lambda: len(s._by_index[1].stdout.stream) > 0, 10)  # (unread: peeked)
        await ctl(c, sid, "release 1")
        async with await c.open(f"{L}/{sid}/stdio") as out:
            got = b""
            while got.count(b"\n") < 3:
                got += await asyncio.wait_for(out.read(), 30)
            assert sorted(got.decode().split()) == ["hi-0", "hi-1", "hi-2"], got
            await ctl(c, sid, "release 0,2")  # the sleeps are killed; the merge ends now
            assert await asyncio.wait_for(out.read(), 30) == b""
        line = await state_line(c, sid)
        assert " subs 0 " in line and line.split()[-2:] == ["ranks", "-"], line
        await ctl(c, sid, "close")


async def test_a_rank_released_before_it_ran_reads_end_of_file_and_takes_no_input(tmp_path
                                                                                  ):  # type: ignore[no-untyped-def]
    """A slot's pipes are made when first used (a big res holds thousands that never run here):
    one released before anyone touched them still gives its readers end of file, not a wait,
    and refuses input, as one whose streams were made and then ended."""
    from brasil.ninep.client import Client
    from fixtures import node_daemon
    async with node_daemon(str(tmp_path), slots=3) as (node, addr):
        c = await Client.connect(addr)
        sid = await session(c, ["res 3"])
        s = node.sessions[sid]
        leaves = [s._by_index[i] for i in range(3)]
        assert all(leaf._stdout is None and leaf._stdin is None for leaf in leaves)
        from brasil.ninep.constants import OWRITE
        out1 = await c.open(f"{L}/{sid}/1/stdout")
        in1 = await c.open(f"{L}/{sid}/1/stdin", OWRITE)
        await ctl(c, sid, "release 1,2")  # 1: files open, nothing read or written; 2: untouched
        assert await asyncio.wait_for(out1.read(), 10) == b""
        with pytest.raises(NinepError):
            await in1.write(b"late\n")
        for leaf in leaves[1:]:  # (release keeps what was written: output ends, not broken)
            assert leaf.stdout.stream.eof and leaf.stderr.stream.eof and leaf.stdin.eof
        await out1.close()
        await in1.close()
        await ctl(c, sid, "exec echo still $BRASIL_RANK")
        assert await asyncio.wait_for(c.read(f"{L}/{sid}/stdio"), 30) == b"still 0\n"
        await ctl(c, sid, "close")
        await c.close()
