"""Files staged down the tree, cached by content at every node (issue 21 §4): sent once per
link, nothing the second time, a wrong upload kept nowhere, bad names refused."""

from __future__ import annotations

import hashlib
import pathlib

import pytest

from brasil.client.run import run
from brasil.client.stage import upload
from brasil.ninep.constants import ORDWR
from brasil.ninep.errors import NinepError
from fixtures import ctl, new_session, small_tree, wait_for

L = "csrv/local"


async def stats(c, node: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    path = f"{L}/stage/stats" if node == "root" else f"csrv/{node}/local/stage/stats"
    return {k: int(v) for k, v in (ln.split() for ln in (await c.read(path)).decode().splitlines())}


async def test_a_file_goes_down_once_per_link_and_not_at_all_the_second_time(tmp_path):
    prog = tmp_path / "hello.sh"
    prog.write_text('#!/bin/sh\necho "$BRASIL_NODE $(basename "$0") $1"\n')
    prog.chmod(0o755)
    async with small_tree(str(tmp_path)) as (nodes, c):
        for round_ in (1, 2):
            lines: list[str] = []
            result = await run(c, f'"$BRASIL_STAGE"/hello.sh {round_}', stage=[str(prog)],
                               out=lines.append, label=False)
            assert result.status == 0
            assert sorted(lines) == [f"{n} hello.sh {round_}" for n in ("a", "b", "b.1", "root")]
            # b.1 got it from b, not from the root: one transfer per link, ever
            for node in ("root", "a"):  # as a client reads it
                assert (await stats(c, node))["received"] == 1, (round_, node)
            for name, d in nodes.items():
                assert d.node.stage_cache().received == 1, (round_, name)
        # The sessions' links are gone with them; every cache keeps the file.
        for d in nodes.values():
            cache = pathlib.Path(d.node.stage_cache().path)
            await wait_for(lambda cache=cache: not list((cache / "sessions").iterdir()), 10)
            assert [p.name for p in cache.iterdir() if p.name != "sessions"] == [
                hashlib.sha256(prog.read_bytes()).hexdigest()]


async def test_a_wrong_upload_is_kept_nowhere_and_bad_requests_say_why(tmp_path):
    async with small_tree(str(tmp_path)) as (nodes, c):
        h = hashlib.sha256(b"right").hexdigest()
        f = await c.create(f"{L}/stage/{h}", 0o400, ORDWR)
        await f.write(b"wrong")
        with pytest.raises(NinepError, match=r"the bytes written hash to [0-9a-f]{64}, not "
                           + h + ": nothing kept; write the file again"):
            await f.read(256, 0)
        await f.close()
        assert h not in [st.name for st in await c.ls(f"{L}/stage")]
        f = await c.create(f"{L}/stage/{h}", 0o400, ORDWR)
        with pytest.raises(NinepError, match=r"write at 3, expected 0: write the file in order"):
            await f.write(b"x", offset=3)
        await f.close()  # nothing written, nothing kept (a clunk stores only a match)
        assert h not in [st.name for st in await c.ls(f"{L}/stage")]
        cache = pathlib.Path(nodes["root"].node.stage_cache().path)
        assert sorted(p.name for p in cache.iterdir()) == ["sessions"]  # no upload left over
        with pytest.raises(NinepError, match="is not a SHA-256 in hex"):
            await c.create(f"{L}/stage/notahash", 0o400)
        sid = await new_session(c)
        await ctl(c, sid, "res 2")
        with pytest.raises(NinepError, match=f"stage: {h} is not here; write it to "
                           f"/csrv/local/stage/{h} first"):
            await ctl(c, sid, f"stage {h} prog")
        path = tmp_path / "prog"
        path.write_bytes(b"right")
        assert await upload(c, str(path)) == h
        with pytest.raises(NinepError, match=r"stage: name '\.\./x': 1-128 letters"):
            await ctl(c, sid, f"stage {h} ../x")
        with pytest.raises(NinepError, match="stage: on the session, not on a sub-session"):
            await c.write(f"{L}/{sid}/0/ctl", f"stage {h} prog\n")
        await ctl(c, sid, f"stage {h} prog")
        await ctl(c, sid, "close")
