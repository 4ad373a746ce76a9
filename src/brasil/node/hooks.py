"""What a node asks of the tree it is in, as protocols: the tree (``tree/daemon.py``) sets these
hooks on :class:`~brasil.node.daemon.Node`, and the node, a layer below, cannot import the tree's
classes to name them. A node in no tree leaves them ``None`` and serves locally. The reserver's
are here; the data endpoint and a session elsewhere are node/host.py's (``DataPath``,
``FarEnd``), which sessions name too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .attrs import Selection
from .host import Delegate


class Reserving(Protocol):
    """The session a reservation is for (what neighbours are told of it)."""

    path: str


class Reserver(Protocol):
    """Reserves on neighbours what this node lacks (``tree/reserve.py``)."""

    async def reserve(self, session: Reserving, n: int, sel: Selection, came_from: str | None,
                      first: int) -> Sequence[Delegate]: ...
