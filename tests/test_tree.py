"""The tree: children join their parent and both see each other's namespace (SPEC.md §4)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types

import pytest

from brasil.ninep.client import Client
from brasil.ninep.errors import NinepError
from brasil.tree.link import HEARTBEAT, HEARTBEAT_TIMEOUT, Attempt
from brasil.tree.registry import POLL_PERIOD, POLL_TIMEOUT
from fixtures import daemon, wait_for

SECRET = b"the tree's shared secret, long enough"


async def test_a_child_joins_and_both_sides_see_each_other(tmp_path):
    async with daemon(str(tmp_path), "root", secret=SECRET) as root:
        async with daemon(str(tmp_path), "n1", parent=root.tcp, secret=SECRET) as n1:
            await wait_for(lambda: "n1" in root.children.by_name, timeout=10)
            c = await Client.connect(root.unix)
            assert sorted(s.name for s in await c.ls("csrv")) == ["local", "n1", "query"]
            assert await c.read("csrv/n1/local/arch") == await c.read("csrv/local/arch")
            # The child serves the parent as /csrv/parent.
            cc = await Client.connect(n1.unix)
            assert "root 4 4" in (await cc.read("csrv/parent/local/status")).decode()
            # A session on the child, driven from the root.
            sid = (await c.read("csrv/n1/local/clone")).decode().strip()
            await c.write(f"csrv/n1/local/{sid}/ctl", "exec echo $BRASIL_NODE\n")
            assert await c.read(f"csrv/n1/local/{sid}/stdio") == b"n1\n"
            # The root's status covers its subtree.
            await wait_for(lambda: len(root.children.status_lines()) == 1, timeout=5)
            status = (await c.read("csrv/local/status")).decode().splitlines()
            assert [ln.split()[0] for ln in status] == ["root", "n1", "total"]
            assert status[-1].startswith("total 8 ")
            await c.close()
            await cc.close()


async def test_siblings_reach_each_other_through_the_parent(tmp_path):
    async with daemon(str(tmp_path), "root") as root:
        async with daemon(str(tmp_path), "a", parent=root.unix) as a, \
                daemon(str(tmp_path), "b", parent=root.unix):
            await wait_for(lambda: len(root.children.by_name) == 2, timeout=10)
            await wait_for(lambda: a.parent.joined.is_set(), timeout=10)
            c = await Client.connect(a.unix)
            sid = (await c.read("csrv/parent/b/local/clone")).decode().strip()
            await c.write(f"csrv/parent/b/local/{sid}/ctl", "exec echo from $BRASIL_NODE\n")
            assert await c.read(f"csrv/parent/b/local/{sid}/stdio") == b"from b\n"
            await c.close()


async def test_a_child_with_the_wrong_secret_cannot_join(tmp_path, caplog):
    async with daemon(str(tmp_path), "root", secret=SECRET) as root:
        async with daemon(str(tmp_path), "intruder", parent=root.tcp,
                          secret=b"a different secret, also long") as bad:
            await wait_for(lambda: any("authentication failed" in r.getMessage()
                                       for r in caplog.records), timeout=10)
            assert "intruder" not in root.children.by_name
            assert not bad.parent.joined.is_set()


async def test_a_join_the_parent_drops_at_once_is_retried_with_a_wait_not_in_a_loop(
        tmp_path, caplog):
    """A parent without the secret takes our join over its Unix socket, then cannot
    authenticate back to us and drops us: the child retried at once, forever (half a million
    joins in 25 minutes, two daemons at 40 % of a core each, 150 MB of log). Now it waits,
    doubling, and says which secret to give."""
    async with daemon(str(tmp_path), "root") as root:  # no secret
        async with daemon(str(tmp_path), "k1", parent=root.unix, secret=SECRET):
            await wait_for(lambda: any("dropped us right after our join" in r.getMessage()
                                       for r in caplog.records), timeout=10)
            loop = asyncio.get_running_loop()
            start, joins = loop.time(), lambda: sum(
                "joined the tree" in r.getMessage() for r in caplog.records)
            before = joins()
            await asyncio.sleep(3)  # (the rate is what is measured: a window, not a wait)
            assert joins() - before <= 4, f"{joins() - before} joins in {loop.time() - start:.1f}s"
            said = next(r.getMessage() for r in caplog.records
                        if "dropped us right after our join" in r.getMessage())
            assert "both need the same --secret-file" in said


async def test_a_dead_child_disappears_and_a_restarted_one_rejoins(tmp_path):
    async with daemon(str(tmp_path), "root") as root:
        async with daemon(str(tmp_path), "n1", parent=root.unix) as n1:
            await wait_for(lambda: "n1" in root.children.by_name, timeout=10)
            old = root.children.by_name["n1"]
            n1.parent.client.abort()  # the link breaks: the child redials on its own
            await wait_for(lambda: root.children.by_name.get("n1") not in (None, old), timeout=10)
        await wait_for(lambda: "n1" not in root.children.by_name, timeout=5)
        c = await Client.connect(root.unix)
        assert [s.name for s in await c.ls("csrv")] == ["local", "query"]
        with pytest.raises(NinepError, match="does not exist"):
            await c.read("csrv/n1/local/arch")
        async with daemon(str(tmp_path), "n1", parent=root.unix):
            await wait_for(lambda: "n1" in root.children.by_name, timeout=10)
            assert (await c.read("csrv/n1/local/arch")).startswith(b"linux")
        await c.close()


async def test_a_child_keeps_serving_when_its_parent_goes_and_rejoins_when_it_returns(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        root = await stack.enter_async_context(daemon(str(tmp_path), "root"))
        n1 = await stack.enter_async_context(daemon(str(tmp_path), "n1", parent=root.unix))
        await wait_for(lambda: n1.parent.joined.is_set(), timeout=10)
        await root.stop()  # the parent goes away; the child must notice and keep serving
        await wait_for(lambda: not n1.parent.joined.is_set(), timeout=10)
        c = await Client.connect(n1.unix)
        assert [s.name for s in await c.ls("csrv")] == ["local", "query"]
        assert (await c.read("csrv/local/arch")).startswith(b"linux")
        async with daemon(str(tmp_path), "root") as root2:  # same address: it comes back
            await wait_for(lambda: "n1" in root2.children.by_name, timeout=15)
            assert (await c.read("csrv/parent/local/arch")).startswith(b"linux")
        await c.close()


async def test_a_splice_stopped_by_its_session_ends_quietly_without_a_logged_traceback():
    """Closing a session cancels its direct splices' tasks; on Python 3.11 a cancelled stream
    handler was logged as 'Exception in callback … CancelledError' with a traceback."""
    import asyncio

    from brasil.tree.data import DataEndpoint, frame

    loop = asyncio.get_running_loop()
    logged: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context))

    class Sink:
        closed = False

        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    ep = DataEndpoint()
    addr = await ep.start()
    try:
        sink = Sink()
        [t] = ep.expect("tok", [sink], "0")
        _, writer = await asyncio.open_connection(addr.host, addr.port)
        writer.write(frame(b"tok"))
        await wait_for(lambda: t.state == "running" and t.task is not None)
        assert t.task is not None
        t.task.cancel()  # what a session's close does
        await wait_for(lambda: sink.closed and ep.open == 0)
        for _ in range(3):  # the stream's done-callback runs after the task has ended
            await asyncio.sleep(0)
        assert logged == []
        writer.close()
    finally:
        ep.close()
        loop.set_exception_handler(None)


async def test_a_child_that_stood_still_itself_does_not_blame_its_parent(tmp_path, caplog):
    # A daemon starved of CPU, stopped or blocked polls nobody and is polled by nobody while
    # it stands still; the parent's polls sent meanwhile wait unread in its socket. Here parent
    # and child share one process, so both stand still (their loop blocked for longer than the
    # heartbeat timeout): the child must count that silence as its own and stay joined, as it
    # would if its parent had polled all along.
    async with daemon(str(tmp_path), "root") as root:
        async with daemon(str(tmp_path), "n1", parent=root.unix) as n1:
            await wait_for(lambda: n1.parent.joined.is_set() and "n1" in root.children.by_name,
                           timeout=10)
            steps: list[str] = []
            step = n1.parent._step
            n1.parent._step = lambda event: (steps.append(event), step(event))[1]
            child = root.children.by_name["n1"]
            time.sleep(HEARTBEAT_TIMEOUT + 0.7)  # the whole process stands still
            await wait_for(lambda: any("stood still" in r.getMessage() for r in caplog.records),
                           timeout=5)
            await asyncio.sleep(2 * HEARTBEAT)  # (a window: two more checks find it polled)
            assert steps == [], steps
            assert n1.parent.joined.is_set()
            assert root.children.by_name.get("n1") is child  # the parent kept it as well


async def test_a_parent_that_stood_still_mid_poll_keeps_its_child(tmp_path, caplog):
    # The other side: the process stands still while the parent's read of its child's
    # heartbeat is in flight (here the child's answer blocks it, 3.5 s, longer than the poll's
    # timeout). The answer is then in the parent's socket: the parent must read it rather than
    # count the time it stood still against the child.
    async with daemon(str(tmp_path), "root") as root:
        async with daemon(str(tmp_path), "n1", parent=root.unix) as n1:
            await wait_for(lambda: n1.parent.joined.is_set() and "n1" in root.children.by_name,
                           timeout=10)
            child = root.children.by_name["n1"]
            answer = n1.children.heartbeat
            stalled = []

            def slow_answer(seen: int) -> tuple[str, int]:
                if not stalled:
                    stalled.append(True)
                    time.sleep(POLL_TIMEOUT + 0.5)  # the whole process stands still, mid-poll
                return answer(seen)
            n1.children.heartbeat = slow_answer
            await wait_for(lambda: stalled, timeout=5)
            await wait_for(lambda: any("stood still" in r.getMessage() for r in caplog.records),
                           timeout=5)
            await asyncio.sleep(2 * POLL_PERIOD)  # (a window: two more polls go through)
            assert root.children.by_name.get("n1") is child
            assert not any("child n1 lost" in r.getMessage() for r in caplog.records)


async def test_a_pardon_takes_off_the_stall_and_never_reaches_past_now():
    # Unit rule of the child's check: silence is counted without the time we stood still,
    # but a poll heard just now is not followed by a grace period a dead parent could hide in.
    loop = asyncio.get_running_loop()
    a = Attempt(None)  # type: ignore[arg-type]
    a.served = types.SimpleNamespace(last_heard=loop.time() - 4.0)  # type: ignore[assignment]
    a.pardon(3.0)  # we stood still 3 of those 4 seconds
    assert 0.9 < a.silent_for() < 1.5
    a.served.last_heard = loop.time()  # the parent's poll, read first after the stall
    a.pardon(3.0)
    assert a.pardoned <= loop.time() and a.silent_for() >= 0.0
