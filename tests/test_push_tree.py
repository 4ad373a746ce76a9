"""PUSH across a tree (issue 8): the same records as on one machine, bytes node to node, located
failures, nothing left running."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from brasil.push.cluster import ClusterRun
from brasil.push.local import PipelineFailed
from brasil.push.plan import make_plan
from brasil.push.syntax import parse
from fixtures import push_inputs, tree_124, wait_for


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return push_inputs(tmp_path_factory.mktemp("pushdata"), 3, 4, 30, 200, 300)


async def run(c, text: str, tmp: str, copies: int = 3) -> tuple[int, bytes]:
    plan = make_plan(parse(text)[0].pipelines[0], {}, copies)
    out = os.path.join(tmp, "out")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    null = os.open(os.devnull, os.O_RDONLY)
    err = os.open(os.path.join(tmp, "err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        status = await asyncio.wait_for(ClusterRun(c, plan, stdin=null, stdout=fd, stderr=err).run(),
                                        120)
    finally:
        for f in (fd, null, err):
            os.close(f)
    with open(out, "rb") as f:
        return status, f.read()


def sh(cmd: str, cwd: str) -> bytes:
    return subprocess.run(cmd, shell=True, capture_output=True, cwd=cwd, check=True).stdout


async def test_the_papers_examples_give_the_sequential_records_on_a_1_2_4_tree(data, tmp_path):
    async with tree_124(str(tmp_path), slots=3) as (nodes, c):
        d = str(data)
        status, out = await run(c, f"find {d} -type f -name '*.txt' |<[4] xargs wc -l >| sort -rn",
                                str(tmp_path))
        want = sh(f"find {d} -type f -name '*.txt' | xargs wc -l | sort -rn", d)
        assert status == 0
        assert Counter(ln for ln in out.decode().splitlines() if not ln.endswith(" total")) == \
            Counter(ln for ln in want.decode().splitlines() if not ln.endswith(" total"))
        status, out = await run(c, f"ls {d}/d0 |< cat | sort -n -r |#| uniq >| sort -n -r",
                                str(tmp_path))
        assert status == 0 and out == sh(f"ls {d}/d0 | sort -n -r | uniq | sort -n -r", d)
        status, out = await run(c, f"cat {d}/corpus |< tr -s ' ' '\\n' |#| sort | uniq -c "
                                f">| sort -rn | head", str(tmp_path))
        assert status == 0
        assert out == sh(f"cat {d}/corpus | tr -s ' ' '\\n' | sort | uniq -c | sort -rn | head", d)
        where = {n.node.name for n in nodes.values() for s in n.node.sessions.values()}
        assert not where, "sessions were left behind"


async def test_bytes_between_stages_do_not_pass_through_the_shell(data, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"".join(b"line %d of the input\n" % i for i in range(1_000_000)))  # 21 MB
    async with tree_124(str(tmp_path), slots=3) as (nodes, c):
        before = c.bytes_sent + c.bytes_received
        status, out = await run(c, f"cat {big} |<[4] cat |#[3]| cat >| wc -c", str(tmp_path))
        assert status == 0 and out.split() == [str(big.stat().st_size).encode()]
        through_shell = c.bytes_sent + c.bytes_received - before
        assert through_shell < big.stat().st_size / 50, through_shell


async def test_hash_sends_equal_keys_to_one_copy_across_nodes(tmp_path):
    src = tmp_path / "keys"
    src.write_bytes(b"".join(b"key%d %d\n" % (i % 41, i) for i in range(30000)))
    async with tree_124(str(tmp_path), slots=3) as (nodes, c):
        status, out = await run(c, f"cat {src} |<[3] cat |#[4]| "
                                "awk '{print ENVIRON[\"BRASIL_RANK\"], ENVIRON[\"BRASIL_NODE\"], $1}' "
                                ">| cat", str(tmp_path))
    assert status == 0
    owner: dict[str, tuple[str, str]] = {}
    rows = out.decode().splitlines()
    for row in rows:
        rank, node, key = row.split()
        assert owner.setdefault(key, (rank, node)) == (rank, node)
    assert len(rows) == 30000 and len({v[1] for v in owner.values()}) > 1


async def test_failures_name_stage_copy_node_and_stderr_and_leave_nothing(tmp_path):
    async with tree_124(str(tmp_path), slots=3) as (nodes, c):
        with pytest.raises(PipelineFailed, match=r"stage 2 `no-such-cmd-x` cannot start: "
                                                 r"no-such-cmd-x: command not found") as e:
            await run(c, "seq 1 10 |< no-such-cmd-x >| cat", str(tmp_path))
        assert e.value.status == 127
        with pytest.raises(PipelineFailed) as e:
            await run(c, "seq 1 1000000 |<[3] sh -c 'read x; echo gave up >&2; exit 5' >| cat",
                      str(tmp_path))
        msg = str(e.value)
        assert "stage 2" in msg and "(on node " in msg and "exit status 5" in msg
        assert "gave up" in msg and e.value.status == 5
        assert "exit status 5 before the end of its input" in msg
        # a non-zero status after the whole input (grep that found nothing) is an answer
        status, out = await run(c, "seq 1 300000 |<[4] grep -x 5 >| cat", str(tmp_path))
        assert (status, out) == (0, b"5\n")
        await wait_for(lambda: not any(s for n in nodes.values() for s in n.node.sessions.values()),
                       timeout=10)
        for n in nodes.values():
            assert len(n.node.free) == n.node.slots_total


# ---- a real tree of processes: kill -9 of a node mid-pipeline ----

def brasil(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "brasil.cli.main", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def test_a_node_killed_mid_pipeline_is_named_and_nothing_keeps_running(tmp_path):
    d = str(tmp_path / "c")
    up = brasil("cluster", "up", "--depth", "2", "--fanout", "2", "--slots", "2", "--dir", d)
    assert up.returncode == 0, up.stderr
    env = {**os.environ, "BRASIL": f"unix:{d}/n0.sock", "BRASIL_SECRET_FILE": f"{d}/secret"}
    marker = f"brasil-push-test-{os.getpid()}"
    try:
        push = subprocess.Popen(
            [sys.executable, "-m", "brasil.cli.push", "-c",
             f"yes {marker} |<[12] cat >| wc -l"], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

        def running() -> bool:  # every stage's session runs (all 14 slots: n1.1 has some)
            ls = brasil("ls", "/csrv/local", env=env).stdout.split()
            sids = [n.rstrip("/") for n in ls if n.rstrip("/").isdigit()]
            states = [brasil("cat", f"/csrv/local/{s}/ctl", env=env).stdout.split()[2:3]
                      for s in sids]
            return len(sids) == 3 and all(st == ["running"] for st in states)
        import time
        t0 = time.monotonic()
        while not running():
            if push.poll() is not None or time.monotonic() - t0 > 60:
                push.kill()
                raise AssertionError(f"push did not get going: {push.communicate()}")
            time.sleep(0.2)
        pid = int(open(f"{d}/n1.1.pid").read())
        os.kill(pid, 9)
        out, err = push.communicate(timeout=60)
        assert push.returncode != 0
        assert "n1.1" in err and "lost" in err, err
        t0 = time.monotonic()
        while subprocess.run(["pgrep", "-f", f"^(/usr/bin/)?yes {marker}"],
                             capture_output=True).returncode == 0:
            assert time.monotonic() - t0 < 20, "copies were left running"
            time.sleep(0.2)
        # Ctrl-C stops every stage everywhere, with one sentence and no traceback
        push = subprocess.Popen(
            [sys.executable, "-m", "brasil.cli.push", "-c", f"yes {marker}-int |<[4] cat >| wc -l"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while subprocess.run(["pgrep", "-f", f"^(/usr/bin/)?yes {marker}-int"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() - t0 < 60 and push.poll() is None, push.communicate()
            time.sleep(0.1)
        push.send_signal(signal.SIGINT)
        out, err = push.communicate(timeout=60)
        assert push.returncode == 130 and err == "push: interrupted; every stage was stopped\n", err
        t0 = time.monotonic()
        while subprocess.run(["pgrep", "-f", f"^(/usr/bin/)?yes {marker}-int"],
                             capture_output=True).returncode == 0:
            assert time.monotonic() - t0 < 20, "copies were left running after Ctrl-C"
            time.sleep(0.2)
    finally:
        brasil("cluster", "down", "--dir", d)


async def test_a_stage_that_closes_its_input_early_ends_upstream_on_the_tree(tmp_path):
    async with tree_124(str(tmp_path), slots=3) as (nodes, c):
        status, out = await run(c, "yes |<[3] cat | head -2 >| sort", str(tmp_path))
        assert status == 0 and out == b"y\n" * 6
        status, out = await run(c, "seq 1 100000000 |<[3] cat >| head -3", str(tmp_path))
        assert status == 0 and len(out.splitlines()) == 3
        # every record to one copy of the hash stage, which quits; the idle copies must end too
        status, out = await run(c, "yes |<[2] cat |#[2]| cat >| head -2", str(tmp_path))
        assert status == 0 and out == b"y\ny\n"
        await wait_for(lambda: not any(s for n in nodes.values() for s in n.node.sessions.values()),
                       timeout=10)
