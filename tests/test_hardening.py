"""Issue 7: what hostile testing broke in the daemon, one test (or a few) per finding."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from brasil.ninep.client import Client, dont_touch
from brasil.ninep.constants import (
    DMDEVICE,
    DMNAMEDPIPE,
    DMSETUID,
    DMSOCKET,
    DMSYMLINK,
    ORDWR,
    OWRITE,
)
from brasil.ninep.errors import NinepError
from fixtures import (
    L,
    ctl,
    daemon,
    new_session,
    serve_process,
    session,
    small_tree,
    status_rows,
    wait_for,
)

# ---- §2: special files through 9P2000.u ----

@pytest.mark.parametrize("bit,what", [(DMSYMLINK, "symbolic link"), (DMDEVICE, "device"),
                                      (DMNAMEDPIPE, "named pipe"), (DMSOCKET, "socket"),
                                      (DMSETUID, "setuid")])
async def test_special_files_are_refused_not_faked(node, tmp_path, bit, what):
    n, _ = node
    async with await Client.connect(n.addresses[0], dotu=True) as c:
        with pytest.raises(NinepError, match=f"cannot create a {what}") as e:
            await c.create(f"{L}/fs/special", perm=bit | 0o755)
        assert e.value.errno == errno.EOPNOTSUPP
    assert not os.path.lexists(tmp_path / "export" / "special")


async def test_wstat_cannot_make_a_setuid_file(node, tmp_path):
    n, c = node
    (tmp_path / "export" / "prog").write_text("#!/bin/sh\n")
    with pytest.raises(NinepError, match="cannot set a setuid file"):
        await c.wstat(f"{L}/fs/prog", dont_touch(mode=0o4755))
    assert os.stat(tmp_path / "export" / "prog").st_mode & 0o7777 == 0o644
    await c.wstat(f"{L}/fs/prog", dont_touch(mode=0o755))  # plain permission bits still work
    assert os.stat(tmp_path / "export" / "prog").st_mode & 0o7777 == 0o755


# ---- §3: a regex record separator cannot freeze the event loop ----

async def test_a_catastrophic_regex_separator_does_not_stall_the_daemon(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, "rs regex (a+)+c")  # exponential with a backtracking engine
    await ctl(c, sid, "exec printf 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\\n'")
    out = await asyncio.wait_for(c.read(f"{L}/{sid}/stdio"), 30)
    assert out == b"a" * 39 + b"b\n" + b"a" * 39 + b"b\n"


# ---- §4: long records: linear, bounded, never split ----

async def test_two_long_lines_without_newlines_arrive_whole_and_the_daemon_stays_responsive(node):
    n, c = node
    size = 24 << 20  # 24 MiB each: far over the reassembly window
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, f"exec head -c {size} /dev/zero | tr '\\0' \"$BRASIL_RANK\"")
    other = await new_session(c)  # an unrelated session keeps answering meanwhile
    reads = 0

    async def unrelated() -> None:
        nonlocal reads
        while not done.is_set():
            await c.read(f"{L}/{other}/ctl")
            reads += 1
            await asyncio.sleep(0.05)
    done = asyncio.Event()
    probe = asyncio.ensure_future(unrelated())
    try:
        out = await asyncio.wait_for(c.read(f"{L}/{sid}/stdio"), 120)
    finally:
        done.set()
        await probe
    # Each is a last record without a newline; the first is followed by the other, so it is
    # owed one (docs/reference.md §Records: the two stay two), the very last is not.
    assert len(out) == 2 * size + 1
    first = out[:size]
    assert first in (b"0" * size, b"1" * size), "a long record was cut or interleaved"
    assert out[size:size + 1] == b"\n"
    assert out[size + 1:] == (b"1" if first[:1] == b"0" else b"0") * size
    assert reads > 0
    for agg in n.sessions[sid]._aggregators:
        assert not agg.lock.locked()


async def test_a_long_record_written_under_mux_rr_goes_whole_to_one_sub_session(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, "mux rr")
    await ctl(c, sid, "exec wc -c")
    outs = [await c.open(f"{L}/{sid}/{i}/stdout") for i in range(2)]
    big = b"y" * (20 << 20)

    async def feed() -> None:
        async with await c.open(f"{L}/{sid}/stdio", OWRITE) as f:
            await f.write(b"first\n")
            for i in range(0, len(big), 1 << 20):
                await f.write(big[i:i + (1 << 20)])
            await f.write(b"\nlast")  # a last record with no separator is delivered too
    results = await asyncio.gather(feed(), *(o.read_all() for o in outs))
    counts = sorted(int(r.split()[0]) for r in results[1:])
    assert counts == sorted([len(b"first\n") + len(b"last"), len(big) + 1])


async def test_rs_fixed_has_a_bound(node):
    n, c = node
    sid = await new_session(c)
    with pytest.raises(NinepError, match="between 1 and 1048576"):
        await ctl(c, sid, "rs fixed 99999999999999")


# ---- §7, §8, §10, §11: sessions whose sub-sessions live on other nodes ----


async def test_a_root_with_no_slots_serves_sessions_that_live_elsewhere(tmp_path):
    """§7: `res` landed on children only; the session's stdio, and splices into it, failed."""
    async with small_tree(str(tmp_path), root_slots=0) as (nodes, c):
        sid = await session(c, ["res 2", "exec echo $BRASIL_NODE"])
        out = sorted((await c.read(f"{L}/{sid}/stdio")).decode().split())
        assert len(out) == 2 and "root" not in out
        feeder = await session(c, ["res 1", "exec seq 5"])
        summer = await session(c, ["res 2", "exec wc -l"])
        await ctl(c, summer, f"splice /csrv/local/{feeder}/0 1 0")  # into the whole session
        counts = (await c.read(f"{L}/{summer}/stdio")).decode().split()
        assert counts == ["5", "5"]  # broadcast to both sub-sessions, on other nodes


async def test_splice_paths_mean_what_they_mean_where_they_were_written(tmp_path):
    """§8: a splice written to a sub-session on another node named a path on that node."""
    async with small_tree(str(tmp_path), root_slots=0) as (nodes, c):
        for _ in range(3):  # ids here then differ from the ids the children give their sessions
            await new_session(c)
        src = await session(c, ["res 1", "exec seq 7"])
        dst = await session(c, ["res 1"])
        await c.write(f"{L}/{dst}/0/ctl", "exec wc -l\n")
        await c.write(f"{L}/{dst}/0/ctl", f"splice /csrv/local/{src}/0 1 0\n")
        assert (await c.read(f"{L}/{dst}/0/stdio")).decode().split() == ["7"]


async def test_the_ctl_state_line_counts_sub_sessions_on_other_nodes(tmp_path):
    """§10: it said `subs 8 running 2` while all 8 ran."""
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 8", "exec sleep 30"])
        state = (await c.read(f"{L}/{sid}/ctl")).decode()
        assert " subs 8 running 8 " in state, state
        await ctl(c, sid, "kill KILL")
        await c.read(f"{L}/{sid}/wait")
        state = (await c.read(f"{L}/{sid}/ctl")).decode()
        assert "running" not in state.split(" mux ")[0], state


async def test_every_process_knows_its_rank_in_the_whole_session(tmp_path):
    """§11: BRASIL_SUB was per node (0 or 1 everywhere); now ranks are 0…N-1 over the tree."""
    async with small_tree(str(tmp_path)) as (nodes, c):
        sid = await session(c, ["res 6", "exec echo $BRASIL_RANK $BRASIL_SIZE $BRASIL_SESSION "
                                "$BRASIL_NODE"])
        rows = sorted(ln.split() for ln in (await c.read(f"{L}/{sid}/stdio")).decode().splitlines())
        assert [int(r[0]) for r in sorted(rows, key=lambda r: int(r[0]))] == list(range(6))
        assert {r[1] for r in rows} == {"6"} and {r[2] for r in rows} == {f"root:/csrv/local/{sid}"}
        status = {int(r[0]): r[1] for r in await status_rows(c, sid)}
        assert all(status[int(r[0])] == r[3] for r in rows)  # rank i runs where status says i is
        await c.write(f"{L}/{sid}/5/ctl", "exec echo $BRASIL_RANK\n")  # one remote sub-session
        assert (await c.read(f"{L}/{sid}/5/stdio")).decode().split() == ["5"]


# ---- §5: caps and deadlines ----

async def test_sessions_are_capped_and_existing_work_goes_on(tmp_path):
    async with daemon(str(tmp_path), node_options={"max_sessions": 5}) as d:
        async with await Client.connect(d.unix, dotu=True) as c:
            sids = [await new_session(c) for _ in range(5)]
            with pytest.raises(NinepError, match="5 sessions, its limit.*--max-sessions") as e:
                await new_session(c)
            assert e.value.errno == errno.EAGAIN
            await ctl(c, sids[0], "exec echo still working")
            assert await c.read(f"{L}/{sids[0]}/stdio") == b"still working\n"
            await ctl(c, sids[1], "close")
            await new_session(c)  # room again


async def raw(addr) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(addr.host, addr.port)


async def closed_by_server(reader: asyncio.StreamReader, within: float = 10) -> bool:
    await asyncio.wait_for(reader.read(), within)  # whatever came first, then end of file
    return reader.at_eof()


async def test_connections_are_capped_but_the_owners_socket_still_gets_in(tmp_path):
    async with daemon(str(tmp_path), max_connections=4) as d:
        idle = [await raw(d.tcp) for _ in range(4)]
        await wait_for(lambda: d.server.counts["net"] == 4)
        r, w = await raw(d.tcp)
        assert await closed_by_server(r)  # the fifth is refused at once
        async with await Client.connect(d.unix) as c:  # the owner's Unix socket has room
            assert (await c.read(f"{L}/arch")).startswith(b"linux")
        for _, wr in idle + [(r, w)]:
            wr.close()


async def test_a_connection_that_never_attaches_is_closed(tmp_path):
    async with daemon(str(tmp_path), handshake_timeout=0.3) as d:
        r, w = await raw(d.tcp)  # says nothing at all
        assert await closed_by_server(r)
        w.close()


async def test_a_frame_that_stops_arriving_is_closed(tmp_path):
    from brasil.ninep.messages import Tversion, encode
    async with daemon(str(tmp_path), frame_timeout=0.3, handshake_timeout=60) as d:
        r, w = await raw(d.tcp)
        w.write(encode(Tversion(0xFFFF, 8192, "9P2000")))
        w.write((1000).to_bytes(4, "little") + b"\x76\x00\x00")  # a 1000-byte frame, 7 bytes in
        await w.drain()
        assert (await r.read(4)) != b""  # Rversion came back
        assert await closed_by_server(r)
        w.close()


async def test_fids_are_capped_over_all_connections(tmp_path):
    async with daemon(str(tmp_path), max_total_fids=40) as d:
        clients = [await Client.connect(d.unix) for _ in range(2)]
        held = []
        with pytest.raises(NinepError, match="too many fids open on this server"):
            for i in range(50):
                held.append(await clients[i % 2].walk(f"{L}/arch"))
        assert d.server.nfids == 40
        for c in clients:
            await c.close()
        await wait_for(lambda: d.server.nfids == 0)


# ---- §6: logs a client can flood; errors that quote a bounded prefix ----

async def test_names_with_nul_are_bad_names_not_internal_errors(node, caplog):
    n, c = node
    from brasil.ninep.messages import Twalk
    fid = c.alloc_fid()
    with pytest.raises(NinepError, match="bad file name"):
        await c.rpc(Twalk, c.root, fid, ("cs\0rv", "local"))
    c.free_fid(fid)
    with pytest.raises(NinepError, match="bad file name"):
        await c.create(f"{L}/fs/a\0b")
    (n.export.root and open(os.path.join(n.export.root, "f"), "w").close())
    with pytest.raises(NinepError, match="bad file name"):
        await c.wstat(f"{L}/fs/f", dont_touch(name="g\0h"))
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_repeated_failures_log_a_few_lines_not_one_each(tmp_path, caplog):
    from brasil.ninep.auth import client_auth
    caplog.set_level("WARNING")
    async with daemon(str(tmp_path), secret=b"the right secret, long enough") as d:
        for _ in range(60):
            with pytest.raises(NinepError):
                await Client.connect(d.tcp, auth=client_auth(b"a wrong secret, long enough"))
        for _ in range(60):  # guesses at the data endpoint's single-use tokens
            from brasil.tree.data import frame
            r, w = await asyncio.open_connection(d.data.address.host, d.data.address.port)
            w.write(frame(os.urandom(16).hex().encode()))
            await w.drain()
            await r.read()
            w.close()
    wrong = [r for r in caplog.records if "wrong secret" in r.getMessage()]
    tokens = [r for r in caplog.records if "unknown token" in r.getMessage()]
    assert 1 <= len(wrong) <= 6 and 1 <= len(tokens) <= 6


async def test_a_huge_bad_ctl_command_gets_a_short_error_and_the_connection_lives(node):
    n, c = node
    sid = await new_session(c)
    async with await c.open(f"{L}/{sid}/ctl", ORDWR) as f:
        with pytest.raises(NinepError, match=r"unknown command \"xxxx.*\(1000000 characters\)") as e:
            await f.write(b"x" * 1_000_000)
    assert len(e.value.message) < 2000
    assert (await c.read(f"{L}/arch")).startswith(b"linux")  # same connection, still fine


async def test_a_file_system_race_is_an_answer_not_an_internal_error(node, caplog, monkeypatch):
    """An OSError from the file system (a file that changed while we looked) is the answer to
    that request; it was logged with a traceback as an internal error."""
    n, c = node
    from brasil.node.exportfs import ExportDir

    def racy(self, name):
        raise OSError(errno.EINVAL, "Invalid argument", "fs/link")
    monkeypatch.setattr(ExportDir, "walk", racy)
    with pytest.raises(NinepError, match="fs/link: Invalid argument"):
        await c.stat(f"{L}/fs/x")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# ---- §9: one bad value cannot poison the node ----

async def test_a_nul_in_env_is_refused_at_the_write(node):
    n, c = node
    with pytest.raises(NinepError, match="NUL byte"):
        await c.write(f"{L}/env", b"GOOD=1\nEVIL=a\0b\n")
    assert "GOOD" not in n.env  # nothing half done
    sid = await new_session(c)
    with pytest.raises(NinepError, match="NUL byte"):
        await ctl(c, sid, "env A=\0B")
    await ctl(c, sid, "exec echo fine")
    assert await c.read(f"{L}/{sid}/stdio") == b"fine\n"
    other = await new_session(c)
    with pytest.raises(NinepError, match="NUL byte"):
        await ctl(c, other, "exec echo a\0b")
    assert "running" not in (await c.read(f"{L}/{other}/ctl")).decode()


# ---- §12: commands do not outlive a daemon killed with -9 ----

def pids_of(pattern: str) -> set[int]:
    import subprocess
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return {int(p) for p in r.stdout.split()}


async def test_a_daemon_killed_with_9_takes_its_commands_with_it(tmp_path):
    marker = f"sleep 4{os.getpid() % 1000:03d}"
    async with serve_process(tmp_path) as (proc, address):
        async with await Client.connect(address) as c:
            sid = await new_session(c)
            await ctl(c, sid, "res 2")
            await ctl(c, sid, f"exec {marker} & {marker}")  # a child, and a grandchild
            await wait_for(lambda: len(pids_of(marker)) >= 4, timeout=10)
        proc.kill()
        proc.wait()
        await wait_for(lambda: not pids_of(marker), timeout=10)


# ---- §13: `cluster up` over a running cluster leaves it alone ----

def test_cluster_up_on_a_running_cluster_refuses_and_leaves_it_running(tmp_path):
    import subprocess
    import sys

    def brasil(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args],
                              capture_output=True, text=True, timeout=120)
    d = str(tmp_path / "c")
    assert brasil("cluster", "up", "--depth", "0", "--dir", d).returncode == 0
    try:
        again = brasil("cluster", "up", "--depth", "0", "--dir", d)
        assert again.returncode != 0 and "already has a running cluster" in again.stderr
        r = brasil("cat", "--at", f"unix:{d}/n0.sock", "--secret-file", f"{d}/secret",
                   "/csrv/local/status")
        assert r.returncode == 0 and r.stdout.startswith("n0 "), r.stderr
    finally:
        brasil("cluster", "down", "--dir", d)


# ---- §14: a failing ns bind fails the exec, with the reason ----

async def test_a_bind_that_fails_fails_the_exec(node, tmp_path):
    n, c = node
    from brasil.exec import nsexec
    if nsexec.probe():
        pytest.skip("private mount namespaces are not allowed here")
    sid = await new_session(c)
    await c.write(f"{L}/{sid}/ns", f"bind {tmp_path}/missing {tmp_path}\n")
    with pytest.raises(NinepError, match="ns: bind .*missing.*No such file"):
        await ctl(c, sid, "exec true")
    (tmp_path / "present").mkdir()
    (tmp_path / "present" / "hello").write_text("hi\n")
    (tmp_path / "mnt").mkdir()
    other = await new_session(c)
    await c.write(f"{L}/{other}/ns", f"bind {tmp_path}/present {tmp_path}/mnt\n")
    await ctl(c, other, f"exec cat {tmp_path}/mnt/hello")
    assert await c.read(f"{L}/{other}/stdio") == b"hi\n"
