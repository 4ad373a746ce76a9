"""`brasil run` (issue 11): one command on many nodes, as pdsh and clush users expect."""

from __future__ import annotations

import asyncio
import io

import pytest

from brasil.client.run import RunError, run
from fixtures import tree_13, wait_for


async def collect(c, command: str, **kw):
    out: list[str] = []
    err: list[str] = []
    result = await asyncio.wait_for(run(c, command, out=out.append, err=err.append, **kw), 60)
    return result, out, err


async def test_every_rank_prints_prefixed_lines_and_b_groups_them(tmp_path):
    async with tree_13(str(tmp_path)) as (nodes, c):
        result, out, err = await collect(c, "echo host-like; echo second", n=8)
        assert result.status == 0
        by_rank: dict[str, list[str]] = {}
        for line in out:
            label, _, text = line.partition(": ")
            by_rank.setdefault(label, []).append(text)
        assert len(by_rank) == 8 and all(v == ["host-like", "second"] for v in by_rank.values())
        assert {lb.split("/")[0] for lb in by_rank} == {"n0", "n1", "n2", "n3"}
        assert sorted(int(lb.split("/")[1]) for lb in by_rank) == list(range(8))
        result, out, err = await collect(c, "echo same", n=8, group=True)
        assert out == ["-" * 15, "n[0-3] (8 ranks: 0-7)", "-" * 15, "same"]
        result, out, err = await collect(c, "echo $BRASIL_RANK", n=8, group=True)
        assert out[1] == f"{result.nodes[0]} (1 rank: 0)"  # the node holds other ranks too
        result, out, err = await collect(c, "echo $BRASIL_NODE", nodeset="n[1-3]", group=True)
        assert out[:4] == ["-" * 15, "n1 (1)", "-" * 15, "n1"] and "n[1-3]" not in out
        # outputs with no final newline stay one line per rank, never run into the next rank's
        result, out, err = await collect(c, "printf x", n=8)
        assert sorted(line.partition(": ")[2] for line in out) == ["x"] * 8, out
        result, out, err = await collect(c, "printf 'a\\nb'", n=8, group=True)
        assert out == ["-" * 15, "n[0-3] (8 ranks: 0-7)", "-" * 15, "a", "b"]


async def test_the_status_is_the_largest_of_the_ranks(tmp_path):
    async with tree_13(str(tmp_path)) as (nodes, c):
        result, out, err = await collect(c, 'sh -c "[ $BRASIL_RANK = 5 ] && exit 3; exit 0"', n=8)
        assert result.status == 3 and result.statuses[5] == 3
        result, _, _ = await collect(c, "true")  # default: once on every node
        assert result.status == 0 and sorted(result.nodes.values()) == ["n0", "n1", "n2", "n3"]


async def test_failed_ranks_are_named_with_their_code_and_never_grouped_with_others(tmp_path):
    """Issue 16 §5: `test $BRASIL_NODE != n2` printed nothing and exited 1; under -b the failed
    node sat in the group of those that succeeded, and an `exit 4` group did not show its code."""
    async with tree_13(str(tmp_path)) as (nodes, c):
        result, out, err = await collect(c, 'sh -c "test $BRASIL_NODE != n2"')
        assert result.status == 1
        assert err == [f"brasil run: n2/{r}: exited with exit code 1" for r, n in result.nodes.items()
                       if n == "n2"], err
        result, out, err = await collect(
            c, 'sh -c "echo same; [ $BRASIL_NODE = n2 ] && exit 4; [ $BRASIL_NODE = n3 ] && '
               'exit 1; exit 0"', group=True)
        assert result.status == 4
        heads = [out[i + 1] for i, line in enumerate(out) if line == "-" * 15 and i % 4 == 0]
        assert sorted(heads) == ["n2 (1) exit 4", "n3 (1) exit 1", "n[0-1] (2)"], out
        assert err == ["brasil run: n3 (1): exited with exit code 1",
                       "brasil run: n2 (1): exited with exit code 4"]


async def test_x_excludes_N_drops_the_prefix_and_b_sorts_by_node(tmp_path):
    """Issue 16 §7: what clush users reach for."""
    async with tree_13(str(tmp_path)) as (nodes, c):
        result, out, err = await collect(c, "echo $BRASIL_NODE", exclude="n[1,3]")
        assert sorted(line.split(": ")[1] for line in out) == ["n0", "n2"]
        result, out, err = await collect(c, "echo $BRASIL_NODE", nodeset="n[1-3]", exclude="n2",
                                         label=False)
        assert sorted(out) == ["n1", "n3"]
        result, out, err = await collect(c, "echo $BRASIL_NODE", group=True)
        assert [out[i] for i in range(1, len(out), 4)] == ["n0 (1)", "n1 (1)", "n2 (1)", "n3 (1)"]
        with pytest.raises(RunError, match="no node left"):
            await run(c, "true", exclude="n[0-3]")
        with pytest.raises(RunError, match="with -n N the tree chooses"):
            await run(c, "true", n=2, exclude="n1")


async def test_every_bad_node_set_is_a_usage_error(tmp_path):
    """A malformed set exited 1 and an unknown node 2: both are the command line's fault."""
    async with tree_13(str(tmp_path)) as (nodes, c):
        with pytest.raises(RunError, match=r"bad node set 'n\[0-'"):
            await run(c, "true", nodeset="n[0-")
        with pytest.raises(RunError, match=r"bad node set"):
            await run(c, "true", exclude="n[0-")


async def test_a_node_set_naming_missing_nodes_is_refused_naming_them(tmp_path):
    async with tree_13(str(tmp_path)) as (nodes, c):
        with pytest.raises(RunError, match=r"no such nodes in the tree: n\[7-9\]"):
            await run(c, "true", nodeset="n[1,7-9]")
        assert not nodes["n0"].node.sessions  # nothing was made


async def test_stdin_is_broadcast_or_spread(tmp_path, monkeypatch):
    async with tree_13(str(tmp_path)) as (nodes, c):
        data = io.BytesIO(b"".join(b"%d\n" % i for i in range(100)))
        monkeypatch.setattr(data, "isatty", lambda: False)  # a pipe, as stdin would be
        monkeypatch.setattr(data, "fileno", _pipe_of(data.getvalue()))
        result, out, _ = await collect(c, "wc -l", n=4, mux="rr", stdin=data)
        assert sorted(int(line.split(": ")[1]) for line in out) == [25, 25, 25, 25]


def _pipe_of(payload: bytes):
    import os
    import threading
    r, w = os.pipe()

    def feed() -> None:
        os.write(w, payload)
        os.close(w)
    threading.Thread(target=feed, daemon=True).start()
    return lambda: r


async def test_timeout_kills_every_rank_and_names_them(tmp_path):
    async with tree_13(str(tmp_path)) as (nodes, c):
        result, out, err = await collect(c, "sleep 30", n=6, timeout=0.5)
        assert sorted(result.cut) == list(range(6))
        assert any("cut short: ranks 0-5" in e for e in err)
        await wait_for(lambda: all(len(d.node.free) == d.node.slots_total for d in nodes.values()),
                       timeout=10)


async def test_the_command_line(tmp_path):
    from helpers import run_cli
    async with tree_13(str(tmp_path)) as (nodes, c):
        at = ("--at", f"unix:{nodes['n0'].unix.path}")
        rc, out, err = await run_cli("run", *at, "-n", "4", "--", "echo", "hi there")
        assert rc == 0 and sorted(line.split(": ")[1] for line in out.splitlines()) == \
            ["hi there"] * 4
        rc, out, err = await run_cli("run", *at, "-w", "n[2,8]", "--", "true")
        assert rc == 2 and "no such node in the tree: n8" in err
        # several words are kept whole, as the shell here split them
        rc, out, err = await run_cli("run", *at, "-n", "2", "--", "sh", "-c", "echo one; echo two")
        assert rc == 0 and sorted(line.split(": ")[1] for line in out.splitlines()) == \
            ["one", "one", "two", "two"]
        rc, out, err = await run_cli("run", *at, "-n", "2", "--", "printf", "%s\\n", "it's")
        assert rc == 0 and [line.split(": ")[1] for line in out.splitlines()] == ["it's"] * 2, err
        rc, out, err = await run_cli("run", *at, "-n", "2", "--mux", "hash", "1", "--", "wc", "-l")
        assert rc == 0, err
        rc, out, err = await run_cli("run", *at, "-n", "1", "--", "printf '%s\\n' 'a\\b'\necho \"c'd\"")
        assert rc == 0 and [line.split(": ")[1] for line in out.splitlines()] == ["a\\b", "c'd"]
        rc, out, err = await run_cli("run", *at, "--", "no-such-command-here")
        assert rc == 127 and "no-such-command-here: command not found" in err
        rc, out, err = await run_cli("run", *at, "--timeout", "0", "--", "true")
        assert rc == 2 and "--timeout 0: give a number of seconds above 0" in err
