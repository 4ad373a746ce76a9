"""The child's side of the tree: dial the parent, authenticate, register, and keep at it.

Two connections, both opened by us: on the first we are the parent's client, and its ``/csrv``
becomes our ``/csrv/parent``; on the second we write ``join NAME`` and, once that is answered,
serve our own namespace over it to the parent. If either drops (or the parent stops polling our
``subtree``, its heartbeat), ``/csrv/parent`` goes away and we join again, serving locally all
along.

Every node knows the addresses of its ancestors: once joined it reads its parent's
``/csrv/local/lineage`` (the parent's address, then the parent's ancestors), which makes our own
lineage. When the parent is lost we join the nearest live ancestor (the grandparent first, then
up), so the loss of an interior node costs only that node: its subtree reappears under the next
one up within a few seconds. A lost parent that returns is tried last: the subtree stays where it
moved (it will not bounce back and forth), and the returned node rejoins as a leaf.

A link given a :class:`Finder` instead of an address (``brasil serve --discover``, ``discover.py``)
starts by browsing: it dials the candidates the finder ranks, in turn, through the same code;
when none accepts it the node is a root, until the finder says a root whose name sorts before
ours is announced. Once joined it re-homes along its lineage as above, and browses again only
when every ancestor has failed. Whichever way a parent was found, one whose lineage holds our own
address is in our subtree: joining it would make a circle, and it is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from ..lifecycle import step
from ..ninep.auth import client_auth
from ..ninep.client import Client
from ..ninep.constants import OWRITE
from ..ninep.errors import NinepError
from ..ninep.messages import Topen, Twrite
from ..ninep.ratelimit import RateLimited
from ..ninep.server import Connection, Server
from ..ninep.synthetic import Inode
from ..ninep.ticks import STALLED, tick
from ..ninep.transport import Address, parse_address
from ..node.daemon import Node
from .link_lifecycle import LINK
from .proxy import mount
from .registry import NO_PATH

log = logging.getLogger("brasil.tree")
limited = RateLimited(log)  # a daemon starved for minutes says so a few times a minute

HEARTBEAT = 1.0
HEARTBEAT_TIMEOUT = 2.5
LINEAGE_REFRESH = 5.0  # seconds between two reads of a joined parent's lineage
JOIN_TIMEOUT = 2.0  # for one attempt to join one ancestor (a frozen one must not hold us up)
# A join lost sooner than this after it was answered did not hold (a parent that cannot
# authenticate back to us drops the connection at once): it is waited after, as a failure.
SETTLED = HEARTBEAT_TIMEOUT


class NotYet(NinepError):
    """A parent that proved the secret refused our join for now: it has no path to a root."""


class Finder(Protocol):
    """Where a discovered link finds its candidates (``discover.Discovery``)."""

    async def find(self) -> list[Address]:
        """Candidate parents, best first (after browsing for a while); none: be a root."""
        ...

    def refused(self, address: Address, why: str, soon: bool = False) -> None:
        """A candidate that could not be joined (wrong secret, unreachable): skip it a while;
        ``soon``: it said to ask again soon (it has no path to a root yet)."""
        ...

    async def merge_wanted(self) -> None:
        """Returns when a root should look for a parent again (a root sorting first appeared)."""
        ...


class Attempt:
    """One attempt at joining one ancestor: the two connections, the one the parent took over,
    and the first sign of its loss (whichever comes first ends the attempt)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.up: Client | None = None       # we are the parent's client on it
        self.reverse: Client | None = None  # we wrote join on it; then the parent's
        self.served: Connection | None = None  # the reverse one, once we serve the parent on it
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pardoned = 0.0  # (loop time) silence is counted from here at the earliest

    def mark(self, why: str) -> None:
        if not self.lost.done():
            self.lost.set_result(why)

    def take(self, transport: asyncio.Transport, rest: bytes) -> None:
        """The reverse connection, our join answered: from now on we serve the parent on it."""
        conn = self.server.protocol(self.server.authenticator)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        conn.on_lost.append(lambda: self.mark("parent's connection to us lost"))
        if rest:
            conn.data_received(rest)
        self.served = conn

    def silent_for(self) -> float:
        """Seconds since the parent last polled us (0 before it took our connection over), on
        the loop's clock, as ``last_heard`` is."""
        if self.served is None:
            return 0.0
        return asyncio.get_running_loop().time() - max(self.served.last_heard, self.pardoned)

    def pardon(self, late: float) -> None:
        """We stood still ourselves for ``late`` seconds: the parent's polls sent meanwhile are
        unread in our socket, and its silence is counted without them. (Only without them: a
        daemon starved at every check still finds a dead parent, later.)"""
        heard = self.served.last_heard if self.served is not None else 0.0
        now = asyncio.get_running_loop().time()  # (a poll read just now needs no pardon)
        self.pardoned = min(now, max(self.pardoned, heard) + late)

    def abort(self) -> None:
        for c in (self.up, self.reverse):
            if c is not None:
                c.abort()
        if self.served is not None:
            self.served.abort()


class ParentLink:
    """The child's side of one link: its state is :data:`link_lifecycle.LINK`'s, and every
    change of it is a step along that table."""

    def __init__(self, node: Node, server: Server, secret: bytes | None,
                 address: Address | None, finder: Finder | None = None) -> None:
        """``address``: the parent given (``--parent``); or ``finder``, which finds one."""
        if (address is None) == (finder is None):
            raise ValueError("a parent link needs an address or a finder, not both")
        self.node = node
        self.server = server  # what serves our namespace, to the parent too
        self.secret = secret
        self.finder = finder
        # the parent we are joined to, or trying (a discovered link: none until found)
        self.address = address if address is not None else Address("tcp", "0.0.0.0", 0)
        # nearest first: parent, grandparent, …
        self.ancestors: list[Address] = [address] if address is not None else []
        self.own_address: Callable[[], str | None] = lambda: None  # (the daemon's, for circles)
        self.client: Client | None = None
        self.task: asyncio.Task[None] | None = None
        self.state = "idle"
        self.joined = asyncio.Event()  # set while the state is joined (for whoever waits)

    def _step(self, event: str) -> None:
        self.state = step(LINK, self.state, event, f"the link to {self.address}")
        if self.state == "joined":
            self.joined.set()
        else:
            self.joined.clear()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    def lineage(self) -> list[str]:
        """Our ancestors' addresses, nearest first (what our children add us in front of)."""
        return [str(a) for a in self.ancestors] if self.joined.is_set() else []

    async def _connect(self) -> Client:
        return await Client.connect(self.address,
                                    auth=client_auth(self.secret) if self.secret else None,
                                    timeout=JOIN_TIMEOUT)

    def _candidates(self, lost: Address | None) -> list[Address]:
        """Whom to try next: after losing a parent, the nearest ancestor above it, then on up,
        and the lost one last."""
        if lost is None:
            return list(self.ancestors)
        rest = [a for a in self.ancestors if a != lost]
        return rest + [lost]

    def depth(self) -> int | None:
        """How far below a root we are: 0 for a root, the ancestors we know while joined, none
        while looking (what ``discover`` announces)."""
        if self.state == "root":
            return 0
        return len(self.ancestors) if self.state == "joined" else None

    async def _lineage_of(self, up: Client) -> list[Address]:
        """The parent's address and its ancestors', nearest first, as it tells them (empty from
        an older daemon: we know our parent at least)."""
        try:
            text = (await asyncio.wait_for(up.read("csrv/local/lineage"), JOIN_TIMEOUT)).decode()
        except (TimeoutError, NinepError, ConnectionError):
            return []
        found = []
        for line in text.split()[:256]:
            try:
                found.append(parse_address(line))
            except ValueError:
                pass
        return found

    async def _discover(self) -> list[Address]:
        """A discovered link's candidates, browsing again as a root until there are some: the
        steps discovering, found, none and root."""
        assert self.finder is not None
        while True:
            found = await self.finder.find()
            if found:
                self._step("found")
                return found
            self._step("none")
            log.warning("discovery: no parent found or none accepted us: %s is a root "
                        "(announced at depth 0)", self.node.name)
            await self.finder.merge_wanted()
            self._step("discover")

    async def _run(self) -> None:
        try:
            await self._run_steps()
        except asyncio.CancelledError:
            if self.state != "stopped":
                self._step("stop")
            raise

    async def _run_steps(self) -> None:
        backoff = 0.2
        lost_parent: Address | None = None
        if self.finder is not None:
            self._step("discover")
            candidates = await self._discover()
        else:
            candidates = self._candidates(None)
            self._step("start")
        while True:
            self.address = candidates.pop(0)
            attempt = Attempt(self.server)
            brief = False  # joined, and lost before the join settled
            try:
                try:
                    await self._join(attempt)
                except (TimeoutError, NinepError, ConnectionError, OSError) as e:
                    why = str(e) or "timed out"
                    if self.finder is not None:  # (which logs it, with the announced name)
                        self.finder.refused(self.address, why, soon=isinstance(e, NotYet))
                    else:
                        log.warning("cannot join %s: %s%s", self.address, why,
                                    "" if candidates else f" (trying again in {backoff:.1f}s)")
                    self._step("fail")
                else:
                    clock = asyncio.get_running_loop().time  # (a simulated loop's too)
                    lost_parent, joined_at = None, clock()
                    why = await self._stay(attempt)
                    brief = clock() - joined_at < SETTLED
                    if brief:  # not a parent lost: a join that did not hold. Retrying at once
                        # hammered such a parent (half a million joins in 25 minutes, 150 MB
                        # of log), so it waits as a failure does, doubling.
                        log.warning("parent %s dropped us right after our join (%s); if it "
                                    "cannot authenticate back to us, both need the same "
                                    "--secret-file; trying again in %.1fs", self.address, why,
                                    backoff)
                    else:
                        backoff = 0.2
                        log.warning("parent %s: %s; serving locally, joining the nearest live "
                                    "ancestor", self.address, why)
                    lost_parent = self.address
                    candidates = self._candidates(lost_parent)
                    self._step("lost")
            except asyncio.CancelledError:
                attempt.abort()
                self._step("stop")
                raise
            self._leave(attempt)
            if brief or not (self.state == "lost" or candidates or self.finder is not None):
                self._step("back_off")  # a join that did not hold, or every ancestor failed
                try:
                    await asyncio.sleep(backoff)
                except asyncio.CancelledError:
                    self._step("stop")
                    raise
                backoff = min(backoff * 2, 5.0)
                candidates = self._candidates(lost_parent)
                self._step("retry")
            elif self.state == "lost":
                self._step("rehome")
            elif candidates:
                self._step("next")
            else:
                self._step("rediscover")
                lost_parent = None
                candidates = await self._discover()

    async def _join(self, attempt: Attempt) -> None:
        """Dial, register, and mount ``/csrv/parent``: the steps dialed and joined."""
        name = self.node.name
        parent, fid = await asyncio.wait_for(self._dial(attempt, name), JOIN_TIMEOUT * 2)
        self._step("dialed")
        assert attempt.reverse is not None and attempt.up is not None
        lineage = await self._lineage_of(attempt.up)
        own = self.own_address()
        if own is not None and own in map(str, lineage):
            raise NinepError(f"it is in our own subtree (its lineage holds our {own})")
        try:
            await asyncio.wait_for(attempt.reverse.rpc_then_hand_over(
                attempt.take, Twrite, fid, 0, f"join {name}\n".encode()), JOIN_TIMEOUT)
        except NinepError as e:
            if NO_PATH in e.message:  # (said by a node that proved the secret: not before)
                raise NotYet(e.message) from None
            raise
        csrv = self.node.csrv
        csrv.discard("parent")
        csrv.add("parent", parent)
        self.client = attempt.up
        if lineage:
            self.ancestors = lineage
        elif self.address not in self.ancestors:  # an older daemon: we know our parent at least
            self.ancestors = [self.address]
        self._step("joined")
        log.info("joined the tree under %s as %s (ancestors: %s)", self.address, name,
                 ", ".join(map(str, self.ancestors)))

    async def _dial(self, attempt: Attempt, name: str) -> tuple[Inode, int]:
        """Both connections to the parent at ``self.address`` (kept in ``attempt``), our
        ``/csrv/parent``, and the fid of the parent's join file, open for writing."""
        attempt.up = await self._connect()
        attempt.up.on_lost.append(lambda: attempt.mark("connection to the parent lost"))
        parent = await mount(attempt.up, "csrv", "parent", "parent", ("up", name))
        attempt.reverse = await self._connect()
        fid, _ = await attempt.reverse.walk("csrv/local/join")
        await attempt.reverse.rpc(Topen, fid, OWRITE)
        return parent, fid

    async def _stay(self, attempt: Attempt) -> str:
        """Joined until the attempt is lost; returns why. The parent reads our ``subtree``
        every second over the connection it took over: its silence is the sign, without a
        request of ours (a stat a second from every node)."""
        beat = asyncio.ensure_future(self._heartbeat(attempt))
        refresh = asyncio.ensure_future(self._refresh_lineage(attempt))
        try:
            return await attempt.lost
        finally:
            beat.cancel()
            refresh.cancel()

    async def _refresh_lineage(self, attempt: Attempt) -> None:
        """Read the parent's lineage again now and then: a parent that had not joined its own
        parent yet when we joined (daemons started at once, by Slurm, ssh or `cluster up`'s
        levels) told us only its own address, and losing it would then leave us nowhere to
        go (found by the simulator, brasil.sim). Every LINEAGE_REFRESH seconds: a short read,
        one per child, never one per node below."""
        assert attempt.up is not None
        own = self.own_address()
        while True:
            await tick(LINEAGE_REFRESH)
            lineage = await self._lineage_of(attempt.up)
            if lineage and (own is None or own not in map(str, lineage)):
                self.ancestors = lineage

    @staticmethod
    async def _heartbeat(attempt: Attempt) -> None:
        """A parent that has not polled us for HEARTBEAT_TIMEOUT is lost, unless the silence
        was ours: a check that comes STALLED late found us stopped or starved (a node whose
        CPUs a job took, a daemon under a debugger), and a parent that polled all along would
        otherwise be dropped for it, its children's sessions failing with it."""
        loop = asyncio.get_running_loop()
        while True:
            due = await tick(HEARTBEAT)
            late = loop.time() - due
            if late > STALLED:
                limited.warning("stalled", "this daemon stood still for %.1fs (its "
                                "heartbeat check came that late); the parent's silence "
                                "meanwhile is not held against it", late)
                attempt.pardon(late)
            if attempt.silent_for() > HEARTBEAT_TIMEOUT:
                attempt.mark(f"no heartbeat from the parent: not polled for "
                             f"{HEARTBEAT_TIMEOUT:g}s")
                return

    def _leave(self, attempt: Attempt) -> None:
        """After an attempt, joined or not: ``/csrv/parent`` goes, and sub-sessions held there
        fail, naming it."""
        if self.state == "lost":
            self.node.neighbor_lost("parent")
        self.client = None
        self.node.csrv.discard("parent")
        attempt.abort()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
