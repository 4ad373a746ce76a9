"""`brasil web` on real parts: a 1+3+9 tree of daemons, the real command in a subprocess, and a
real browser (Debian's headless Chromium driven by selenium) for what the page shows."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import sys
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest

from trees import tree_1_3_9

CHROMEDRIVER = "/usr/bin/chromedriver"
INTERVAL = 2.5  # the daemons' --metrics-interval: history buckets are 5 s, two intervals


@contextlib.asynccontextmanager
async def brasil_web(at: str, *args: str) -> AsyncIterator[tuple[str, Any]]:
    """The real `brasil web --at AT ARGS` in a subprocess: (the URL it printed, the process)."""
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brasil.cli.main", "web", "--at", at, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert p.stdout is not None
        line = (await asyncio.wait_for(p.stdout.readline(), 60)).decode().strip()
        assert line.startswith("http://"), line or (await p.stderr.read()).decode()  # type: ignore[union-attr]
        yield line, p
    finally:
        if p.returncode is None:
            p.terminate()
        await asyncio.wait_for(p.wait(), 30)


def request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, Any, bytes]:
    """One HTTP request, redirects not followed: (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=30)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body,
                     headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def sse_past_the_cap(base: str, headers: dict[str, str]) -> tuple[int, int]:
    """Open event streams until one is refused: (how many were answered 200, its status)."""
    from brasil.web.server import MAX_SSE
    u = urllib.parse.urlsplit(base)
    held = []
    try:
        for _ in range(MAX_SSE + 1):
            conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=30)
            held.append(conn)
            conn.request("GET", "/api/events", headers=headers)
            r = conn.getresponse()
            if r.status != 200:
                return len(held) - 1, r.status
        return len(held), 200
    finally:
        for conn in held:
            conn.close()


async def ask(url: str, **kw: Any) -> tuple[int, Any, bytes]:
    return await asyncio.to_thread(request, url, **kw)


# Without a browser: the token, the cookie, the headers, actions --------------------------------

async def test_the_token_is_always_required_and_actions_only_with_csrf(tmp_path):
    async with tree_1_3_9(str(tmp_path), metrics_interval=INTERVAL) as (nodes, c):
        at = str(nodes["n0"].unix)
        async with brasil_web(at) as (url, _), brasil_web(at, "--actions") as (act_url, _):
            base = url.split("?")[0].rstrip("/")
            token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]
            assert len(token) >= 32
            # Loopback is no excuse: no token, a wrong one, a wrong cookie: 403, for every path.
            for path in ("/", "/api/snapshot", "/static/app.js", "/api/events"):
                assert (await ask(base + path))[0] == 403
            assert (await ask(base + "/?token=" + token[:-1] + "x"))[0] == 403
            assert (await ask(base + "/", headers={
                "Cookie": f"brasil_web_{urllib.parse.urlsplit(url).port}=nope"}))[0] == 403
            # The token URL sets a strict cookie and drops the token from the address.
            status, headers, _ = await ask(url)
            assert status == 302 and headers["Location"] == "/"
            cookie = headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            port = urllib.parse.urlsplit(url).port
            assert cookie.startswith(f"brasil_web_{port}={token};")
            jar = {"Cookie": f"brasil_web_{port}={token}"}
            status, headers, body = await ask(base + "/", headers=jar)
            assert status == 200 and b"app.js" in body
            assert "default-src 'self'" in headers["Content-Security-Policy"]
            snap = json.loads((await ask(base + "/api/snapshot", headers=jar))[2])
            assert len(snap["nodes"]) == 13 and snap["up"] == "n[0-3],n[1-3].[1-3]"
            # Bounded and checked questions: a clear 400, not a stall.
            status, _, body = await ask(base + "/api/history?metric=bogus", headers=jar)
            assert status == 400 and b"unknown metric" in body
            status, _, body = await ask(base + "/api/history?range=1e12", headers=jar)
            assert status == 400
            # Beyond loopback: allowed, said so, and the token still required.
            async with brasil_web(at, "--listen", "0.0.0.0:0") as (wide, p):
                wport = urllib.parse.urlsplit(wide).port
                assert (await ask(f"http://127.0.0.1:{wport}/"))[0] == 403
                assert (await ask(f"http://127.0.0.1:{wport}/api/snapshot"))[0] == 403
            assert b"beyond loopback" in await p.stderr.read()
            # Live pages are bounded: the one past MAX_SSE is told so.
            from brasil.web.server import MAX_SSE
            assert await asyncio.to_thread(sse_past_the_cap, base, jar) == (MAX_SSE, 503)
            # Without --actions, every POST is refused, CSRF token or not.
            for path in ("/api/kill", "/api/cancel"):
                status, _, _ = await ask(base + path, method="POST", headers=jar, body=b"{}")
                assert status == 405

            # A session to kill through the page's API.
            clone = await c.open("csrv/local/clone")
            sid = (await clone.read(64, 0)).decode().strip()
            await c.write(f"csrv/local/{sid}/ctl", "exec sleep 300\n")
            abase = act_url.split("?")[0].rstrip("/")
            atoken = urllib.parse.parse_qs(urllib.parse.urlsplit(act_url).query)["token"][0]
            aport = urllib.parse.urlsplit(act_url).port
            ajar = {"Cookie": f"brasil_web_{aport}={atoken}"}
            info = json.loads((await ask(abase + "/api/session", headers=ajar))[2])
            assert info["actions"] and info["csrf"]
            # With --actions: no CSRF token, a wrong one, or another origin: 403; the token of
            # the other server does not open this one.
            kill = json.dumps({"node": "n0", "id": sid}).encode()
            host = urllib.parse.urlsplit(abase).netloc
            post = {**ajar, "Content-Type": "application/json"}
            for headers in (post, {**post, "X-CSRF-Token": "x"},
                            {**post, "X-CSRF-Token": info["csrf"], "Origin": "http://evil.test"},
                            {"Cookie": f"brasil_web_{aport}={token}",
                             "X-CSRF-Token": info["csrf"]}):
                assert (await ask(abase + "/api/kill", method="POST", headers=headers,
                                  body=kill))[0] == 403
            assert "running" in (await c.read(f"csrv/local/{sid}/ctl")).decode()
            status, _, body = await ask(
                abase + "/api/kill", method="POST", body=kill,
                headers={**post, "X-CSRF-Token": info["csrf"], "Origin": f"http://{host}"})
            assert status == 200, body
            assert json.loads(body)["path"] == f"/csrv/local/{sid}/ctl"
            wait = await c.open(f"csrv/local/{sid}/wait")
            await asyncio.wait_for(wait.read_all(), 30)  # the command ended: killed
            await wait.close()
            await clone.close()
            # A body over the limit is refused, not read.
            status, _, _ = await ask(abase + "/api/cancel", method="POST", body=b"x" * 100_000,
                                     headers={**post, "X-CSRF-Token": info["csrf"]})
            assert status == 413


# In a real browser ------------------------------------------------------------------------------

def chrome() -> Any:
    if not (os.path.exists(CHROMEDRIVER) and (shutil.which("chromium")
                                              or os.path.exists("/usr/bin/chromium"))):
        pytest.skip("needs Debian's chromium and chromium-driver (make test-deps installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1400,1600", "--disable-gpu"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)


def until(driver: Any, what: Any, timeout: float = 30) -> Any:
    """Wait for a condition; an element the page drew again meanwhile (a new snapshot) is
    looked for again at the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=[StaleElementReferenceException]).until(what)


async def test_the_page_shows_the_tree_live_charts_lost_nodes_and_cluster_text_as_text(tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    from brasil.batch.api import Batch
    driver = await asyncio.to_thread(chrome)
    try:
        async with tree_1_3_9(str(tmp_path), metrics_interval=INTERVAL) as (nodes, c):
            # A workload whose command is markup: cancelled, it is listed with its reason.
            b = Batch(c)
            await b.submit(["<script>alert(1)</script>"], tag="xss", home=str(tmp_path))
            await b.cancel(tag="xss")
            # A session of 3 ranks whose command line carries markup too.
            sid = (await c.read("csrv/local/clone")).decode().strip()
            await c.write(f"csrv/local/{sid}/ctl", "res 3\n")
            await c.write(f"csrv/local/{sid}/ctl",
                          "exec sh -c 'sleep 300' '<img src=x onerror=alert(2)>'\n")
            async with brasil_web(str(nodes["n0"].unix)) as (url, _):
                await asyncio.to_thread(driver.get, url)

                def tiles(d: Any) -> list[Any]:
                    return d.find_elements(By.CSS_SELECTOR, "#tree .node")
                await asyncio.to_thread(until, driver, lambda d: len(tiles(d)) == 13)
                names = sorted(await asyncio.to_thread(driver.execute_script, (
                    "return [...document.querySelectorAll('#tree .node')]"
                    ".map(e => e.dataset.node)")))
                assert names == sorted(nodes)
                text = await asyncio.to_thread(lambda: driver.find_element(By.ID, "sets").text)
                assert "n[0-3],n[1-3].[1-3]" in text
                # Every figure names its file.
                assert "/csrv/local/metrics/history" in await asyncio.to_thread(
                    lambda: driver.find_element(By.ID, "charts").text)

                # The chart of the whole tree gets a new point as the daemons sample (5 s
                # buckets, INTERVAL 2.5 s: a new point every two intervals).
                def last_point(d: Any) -> float:
                    svg = d.find_element(By.CSS_SELECTOR, 'svg.chart[data-series="subtree"]')
                    return float(svg.get_attribute("data-last") or 0)
                first = await asyncio.to_thread(until, driver, last_point)
                await asyncio.to_thread(until, driver, lambda d: last_point(d) > first)

                # The markup is on the page as text, and it ran nowhere.
                await asyncio.to_thread(until, driver, lambda d: "<script>alert(1)</script>"
                                        in d.find_element(By.ID, "workloads").text)
                await asyncio.to_thread(until, driver, lambda d: "<img src=x onerror=alert(2)>"
                                        in d.find_element(By.ID, "sessions").text)
                row = await asyncio.to_thread(lambda: driver.find_element(
                    By.CSS_SELECTOR, f'#sessions tr[data-session="n0/{sid}"]').text)
                assert "root" in row and "running" in row and " 3 " in row  # user, state, ranks
                assert not await asyncio.to_thread(
                    driver.find_elements, By.CSS_SELECTOR, "#sessions img")
                with pytest.raises(NoAlertPresentException):
                    await asyncio.to_thread(lambda: driver.switch_to.alert.text)
                scripts = await asyncio.to_thread(
                    driver.execute_script, "return document.scripts.length")
                assert scripts == 1  # app.js alone

                # A node killed turns lost on the page.
                await nodes["n3.3"].stop()

                def lost(d: Any) -> bool:
                    e = d.find_elements(By.CSS_SELECTOR, '#tree .node[data-node="n3.3"]')
                    return bool(e) and e[0].get_attribute("data-state") == "lost"
                await asyncio.to_thread(until, driver, lost)
                assert "lost (1): n3.3" in await asyncio.to_thread(
                    lambda: driver.find_element(By.ID, "sets").text)
                # Drill down: a subtree's charts and its folded node set. (The tree is drawn
                # again at every snapshot: a click that met a tile being replaced is made again.)
                def drilled(d: Any) -> bool:
                    if "n2,n2.[1-3]" in d.find_element(By.ID, "scope-set").text:
                        return True
                    with contextlib.suppress(Exception):
                        d.find_element(By.CSS_SELECTOR, '#tree .node[data-node="n2"]').click()
                    return False
                await asyncio.to_thread(until, driver, drilled)
                await asyncio.to_thread(until, driver, lambda d: "/csrv/n2/local/metrics/history"
                                        in d.find_element(By.ID, "charts").text)
    finally:
        await asyncio.to_thread(driver.quit)


# The pieces ------------------------------------------------------------------------------------

def test_the_text_forms_the_page_is_made_of():
    from brasil.web.source import fold, session_attrs, status_attrs
    assert fold(["n0", "n1", "n2", "n3", "n1.1", "n1.2", "n2.1", "n2.2"]) == "n[0-3],n[1-2].[1-2]"
    assert fold([]) == ""
    got = session_attrs("user=ann command=sh -c 'echo a b' session=n1/4")
    assert got == {"user": "ann", "command": "sh -c 'echo a b'", "session": "n1/4"}
    a = status_attrs("n1 2 1 0.5 900 up name=n1 cores=2 rack=r7")
    assert (a["name"], a["slots"], a["free"], a["cores"], a["rack"]) == ("n1", "2", "1", "2", "r7")
    assert status_attrs("short line") == {}
