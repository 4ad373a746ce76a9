"""The node daemon through the 9P client: SPEC.md §2–3 on one machine."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess

import pytest

from brasil.ninep.client import Client, dont_touch
from brasil.ninep.constants import ORDWR, OWRITE
from brasil.ninep.errors import NinepError
from fixtures import L, ctl, date_wc, new_session, node_daemon, status_rows, wait_for


async def test_paper_example_1_res_exec_date_gives_four_lines(node):
    n, c = node
    assert await new_session(c) == "0"
    await ctl(c, "0", "res 4")
    await ctl(c, "0", "exec date")
    out = (await c.read(f"{L}/0/stdio")).decode().splitlines()
    assert len(out) == 4 and all(line.split()[-1].isdigit() for line in out), out
    assert (await c.read(f"{L}/0/wait")).decode().split("\n")[:4] == ["0 0", "1 0", "2 0", "3 0"]


async def test_paper_example_2_xsplice_is_date_piped_into_wc(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await c.write(f"{L}/{sid}/0/ctl", "exec date\n")
    await c.write(f"{L}/{sid}/1/ctl", "exec wc\n")
    await ctl(c, sid, "xsplice 0 1")
    got = (await c.read(f"{L}/{sid}/1/stdio")).decode()
    assert got.split() == date_wc()


async def test_every_process_knows_its_node_session_and_sub(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, "env GREETING=hi there")
    await ctl(c, sid, 'exec echo "$BRASIL_NODE $BRASIL_SESSION $BRASIL_RANK/$BRASIL_SIZE '
                      '$BRASIL_SUB $GREETING"')
    lines = sorted((await c.read(f"{L}/{sid}/stdio")).decode().splitlines())
    assert lines == [f"n0 n0:/csrv/local/{sid} 0/2 0 hi there",
                     f"n0 n0:/csrv/local/{sid} 1/2 1 hi there"]


async def test_input_is_broadcast_to_every_sub_session(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 3")
    await ctl(c, sid, "exec wc -l")
    data = b"".join(b"line %d\n" % i for i in range(1000))
    await c.write(f"{L}/{sid}/stdio", data)  # open, write, close: the close is end of file
    counts = (await c.read(f"{L}/{sid}/stdio")).decode().split()
    assert counts == ["1000", "1000", "1000"]


@pytest.mark.parametrize("shape", ["long", "short"])
async def test_mux_rr_partitions_lines_exactly(node, shape):
    n, c = node
    if shape == "long":
        lines = [(b"%d:" % i) + bytes([97 + i % 26]) * 1_000_000 + b"\n" for i in range(12)]
    else:
        lines = [b"short line %d\n" % i for i in range(20000)]
    sid = await new_session(c)
    await ctl(c, sid, "res 4")
    await ctl(c, sid, "mux rr")
    await ctl(c, sid, "exec cat")
    outs = [await c.open(f"{L}/{sid}/{i}/stdout") for i in range(4)]

    async def feed() -> None:
        async with await c.open(f"{L}/{sid}/stdio", OWRITE) as f:
            for i in range(0, len(lines), 3):  # writes that cut records anywhere
                chunk = b"".join(lines[i:i + 3])
                await f.write(chunk[:len(chunk) // 2])
                await f.write(chunk[len(chunk) // 2:])

    results = await asyncio.gather(feed(), *(o.read_all() for o in outs))
    per_sub = [r.splitlines(keepends=True) for r in results[1:]]
    got = [line for sub in per_sub for line in sub]
    assert sorted(got) == sorted(lines)  # nothing lost, split or duplicated
    assert [len(s) for s in per_sub] == [len(lines) // 4] * 4  # round robin


async def test_aggregated_output_interleaves_only_on_record_boundaries(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 4")
    # Each process writes its lines in pieces, so a byte-wise merge would split them.
    await ctl(c, sid, "exec i=0; while [ $i -lt 300 ]; do printf 'sub%s-' $BRASIL_SUB; "
                      "printf 'line%s\\n' $i; i=$((i+1)); done")
    out = (await c.read(f"{L}/{sid}/stdio")).decode().splitlines()
    expected = sorted(f"sub{s}-line{i}" for s in range(4) for i in range(300))
    assert sorted(out) == expected


async def test_mux_hash_sends_equal_keys_to_the_same_sub_session(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 3")
    await ctl(c, sid, "mux hash 2")
    await ctl(c, sid, "exec cat")
    data = b"".join(b"%d key%d\n" % (i, i % 7) for i in range(700))
    outs = [await c.open(f"{L}/{sid}/{i}/stdout") for i in range(3)]
    writer = c.write(f"{L}/{sid}/stdio", data)
    results = await asyncio.gather(writer, *(o.read_all() for o in outs))
    owner: dict[bytes, int] = {}
    for i, out in enumerate(results[1:]):
        for line in out.splitlines():
            key = line.split()[1]
            assert owner.setdefault(key, i) == i, f"{key!r} went to two sub-sessions"
    assert sum(len(r.splitlines()) for r in results[1:]) == 700


async def test_stdin_reaches_end_of_file_when_its_writer_closes(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "exec wc -c")  # no res: one local slot
    await c.write(f"{L}/{sid}/stdin", b"12345")
    assert (await c.read(f"{L}/{sid}/stdout")).split() == [b"5"]
    assert (await c.read(f"{L}/{sid}/wait")) == b"0 0\n"


async def test_a_slow_reader_gets_every_byte(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "exec seq 1 300000")
    expected = subprocess.run(["seq", "1", "300000"], capture_output=True).stdout
    h = hashlib.sha256()
    total = 0
    async with await c.open(f"{L}/{sid}/stdio") as f:
        while True:
            chunk = await f.read(997)  # small reads: the producer outruns us and must wait
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
    assert total == len(expected) and h.digest() == hashlib.sha256(expected).digest()


async def test_unread_output_pauses_the_producer_instead_of_growing_memory(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "exec yes")
    leaf = n.sessions[sid].subs[0]
    limit = n.output_limit
    await wait_for(lambda: len(leaf.stdout.stream) >= limit, timeout=10)
    for _ in range(50):  # keep looking while `yes` would have written megabytes
        await asyncio.sleep(0.01)
        assert len(leaf.stdout.stream) <= limit + 65536
    assert leaf.process is not None and leaf.process.running  # paused, not dead
    await ctl(c, sid, "close")
    await wait_for(lambda: leaf.process.exited.done())


async def test_kill_reaches_the_whole_process_group(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "exec sleep 300 & sleep 301; wait")
    leaf = n.sessions[sid].subs[0]
    pgid = leaf.process.pid

    def members() -> list[int]:
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.append(int(p))
        return out
    await wait_for(lambda: len(members()) >= 3)  # sh and both sleeps
    await ctl(c, sid, "kill")
    await wait_for(lambda: not members())
    status = (await c.read(f"{L}/{sid}/status")).decode().split()
    assert status[3] == "killed" and status[5] == str(128 + 15)


async def test_wait_blocks_until_every_process_has_ended(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, "exec read x; exit 3")
    waiting = asyncio.ensure_future(c.read(f"{L}/{sid}/wait"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await c.write(f"{L}/{sid}/stdio", b"go\n")
    assert (await asyncio.wait_for(waiting, 10)) == b"0 3\n1 3\n"


async def test_status_and_ctl_describe_the_session(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, "exec true")
    await c.read(f"{L}/{sid}/wait")
    rows = await status_rows(c, sid)
    assert [(r[0], r[1], r[3], r[5]) for r in rows] == [("0", "n0", "exited", "0"),
                                                           ("1", "n0", "exited", "0")]
    assert (await c.read(f"{L}/{sid}/ctl")).decode().startswith(f"session {sid} done subs 2")
    assert (await c.read(f"{L}/{sid}/args")) == b"true\n"
    status = (await c.read(f"{L}/status")).decode().splitlines()
    assert status[0].split()[:3] == ["n0", "4", "2"] and status[1].startswith("total 4 2 ")


async def test_errors_are_clear_and_leave_nothing_half_done(node):
    n, c = node
    sid = await new_session(c)
    with pytest.raises(NinepError, match=r"res: not enough slots: asked 999, 4 free in reach"):
        await ctl(c, sid, "res 999")
    assert len(n.free) == 4 and n.sessions[sid].state == "new"
    with pytest.raises(NinepError, match="exec: no-such-program: command not found"):
        await ctl(c, sid, "exec no-such-program --flag")
    with pytest.raises(NinepError, match='unknown command "launch rockets"; expected one of: res'):
        await ctl(c, sid, "launch rockets")
    with pytest.raises(NinepError, match='bad # args to command "xsplice 1"; usage: xsplice A B'):
        await ctl(c, sid, "xsplice 1")
    with pytest.raises(NinepError, match="kill: 'BOGUS' is not a signal"):
        await ctl(c, sid, "kill BOGUS")  # the one signal parser (exec/procgroup), as psignal's
    with pytest.raises(NinepError, match="kill: '99' is not a signal"):
        await ctl(c, sid, "kill 99")
    with pytest.raises(NinepError, match="permission denied"):
        await c.write(f"{L}/arch", "mips\n")
    with pytest.raises(NinepError, match="does not exist"):
        await c.read(f"{L}/fs/../../../etc/passwd")
    assert len(n.free) == 4
    assert (await c.read(f"{L}/arch")).startswith(b"linux")  # still serving


async def test_fs_is_confined_to_its_root_symlinks_included(node, tmp_path):
    n, c = node
    root = tmp_path / "export"
    (root / "sub").mkdir()
    (root / "sub" / "data.txt").write_text("inside\n")
    os.symlink("/etc", root / "out_abs")
    os.symlink("../../", root / "sub" / "out_rel")
    os.symlink("sub/data.txt", root / "in_link")
    assert await c.read(f"{L}/fs/in_link") == b"inside\n"
    for bad in ("out_abs/passwd", "sub/out_rel/etc/passwd"):
        with pytest.raises(NinepError, match="points outside the exported tree"):
            await c.read(f"{L}/fs/{bad}")
    names = sorted(s.name for s in await c.ls(f"{L}/fs"))
    assert names == ["in_link", "out_abs", "sub"]


async def test_fs_read_write_create_rename_remove(node, tmp_path):
    n, c = node
    root = tmp_path / "export"
    async with await c.create(f"{L}/fs/new.txt", 0o644, ORDWR) as f:
        await f.write(b"hello fs\n")
    assert (root / "new.txt").read_bytes() == b"hello fs\n"
    assert await c.read(f"{L}/fs/new.txt") == b"hello fs\n"
    await c.create(f"{L}/fs/dir", 0x80000000 | 0o755, 0)
    assert (root / "dir").is_dir()
    await c.wstat(f"{L}/fs/new.txt", dont_touch(name="renamed.txt"))
    assert (root / "renamed.txt").exists() and not (root / "new.txt").exists()
    await c.remove(f"{L}/fs/renamed.txt")
    assert not (root / "renamed.txt").exists()
    st = await c.stat(f"{L}/fs/dir")
    assert st.mode & 0x80000000


async def test_splice_between_sessions_by_path(node):
    n, c = node
    a = await new_session(c)
    b = await new_session(c)
    await ctl(c, a, "exec seq 3")
    await ctl(c, b, "exec cat")
    await ctl(c, b, f"splice /csrv/local/{a}/0 1 0")
    assert await c.read(f"{L}/{b}/stdio") == b"1\n2\n3\n"
    assert "splice" in (await c.read(f"{L}/{b}/ctl")).decode()


async def test_output_goes_to_the_first_consumer_only(node):
    n, c = node
    sid = await new_session(c)
    await ctl(c, sid, "res 2")
    await ctl(c, sid, "exec echo out")
    await ctl(c, sid, "xsplice 0 1")
    with pytest.raises(NinepError, match="already spliced"):
        await c.read(f"{L}/{sid}/0/stdio")


async def test_env_and_ns_files(node, tmp_path):
    n, c = node
    await c.write(f"{L}/env", "COLOR=blue\n")
    sid = await new_session(c)
    assert b"COLOR=blue\n" in await c.read(f"{L}/{sid}/env")
    with pytest.raises(NinepError, match='env: bad assignment "not an assignment"'):
        await c.write(f"{L}/{sid}/env", "not an assignment\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("from the bind\n")
    dst = tmp_path / "dst"
    dst.mkdir()
    await c.write(f"{L}/{sid}/ns", f"bind {src} {dst}\n")
    with pytest.raises(NinepError, match="mount lines are not supported yet"):
        await c.write(f"{L}/{sid}/ns", f"mount tcp!h!1 {dst}\n")
    await ctl(c, sid, f"exec cat {dst}/f; echo $COLOR")
    assert await c.read(f"{L}/{sid}/stdio") == b"from the bind\nblue\n"
    assert not (dst / "f").exists()  # the bind stayed inside the session's namespace


async def test_idle_sessions_are_reaped_and_release_their_slots(tmp_path):
    async with node_daemon(str(tmp_path), slots=2, idle_timeout=0.2) as (n, addr):
        c = await Client.connect(addr)
        busy = await new_session(c)
        await ctl(c, busy, "exec sleep 30")
        idle = await new_session(c)
        await ctl(c, idle, "res 1")
        assert n.free == []
        await wait_for(lambda: idle not in n.sessions, timeout=10)
        assert busy in n.sessions and n.free == [1]  # a running process keeps its session
        names = [s.name for s in await c.ls(L)]
        assert idle not in names and busy in names
        await c.close()
