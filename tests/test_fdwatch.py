"""exec/fdwatch.py: children's descriptors on one epoll the loop watches as a single descriptor."""

from __future__ import annotations

import asyncio
import gc
import os
import weakref

from brasil.exec.fdwatch import FdWatcher, fd_watcher


async def wait_for(cond, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.005)


def pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, w


async def test_a_readable_descriptor_calls_back_until_unwatched():
    w_ = fd_watcher()
    r, w = pipe()
    got: list[bytes] = []
    try:
        w_.watch(r, lambda: got.append(os.read(r, 100)))
        os.write(w, b"one")
        await wait_for(lambda: got, "callback")
        assert got == [b"one"]
        w_.unwatch(r)
        os.write(w, b"two")
        for _ in range(20):  # a few turns of the loop: nothing may come now
            await asyncio.sleep(0)
        assert got == [b"one"] and len(w_) == 0
        w_.watch(r, lambda: got.append(os.read(r, 100)))  # again: what waited is read now
        await wait_for(lambda: len(got) == 2, "second callback")
        assert got[1] == b"two"
        w_.unwatch(r)
        w_.unwatch(r)  # twice is harmless
    finally:
        os.close(r)
        os.close(w)


async def test_watching_again_replaces_the_callback():
    w_ = fd_watcher()
    r, w = pipe()
    seen: list[str] = []
    try:
        w_.watch(r, lambda: seen.append("first"))
        w_.watch(r, lambda: (seen.append("second"), os.read(r, 100)))
        os.write(w, b"x")
        await wait_for(lambda: seen, "callback")
        assert seen == ["second"] and len(w_) == 1
    finally:
        w_.unwatch(r)
        os.close(r)
        os.close(w)


async def test_a_failing_callback_is_reported_and_the_others_still_run():
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    w_ = fd_watcher()
    (r1, w1), (r2, w2) = pipe(), pipe()
    got: list[bytes] = []

    def bad() -> None:
        os.read(r1, 100)
        raise RuntimeError("boom")

    try:
        w_.watch(r1, bad)
        w_.watch(r2, lambda: got.append(os.read(r2, 100)))
        os.write(w1, b"a")
        os.write(w2, b"b")
        await wait_for(lambda: got and reported, "both callbacks")
        assert got == [b"b"]
        assert isinstance(reported[0]["exception"], RuntimeError)
        assert f"fd {r1}" in reported[0]["message"]
    finally:
        loop.set_exception_handler(None)
        w_.unwatch(r1)
        w_.unwatch(r2)
        for fd in (r1, w1, r2, w2):
            os.close(fd)


async def test_a_callback_that_unwatches_another_ready_one_stops_it_in_the_same_batch():
    w_ = fd_watcher()
    (r1, w1), (r2, w2) = pipe(), pipe()
    calls: list[int] = []

    def first(me: int, other: int) -> None:
        calls.append(me)
        os.read(me, 100)
        w_.unwatch(other)  # both were ready: the other must not be called after this

    try:
        w_.watch(r1, lambda: first(r1, r2))
        w_.watch(r2, lambda: first(r2, r1))
        os.write(w1, b"a")
        os.write(w2, b"b")
        await wait_for(lambda: calls, "a callback")
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(calls) == 1 and len(w_) == 1
    finally:
        w_.unwatch(r1)
        w_.unwatch(r2)
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_each_loop_has_its_own_watcher_and_it_goes_with_its_loop():
    loops = [asyncio.new_event_loop() for _ in range(2)]
    try:
        ws = [fd_watcher(loop) for loop in loops]
        assert ws[0] is not ws[1] and fd_watcher(loops[0]) is ws[0]
        assert all(isinstance(w, FdWatcher) for w in ws)
        gone = weakref.ref(ws[1])
        epoll_fd = ws[1]._epoll.fileno()
        assert os.path.exists(f"/proc/self/fd/{epoll_fd}")
    finally:
        for loop in loops:
            loop.close()
    del ws, loops, loop
    gc.collect()
    assert gone() is None  # and its epoll with it: a test suite makes thousands of loops
    target = os.readlink(f"/proc/self/fd/{epoll_fd}") if os.path.exists(
        f"/proc/self/fd/{epoll_fd}") else ""
    assert "eventpoll" not in target
