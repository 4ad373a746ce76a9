"""`brasil web` on a 1+8+64 tree: the dashboard's first paint, and a day of history answered.

    .venv/bin/python bench/web.py [--repeats 5] [--no-json]

Issue 20's "Speed and scale", the dashboard's two figures. The tree is ``brasil cluster up
--depth 2 --fanout 8 --slots 2`` (73 daemons), torn down whatever happens; the root's history
is given a day of the subtree's one-minute summaries (1,440 of them, over 73 nodes) written
into its SQLite store (brasil.metrics.history, as the daemon writes it) before the dashboard
starts. The real ``brasil web --at ROOT`` runs in a subprocess.

a. First paint: headless Chromium (Debian's, driven by selenium) loads the page; the figure is
   the page's own ``performance.mark("brasil-first-tree")`` (set when the tree, with every node,
   is first drawn), in milliseconds from the start of the navigation: HTML, script, the
   snapshot's JSON and the drawing of 73 nodes. The first load (the token URL, its redirect
   and cookie) and then ``--repeats`` loads of the page (median), each checked to show 73
   nodes. Target: under 1 s.
b. A day of history for 73 nodes: ``GET /api/history?series=subtree&range=86400`` for each of
   the 17 metrics (each a different question, so no answer comes from the dashboard's one-second
   cache): the 9P request to the root's ``metrics/history``, its SQLite query and the JSON,
   timed from this process over HTTP, each answer checked to hold 1,400+ points. Target: the
   slowest under 200 ms.

Results: the figures and PASS/MISS lines on stdout, JSON in bench/results/web.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from brasil.metrics.history import History
from brasil.metrics.sample import METRICS
from brasil.metrics.summary import Summary
from common import BenchError
from tree import BRASIL, Tree

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "web.json"
PAINT_MS, HISTORY_MS = 1000.0, 200.0
CHROMEDRIVER = "/usr/bin/chromedriver"


def seed_day(path: str, nodes: list[str]) -> None:
    """A day of the subtree's summaries, one a minute, as the root's beats would have left."""
    h = History(path)
    now = time.time()
    try:
        for i in range(1440, 0, -1):
            t = now - 60 * i
            parts = [Summary.of(n, {m: float((i + k) % 7) for k, m in enumerate(METRICS)})
                     for n in nodes]
            h.record(t, "subtree", Summary.of_all(parts).stats)
    finally:
        h.close()


def get(base: str, path: str, cookie: str) -> tuple[int, bytes]:
    u = urllib.parse.urlsplit(base)
    c = http.client.HTTPConnection(u.hostname or "", u.port, timeout=30)
    try:
        c.request("GET", path, headers={"Cookie": cookie})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def paint(driver, url: str, want: int) -> float:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url)
    WebDriverWait(driver, 30, poll_frequency=0.05).until(
        lambda d: d.execute_script(
            "return performance.getEntriesByName('brasil-first-tree').length"))
    shown = len(driver.find_elements(By.CSS_SELECTOR, "#tree .node"))
    if shown != want:
        raise BenchError(f"the page shows {shown} nodes, not {want}")
    return float(driver.execute_script(
        "return performance.getEntriesByName('brasil-first-tree')[0].startTime"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-json", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(CHROMEDRIVER):
        print("web: not installed: needs Debian's chromium and chromium-driver "
              "(make test-deps installs them)")
        return 0
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    tree = Tree(2, 8, 2)
    web = driver = None
    try:
        tree.up()
        seed_day(os.path.join(tree.dir, "n0", "metrics.sqlite"), sorted(tree.pids))
        env = {**os.environ, "BRASIL_SECRET_FILE": f"{tree.dir}/secret"}
        web = subprocess.Popen([str(BRASIL), "web", "--at", tree.address], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert web.stdout is not None
        url = web.stdout.readline().strip()
        if not url.startswith("http://"):
            raise BenchError(f"brasil web did not start: {web.stderr.read() if web.stderr else ''}")
        base = url.split("?")[0].rstrip("/")
        u = urllib.parse.urlsplit(url)
        cookie = f"brasil_web_{u.port}=" + urllib.parse.parse_qs(u.query)["token"][0]
        o = webdriver.ChromeOptions()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                  "--window-size=1400,1000"):
            o.add_argument(a)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
        first = paint(driver, url, tree.nodes)
        again = [paint(driver, base + "/", tree.nodes) for _ in range(args.repeats)]

        history = {}
        for metric in METRICS:
            t0 = time.perf_counter()
            status, body = get(base, f"/api/history?series=subtree&range=86400&metric={metric}",
                               cookie)
            ms = (time.perf_counter() - t0) * 1000
            if status != 200:
                raise BenchError(f"history {metric}: HTTP {status}: {body[:200]!r}")
            points = len(json.loads(body)["points"])
            if points < 1400:
                raise BenchError(f"history {metric}: {points} points, not a day's 1,440")
            history[metric] = {"ms": ms, "points": points, "bytes": len(body)}
    finally:
        if driver is not None:
            driver.quit()
        if web is not None:
            web.terminate()
            web.wait(timeout=30)
        tree.down()
    median = statistics.median(again)
    slowest = max(h["ms"] for h in history.values())
    hmed = statistics.median(h["ms"] for h in history.values())
    ok_paint, ok_hist = median < PAINT_MS, slowest < HISTORY_MS
    print(f"first paint, 73 nodes: {first:.0f} ms with the token URL (redirect and cookie), "
          f"then median {median:.0f} ms of {len(again)} loads (best {min(again):.0f}, worst "
          f"{max(again):.0f}); target < {PAINT_MS:.0f} ms: {'PASS' if ok_paint else 'MISS'}")
    print(f"a day of history (1,440 points, subtree of 73 nodes) over HTTP: median {hmed:.0f} ms,"
          f" slowest {slowest:.0f} ms of {len(history)} metrics; target < {HISTORY_MS:.0f} ms: "
          f"{'PASS' if ok_hist else 'MISS'}")
    if not args.no_json:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"first_paint_token_ms": first, "first_paint_ms": again,
                                       "history": history}, indent=1) + "\n")
    return 0 if ok_paint and ok_hist else 1


if __name__ == "__main__":
    sys.exit(main())
