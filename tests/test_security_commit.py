"""Issue 15 §2 and §3: an isolated job's commit, and a remote worker's journal, never reach
outside the home.

The attacks: (a) between a job's run and its commit, ``HOME/sub`` became a symlink to a root-only
directory, and the commit (as root) wrote its output there; (b) the staging directory's journal
was swapped for one naming ``../`` paths, and root renamed, chmodded and deleted outside the
home; (c) a home anyone could write made both possible; (d) a secret holder registered a remote
worker and reported a journal naming ``../../`` paths, and the scheduler applied it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from batch_fixtures import scheduler, tree, workers
from brasil.batch import commit
from brasil.ninep import beneath
from brasil.ninep.client import Client
from brasil.ninep.constants import DMDIR, OREAD, OTRUNC, OWRITE
from fixtures import wait_for

NOBODY = 65534
WAIT = 60


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to play the other user")


def outside(tmp_path: Path) -> dict[str, object]:
    """What lies outside the home, to compare before and after an attack."""
    out: dict[str, object] = {}
    for root, dirs, files in os.walk(tmp_path):
        dirs[:] = [d for d in dirs if d not in ("home", "upper", "export")]
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            out[os.path.relpath(p, tmp_path)] = (st.st_mode, st.st_ino)
    return out


@pytest.fixture
def staged(tmp_path):
    """A home with ``sub/``, a root-only directory and a victim file beside it, and an execution's
    changes (``sub/out.txt``, ``new.txt``, ``evil.txt``) staged and journaled as token 7."""
    home, upper = tmp_path / "home", tmp_path / "upper"
    (home / "sub").mkdir(parents=True)
    (home / "sub" / "old.txt").write_text("old\n")
    (upper / "sub").mkdir(parents=True)
    (upper / "sub" / "out.txt").write_text("job output\n")
    (upper / "new.txt").write_text("new\n")
    (upper / "evil.txt").write_text("planted\n")
    rootonly = tmp_path / "rootonly"
    rootonly.mkdir(mode=0o700)
    (rootonly / "secret").write_text("root's\n")
    (tmp_path / "victim.txt").write_text("keep me\n")
    ops = commit.plan(str(upper), str(home))
    assert sorted((o.kind, o.path) for o in ops) == [
        ("put", "evil.txt"), ("put", "new.txt"), ("put", "sub/out.txt")]
    commit.stage_local(str(upper), str(home), 7, ops)
    return home, rootonly


@pytest.fixture(params=["openat2", "O_NOFOLLOW walk"])
def resolver(request, monkeypatch):
    """Both ways of opening beneath a directory: the kernel's openat2, and the walk used where
    the kernel has none."""
    if request.param == "openat2" and not beneath._have_openat2:
        pytest.skip("this kernel has no openat2")
    if request.param != "openat2":
        monkeypatch.setattr(beneath, "_have_openat2", False)
    return request.param


def test_a_commit_does_not_follow_a_symlink_swapped_into_the_home_after_the_run(
        staged, tmp_path, resolver):
    home, rootonly = staged
    os.rename(home / "sub", tmp_path / "sub.moved")
    (home / "sub").symlink_to(rootonly)
    before = outside(tmp_path)
    with pytest.raises(OSError, match=r"sub is a symbolic link"):
        commit.apply(commit.staging_path(str(home), 7), str(home))
    assert sorted(os.listdir(rootonly)) == ["secret"]
    assert outside(tmp_path) == before
    assert sorted(os.listdir(home)) == [".brasil-commit-7", "sub"]  # all old: nothing applied


def test_a_symlink_swapped_in_during_the_commit_is_refused_at_that_step(
        staged, tmp_path, resolver, monkeypatch):
    """The swap between the check of every path and the step that uses it: that step refuses."""
    home, rootonly = staged
    real = beneath.makedirs_beneath

    def swap_then_walk(dirfd, names, mode=0o777):
        if names == ("sub",) and not (home / "sub").is_symlink():
            os.rename(home / "sub", tmp_path / "sub.moved")
            (home / "sub").symlink_to(rootonly)
        return real(dirfd, names, mode)
    monkeypatch.setattr(commit, "makedirs_beneath", swap_then_walk)
    with pytest.raises(OSError, match=r"sub is a symbolic link"):
        commit.recover_token(str(home), 7, journaled=True)
    assert sorted(os.listdir(rootonly)) == ["secret"]


FORGED = {
    "put ../": {"kind": "put", "path": "../rootonly/planted", "staged": "0"},
    "put sub/../../": {"kind": "put", "path": "sub/../../rootonly/planted", "staged": "0"},
    "chmod ../": {"kind": "chmod", "path": "../rootonly", "mode": 0o777},
    "delete ../": {"kind": "delete", "path": "../victim.txt"},
    "delete absolute": {"kind": "delete", "path": "VICTIM"},
    "put absolute": {"kind": "put", "path": "ROOTONLY/planted", "staged": "0"},
    "staged name outside files/": {"kind": "put", "path": "stolen",
                                   "staged": "../../../rootonly/secret"},
    "empty component": {"kind": "put", "path": "sub//x", "staged": "0"},
    "NUL": {"kind": "put", "path": "sub/x\0y", "staged": "0"},
    "a staging directory": {"kind": "delete", "path": ".brasil-commit-9"},
    "unknown kind": {"kind": "link", "path": "x"},
    "unknown field": {"kind": "put", "path": "x", "staged": "0", "target": "/etc"},
    "chmod with a setuid mode": {"kind": "chmod", "path": "sub", "mode": 0o104777},
}


@pytest.mark.parametrize("entry", FORGED.values(), ids=FORGED.keys())
def test_a_forged_journal_is_refused_whole_and_nothing_outside_the_home_changes(
        staged, tmp_path, entry):
    home, rootonly = staged
    (home / ".brasil-commit-9").mkdir(mode=0o700)
    entry = {k: (v.replace("VICTIM", str(tmp_path / "victim.txt"))
                 .replace("ROOTONLY", str(rootonly)) if isinstance(v, str) else v)
             for k, v in entry.items()}
    staging = commit.staging_path(str(home), 7)
    honest = json.loads(Path(staging, "journal").read_text())
    Path(staging, "journal").write_text(json.dumps([honest[1], entry]))  # one fine entry first
    before = outside(tmp_path)
    with pytest.raises(OSError, match=r"journal.*refused"):
        commit.recover_token(str(home), 7, journaled=True)
    assert outside(tmp_path) == before
    assert sorted(os.listdir(rootonly)) == ["secret"] and (rootonly.stat().st_mode & 0o777) == 0o700
    assert (tmp_path / "victim.txt").read_text() == "keep me\n"
    assert tree(str(home)) == {"sub/old.txt": "old\n"}  # all old: not even the fine entry


def test_a_staging_directory_that_is_not_ours_or_is_open_to_others_is_refused(staged, tmp_path):
    home, rootonly = staged
    staging = commit.staging_path(str(home), 7)
    os.chmod(staging, 0o777)
    with pytest.raises(OSError, match=r"staging directory .* open to others"):
        commit.apply(staging, str(home))
    os.chmod(staging, 0o700)
    os.rename(staging, tmp_path / "real-staging")
    os.symlink(tmp_path / "real-staging", staging)
    with pytest.raises(OSError, match=r"staging directory .* symbolic link"):
        commit.apply(staging, str(home))
    assert tree(str(home)) == {"sub/old.txt": "old\n"}


def test_a_staging_directory_someone_else_owns_is_refused(staged, tmp_path):
    needs_root()
    home, _ = staged
    staging = commit.staging_path(str(home), 7)
    for root, dirs, files in os.walk(staging):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.chown(name, NOBODY, NOBODY)
    with pytest.raises(OSError, match=r"staging directory .* belongs to nobody"):
        commit.recover_token(str(home), 7, journaled=True)
    assert tree(str(home)) == {"sub/old.txt": "old\n"}


def make_home(tmp_path: Path, how: str) -> Path:
    home = tmp_path / "home"
    if how == "shared parent":
        (tmp_path / "shared").mkdir()
        os.chmod(tmp_path / "shared", 0o777)
        home = tmp_path / "shared" / "home"
    home.mkdir()
    if how == "mode 777":
        os.chmod(home, 0o777)
    elif how == "mode 1777":
        os.chmod(home, 0o1777)
    elif how == "group-writable":
        os.chmod(home, 0o775)
    elif how == "owned by nobody":
        needs_root()
        os.chown(home, NOBODY, NOBODY)
    return home


UNSAFE = {"mode 777": "writable by others", "mode 1777": "writable by others",
          "group-writable": "writable by others", "owned by nobody": "belongs to nobody",
          "shared parent": "writable by others"}


def test_a_home_reached_through_a_link_of_ours_is_accepted(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "real")
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "out.txt").write_text("x\n")
    home = str(tmp_path / "home")
    commit.stage_local(str(upper), home, 3, commit.plan(str(upper), home))
    commit.apply(commit.staging_path(home, 3), home)
    assert tree(str(tmp_path / "real")) == {"out.txt": "x\n"}


@pytest.mark.parametrize("how", UNSAFE, ids=UNSAFE.keys())
def test_a_home_others_can_write_or_own_is_refused_before_anything_is_staged(tmp_path, how):
    home = make_home(tmp_path, how)
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "out.txt").write_text("x\n")
    ops = commit.plan(str(upper), str(home))
    with pytest.raises(OSError, match=rf"{UNSAFE[how]}.*\b(chmod|chown|move|use)\b"):
        commit.stage_local(str(upper), str(home), 3, ops)
    assert os.listdir(home) == []


async def test_an_isolated_job_in_a_home_others_can_write_fails_with_the_reason(tmp_path):
    home = make_home(tmp_path, "mode 777")
    async with scheduler(str(tmp_path)) as (d, s, b), workers(d.unix, str(tmp_path), n=1):
        r = await b.submit(["echo out > out.txt"], tag="open", home=str(home), isolate=True,
                           retries=0)
        summary = await asyncio.wait_for(b.wait(tag="open"), WAIT)
        assert summary["failed"] == 1, await b.jobs("open")
        job = (await b.jobs("open"))[0]
        assert "writable by others" in job.reason and f"chmod go-w {home}" in job.reason, job
        assert job.id == r.first
    assert os.listdir(home) == []


# ---- §3: a remote worker's journal, applied by the scheduler ----

async def remote_commit(tmp_path: Path,
                        journal: list[dict[str, object]]):
    """Play a remote worker holding the secret: take an isolated job, report it done, upload a
    staging directory through fs/ with ``journal``, report it journaled. Returns the job as the
    scheduler then reports it, and its events."""
    export = tmp_path / "export"
    home = export / "home"
    home.mkdir(parents=True)
    (home / "in.txt").write_text("in\n")
    async with scheduler(str(tmp_path), export=str(export)) as (d, s, b):
        c = await Client.connect(d.unix)
        try:
            await c.write("csrv/local/batch/ctl", "worker evil 1 remote host=x pid=1\n")
            nxt = await c.open("csrv/local/batch/workers/evil/next", OREAD)
            ctl = await c.open("csrv/local/batch/workers/evil/ctl", OWRITE)

            async def line(verb: str) -> str:
                while True:
                    for ln in (await nxt.read(1 << 20, 0)).decode().splitlines():
                        if ln.startswith(verb + " "):
                            return ln.partition(" ")[2]

            await b.submit(["true"], tag="r", home=str(home), isolate=True, retries=0)
            token = json.loads(await line("run"))["t"]
            now = time.time()
            await ctl.write(f"start {token} 0 {now}\ndone {token} 0 {now} {now}\n".encode(), 0)
            assert int(await line("commit")) == token
            staging = f"csrv/local/fs/home/.brasil-commit-{token}"
            for p in (staging, f"{staging}/files", f"{staging}/trash"):
                await (await c.create(p, DMDIR | 0o700, 0)).close()
            f = await c.create(f"{staging}/files/0", 0o644, OWRITE | OTRUNC)
            async with f:
                await f.write(b"uploaded\n")
            f = await c.create(f"{staging}/journal", 0o600, OWRITE | OTRUNC)
            async with f:
                await f.write(json.dumps(journal).encode())
            await ctl.write(f"journaled {token} {time.time()}\n".encode(), 0)
            await asyncio.wait_for(b.wait(tag="r"), WAIT)
            await wait_for(lambda: not [p for p in os.listdir(home) if p.startswith(".brasil")],
                           timeout=10)
            return (await b.jobs("r"))[0], await b.events("r")
        finally:
            await c.close()


async def test_a_remote_workers_honest_journal_is_applied_by_the_scheduler(tmp_path):
    job, _ = await remote_commit(tmp_path, [{"kind": "put", "path": "out/up.txt", "staged": "0"},
                                            {"kind": "delete", "path": "in.txt"}])
    assert job.state == "done", job
    assert tree(str(tmp_path / "export" / "home")) == {"out/up.txt": "uploaded\n"}


async def test_a_remote_workers_journal_that_leaves_the_export_is_refused(tmp_path):
    rootonly = tmp_path / "rootonly3"
    rootonly.mkdir(mode=0o700)
    (rootonly / "secret").write_text("root's\n")
    (tmp_path / "victim.txt").write_text("keep me\n")
    before = outside(tmp_path)
    job, events = await remote_commit(tmp_path, [
        {"kind": "put", "path": "../../rootonly3/planted", "staged": "0"},
        {"kind": "delete", "path": "../../victim.txt"},
        {"kind": "chmod", "path": "../../rootonly3", "mode": 0o777}])
    # (the scheduler's own files, its database and socket, appear beside them meanwhile)
    attacked = ("rootonly3", "victim")
    after = {k: v for k, v in outside(tmp_path).items() if k.startswith(attacked)}
    assert after == {k: v for k, v in before.items() if k.startswith(attacked)}
    assert sorted(os.listdir(rootonly)) == ["secret"] and (rootonly.stat().st_mode & 0o777) == 0o700
    assert (tmp_path / "victim.txt").read_text() == "keep me\n"
    assert job.state == "failed", job  # not done with its outputs lost
    assert "journal" in job.reason and ".." in job.reason, job
    assert tree(str(tmp_path / "export" / "home")) == {"in.txt": "in\n"}
