"""The `brasil` command line in a subprocess, as the tests of several modules run it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys


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
