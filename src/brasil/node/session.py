"""Sessions (SPEC.md §3): reservation, exec across sub-sessions, output aggregation, input
distribution, splices.

A :class:`Session` is created by reading ``clone``. ``res N`` gives it N sub-sessions: leaves
here (leaf.py), each bound to one slot, and groups of them on neighbours (delegations,
tree/delegation.py). Reading its output claims its leaves' outputs and interleaves them on record
boundaries; writing its input distributes by ``mux``. Its own state moves along
``lifecycle.SESSION``; each leaf's slot along ``lifecycle.SLOT``. The session outlives the files
that created it: it ends on ``close``, or when it has been idle (no open files, no processes, no
unread output) for the node's idle timeout. What it uses of the node is
:class:`~brasil.node.host.Host`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shlex
import signal
import time
from collections.abc import Awaitable

from ..lifecycle import step
from ..ninep.errors import NinepError
from ..ninep.maybe import Maybe
from . import lifecycle
from .attrs import Filter, Selection
from .host import Delegate, FarSub, Host
from .io import AGGREGATE, Aggregator, Distributor, Output, Sink
from .leaf import Leaf, start
from .policy import Caps, check_session, describe, narrow
from .proc_files import end_debuggers
from .ranks import Ranks, fold, parse
from .scope import EVERYWHERE, Scope, background
from .stage import remove_dir

log = logging.getLogger("brasil.session")


class Session(Scope):
    # Defaults that are never changed in place, as class attributes (scope.py says why).
    _running = 0  # processes running (or waiting for input) in our leaves
    # Where our sub-sessions sit in the whole session (set by `rank` when a neighbour made
    # this session for some of its own): rank of our sub 0, the whole size, its origin.
    rank_base = 0
    size: int | None = None
    lazy = False  # `lazy on`: sub-sessions start when their input first has bytes
    label = False  # `label on`: merged output records carry NODE/RANK: prefixes
    user = ""  # who made it (the 9P attach name); a neighbour's session: the origin's
    default_where: Filter | None = None  # a clone in a query directory: res draws from its nodes
    open_handles = 0
    # Elastic sessions (`res +N`, `release RANKS`, `exec @RANKS`): indexes are never reused, so
    # after a release they have gaps; rank = rank_base + index, as before.
    selection: Selection | None = None  # the first res's placement: `res +N` repeats it
    next_index = 0  # one past the highest index ever given
    added: tuple[int, ...] = ()  # the indexes the last `res +N` gave (`exec +`)
    growing = False  # a `res +N` is in flight: a second one is refused, not queued
    caps = Caps()  # what the session narrowed for itself (`cap KEY N`), under the policy's
    MAX_LEFT = 256  # released leaves' unread outputs kept for the next reader of stdio

    def __init__(self, node: Host, path: str) -> None:
        super().__init__(node, path, dict(node.env))
        self.session_state = lifecycle.SESSION_START  # then only along it (session_step)
        self.subs: list[Leaf] = []  # the sub-sessions here; those elsewhere are in delegations
        self.delegations: list[Delegate] = []  # neighbours' sessions holding some of our subs
        self.stage_dir: str | None = None  # $BRASIL_STAGE here: files staged for our ranks
        self.last_active = time.monotonic()
        self._aggregates: dict[int, Output] = {}
        self._aggregators: list[Aggregator] = []
        self._remote_subs: dict[int, FarSub] = {}
        self.origin = f"{node.name}:/csrv/local/{path}"
        # this session's directory as this node serves it, under /csrv: at the origin its own;
        # on a neighbour, the way back through the neighbours that asked (`rank … ROUTE`)
        self.route = f"local/{path}"
        self._by_index: dict[int, Leaf] = {}
        self._agg_of: dict[int, Aggregator] = {}  # fd → the aggregator behind _aggregates[fd]
        self._pumps: dict[int, list[asyncio.Future[None]]] = {}  # id(delegation) → its sources
        self._left: list[tuple[int, Output, bytes]] = []  # released leaves' unread outputs
        self._sink_of: dict[object, Sink] = {}  # a leaf or delegation → its sink in _input

    # ---- shape ----

    @property
    def top(self) -> Session:
        return self

    @property
    def state(self) -> str:
        """What status lines and queries show."""
        return self.session_state

    def leaves(self) -> list[Leaf]:
        """The sub-sessions that run here (remote ones are reached through ``delegations``)."""
        return self.subs

    @property
    def nsubs(self) -> int:
        return len(self.subs) + sum(g.held for g in self.delegations)

    def indexes(self) -> list[int]:
        """Our sub-sessions' indexes, ascending: 0…N-1 until the session grows or shrinks,
        then with the gaps releases left (an index is never given twice)."""
        out = [leaf.index for leaf in self.subs]
        for g in self.delegations:
            out += [g.first + j for j in range(g.count) if j not in g.released]
        return sorted(out)

    def has_index(self, i: int) -> bool:
        return i in self._by_index or any(g.holds(i - g.first) for g in self.delegations)

    def _sub(self, i: int) -> Scope | FarSub:
        """A leaf here, or (made when first asked for, so that a large reservation costs nothing
        per remote slot) a proxy of the delegation holding it."""
        leaf = self._by_index.get(i)
        if leaf is not None:
            return leaf
        if i not in self._remote_subs:
            g = next(g for g in self.delegations if g.holds(i - g.first))
            self._remote_subs[i] = g.sub(i - g.first, self)
        return self._remote_subs[i]

    def effective_dir(self) -> str | None:
        return self.dir

    def effective_env(self) -> dict[str, str]:
        return dict(self.env)

    def effective_ns(self) -> list[str]:
        return list(self.ns)

    def session_step(self, event: str) -> None:
        """Move this session along lifecycle.SESSION (an event not drawn there raises)."""
        self.session_state = step(lifecycle.SESSION, self.session_state, event,
                                  f"session {self.path}")

    def attrs(self) -> dict[str, str]:
        """What a session says about itself to queries (``user=alice/state=running``)."""
        return {"user": self.user or "-", "state": self.state, "command": self.args or "-",
                "session": f"{self.node.name}/{self.path}"}

    # ---- res ----

    def set_cap(self, key: str, n: int) -> None:
        if self.came_from is not None:
            raise NinepError(f"cap: session {self.path} holds ranks for {self.origin}; set caps "
                             "on the session there", errno.EINVAL)
        self.caps = narrow(self.caps, key, n, self.path)
        log.info("session %s: caps %s", self.path, describe(self.caps))

    def check_caps(self, n: int) -> None:
        """``n`` more slots: under the session's own caps, then the administrator's policy;
        a refusal is logged and names the cap."""
        try:
            check_session(self.caps, n, self.nsubs, self.path)
        except NinepError as e:
            log.warning("session %s: %s", self.path, e)
            raise
        self.node.check_policy(self, n)

    def _give_back_if_closed(self, what: str, slots: list[int], delegated: list[Delegate]) -> None:
        """A reservation that returns to a session closed from another handle meanwhile gives
        back what it got, here and on the neighbours."""
        if self.session_state == "closed":
            self.node.release_slots(slots)
            for g in delegated:
                background(g.close())
            raise NinepError(f"{what}: session {self.path} was closed meanwhile", errno.EBADF)

    async def reserve(self, n: int, sel: Selection = EVERYWHERE, upto: bool = False) -> None:
        if self.came_from is None:  # the caps are checked at the origin (node/policy.py)
            self.check_caps(n)
        self.session_step("reserve")
        if self.default_where is not None:  # made in a query directory: its nodes only
            sel = Selection(Filter(self.default_where.preds + sel.filter.preds), sel.pernode,
                            sel.spread)
        try:
            slots, delegated = await self.node.reserve(self, n, sel, upto)
        except BaseException:
            if self.session_state == "reserving":  # (not closed meanwhile)
                self.session_step("refused")
            raise
        self._give_back_if_closed("res", slots, delegated)
        self.session_step("granted")
        self.subs = [Leaf(self.node, f"{self.path}/{i}", self, slot) for i, slot in enumerate(slots)]
        self._by_index = dict(enumerate(self.subs))
        at = len(slots)  # numbered here, once: a spread reserves share by share, each from 0
        for g in delegated:
            g.first = at
            at += g.count
        self.delegations = delegated
        self.selection, self.next_index = sel, self.nsubs
        for g in delegated:
            g.on_done.append(self.notify_done)
        if self.came_from is None:  # a neighbour's session learns its ranks from that neighbour
            self.tell_ranks()       # in a moment (set_rank), and only then passes them on
        where = ", ".join([f"{len(slots)} here"] + [f"{g.count} via {g.neighbor}" for g in delegated])
        log.info("session %s: reserved %d slot(s): %s", self.path, self.nsubs, where)

    async def grow(self, n: int, sel: Selection | None = None) -> None:
        """``res +N``: N more slots, placed as the first ``res`` placed its own (its ``where``,
        ``pernode``, ``spread``) unless ``sel`` says otherwise, numbered after every index ever
        given. All or nothing: a refusal (no room, the policy, a neighbour failing) leaves the
        session exactly as it was. Nothing starts until an ``exec`` names the new ranks."""
        what = f"res +{n}"
        if self.came_from is not None:
            raise NinepError(f"{what}: session {self.path} holds ranks for {self.origin}; grow "
                             "the session there", errno.EINVAL)
        if self.session_state in ("new", "reserving"):
            raise NinepError(f"{what}: session {self.path} holds no slots yet; reserve with "
                             "res N first, then grow it", errno.EINVAL)
        step(lifecycle.SESSION, self.session_state, "grow", f"session {self.path}")
        if self.growing:
            raise NinepError(f"{what}: another res +N of session {self.path} is in flight; "
                             "wait for its answer, then ask again", errno.EBUSY)
        self.check_caps(n)
        if sel is None:
            sel = self.selection or EVERYWHERE
        elif self.default_where is not None:
            sel = Selection(Filter(self.default_where.preds + sel.filter.preds), sel.pernode,
                            sel.spread)
        self.growing = True
        try:
            slots, delegated = await self.node.reserve(self, n, sel, False)
        finally:
            self.growing = False
        self._give_back_if_closed(what, slots, delegated)
        self.session_step("grow")
        base = at = self.next_index
        for slot in slots:
            leaf = Leaf(self.node, f"{self.path}/{at}", self, slot)
            self.subs.append(leaf)
            self._by_index[at] = leaf
            at += 1
        for g in delegated:
            g.first = at
            at += g.count
            g.on_done.append(self.notify_done)
            self.delegations.append(g)
            background(g.tell(self.rank_line(g)))  # before anything can be run there
        self.next_index = at
        self.added = tuple(range(base, at))
        where = ", ".join([f"{len(slots)} here"] + [f"{g.count} via {g.neighbor}" for g in delegated])
        log.info("session %s: grew by %d slot(s) to %d, ranks %s: %s", self.path, n, self.nsubs,
                 fold(range(base, at)), where)

    def _chosen(self, ranks: Ranks, what: str) -> list[int]:
        """Our indexes in ``ranks``; a rank we do not hold refuses the whole request."""
        held = self.indexes()
        chosen = [i for i in held if i in ranks]
        mine = set(chosen)
        for lo, hi in zip(ranks.los, ranks.his):
            for i in range(lo, min(hi, lo + len(held)) + 1):  # one outside is enough to name
                if i not in mine:
                    raise NinepError(f"{what}: session {self.path} has no rank {i + self.rank_base}"
                                     f"; its ranks are {fold(r + self.rank_base for r in held)}",
                                     errno.ENOENT)
        return chosen

    def release_ranks(self, ranks: Ranks) -> Awaitable[None] | None:
        """``release RANKS``: those ranks' processes killed (their process groups), their slots
        freed on whatever node holds them, their indexes never given again. What they wrote is
        still read from ``stdio``; the merged output no longer waits for their end of file."""
        what = f"release {ranks}"
        step(lifecycle.SESSION, self.session_state, "release", f"session {self.path}")
        chosen = self._chosen(ranks, what)
        feeding = self._input is not None and not self._input.closed
        if feeding and self.mux != "broadcast":
            raise NinepError(f"{what}: the session's input is being dealt (mux {self.mux}) to "
                             "its ranks; end the input first (close stdio), or use mux "
                             "broadcast", errno.EBUSY)
        self.session_step("release")
        gone = set(chosen)
        local = [self._by_index.pop(i) for i in chosen if i in self._by_index]
        if local:
            self.subs = [leaf for leaf in self.subs if leaf.index not in gone]
            for leaf in local:
                leaf.release(keep_output=True)
                for fd, o in ((1, leaf.stdout), (2, leaf.stderr)):
                    if o.claim is None and len(o.stream):  # nobody read it yet: the next will
                        self._left.append((fd, o, leaf.label_prefix() if self.label else b""))
            del self._left[:-self.MAX_LEFT]
            self.node.release_slots([leaf.slot for leaf in local])
        for i in chosen:
            self._remote_subs.pop(i, None)
        asks: list[asyncio.Future[None]] = []
        retired = []
        for g in list(self.delegations):
            js = [i - g.first for i in chosen if g.holds(i - g.first)]
            if js:
                ask = asyncio.ensure_future(g.release(js))
                asks.append(ask)
                if not g.held:
                    self.delegations.remove(g)
                    self._retire(g, ask)
                    retired.append(g)
        if feeding and self._input is not None:  # broadcast: the others go on being fed
            dropped = {id(self._sink_of.pop(x, None)) for x in [*local, *retired]}
            self._input.drop(lambda sink: id(sink) in dropped)
        self.added = tuple(i for i in self.added if i not in gone)
        log.info("session %s: released ranks %s (%d here, %d elsewhere); %d left", self.path,
                 fold(i + self.rank_base for i in chosen), len(local), len(chosen) - len(local),
                 self.nsubs)
        self.notify_done()
        if asks:
            return self._asked(asks)
        return None

    async def _asked(self, asks: list[asyncio.Future[None]]) -> None:
        for r in await asyncio.gather(*asks, return_exceptions=True):
            if isinstance(r, BaseException):
                raise r

    def _retire(self, g: Delegate, release: asyncio.Future[None]) -> None:
        """A delegation all of whose ranks were released: closed once the neighbour has
        answered the release and what they wrote has reached our merged output (its source
        there ends when theirs did)."""
        pending = [t for t in self._pumps.pop(id(g), []) if not t.done()]
        background(self._close_after([release, *pending], g))

    async def _close_after(self, pending: list[asyncio.Future[None]], g: Delegate) -> None:
        await asyncio.wait(pending)
        await g.close()

    async def stage(self, h: str, name: str) -> None:
        """``stage HASH NAME``: the cached file linked into our ``$BRASIL_STAGE`` here, and
        passed to each neighbour holding some of our ranks (node/stage.py)."""
        cache = self.node.stage_cache()
        where = self.stage_dir or os.path.join(cache.path, "sessions",
                                               f"{self.path}-{time.time_ns()}")
        self.stage_dir = cache.place(h, where, name)
        await asyncio.gather(*(g.stage(h, name, cache) for g in self.delegations if not g.lost))

    def set_rank(self, base: int, size: int, origin: str, user: str = "",
                 route: str = "") -> None:
        """``rank BASE SIZE ORIGIN [USER [ROUTE]]``: our sub-sessions are BASE… of a session of
        SIZE made at ORIGIN, whose directory the neighbour that made ours reaches as
        /csrv/ROUTE; passed on to the neighbours holding some of ours."""
        before = (self.rank_base, self.size, self.origin, self.user, self.route)
        self.rank_base, self.size, self.origin = base, size, origin
        if user and user != "-":
            self.user = user
        if route and self.came_from is not None:  # the way back: to that neighbour, then its way
            self.route = f"{self.came_from}/{route}"
        if (self.rank_base, self.size, self.origin, self.user, self.route) != before:
            self.tell_ranks()  # (each exec repeats it)

    def tell_ranks(self) -> None:
        """Each group learns its ranks before anything can be run there: the write goes out
        ahead of any later request on the same connection."""
        for g in self.delegations:
            background(g.tell(self.rank_line(g)))

    def rank_line(self, g: Delegate) -> str:
        return (f"rank {self.rank_base + g.first} {self.size or self.nsubs} {self.origin} "
                f"{shlex.quote(self.user or '-')} {shlex.quote(self.route)}")

    # ---- exec ----

    async def exec(self, cmd: str) -> None:
        cmd, argv, env = self.command(cmd)
        if self.session_state == "new":
            await self.reserve(1)
        if self.subs:  # processes start here: they need the directory
            self.check_dir()
        running = step(lifecycle.SESSION, self.session_state, "exec", f"session {self.path}")
        if not self.nsubs:
            raise NinepError(f"exec: session {self.path} holds no ranks (all were released); "
                             "grow it first: res +N", errno.EINVAL)
        busy = [leaf.path for leaf in self.subs if leaf.slot_state == "running"]
        busy += [f"{g.first}-{g.first + g.count - 1} on {g.neighbor}" for g in self.delegations
                 if g.running]
        if busy:  # refused before the state moves: nothing to roll back
            raise NinepError(f"exec: sub-session(s) {', '.join(busy)} still running; "
                             "kill them or wait first", errno.EBUSY)
        self.session_state, self.args = running, cmd
        self._aggregates.clear()  # new aggregation and distribution for the new pipes
        self._agg_of.clear()
        self._pumps.clear()
        self._left.clear()
        self._input = None
        self._sink_of = {}
        leaves = self.subs
        delegated = [g for g in self.delegations if not g.lost]
        await self._launch(cmd, argv, env, leaves, [(g, None) for g in delegated])
        log.info("session %s: exec %r on %d slot(s) here and %d elsewhere", self.path, cmd,
                 len(leaves), sum(g.held for g in delegated))

    async def _launch(self, cmd: str, argv: list[str], env: dict[str, str], leaves: list[Leaf],
                      parts: list[tuple[Delegate, list[int] | None]]) -> None:
        """``cmd`` started on ``leaves`` here and, in one ctl write each, on the delegations
        (on ``some`` of theirs, or all): all started, or none left running and the first error
        raised."""
        remote_setup = [f"mux {self.mux_text()}", f"rs {self.rs}",
                        f"lazy {'on' if self.lazy else 'off'}",
                        f"label {'on' if self.label else 'off'}"]
        if self.dir is not None:
            remote_setup.append(f"dir {self.dir}")
        here, *there = await asyncio.gather(
            start(self.node, leaves, cmd, argv, env),
            *(g.exec(cmd, self.effective_env(), remote_setup + [self.rank_line(g)], some)
              for g, some in parts), return_exceptions=True)
        errors = [r for r in there if isinstance(r, BaseException)]
        if isinstance(here, BaseException):
            errors.append(here)
        elif here:
            errors += here
        if errors:
            for leaf in leaves:
                if leaf.process and leaf.process.running:
                    leaf.process.kill(signal.SIGKILL)
            await asyncio.gather(*(g.kill(signal.SIGKILL) for g, _ in parts if g.running),
                                 return_exceptions=True)
            if self.session_state == "running" and self.all_done():  # nothing started
                self.session_step("finish")
            raise errors[0]

    async def exec_ranks(self, which: str, cmd: str) -> None:
        """``exec @RANKS CMD`` / ``exec + CMD``: CMD on those ranks only (``+``: the ones the
        last ``res +N`` added), the others going on as they are. A reader of ``stdio`` already
        merging the running ranks' output gets the new ranks' too, in the same stream (at the
        session's origin; a neighbour's part starts a new merge, read anew from above). Ranks
        started while the session's input flows are not dealt it: their stdin ends at once (write
        to ``N/stdio`` to feed one)."""
        what = f"exec {which}"
        if self.session_state in ("new", "reserving"):
            raise NinepError(f"{what}: session {self.path} holds no ranks yet; res N first",
                             errno.EINVAL)
        if which == "+":
            chosen = [i for i in self.added if self.has_index(i)]
            if not chosen:
                raise NinepError(f"{what}: session {self.path} holds no ranks from a res +N; "
                                 "grow it first (res +N), or name ranks: exec @RANKS CMD",
                                 errno.EINVAL)
        else:
            chosen = self._chosen(parse(which[1:], "exec @RANKS"), what)
        cmd, argv, env = self.command(cmd)
        leaves = [self._by_index[i] for i in chosen if i in self._by_index]
        if leaves:
            self.check_dir()
        parts = [(g, [i - g.first for i in chosen if g.holds(i - g.first)])
                 for g in self.delegations if not g.lost]
        parts = [(g, js) for g, js in parts if js]
        nxt = step(lifecycle.SESSION, self.session_state, "exec_ranks", f"session {self.path}")
        busy = [leaf.path for leaf in leaves if leaf.slot_state in ("running", "waiting")]
        busy += [f"{fold(g.first + j for j in range(g.count) if j not in g.released)} on "
                 f"{g.neighbor} (they run as one group)" for g, _ in parts if g.running]
        if busy:  # refused before the state moves: nothing to roll back
            raise NinepError(f"{what}: sub-session(s) {', '.join(busy)} still running; kill "
                             "them or wait first", errno.EBUSY)
        self.session_state, self.args = nxt, cmd
        # a neighbour's part that never ran is already read whole by a live merge made before
        # (its merge there took every sub-session, none having run): not read a second time
        fresh = {id(g) for g, _ in parts if g.wait_result is None and not g.running
                 and any(not t.done() for t in self._pumps.get(id(g), []))}
        for fd, a in list(self._agg_of.items()):
            if not a.live or self.came_from is not None:  # the next reader starts a new merge
                del self._agg_of[fd]
                self._aggregates.pop(fd, None)
        extend = dict(self._agg_of)
        if self.came_from is not None:  # a neighbour's part: fresh input, as for exec
            self._input = None
        await self._launch(cmd, argv, env, leaves,
                           [(g, None if len(js) == g.held else js) for g, js in parts])
        for fd, aggregator in extend.items():
            for leaf in leaves:
                o = leaf.stdout if fd == 1 else leaf.stderr
                if o.claim is None:
                    o.take(AGGREGATE)
                    aggregator.add(o, leaf.label_prefix() if self.label else b"")
            for g, _ in parts:
                if id(g) in fresh:
                    continue
                task = aggregator.add(g.output(fd, f"{self.path} via {g.neighbor}"))
                pumps = self._pumps.setdefault(id(g), [])
                pumps[:] = [t for t in pumps if not t.done()] + [task]
        if self._input is not None:  # the input already flows to the others
            for leaf in leaves:
                leaf.stdin.close()
            for g, _ in parts:
                g.input().close()
        log.info("session %s: exec %r on ranks %s: %d here and %d elsewhere", self.path, cmd,
                 fold(i + self.rank_base for i in chosen), len(leaves),
                 sum(len(js) for _, js in parts))

    def sub_started(self) -> None:
        """A leaf's process started (or waits for its input): an exec in one sub-session makes
        the session run too."""
        self._running += 1
        if self.session_state in ("reserved", "done"):
            self.session_step("exec")

    def sub_ended(self) -> None:
        self._running -= 1

    def notify_done(self) -> None:
        if self.all_done():
            if self.session_state == "running":
                self.session_step("finish")
                codes = [leaf.exit_status for leaf in self.subs]
                log.info("session %s: every process ended: %d here (%d with status 0)%s",
                         self.path, len(codes), codes.count(0),
                         f", {len(self.delegations)} delegation(s) elsewhere"
                         if self.delegations else "")
            self._wake_waiters()

    def all_done(self) -> bool:
        return self._running == 0 and not any(g.running for g in self.delegations)

    def kill(self, sig: int = signal.SIGTERM) -> Awaitable[object] | None:
        n = sum(leaf.send_signal(sig) for leaf in self.subs)
        log.info("session %s: signal %d to %d process group(s) here, %d group(s) elsewhere",
                 self.path, sig, n, len(self.delegations))
        if self.delegations:
            return asyncio.gather(*(g.kill(sig) for g in self.delegations if g.running))
        return None

    # ---- data ----

    def output(self, fd: int, who: str) -> Output:
        """Claim output ``fd`` (1 stdout, 2 stderr) for ``who``: our leaves' merged on record
        boundaries, with the neighbours' holding some of ours."""
        if fd not in (1, 2):
            raise NinepError(f"fd {fd} is not an output; use 1 (stdout) or 2 (stderr)")
        if not self.nsubs:
            raise NinepError(f"session {self.path} has no processes yet: res and exec first")
        agg = self._aggregates.get(fd)
        if agg is None:
            sources, prefixes = [], []
            # Once something ran, ranks that never did (grown, not yet named by an exec) are
            # not waited for: an exec naming them adds them to this merge while it lasts.
            ran = self.session_state != "reserved"
            for leaf in self.subs:
                o = leaf.stdout if fd == 1 else leaf.stderr
                if ran and leaf.slot_state == "idle":
                    continue
                if o.claim is None:
                    o.take(AGGREGATE)
                    sources.append(o)
                    prefixes.append(leaf.label_prefix() if self.label else b"")
            for k, o, prefix in self._left:  # released ranks' output nobody had read yet
                if k == fd and o.claim is None:
                    o.take(AGGREGATE)
                    sources.append(o)
                    prefixes.append(prefix)
            delegated = [g for g in self.delegations if not g.lost  # they label their own records
                         and not (ran and not g.running and g.wait_result is None)]
            sources += [g.output(fd, f"{self.path} via {g.neighbor}") for g in delegated]
            prefixes += [b""] * len(delegated)
            aggregator = Aggregator(sources, self.rs, self.node.output_limit,
                                    prefixes=prefixes if self.label else None)
            for g, task in zip(delegated, aggregator.tasks[len(aggregator.tasks) - len(delegated):]):
                self._pumps.setdefault(id(g), []).append(task)
            self._aggregators.append(aggregator)
            self._agg_of[fd] = aggregator
            agg = Output(aggregator.out, f"{self.path} {'stdout' if fd == 1 else 'stderr'}")
            self._aggregates[fd] = agg
        agg.take(who)
        return agg

    def input(self) -> Distributor:
        if not self.nsubs:
            raise NinepError(f"session {self.path} has no processes yet: res and exec first")
        if self._input is None:
            live = [g for g in self.delegations if not g.lost]
            sinks: list[Sink] = [s.input() for s in self.subs] + [g.input() for g in live]
            weights = [1] * len(self.subs) + [g.held for g in live]
            self._input = Distributor(sinks, self.mux, self.key, self.rs, weights)
            self._sink_of = dict(zip([*self.subs, *live], sinks))
        return self._input

    def unread_output(self) -> bool:
        return any(leaf.unread_output() for leaf in self.subs) or \
            any(len(o.stream) for o in self._aggregates.values())

    # ---- reporting ----

    def status_text(self) -> Maybe[str]:
        """One line per sub-session; waits on neighbours when some live there."""
        lines = [leaf.status_line() for leaf in self.subs]
        if not self.delegations:
            return "".join(ln + "\n" for ln in lines)
        return self._status_text(lines)

    async def _status_text(self, lines: list[str]) -> str:
        for more in await asyncio.gather(*(g.status_lines() for g in self.delegations)):
            lines += more
        return "".join(ln + "\n" for ln in lines)

    def wait_lines(self) -> list[str]:
        out = [line for leaf in self.subs for line in leaf.wait_lines()]
        for g in self.delegations:
            out += g.wait_lines()
        return out

    def state_line(self) -> str:
        """``session ID STATE subs N`` and how many sub-sessions are in each state, those on
        other nodes included (as last heard: running until their wait answers, then exited),
        then settings, the ranks held (``ranks 0-1,8-13``) and splices."""
        counts: dict[str, int] = {}
        for leaf in self.subs:
            counts[leaf.state] = counts.get(leaf.state, 0) + 1
        for g in self.delegations:
            key = "lost" if g.lost else "running" if g.running else \
                "exited" if g.wait_result is not None else "idle"
            counts[key] = counts.get(key, 0) + g.held
        ranks = fold(i + self.rank_base for i in self.indexes())
        caps = describe(self.caps)
        return self._state_line(counts, self.nsubs, [],
                                f" ranks {ranks}" + (f" caps {caps}" if caps else ""))

    # ---- the end ----

    def idle(self) -> bool:
        return (self.open_handles == 0 and self.all_done() and not self.unread_output()
                and all(sp.state != "running" for sp in self.splices))

    def close(self) -> None:
        if self.session_state == "closed":
            return
        ending = end_debuggers(self) if self.top is self else None
        if ending is not None:
            background(ending)
        for leaf in self.subs:
            leaf.release()
        self.node.release_slots([leaf.slot for leaf in self.subs])  # one merge, not one per slot
        self._left.clear()
        for agg in self._aggregators:
            agg.cancel()
        for sp in self.splices:
            if sp.task is not None:
                sp.task.cancel()
        for g in self.delegations:
            background(g.close())
        remove_dir(self.stage_dir)
        self.session_step("close")
        log.info("session %s: closed", self.path)
