"""Caps with shares: how much of a pool every client shares one peer may take.

A cap alone protects the daemon but not its other clients: 1,300 connections that never attached
kept a legitimate client out until they timed out, and one client holding nearly every fid made
the owner's `brasil run` fail halfway (issue 15 §17). So each pool is cut into shares; a peer is
an address for network connections, and the owner for the Unix socket (which serves the daemon's
own uid only):

- connections not yet attached (no secret proven yet): each peer address at most
  :attr:`Shares.unattached_per_peer` of them, all of them together at most
  :attr:`Shares.unattached_all` (half the network cap), so a flood from one address, or from
  many, leaves room for clients that do authenticate. Attached connections are not shared out
  per address: a peer that proved the secret may already run commands as the owner, and a local
  cluster puts all its children on one address;
- fids: network connections together hold at most :attr:`Shares.net_fids_cap` (the pool less an
  eighth kept for the owner's socket), and one network address at most half of that, so neither
  one peer nor all of them can leave the owner's commands without files.
"""

from __future__ import annotations

from collections import Counter

from .errors import Etoomanyfids, Etoomanyfidsall, Etoomanyfidsnet, Etoomanyfidspeer

OWNER = "unix"  # the peer of every Unix-socket connection: the daemon's own uid


class Shares:
    def __init__(self, max_connections: int, max_total_fids: int, max_fids: int) -> None:
        self.max_total_fids = max_total_fids
        self.max_fids = max_fids
        self.unattached_per_peer = max(4, max_connections // 16)
        self.unattached_all = max(self.unattached_per_peer, max_connections // 2)
        self.net_fids_cap = max_total_fids - max_total_fids // 8
        self.peer_fids_cap = max(1, self.net_fids_cap // 2)
        self.unattached: Counter[str] = Counter()  # peer -> connections not yet attached
        self.fids: Counter[str] = Counter()  # peer -> fids held; OWNER's included
        self.nfids = 0  # over every connection
        self.net_fids = 0  # over network connections

    # ---- connections ----

    def refuse_unattached(self, peer: str) -> str:
        """Why a new network connection from ``peer`` cannot be taken now ("" if it can)."""
        if self.unattached[peer] >= self.unattached_per_peer:
            return (f"{self.unattached[peer]} connections from {peer} have not attached yet "
                    "(one address's share)")
        total = sum(self.unattached.values())
        if total >= self.unattached_all:
            return f"{total} connections have not attached yet (their share of the cap)"
        return ""

    def opened(self, peer: str) -> None:
        self.unattached[peer] += 1

    def settled(self, peer: str) -> None:
        """A connection counted by :meth:`opened` attached, or ended before it did."""
        self.unattached[peer] -= 1
        if self.unattached[peer] <= 0:
            del self.unattached[peer]

    # ---- fids ----

    def refuse_fid(self, peer: str, held_by_connection: int) -> tuple[str, int] | None:
        """The error for one more fid on a connection of ``peer`` that holds
        ``held_by_connection``, or None if there is room."""
        if self.nfids >= self.max_total_fids:
            return Etoomanyfidsall
        if peer != OWNER:
            if self.net_fids >= self.net_fids_cap:
                return Etoomanyfidsnet
            if self.fids[peer] >= self.peer_fids_cap:
                return Etoomanyfidspeer
        if held_by_connection >= self.max_fids:
            return Etoomanyfids
        return None

    def took_fids(self, peer: str, n: int) -> None:
        """``n`` fids taken (negative: given back) by a connection of ``peer``."""
        self.nfids += n
        self.fids[peer] += n
        if peer != OWNER:
            self.net_fids += n
        if self.fids[peer] <= 0:
            del self.fids[peer]
