"""`brasil mount`: unmodified programs (cat, ls, sh redirections, mv, mkdir) on a FUSE mount.

The fixture tree is served on this test's event loop; the mount runs in its own process (the CLI),
and every program that touches the mount runs in a subprocess or a worker thread — never blocking
file I/O on the mount from the loop thread, which must stay free to answer the 9P requests that
the I/O causes.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fixtures import FixtureTree, serving, wait_for
from mount_helpers import CLI, DEADLINE, mount_pids, mounted, needs_fuse, run, sh, unmount

pytestmark = needs_fuse


def pending_requests(server: Any) -> int:
    return sum(len(c.pending) for c in server.connections)


class Mounted:
    def __init__(self, tree: FixtureTree, server: Any, address: str, directory: str) -> None:
        self.tree = tree
        self.server = server
        self.address = address
        self.dir = directory

    def __truediv__(self, name: str) -> str:
        return os.path.join(self.dir, name)


@pytest.fixture
async def mnt(tmp_path: Any) -> AsyncIterator[Mounted]:
    tree = FixtureTree()
    async with serving(tree.root) as (server, address):
        d = tmp_path / "mnt"
        d.mkdir()
        rc, out, err = await run(*CLI, "mount", "--at", str(address), str(d))
        assert rc == 0, f"brasil mount failed: {err}"
        assert mounted(str(d))
        try:
            yield Mounted(tree, server, str(address), str(d))
        finally:
            await unmount(str(d))


def record_writes(node: Any) -> list[bytes]:
    """Every Twrite's data that reaches ``node``'s handles, in order."""
    writes: list[bytes] = []
    opener = node.open

    def open_(mode: int) -> Any:
        h = opener(mode)
        write = h.write

        def recorded(offset: int, data: bytes) -> Any:
            writes.append(data)
            return write(offset, data)
        h.write = recorded
        return h
    node.open = open_
    return writes


# ---- reading ---------------------------------------------------------------------------------------

async def test_cat_static_file(mnt: Mounted) -> None:
    assert await run("cat", mnt / "hello") == (0, "hello, world\n", "")


async def test_ls_l_root_shows_modes(mnt: Mounted) -> None:
    rc, out, err = await run("ls", "-l", mnt.dir)
    assert rc == 0, err
    modes = {}
    for line in out.splitlines()[1:]:  # after "total N"
        f = line.split()
        modes[f[-1]] = f[0].rstrip(".+")
    assert modes == {"ctl": "-rw-------", "dir": "dr-xr-xr-x", "gen": "-r--r--r--",
                     "hello": "-r--r--r--", "pipe": "-rw-------", "ro": "dr-xr-xr-x",
                     "tmp": "drwxrwxrwx", "wo": "--w-------"}


async def test_ls_l_generated_file_has_its_real_size(mnt: Mounted) -> None:
    rc, out, err = await run("ls", "-l", mnt / "gen")
    assert rc == 0, err
    assert int(out.split()[4]) == len(f"generation {mnt.tree.generated}\n")
    rc, out, _ = await run("cat", mnt / "gen")  # not capped at the size ls saw, nor cached
    assert re.fullmatch(r"generation \d+\n", out) and out != "generation 1\n"


async def test_readdir_of_a_table_directory(mnt: Mounted) -> None:
    rc, out, _ = await run("ls", mnt / "dir")
    assert out.split() == [chr(c) * 3 for c in range(ord("a"), ord("z") + 1)]


async def test_missing_file_is_enoent(mnt: Mounted) -> None:
    rc, _, err = await run("cat", mnt / "nope")
    assert rc != 0 and "No such file or directory" in err
    with pytest.raises(FileNotFoundError):
        await asyncio.to_thread(os.stat, mnt / "dir/nope")


# ---- ctl files through shell redirection -----------------------------------------------------------

async def test_echo_into_ctl_is_one_write(mnt: Mounted) -> None:
    ctl = mnt.tree.root.walk("ctl")
    writes = record_writes(ctl)
    assert await sh(f"echo add 5 > {mnt / 'ctl'}") == (0, "", "")
    assert writes == [b"add 5\n"]
    assert ctl.value == 5
    assert await run("cat", mnt / "ctl") == (0, "count 5\n", "")


async def test_bad_ctl_command_fails_the_redirection(mnt: Mounted) -> None:
    ctl = mnt.tree.root.walk("ctl")
    rc, _, err = await sh(f"echo frobnicate > {mnt / 'ctl'}")
    assert rc != 0
    assert err.strip(), "the shell should say that the write failed"
    rc, _, err = await sh(f"echo add many > {mnt / 'ctl'}")
    assert rc != 0 and err.strip()
    assert ctl.value == 0


async def test_permission_denied(mnt: Mounted) -> None:
    rc, _, err = await sh(f"echo x > {mnt / 'hello'}")
    assert rc != 0 and "Permission denied" in err
    rc, _, err = await run("touch", mnt / "newfile")  # the root refuses create
    assert rc != 0 and "Permission denied" in err
    rc, _, err = await run("mkdir", mnt / "ro/sub")
    assert rc != 0 and "Permission denied" in err
    rc, _, err = await run("cat", mnt / "wo")  # write-only
    assert rc != 0 and "Permission denied" in err


# ---- streams ---------------------------------------------------------------------------------------

async def test_stream_read_returns_data_as_it_arrives(mnt: Mounted) -> None:
    cat = await asyncio.create_subprocess_exec("cat", mnt / "pipe", stdout=asyncio.subprocess.PIPE,
                                               stderr=asyncio.subprocess.PIPE)
    try:
        await wait_for(lambda: pending_requests(mnt.server) > 0, DEADLINE)  # cat's Tread waits
        # a FUSE thread is blocked in that read; everything else goes on
        assert await run("cat", mnt / "hello") == (0, "hello, world\n", "")
        assert await run("ls", mnt / "tmp") == (0, "", "")
        assert cat.returncode is None
        # the writer's close is the pipe's last writer going: end of file for cat
        assert await sh(f'printf "one\\n" > {mnt / "pipe"}') == (0, "", "")
        out, err = await asyncio.wait_for(cat.communicate(), DEADLINE)
        assert (cat.returncode, out, err) == (0, b"one\n", b"")
    finally:
        if cat.returncode is None:
            cat.kill()
            await cat.wait()


async def test_signal_interrupts_a_blocked_stream_read(mnt: Mounted) -> None:
    cat = await asyncio.create_subprocess_exec("cat", mnt / "pipe", stdout=asyncio.subprocess.PIPE)
    try:
        await wait_for(lambda: pending_requests(mnt.server) > 0, DEADLINE)
        cat.send_signal(signal.SIGINT)
        await asyncio.wait_for(cat.wait(), DEADLINE)
        assert cat.returncode == -signal.SIGINT
        # the mount flushed the Tread: nothing is left waiting on the server
        await wait_for(lambda: pending_requests(mnt.server) == 0, DEADLINE)
    finally:
        if cat.returncode is None:
            cat.kill()
            await cat.wait()
    assert await run("cat", mnt / "hello") == (0, "hello, world\n", "")


# ---- creating, renaming, removing -----------------------------------------------------------------

async def test_create_write_read_rename_remove(mnt: Mounted) -> None:
    tmp = mnt.tree.root.walk("tmp")
    f, g = mnt / "tmp/f", mnt / "tmp/g"
    assert await sh(f"echo hello there > {f}") == (0, "", "")
    assert await run("cat", f) == (0, "hello there\n", "")
    assert await sh(f"echo hi > {f}") == (0, "", "")  # O_TRUNC: no stale tail
    assert await run("cat", f) == (0, "hi\n", "")
    assert await run("mv", f, g) == (0, "", "")
    assert sorted(c.name for c in tmp.children()) == ["g"]
    assert await run("cat", g) == (0, "hi\n", "")
    rc, out, _ = await run("ls", "-l", g)
    assert out.split()[0].startswith("-rw") and out.split()[4] == "3"
    assert await run("rm", g) == (0, "", "")
    assert list(tmp.children()) == []
    rc, _, err = await run("cat", g)
    assert rc != 0 and "No such file" in err


async def test_mkdir_and_rmdir(mnt: Mounted) -> None:
    assert await run("mkdir", mnt / "tmp/d") == (0, "", "")
    rc, out, _ = await run("ls", "-ld", mnt / "tmp/d")
    assert out.startswith("d")
    assert await sh(f"echo x > {mnt / 'tmp/d/inner'}") == (0, "", "")
    assert await run("cat", mnt / "tmp/d/inner") == (0, "x\n", "")
    assert await run("rm", mnt / "tmp/d/inner") == (0, "", "")
    assert await run("rmdir", mnt / "tmp/d") == (0, "", "")
    assert await run("ls", mnt / "tmp") == (0, "", "")


async def test_large_file_round_trip_from_a_thread(mnt: Mounted) -> None:
    data = os.urandom(300_000)  # several Twrites and Treads at the kernel's offsets
    path = mnt / "tmp/big"

    def round_trip() -> bytes:
        with open(path, "wb") as f:
            f.write(data)
        with open(path, "rb") as f:
            return f.read()
    assert await asyncio.to_thread(round_trip) == data
    assert mnt.tree.root.walk("tmp").walk("big").content == data
    st = await asyncio.to_thread(os.stat, path)
    assert st.st_size == len(data) and st.st_uid == os.getuid()


async def test_rename_replaces_the_target_and_refuses_other_directories(mnt: Mounted) -> None:
    assert await sh(f"echo a > {mnt / 'tmp/x'}; echo b > {mnt / 'tmp/y'}") == (0, "", "")
    assert await run("mv", mnt / "tmp/x", mnt / "tmp/y") == (0, "", "")
    assert await run("cat", mnt / "tmp/y") == (0, "a\n", "")
    assert await run("ls", mnt / "tmp") == (0, "y\n", "")
    assert await run("mkdir", mnt / "tmp/sub") == (0, "", "")
    with pytest.raises(OSError) as e:
        await asyncio.to_thread(os.rename, mnt / "tmp/y", mnt / "tmp/sub/y")
    assert e.value.errno == errno.EXDEV


# ---- the command line ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_mount_refuses_bad_directories_and_dead_daemons(tmp_path: Any) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    tree = FixtureTree()
    async with serving(tree.root) as (_, address):
        rc, _, err = await run(*CLI, "mount", "--at", str(address), str(full))
        assert rc == 1 and "not an empty directory" in err
        rc, _, err = await run(*CLI, "mount", "--at", str(address), str(tmp_path / "absent"))
        assert rc == 1 and "no such directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = await run(*CLI, "mount", "--at", f"127.0.0.1:{free_port()}", str(empty))
    assert rc == 1 and "cannot reach the daemon" in err and "refused" in err
    assert not mounted(str(empty))
    rc, _, err = await run(*CLI, "umount", str(empty))
    assert rc == 1 and "not mounted" in err


async def test_umount_ends_the_mount_process(tmp_path: Any) -> None:
    tree = FixtureTree()
    d = str(tmp_path / "m")
    os.mkdir(d)
    async with serving(tree.root) as (_, address):
        assert (await run(*CLI, "mount", "--at", str(address), d))[0] == 0
        try:
            pids = mount_pids(d)
            assert len(pids) == 1
            rc, out, err = await run(*CLI, "mount", "--at", str(address), d)
            assert rc == 1 and "already a mount point" in err
            assert await run(*CLI, "umount", d) == (0, "", "")
            assert not mounted(d)
            await wait_for(lambda: not os.path.exists(f"/proc/{pids[0]}"), DEADLINE)
        finally:
            await unmount(d)


async def test_foreground_mount_serves_until_unmounted(tmp_path: Any) -> None:
    tree = FixtureTree()
    d = str(tmp_path / "m")
    os.mkdir(d)
    async with serving(tree.root) as (_, address):
        proc = await asyncio.create_subprocess_exec(
            *CLI, "mount", "--foreground", "--at", str(address), d,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            await wait_for(lambda: mounted(d) or proc.returncode is not None, DEADLINE)
            assert mounted(d)
            assert await run("cat", os.path.join(d, "hello")) == (0, "hello, world\n", "")
            assert await run(*CLI, "umount", d) == (0, "", "")
            out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
            assert proc.returncode == 0, err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await unmount(d)
