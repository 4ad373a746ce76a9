"""A node in the tree: the 9P server in front of it, and its links up and down the tree.

What it serves (``join``, ``lineage``, ``subtree``) it returns (:meth:`Daemon.files`) rather than
adding it to the node's namespace itself: the composition (``cli/compose.py``) mounts it with the
other services'. The hooks it sets on :class:`Node` (``reserver``, ``cut_through``,
``find_remote``) are typed by the node's protocols (``node/hooks.py``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any, Protocol

from ..ninep.auth import SecretAuthenticator
from ..ninep.errors import NinepError
from ..ninep.server import Server
from ..ninep.synthetic import GeneratedFile, Inode, LiveFile
from ..ninep.transport import Address, bound_addresses, parse_address
from ..node.daemon import Node
from .data import CutThrough, DataEndpoint
from .delegation import RemoteEnd
from .link import ParentLink
from .proxy import Remote
from .registry import Children, JoinFile
from .reserve import Reserver

if TYPE_CHECKING:
    from .discover import Discovery, Options

log = logging.getLogger("brasil.tree")


class Service(Protocol):
    """Something composed onto the daemon (the batch scheduler): stopped before it."""

    async def stop(self) -> None: ...


class Daemon:
    def __init__(self, node: Node, *, secret: bytes | None = None, parent: Address | None = None,
                 discover: Options | None = None, trace: bool = False, **limits: Any) -> None:
        """``discover``: announce this daemon by zeroconf and, without ``parent``, find one that
        way (``discover.py``; needs the secret). ``limits``: the server's caps and deadlines
        (``max_connections``, ``max_total_fids``, ``handshake_timeout``, ``frame_timeout``…;
        see ninep.server.Server)."""
        self.node = node
        self.secret = secret
        self.server = Server(node.root, trace=trace,
                             authenticator=SecretAuthenticator(secret) if secret else None,
                             **limits)
        self.children = Children(node, secret)
        node.status_sources.append(self.children.fresh_status_lines)
        node.status_keys.append(self.children.attr_keys)
        self.discovery: Discovery | None = None
        self.parent: ParentLink | None = None
        if discover is not None:
            if not secret:
                raise ValueError("discovery needs the cluster secret")
            from .discover import Discovery  # (zeroconf: loaded only by daemons that use it)
            self.discovery = Discovery(node.name, secret, discover, self.children,
                                       lambda: self.parent.depth() if self.parent else 0)
        if parent is not None or self.discovery is not None:
            self.parent = ParentLink(node, self.server, secret, parent,
                                     finder=self.discovery if parent is None else None)
            self.parent.own_address = self.advertised
            if self.parent.finder is not None:
                self.children.refusal = self._no_path
        node.reserver = Reserver(node.name, self.children, self.parent)
        self.children.on_lost.append(node.neighbor_lost)
        self.unix_paths: list[str] = []
        self.services: list[Service] = []  # stopped first, last added first
        self.data = DataEndpoint()
        node.find_remote = self.find_remote

    def files(self) -> dict[str, Inode]:
        """What the tree adds to ``/csrv/local``: where children join, and what they read."""
        return {"join": JoinFile(self.children),
                "lineage": GeneratedFile(self.lineage_text),
                "subtree": LiveFile(self.children.subtree_text),
                "heartbeat": LiveFile(opener=self.children.heartbeat_reader)}

    def advertised(self) -> str | None:
        """The address children reach us at: our first TCP listener (a wildcard one under the
        host's name, which other hosts can resolve)."""
        for a in self.node.addresses:
            if a.startswith("data ") or a.startswith("unix:"):
                continue
            addr = parse_address(a)
            if addr.host in ("0.0.0.0", "::"):
                addr = Address("tcp", socket.getfqdn(), addr.port)
            return str(addr)
        return None

    def _no_path(self) -> str | None:
        """A node that finds its parent by zeroconf takes children only while it has a path to
        a root (joined, or a root): two nodes that lost their parents at once, each announcing
        a depth for another second, must not join each other."""
        if self.parent is None or self.parent.state in ("joined", "root"):
            return None
        return "it is looking for a parent itself"

    def lineage_text(self) -> str:
        """Our address, then our ancestors', nearest first: what a child falls back on, in
        order, when its parent (we) is lost."""
        own = self.advertised()
        up = self.parent.lineage() if self.parent is not None else []
        return "".join(a + "\n" for a in ([own] if own else []) + up)

    def find_remote(self, path: str) -> RemoteEnd:
        """``/csrv/NAME/…`` or ``/csrv/parent/…``: the session there, through that neighbour."""
        parts = [p for p in path.split("/") if p][1:]
        name, rest = parts[0], parts[1:]
        if name == "parent":
            client = self.parent.client if self.parent is not None else None
        else:
            child = self.children.by_name.get(name)
            client = child.client if child is not None else None
        if client is None:
            raise NinepError(f"splice: no neighbour {name!r} for {path}")
        return RemoteEnd(Remote(client, f"node {name}"), "/".join(["csrv"] + rest), path)

    async def listen(self, address: Address) -> list[Address]:
        """With a secret, network listeners (TCP, a simulated network's) authenticate; a Unix
        socket (0600) is its owner's alone."""
        listener = await self.server.listen(address, authenticate=address.kind != "unix")
        got = bound_addresses(listener)
        self.node.addresses += [str(a) for a in got]
        if address.kind == "unix":
            self.unix_paths.append(address.path)
        return got

    async def start(self, data_host: str = "127.0.0.1") -> None:
        """Start the data endpoint for direct splices, the idle reaper and the parent link."""
        await self.data.start(data_host)
        self.node.cut_through = CutThrough(self.data)
        self.node.addresses.append(f"data {self.data.address}")
        self.node.start()
        if self.discovery is not None:
            await self.discovery.start(self.node.addresses)
        if self.parent is not None:
            self.parent.start()

    async def stop(self) -> None:
        """Everything: its services, its links, its server and the node's sessions (a second
        call finds nothing left to do)."""
        while self.services:
            await self.services.pop().stop()
        if self.parent is not None:
            await self.parent.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        self.children.close()
        self.data.close()
        await self.server.close()
        await self.node.shutdown()
        for path in self.unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
