"""Issue 15 §8–§11: one group-read or query request may not freeze or bloat a daemon, and
``ptail -f`` may not read through a link that ``fs/`` refuses.

Each test runs a real daemon (``brasil cluster up --depth 0``, a process of its own), attacks
it with one request, and meanwhile checks that another client is answered within a generous
deadline and that the daemon's RSS does not jump.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from brasil.client import group as api
from brasil.ninep.auth import client_auth, load_secret
from brasil.ninep.client import Client
from brasil.ninep.constants import ORDWR
from brasil.ninep.errors import NinepError
from helpers import cli

ANSWERED_WITHIN = 5.0  # seconds: another client's request, while an attack runs
MiB = 1 << 20


class Daemon:
    def __init__(self, d: Path, pid: int) -> None:
        self.d, self.pid = d, pid
        self.export = d / "x" / "n0"

    async def connect(self) -> Client:
        return await Client.connect(f"unix:{self.d}/c/n0.sock",
                                    auth=client_auth(load_secret(f"{self.d}/c/secret")))

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    async def answers(self) -> bool:
        """Whether a new client gets the node's status within ANSWERED_WITHIN seconds."""
        async def ask() -> bytes:
            c = await self.connect()
            try:
                return await c.read("csrv/local/status")
            finally:
                await c.close()
        try:
            return bool(await asyncio.wait_for(ask(), ANSWERED_WITHIN))
        except TimeoutError:
            return False


@pytest.fixture
def node(tmp_path: Path) -> Any:
    r = cli("cluster", "up", "--depth", "0", "--slots", "1", "--dir", str(tmp_path / "c"),
            "--export-root", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr
    pid = int((tmp_path / "c" / "n0.pid").read_text())
    try:
        yield Daemon(tmp_path, pid)
    finally:
        try:  # a daemon an attack froze cannot hear SIGTERM: no grace for it
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        cli("cluster", "down", "--dir", str(tmp_path / "c"))


async def while_running(work: asyncio.Future[Any], node: Daemon) -> None:
    """Another client is answered while ``work`` (the attack) runs."""
    assert not work.done() or work.exception() is None
    assert await node.answers(), "the daemon did not answer another client while the attack ran"


# ---- §8: user patterns are RE2 ----

async def test_a_catastrophic_grep_on_status_does_not_freeze_the_daemon(node: Daemon) -> None:
    c = await node.connect()
    try:
        work = asyncio.ensure_future(api.gread(c, "status", agg="count", grep="(.*?,?)*X"))
        await while_running(work, node)
        r = await asyncio.wait_for(work, 30)
        assert r["value"] == {"nodes": 1, "lines": 0} and not r["errors"]
    finally:
        await c.close()


async def test_a_catastrophic_grep_on_an_exported_file_does_not_stall_the_loop(
        node: Daemon) -> None:
    (node.export / "as").write_text("a" * 27 + "!\n" + "a" * 3 + "\n")
    c = await node.connect()
    try:
        for agg in ("count", "equiv"):  # parsed on a thread, matched where the content is
            work = asyncio.ensure_future(api.gread(c, "fs/as", agg=agg, grep="^(a+)+$"))
            await while_running(work, node)
            r = await asyncio.wait_for(work, 30)
            assert not r["errors"], r
            if agg == "count":
                assert r["value"] == {"nodes": 1, "lines": 1}
            else:
                assert r["groups"][0]["content"] == "aaa\n"
    finally:
        await c.close()


async def test_a_pattern_re2_refuses_is_a_clear_error(node: Daemon) -> None:
    c = await node.connect()
    try:
        with pytest.raises(NinepError, match=r"bad --grep pattern.*\(a\)\\1.*RE2"):
            await api.gread(c, "status", agg="count", grep=r"(a)\1")
        assert await node.answers()
    finally:
        await c.close()


# ---- §9: node sets are matched, never expanded ----

async def test_a_huge_node_set_in_a_query_path_is_matched_without_expanding_it(
        node: Daemon) -> None:
    c = await node.connect()
    before = node.rss()
    try:
        work = asyncio.ensure_future(c.ls("csrv/query/name=x[1-2000000]"))
        await while_running(work, node)
        names = [st.name for st in await asyncio.wait_for(work, 30)]
        assert "n0" not in names and "status" in names
        assert await api.nodes(c, "name=n[0-2000000]") == ["n0"]
        assert await api.nodes(c, "name=m[0-5],n[00-10]") == []  # n00 is not n0
        assert node.rss() < before + 64 * MiB, (before, node.rss())
    finally:
        await c.close()


async def test_a_huge_node_set_in_res_where_is_matched_without_expanding_it(
        node: Daemon) -> None:
    c = await node.connect()
    before = node.rss()
    try:
        sid = (await c.read("csrv/local/clone")).decode().strip()
        work = asyncio.ensure_future(
            c.write(f"csrv/local/{sid}/ctl", "res 1 where name=n[0-3000000] pernode 1\n"))
        await while_running(work, node)
        await asyncio.wait_for(work, 30)
        assert node.rss() < before + 64 * MiB, (before, node.rss())
        await c.write(f"csrv/local/{sid}/ctl", "close\n")
    finally:
        await c.close()


async def test_a_node_set_expression_too_long_is_refused_saying_so(node: Daemon) -> None:
    c = await node.connect()
    try:
        big = ",".join(f"n{i}" for i in range(20000))  # over 64 KiB of text
        sid = (await c.read("csrv/local/clone")).decode().strip()
        with pytest.raises(NinepError, match=r"node set .* is \d+ characters long, over"):
            await c.write(f"csrv/local/{sid}/ctl", f"res 1 where name={big}\n")
        assert await node.answers()
    finally:
        await c.close()


# ---- §10: ptail -f ----

async def lines_of(c: Client, path: str) -> AsyncIterator[str]:
    async for line in api.follow(c, path):
        yield line


async def test_ptail_does_not_follow_a_swapped_in_link_out_of_the_export(
        node: Daemon, tmp_path: Path) -> None:
    secret = tmp_path / "rootonly"
    secret.write_text("SECRET line\n")
    secret.chmod(0o600)
    log = node.export / "log"
    log.write_text("one\n")
    c = await node.connect()
    seen: list[str] = []
    try:
        reader = asyncio.ensure_future(collect(lines_of(c, "fs/log"), seen))
        await appended_until_seen(log, seen)
        link = node.export / ".swap"
        link.symlink_to(secret)
        os.replace(link, log)  # the followed file is now a link to a file outside the export
        with pytest.raises(TimeoutError):  # the unsafe follower printed it within one poll
            await until(lambda: any("SECRET" in ln for ln in seen), "a leak", timeout=3)
        fresh = node.export / ".fresh"
        fresh.write_text("three\n")
        os.replace(fresh, log)  # a regular file again: followed from its start
        await until(lambda: "n0: three" in seen, "the line of the new file")
        assert not any("SECRET" in ln for ln in seen), seen
        reader.cancel()
    finally:
        await c.close()


async def appended_until_seen(path: Path, seen: list[str]) -> None:
    """Lines appended to ``path`` until the follower shows one (it starts at the file's end,
    at a moment we do not know): then it is surely following."""
    for i in range(100):
        with path.open("a") as f:
            f.write(f"tick {i}\n")
        try:
            await until(lambda: any(ln.startswith("n0: tick") for ln in seen), "a tick", 0.5)
            return
        except TimeoutError:
            continue
    raise TimeoutError("the follower never showed an appended line")


async def collect(lines: AsyncIterator[str], into: list[str]) -> None:
    async for line in lines:
        into.append(line)


async def until(cond: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.02)


async def test_ptail_reads_a_huge_file_in_bounded_pieces_as_the_reader_takes_them(
        node: Daemon) -> None:
    c = await node.connect()
    try:
        f = await c.open("csrv/query/follow", ORDWR)
        await f.write(json.dumps({"path": "fs/big"}))  # missing now: read from its start
        before = node.rss()
        with open(node.export / "big", "wb") as big:  # 512 MiB appear at once (sparse)
            big.truncate(512 * MiB)
        first = await asyncio.wait_for(f.read(65536, 0), 30)  # the follower is reading it
        assert first.startswith(b"n0: \0")
        assert await node.answers()
        assert node.rss() < before + 128 * MiB, (before, node.rss())
        await f.close()
    finally:
        await c.close()


# ---- §11: numeric reads stay linear ----

async def test_a_sum_over_a_file_with_no_newline_is_linear_and_bounded(node: Daemon) -> None:
    with open(node.export / "flat", "wb") as flat:  # 256 MiB and not one newline (sparse)
        flat.truncate(256 * MiB)
    (node.export / "nums").write_text("1 2\n" + "7" * (2 * MiB) + "\n3 4")  # one long line
    c = await node.connect()
    before = node.rss()
    try:
        work = asyncio.ensure_future(api.gread(c, "fs/flat", agg="sum"))
        await while_running(work, node)
        r = await asyncio.wait_for(work, 30)
        assert not r["errors"] and r["value"] == [] and r["long_lines"] == 1, r
        assert node.rss() < before + 128 * MiB, (before, node.rss())
        r = await api.gread(c, "fs/nums", agg="sum")
        assert r["value"] == [4, 6] and r["lines"] == 2 and r["long_lines"] == 1, r
    finally:
        await c.close()


# ---- §10's sibling: pcp writes inside the export only ----

@pytest.mark.parametrize("dest", ["fs/out/planted", "fs/out/sub/planted"])
async def test_pcp_does_not_write_through_a_planted_link_out_of_the_export(
        node: Daemon, tmp_path: Path, dest: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (node.export / "out").symlink_to(outside)  # planted by someone who may write the export
    src = tmp_path / "src"
    src.write_text("payload\n")
    c = await node.connect()
    try:
        with pytest.raises(NinepError, match="points outside the exported tree"):
            await api.pcp(c, str(src), dest)
        assert list(outside.iterdir()) == []
        await api.pcp(c, str(src), "fs/in/sub/copied")  # directories inside are still made
        assert (node.export / "in" / "sub" / "copied").read_text() == "payload\n"
        assert [p.name for p in (node.export / "in" / "sub").iterdir()] == ["copied"]
    finally:
        await c.close()
