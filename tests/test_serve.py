"""`brasil serve` as a real process: defaults, refusals, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from brasil.ninep.client import Client
from fixtures import wait_for


async def start_daemon(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_sigterm_ends_every_session_process_and_removes_the_socket(tmp_path):
    sock = tmp_path / "d.sock"
    proc = await start_daemon("--listen", f"unix:{sock}", "--slots", "2", "--name", "solo",
                              "--state-dir", str(tmp_path / "state"))
    try:
        await wait_for(sock.exists, timeout=15)
        c = await Client.connect(f"unix:{sock}")
        sid = (await c.read("csrv/local/clone")).decode().strip()
        await c.write(f"csrv/local/{sid}/ctl", "res 2\n")
        await c.write(f"csrv/local/{sid}/ctl", "exec trap '' TERM; sleep 300\n")  # ignores TERM
        rows = [ln.split() for ln in (await c.read(f"csrv/local/{sid}/status")).decode().splitlines()]
        pids = [int(r[4]) for r in rows]
        assert all(alive(p) for p in pids)
        await c.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert not any(alive(p) for p in pids)  # KILLed after the grace period
        assert not sock.exists()
        log = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert "node solo: 2 slot(s), serving 9P on unix:" in log
        assert f"session {sid}: reserved 2 slot(s)" in log and "shutting down" in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("args, message", [
    (["--listen", "0.0.0.0:0"], "refusing to listen on 0.0.0.0:0 without --secret-file"),
    (["--listen", "nonsense!x!y!z"], "--listen:"),
    (["--export", "/no/such/dir"], "/no/such/dir"),
])
async def test_serve_refuses_unsafe_or_bad_options_with_a_reason(tmp_path, args, message):
    proc = await start_daemon(*args, "--state-dir", str(tmp_path))
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert message in err.decode()


async def test_a_second_daemon_on_the_same_socket_is_refused(tmp_path):
    sock = tmp_path / "d.sock"
    first = await start_daemon("--listen", f"unix:{sock}", "--state-dir", str(tmp_path))
    try:
        await wait_for(sock.exists, timeout=15)
        second = await start_daemon("--listen", f"unix:{sock}", "--state-dir", str(tmp_path))
        _, err = await asyncio.wait_for(second.communicate(), 20)
        assert second.returncode == 1 and "already listening" in err.decode()
    finally:
        first.terminate()
        await first.wait()
