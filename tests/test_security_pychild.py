"""Issue 15 §5: brasil's own Python children never import from the current directory.

`nobody` plants ``json.py``, ``ClusterShell/__init__.py`` and ``ctypes/__init__.py`` in a 1777
directory; root runs brasil there (the console script, as a user types it). Every planted module
writes a marker file when imported: the marker must never appear, whichever child brasil starts
(the daemons of `cluster up`, a user reducer of `gread --agg py:`, `nsexec` for a session's
``ns`` binds, `brasil workers`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from brasil.ninep.auth import dial

NOBODY = 65534
BRASIL = os.path.join(os.path.dirname(sys.executable), "brasil")
PLANTED = ["json.py", "ClusterShell/__init__.py", "ctypes/__init__.py", "operator.py"]


@pytest.fixture
def planted(tmp_path):
    """(the 1777 directory with nobody's modules, the directory their markers go to)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to play the other user")
    shared, marks = tmp_path / "shared", tmp_path / "marks"
    shared.mkdir()
    shared.chmod(0o1777)
    marks.mkdir()
    for name in PLANTED:
        path = shared / name
        path.parent.mkdir(exist_ok=True)
        mark = str(marks / name.split("/")[0])
        path.write_text(f"import os, sys\nwith open({mark!r}, 'a') as f:\n"
                        f"    f.write(f'{{os.getpid()}} {{os.getuid()}} {{sys.argv}}\\n')\n")
        os.chown(path, NOBODY, NOBODY)
        if path.parent != shared:
            os.chown(path.parent, NOBODY, NOBODY)
    return shared, marks


def brasil(cwd, *args: str,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BRASIL, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def imported(marks) -> dict[str, str]:
    return {p.name: p.read_text() for p in marks.iterdir()}


def test_cluster_up_run_w_and_a_py_reducer_from_a_planted_directory_import_nothing_of_it(
        planted, tmp_path):
    shared, marks = planted
    d = tmp_path / "c"
    r = brasil(shared, "cluster", "up", "--depth", "1", "--fanout", "2", "--dir", str(d))
    try:
        assert imported(marks) == {}
        assert r.returncode == 0, r.stderr
        env = {"BRASIL": r.stdout.strip(), "BRASIL_SECRET_FILE": str(d / "secret")}
        ran = brasil(shared, "run", "-w", "n[1-2]", "--", "echo ran", env=env)
        assert ran.returncode == 0, ran.stderr
        assert sorted(ln.split("/")[0] + ln.split(":")[1] for ln in ran.stdout.splitlines()) \
            == ["n1 ran", "n2 ran"]
        read = brasil(shared, "gread", "--agg", "py:operator:add", "status", env=env)
        assert read.returncode == 0, read.stderr
        assert all(f"name={n} " in read.stdout for n in ("n0", "n1", "n2")), read.stdout
    finally:
        brasil(shared, "cluster", "down", "--dir", str(d))
    assert imported(marks) == {}


async def test_a_daemon_serving_from_a_planted_directory_starts_its_reducers_and_nsexec_isolated(
        planted, tmp_path):
    """The owner started `brasil serve` in the 1777 directory (it is also what fs/ exports, so
    its sessions' commands run there): the reducer child and nsexec (a session's ``ns bind``)
    do not look there for modules."""
    shared, marks = planted
    secret = tmp_path / "secret"
    secret.write_text("a secret long enough for the test daemon\n")
    secret.chmod(0o600)
    sock = tmp_path / "s.sock"
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen([BRASIL, "serve", "--listen", f"unix:{sock}", "--secret-file",
                              str(secret), "--state-dir", str(tmp_path / "state"), "--export",
                              str(shared), "-q"], cwd=shared, stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert serve.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "serve.log").read_text()
            await asyncio.sleep(0.05)
        env = {"BRASIL": f"unix:{sock}", "BRASIL_SECRET_FILE": str(secret)}
        read = brasil(shared, "gread", "--agg", "py:operator:add", "status", env=env)
        assert imported(marks) == {}
        assert read.returncode == 0, read.stderr
        bound, mnt = tmp_path / "bound", tmp_path / "mnt"
        bound.mkdir()
        mnt.mkdir()
        (bound / "seen").write_text("through the bind\n")
        c = await dial(f"unix:{sock}", str(secret))
        try:
            sid = (await c.read("csrv/local/clone")).decode().strip()
            await c.write(f"csrv/local/{sid}/ns", f"bind {bound} {mnt}\n")
            await c.write(f"csrv/local/{sid}/ctl", f"exec cat {mnt}/seen; pwd\n")
            out = await c.read(f"csrv/local/{sid}/stdio")
        finally:
            await c.close()
        assert imported(marks) == {}
        assert out == f"through the bind\n{shared}\n".encode()
    finally:
        serve.terminate()
        serve.wait(30)
        log.close()


def reduce_with(path: str, func: str) -> subprocess.CompletedProcess[str]:
    from brasil.exec.pychild import SAFE_CWD, python_argv
    return subprocess.run(python_argv("brasil.group.reduce", func), input="[1, 2, 3]",
                          capture_output=True, text=True, timeout=60, cwd=SAFE_CWD,
                          env={**os.environ, "BRASIL_REDUCER_PATH": path})


def test_reducers_come_from_brasil_reducer_path_only_if_nobody_else_can_write_it(
        planted, tmp_path):
    shared, marks = planted
    mods = tmp_path / "mods"
    mods.mkdir(mode=0o755)
    (mods / "mine.py").write_text("def add(a, b):\n    return a + b\n")
    assert reduce_with(str(mods), "mine:add").stdout == "6"
    relative = reduce_with("mods", "mine:add")
    assert relative.returncode == 1 and "'mods' is not an absolute path" in relative.stderr
    open_dir = reduce_with(str(shared), "operator:add")
    assert open_dir.returncode == 1 and "can be written by others" in open_dir.stderr
    assert imported(marks) == {}
