"""Issue 7 §1: directories and files brasil writes can never be someone else's.

The attack: another local user creates the predictable runtime directory first (mode 777) with
a symlink ``secret → a file they can read``; root's `cluster up` then wrote the cluster secret
into it. Or they put their own socket where root's client connects.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from brasil.ninep.private import (
    UnsafePathError,
    open_private,
    private_dir,
    read_private,
    write_private,
)
from brasil.ninep.transport import Address, check_socket, runtime_dir

NOBODY = 65534


def as_nobody(path) -> None:
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def brasil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.fixture
def planted(tmp_path):
    """A cluster directory made first by `nobody`: mode 777, a link where the secret goes."""
    if os.geteuid() != 0:
        pytest.skip("needs root to play the other user")
    d = tmp_path / "cluster"
    d.mkdir()
    d.chmod(0o777)
    victim = tmp_path / "readable-by-nobody"
    victim.write_text("")
    victim.chmod(0o666)
    (d / "secret").symlink_to(victim)
    as_nobody(d)
    as_nobody(d / "secret")
    return d, victim


def test_cluster_up_refuses_a_directory_someone_else_made(planted):
    d, victim = planted
    r = brasil("cluster", "up", "--dir", str(d), "--depth", "0")
    assert r.returncode != 0
    assert "belongs to nobody" in r.stderr and "someone else" in r.stderr, r.stderr
    assert victim.read_text() == ""  # the secret never went through the link


def test_a_directory_of_ours_that_is_open_to_others_is_refused(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(UnsafePathError, match="open to others.*chmod 700"):
        private_dir(str(d))
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        private_dir(str(link))


def test_a_parent_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: others could rename our directory away and replace it
    with pytest.raises(UnsafePathError, match="writable by others"):
        private_dir(str(shared / "mine"))
    shared.chmod(0o1777)  # sticky, like /tmp: fine
    assert oct(os.stat(private_dir(str(shared / "mine"))).st_mode & 0o777) == "0o700"


def test_files_are_written_without_following_a_planted_link(tmp_path):
    d = private_dir(str(tmp_path / "p"))
    target = tmp_path / "target"
    target.write_text("untouched")
    os.symlink(target, os.path.join(d, "secret"))
    write_private(os.path.join(d, "secret"), "s3cret")  # replaces the link, never follows it
    assert target.read_text() == "untouched"
    assert not os.path.islink(os.path.join(d, "secret"))
    assert oct(os.stat(os.path.join(d, "secret")).st_mode & 0o777) == "0o600"
    os.symlink(target, os.path.join(d, "log"))
    with pytest.raises(OSError):
        open_private(os.path.join(d, "log"))
    assert target.read_text() == "untouched"


def test_reading_a_secret_refuses_links_and_foreign_files(planted, tmp_path):
    d, victim = planted
    with pytest.raises(UnsafePathError, match="symbolic link"):
        read_private(str(d / "secret"))
    theirs = tmp_path / "theirs"
    theirs.write_text("x" * 32)
    theirs.chmod(0o600)
    as_nobody(theirs)
    with pytest.raises(UnsafePathError, match="belongs to nobody"):
        read_private(str(theirs))


def test_serve_refuses_a_socket_directory_someone_else_controls(planted):
    d, _ = planted
    r = brasil("serve", "--listen", f"unix:{d}/n.sock", "--state-dir", str(d.parent / "state"))
    assert r.returncode != 0 and "someone else" not in r.stdout
    assert "writable by others" in r.stderr or "belongs to nobody" in r.stderr, r.stderr


def test_a_client_will_not_talk_to_a_socket_planted_in_its_runtime_directory(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to play the other user")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    rt = runtime_dir()
    assert rt == str(tmp_path / "brasil")
    os.mkdir(rt, 0o777)
    os.chmod(rt, 0o777)
    as_nobody(rt)
    import socket
    fake = socket.socket(socket.AF_UNIX)
    fake.bind(os.path.join(rt, "brasil.sock"))
    fake.listen()
    try:
        with pytest.raises(UnsafePathError, match="belongs to nobody"):
            check_socket(os.path.join(rt, "brasil.sock"))
        r = brasil("cat", "/csrv/local/arch", env={"XDG_RUNTIME_DIR": str(tmp_path), "BRASIL": ""})
        assert r.returncode != 0 and "belongs to nobody" in r.stderr, r.stderr
    finally:
        fake.close()
    assert Address("unix", path=os.path.join(rt, "brasil.sock"))
