"""Reservation across the tree (SPEC.md §3.1 ``res``, §4): here first, then the children's
subtrees in parallel, then the parent; all or nothing.

Each neighbour is asked with one fixed-size request — a new session there and ``res M`` — so the
time a reservation takes grows with the depth of the tree, not with N. Which child gets how much
is decided from the subtree status each child reports every second; a child that turns out to
have less than it said is skipped and the rest re-planned once. A request that came from a
neighbour (``from NAME``) is never sent back to it, so requests cannot loop.
"""

from __future__ import annotations

import asyncio
import logging

from ..client.session import SessionClient
from ..ninep.client import Client
from ..ninep.errors import NinepError
from ..node.attrs import Selection
from ..node.hooks import Reserving
from .delegation import Delegation
from .link import ParentLink
from .proxy import Remote
from .registry import Children

log = logging.getLogger("brasil.tree")


class Reserver:
    def __init__(self, name: str, children: Children, parent: ParentLink | None) -> None:
        self.name = name  # this node's
        self.children = children
        self.parent = parent

    async def reserve(self, session: Reserving, n: int, sel: Selection, came_from: str | None,
                      first: int) -> list[Delegation]:
        """Groups holding up to ``n`` slots on neighbours; fewer if the tree has fewer.

        First the children that reported free slots, asked in parallel for their share; then,
        since those reports can be a second old, the children not yet asked, one at a time for
        what is still missing, and once more the children that gave all they were asked (they
        may have freed more since they reported); then the parent. Each is asked for *up to* its
        share, so a stale report never fails a reservation that the tree could satisfy."""
        groups: list[Delegation] = []
        need = n
        tried: set[str] = set()
        full: list[str] = []  # children that gave every slot asked of them: maybe more there

        def took(name: str, r: object, k: int) -> None:
            nonlocal need
            tried.add(name)
            if isinstance(r, Delegation):
                groups.append(r)
                need -= r.count
                if r.count >= k and name != "parent":
                    full.append(name)
            elif isinstance(r, BaseException) and not isinstance(r, (NinepError, ConnectionError)):
                raise r
            else:
                log.info("session %s: %s gave none of %d slot(s): %s", session.path, name, k, r)
        try:
            plan = self._plan(need, came_from, tried, sel)
            results = await asyncio.gather(
                *(self._ask(name, client, k, sel, session) for name, client, k in plan),
                return_exceptions=True)
            for (name, _, k), res in zip(plan, results):
                took(name, res, k)
            for c in list(self.children.by_name.values()):
                if need <= 0:
                    break
                if c.name in tried or c.name == came_from or c.gone:
                    continue  # (its report may be a second old: it is asked all the same)
                try:
                    r: object = await self._ask(c.name, c.client, need, sel, session)
                except (NinepError, ConnectionError) as e:
                    r = e
                took(c.name, r, need)
            for name in list(full):
                c2 = self.children.by_name.get(name)
                if need <= 0 or c2 is None or c2.gone:
                    continue
                try:
                    r = await self._ask(name, c2.client, need, sel, session)
                except (NinepError, ConnectionError) as e:
                    r = e
                took(name, r, need)
            link = self.parent
            if need > 0 and came_from != "parent" and link is not None and link.client is not None:
                try:
                    r = await self._ask("parent", link.client, need, sel, session)
                except (NinepError, ConnectionError) as e:
                    r = e
                took("parent", r, need)
        except BaseException:
            await release(groups)
            raise
        at = first
        for g in groups:
            g.first = at
            at += g.count
        return groups

    def _plan(self, need: int, came_from: str | None, tried: set[str], sel: Selection
              ) -> list[tuple[str, Client, int]]:
        free = {c.name: c.free_slots() if sel.plain else sel.free_in(c.status)
                for c in self.children.by_name.values()}
        kids = [c for c in self.children.by_name.values()
                if c.name != came_from and c.name not in tried and not c.gone and free[c.name] > 0]
        kids.sort(key=lambda c: -free[c.name])
        plan = []
        for c in kids:
            if need <= 0:
                break
            k = min(need, free[c.name])
            plan.append((c.name, c.client, k))
            need -= k
        return plan

    def free_in_reach(self, came_from: str | None) -> int:
        return sum(c.free_slots() for c in self.children.by_name.values()
                   if c.name != came_from and not c.gone)

    async def _ask(self, name: str, client: Client, k: int, sel: Selection,
                   session: Reserving) -> Delegation:
        """A session on ``name`` with up to ``k`` slots: three round trips, whatever ``k`` (the
        clone opened as the session's ctl, its walk, open and read pipelined; the request; the
        state read back)."""
        there = await SessionClient.clone_held(client)
        me = "parent" if name != "parent" else self.name
        ctl = there.held
        try:
            await there.ctl(f"from {me}", f"resupto {k}{sel.words()}")
            state = (await there.state()).split()
            got = int(state[state.index("subs") + 1])  # "session ID reserved subs M …"
        except BaseException:
            await there.close()
            there.forget()
            raise
        hop = ("up", self.name) if name == "parent" else ("down", name)
        return Delegation(name, Remote(client, f"node {name}", hop), there.sid, got, 0,
                          session.path, ctl)


async def release(groups: list[Delegation]) -> None:
    await asyncio.gather(*(g.close() for g in groups), return_exceptions=True)
