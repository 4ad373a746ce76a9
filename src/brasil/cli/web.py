"""`brasil web`: serve a dashboard of the tree below a daemon and print its URL (token included,
as Jupyter prints it)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import secrets
import signal
import sys

from .errors import UsageError, run
from .options import add_client_options, connect

DEFAULT_LISTEN = "127.0.0.1:0"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web", help="a dashboard of the tree in a browser",
        description="Serve a dashboard of the tree below the daemon at --at: nodes coloured by "
        "load or free slots, history charts updated live, sessions, batch workloads. Prints "
        "the URL to open, with its token: every request needs it, even on loopback. Nothing on "
        "the page changes the cluster unless --actions.")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="where to serve (default 127.0.0.1 on a free port; an address beyond "
                   "loopback is reachable by others, who still need the token)")
    p.add_argument("--actions", action="store_true",
                   help="let the page kill sessions and cancel workloads (POST with a CSRF token)")
    add_client_options(p)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text}: expected HOST:PORT (e.g. 127.0.0.1:8780)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(args: argparse.Namespace) -> int:
    from aiohttp import web as aioweb

    from ..web.server import make_app
    from ..web.source import Cluster
    host, port = parse_listen(args.listen)
    c = await connect(args)
    cluster = Cluster(c, redial=lambda: connect(args))
    runner = None
    try:
        await cluster.refresh()  # the first snapshot before the URL: the first paint is quick
        cluster.start()
        token = secrets.token_urlsafe(32)
        # The Host header is checked (on POST) against the names this server answers to, which
        # are known once the port is.
        hosts: list[str] = []
        app = make_app(cluster, token, actions=args.actions, hosts=hosts, at=args.at or "")
        runner = aioweb.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = aioweb.TCPSite(runner, host, port, backlog=64)
        await site.start()
        bound = int(runner.addresses[0][1]) if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        hosts += [f"{shown}:{bound}"] + ([f"localhost:{bound}", f"127.0.0.1:{bound}"]
                                         if is_loopback(host) else [])
        if host in ("0.0.0.0", "::"):  # any of the machine's names and addresses
            hosts.append(f"*:{bound}")
        if not is_loopback(host):
            print(f"brasil web: listening on {host}, beyond loopback: whoever reaches it still "
                  "needs the token, but HTTP is not encrypted (prefer ssh -L to a loopback "
                  "address)", file=sys.stderr)
        if args.actions:
            print("brasil web: actions are on: the page can kill sessions and cancel "
                  "workloads", file=sys.stderr)
        print(f"http://{shown}:{bound}/?token={token}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await cluster.stop()
        await cluster.c.close()
    return 0


def main(args: argparse.Namespace) -> int:
    return run("brasil web", lambda: serve(args))
