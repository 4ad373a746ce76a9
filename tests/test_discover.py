"""Finding a parent by zeroconf (tree/discover.py, `brasil serve --discover`).

The rule and the parsing of announcements are tested as functions; then real daemons in network
namespaces on one bridge (mDNS multicast crosses it) form one tree with no --parent anywhere, two
started at once elect one root, and a forged announcement pointing at a daemon that does not
know the secret is refused while the node joins the real tree. Needs root and iproute2 for the
namespaces (skipped otherwise, saying so).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from brasil.ninep.auth import client_auth, load_secret
from brasil.ninep.client import Client
from brasil.ninep.transport import Address
from brasil.tree.discover import (
    Announcement,
    BadAnnouncement,
    cluster_id,
    parse,
    rank,
    txt,
)
from netns_hosts import needs_netns, netns_hosts

L = "csrv/local"
NOT_CHILDREN = {"local", "parent", "query"}
CLUSTER = cluster_id(b"a secret of the test's cluster")


def props(**kw: str) -> dict[bytes, bytes | None]:
    base = txt("n1", 1, 0, 4, CLUSTER)
    base.update(kw)
    return {k.encode(): v.encode() for k, v in base.items()}


HOSTS = itertools.count(1)


def ann(name: str, depth: int | None, children: int = 0, fanout: int = 4,
        host: str = "") -> Announcement:
    """An announcement at an address of its own (unless ``host`` says)."""
    n = next(HOSTS)
    return Announcement(name, Address("tcp", host or f"10.0.{n // 250}.{n % 250 + 1}", 5670),
                        depth, children, fanout)


# The announcement and the rule, as functions

def test_the_cluster_id_tells_clusters_apart_and_says_nothing_of_the_secret():
    secret = b"s3cret-value"
    ours = cluster_id(secret)
    assert ours == cluster_id(secret) and len(ours) == 16 and int(ours, 16) >= 0
    assert ours != cluster_id(b"another secret")
    assert secret.hex()[:8] not in ours and "s3cret" not in ours


def test_an_announcement_is_parsed_defensively():
    a = parse(props(), ["10.0.0.7"], 5670, CLUSTER)
    assert a == Announcement("n1", Address("tcp", "10.0.0.7", 5670), 1, 0, 4)
    assert parse(props(depth="none"), ["10.0.0.7"], 5670, CLUSTER).depth is None
    # another cluster's, or none said: ignored without a word
    assert parse(props(cluster="0" * 16), ["10.0.0.7"], 5670, CLUSTER) is None
    assert parse({}, ["10.0.0.7"], 5670, CLUSTER) is None
    # loopback, multicast, IPv6 only: not an address to dial; the next usable one is taken
    assert parse(props(), ["127.0.0.1", "224.0.0.251", "10.0.0.8"], 1, CLUSTER).address.host \
        == "10.0.0.8"
    bad = [(props(), ["127.0.0.1"], 5670, 0), (props(depth="-1"), ["10.0.0.7"], 5670, 0),
           (props(depth="1" * 40), ["10.0.0.7"], 5670, 0),
           (props(children="x"), ["10.0.0.7"], 5670, 0),
           (props(name="../etc"), ["10.0.0.7"], 5670, 0),
           (props(name="parent"), ["10.0.0.7"], 5670, 0),
           (props(v="2"), ["10.0.0.7"], 5670, 0), (props(), ["10.0.0.7"], 0, 0),
           (props(), ["10.0.0.7"], None, 0), (props(), ["10.0.0.7"], 5670, 4096),
           ({b"cluster": CLUSTER.encode(), b"name": b"\xff"}, ["10.0.0.7"], 5670, 0)]
    for p, addrs, port, size in bad:
        with pytest.raises(BadAnnouncement):
            parse(p, addrs, port, CLUSTER, size)


def test_the_rule_nearest_the_root_then_fewest_children_below_the_fanout():
    known = [ann("root", 0, 4, 4), ann("a", 1, 2), ann("b", 1, 1), ann("c", 2, 0),
             ann("new", None), ann("me", 0)]
    assert [a.name for a in rank(known, "me")] == ["b", "a", "c"]
    # never our own subtree, nor a refused address
    assert [a.name for a in rank(known, "me", exclude={"b"})] == ["a", "c"]
    assert [a.name for a in rank(known, "me", refused={known[1].address})] == ["b", "c"]
    # a root (or a node with children) takes only a root whose name sorts before its own
    roots = [ann("r1", 0), ann("r3", 0), ann("x", 1)]
    assert [a.name for a in rank(roots, "r2", merging=True)] == ["r1"]
    assert rank(roots, "r1", merging=True) == []
    # bounded, and one address announced under two names is dialled once
    many = [ann(f"n{i:03d}", 1) for i in range(100)]
    assert len(rank(many, "me")) == 8
    twice = [ann("p", 1, host="10.9.9.9"), ann("q", 1, host="10.9.9.9")]
    assert [a.name for a in rank(twice, "me")] == ["p"]


def test_discover_refuses_a_listener_nobody_else_can_reach(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("a secret of at least sixteen bytes\n")
    secret.chmod(0o600)
    for listen in (["--listen", "127.0.0.1:0"], ["--listen", f"unix:{tmp_path}/s"]):
        p = subprocess.run([sys.executable, "-m", "brasil.cli.main", "serve", "--discover",
                            *listen, "--secret-file", str(secret),
                            "--state-dir", str(tmp_path / "st")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "--discover announces the first TCP listener" in p.stderr, \
            p.stderr
    p = subprocess.run([sys.executable, "-m", "brasil.cli.main", "serve", "--discover",
                        "--discover-wait", "0", "--listen", "10.9.9.9:0",
                        "--secret-file", str(secret), "--state-dir", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "--discover-wait" in p.stderr, p.stderr


# Real daemons on a bridge

async def until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Poll an async (or plain) predicate until true, within a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = predicate()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.1)


class Hosts:
    """Daemons, one per namespace, each logging to its own file; all stopped at the end."""

    def __init__(self, names: list[str], ips: list[str], tmp: Path) -> None:
        self.names, self.ips, self.tmp = names, ips, tmp
        self.procs: list[asyncio.subprocess.Process] = []
        self.secret = tmp / "secret"
        self.secret.write_text("the cluster's secret, shared by its hosts only\n")
        self.secret.chmod(0o600)

    def log(self, i: int) -> str:
        p = self.tmp / f"h{i}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    async def serve(self, i: int, *extra: str, secret: Path | None = None,
                    name: str | None = None) -> None:
        argv = ["ip", "netns", "exec", self.names[i], sys.executable, "-m", "brasil.cli.main",
                "serve", "--name", name or f"h{i}", "--listen", f"{self.ips[i]}:5670",
                "--listen", f"unix:{self.tmp}/h{i}.sock", "--slots", "1",
                "--secret-file", str(secret or self.secret),
                "--state-dir", str(self.tmp / f"h{i}"), *extra]
        with open(self.tmp / f"h{i}.log", "wb") as err:
            self.procs.append(await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=err))

    async def client(self, i: int, secret: Path | None = None) -> Client:
        sock = self.tmp / f"h{i}.sock"
        await until(sock.exists, 20, f"h{i}'s socket")
        return await Client.connect(f"unix:{sock}",
                                    auth=client_auth(load_secret(str(secret or self.secret))))

    async def stop(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.terminate()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                p.kill()
                await p.wait()


@contextlib.asynccontextmanager
async def bridge(count: int, tmp: Path):  # type: ignore[no-untyped-def]
    with netns_hosts(count) as (names, ips):
        h = Hosts(names, ips, tmp)
        try:
            yield h
        finally:
            await h.stop()


async def members(c: Client) -> list[str]:
    text = (await c.read(f"{L}/status")).decode()
    return sorted(ln.split()[0] for ln in text.splitlines() if ln and not ln.startswith("total"))


async def children(c: Client, path: str = "csrv") -> list[str]:
    return sorted(s.name for s in await c.ls(path) if s.name not in NOT_CHILDREN)


@needs_netns
async def test_daemons_on_a_bridge_form_one_tree_with_no_parent_given(tmp_path):
    async with bridge(5, tmp_path) as h:
        disc = ("--discover", "--fanout", "2")
        # A lone node finds nothing: it is a root, and says so.
        await h.serve(0, *disc)
        await until(lambda: "h0 is a root" in h.log(0), 30, "h0 saying it is a root")
        root = await h.client(0)
        # Two at once: both under the root (nearest the root first).
        await h.serve(1, *disc)
        await h.serve(2, *disc)
        await until(lambda: _eq(children(root), ["h1", "h2"]), 30, "h1 and h2 under h0")
        # Two more at once: the root has its fan-out; both go a level down (under h1, fewest
        # children then by name; or one under each when the first one's join was announced
        # before the second chose: a loaded machine starts them a second apart).
        await h.serve(3, *disc)
        await h.serve(4, *disc)
        await until(lambda: _eq(members(root), ["h0", "h1", "h2", "h3", "h4"]), 40,
                    "a tree of 5")
        assert await children(root) == ["h1", "h2"]
        below = {n: await children(root, f"csrv/{n}") for n in ("h1", "h2")}
        assert sorted(below["h1"] + below["h2"]) == ["h3", "h4"], below
        assert below["h1"], below  # h1 sorts first: the first one chose it
        assert (await root.read(f"csrv/h1/{below['h1'][0]}/local/lineage")).decode().split() \
            == [f"{h.ips[int(below['h1'][0][1])]}:5670", f"{h.ips[1]}:5670", f"{h.ips[0]}:5670"]
        for i in range(1, 5):  # (none was given --parent: see Hosts.serve)
            assert "is a root" not in h.log(i), h.log(i)
        await root.close()


async def _eq(got, want) -> bool:  # type: ignore[no-untyped-def]
    return await got == want


@needs_netns
async def test_two_daemons_started_at_once_elect_one_root(tmp_path):
    async with bridge(2, tmp_path) as h:
        await h.serve(1, "--discover")
        await h.serve(0, "--discover")
        one, zero = await h.client(1), await h.client(0)

        async def one_tree() -> Client | None:
            for c in (zero, one):
                if await members(c) == ["h0", "h1"]:
                    return c
            return None
        # Both browse while neither has a path to a root: both become roots, and h1, whose
        # name sorts last, joins h0; or, when one started a second earlier (a loaded machine),
        # the other finds it a root already. Never each other's parent.
        top = await until(one_tree, 40, "one tree of h0 and h1")
        other = one if top is zero else zero
        assert await children(top) == (["h1"] if top is zero else ["h0"])
        assert await children(other) == []
        await one.close()
        await zero.close()


FORGE = textwrap.dedent("""
    import asyncio, socket, sys
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
    from brasil.tree.discover import SERVICE_TYPE

    async def main(ip, port, cluster):
        zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        info = AsyncServiceInfo(
            SERVICE_TYPE, "aaa." + SERVICE_TYPE, addresses=[socket.inet_aton(ip)], port=port,
            properties={"v": "1", "name": "aaa", "depth": "0", "children": "0",
                        "fanout": "64", "cluster": cluster},
            server="aaa-forged.local.")
        await zc.async_register_service(info)
        print("announced", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await zc.async_close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
""")


@needs_netns
async def test_a_forged_announcement_is_refused_and_the_node_joins_the_real_tree(tmp_path):
    async with bridge(4, tmp_path) as h:
        # the real tree: h0 and h1
        await h.serve(0, "--discover")
        await until(lambda: "h0 is a root" in h.log(0), 30, "h0 a root")
        root = await h.client(0)
        await h.serve(1, "--discover")
        await until(lambda: _eq(children(root), ["h1"]), 30, "h1 under h0")
        # a rogue daemon on h2 that does not know the secret, and an announcement copying the
        # cluster's id (public: it is in every announcement) that points at it, claiming a root
        # with no children: the best candidate by the rule
        rogue_secret = tmp_path / "rogue"
        rogue_secret.write_text("not the cluster's secret\n")
        rogue_secret.chmod(0o600)
        await h.serve(2, secret=rogue_secret, name="rogue")
        rogue = await h.client(2, rogue_secret)
        forger = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", h.names[2], sys.executable, "-c", FORGE, h.ips[2], "5670",
            cluster_id(load_secret(str(h.secret))), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=open(tmp_path / "forger.log", "wb"))
        try:
            assert forger.stdout is not None and forger.stdin is not None
            line = await asyncio.wait_for(forger.stdout.readline(), 30)
            assert line == b"announced\n", (tmp_path / "forger.log").read_text()
            # a new node: tries the forged one first, is refused, joins the real tree
            await h.serve(3, "--discover")
            await until(lambda: _eq(members(root), ["h0", "h1", "h3"]), 40,
                        "h3 in the real tree")
            log3 = h.log(3)
            assert f"candidate {h.ips[2]}:5670 (announced as aaa) refused: " \
                   "authentication failed" in log3, log3
            assert log3.index("refused") < log3.index("joined the tree")
            assert "is a root" not in log3
            assert await members(rogue) == ["rogue"]
            assert await children(rogue) == []
            # the real root, which saw a "root" sorting before its name, was not taken either
            await until(lambda: "candidate" in h.log(0), 20, "h0 trying the forged root")
            assert "refused" in h.log(0)
            assert await children(root) == ["h1", "h3"] or \
                await children(root, "csrv/h1") == ["h3"]
        finally:
            assert forger.stdin is not None
            forger.stdin.close()
            try:
                await asyncio.wait_for(forger.wait(), 15)
            except TimeoutError:
                forger.kill()
                await forger.wait()
        await rogue.close()
        await root.close()


@needs_netns
async def test_when_the_root_dies_the_others_find_each_other_and_it_returns_as_a_leaf(tmp_path):
    async with bridge(3, tmp_path) as h:
        await h.serve(0, "--discover")
        await until(lambda: "h0 is a root" in h.log(0), 30, "h0 a root")
        root = await h.client(0)
        await h.serve(1, "--discover")
        await h.serve(2, "--discover")
        await until(lambda: _eq(children(root), ["h1", "h2"]), 30, "h1 and h2 under h0")
        await root.close()
        one, two = await h.client(1), await h.client(2)
        h.procs[0].kill()  # no goodbye: its announcement stays in the others' caches
        await h.procs[0].wait()
        # Their lineage is only h0, which is gone: they browse again. They never take each
        # other (a node without a path to a root takes no children): one becomes a root and the
        # other joins it, either found as a root or merging into the root that sorts first.

        async def one_tree() -> Client | None:
            for c in (one, two):
                if await members(c) == ["h1", "h2"]:
                    return c
            return None
        top = await until(one_tree, 60, "h1 and h2 in one tree")
        name = "h1" if top is one else "h2"
        assert f"{name} is a root" in h.log(int(name[1]))
        assert await children(top) == ["h2" if top is one else "h1"]
        # h0 comes back: a leaf, under the root there is now (nearest the root).
        await h.serve(0, "--discover")
        await until(lambda: _eq(members(top), ["h0", "h1", "h2"]), 40, "h0 back, in the tree")
        assert "h0" in await children(top)
        await one.close()
        await two.close()
