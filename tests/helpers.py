"""The `brasil` command line in a subprocess, as the tests of several modules run it."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import sys

import pytest


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``brasil ARGS`` from a test's event loop (which keeps serving meanwhile):
    (status, stdout, stderr)."""
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(p.communicate(), 30)
    return p.returncode or 0, out.decode(), err.decode()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``brasil ARGS``, blocking: for commands that talk only to daemons of their own (a cluster
    started with `brasil cluster up`), never to one served on the test's loop."""
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, timeout=120)


@functools.cache
def why_gdb_cannot_call() -> str:
    """Why gdb cannot call a function in a process here ("" when it can): what ``pbreak`` and
    ``peval`` on a Python rank rest on. gdb 13 (Debian 12's) restores a process's extended CPU
    state in a size that the kernel refuses on a CPU with AMX ("Couldn't write extended state
    status: Bad address"); gdb 14 sizes it as the kernel says. Asked of a real process, once."""
    if shutil.which("gdb") is None:
        return "gdb is not installed (make test-deps installs it)"
    p = subprocess.Popen([sys.executable, "-I", "-c", "import time; time.sleep(120)"])
    try:
        r = subprocess.run(["gdb", "-q", "-nx", "-batch", "-p", str(p.pid),
                            "-ex", "call (int)getpid()"],
                           capture_output=True, text=True, timeout=60)
    finally:
        p.kill()
        p.wait()
    if f"= {p.pid}" in r.stdout:
        return ""
    said = [line for line in (r.stdout + r.stderr).splitlines() if "ouldn't" in line]
    return ("gdb cannot call a function in a process on this machine: "
            f"{(said or ['no answer'])[-1]} (gdb 13 on a CPU with AMX; gdb 14 or later can)")


def needs_gdb_calls() -> pytest.MarkDecorator:
    """Skips a test, saying why, where gdb cannot call into a process (why_gdb_cannot_call)."""
    return pytest.mark.skipif(bool(why_gdb_cannot_call()), reason=why_gdb_cannot_call())
