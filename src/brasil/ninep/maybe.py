"""A value now, or an awaitable when the answer has to wait.

Handlers throughout Brasil return :data:`Maybe` values so that the common case — the answer is
ready — costs no task and no extra trip round the event loop; only answers that must wait are
awaited. :func:`is_awaitable` is the cheap test the server and the streams use to tell them apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs is 3.13; only mypy reads it here

T = TypeVar("T")
Maybe: TypeAlias = T | Awaitable[T]  # a value now, or an awaitable when the answer has to wait


def is_awaitable(x: object) -> TypeIs[Awaitable[Any]]:
    """Cheaper than inspect.isawaitable on the hot path: bytes and ints have no __await__.
    Typed so that mypy narrows a Maybe to the awaitable, or else to the value."""
    return hasattr(type(x), "__await__")


_detached: set[asyncio.Future[Any]] = set()


def detach(aw: Awaitable[T]) -> asyncio.Future[T]:
    """Run an awaitable nobody waits for (a clunk after its fid went away) to its end.

    The event loop holds only a weak reference to a task, so one nobody keeps may be collected
    before it finishes; this set keeps it until it is done."""
    fut = asyncio.ensure_future(aw)
    _detached.add(fut)
    fut.add_done_callback(_detached.discard)
    return fut
