"""The descriptors of a node's children (their output pipes and pidfds) on one epoll of their own.

Every command registers three descriptors and removes them again within milliseconds when it is
as short as ``date``. Through the event loop each ``add_reader`` + ``remove_reader`` pair cost
7.1 µs here (a key, a handle, a selector entry and their lookups) against 1.8 µs on a bare epoll,
and every readiness became a handle of its own to queue and run. So the children's descriptors
live on this epoll, which the loop watches as one descriptor: registering is one system call and
a dict entry, and one wakeup runs every ready callback in a row: a leaf's CPU per ``date`` fell
by 4 % (``make bench-together OP=leaves``: both versions' leaves under one root).

Callbacks run on the loop's thread, as ``add_reader``'s do; one that raises is reported to the
loop's exception handler and the others still run. A descriptor must be unwatched before it is
closed (as with ``add_reader``).
"""

from __future__ import annotations

import asyncio
import select
import weakref
from collections.abc import Callable

_BATCH = 256  # events taken per wakeup; more wait for the next turn of the loop


class FdWatcher:
    __slots__ = ("_epoll", "_callbacks", "_loop", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._loop = weakref.ref(loop)  # (the loop holds us through its reader, not we it)
        loop.add_reader(self._epoll.fileno(), self._ready)

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback`` (level-triggered) while ``fd`` is readable, until :meth:`unwatch`."""
        if fd in self._callbacks:
            self._epoll.modify(fd, select.EPOLLIN)
        else:
            self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = callback

    def unwatch(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def __len__(self) -> int:
        return len(self._callbacks)

    def _ready(self) -> None:
        callbacks = self._callbacks
        for fd, _ in self._epoll.poll(0, _BATCH):
            cb = callbacks.get(fd)  # (None: unwatched by a callback before it in this batch)
            if cb is None:
                continue
            try:
                cb()
            except Exception as e:  # one child's trouble is not the others'
                loop = self._loop()
                if loop is not None:
                    loop.call_exception_handler({"message": f"callback for fd {fd} failed",
                                                 "exception": e})


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FdWatcher] = (
    weakref.WeakKeyDictionary())


def fd_watcher(loop: asyncio.AbstractEventLoop | None = None) -> FdWatcher:
    """The running (or given) loop's watcher, made when first needed; it goes with its loop."""
    if loop is None:
        loop = asyncio.get_running_loop()
    w = _watchers.get(loop)
    if w is None:
        w = _watchers[loop] = FdWatcher(loop)
    return w
