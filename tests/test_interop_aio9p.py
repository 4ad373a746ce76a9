"""Interoperability of our Client with aio9p 0.3.3's example server, a 9P implementation nobody
here wrote (aio9p/example/simple.py and simple_u.py: an in-memory tree, empty at each attach).

The server runs in the aio9p virtualenv through tests/peers/aio9p_server.py on a Unix socket; see
that script for the one workaround (aio9p's 9P2000 Rerror carries a 9P2000.u errno field).
The peer virtualenv comes from ``make peers``; without it these tests skip.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from brasil.ninep.client import Client
from brasil.ninep.constants import DMDIR, OREAD, OWRITE
from brasil.ninep.errors import NinepError

ROOT = Path(__file__).resolve().parent.parent
PEER_PY = ROOT / ".peers" / "aio9p" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "aio9p_server.py"


def _peer_missing() -> str | None:
    if not PEER_PY.exists():
        return f"aio9p peer virtualenv missing ({PEER_PY}); run `make peers`"
    if not list((ROOT / ".peers" / "aio9p" / "lib").glob("python*/site-packages/aio9p/example")):
        return "aio9p peer virtualenv has no aio9p package; rerun `make peers`"
    return None


_MISSING = _peer_missing()
pytestmark = [pytest.mark.interop, pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")]


def wait_accepting(proc: subprocess.Popen, path: str, log: Path, timeout: float = 15.0) -> None:
    """Poll-connect to the Unix socket until the peer accepts, it dies, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"aio9p server exited with {proc.returncode}:\n{log.read_text()}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return
        except OSError:
            pass
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"aio9p server not accepting on {path} after {timeout}s:\n"
                               f"{log.read_text()}")
        time.sleep(0.02)  # poll interval, not a wait for readiness


def start_server(dialect: str, tmp_path: Path):
    # A short directory of its own: pytest's tmp_path can exceed the 107-byte sun_path limit.
    sockdir = tempfile.mkdtemp(prefix="brasil-aio9p-", dir="/tmp")
    path = f"{sockdir}/9p.sock"
    log = tmp_path / f"aio9p-{dialect}.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(PEER_PY), str(PEER_SCRIPT), path, dialect],
                                stdout=logf, stderr=subprocess.STDOUT, cwd=sockdir)
    return proc, path, sockdir, log


def stop_server(proc: subprocess.Popen, sockdir: str) -> None:
    try:
        proc.kill()
        proc.wait(timeout=10)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


@pytest.fixture(params=["9P2000", "9P2000.u"])
def aio9p_server(request, tmp_path):
    dialect = request.param
    proc, path, sockdir, log = start_server(dialect, tmp_path)
    try:
        wait_accepting(proc, path, log)
        yield {"addr": f"unix:{path}", "dotu": dialect == "9P2000.u", "log": log}
    finally:
        stop_server(proc, sockdir)


async def connect(srv) -> Client:
    c = await Client.connect(srv["addr"], dotu=srv["dotu"], timeout=10)
    assert c.dotu is srv["dotu"]
    assert c.msize == 65535  # the example server's limit, lower than what we ask for
    return c


async def test_aio9p_create_write_read_stat_remove(aio9p_server):
    c = await connect(aio9p_server)
    try:
        assert await c.ls("") == []  # each attach starts from an empty root
        root = await c.stat("")
        assert root.mode & DMDIR and root.name == "/"

        async with await c.create("notes.txt", 0o644, OWRITE) as f:
            assert await f.write(b"first line\n") == 11
            assert await f.write(b"second\n") == 7
        assert await c.read("notes.txt") == b"first line\nsecond\n"
        async with await c.open("notes.txt") as f:
            assert await f.read(6, offset=11) == b"second"

        st = await c.stat("notes.txt")
        assert (st.name, st.length, st.mode & 0o777) == ("notes.txt", 18, 0o644)
        assert not st.mode & DMDIR
        if c.dotu:
            assert (st.extension, st.n_uid) == ("", 0)  # what simple_u fills in
        listing = await c.ls("")
        assert [(e.name, e.length) for e in listing] == [("notes.txt", 18)]

        await c.remove("notes.txt")
        assert await c.ls("") == []
        with pytest.raises(NinepError) as ei:
            await c.stat("notes.txt")
        assert "No such file or directory" in ei.value.message
        if c.dotu:
            assert ei.value.errno == errno.ENOENT
        assert not c.closed  # an Rerror leaves the connection usable
        assert await c.ls("") == []
    finally:
        await c.close()


async def test_aio9p_large_file_in_several_messages(aio9p_server):
    c = await connect(aio9p_server)
    try:
        data = bytes(range(251)) * 1000  # 251000 bytes: four Twrites at iounit 65511
        async with await c.create("big.bin", 0o600, OWRITE) as f:
            assert f.iounit == 65535 - 24  # Rcreate said iounit 0: the client derives it
            assert await f.write(data) == len(data)
        assert (await c.stat("big.bin")).length == len(data)
        assert await c.read("big.bin") == data
    finally:
        await c.close()


async def test_aio9p_concurrent_requests(aio9p_server):
    """aio9p answers each request from its own task, so replies can overtake one another;
    our client must match them to requests by tag."""
    c = await connect(aio9p_server)
    try:
        names = [f"f{i}" for i in range(8)]
        for n in names:
            async with await c.create(n, 0o644, OWRITE) as f:
                await f.write(f"content of {n}\n" * (1 + int(n[1:]) * 50))
        got = await asyncio.gather(*(c.read(n) for n in names), *(c.stat(n) for n in names))
        for i, n in enumerate(names):
            expect = f"content of {n}\n".encode() * (1 + i * 50)
            assert got[i] == expect
            assert got[len(names) + i].name == n and got[len(names) + i].length == len(expect)
        assert sorted(e.name for e in await c.ls("")) == names
    finally:
        await c.close()


async def test_aio9p_directory(aio9p_server):
    c = await connect(aio9p_server)
    try:
        d = await c.create("sub", DMDIR | 0o755, OREAD)
        await d.close()
        st = await c.stat("sub")
        assert st.mode & DMDIR and st.name == "sub"
        async with await c.create("sub/inner.txt", 0o644, OWRITE) as f:
            await f.write(b"nested\n")
        assert await c.read("sub/inner.txt") == b"nested\n"
        assert [e.name for e in await c.ls("sub")] == ["inner.txt"]
        assert [e.name for e in await c.ls("")] == ["sub"]
        await c.remove("sub/inner.txt")
        assert await c.ls("sub") == []
        await c.remove("sub")
        assert await c.ls("") == []
    finally:
        await c.close()


async def test_aio9p_unpatched_9p2000_rerror(tmp_path):
    """aio9p's 9P2000 example, unpatched, appends a .u errno to its Rerror (see
    tests/peers/aio9p_server.py). Our client decodes strictly: it must fail the request and
    close the connection cleanly -- never hang, never hand a garbled reply to the caller."""
    proc, path, sockdir, log = start_server("9P2000-unpatched", tmp_path)
    try:
        wait_accepting(proc, path, log)
        c = await Client.connect(f"unix:{path}", timeout=10)
        try:
            assert not c.dotu
            async with await c.create("ok.txt", 0o644, OWRITE) as f:
                await f.write(b"fine\n")
            assert await c.read("ok.txt") == b"fine\n"  # everything but Rerror interoperates
            with pytest.raises((ConnectionError, NinepError)) as ei:
                await asyncio.wait_for(c.stat("missing"), timeout=10)
            if isinstance(ei.value, ConnectionError):
                assert c.closed
                with pytest.raises(ConnectionError):
                    await c.read("ok.txt")
            else:  # a lenient client would accept it and keep going
                assert "No such file" in ei.value.message
        finally:
            await c.close()
    finally:
        stop_server(proc, sockdir)
