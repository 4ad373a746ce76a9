"""Finding a parent by zeroconf (``brasil serve --discover``): mDNS/DNS-SD, through python-zeroconf.

Every daemon started with ``--discover`` announces its TCP listener as a service of type
``_brasil._tcp.local.`` (instance: the node's name), with these TXT keys:

    v=1            the format
    name=NAME      the node's name in the tree
    depth=N|none   0 for a root, its ancestors' count once joined; ``none`` while it looks
    children=N     its children now
    fanout=N       the children it wants at most (``--fanout``)
    cluster=ID     16 hex digits of HMAC-SHA256(secret, a fixed label): tells this cluster's
                   announcements from other clusters' without saying anything of the secret

The TXT is kept up to date, at most once a second. Without ``--parent``, a daemon browses for
``--discover-wait`` seconds, then ranks what it heard of its own cluster (the rule,
:func:`rank`): only nodes with a path to a root (a depth), below their fan-out, never itself nor
a node of its own subtree, nearest to the root first, then fewest children, then by name; at
most :data:`MAX_CANDIDATES`. A node that is or was a root, or that has children, takes only a
root whose name sorts before its own: two daemons started at once both become roots, and the one
whose name sorts last joins the other (there is no circle in "sorts before"). The candidates are
dialled in turn through the parent link (``link.py``), which authenticates both ways with the
cluster secret as with ``--parent``: an announcement is a hint, never trusted; whoever cannot
prove the secret is logged with its address and skipped (for :data:`REFUSED_FOR` seconds), and
the link refuses a parent whose lineage holds our own address (a node of our subtree). A
discovered node takes children only while it is joined or a root (``join`` is refused, EAGAIN,
while it looks for a parent itself): two nodes that lost their parents at once must not join
each other on the strength of a depth announced a second ago. Nothing
found, or none accepted: the node is a root and says so in one line; it joins a tree later when
a root sorting before it is announced. Once joined, a lost parent is replaced along the lineage
as with ``--parent``; the link browses again only when every ancestor has failed.

Everything an announcement says is bounded and checked: TXT of at most :data:`MAX_TXT` bytes,
names as the tree's, numbers in range, IPv4 addresses that are not loopback, multicast or
unspecified; a bad one is ignored with a rate-limited log line. At most :data:`MAX_KNOWN`
announcements are kept and :data:`MAX_LOOKUPS` looked up at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ..ninep.ratelimit import RateLimited
from ..ninep.transport import Address, parse_address
from .registry import NAME, RESERVED, Children

log = logging.getLogger("brasil.tree.discover")
limited = RateLimited(log)

SERVICE_TYPE = "_brasil._tcp.local."
CLUSTER_LABEL = b"brasil zeroconf cluster id, v1"  # HMAC'd under the secret: the cluster id
VERSION = "1"
DEFAULT_WAIT = 2.0     # seconds of browsing before choosing
MAX_WAIT = 60.0
MAX_CANDIDATES = 8     # dialled in turn, at most, per search
MAX_KNOWN = 256        # announcements kept
MAX_LOOKUPS = 16       # announcements being resolved at once
MAX_TXT = 512          # bytes of an announcement's TXT record
MAX_ADDRESSES = 4      # of an announcement's addresses, looked at
MAX_DEPTH = 1000
MAX_COUNT = 1_000_000  # children, fan-out
LOOKUP_MS = 1500
UPDATE_PERIOD = 1.0    # the TXT is re-announced at most this often, when it changed
REFUSED_FOR = 60.0     # a candidate that failed is skipped this long
REFUSED_SOON = 3.0     # … or this long, when it had no path to a root yet


def cluster_id(secret: bytes) -> str:
    """What every node of a cluster announces: an HMAC of a fixed label under the secret, cut to
    64 bits (it tells clusters apart; it helps nobody guess the secret, nor proves anything)."""
    return hmac.new(secret, CLUSTER_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Options:
    """``--discover-wait`` and ``--fanout``."""

    wait: float = DEFAULT_WAIT
    fanout: int = 32


@dataclass(frozen=True)
class Announcement:
    name: str
    address: Address
    depth: int | None  # None: not joined to a tree (yet)
    children: int
    fanout: int


class BadAnnouncement(ValueError):
    pass


class DiscoverError(OSError):
    """Discovery cannot start here (said in one line, as an OSError is)."""


def txt(name: str, depth: int | None, children: int, fanout: int, cluster: str) -> dict[str, str]:
    return {"v": VERSION, "name": name, "depth": "none" if depth is None else str(depth),
            "children": str(children), "fanout": str(fanout), "cluster": cluster}


def _number(props: dict[str, str], key: str, top: int) -> int:
    text = props.get(key, "")
    if not (text.isascii() and text.isdigit() and len(text) <= 7) or int(text) > top:
        raise BadAnnouncement(f"{key}={text[:16]!r}")
    return int(text)


def parse(properties: dict[bytes, bytes | None], addresses: Iterable[str], port: int | None,
          cluster: str, text_size: int = 0) -> Announcement | None:
    """An announcement's content, checked; None when it is another cluster's (or says none,
    as another program's announcement of our service type might): ignored without a word.
    Raises :class:`BadAnnouncement`, saying what is wrong, for anything malformed."""
    if text_size > MAX_TXT:
        raise BadAnnouncement(f"TXT of {text_size} bytes (at most {MAX_TXT})")
    props: dict[str, str] = {}
    for k, v in list(properties.items())[:16]:
        try:
            props[k.decode("ascii")] = (v or b"").decode("ascii")
        except UnicodeDecodeError:
            raise BadAnnouncement("TXT not ASCII") from None
    if props.get("cluster") != cluster:
        return None
    if props.get("v") != VERSION:
        raise BadAnnouncement(f"v={props.get('v', '')[:16]!r}")
    name = props.get("name", "")
    if not NAME.fullmatch(name) or name in RESERVED:
        raise BadAnnouncement(f"name={name[:64]!r}")
    depth = None if props.get("depth") == "none" else _number(props, "depth", MAX_DEPTH)
    children = _number(props, "children", MAX_COUNT)
    fanout = _number(props, "fanout", MAX_COUNT)
    if not (isinstance(port, int) and 0 < port < 65536):
        raise BadAnnouncement(f"port {port!r}")
    for a in list(addresses)[:MAX_ADDRESSES]:
        try:
            ip = ipaddress.IPv4Address(a)
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_multicast or ip.is_unspecified or ip.is_reserved):
            return Announcement(name, Address("tcp", str(ip), port), depth, children, fanout)
    raise BadAnnouncement("no usable IPv4 address")


def rank(known: Iterable[Announcement], own: str, *, exclude: Collection[str] = (),
         refused: Collection[Address] = (), merging: bool = False) -> list[Announcement]:
    """The rule: candidates with a depth (a path to a root), below their fan-out, not ourselves,
    not of our subtree (``exclude``), not refused lately; nearest to the root, then fewest
    children, then by name. ``merging`` (we are or were a root, or have children): only roots
    whose name sorts before ours."""
    ok = [a for a in known if a.depth is not None and a.children < a.fanout and a.name != own
          and a.name not in exclude and a.address not in refused
          and (not merging or (a.depth == 0 and a.name < own))]
    ok.sort(key=lambda a: (a.depth, a.children, a.name))
    seen: set[Address] = set()
    out = []
    for a in ok:  # one node announced under two instance names is tried once
        if a.address not in seen:
            seen.add(a.address)
            out.append(a)
    return out[:MAX_CANDIDATES]


def announced_ips(listen: Address) -> list[str]:
    """The IPv4 addresses to announce for our listener: its own, or, for a wildcard one, every
    interface's but loopback."""
    if listen.host in ("0.0.0.0", ""):
        import ifaddr  # zeroconf's own dependency
        ips = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
               if isinstance(ip.ip, str)]
    else:
        try:
            ips = [str(ipaddress.IPv4Address(listen.host))]
        except ValueError:
            ips = [socket.gethostbyname(listen.host)]
    return [ip for ip in ips if not ipaddress.IPv4Address(ip).is_loopback][:MAX_ADDRESSES]


class Discovery:
    """Our announcement, kept up to date, and what we hear of others': the parent link's
    :class:`~brasil.tree.link.Finder`."""

    def __init__(self, name: str, secret: bytes, options: Options, children: Children,
                 depth: Callable[[], int | None]) -> None:
        self.name = name
        self.cluster = cluster_id(secret)
        self.options = options
        self.children = children
        self.depth = depth  # ours, as the parent link knows it (None: not joined)
        self.known: dict[str, Announcement] = {}  # by instance name
        self.refused_until: dict[Address, float] = {}
        self.was_root = False
        self._searched = False
        self._merge_now = False
        self.zc: AsyncZeroconf | None = None
        self.info: AsyncServiceInfo | None = None
        self.browser: AsyncServiceBrowser | None = None
        self.started = 0.0
        self._looking: set[str] = set()
        self._again: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._merge = asyncio.Event()
        self._ips: list[str] = []
        self._port = 0

    # Announcing

    def _txt(self) -> dict[str, str]:
        return txt(self.name, self.depth(), len(self.children.by_name), self.options.fanout,
                   self.cluster)

    def _service(self, props: dict[str, str]) -> AsyncServiceInfo:
        return AsyncServiceInfo(SERVICE_TYPE, self.info.name if self.info else
                                f"{self.name}.{SERVICE_TYPE}",
                                addresses=[socket.inet_aton(ip) for ip in self._ips],
                                port=self._port, properties=props,
                                server=f"{self.name}-brasil.local.")

    async def start(self, addresses: list[str]) -> None:
        """Announce our first TCP listener (of the node's ``addresses``) and start browsing."""
        tcp = [parse_address(a) for a in addresses if not a.startswith(("data ", "unix:"))]
        if not tcp:
            raise DiscoverError("--discover: no TCP listener to announce")
        self._ips, self._port = announced_ips(tcp[0]), tcp[0].port
        if not self._ips:
            raise DiscoverError(f"--discover: {tcp[0]} has no address other hosts can reach")
        try:
            self.zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        except OSError as e:
            raise DiscoverError(f"--discover: cannot start mDNS: {e}") from e
        self.started = time.monotonic()
        self.browser = AsyncServiceBrowser(self.zc.zeroconf, SERVICE_TYPE,
                                           handlers=[self._changed])
        self._spawn(self._announce())
        log.info("discovery: announcing %s at %s:%d (%s, cluster %s)", self.name,
                 ",".join(self._ips), self._port, SERVICE_TYPE, self.cluster)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self) -> None:
        """Register, then re-announce the TXT when it changed, at most once a second; and see
        whether a root should look again (a refused candidate may be tried again)."""
        assert self.zc is not None
        props = self._txt()
        self.info = self._service(props)
        await self.zc.async_register_service(self.info, allow_name_change=True)
        while True:
            await asyncio.sleep(UPDATE_PERIOD)
            now = self._txt()
            if now != props:
                props = now
                self.info = self._service(props)
                await self.zc.async_update_service(self.info)
            if self._merge_candidates():
                self._merge.set()

    # Hearing

    def _changed(self, zeroconf: Any, service_type: str, name: str,
                 state_change: ServiceStateChange) -> None:
        """The browser's callback (on the event loop): look an announcement up, or forget it."""
        if self.info is not None and name == self.info.name:
            return
        if state_change is ServiceStateChange.Removed:
            self.known.pop(name, None)
            return
        if name in self._looking:
            self._again.add(name)
        elif len(self._looking) >= MAX_LOOKUPS:
            limited.warning("lookups", "discovery: %d announcements being looked up; %r "
                            "ignored", len(self._looking), name[:80])
        else:
            self._looking.add(name)
            self._spawn(self._lookup(name))

    async def _lookup(self, name: str) -> None:
        assert self.zc is not None
        try:
            while True:
                self._again.discard(name)
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if await info.async_request(self.zc.zeroconf, LOOKUP_MS):
                    self._heard(name, info)
                if name not in self._again:
                    return
        except Exception as e:  # noqa: BLE001 - untrusted input must not end discovery
            limited.warning("lookup", "discovery: looking up %r failed: %s", name[:80], e)
        finally:
            self._looking.discard(name)

    def _heard(self, name: str, info: AsyncServiceInfo) -> None:
        try:
            a = parse(info.properties, info.parsed_addresses(IPVersion.V4Only), info.port,
                      self.cluster, len(info.text or b""))
        except BadAnnouncement as e:
            limited.warning("bad", "discovery: ignoring the announcement %r: bad %s",
                            name[:80], e)
            self.known.pop(name, None)
            return
        if a is None:
            self.known.pop(name, None)
            return
        if name not in self.known and len(self.known) >= MAX_KNOWN:
            limited.warning("full", "discovery: %d announcements known; %r ignored", MAX_KNOWN,
                            name[:80])
            return
        self.known[name] = a
        if self._merge_candidates():
            self._merge.set()

    # Choosing (the link's Finder)

    def _refused(self) -> set[Address]:
        now = time.monotonic()
        for addr in [a for a, t in self.refused_until.items() if t <= now]:
            del self.refused_until[addr]
        return set(self.refused_until)

    def _subtree(self) -> set[str]:
        return {ln.split()[0] for ln in self.children.status_lines() if ln.split()}

    def _rank(self) -> list[Announcement]:
        return rank(self.known.values(), self.name, exclude=self._subtree(),
                    refused=self._refused(),
                    merging=self.was_root or bool(self.children.by_name))

    def _merge_candidates(self) -> bool:
        return self.was_root and self.depth() == 0 and bool(self._rank())

    async def find(self) -> list[Address]:
        """Browse for the wait (counted from the start, the first time), then the candidates."""
        if self._merge_now:  # a root that heard of a root sorting first: known already
            self._merge_now = False
        elif self._searched:
            await asyncio.sleep(self.options.wait)
        else:
            await asyncio.sleep(max(self.started + self.options.wait - time.monotonic(), 0))
        self._searched = True
        found = self._rank()
        heard = len(self.known)
        if found:
            log.info("discovery: %d node(s) of this cluster heard; trying %s", heard,
                     ", ".join(f"{a.name} at {a.address} (depth {a.depth}, {a.children} "
                               f"children)" for a in found))
        else:
            log.info("discovery: %d node(s) of this cluster heard, none to join", heard)
        return [a.address for a in found]

    def refused(self, address: Address, why: str, soon: bool = False) -> None:
        names = sorted({a.name for a in self.known.values() if a.address == address})
        skip = REFUSED_SOON if soon else REFUSED_FOR
        log.warning("discovery: candidate %s (announced as %s) refused: %s; skipped for %gs",
                    address, ", ".join(names) or "?", why, skip)
        if len(self.refused_until) < MAX_KNOWN:
            self.refused_until[address] = time.monotonic() + skip

    async def merge_wanted(self) -> None:
        """We are a root: returns once a root whose name sorts before ours is announced."""
        self.was_root = True
        while True:
            self._merge.clear()
            if self._merge_candidates():
                self._merge_now = True
                return
            await self._merge.wait()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.browser is not None:
            await self.browser.async_cancel()
        if self.zc is not None:
            try:  # the goodbye is a courtesy: never hold the daemon's stop up for it
                await asyncio.wait_for(self.zc.async_close(), 5)
            except (TimeoutError, OSError) as e:
                log.warning("discovery: closing: %s", e or "timed out")
