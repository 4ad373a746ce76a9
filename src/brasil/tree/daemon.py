"""A whole daemon: the node, the 9P server in front of it, and its links up and down the tree."""

from __future__ import annotations

import asyncio
import logging
import os

from ..ninep.auth import SecretAuthenticator
from ..ninep.server import Server
from ..ninep.transport import Address, bound_addresses
from ..node.daemon import Node
from .link import ParentLink
from .registry import Children, JoinFile
from .reserve import Reserver

log = logging.getLogger("brasil.tree")


class Daemon:
    def __init__(self, node: Node, *, secret: bytes | None = None, parent: Address | None = None,
                 trace: bool = False) -> None:
        self.node = node
        self.secret = secret
        self.server = Server(node.root, trace=trace,
                             authenticator=SecretAuthenticator(secret) if secret else None)
        self.children = Children(self)
        node.local.add("join", JoinFile(self.children))
        node.status_sources.append(self.children.status_lines)
        self.parent = ParentLink(self, parent) if parent else None
        node.reserver = Reserver(self)
        self.children.on_lost.append(node.neighbor_lost)
        self.unix_paths: list[str] = []

    async def listen(self, address: Address) -> list[Address]:
        """With a secret, TCP listeners authenticate; a Unix socket (0600) is its owner's alone."""
        listener = await self.server.listen(address, authenticate=address.kind == "tcp")
        got = bound_addresses(listener)
        self.node.addresses += [str(a) for a in got]
        if address.kind == "unix":
            self.unix_paths.append(address.path)
        return got

    def start(self) -> None:
        self.node.start()
        if self.parent is not None:
            self.parent.start()

    async def stop(self) -> None:
        if self.parent is not None:
            await self.parent.stop()
        self.children.close()
        await self.server.close()
        await self.node.shutdown()
        for path in self.unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
