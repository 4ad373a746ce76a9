"""Three "hosts" for a test: network namespaces joined by veth through a bridge (needs root
and iproute2; ``needs_netns`` skips a test where they are missing). The namespaces and their
addresses (10.77.x.y inside them only) are the test's own, and are removed at its end."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

needs_netns = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                 reason="needs root and iproute2 to make network namespaces")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def netns_hosts(count: int) -> Iterator[tuple[list[str], list[str]]]:
    """``count`` namespaces at 10.77.<n>.1… on a bridge in one more; yields (names, ips). The
    interfaces carry multicast (mDNS, tests/test_discover.py) and each loopback is up."""
    tag = f"b{os.getpid() % 10000}"
    sw = f"{tag}sw"
    names = [f"{tag}h{i}" for i in range(count)]
    net = f"10.77.{os.getpid() % 200}"
    addrs = [f"{net}.{i + 1}" for i in range(count)]
    made: list[str] = []
    try:
        for ns in [sw] + names:
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "link", "set", "br0", "up")
        for i, (ns, addr) in enumerate(zip(names, addrs)):
            ip("link", "add", f"{tag}v{i}", "netns", ns, "type", "veth", "peer", "name",
               f"{tag}p{i}", "netns", sw)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", f"{tag}v{i}")
            ip("-n", ns, "link", "set", f"{tag}v{i}", "multicast", "on", "up")
            ip("-n", sw, "link", "set", f"{tag}p{i}", "master", "br0")
            ip("-n", sw, "link", "set", f"{tag}p{i}", "up")
        yield names, addrs
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture
def hosts(tmp_path):
    """Three namespaces h0 h1 h2 at 10.77.<n>.1-3/24 on a bridge in a fourth; yields (names, ips)."""
    with netns_hosts(3) as made:
        yield made
