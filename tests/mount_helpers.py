"""What the tests of `brasil mount` share: the mount command, running programs next to the
mount without blocking the loop that serves it, and unmounting for sure.

Importing it skips the importing test module where FUSE cannot be used here."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys

import pytest

from fixtures import wait_for

needs_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="FUSE is not available here (needs /dev/fuse and fusermount3 from the fuse3 package)")

try:
    import mfusepy  # noqa: F401 - loads libfuse3 through ctypes
except (ImportError, OSError) as e:  # pragma: no cover - depends on the machine
    pytest.skip(f"mfusepy cannot load libfuse3: {e}", allow_module_level=True)

from brasil.mount.fuse import mounted  # noqa: E402 - reads /proc/self/mounts, never the mount

CLI = [sys.executable, "-m", "brasil.cli.mount"]
DEADLINE = 15.0


async def run(*argv: str, timeout: float = DEADLINE, stdin: bytes | None = None
              ) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(p.communicate(stdin), timeout)
    except BaseException:
        if p.returncode is None:
            p.kill()
            await p.wait()
        raise
    assert p.returncode is not None
    return p.returncode, out.decode(), err.decode()


async def sh(script: str) -> tuple[int, str, str]:
    return await run("sh", "-c", script)


def mount_pids(directory: str) -> list[int]:
    """Processes whose command line is a `brasil mount … directory` (found through /proc)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"brasil.cli.mount" in argv and directory.encode() in argv and b"mount" in argv:
            pids.append(int(name))
    return pids


async def unmount(directory: str) -> None:
    """Unmount for sure and make sure the mount process is gone."""
    if mounted(directory):
        rc, _, err = await run(*CLI, "umount", directory)
        if rc != 0:
            await run("fusermount3", "-u", "-z", directory)
    await wait_for(lambda: not mounted(directory), DEADLINE)
    try:
        await wait_for(lambda: not mount_pids(directory), DEADLINE)
    except TimeoutError:
        for pid in mount_pids(directory):
            os.kill(pid, signal.SIGKILL)
        raise
