"""`brasil`: the command line (SPEC.md §9).

Every client command takes ``--at ADDR`` (``HOST:PORT``, ``unix:PATH``, ``tcp!HOST!PORT``),
defaulting to ``$BRASIL``, then to the local daemon's Unix socket.
"""

from __future__ import annotations

import argparse
import os
import stat as statmod
import sys
import time
from typing import Any

from .. import __version__
from ..ninep.constants import DMDIR, OWRITE
from ..ninep.errors import Enotfound, NinepError
from ..ninep.wire import Stat
from .errors import run
from .options import add_client_options, connect

EPILOG = """addresses: HOST:PORT, unix:PATH or tcp!HOST!PORT; --at defaults to $BRASIL, then to
the local daemon's Unix socket. Paths are inside the daemon's namespace, e.g. /csrv/local/status."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brasil", description="Drive a cluster as one computer through its 9P namespace.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"brasil {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ls = sub.add_parser("ls", help="list a directory of the namespace",
                        description="List a directory (or show one file) of the namespace.")
    ls.add_argument("-l", action="store_true", help="long format: mode, size, time, name")
    ls.add_argument("path", nargs="?", default="/", metavar="PATH")
    add_client_options(ls, trace=True)

    st = sub.add_parser("stat", help="show a file's metadata",
                        description="Show the 9P stat of a file: qid, mode, length, times, owner.")
    st.add_argument("path", metavar="PATH")
    add_client_options(st, trace=True)

    cat = sub.add_parser("cat", help="print files; streams print as data arrives",
                         description="Print files to stdout. Stream files (stdio, wait) are "
                         "printed as their data arrives, until end of file.")
    cat.add_argument("paths", nargs="+", metavar="PATH")
    add_client_options(cat, trace=True)

    wr = sub.add_parser("write", help="write TEXT (or stdin) to a file as one write",
                        description="Write TEXT, or all of stdin, to PATH as one write — the way "
                        "to send a ctl command: brasil write /csrv/local/0/ctl exec wc -c. "
                        "A missing PATH is created where its directory allows (a view: "
                        "/csrv/local/views/NAME). "
                        "Everything after PATH is TEXT, dashes included; options go before PATH.")
    add_client_options(wr, trace=True)
    wr.add_argument("path", metavar="PATH")
    wr.add_argument("text", nargs=argparse.REMAINDER, metavar="TEXT",
                    help="words joined by spaces; a newline is added")

    sc = sub.add_parser("ctl", help="from inside a session: write one line to its ctl",
                        description="Write LINE to the ctl of the session this process runs in "
                        "($BRASIL_SESSION_DIR, reached through this node's daemon, $BRASIL_AT): "
                        "how a session's own processes grow and shrink it — brasil ctl res +6; "
                        "brasil ctl exec + ./worker; brasil ctl release 2-7.")
    add_client_options(sc, at_help="daemon address (default: $BRASIL_AT, this node's, which "
                       "the daemon gives its processes)")
    sc.add_argument("line", nargs=argparse.REMAINDER, metavar="LINE",
                    help="words joined by spaces; a newline is added")

    from . import batch, cluster, group, mount, pstack, run, serve, web
    serve.add_parser(sub)
    run.add_parser(sub)
    group.add_parsers(sub)
    pstack.add_parsers(sub)
    batch.add_parsers(sub)
    cluster.add_parser(sub)
    mount.add_parsers(sub)
    web.add_parser(sub)
    return p


def mode_string(mode: int) -> str:
    kind = "d" if mode & DMDIR else "-"
    return kind + statmod.filemode(mode & 0o777)[1:]


def long_line(st: Stat) -> str:
    when = time.strftime("%b %d %H:%M", time.localtime(st.mtime))
    name = st.name + ("/" if st.mode & DMDIR else "")
    return f"{mode_string(st.mode)} {st.uid:<8} {st.length:>10} {when} {name}"


async def cmd_ls(args: argparse.Namespace) -> int:
    c = await connect(args)
    try:
        top = await c.stat(args.path)
        entries = await c.ls(args.path) if top.mode & DMDIR else [top]
        for st in entries:
            print(long_line(st) if args.l else st.name + ("/" if st.mode & DMDIR else ""))
    finally:
        await c.close()
    return 0


async def cmd_stat(args: argparse.Namespace) -> int:
    c = await connect(args)
    try:
        st = await c.stat(args.path)
    finally:
        await c.close()
    rows: list[tuple[str, Any]] = [
        ("name", st.name), ("mode", f"{mode_string(st.mode)} ({st.mode:#o})"),
        ("length", st.length), ("qid", f"path {st.qid.path:#x} version {st.qid.version} "
                                       f"type {st.qid.type:#04x}"),
        ("owner", f"{st.uid}:{st.gid} (last modified by {st.muid})"),
        ("mtime", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.mtime))),
        ("atime", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.atime))),
    ]
    for k, v in rows:
        print(f"{k:>7}: {v}")
    return 0


async def cmd_cat(args: argparse.Namespace) -> int:
    c = await connect(args)
    out = sys.stdout.buffer
    try:
        for path in args.paths:
            if (await c.stat(path)).mode & DMDIR:  # a directory's bytes are stat records: list it
                for st in await c.ls(path):
                    out.write((st.name + ("/" if st.mode & DMDIR else "") + "\n").encode())
                out.flush()
                continue
            async with await c.open(path) as f:
                async for chunk in f.chunks():
                    out.write(chunk)
                    out.flush()
    finally:
        await c.close()
    return 0


async def cmd_write(args: argparse.Namespace) -> int:
    data = (" ".join(args.text) + "\n").encode() if args.text else sys.stdin.buffer.read()
    c = await connect(args)
    try:
        try:
            await c.write(args.path, data, OWRITE)
        except NinepError as e:
            if not e.message.endswith(Enotfound[0]):  # 9P2000 errors are their E-name strings
                raise
            try:  # a new file, as the shell's > makes one (a view: /csrv/local/views/NAME)
                f = await c.create(args.path, 0o644, OWRITE)
            except NinepError:
                raise e from None  # nothing can be made there: the file is missing
            async with f:
                await f.write(data)
    finally:
        await c.close()
    return 0


async def cmd_ctl(args: argparse.Namespace) -> int:
    where = os.environ.get("BRASIL_SESSION_DIR")
    if not where:
        print("brasil ctl: BRASIL_SESSION_DIR is not set: run it from a process of a session "
              "(or write to a session's ctl with brasil write PATH LINE)", file=sys.stderr)
        return 2
    if not args.line:
        print("brasil ctl: give the LINE to write (e.g. brasil ctl res +2)", file=sys.stderr)
        return 2
    args.at = args.at or os.environ.get("BRASIL_AT")
    c = await connect(args)
    try:
        await c.write(f"{where}/ctl", (" ".join(args.line) + "\n").encode(), OWRITE)
    finally:
        await c.close()
    return 0


COMMANDS = {"ls": cmd_ls, "stat": cmd_stat, "cat": cmd_cat, "write": cmd_write, "ctl": cmd_ctl}


# The commands that run for long and read sockets or pipes all along (brasil.allocator).
LONG_RUNNING = ("serve", "worker", "mount", "web")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in LONG_RUNNING:
        from ..allocator import keep_buffers
        keep_buffers()
    if args.command == "serve":
        from . import serve
        return serve.main(args)
    if args.command in ("worker", "workers", "submit", "jobs", "wait", "cancel", "retry",
                        "report", "output"):
        from . import batch
        return batch.main(args)
    if args.command == "cluster":
        from . import cluster
        return cluster.main(args)
    if args.command == "run":
        from . import run as run_cmd
        return run_cmd.main(args)
    if args.command in ("gread", "pgrep", "ptail", "pcp", "psync", "ptop"):
        from . import group
        return group.main(args)
    from . import pstack
    if args.command in pstack.COMMANDS:
        return pstack.main(args)
    if args.command == "web":
        from . import web
        return web.main(args)
    if args.command in ("mount", "umount"):
        from . import mount
        return mount.COMMANDS[args.command](args)
    if getattr(args, "trace", False):
        import logging
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run("brasil", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
