"""`brasil serve` as a real process: defaults, refusals, clean shutdown."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from brasil.ninep.client import Client
from fixtures import alive, wait_for
from helpers import run_cli


async def start_daemon(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


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
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
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


async def serving_addresses(proc: asyncio.subprocess.Process) -> list[str]:
    """Read the daemon's log until it says where it serves."""
    assert proc.stderr is not None
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()
        if not line:
            raise AssertionError("daemon exited before serving")
        if "serving 9P on " in line:
            return line.split("serving 9P on ", 1)[1].strip().split(", ")


async def test_with_a_secret_tcp_needs_it_and_the_unix_socket_stays_the_owners(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a cluster secret of enough length\n")
    secret.chmod(0o600)
    wrong = tmp_path / "wrong"
    wrong.write_text("some other secret, also long enough\n")
    wrong.chmod(0o600)
    sock = tmp_path / "d.sock"
    proc = await start_daemon("--listen", f"unix:{sock}", "--listen", "127.0.0.1:0",
                              "--secret-file", str(secret), "--state-dir", str(tmp_path))
    try:
        addrs = await serving_addresses(proc)
        tcp = next(a for a in addrs if not a.startswith("unix:"))
        rc, out, err = await run_cli("cat", "--at", tcp, "--secret-file", str(secret), "/csrv/local/arch")
        assert rc == 0 and out.startswith("linux"), err
        rc, out, err = await run_cli("cat", "--at", tcp, "/csrv/local/arch",
                                     env={"BRASIL_SECRET_FILE": str(wrong)})
        assert rc == 1 and "authentication failed" in err
        rc, out, err = await run_cli("cat", "--at", tcp, "/csrv/local/arch")
        assert rc == 1 and "authentication failed" in err
        rc, out, err = await run_cli("cat", "--at", f"unix:{sock}", "/csrv/local/arch")
        assert rc == 0 and out.startswith("linux")
    finally:
        proc.terminate()
        await proc.wait()


def test_a_daemons_log_records_skip_what_the_format_never_shows():
    """cli/logs.py: time, logger and message, and no lookup of the caller's frame, thread or
    process per record (the logging HOWTO's switches); a fresh interpreter, as the daemon is."""
    import subprocess
    probe = ("import logging, sys\n"
             "from brasil.cli.logs import daemon_logging\n"
             "daemon_logging(False)\n"
             "seen = []\n"
             "logging.getLogger().handlers[0].addFilter(lambda r: seen.append(r) or True)\n"
             "logging.getLogger('brasil.session').info('session %s: closed', 7)\n"
             "logging.getLogger('brasil.session').debug('not shown')\n"
             "r = seen[0]\n"
             "print(r.funcName == '(unknown function)', r.lineno, r.thread, r.process,"
             " r.processName)\n")
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0", "None", "None", "None"]
    line, = out.stderr.splitlines()  # INFO and up, to stderr, as `cluster up` collects it
    assert line.endswith(" brasil.session: session 7: closed")
    assert len(line.split()[0]) == 8 and line[2] == line[5] == ":"  # HH:MM:SS
