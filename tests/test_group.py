"""The cluster as one namespace (issue 10), on a real 1+3+9 tree: query paths, aggregated
control, group reads reduced in the tree, and the parallel tools."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import sys
import textwrap

import pytest

from brasil.client import group as api
from brasil.ninep.auth import client_auth, dial, load_secret
from brasil.ninep.client import Client
from brasil.ninep.errors import NinepError
from fixtures import wait_for
from helpers import cli

NAMES = ["n0"] + [f"n{i}" for i in (1, 2, 3)] + [f"n{i}.{j}" for i in (1, 2, 3) for j in (1, 2, 3)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """1+3+9 daemons, each exporting DIR/NAME, with a reducer module in BRASIL_REDUCER_PATH."""
    d = tmp_path_factory.mktemp("groups")
    mods = d / "mods"
    mods.mkdir()
    (mods / "reducers.py").write_text(textwrap.dedent("""\
        def longest(a, b):
            return a if len(a) >= len(b) else b

        def fussy(a, b):
            if "boom" in a or "boom" in b:
                raise ValueError("cannot reduce boom")
            return a + b
    """))
    os.environ["BRASIL_REDUCER_PATH"] = str(mods)  # the daemons' children run isolated (-I)
    try:
        r = cli("cluster", "up", "--depth", "2", "--fanout", "3", "--slots", "1", "--dir",
                str(d / "c"), "--export-root", str(d / "x"))
    finally:
        del os.environ["BRASIL_REDUCER_PATH"]
    assert r.returncode == 0, r.stderr
    try:
        yield d
    finally:
        for name in NAMES:  # a frozen node must be thawed to be stopped
            pid_file = d / "c" / f"{name}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGCONT)
                except (ProcessLookupError, ValueError):
                    pass
        cli("cluster", "down", "--dir", str(d / "c"))


async def connect(tree, uname: str | None = None) -> Client:
    return await Client.connect(f"unix:{tree}/c/n0.sock", uname=uname,
                                auth=client_auth(load_secret(f"{tree}/c/secret")))


def put(tree, node: str, name: str, data: bytes | str) -> None:
    p = tree / "x" / node / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())


async def test_query_paths_with_each_kind_of_predicate(tree):
    c = await connect(tree)
    try:
        await c.write("csrv/n1/local/attrs", "rack=r1\n")
        await c.write("csrv/n1/n1.2/local/attrs", "rack=r2\n")
        for _ in range(100):  # labels reach the root with the next status report (a second)
            text = (await c.read("csrv/local/status")).decode()
            if "rack=r1" in text and "rack=r2" in text:
                break
            await asyncio.sleep(0.1)
        assert await api.nodes(c) == sorted(NAMES)
        assert await api.nodes(c, "name=n1.*") == ["n1.1", "n1.2", "n1.3"]  # a glob
        assert await api.nodes(c, "name=n[2-3]") == ["n2", "n3"]  # a node set
        assert len(await api.nodes(c, "name!=n0/arch=x86_64")) == 12 or \
            await api.nodes(c, "name!=n0") == sorted(set(NAMES) - {"n0"})
        assert len(await api.nodes(c, "mem>=64M/cores>=1/slots<=1")) == 13  # sizes, numbers
        assert await api.nodes(c, "mem>1000T") == []  # an empty result is an empty directory
        assert await api.nodes(c, "rack=r1") == ["n1"] and await api.nodes(c, "rack!=r1") == \
            ["n1.2"]
        lines = await api.status(c, "name=n3.*")
        assert sorted(ln.split()[0] for ln in lines) == ["n3.1", "n3.2", "n3.3"]
        # an entry leads to that node's /csrv: a clone there makes a session there
        sid = (await c.read("csrv/query/name=n2.3/n2.3/local/clone")).decode().strip()
        await c.write(f"csrv/query/name=n2.3/n2.3/local/{sid}/ctl", "exec echo $BRASIL_NODE\n")
        assert (await c.read(f"csrv/n2/n2.3/local/{sid}/stdio")).decode() == "n2.3\n"
        # a clone in a query directory reserves on its nodes only
        sid = (await c.read("csrv/query/name=n3.*/clone")).decode().strip()
        await c.write(f"csrv/local/{sid}/ctl", "res 3\nexec echo $BRASIL_NODE\n")
        out = sorted((await c.read(f"csrv/local/{sid}/stdio")).decode().split())
        assert out == ["n3.1", "n3.2", "n3.3"]
        await c.write(f"csrv/local/{sid}/ctl", "close\n")
    finally:
        await c.close()


async def test_bad_queries_and_paths_are_clear_errors(tree):
    c = await connect(tree)
    try:
        with pytest.raises(NinepError, match="unknown attribute 'gpu'"):
            await c.ls("csrv/query/gpu=1")
        with pytest.raises(NinepError, match="not a number or size"):
            await c.ls("csrv/query/mem>=lots")
        with pytest.raises(NinepError, match="may not climb out"):
            await api.gread(c, "fs/../../etc/passwd")
        put(tree, "n1.1", "out", "x")
        os.symlink("/etc/passwd", tree / "x" / "n1.1" / "escape")
        r = await api.gread(c, "fs/escape", "name=n1.1")
        assert "points outside the exported tree" in r["errors"]["n1.1"]
    finally:
        await c.close()


async def test_equiv_groups_identical_contents_and_the_root_gets_condensed_data(tree):
    for i, n in enumerate(NAMES[1:]):
        put(tree, n, "conf", "version 2\nmode fast\n" if i % 3 else "version 1\n")
    c = await connect(tree)
    try:
        r = await api.gread(c, "fs/conf", "name!=n0", agg="equiv")
        assert not r["errors"]
        assert [(g["count"], g["content"]) for g in r["groups"]] == \
            [(8, "version 2\nmode fast\n"), (4, "version 1\n")]
        assert r["groups"][1]["nodes"] == ["n1", "n1.1", "n2.1", "n3.1"]
        big = os.urandom(1 << 20).hex()[: 1 << 20]  # 1 MB identical on 12 nodes
        for n in NAMES[1:]:
            put(tree, n, "big", big)
        r = await api.gread(c, "fs/big", "name!=n0", agg="equiv")
        assert r["groups"][0]["count"] == 12 and r["held"] == 12 << 20
        assert r["received"] < 4 << 20  # one result per child, not one copy per leaf
    finally:
        await c.close()


async def test_equiv_keeps_different_binaries_apart(tree):
    """Two binaries that a lossy UTF-8 decode would make equal stay in two groups, exact."""
    a, b = b"\xff\xfe head\n", b"\xfe\xff head\n"
    for i, n in enumerate(NAMES[1:]):
        put(tree, n, "bin", a if i % 2 else b)
    c = await connect(tree)
    try:
        r = await api.gread(c, "fs/bin", "name!=n0", agg="equiv")
        assert not r["errors"]
        got = {base64.b64decode(g["content"]): g["count"] for g in r["groups"]}
        assert got == {a: 6, b: 6} and {g["encoding"] for g in r["groups"]} == {"base64"}
    finally:
        await c.close()


async def test_numeric_reductions_and_a_user_reducer(tree):
    for i, n in enumerate(NAMES):
        put(tree, n, "num", f"{i} 10\n")
    c = await connect(tree)
    try:
        r = await api.gread(c, "fs/num", agg="sum")
        assert r["value"] == [sum(range(13)), 130] and r["nodes"] and not r["errors"]
        assert (await api.gread(c, "fs/num", agg="max"))["value"] == [12, 10]
        assert (await api.gread(c, "fs/num", agg="mean"))["value"] == [6, 10]
        assert (await api.gread(c, "fs/num", agg="count"))["value"] == {"nodes": 13, "lines": 13}
        put(tree, "n2.2", "num", "this line is the longest of them all\n")
        r = await api.gread(c, "fs/num", agg="py:reducers:longest")
        assert r["value"] == "this line is the longest of them all\n"
        put(tree, "n3.1", "num", "boom\n")
        r = await api.gread(c, "fs/num", agg="py:reducers:fussy")
        assert r["errors"] == {"n3": "reducer reducers:fussy failed: ValueError: cannot reduce "
                                     "boom"}
    finally:
        await c.close()


async def test_a_node_lost_mid_read_is_named_and_the_rest_is_returned(tree):
    for n in NAMES:
        put(tree, n, "name", n + "\n")
    pid = int((tree / "c" / "n3.3.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    c = await connect(tree)
    try:
        r = await asyncio.wait_for(api.gread(c, "fs/name", agg="concat"), 60)
        assert "n3.3" in r["errors"] and "lost" in r["errors"]["n3.3"]
        assert sorted(r["parts"]) == sorted(set(NAMES) - {"n3.3"})
    finally:
        os.kill(pid, signal.SIGCONT)
        await c.close()


async def test_pcp_copies_50_mb_to_every_node_identically(tree, tmp_path):
    src = tmp_path / "payload"
    src.write_bytes(os.urandom(50 << 20))
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    c = await connect(tree)
    try:
        assert await api.pcp(c, str(src), "fs/copies/payload") == 50 << 20
        for n in NAMES:
            assert hashlib.sha256((tree / "x" / n / "copies" / "payload").read_bytes()
                                  ).hexdigest() == want, n
        r = await api.gread(c, "fs/copies/payload", agg="sha256")
        assert [g["content"] for g in r["groups"]] == [want]
        (tree / "x" / "n2.1" / "copies" / "payload").write_bytes(b"stale")
        sent = await api.psync(c, str(src), "fs/copies/payload")
        assert sent == [("fs/copies/payload", ["n2.1"])]  # only what changed
    finally:
        await c.close()


async def test_ptail_follows_a_line_appended_on_a_leaf(tree):
    for n in NAMES:
        put(tree, n, "log", "old line\n")
    c = await connect(tree)
    lines: list[str] = []

    async def follow() -> None:
        async for line in api.follow(c, "fs/log", "name=n2.*"):
            lines.append(line)
    task = asyncio.ensure_future(follow())
    try:
        for _ in range(100):  # until every node follows: a line appended shows up
            with open(tree / "x" / "n2.3" / "log", "a") as f:
                f.write("fresh line\n")
            await asyncio.sleep(0.1)
            if "n2.3: fresh line" in lines:
                break
        assert "n2.3: fresh line" in lines and "old line" not in " ".join(lines)
    finally:
        task.cancel()
        await c.close()


async def test_ptail_starts_with_each_nodes_last_lines_as_tail_does(tree):
    """Issue 16 §8: `ptail -f` showed nothing until a line was appended; tail -f shows the
    last 10 first."""
    for n in NAMES:
        put(tree, n, "tail.log", "".join(f"{n} line {i}\n" for i in range(1, 21)))
    c = await connect(tree)
    lines: list[str] = []

    async def follow() -> None:
        async for line in api.follow(c, "fs/tail.log", "name=n2.1", lines=3):
            lines.append(line)
    task = asyncio.ensure_future(follow())
    try:
        await wait_for(lambda: len(lines) >= 3, timeout=20)
        assert lines == [f"n2.1: n2.1 line {i}" for i in (18, 19, 20)], lines
    finally:
        task.cancel()
        await c.close()


def test_the_last_lines_are_found_without_reading_the_whole_file(tmp_path):
    from brasil.group.views import last_lines_start
    f = tmp_path / "f"
    for text, n, want in [(b"a\nb\nc\n", 2, b"b\nc\n"), (b"a\nb\nc", 2, b"b\nc"),
                          (b"a\nb\n", 5, b"a\nb\n"), (b"", 3, b""), (b"x\n" * 100000, 1, b"x\n"),
                          (b"a\nb\n", 0, b"")]:
        f.write_bytes(text)
        fd = os.open(f, os.O_RDONLY)
        try:
            assert text[last_lines_start(fd, len(text), n):] == want, (text[:20], n)
        finally:
            os.close(fd)
    f.write_bytes(b"y" * (3 << 20))  # one line longer than the window: its last MiB
    fd = os.open(f, os.O_RDONLY)
    try:
        assert last_lines_start(fd, 3 << 20, 10) == 2 << 20
    finally:
        os.close(fd)


async def test_kill_written_to_a_user_query_ends_exactly_that_users_sessions(tree):
    alice, bob = await connect(tree, "alice"), await connect(tree, "bob")
    try:
        sids = {}
        for who, c in (("alice", alice), ("bob", bob)):
            sid = (await c.read("csrv/local/clone")).decode().strip()
            await c.write(f"csrv/local/{sid}/ctl", "res 2\nexec sleep 60\n")
            sids[who] = sid
        assert sorted(ln.split()[3] for ln in await api.status(alice, "user=alice")) == \
            ["user=alice"]
        ok, failed = await api.control(alice, "user=alice", "kill")
        assert ok == 1 and not failed
        waited = (await alice.read(f"csrv/local/{sids['alice']}/wait")).decode().splitlines()
        assert [ln.split()[1] for ln in waited] == ["143", "143"]  # "SUB STATUS [unread]"
        state = (await bob.read(f"csrv/local/{sids['bob']}/ctl")).decode()
        assert " running " in state
        await bob.write(f"csrv/local/{sids['bob']}/ctl", "close\n")
        await alice.write(f"csrv/local/{sids['alice']}/ctl", "close\n")
    finally:
        await alice.close()
        await bob.close()


async def test_merge_views_group_same_named_files_by_node(tree):
    for n in ("n1.1", "n1.2"):
        (tree / "x" / n / "logs").mkdir(exist_ok=True)
        put(tree, n, "logs/app.log", f"log of {n}\n")
    put(tree, "n1.2", "logs/only-here", "x\n")
    c = await dial(f"unix:{tree}/c/n0.sock", f"{tree}/c/secret")
    try:
        q = "csrv/query/name=n1.[1-2]"
        assert "fs" in [s.name for s in await c.ls(f"{q}/merge")]
        assert sorted(s.name for s in await c.ls(f"{q}/merge/fs")) == ["n1.1", "n1.2"]
        logs = sorted(s.name for s in await c.ls(f"{q}/deepmerge/fs/logs"))
        assert logs == ["app.log", "only-here"]
        assert sorted(s.name for s in await c.ls(f"{q}/deepmerge/fs/logs/app.log")) == \
            ["n1.1", "n1.2"]
        assert (await c.read(f"{q}/deepmerge/fs/logs/app.log/n1.2")).decode() == "log of n1.2\n"
    finally:
        await c.close()


async def test_the_command_line(tree):
    from helpers import run_cli
    put(tree, "n1", "motd", "hello\n")
    env = {"BRASIL": f"unix:{tree}/c/n0.sock", "BRASIL_SECRET_FILE": f"{tree}/c/secret"}
    rc, out, err = await run_cli("gread", "--where", "name=n1", "--agg", "equiv", "--json",
                                 "fs/motd", env=env)
    import json
    assert rc == 0 and json.loads(out) == [{"nodes": ["n1"], "count": 1, "content": "hello\n"}]
    rc, out, err = await run_cli("pgrep", "--where", "name=n[1-2]", "ell", "fs/motd", env=env)
    assert rc == 1 and "n1 (1)" in out and "n2: motd: No such file" in err  # n2 has none
    rc, out, err = await run_cli("ptop", "--once", "--where", "name=n3*", env=env)
    assert rc == 0 and "n3.2" in out
    # issue 16 §8: pgrep is grep: 1 when nothing matched anywhere, and no empty groups
    put(tree, "n2", "motd", "nothing here\n")
    rc, out, err = await run_cli("pgrep", "--where", "name=n[1-2]", "ell", "fs/motd", env=env)
    assert rc == 0 and "n1 (1)" in out and "n2" not in out, (out, err)
    rc, out, err = await run_cli("pgrep", "--where", "name=n[1-2]", "zzz", "fs/motd", env=env)
    assert rc == 1 and out == "", out
    # ptop off a terminal prints at once, one table per interval, as top -b
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", "ptop", "--interval", "0.2", "--where",
        "name=n1", stdout=asyncio.subprocess.PIPE, env={**os.environ, **env})
    try:
        assert p.stdout is not None
        first = await asyncio.wait_for(p.stdout.readuntil(b"n1 "), 20)
        assert b"brasil ptop" in first
    finally:
        p.kill()
        await p.wait()


async def test_concat_keeps_binaries_exact_and_refuses_a_file_over_the_limit(tree):
    """concat carries non-UTF-8 content base64-encoded; a file over the per-node limit is that
    node's error (size, limit, what to do instead) while the rest is returned; sha256 streams."""
    from brasil.group.gread import MAX_CONTENT
    from helpers import run_cli
    binary = b"\xff\xfe\x00 bin\n"
    put(tree, "n1", "blob", binary)
    put(tree, "n2", "blob", "text\n")
    c = await connect(tree)
    try:
        r = await api.gread(c, "fs/blob", "name=n[1-2]")
        assert not r["errors"] and r["parts"]["n2"] == "text\n"
        assert r["parts"]["n1"]["encoding"] == "base64"
        assert base64.b64decode(r["parts"]["n1"]["content"]) == binary
        big = os.urandom(MAX_CONTENT + 1)
        for n in ("n2.1", "n2.2"):
            put(tree, n, "huge", big)
        put(tree, "n2.3", "huge", "small\n")
        for agg in ("concat", "equiv"):
            r = await asyncio.wait_for(api.gread(c, "fs/huge", "name=n2.*", agg=agg), 30)
            assert sorted(r["errors"]) == ["n2.1", "n2.2"], agg
            why = r["errors"]["n2.1"]
            assert f"{MAX_CONTENT + 1} bytes" in why and "8 MiB" in why and "sha256" in why \
                and "pcp" in why, why
            assert r["nodes"] == ["n2.3"]
        r = await api.gread(c, "fs/huge", "name=n2.*", agg="sha256")
        assert not r["errors"] and r["groups"][0]["count"] == 2
        assert r["groups"][0]["content"] == hashlib.sha256(big).hexdigest()
    finally:
        await c.close()
    env = {"BRASIL": f"unix:{tree}/c/n0.sock", "BRASIL_SECRET_FILE": f"{tree}/c/secret"}
    rc, out, err = await run_cli("gread", "--where", "name=n[1-2]", "fs/blob", env=env)
    assert rc == 0 and out.splitlines() == [
        f"n1: (binary, {len(binary)} bytes; --json gives it base64-encoded)", "n2: text"], (out, err)


async def test_the_readme_sum_of_status_counts_each_node_once(tree):
    """README: `brasil gread --where 'rack=r7' --agg sum status`: slots and free slots summed
    over the matching nodes, each once (a node's status file lists its subtree too)."""
    from helpers import run_cli
    c = await connect(tree)
    try:
        for where in ("n3", "n3/n3.1", "n3/n3.2"):
            await c.write(f"csrv/{where}/local/attrs", "rack=r7\n")
        for _ in range(100):  # labels reach the root with the next status report
            try:
                if await api.nodes(c, "rack=r7") == ["n3", "n3.1", "n3.2"]:
                    break
            except NinepError:  # no node known to have a rack yet
                pass
            await asyncio.sleep(0.1)
        r = await api.gread(c, "status", "rack=r7", agg="sum")
        assert r["value"][:3] == [None, 3, 3] and sorted(r["nodes"]) == ["n3", "n3.1", "n3.2"]
    finally:
        await c.close()
    env = {"BRASIL": f"unix:{tree}/c/n0.sock", "BRASIL_SECRET_FILE": f"{tree}/c/secret"}
    rc, out, err = await run_cli("gread", "--where", "rack=r7", "--agg", "sum", "status", env=env)
    assert rc == 0 and out.split()[:3] == ["-", "3", "3"] and len(out.split()) == 5, (out, err)


async def test_group_reads_refuse_files_that_act_when_opened(tree):
    c = await connect(tree)
    try:
        before = (await c.read("csrv/local/status")).decode()
        for path in ("clone", "ctl", "net", "1/ctl", "query/clone"):
            for agg in ("concat", "sha256", "sum"):
                with pytest.raises(NinepError, match="reads only plain files.*clone"):
                    await api.gread(c, path, agg=agg)
        after = (await c.read("csrv/local/status")).decode()
        sessions = [ln.split("sessions=")[1].split()[0] for ln in (before, after)]
        assert sessions[0] == sessions[1]  # no clone was opened
        r = await api.gread(c, "attrs", "name=n1")
        assert r["nodes"] == ["n1"] and not r["errors"]
    finally:
        await c.close()


async def test_pcp_onto_a_directory_names_the_nodes_and_leaves_no_temporary_files(tree, tmp_path):
    src = tmp_path / "conf"
    src.write_bytes(b"conf\n" * 1000)
    for n in ("n0", "n1", "n1.2", "n3.3"):
        (tree / "x" / n / "etcd").mkdir(exist_ok=True)
    c = await connect(tree)
    try:
        with pytest.raises(NinepError) as e:
            await api.pcp(c, str(src), "fs/etcd")
        assert e.value.message == \
            "pcp: fs/etcd is a directory on n0,n1,n1.2,n3.3; give a file path", e.value.message
        with pytest.raises(NinepError) as e:  # only where it is one: said by the node itself
            await api.pcp(c, str(src), "fs/etcd", "name=n1.2")
        assert e.value.message == "pcp: fs/etcd is a directory on n1.2; give a file path"
        assert (tree / "x" / "n2.1" / "etcd").read_bytes() == src.read_bytes()  # others copied
        left = [p for p in (tree / "x").rglob(".pcp-*")]
        assert not left, left
    finally:
        await c.close()
    from helpers import run_cli
    env = {"BRASIL": f"unix:{tree}/c/n0.sock", "BRASIL_SECRET_FILE": f"{tree}/c/secret"}
    rc, out, err = await run_cli("pcp", str(src), "fs/etcd", env=env)
    assert rc == 1 and "is a directory on n0,n1,n1.2,n3.3; give a file path" in err, err
    assert str(tree) not in err and "/tmp" not in err


async def test_ptail_names_nodes_lacking_the_file_follows_it_once_it_appears_refuses_a_dir(tree):
    from helpers import run_cli
    put(tree, "n2.1", "later.log", "here already\n")
    for n in ("n2", "n2.2", "n2.3"):
        (tree / "x" / n / "later.log").unlink(missing_ok=True)
    c = await connect(tree)
    lines: list[str] = []
    notes: list[dict[str, str]] = []

    async def follow() -> None:
        async for line in api.follow(c, "fs/later.log", "name=n2*", notes.append):
            lines.append(line)
    task = asyncio.ensure_future(follow())
    try:
        for _ in range(100):
            if notes:
                break
            await asyncio.sleep(0.05)
        assert sorted(notes[0]) == ["n2", "n2.2", "n2.3"]
        assert all("No such file" in why for why in notes[0].values())
        await asyncio.sleep(2)  # every node follows by now
        put(tree, "n2.2", "later.log", "first\n")
        for _ in range(100):
            if "n2.2: first" in lines:
                break
            await asyncio.sleep(0.1)
        assert "n2.2: first" in lines and "n2.1: here already" not in lines  # tail -F
    finally:
        task.cancel()
        await c.close()
    (tree / "x" / "n2.3" / "logdir").mkdir(exist_ok=True)
    env = {"BRASIL": f"unix:{tree}/c/n0.sock", "BRASIL_SECRET_FILE": f"{tree}/c/secret"}
    rc, out, err = await asyncio.wait_for(run_cli("ptail", "-f", "--where", "name=n2*",
                                                  "fs/logdir", env=env), 30)
    assert rc == 1 and "fs/logdir is a directory on n2.3; ptail follows a file" in err, err


async def test_failures_say_so_and_exit_non_zero(tree, tmp_path):
    import json

    from helpers import run_cli
    env = {"BRASIL": f"unix:{tree}/c/n0.sock", "BRASIL_SECRET_FILE": f"{tree}/c/secret"}
    rc, out, err = await run_cli("psync", str(tmp_path / "nonexist"), "fs/x", env=env)
    assert rc == 1 and "nonexist: no such file or directory" in err, (rc, err)
    put(tree, "n1", "words", "no numbers here\n")
    rc, out, err = await run_cli("gread", "--where", "name=n1", "--agg", "sum", "fs/words", env=env)
    assert rc == 1 and out == "" and "no numbers in fs/words on 1 node(s)" in err, (out, err)
    rc, out, err = await run_cli("gread", "--where", "name=n9", "--agg", "sum", "fs/words",
                                 env=env)
    assert rc == 1 and out == "" and "no node matches name=n9" in err, (out, err)
    for n in ("n1", "n2"):
        (tree / "x" / n / "lsdir" / "sub").mkdir(parents=True, exist_ok=True)
        put(tree, n, "lsdir/both", "x")
    put(tree, "n2", "lsdir/only2", "x")
    rc, out, err = await run_cli("gread", "--where", "name=n[1-2]", "--agg", "ls", "fs/lsdir",
                                 env=env)
    assert rc == 0 and out.splitlines() == ["both", "only2  [n2]", "sub/"], (out, err)
    rc, out, err = await run_cli("gread", "--where", "name=n[1-3]", "--agg", "equiv", "--json",
                                 "fs/words", env=env)  # n2, n3 have none
    assert rc == 1 and json.loads(out) == [{"nodes": ["n1"], "count": 1,
                                            "content": "no numbers here\n"}]
    assert "n2: words: No such file" in err and "n3: words: No such file" in err
    rc, out, err = await run_cli("gread", "--help", env=env)
    assert rc == 0 and "ls (a directory's entries" in " ".join(out.split())
    # a command that fails on the sessions a query selects: the write fails, saying why
    c = await connect(tree, "carol")
    try:
        sid = (await c.read("csrv/local/clone")).decode().strip()
        await c.write(f"csrv/local/{sid}/ctl", "res 2\nexec sleep 60\n")
        with pytest.raises(NinepError, match=r"failed on 1 session\(s\), ok on 0: n0/"):
            await c.write("csrv/query/user=carol/ctl", "bogus\n")
        text = (await c.read("csrv/query/user=carol/ctl")).decode()
        assert text.startswith("ok 0\nfailed n0/") and "bogus" in text
        ok, failed = await api.control(c, "user=carol", "bogus")  # the API returns them
        assert ok == 0 and len(failed) == 1
        rc, out, err = await run_cli("write", "/csrv/query/user=carol/ctl", "bogus", env=env)
        assert rc == 1 and "failed on 1 session(s)" in err, err
        await c.write(f"csrv/local/{sid}/ctl", "close\n")
        # the same through a child: its failure comes up as a failure, not as "lost"
        sid = (await c.read("csrv/n1/local/clone")).decode().strip()
        await c.write(f"csrv/n1/local/{sid}/ctl", "exec sleep 61\n")
        with pytest.raises(NinepError, match=r"failed on 1 session\(s\), ok on 0: n1/"):
            await c.write("csrv/query/name=n1/command=sleep 61/ctl", "bogus\n")
        await c.write(f"csrv/n1/local/{sid}/ctl", "close\n")
    finally:
        await c.close()


async def test_dot_components_and_predicates_that_are_not_predicates(tree):
    put(tree, "n1", "dotted", "here\n")
    c = await connect(tree)
    try:
        r = await api.gread(c, "fs/./dotted", "name=n1")
        assert r["parts"] == {"n1": "here\n"} and not r["errors"]
        for bad in ("=x", "name", "mem"):
            with pytest.raises(NinepError, match="is not a predicate.*KEY=VALUE"):
                await c.ls(f"csrv/query/{bad}")
        with pytest.raises(NinepError, match=r"one '=' compares \(name=n1\)"):
            await c.ls("csrv/query/name==n1")
        with pytest.raises(NinepError, match=r"one '=' compares \(name!=n1\)"):
            await c.ls("csrv/query/name!==n1")
        with pytest.raises(NinepError, match="does not exist"):  # a node that is not there
            await c.ls("csrv/query/n9")
    finally:
        await c.close()
