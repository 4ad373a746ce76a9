"""Interoperability with p9fs 0.0.4 (its bundled ``py9p``), a 9P implementation nobody here wrote.

Both directions:
 * our Server driven by py9p's low-level ``py9p.Client`` (tests/peers/p9fs_client.py, run in the
   p9fs virtualenv), in 9P2000 and 9P2000.u;
 * our Client against py9p's file server (``python -m py9p``) serving a real directory.

The peer virtualenv comes from ``make peers``; without it these tests skip.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from brasil.ninep.client import Client  # noqa: E402
from brasil.ninep.constants import DMDIR, OREAD, OTRUNC, OWRITE, QTDIR  # noqa: E402
from brasil.ninep.errors import NinepError  # noqa: E402
from fixtures import FixtureTree, serving, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEER_PY = ROOT / ".peers" / "p9fs" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "p9fs_client.py"


def _peer_missing() -> str | None:
    if not PEER_PY.exists():
        return f"p9fs peer virtualenv missing ({PEER_PY}); run `make peers`"
    if not list((ROOT / ".peers" / "p9fs" / "lib").glob("python*/site-packages/py9p/py9p.py")):
        return "p9fs peer virtualenv has no py9p package; rerun `make peers`"
    return None


_MISSING = _peer_missing()
pytestmark = [pytest.mark.interop, pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")]

LETTERS = [chr(c) * 3 for c in range(ord("a"), ord("z") + 1)]


# ---- our server, py9p's client --------------------------------------------------------------------

class PeerRun:
    """The JSON lines one run of tests/peers/p9fs_client.py printed, by step name."""

    def __init__(self, stdout: str, stderr: str, dialect: str, tree: FixtureTree) -> None:
        self.dialect = dialect
        self.dotu = dialect == "9P2000.u"
        self.tree = tree
        self.stderr = stderr
        self.steps: dict[str, dict] = {}
        self.noise: list[str] = []
        for line in stdout.splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                self.noise.append(line)
                continue
            self.steps[d["step"]] = d

    def _get(self, name: str) -> dict:
        assert name in self.steps, (f"py9p client never reported step {name!r}; stderr:\n"
                                    f"{self.stderr}\nother output: {self.noise}")
        return self.steps[name]

    def ok(self, name: str) -> dict:
        d = self._get(name)
        assert d["ok"], f"{self.dialect} step {name} failed: {d.get('error')}\n{d.get('trace', '')}"
        return d

    def failed(self, name: str) -> dict:
        d = self._get(name)
        assert not d["ok"], f"{self.dialect} step {name} should have failed but gave {d}"
        return d


@pytest.fixture(params=["9P2000", "9P2000.u"])
async def p9fs_client_run(request):
    """Serve a fresh FixtureTree, run the py9p client script against it, return its report."""
    dialect = request.param
    tree = FixtureTree()
    async with serving(tree.root, trace=True) as (server, addr):
        proc = await asyncio.create_subprocess_exec(
            str(PEER_PY), str(PEER_SCRIPT), addr.host, str(addr.port), dialect,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        run = PeerRun(out.decode(errors="replace"), err.decode(errors="replace"), dialect, tree)
        assert proc.returncode == 0, f"py9p client exited {proc.returncode}:\n{run.stderr}"
        # The client hung up: our server must have forgotten the connection.
        await wait_for(lambda: not server.connections)
        yield run


def test_p9fs_client_session(p9fs_client_run):
    r = p9fs_client_run
    r.ok("connect")
    v = r.ok("version")
    assert v["msize"] == 8192  # py9p asks for 8192; we allow more, so its value stands
    assert v["version"] == r.dialect
    assert r.ok("close") and r.ok("done")
    assert r.noise == [], f"unexpected output from the py9p client: {r.noise}"


def test_p9fs_client_walk_stat_read(p9fs_client_run):
    r = p9fs_client_run
    root = r.ok("stat_root")
    assert root["name"] == "/" and root["mode"] & DMDIR and root["qid_type"] == QTDIR
    w = r.ok("walk_hello")
    assert (w["nqids"], w["qid_type"]) == (1, 0)
    assert r.ok("walk_multi")["types"] == [QTDIR, 0]

    rd = r.ok("read_hello")
    assert rd["data"] == "hello, world\n"
    assert rd["iounit"] == 8192 - 24
    assert r.ok("read_hello_offsets")["parts"] == ["hell", "o, w", "orld", "\n"]

    st = r.ok("stat_hello")
    assert (st["name"], st["length"], st["mode"], st["qid_type"]) == ("hello", 13, 0o444, 0)
    if r.dotu:  # the 9P2000.u tail was on the wire and decoded where py9p expected it
        assert st["extension"] == "" and isinstance(st["n_uid"], int)

    gen = r.ok("gen")
    first = int(gen["first"].split()[1])
    assert gen["first"] == f"generation {first}\n" and gen["second"] == f"generation {first + 1}\n"

    d = r.ok("stat_dir")
    assert d["name"] == "dir" and d["mode"] & DMDIR and d["qid_type"] == QTDIR


def test_p9fs_client_directory_reads(p9fs_client_run):
    r = p9fs_client_run
    ls = r.ok("ls_dir")
    assert ls["names"] == LETTERS
    assert ls["lengths"] == [10] * 26
    small = r.ok("ls_dir_small")
    assert small["names"] == LETTERS
    assert small["reads"] > 3  # many Treads, each resuming at the offset the last one ended at
    bundled = r.ok("ls_dir_bundled")
    if not r.dotu:
        assert bundled["count"] == 26
    entries = r.ok("ls_root")["entries"]
    assert set(entries) == {"hello", "gen", "ctl", "pipe", "wo", "dir", "tmp", "ro"}
    assert entries["dir"]["mode"] & DMDIR and entries["dir"]["qid_type"] == QTDIR
    assert entries["hello"]["length"] == 13 and not entries["hello"]["mode"] & DMDIR


def test_p9fs_client_ctl_create_remove(p9fs_client_run):
    r = p9fs_client_run
    ctl = r.ok("ctl")
    assert (ctl["written"], ctl["state"]) == (5, "count 5\n")
    bad = r.failed("ctl_bad")
    assert "not a number" in bad["error"]

    c = r.ok("create_write_read")
    assert c["qid_type"] == 0 and c["written"] == 13 and c["data"] == "interop data\n"
    assert (c["stat"]["name"], c["stat"]["length"], c["stat"]["mode"]) == ("interop.txt", 13, 0o644)
    assert c["ls_tmp"] == ["interop.txt"]
    assert r.ok("overwrite_trunc")["data"] == "short"
    assert r.ok("remove")["ls_tmp"] == []
    assert "incomplete walk (1 out of 2)" in r.failed("walk_removed")["error"]
    assert r.ok("create_remove_bundled")["ls_tmp"] == []
    mk = r.ok("mkdir")
    assert mk["qid_type"] == QTDIR and mk["data"] == "nested"

    # What the peer did is visible in the tree it was served.
    assert r.tree.root.walk("ctl").value == 5
    assert [n.name for n in r.tree.root.walk("tmp").children()] == []


def test_p9fs_client_errors(p9fs_client_run):
    r = p9fs_client_run
    want = {  # step: (text in the message, errno under 9P2000.u)
        "err_missing": ("does not exist", errno.ENOENT),
        "err_create_ro": ("permission denied", errno.EACCES),
        "err_write_readonly": ("permission denied", errno.EACCES),
        "err_open_dir_write": ("is a directory", errno.EISDIR),
        "err_clunk_unknown": ("unknown fid", errno.EBADF),
        "err_remove_static": ("permission denied", errno.EACCES),
    }
    for name, (text, eno) in want.items():
        e = r.failed(name)
        assert text in e["error"], f"{name}: {e['error']!r}"
        assert e["kind"] == "RpcError", f"{name}: {e}"
        # py9p decodes errno only when 9P2000.u was negotiated; in 9P2000 there is none on the wire.
        assert e["errno"] == (eno if r.dotu else None), f"{name}: {e}"
        assert e["leftover_fid"] is False, f"{name}: the server kept the fid: {e}"
    if r.dotu:
        assert r.failed("ctl_bad")["errno"] == errno.EIO
    # A walk that fails part-way is an Rwalk with fewer qids, not an Rerror, and binds no newfid:
    # py9p reuses the same newfid straight after, which fails with "fid in use" if we bound it.
    deep = r.failed("err_missing_deep")
    assert "incomplete walk (1 out of 2)" in deep["error"]
    assert deep["leftover_fid"] is False, "a partial walk bound its newfid"
    assert r.ok("after_partial_walk")["nqids"] == 1
    assert r.ok("still_there")["data"] == "hello, world\n"


# ---- py9p's server, our client --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_accepting(proc: subprocess.Popen, host: str, port: int, log: Path,
                   timeout: float = 15.0) -> None:
    """Poll-connect until the peer accepts, it dies, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"py9p server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"py9p server not accepting on {host}:{port} after {timeout}s:\n"
                               f"{log.read_text()}")
        time.sleep(0.02)  # poll interval, not a wait for readiness


# (id, server started with -D, client asks for 9P2000.u, dialect we expect to end up with)
SERVER_MODES = [
    pytest.param((False, False, False), id="9P2000"),
    pytest.param((True, True, True), id="9P2000.u"),
    pytest.param((False, True, False), id="u-refused"),  # asks .u of a 9P2000-only server
]


@pytest.fixture(params=SERVER_MODES)
def py9p_server(request, tmp_path):
    server_dotu, client_dotu, expect_dotu = request.param
    root = tmp_path / "export"
    (root / "sub").mkdir(parents=True)
    (root / "existing.txt").write_bytes(b"peer file\n")
    (root / "sub" / "a").write_bytes(b"nested a\n")
    port = free_port()
    log = tmp_path / "py9p-server.log"
    args = [str(PEER_PY), "-m", "py9p", "-w", "-a", "127.0.0.1", "-p", str(port),
            "-r", str(root)] + (["-D"] if server_dotu else [])
    with open(log, "wb") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_accepting(proc, "127.0.0.1", port, log)
        yield {"addr": f"127.0.0.1:{port}", "root": root, "dotu": client_dotu,
               "expect_dotu": expect_dotu, "log": log}
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def connect(srv) -> Client:
    c = await Client.connect(srv["addr"], dotu=srv["dotu"], timeout=10)
    assert c.dotu is srv["expect_dotu"]
    return c


async def test_py9p_server_read_existing(py9p_server):
    c = await connect(py9p_server)
    try:
        assert c.msize == 8192  # py9p's server caps msize at 8192
        assert await c.read("existing.txt") == b"peer file\n"
        assert await c.read("sub/a") == b"nested a\n"
        async with await c.open("existing.txt") as f:
            assert await f.read(4, offset=5) == b"file"
        st = await c.stat("existing.txt")
        assert st.name == "existing.txt" and st.length == 10 and st.mode & 0o777 == 0o644
        if c.dotu:  # py9p's server fills the numeric ids from lstat
            assert st.n_uid == os.stat(py9p_server["root"] / "existing.txt").st_uid
    finally:
        await c.close()


async def test_py9p_server_list_directory(py9p_server):
    c = await connect(py9p_server)
    try:
        entries = {st.name: st for st in await c.ls("")}
        assert set(entries) == {"existing.txt", "sub"}
        assert entries["sub"].mode & DMDIR and entries["sub"].qid.type & QTDIR
        assert entries["existing.txt"].length == 10 and not entries["existing.txt"].mode & DMDIR
        assert [st.name for st in await c.ls("sub")] == ["a"]
        root = await c.stat("")
        assert root.mode & DMDIR
    finally:
        await c.close()


async def test_py9p_server_create_write_read_remove(py9p_server):
    root: Path = py9p_server["root"]
    c = await connect(py9p_server)
    try:
        async with await c.create("made.txt", 0o644, OWRITE) as f:
            assert f.iounit == 8192 - 24  # so a big write must be split to fit py9p's msize
            assert await f.write(b"written by brasil\n") == 18
        assert (root / "made.txt").read_bytes() == b"written by brasil\n"
        assert await c.read("made.txt") == b"written by brasil\n"
        assert (await c.stat("made.txt")).length == 18
        assert "made.txt" in {st.name for st in await c.ls("")}

        # Overwrite with truncation, then a write past iounit (msize 8192): several Twrites.
        big = bytes(range(256)) * 100  # 25600 bytes
        assert await c.write("made.txt", big, OWRITE | OTRUNC) == len(big)
        assert (root / "made.txt").read_bytes() == big
        assert await c.read("made.txt") == big

        await c.remove("made.txt")
        assert not (root / "made.txt").exists()
        assert "made.txt" not in {st.name for st in await c.ls("")}
        with pytest.raises(NinepError, match="not found"):
            await c.stat("made.txt")
        # The Rerror left the connection usable.
        assert await c.read("existing.txt") == b"peer file\n"
    finally:
        await c.close()


async def test_py9p_server_missing_file(py9p_server):
    c = await connect(py9p_server)
    try:
        with pytest.raises(NinepError) as ei:
            await c.open("no/such/file", OREAD)
        assert "no" in ei.value.message and "not found" in ei.value.message
        assert not c.closed
        assert [st.name for st in await c.ls("sub")] == ["a"]
    finally:
        await c.close()
