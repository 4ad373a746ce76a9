"""The parent's side of the tree: children join, are served as ``/csrv/NAME``, and are watched.

A child registers by writing ``join NAME`` to ``/csrv/local/join`` over a connection it opened;
once that write is answered the connection changes direction — we become its client — so a child
behind NAT is reachable without ever being dialed. We read each child's ``subtree`` every second,
through one file kept open: that is both the heartbeat (a child silent for 3 s, or whose
connection drops, is gone) and the subtree's resources, which reservations plan with.

``subtree`` is the child's own status line and what it last heard from its children, not asked
afresh: polling ``status`` (which asks every child below) read each leaf of a 1+8+64 tree twice a
second and cost the idle tree a third of a core; each level adds at most a second of age, which
reservations tolerate (they ask for up to a share and ask the others too). ``status`` itself
still asks afresh, for people.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections.abc import Awaitable, Callable

from ..ninep.auth import client_auth
from ..ninep.client import Client, File
from ..ninep.ctl import CommandTable, CtlFile
from ..ninep.errors import NinepError
from ..ninep.server import current_connection
from ..node.daemon import Node
from .proxy import RemoteDir, mount

log = logging.getLogger("brasil.tree")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED = {"local", "parent", "query", "status", "ctl", "clone", "gread", "follow", "pcp",
            "merge", "deepmerge"}  # (the last ones name files of query directories)
NO_PATH = "no path to a root yet"  # a join refused for now (9P2000 carries no errno): ask later
POLL_PERIOD = 1.0
POLL_TIMEOUT = 3.0
FRESH_TIMEOUT = 1.0


class Child:
    def __init__(self, name: str, client: Client, mount_point: RemoteDir) -> None:
        self.name = name
        self.client = client
        self.mount = mount_point
        self.status: list[str] = []  # its subtree's status lines, total line excluded
        self.poller: asyncio.Task[None] | None = None
        self.gone = False

    def free_slots(self) -> int:
        return sum(int(ln.split()[2]) for ln in self.status if len(ln.split()) > 2)

    def attr_keys(self) -> set[str]:
        return {w.partition("=")[0] for ln in self.status for w in ln.split()[6:] if "=" in w}


class JoinFile(CtlFile):
    commands = CommandTable()

    def __init__(self, children: Children) -> None:
        super().__init__(mode=0o200)
        self.children = children

    @commands.command("join NAME")
    def join(self, args: list[str]) -> None:
        conn = current_connection.get()
        if conn is None:
            raise NinepError("join: must be written over a 9P connection")
        self.children.check_name(args[0])
        why = self.children.refusal()
        if why is not None:
            raise NinepError(f"join: {self.children.node.name} has {NO_PATH}: {why}",
                             errno.EAGAIN)
        name = args[0]
        conn.hand_over_after_reply(
            lambda transport, rest: self.children.adopt(name, transport, rest, conn.peer))


class Children:
    def __init__(self, node: Node, secret: bytes | None) -> None:
        self.node = node
        self.secret = secret
        self.by_name: dict[str, Child] = {}
        self.on_lost: list[Callable[[str], None]] = []
        # why joins are refused now, if they are (a discovered node without a path to a root)
        self.refusal: Callable[[], str | None] = lambda: None
        self._adopting: set[asyncio.Task[None]] = set()

    def check_name(self, name: str) -> None:
        if not NAME.fullmatch(name) or name in RESERVED:
            raise NinepError(f'join: bad node name "{name}"; use letters, digits, ".", "_" or '
                             f"\"-\", not {', '.join(sorted(RESERVED))}")
        if name == self.node.name:
            raise NinepError(f'join: "{name}" is this node\'s own name')

    def adopt(self, name: str, transport: asyncio.Transport, rest: bytes, peer: str) -> None:
        task = asyncio.ensure_future(self._adopt(name, transport, rest, peer))
        self._adopting.add(task)  # (a task nobody holds may be collected before it ends)
        task.add_done_callback(self._adopting.discard)

    async def _adopt(self, name: str, transport: asyncio.Transport, rest: bytes, peer: str) -> None:
        secret = self.secret
        try:
            client = await asyncio.wait_for(Client.adopt(
                transport, rest, f"child {name}", auth=client_auth(secret) if secret else None), 10)
            mount_point = await mount(client, "csrv", name, f"node {name}", ("down", name))
        except (TimeoutError, NinepError, ConnectionError) as e:
            log.warning("child %s (%s): could not reach back: %s", name, peer, e)
            transport.abort()
            return
        old = self.by_name.get(name)
        if old is not None:
            log.info("child %s: re-registered; dropping its old link", name)
            self._drop(old)
        child = Child(name, client, mount_point)
        self.by_name[name] = child
        csrv = self.node.csrv
        csrv.discard(name)
        csrv.add(name, mount_point)
        client.on_lost.append(lambda: self._drop(child, "connection lost"))
        child.poller = asyncio.ensure_future(self._poll(child))
        log.info("child %s joined from %s", name, peer)

    async def _poll(self, child: Child) -> None:
        beat = None
        while not child.gone:
            try:
                if beat is None:
                    beat = await asyncio.wait_for(child.client.open("csrv/local/subtree"),
                                                  POLL_TIMEOUT)
                text = await asyncio.wait_for(_read_from_start(beat), POLL_TIMEOUT)
            except (TimeoutError, NinepError, ConnectionError) as e:
                self._drop(child, f"no heartbeat: {e or 'timed out'}")
                return
            child.status = [ln for ln in text.decode().splitlines() if ln]
            await asyncio.sleep(POLL_PERIOD)

    def subtree_text(self) -> str:
        """This node's line and its subtree's as last heard (``subtree``, read by our parent)."""
        return "".join(ln + "\n" for ln in [self.node.status_line(), *self.status_lines()])

    def _drop(self, child: Child, why: str = "replaced") -> None:
        if child.gone:
            return
        child.gone = True
        if self.by_name.get(child.name) is child:
            del self.by_name[child.name]
            self.node.csrv.discard(child.name)
            log.warning("child %s lost: %s", child.name, why)
            for cb in self.on_lost:
                cb(child.name)
        if child.poller is not None and child.poller is not asyncio.current_task():
            child.poller.cancel()
        child.client.abort()

    def attr_keys(self) -> set[str]:
        keys: set[str] = set()
        for c in self.by_name.values():
            keys |= c.attr_keys()
        return keys

    def status_lines(self) -> list[str]:
        """The subtree as last polled (what reservations plan with)."""
        return [ln for c in self.by_name.values() for ln in c.status]

    def fresh_status_lines(self) -> list[str] | Awaitable[list[str]]:
        """The subtree now: every child asked in parallel; one that is slow to answer is shown
        as last polled rather than holding up the whole read. No children: nothing to wait for."""
        if not self.by_name:
            return []
        return self._fresh(list(self.by_name.values()))

    async def _fresh(self, children: list[Child]) -> list[str]:

        async def ask(c: Child) -> list[str]:
            try:
                text = await asyncio.wait_for(c.client.read("csrv/local/status"), FRESH_TIMEOUT)
            except (TimeoutError, NinepError, ConnectionError):
                return c.status
            c.status = [ln for ln in text.decode().splitlines() if ln and not ln.startswith("total ")]
            return c.status
        out: list[str] = []
        for lines in await asyncio.gather(*(ask(c) for c in children)):
            out += lines
        return out

    def close(self) -> None:
        for child in list(self.by_name.values()):
            self._drop(child, "shutting down")


async def _read_from_start(f: File) -> bytes:
    """A live file's text: from offset 0 (which makes it afresh) to its end; one round trip
    when it fits in one read."""
    parts = [await f.read(None, 0)]
    while len(parts[-1]) == f.iounit:
        parts.append(await f.read(None, sum(len(p) for p in parts)))
    return b"".join(parts)
