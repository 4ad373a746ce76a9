"""The parent's side of the tree: children join, are served as ``/csrv/NAME``, and are watched.

A child registers by writing ``join NAME`` to ``/csrv/local/join`` over a connection it opened;
once that write is answered the connection changes direction — we become its client — so a child
behind NAT is reachable without ever being dialed. We read each child's ``heartbeat`` every
second, through one file kept open: that is both the heartbeat (a child silent for 3 s, or whose
connection drops, is gone) and the subtree's resources, which reservations plan with and query
paths prune with.

``heartbeat`` tells what changed in the child's subtree since our last read (tree/beat.py), from
what the child last heard from its own children, not asked afresh: polling ``status`` (which asks
every child below) read each leaf of a 1+8+64 tree twice a second and cost the idle tree a third
of a core, and reading the whole subtree each second cost the root O(N) bytes a second. Each
level adds at most a second of age, which reservations tolerate (they ask for up to a share and
ask the others too). ``status`` itself still asks afresh, for people; ``subtree`` is the whole
report at once (a parent of an older version reads that).
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
from ..ninep.errors import Enotfound, NinepError
from ..ninep.server import current_connection
from ..ninep.ticks import tick
from ..node.daemon import Node
from .beat import WHOLE, Ledger, Replica, moved
from .proxy import RemoteDir, mount

log = logging.getLogger("brasil.tree")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED = {"local", "parent", "query", "status", "ctl", "clone", "gread", "follow", "pcp",
            "merge", "deepmerge"}  # (the last ones name files of query directories)
NO_PATH = "no path to a root yet"  # a join refused for now (9P2000 carries no errno): ask later
POLL_PERIOD = 1.0
POLL_TIMEOUT = 3.0
FRESH_TIMEOUT = 1.0
MAX_REPORT = 64 << 20  # a child's heartbeat, read whole (a 200-byte line for 300,000 nodes)


class Child:
    def __init__(self, name: str, client: Client, mount_point: RemoteDir) -> None:
        self.name = name
        self.client = client
        self.mount = mount_point
        self.report = Replica()  # its subtree's status lines, as its heartbeats told them
        self.poller: asyncio.Task[None] | None = None
        self.gone = False

    @property
    def status(self) -> list[str]:
        return self.report.lines

    def free_slots(self) -> int:
        return self.report.free

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
        self.ledger = Ledger()  # our subtree's lines, each change numbered (our heartbeat)

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
        try:
            beat, whole = await asyncio.wait_for(_open_heartbeat(child.client), POLL_TIMEOUT)
            while not child.gone:
                text = await asyncio.wait_for(_read_from_start(beat), POLL_TIMEOUT)
                self._heard(child, whole + text.decode())
                await tick(POLL_PERIOD)
        except (TimeoutError, NinepError, ConnectionError) as e:
            self._drop(child, f"no heartbeat: {str(e) or f'no answer within {POLL_TIMEOUT:g}s'}")

    def _heard(self, child: Child, report: str) -> None:
        """A child's report, into its replica and on into our own ledger."""
        changed, left = child.report.apply(report)
        for name in changed:
            self.ledger.set(name, child.report.by_name[name])
        self._forget(left, child)

    def _forget(self, names: list[str], child: Child) -> None:
        """Names gone from ``child``'s subtree leave ours, unless another child holds them (a
        node re-homing from one child's subtree to another's is heard in either order)."""
        for name in names:
            if not any(name in c.report.by_name for c in self.by_name.values() if c is not child):
                self.ledger.drop(name)

    def heartbeat_reader(self) -> Callable[[], str]:
        """One reader of our ``heartbeat`` (one open): each call, what changed since its last
        (all of it at the first)."""
        seen = -1

        def report() -> str:
            nonlocal seen
            text, seen = self.heartbeat(seen)
            return text
        return report

    def heartbeat(self, seen: int) -> tuple[str, int]:
        """Our heartbeat for a reader that has seen our changes up to ``seen``: our own line
        counts as changed only when it has moved by a step (tree/beat.py)."""
        line = self.node.status_line()
        if moved(self.ledger.get(self.node.name), line):
            self.ledger.set(self.node.name, line)
        return self.ledger.report(seen)

    def subtree_text(self) -> str:
        """This node's line and its subtree's as last heard (``subtree``: all of it at once)."""
        return "".join(ln + "\n" for ln in [self.node.status_line(), *self.status_lines()])

    def _drop(self, child: Child, why: str = "replaced") -> None:
        if child.gone:
            return
        child.gone = True
        if self.by_name.get(child.name) is child:
            del self.by_name[child.name]
            self.node.csrv.discard(child.name)
            log.warning("child %s lost: %s", child.name, why)
            self._forget(list(child.report.by_name), child)
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
            if c.gone:
                return []
            # What was asked afresh is the newest report too (a label just set is seen by the
            # next query as soon as a status read has shown it).
            self._heard(c, "\n".join([WHOLE, *(ln for ln in text.decode().splitlines()
                                                if not ln.startswith("total "))]))
            return c.status
        out: list[str] = []
        for lines in await asyncio.gather(*(ask(c) for c in children)):
            out += lines
        return out

    def close(self) -> None:
        for child in list(self.by_name.values()):
            self._drop(child, "shutting down")


async def _open_heartbeat(client: Client) -> tuple[File, str]:
    """The child's ``heartbeat``; from a child of an older version, which has none, its whole
    ``subtree`` each time (read as a whole report)."""
    try:
        return await client.open("csrv/local/heartbeat"), ""
    except NinepError as e:  # (errno travels only over 9P2000.u: the text says it too)
        if e.errno != errno.ENOENT and not e.message.endswith(Enotfound[0]):
            raise
    return await client.open("csrv/local/subtree"), WHOLE + "\n"


async def _read_from_start(f: File) -> bytes:
    """A live file's text: from offset 0 (which makes it afresh) to its end; one round trip
    when it fits in one read. A child's report past MAX_REPORT is an error (the child is then
    dropped): a broken or hostile one must not grow its parent's memory without bound."""
    parts = [await f.read(None, 0)]
    size = len(parts[0])
    while len(parts[-1]) == f.iounit:
        if size > MAX_REPORT:
            raise NinepError(f"its heartbeat is over {MAX_REPORT >> 20} MiB (a status line for "
                             "hundreds of thousands of nodes): refused")
        parts.append(await f.read(None, size))
        size += len(parts[-1])
    return b"".join(parts)
