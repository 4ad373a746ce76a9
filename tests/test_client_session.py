"""The client-side session handle (client/session.py) against real daemons, and its parsers."""

from __future__ import annotations

import asyncio

from brasil.client.session import SessionClient, data_address, lines, one_line, rank_rows
from fixtures import tree_13, wait_for


def test_the_ctl_words_and_rows_are_read_and_written_as_the_daemons_do():
    assert lines("res 4", "exec date") == "res 4\nexec date\n"
    assert one_line("date") == "date"
    assert "\n" not in one_line("echo a\necho b")
    assert rank_rows("0 n1 - running 12\n1 n2 - done 13 0\ntotal 2\n\n") == [
        ["0", "n1", "-", "running", "12"], ["1", "n2", "-", "done", "13", "0"]]
    assert rank_rows("0 0\n1 lost node n3 lost\n") == [["0", "0"], ["1", "lost", "node", "n3",
                                                                  "lost"]]
    assert data_address("session 0/1 running; data 127.0.0.1:4567") == "127.0.0.1:4567"
    assert data_address("session 0/1 running") is None


async def test_a_session_is_driven_from_clone_to_close(tmp_path):
    async with tree_13(str(tmp_path)) as (nodes, c):
        s = await SessionClient.clone(c)
        assert s.path == f"csrv/local/{s.sid}"
        await s.hold()
        await s.ctl("label off", "res 4 pernode 1")
        assert sorted((await s.nodes()).values()) == ["n0", "n1", "n2", "n3"]
        # a script of several lines is one exec line, run as written
        await s.exec("echo a\necho $BRASIL_RANK", "env X=1")
        out = (await c.read(s.file("stdio"))).decode().split()
        assert sorted(out) == sorted(["a"] * 4 + ["0", "1", "2", "3"])
        assert [w[:2] for w in rank_rows(await s.wait())] == [[str(r), "0"] for r in range(4)]
        assert (await s.sub(2).wait()).split()[1] == "0"  # a rank's own wait, wherever it ran
        await s.close()
        s.forget()
        await wait_for(lambda: all(not d.node.sessions for d in nodes.values()), timeout=10)


async def test_a_sub_session_names_its_data_endpoint_and_kill_stops_every_rank(tmp_path):
    async with tree_13(str(tmp_path)) as (nodes, c):
        s = await SessionClient.clone(c)
        await s.ctl("res 4 pernode 1")
        addresses = [await s.sub(j).data_address() for j in range(4)]
        assert all(a and ":" in a for a in addresses), addresses
        await s.exec("sleep 60")
        rows = await s.rows()
        assert len(rows) == 4
        await s.kill()
        text = await asyncio.wait_for(s.wait(), 20)
        assert all(w[1] != "0" for w in rank_rows(text)), text
        await s.close()
        await s.close()  # closing a session gone already is not an error
        await wait_for(lambda: all(not d.node.sessions for d in nodes.values()), timeout=10)


async def test_clone_opened_for_writing_is_the_new_sessions_ctl(tmp_path):
    """Plan 9's clone: one open makes the session and holds its ctl (a neighbour's delegated
    session costs a round trip less); read for reading, it still names the session."""
    from brasil.ninep.constants import ORDWR
    async with tree_13(str(tmp_path)) as (nodes, c):
        f, line = await c.open_read("csrv/local/clone", mode=ORDWR)
        words = line.decode().split()
        assert words[:3] == ["session", words[1], "new"], line
        sid = words[1]
        await f.write("res 2\n", 0)
        assert (await f.read(4096, 0)).decode().split()[:3] == ["session", sid, "reserved"]
        other = (await c.read("csrv/local/clone")).decode().strip()  # the read way, as ever
        assert other.isdigit() and other != sid
        await f.close()  # the session outlives the file that made it
        assert sid in nodes["n0"].node.sessions
        s = await SessionClient.clone_held(c)
        assert s.held is not None and s.sid in nodes["n0"].node.sessions
        await s.ctl("res 1")
        assert " reserved " in await s.state()
        for done in (s, *(SessionClient(c, f"csrv/local/{i}") for i in (sid, other))):
            await done.close()
        s.forget()
        await wait_for(lambda: not nodes["n0"].node.sessions, timeout=10)


async def test_a_daemon_whose_clone_is_only_read_still_gets_a_held_session(tmp_path):
    """A daemon from before clone could be written (its clone 0444, read gives the id): the
    client falls back to clone, then ID/ctl, and does not ask that connection again."""
    from brasil.client import session as session_module
    from brasil.ninep.synthetic import BytesHandle
    async with tree_13(str(tmp_path)) as (nodes, c):
        node = nodes["n0"].node
        clone = next(k for k in node.local.children() if k.name == "clone")
        clone.mode = 0o444

        def old_open(mode):  # type: ignore[no-untyped-def]
            return BytesHandle(clone, f"{node.new_session().path}\n".encode())
        clone.open = old_open
        for _ in range(2):
            s = await SessionClient.clone_held(c)
            assert s.held is not None
            await s.ctl("res 1")
            assert " reserved " in await s.state()
            await s.close()
            s.forget()
        assert session_module._read_only_clones[c] == {"csrv/local"}
        await wait_for(lambda: not node.sessions, timeout=10)
