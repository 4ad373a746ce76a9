"""A value now, or an awaitable when the answer has to wait.

Handlers throughout Brasil return :data:`Maybe` values so that the common case — the answer is
ready — costs no task and no extra trip round the event loop; only answers that must wait are
awaited. :func:`is_awaitable` is the cheap test the server and the streams use to tell them apart.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar, Union

T = TypeVar("T")
Maybe = Union[T, Awaitable[T]]  # a value now, or an awaitable when the answer has to wait


def is_awaitable(x: object) -> bool:
    """Cheaper than inspect.isawaitable on the hot path: bytes and ints have no __await__."""
    return hasattr(type(x), "__await__")
