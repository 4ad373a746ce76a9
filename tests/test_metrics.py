"""Metrics' pieces: the sampler on this machine, summaries, the history store, Prometheus text."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brasil.metrics.history import MAX_POINTS, History, HistoryError, observations
from brasil.metrics.prom import exposition
from brasil.metrics.sample import METRICS, Sampler
from brasil.metrics.summary import Summary
from brasil.ninep.errors import NinepError


def test_a_sample_has_every_machine_metric_and_the_daemons_own():
    s = Sampler(lambda: {"slots": 4, "free_slots": 3, "sessions": 1, "bogus": 9})
    first, second = s.sample(), s.sample()
    assert second["mem_total_bytes"] > second["mem_used_bytes"] > 0
    assert second["cores"] >= 1 and second["processes"] > 1
    assert second["slots"] == 4 and "bogus" not in second
    assert set(first) == set(second) and set(second) <= set(METRICS)
    assert all(math.isfinite(v) and v >= 0 for v in second.values())


samples = st.dictionaries(st.sampled_from(["a", "b", "c"]),
                          st.floats(-1e6, 1e6, allow_nan=False), max_size=3)


@settings(max_examples=200, deadline=None)
@given(st.lists(samples, max_size=12), st.integers(1, 5))
def test_a_summary_merged_in_any_tree_shape_is_the_flat_one(rows, cut):
    parts = [Summary.of(f"n{i}", row) for i, row in enumerate(rows)]
    flat = Summary.of_all(Summary.of(f"n{i}", row) for i, row in enumerate(rows))
    groups = [Summary.of_all(parts[i:i + cut]) for i in range(0, len(parts), cut)]
    shaped = Summary.loads(Summary.of_all(Summary.loads(g.dumps()) for g in groups).dumps())
    assert shaped.nodes == flat.nodes == len(rows)
    for k, s in flat.stats.items():
        got = shaped.stats[k]
        assert (got.count, got.min, got.max) == (s.count, s.min, s.max)
        assert got.sum == pytest.approx(s.sum)


def test_byte_counters_keep_every_digit_in_the_text_forms():
    """The text forms are parsed again at each level: six significant digits lost a terabyte
    counter's last six (1234567890123 was 1.23457e+12)."""
    s = Summary.of_all([Summary.of("n1", {"net_rx_bytes": 1234567890123.0}),
                        Summary.of("n2", {"net_rx_bytes": 1.0})])
    assert s.lines() == ["net_rx_bytes 2 1234567890124 617283945062 1 n2 1234567890123 n1"]


def test_a_malformed_summary_is_a_sentence():
    for bad in (b'{"nodes": "x"}', b'{"nodes": 1, "stats": {"a": [1]}}', b"[]"):
        with pytest.raises(ValueError, match="malformed metrics summary"):
            Summary.loads(bad)


def test_history_keeps_resolutions_and_answers_a_range(tmp_path):
    h = History(str(tmp_path / "m.sqlite"), resolutions=((5, 60), (60, 3600)))
    t0 = 60 * 16_666_667  # a multiple of 60
    for i in range(120):  # 10 minutes every 5 s
        h.record(t0 + 5 * i, "self", observations({"load1": float(i)}, "n1"))
    fine = h.query("self", "load1", t0 + 540, t0 + 600, 5, now=t0 + 600)
    assert [p.mean for p in fine] == [float(i) for i in range(108, 120)]
    coarse = h.query("self", "load1", t0, t0 + 600, 60, now=t0 + 600)
    assert len(coarse) == 10 and coarse[0].mean == pytest.approx(5.5)
    assert (coarse[0].min, coarse[0].max) == (0.0, 11.0)
    # The 5 s buckets are kept a minute: older ones were deleted as time went on.
    assert h.rows() < 120 + 10 + 30
    h.close()
    again = History(str(tmp_path / "m.sqlite"), resolutions=((5, 60), (60, 3600)))
    assert len(again.query("self", "load1", t0, t0 + 600, 60, now=t0 + 600)) == 10
    again.close()


def test_a_beats_two_series_go_in_together_or_not_at_all(tmp_path):
    """A beat records the node's series and its subtree's in one transaction: both are there
    after it, and a bad series anywhere in it writes neither."""
    h = History(str(tmp_path / "m.sqlite"), resolutions=((5, 60),))
    t0 = 60 * 16_666_667
    h.record_many(t0, [("self", observations({"load1": 2.0}, "n1")),
                       ("subtree", observations({"load1": 3.0}, "n1"))])
    assert [p.mean for p in h.query("self", "load1", t0, t0 + 5, 5, now=t0 + 5)] == [2.0]
    assert [p.mean for p in h.query("subtree", "load1", t0, t0 + 5, 5, now=t0 + 5)] == [3.0]
    rows = h.rows()
    with pytest.raises(HistoryError, match="series 'bogus'"):
        h.record_many(t0 + 5, [("self", observations({"load1": 4.0}, "n1")), ("bogus", {})])
    assert h.rows() == rows
    h.close()


def test_an_absurd_query_is_refused_with_what_to_ask():
    h = History()
    with pytest.raises(HistoryError, match="ask for a step of at least"):
        h.plan(1000, 1000 + 10 * MAX_POINTS * 5, 5, now=1000)  # a range years long, at 5 s
    with pytest.raises(HistoryError, match="start < end"):
        h.plan(10, 5, 1)
    with pytest.raises(HistoryError, match="series"):
        h.record(0, "bogus", {})


def test_prometheus_text_names_every_node_and_the_subtree():
    nodes = {"n0": {"load1": 1.0, "slots": 2.0}, "n1": {"load1": 3.0, "slots": 2.0}}
    summary = Summary.of_all(Summary.of(n, s) for n, s in nodes.items())
    text = exposition("n0", nodes, summary).decode()
    assert 'brasil_load1{node="n1"} 3.0' in text
    assert 'brasil_subtree_slots{agg="sum",root="n0"} 4.0' in text
    assert 'brasil_subtree_nodes{root="n0"} 2.0' in text
    from prometheus_client.parser import text_string_to_metric_families
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "brasil_load1" in names


# In the tree ------------------------------------------------------------------------------

async def test_the_root_holds_its_subtree_summary_and_reads_every_node_on_demand(tmp_path):
    import json

    from fixtures import tree_13, wait_for
    async with tree_13(str(tmp_path)) as (nodes, c):
        services = {name: d.metrics for name, d in nodes.items()}
        root = services["n0"]
        await beat_up(services)
        assert root.summary.nodes == 4
        st = root.summary.stats["slots"]
        assert (st.count, st.sum) == (4, 8.0)  # 4 nodes of 2 slots
        text = (await c.read("csrv/local/metrics/subtree")).decode()
        assert any(ln.startswith("slots 4 8 2 ") for ln in text.splitlines()), text
        now = (await c.read("csrv/local/metrics/now")).decode()
        assert "load1 " in now and "free_slots 2\n" in now
        every = json.loads(await c.read("csrv/local/metrics/nodes"))
        assert sorted(every) == ["n0", "n1", "n2", "n3"]
        prom = (await c.read("csrv/local/metrics/prometheus")).decode()
        assert 'brasil_slots{node="n3"} 2.0' in prom
        f = await c.open("csrv/local/metrics/history", 2)
        await f.write(b"slots subtree -60", 0)
        points = (await f.read_all()).decode().splitlines()
        await f.close()
        # TIME MEAN MIN MAX TOTAL: every node has 2 slots (the subtree's total depends on
        # how many beats, with how many children known, fell in the bucket)
        assert points and points[-1].split()[1:4] == ["2", "2", "2"]
        f = await c.open("csrv/local/metrics/history", 2)
        await f.write(b"bogus", 0)
        with pytest.raises(Exception, match="unknown metric 'bogus'"):
            await f.read_all()
        await f.close()
        # The group reads reduce the rows over the nodes a query selects.
        from brasil.client import group as api
        from brasil.metrics.sample import METRICS
        got = await api.gread(c, "metrics/row", "name=n[1-3]", "sum")
        assert got["nodes"] == ["n1", "n2", "n3"]
        assert got["value"][list(METRICS).index("slots")] == 6.0
        columns = (await c.read("csrv/local/metrics/columns")).decode().split()
        assert columns == list(METRICS)
        # A child without such a file (an older daemon): a sentence naming both.
        with pytest.raises(NinepError, match=r"n1: metrics/nothing-here: .*older daemon"):
            await root._child_file(nodes["n0"].children.by_name["n1"], "nothing-here")
        # A child gone: the next beat's summary covers the others.
        await nodes["n3"].stop()
        await wait_for(lambda: "n3" not in nodes["n0"].children.by_name
                       or nodes["n0"].children.by_name["n3"].gone, 20)
        await root.beat()
        assert root.summary.nodes == 3


async def beat_up(services: dict) -> None:  # type: ignore[type-arg]
    """One beat on every node, leaves first, so the root's summary covers the tree (rather
    than waiting for the daemons' own beats, seconds apart)."""
    for depth in sorted({n.count(".") + (n != "n0") for n in services}, reverse=True):
        for name, s in services.items():
            if name.count(".") + (name != "n0") == depth:
                await s.beat()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_real_prometheus_scraping_only_the_root_sees_all_13_nodes(tmp_path):
    import asyncio
    import json
    import shutil
    import subprocess
    import urllib.parse
    import urllib.request

    from brasil.group.metrics import serve_prometheus
    from trees import tree_1_3_9
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("needs Debian's prometheus (make test-deps installs it)")
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        services = {name: d.metrics for name, d in nodes.items()}
        await beat_up(services)
        server, port = await serve_prometheus(services["n0"], "127.0.0.1", 0)
        web = _free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: brasil\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        prom = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path}/prometheus.yml",
             f"--storage.tsdb.path={tmp_path}/data", f"--web.listen-address=127.0.0.1:{web}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ask(q: str) -> list:
            url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)["data"]["result"]
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 90
            while True:
                try:
                    got = await asyncio.to_thread(ask, "count(brasil_slots)")
                    if got and got[0]["value"][1] == "13":
                        break
                except OSError:
                    pass  # not listening yet
                assert loop.time() < end, "Prometheus never saw 13 nodes"
                await asyncio.sleep(0.5)
            total = await asyncio.to_thread(ask, "sum(brasil_slots)")
            assert total[0]["value"][1] == "26"
            agg = await asyncio.to_thread(ask, 'brasil_subtree_slots{agg="count"}')
            assert agg[0]["value"][1] == "13"
        finally:
            prom.terminate()
            prom.wait(timeout=30)
            await server.stop()


# Another local user's program: holds N connections open to the endpoint, sending nothing,
# until its stdin closes.
IDLER = """
import socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]
print(len(held), flush=True)
sys.stdin.read()
"""


async def test_the_prometheus_endpoint_hammered_by_idle_connections_stays_bounded(tmp_path):
    # Issue 20, bad input: prometheus_client's server made a thread per connection, without a
    # bound; 200 idle connections (anyone's on this machine) were 200 threads. Now they cost no
    # thread, at most MAX_CONNECTIONS are held, and a real scrape still answers for 13 nodes.
    import asyncio
    import os
    import sys
    import threading
    import urllib.request

    from brasil.group.metrics import MAX_CONNECTIONS, serve_prometheus
    from fixtures import wait_for
    from trees import tree_1_3_9
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        services = {name: d.metrics for name, d in nodes.items()}
        await beat_up(services)
        endpoint, port = await serve_prometheus(services["n0"], "127.0.0.1", 0)
        threads = threading.active_count()
        idler = await asyncio.create_subprocess_exec(
            sys.executable, "-c", IDLER, "200", str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            assert (await asyncio.wait_for(idler.stdout.readline(), 60)).strip() == b"200"
            await wait_for(lambda: endpoint.evicted >= 200 - MAX_CONNECTIONS, timeout=30)
            assert endpoint.connections() <= MAX_CONNECTIONS
            executor = min(32, (os.cpu_count() or 1) + 4)  # the loop's default executor's bound
            assert threading.active_count() <= threads + executor  # not one per connection

            def scrape() -> bytes:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                    return r.read()
            for _ in range(3):  # each scrape takes the place of the oldest idle connection
                body = await asyncio.to_thread(scrape)
                assert body.count(b"brasil_slots{node=") == 13, body[:500]
            assert endpoint.connections() <= MAX_CONNECTIONS
        finally:
            idler.stdin.close()
            await idler.wait()
        await wait_for(lambda: endpoint.connections() == 0, timeout=30)  # none left behind
        await endpoint.stop()


async def _http(port: int, request: bytes) -> bytes:
    """What the endpoint answers to ``request`` before it closes the connection."""
    import asyncio
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_the_prometheus_endpoint_refuses_what_is_not_a_scrape(tmp_path):
    # A request that never ends is dropped after the idle time; one whose headers pass the
    # bound is refused with 431; anything but GET /metrics is refused saying what to ask.
    from brasil.group.metrics import MAX_HEAD, serve_prometheus
    from fixtures import daemon
    async with daemon(str(tmp_path), "n0") as d:
        await d.metrics.beat()
        endpoint, port = await serve_prometheus(d.metrics, "127.0.0.1", 0, idle=0.5)
        try:
            assert await _http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n") == b""
            big = await _http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)
            assert big.startswith(b"HTTP/1.1 431 ") and b"8192 bytes" in big
            post = await _http(port, b"POST /metrics HTTP/1.1\r\n\r\n")
            assert post.startswith(b"HTTP/1.1 405 ") and b"GET /metrics" in post
            elsewhere = await _http(port, b"GET /admin HTTP/1.1\r\n\r\n")
            assert elsewhere.startswith(b"HTTP/1.1 404 ")
            assert (await _http(port, b"hello\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
            ok = await _http(port, b"GET /metrics HTTP/1.0\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200 ") and b'brasil_slots{node="n0"} 4.0' in ok
            head = await _http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"brasil_slots" not in head
            assert endpoint.connections() == 0
        finally:
            await endpoint.stop()


def test_a_metrics_port_in_use_is_a_clear_error(tmp_path):
    import socket
    import subprocess
    import sys
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "brasil.cli.main", "serve", "--listen",
                            f"unix:{tmp_path}/s.sock", "--state-dir", str(tmp_path / "st"),
                            "--metrics-listen", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"brasil serve: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "pick another with --metrics-listen" in r.stderr and "Traceback" not in r.stderr


async def test_a_history_range_reduced_over_a_query_path_is_what_the_nodes_series_give(tmp_path):
    # Issue 20: "the load history of the nodes matching PRED, reduced per step", by the group
    # reads: each node's series merged step by step in the tree. Five minutes of known samples
    # are put in every node's history, 20 minutes back (the daemons' own beats record now,
    # outside the range); name=n1* selects n1 and its three children, across two levels.
    import time

    from brasil.client import group as api
    from brasil.metrics.history import observations
    from brasil.ninep.constants import ORDWR
    from helpers import run_cli
    from trees import tree_1_3_9
    async with tree_1_3_9(str(tmp_path)) as (nodes, c):
        t0 = (int(time.time()) - 1200) // 60 * 60
        for i, (name, d) in enumerate(sorted(nodes.items())):
            for k in range(60):  # every 5 s
                await d.metrics.history.record_many_async(
                    t0 + 5 * k, [("self", observations({"load1": float(10 * i + k % 7)}, name))])
        chosen = ["n1", "n1.1", "n1.2", "n1.3"]
        steps: dict[int, list[tuple[float, float, float]]] = {}
        for name in chosen:  # each node's own series, read from its history file
            f = await c.open(f"csrv/query/{name}/local/metrics/history", ORDWR)
            try:
                await f.write(f"load1 self {t0} {t0 + 299} 60")
                text = (await f.read(1 << 20, 0)).decode()
            finally:
                await f.close()
            for line in text.splitlines():
                t, mean, lo, hi, _ = line.split()
                steps.setdefault(int(t), []).append((float(mean), float(lo), float(hi)))
        assert sorted(steps) == [t0 + 60 * j for j in range(5)]
        assert all(len(v) == 4 for v in steps.values())
        want = {
            "sum": [[t, sum(m for m, _, _ in v)] for t, v in sorted(steps.items())],
            "mean": [[t, sum(m for m, _, _ in v) / len(v)] for t, v in sorted(steps.items())],
            "min": [[t, min(lo for _, lo, _ in v)] for t, v in sorted(steps.items())],
            "max": [[t, max(hi for _, _, hi in v)] for t, v in sorted(steps.items())],
            "count": [[t, len(v)] for t, v in sorted(steps.items())],
        }
        path = f"metrics/history?load1&start={t0}&end={t0 + 299}&step=60"
        for agg, series in want.items():
            r = await api.gread(c, path, "name=n1*", agg)
            assert sorted(r["nodes"]) == chosen and not r["errors"], r
            assert [t for t, _ in r["series"]] == [t for t, _ in series]
            assert [v for _, v in r["series"]] == pytest.approx([v for _, v in series]), agg
        # The min and max are the samples' (not the nodes' means): n1 (i=1) had 10 + 0…6.
        assert want["min"][0][1] == 10.0 and want["max"][0][1] > want["mean"][0][1]
        # Relative times and the default step, from the command line: TIME VALUE lines.
        env = {"BRASIL": str(nodes["n0"].unix)}
        rc, out, err = await run_cli("gread", "--where", "name=n1*", "--agg", "count",
                                     f"metrics/history?load1&start={t0 - int(time.time())}"
                                     f"&end={t0 + 299 - int(time.time())}&step=60", env=env)
        assert rc == 0, err
        lines = [ln.split() for ln in out.splitlines()]
        assert [int(v) for _, v in lines][1:-1] == [4, 4, 4]  # the ends: now moved meanwhile


async def test_a_history_group_read_asked_badly_says_what_to_ask(tmp_path):
    from brasil.client import group as api
    from brasil.ninep.client import Client
    from brasil.ninep.errors import NinepError
    from fixtures import daemon
    async with daemon(str(tmp_path), "n0") as d:
        c = await Client.connect(d.unix)
        try:
            for path, agg, why in (
                ("metrics/history?nonsense", "sum", "unknown metric 'nonsense'; one of load1"),
                ("metrics/history?start=-60", "sum", "no metric named; one of load1"),
                ("metrics/history?load1&start=1&step=1", "sum", "ask for a step of at least"),
                ("metrics/history?load1&start=yesterday", "sum", "start, end and step are"),
                ("metrics/history?load1&every=5", "sum", "unknown 'every'; the keys are"),
                ("metrics/history?load1", "concat", "reduced step by step with sum"),
            ):
                with pytest.raises(NinepError, match=why):
                    await api.gread(c, path, "", agg)
            # A gread file took any number of bytes of request, kept until the read.
            from brasil.ninep.constants import ORDWR
            f = await c.open("csrv/query/gread", ORDWR)
            try:
                with pytest.raises(NinepError, match="a request is at most 64 KiB"):
                    for _ in range(100):
                        await f.write(b" " * 8192)
            finally:
                await f.close()
        finally:
            await c.close()
