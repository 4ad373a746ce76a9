"""Issue 11 §5: a tree survives the loss of an interior node (killed, or frozen).

On a 1+3+9 tree, n1 is lost: its children n1.1…n1.3 re-attach to the nearest live ancestor (the
root) and reappear in its namespace, and a `res 12` spanning them succeeds.
"""

from __future__ import annotations

import os
import signal

import pytest

from brasil.ninep.auth import client_auth, load_secret
from brasil.ninep.client import Client
from fixtures import status_rows
from helpers import cli

L = "csrv/local"


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "c"
    r = cli("cluster", "up", "--depth", "2", "--fanout", "3", "--slots", "1", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    try:
        yield d
    finally:
        pid = int((d / "n1.pid").read_text()) if (d / "n1.pid").exists() else 0
        if pid:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        cli("cluster", "down", "--dir", str(d))


async def names(c: Client) -> set[str]:
    text = (await c.read(f"{L}/status")).decode()
    return {ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith("total")}


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
async def test_an_interior_nodes_children_reattach_to_the_root(tree, how):
    c = await Client.connect(f"unix:{tree}/n0.sock",
                             auth=client_auth(load_secret(f"{tree}/secret")))
    try:
        assert len(await names(c)) == 13
        lineage = (await c.read("csrv/n2/n2.1/local/lineage")).decode().split()
        assert len(lineage) == 3  # n2.1 itself, n2, n0: each node knows its ancestors
        os.kill(int((tree / "n1.pid").read_text()), how)
        want = {"n0", "n2", "n3", "n1.1", "n1.2", "n1.3"} | {f"n{i}.{j}" for i in (2, 3)
                                                             for j in (1, 2, 3)}

        async def reattached() -> bool:
            if await names(c) != want:
                return False
            children = {s.name for s in await c.ls("csrv")}
            return {"n1.1", "n1.2", "n1.3"} <= children and "n1" not in children
        await wait_for_async(reattached, timeout=10)
        if how == signal.SIGSTOP:  # the root says why it let n1 go, reason included
            assert "child n1 lost: no heartbeat: no answer within 3s" in \
                (tree / "n0.log").read_text()
        sid = (await c.read(f"{L}/clone")).decode().strip()
        await c.write(f"{L}/{sid}/ctl", "res 12\nexec echo $BRASIL_NODE\n")
        out = sorted((await c.read(f"{L}/{sid}/stdio")).decode().split())
        assert out == sorted(want)
        assert {r[1] for r in await status_rows(c, sid)} == want
    finally:
        await c.close()


async def wait_for_async(predicate, timeout: float) -> None:
    """Poll an async condition until true, or fail after ``timeout`` seconds."""
    import asyncio
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)

