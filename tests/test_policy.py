"""Protective policy (issue 21 §2): caps per user on sessions, slots and one reservation's size,
checked where a session is made, refused with a sentence naming the policy and the cap."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brasil.ninep.client import Client
from brasil.ninep.errors import NinepError
from brasil.node import policy
from fixtures import ctl, new_session, small_tree

POLICY = {"caps": {"*": {"sessions": 2, "reservation": 6},
                   "alice": {"slots": 5}}}


def test_a_user_table_replaces_the_default_key_by_key():
    p = policy.parse(POLICY, "caps.toml")
    assert p.caps("alice") == policy.Caps(sessions=2, slots=5, reservation=6)
    assert p.caps("bob") == policy.Caps(sessions=2, slots=None, reservation=6)
    assert policy.parse({}, "empty").caps("anyone") == policy.Caps()


@pytest.mark.parametrize("data, says", [
    ({"limits": {}}, "unknown table(s) limits; only [caps.USER]"),
    ({"caps": {"bob": {"cpus": 3}}}, "caps.bob: unknown key(s) cpus; the keys are sessions"),
    ({"caps": {"bob": {"slots": -1}}}, "caps.bob.slots = -1: give a whole number ≥ 0"),
    ({"caps": {"bob": {"slots": "9"}}}, "caps.bob.slots = '9': give a whole number"),
    ({"caps": {"bob": 3}}, "caps.bob must be a table"),
])
def test_a_wrong_policy_is_a_sentence_that_says_where(data, says):
    with pytest.raises(policy.PolicyError, match="^policy p.toml: ") as e:
        policy.parse(data, "p.toml")
    assert says in str(e.value)


def test_the_reference_example_is_a_valid_policy():
    import pathlib
    import re
    import tomllib
    text = (pathlib.Path(__file__).parent.parent / "docs/reference.md").read_text()
    block = re.search(r"```toml\n(\[caps.*?)```", text, re.S)
    assert block is not None
    p = policy.parse(tomllib.loads(block.group(1)), "reference.md")
    assert p.caps("alice") == policy.Caps(sessions=20, slots=16, reservation=128)


def test_serve_refuses_to_start_on_a_bad_policy_file(tmp_path):
    (tmp_path / "p.toml").write_text("[caps.bob]\nslots = 'many'\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    r = subprocess.run([sys.executable, "-m", "brasil.cli.main", "serve", "--listen",
                        f"unix:{tmp_path}/s.sock", "--state-dir", str(state), "--policy",
                        str(tmp_path / "p.toml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "caps.bob.slots = 'many': give a whole number ≥ 0" in r.stderr


async def test_a_user_over_a_cap_is_refused_while_another_user_reserves(tmp_path):
    async with small_tree(str(tmp_path), slots=3) as (nodes, _):
        root = nodes["root"]
        root.node.policy = policy.parse(POLICY, "caps.toml")
        alice = await Client.connect(root.unix, uname="alice")
        bob = await Client.connect(root.unix, uname="bob")
        try:
            a1 = await new_session(alice)
            await ctl(alice, a1, "res 5")  # 3 here and 2 below: counted once, at the origin
            a2 = await new_session(alice)
            with pytest.raises(NinepError, match=r'res: refused by policy caps.toml: user alice '
                               r'may hold at most 5 slots at once \(5 held, 1 asked\); to change '
                               r'it, the administrator edits caps."alice".slots there'):
                await ctl(alice, a2, "res 1")
            assert root.node.sessions[a2].session_state == "new"  # nothing half done
            # bob is under the default caps: no slot cap, at most 6 in one res, 2 sessions
            b1 = await new_session(bob)
            with pytest.raises(NinepError, match=r'user bob \(caps "\*"\) may ask for at most 6 '
                               r'slots in one res \(asked 7\)'):
                await ctl(bob, b1, "res 7")
            await ctl(bob, b1, "res 5")
            b2 = await new_session(bob)
            await ctl(bob, b2, "res 1")  # alice's sessions do not count against bob
            b3 = await new_session(bob)
            with pytest.raises(NinepError, match=r"at most 2 sessions with slots at once \(2 now\)"):
                await ctl(bob, b3, "res 1")
            # a session given back makes room again
            await ctl(alice, a1, "close")
            await ctl(alice, a2, "res 1")
        finally:
            await alice.close()
            await bob.close()


async def test_a_session_narrows_its_own_caps_under_the_policy(tmp_path):
    """`cap slots N` / `cap reservation N` on a session's ctl (the user's or the application's
    own bound, issue 21 §2 "narrowed per session"): checked at every later res and res +N,
    shown in the state line, never raised, and the administrator's caps still apply."""
    async with small_tree(str(tmp_path), slots=3) as (nodes, c):
        root = nodes["root"]
        root.node.policy = policy.parse(POLICY, "caps.toml")  # bob: at most 6 in one res
        sid = await new_session(c)
        await ctl(c, sid, "cap slots 4")
        await ctl(c, sid, "cap reservation 3")
        with pytest.raises(NinepError, match=rf"res: refused by session {sid}'s own cap: at most "
                           r"3 slots in one res \(asked 4; set by `cap reservation` on its ctl"):
            await ctl(c, sid, "res 4")
        assert root.node.sessions[sid].session_state == "new"
        await ctl(c, sid, "res 3")
        with pytest.raises(NinepError, match=r"at most 4 slots at once \(3 held, 2 asked; set by "
                           r"`cap slots` on its ctl"):
            await ctl(c, sid, "res +2")
        await ctl(c, sid, "res +1")
        state = (await c.read(f"csrv/local/{sid}/ctl")).decode()
        assert " ranks 0-3 caps slots=4 reservation=3" in state, state
        with pytest.raises(NinepError, match=r"cap: session \d+ has slots capped at 4; a cap "
                           r"only narrows"):
            await ctl(c, sid, "cap slots 5")
        await ctl(c, sid, "cap slots 2")  # lower than held: nothing taken away, no growth
        with pytest.raises(NinepError, match="at most 2 slots at once"):
            await ctl(c, sid, "res +1")
        for bad, says in (("cap sessions 1", "unknown cap 'sessions'; a session narrows slots "
                           "or reservation"), ("cap slots -1", "give a whole number ≥ 0"),
                          ("cap slots many", '"many" is not a number')):
            with pytest.raises(NinepError, match=re.escape(says)):
                await ctl(c, sid, bad)
        with pytest.raises(NinepError, match="is a sub-session; set caps on the session's ctl"):
            await ctl(c, f"{sid}/0", "cap slots 1")
        # The policy still rules above a session's own caps.
        other = await new_session(c)
        await ctl(c, other, "cap reservation 100")
        await ctl(c, sid, "close")
        with pytest.raises(NinepError, match=r"refused by policy caps.toml: .* at most 6 slots in "
                           r"one res \(asked 7\)"):
            await ctl(c, other, "res 7")


async def test_res_spread_deals_ranks_evenly_over_a_label_s_values(tmp_path):
    # Placement (issue 21 §2): n1, n2, n3 and their children are racks r1, r2, r3 of a 1+3+9.
    from fixtures import status_rows, wait_for
    from trees import label_racks, tree_1_3_9
    async with tree_1_3_9(str(tmp_path), slots=2) as (nodes, c):
        rack = await label_racks(nodes)
        sid = await new_session(c)
        await ctl(c, sid, "res 6 spread rack")
        nodes_of = [row[1] for row in await status_rows(c, sid)]
        assert sorted(rack[n] for n in nodes_of) == ["r1", "r1", "r2", "r2", "r3", "r3"]
        await ctl(c, sid, "close")
        # brasil run --spread: the same, from the command line's API
        from brasil.client.run import run
        lines: list[str] = []
        result = await run(c, "echo $BRASIL_NODE", n=3, spread="rack", out=lines.append,
                           label=False)
        assert result.status == 0 and sorted(rack[ln] for ln in lines) == ["r1", "r2", "r3"]
        # More than the racks hold: refused whole, saying how much each had; nothing kept.
        def all_free() -> bool:
            return all(len(d.node.free) == 2 for d in nodes.values())
        await wait_for(all_free, 10)
        sid = await new_session(c)
        with pytest.raises(NinepError, match=r"res: cannot spread 25 slots over rack: "
                           r"rack=r1 has 8 free, rack=r2 has 8 free, rack=r3 has 8 free"):
            await ctl(c, sid, "res 25 spread rack")
        await wait_for(all_free, 10)
        with pytest.raises(NinepError, match=r"res: spread 'bogus': no node has that label"):
            await ctl(c, sid, "res 2 spread bogus")


@given(st.integers(0, 10**12), st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 10**12)))
def test_dealing_is_one_at_a_time_in_name_order_and_never_loops_per_slot(n, room):
    from brasil.node.daemon import deal
    share = deal(n, room)
    assert sum(share.values()) == min(n, sum(room.values()))
    assert all(0 <= share[k] <= room[k] for k in room)
    # as dealt one by one: no key with room left is two behind another, and ties go by name
    open_ = [k for k in sorted(room) if share[k] < room[k]]
    if open_:
        low = min(share[k] for k in open_)
        assert all(share[k] in (low, low + 1) for k in open_)
        assert all(share[k] <= low + 1 for k in room)
