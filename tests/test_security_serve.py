"""Issue 15 §1 and §17: who may reach a daemon, and how much of it one peer may take.

§1: `brasil serve` listened on 127.0.0.1:5670 without a secret, so any local user ran commands as
the daemon's owner (`runuser -u nobody -- brasil run --at 127.0.0.1:PORT -- id` printed uid=0);
and the Unix socket trusted its mode alone. The attacks are played as `nobody`, with a Python
that user can run (the system one, our sources on its path: the attacker needs no install).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import cast

import pytest

from brasil.ninep.client import Client
from fixtures import wait_for

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
NOBODY_PYTHON = "/usr/bin/python3"


def need_nobody() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to play the other user")
    if shutil.which("runuser") is None or not os.access(NOBODY_PYTHON, os.X_OK):
        pytest.skip("needs runuser and a system python3 that nobody can run")


ATTACK = """
import asyncio, sys
sys.path.insert(0, SRC)
from brasil.ninep.client import Client

async def main(at):  # what `brasil run --at AT -- id` does, with no secret
    try:
        c = await Client.connect(at, timeout=10)
        sid = (await c.read("csrv/local/clone")).decode().strip()
        await c.write(f"csrv/local/{sid}/ctl", "res 1\\nexec id\\n")
        print((await c.read(f"csrv/local/{sid}/stdio")).decode())
    except Exception as e:
        print("refused:", type(e).__name__, e, file=sys.stderr)
        return 1
    return 0

sys.exit(asyncio.run(main(sys.argv[1])))
"""


def as_nobody(at: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Try to run `id` on the daemon at ``at`` as nobody (uid 65534), in a clean environment,
    speaking 9P with our client modules (the standard library is all they need)."""
    code = ATTACK.replace("SRC", repr(SRC), 1)
    return subprocess.run([shutil.which("runuser") or "runuser", "-u", "nobody", "--",
                           NOBODY_PYTHON, "-c", code, at], capture_output=True, text=True,
                          timeout=timeout, cwd="/", env={"PATH": "/usr/bin:/bin",
                                                         "HOME": "/nonexistent"})


def runtime_env(tmp_path) -> dict[str, str]:
    """A runtime directory of the test's own, so the daemon's default secret lands there."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    return {**os.environ, "XDG_RUNTIME_DIR": str(run)}


async def start_serve(tmp_path, *args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", "serve", "--state-dir", str(tmp_path / "state"),
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=runtime_env(tmp_path))
    log = []
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        log.append(line)
        if not line:
            raise AssertionError("daemon exited before serving:\n" + "".join(log))
        if "serving 9P on " in line:
            return proc, log


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


async def cli(tmp_path, *argv: str) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", *argv, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=runtime_env(tmp_path))
    out, err = await asyncio.wait_for(p.communicate(), 60)
    return p.returncode or 0, out.decode(), err.decode()


# ---- §1: no TCP listener without a secret; the Unix socket serves its owner only ----

async def test_another_local_user_cannot_run_commands_through_a_secretless_loopback_serve(tmp_path):
    need_nobody()
    proc, log = await start_serve(tmp_path, "--listen", "127.0.0.1:0", "--slots", "1")
    try:
        tcp = log[-1].split("serving 9P on ", 1)[1].split(", ")[0].strip()
        r = await asyncio.to_thread(as_nobody, tcp)
        assert "uid=" not in r.stdout, r.stdout
        assert r.returncode == 1 and "authentication failed" in r.stderr, r.stderr
        secret = tmp_path / "run" / "brasil" / "secret"
        assert any(str(secret) in line for line in log), "".join(log)  # says where it is
        assert oct(secret.stat().st_mode & 0o777) == "0o600" and secret.stat().st_uid == 0
        rc, out, err = await cli(tmp_path, "run", "--at", tcp, "--", "id -u")  # the owner's flow
        assert rc == 0 and out.strip().endswith(": 0"), (out, err)
    finally:
        await stop(proc)


async def test_the_unix_socket_refuses_another_uid_even_when_its_mode_lets_them_in(tmp_path):
    need_nobody()
    d = pathlib.Path(tempfile.mkdtemp(prefix="brasil-open-"))  # under /tmp: nobody can reach it
    proc, log = await start_serve(tmp_path, "--listen", f"unix:{d}/d.sock", "--slots", "1")
    try:
        d.chmod(0o755)  # open everything up: only the peer's uid can keep nobody out now
        (d / "d.sock").chmod(0o777)
        r = await asyncio.to_thread(as_nobody, f"unix:{d}/d.sock")
        assert "uid=" not in r.stdout, r.stdout
        assert r.returncode == 1 and "refused:" in r.stderr, r.stderr
        c = await Client.connect(f"unix:{d}/d.sock")  # the owner still gets in
        assert (await c.read("csrv/local/arch")).startswith(b"linux")
        await c.close()
        await stop(proc)
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert "refused: only the daemon's owner" in err and "uid 65534" in err, err
    finally:
        await stop(proc)
        shutil.rmtree(d, ignore_errors=True)


# ---- §17: caps with shares; a command that fails halfway releases what it took ----

async def from_source(addr, source: str) -> Client:
    """A client whose connection comes from ``source`` (another loopback address: another peer)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, addr.host, addr.port,
                                                local_addr=(source, 0))
    return await Client.adopt(cast(asyncio.Transport, transport), b"", f"from {source}")


async def unattached_flood(addr, n: int) -> list[asyncio.StreamWriter]:
    """``n`` connections from 127.0.0.1 that say nothing (the server closes some at once)."""
    out = []
    for _ in range(n):
        _, w = await asyncio.open_connection(addr.host, addr.port)
        out.append(w)
    return out


async def test_one_peer_opening_many_connections_does_not_keep_another_peer_out(tmp_path):
    from fixtures import daemon
    async with daemon(str(tmp_path), max_connections=32, handshake_timeout=60) as d:
        flood = await unattached_flood(d.tcp, 64)
        try:
            c = await asyncio.wait_for(from_source(d.tcp, "127.0.0.2"), 5)
            assert (await c.read("csrv/local/arch")).startswith(b"linux")
            await c.close()
            assert d.server.counts["net"] < 32  # the flood got its share, not the whole cap
        finally:
            for w in flood:
                w.close()


async def test_one_peer_grabbing_fids_does_not_make_another_peers_or_the_owners_run_fail(tmp_path):
    from brasil.client.run import run
    from fixtures import daemon
    async with daemon(str(tmp_path), max_total_fids=200) as d:
        grabbers = [await Client.connect(d.tcp) for _ in range(3)]  # one peer, 3 connections
        held = 0
        for g in grabbers:
            while True:
                try:
                    await g.walk("csrv/local/arch")
                except Exception:  # noqa: BLE001 - its limit, whichever it is
                    break
                held += 1
        assert held < 200
        out: list[str] = []
        owner = await Client.connect(d.unix)
        other = await from_source(d.tcp, "127.0.0.2")
        try:
            for c in (owner, other):
                r = await run(c, "echo hello", n=1, out=out.append, err=out.append)
                assert r.status == 0, out
            assert out == ["n0/0: hello", "n0/0: hello"]
        finally:
            for c in grabbers + [owner, other]:
                await c.close()


async def test_a_run_that_fails_after_reserving_leaves_no_session_behind(tmp_path):
    from brasil.client.run import run
    from brasil.ninep.errors import NinepError
    from fixtures import daemon
    async with daemon(str(tmp_path), slots=2, max_fids=4) as d:  # room for res, not for the rest
        c = await Client.connect(d.unix)
        try:
            with pytest.raises(NinepError, match="too many fids"):
                await run(c, "sleep 30", n=2, out=lambda line: None, err=lambda line: None)
            await wait_for(lambda: not d.node.sessions, timeout=5)
            assert len(d.node.free) == 2
        finally:
            await c.close()
