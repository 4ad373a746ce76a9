"""Real daemons in a real tree: `brasil cluster up`, sessions over it, kill -9, `down`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

from brasil.ninep.auth import client_auth, load_secret
from brasil.ninep.client import Client
from brasil.ninep.errors import NinepError
from fixtures import date_wc, status_rows
from helpers import cli

L = "csrv/local"


@pytest.fixture(scope="module")
def tree13(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster13")
    r = cli("cluster", "up", "--depth", "2", "--fanout", "3", "--slots", "1", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"unix:{d}/n0.sock"
    try:
        yield d
    finally:
        r = cli("cluster", "down", "--dir", str(d))
        assert "stopped 13 daemon(s)" in r.stderr


async def connect(d) -> Client:
    return await Client.connect(f"unix:{d}/n0.sock",
                                auth=client_auth(load_secret(f"{d}/secret")))


async def test_res_12_on_a_1_3_9_tree_runs_on_12_nodes(tree13):
    c = await connect(tree13)
    sid = (await c.read(f"{L}/clone")).decode().strip()
    await c.write(f"{L}/{sid}/ctl", "res 12\n")
    await c.write(f"{L}/{sid}/ctl", "exec echo $BRASIL_NODE\n")
    names = (await c.read(f"{L}/{sid}/stdio")).decode().split()
    assert len(names) == 12 and len(set(names)) == 12
    assert {n.count(".") for n in names} == {0, 1}  # the root, children and grandchildren
    await c.write(f"{L}/{sid}/ctl", "close\n")
    await c.close()


async def test_xsplice_between_two_leaves_of_the_tree(tree13):
    c = await connect(tree13)
    await wait_for_free(c, 13)
    sid = (await c.read(f"{L}/clone")).decode().strip()
    await c.write(f"{L}/{sid}/ctl", "res 13\n")
    rows = await status_rows(c, sid)
    leaves = [r for r in rows if r[1].count(".") == 1]
    src, dst = leaves[0], next(r for r in leaves if r[1].split(".")[0] != leaves[0][1].split(".")[0])
    await c.write(f"{L}/{sid}/{src[0]}/ctl", "exec date\n")
    await c.write(f"{L}/{sid}/{dst[0]}/ctl", "exec wc\n")
    await c.write(f"{L}/{sid}/ctl", f"xsplice {src[0]} {dst[0]}\n")
    got = (await c.read(f"{L}/{sid}/{dst[0]}/stdio")).decode()
    assert got.split() == date_wc()
    await c.write(f"{L}/{sid}/ctl", "close\n")
    await c.close()


async def wait_for_free(c: Client, n: int) -> None:
    async def free() -> int:
        total = (await c.read(f"{L}/status")).decode().splitlines()[-1].split()
        return int(total[2])
    for _ in range(200):
        if await free() >= n:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the tree never had {n} free slots again")


async def test_more_than_the_tree_holds_fails_and_releases_everything(tree13):
    c = await connect(tree13)
    await wait_for_free(c, 13)
    sid = (await c.read(f"{L}/clone")).decode().strip()
    with pytest.raises(NinepError, match="res: not enough slots: asked 14, 13 free in reach"):
        await c.write(f"{L}/{sid}/ctl", "res 14\n")
    await wait_for_free(c, 13)
    await c.close()


async def test_kill_9_of_a_leaf_fails_its_part_and_the_rest_finish(tmp_path):
    d = tmp_path / "c"
    r = cli("cluster", "up", "--depth", "1", "--fanout", "2", "--slots", "1", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    try:
        c = await connect(d)
        sid = (await c.read(f"{L}/clone")).decode().strip()
        await c.write(f"{L}/{sid}/ctl", "res 3\n")
        await c.write(f"{L}/{sid}/ctl", "exec sleep 3; echo $BRASIL_NODE finished\n")
        victim = int((d / "n2.pid").read_text())
        os.kill(victim, signal.SIGKILL)
        wait = (await asyncio.wait_for(c.read(f"{L}/{sid}/wait"), 60)).decode().splitlines()
        assert sum("node n2 lost" in ln for ln in wait) == 1, wait
        assert sum(ln.endswith(" 0") for ln in wait) == 2, wait
        out = sorted((await c.read(f"{L}/{sid}/stdio")).decode().splitlines())
        assert out == ["n0 finished", "n1 finished"]
        names = [s.name for s in await c.ls("csrv")]
        assert "n2" not in names and "n1" in names  # gone from the namespace
        await c.close()
    finally:
        cli("cluster", "down", "--dir", str(d))


def test_down_leaves_alone_a_process_that_took_a_recorded_pid(tmp_path):
    """Issue 15 §4: the daemon died, its pid went to another process (here a `sleep` whose pid
    is written into n0.pid): `down` does not kill it, and says so."""
    d = tmp_path / "c"
    r = cli("cluster", "up", "--depth", "0", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    daemon = int((d / "n0.pid").read_text())
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        (d / "n0.pid").write_text(f"{bystander.pid}\n")
        down = cli("cluster", "down", "--dir", str(d))
        assert bystander.poll() is None, "cluster down killed a process it had not started"
        assert "stopped 0 daemon(s)" in down.stderr, down.stderr
        assert f"n0: pid {bystander.pid} is not its daemon any more" in down.stderr
        (d / "n0.pid").write_text(f"{daemon}\n")  # the daemon's own pid is still stopped
        assert "stopped 1 daemon(s)" in cli("cluster", "down", "--dir", str(d)).stderr
    finally:
        bystander.kill()
        bystander.wait()
        try:
            os.kill(daemon, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_up_again_after_a_root_killed_at_down_never_joins_its_old_address(tmp_path):
    # A daemon killed with KILL at `down` (one whose commands ignored TERM) leaves its state
    # directory's addresses behind; the next `up` in the same directory must not hand them to
    # the children, which would then dial a port nobody listens on.
    d = tmp_path / "c"
    r = cli("cluster", "up", "--depth", "1", "--fanout", "1", "--dir", str(d))
    assert r.returncode == 0, r.stderr
    cli("cluster", "down", "--dir", str(d))
    (d / "n0" / "addresses").write_text("unix:/nonexistent.sock\n127.0.0.1:9\n")
    r = cli("cluster", "up", "--depth", "1", "--fanout", "1", "--dir", str(d))
    try:
        assert r.returncode == 0, r.stderr
    finally:
        cli("cluster", "down", "--dir", str(d))
