"""What a node asks of the tree it is in, as protocols: the tree (``tree/daemon.py``) sets these
hooks on :class:`~brasil.node.daemon.Node`, and the node, a layer below, cannot import the tree's
classes to name them. A node in no tree leaves them ``None`` and serves locally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..exec.records import Key, Splitter
from ..ninep.transport import Address
from .attrs import Selection
from .io import Output, Sink


class Delegated(Protocol):
    """Slots a neighbour holds for one of our sessions (``tree/delegation.py``'s Delegation)."""

    neighbor: str
    count: int
    first: int
    on_done: list[Callable[[], object]]  # called when its processes have all ended

    def mark_lost(self, why: str) -> None: ...

    async def close(self) -> None: ...


class Reserving(Protocol):
    """The session a reservation is for (what neighbours are told of it)."""

    path: str


class Reserver(Protocol):
    """Reserves on neighbours what this node lacks (``tree/reserve.py``)."""

    async def reserve(self, session: Reserving, n: int, sel: Selection, came_from: str | None,
                      first: int) -> Sequence[Delegated]: ...


class Transfer(Protocol):
    """One direction of a direct splice, as a session's status shows it (``tree/data.py``)."""

    state: str

    def describe(self) -> str: ...


class CutThrough(Protocol):
    """The data endpoint of direct splices between nodes (``tree/data.py``)."""

    @property
    def address(self) -> Address | None: ...

    def new_token(self) -> str: ...

    def expect(self, token: str, sinks: list[Sink], label: str) -> Sequence[Transfer]: ...

    async def send(self, address: str, token: str, claim: Callable[[], Output],
                   label: str) -> Transfer: ...

    async def scatter(self, dests: list[tuple[str, str]], claim: Callable[[], Output], mode: str,
                      key: Key | None, rs: Splitter, label: str) -> Transfer: ...


class RemoteEnd(Protocol):
    """A session on another node as one end of a splice (``tree/delegation.py``)."""

    path: str
    is_leaf: bool

    async def ctl(self, text: str) -> None: ...

    async def ctl_state(self) -> str: ...


FindRemote = Callable[[str], RemoteEnd]
