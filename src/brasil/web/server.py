"""The dashboard's HTTP side (aiohttp): the page, a JSON API, server-sent events, and actions
only when asked for.

Security (another local user must get nothing, so loopback is no excuse):

- every request needs the token: ``?token=T`` once (the printed URL), after which an HttpOnly,
  SameSite=Strict cookie carries it and the page is redirected to the URL without it; tokens
  are compared with ``hmac.compare_digest``; anything else is 403;
- a strict Content-Security-Policy (``default-src 'self'``, no inline script or style), and
  the page sets every text from the cluster with ``textContent`` or attribute setters;
- nothing changes the cluster unless ``actions``: then POST only, with the CSRF token the page
  reads from ``/api/session`` in an ``X-CSRF-Token`` header, and an Origin (when sent) and a
  Host that are this server's; without ``actions`` every POST is 405;
- bounded: request bodies (``MAX_BODY``), SSE clients (``MAX_SSE``), and every answer (the
  reads behind it are bounded in source.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from importlib import resources
from typing import Any

from aiohttp import web

from .source import Cluster, SourceError

MAX_BODY = 4096
MAX_SSE = 32
COOKIE = "brasil_web_"  # and the port: browsers share cookies between a host's ports
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
STATIC = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}

CLUSTER = web.AppKey("cluster", Cluster)
CONFIG = web.AppKey("config", dict)


def _asset(name: str) -> bytes:
    return resources.files("brasil.web").joinpath("static", name).read_bytes()


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    token = cfg["token"]
    given = request.query.get("token")
    if given is not None:
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _refuse("wrong token")
        # Trade the token in the URL for a cookie, and leave the URL (history, Referer) clean.
        query = {k: v for k, v in request.query.items() if k != "token"}
        resp = web.HTTPFound(request.rel_url.with_query(query).path_qs)
        resp.set_cookie(cookie_name(request), token, httponly=True, samesite="Strict", path="/")
        _headers(resp)
        raise resp
    cookie = request.cookies.get(cookie_name(request), "")
    if not hmac.compare_digest(cookie.encode(), token.encode()):
        return _refuse("no token: open the URL `brasil web` printed (with ?token=…)")
    if request.method not in ("GET", "HEAD"):
        if not cfg["actions"]:
            return _refuse("actions are off: `brasil web --actions` turns them on", 405)
        if not _same_origin(request):
            return _refuse("cross-origin request")
        csrf = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(csrf.encode(), cfg["csrf"].encode()):
            return _refuse("missing or wrong CSRF token")
    resp = await handler(request)
    _headers(resp)
    return resp


def cookie_name(request: web.Request) -> str:
    """``brasil_web_PORT``: two dashboards on one machine keep a cookie each."""
    port = request.host.rpartition(":")[2]
    return COOKIE + (port if port.isdigit() else "80")


def _same_origin(request: web.Request) -> bool:
    """The Host is one this server answers to ("*:PORT": any name, for a wildcard address),
    and the Origin, when the browser sends one, is that Host's."""
    host = request.headers.get("Host", "")
    hosts = request.app[CONFIG]["hosts"]
    port = host.rpartition(":")[2]
    if host not in hosts and f"*:{port}" not in hosts:
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"http://{host}"


def _headers(resp: web.StreamResponse) -> None:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers.setdefault("Cache-Control", "no-store")


def _refuse(why: str, status: int = 403) -> web.Response:
    resp = web.Response(status=status, text=f"brasil web: {why}\n")
    _headers(resp)
    return resp


async def page(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=_asset(name), content_type=STATIC[name], charset="utf-8")


async def session_info(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    return web.json_response({"actions": cfg["actions"],
                              "csrf": cfg["csrf"] if cfg["actions"] else "",
                              "at": cfg["at"]})


async def snapshot(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    if not cluster.snapshot:
        async with cluster.changed:
            await asyncio.wait_for(cluster.changed.wait_for(lambda: bool(cluster.snapshot)), 30)
    return web.Response(body=cluster.encoded, content_type="application/json")


def _dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"))


async def history(request: web.Request) -> web.Response:
    q = request.query
    try:
        seconds = float(q.get("range", "3600"))
        since = float(q["since"]) if "since" in q else None
        got = await request.app[CLUSTER].history(
            q.get("node", ""), q.get("series", "subtree"), q.get("metric", "load1"), seconds,
            since)
    except ValueError:
        return web.json_response({"error": "range and since are numbers of seconds"}, status=400)
    except SourceError as e:
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response(got, dumps=_dumps)


async def workload(request: web.Request) -> web.Response:
    try:
        got = await request.app[CLUSTER].workload(request.query.get("tag", ""))
    except SourceError as e:
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response(got, dumps=_dumps)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``snapshot`` each time the poll has a new one."""
    cfg = request.app[CONFIG]
    if cfg["sse"] >= MAX_SSE:
        return web.json_response({"error": f"too many live pages (at most {MAX_SSE})"},
                                 status=503)
    cluster = request.app[CLUSTER]
    cfg["sse"] += 1
    try:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
        _headers(resp)
        await resp.prepare(request)
        seen = -1
        while True:
            def newer(v: int = seen) -> bool:
                return cluster.version != v or cfg["closing"]
            async with cluster.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cluster.changed.wait_for(newer), 15)
            if cfg["closing"]:
                break
            if cluster.version == seen:
                await resp.write(b": still here\n\n")  # keeps proxies and the browser awake
                continue
            seen = cluster.version
            await resp.write(b"event: snapshot\ndata: " + cluster.encoded + b"\n\n")
    finally:
        cfg["sse"] -= 1
    return resp


async def action(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return web.json_response({"error": "request too large"}, status=413)
    try:
        body = json.loads(await request.content.read(MAX_BODY + 1) or b"{}")
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return web.json_response({"error": "a JSON object"}, status=400)
    cluster = request.app[CLUSTER]
    what = request.match_info["what"]
    try:
        if what == "kill":
            path = await cluster.kill(str(body.get("node", "")), str(body.get("id", "")))
        elif what == "cancel":
            path = await cluster.cancel(str(body.get("tag", "")))
        else:
            raise web.HTTPNotFound()
    except SourceError as e:
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response({"ok": True, "path": path})


def make_app(cluster: Cluster, token: str, *, actions: bool = False, hosts: list[str],
             at: str = "") -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[CLUSTER] = cluster
    app[CONFIG] = {"token": token, "csrf": secrets.token_urlsafe(32), "actions": actions,
                   "hosts": hosts, "sse": 0, "at": at, "closing": False}

    async def closing(app: web.Application) -> None:  # the live pages end with the server
        app[CONFIG]["closing"] = True
        async with cluster.changed:
            cluster.changed.notify_all()
    app.on_shutdown.append(closing)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", page)
    app.router.add_get("/api/session", session_info)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/history", history)
    app.router.add_get("/api/workload", workload)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/{what}", action)
    return app
