"""`brasil gread`, `pgrep`, `ptail`, `pcp`, `psync`, `ptop`: the cluster read and written as one.

The parallel tools are subcommands of `brasil` (not standalone names, which would shadow
procps's `pgrep`): `brasil pgrep`, `brasil ptail -f`, and so on. Each takes `--where QUERY`
(predicates joined by '/', as in query paths: `arch=x86_64/mem>=4G`, `name=n[1-3]`; default:
every node) and does its work in the daemons, reduced in the tree (client/group.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from typing import Any

from .errors import UsageError, run
from .options import add_client_options


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--where", default="", metavar="QUERY", help="the nodes: predicates joined "
                   "by '/' (arch=x86_64/mem>=4G, name=n[1-3], rack=r7); default: every node")
    add_client_options(p)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gread", help="read one file on many nodes, condensed in the tree",
                       description="Read PATH (relative to each node's local/: fs/etc/hosts, "
                       "status) on every node the query selects, reduced at every level of the "
                       "tree so that the root receives one result per child.",
                       epilog="kinds: concat (lines prefixed by node), equiv (identical contents "
                       "grouped with their node set, as dshbak -c), sum, min, max, mean (per "
                       "column of numbers), count, sha256, ls (a directory's entries, with the "
                       "nodes that have each where they differ), py:MODULE:FUNC (your "
                       "associative reducer, run in each daemon's child process). Files: fs/…, "
                       "status (each node's own line), attrs, metrics/now, metrics/row; and "
                       "metrics/history?METRIC[&start=S][&end=E][&step=STEP]: a metric's history "
                       "reduced per step by sum, mean, min, max or count (TIME VALUE lines). "
                       "concat, equiv and py: take files up to 8 MiB per node; sha256 and the "
                       "numeric kinds any size.")
    g.add_argument("path", metavar="PATH")
    g.add_argument("--agg", default="concat", metavar="KIND", help="the reduction (default "
                   "concat)")
    g.add_argument("--grep", metavar="RE", help="only the lines matching RE, on each node")
    g.add_argument("--json", action="store_true", help="print the aggregate as JSON (equiv: a "
                   'list of {"nodes": […], "count": n, "content": "…"})')
    _common(g)
    pg = sub.add_parser("pgrep", help="grep a file on many nodes, identical answers grouped",
                        description="grep PATTERN (RE2 syntax) in PATH on every selected node; "
                        "identical matches are grouped under their node set, and nodes where "
                        "nothing matched are left out. Exit status: 0 if a line matched "
                        "somewhere, 1 if none did, as grep.")
    pg.add_argument("pattern", metavar="PATTERN")
    pg.add_argument("path", metavar="PATH")
    _common(pg)
    pt = sub.add_parser("ptail", help="follow a file on many nodes (-f)",
                        description="Print the lines appended to PATH (under fs/) on every "
                        "selected node, each prefixed by its node, until interrupted. As tail "
                        "-F: the nodes that lack the file are named on stderr, and a file that "
                        "appears later is shown from its start. A directory is refused.")
    pt.add_argument("-f", action="store_true", help="follow (the only mode; as tail -f)")
    pt.add_argument("-n", type=int, default=10, metavar="N", help="start with the last N lines "
                    "of each node's file, as tail does (default 10; 0: only new lines)")
    pt.add_argument("path", metavar="PATH")
    _common(pt)
    pc = sub.add_parser("pcp", help="copy a file to many nodes, down the tree",
                        description="Copy SOURCE (a local file) to DEST (fs/…) on every selected "
                        "node. The bytes flow down the tree, each node keeping a copy and "
                        "passing them on, so the root sends each byte once per child.")
    pc.add_argument("source", metavar="SOURCE")
    pc.add_argument("dest", metavar="DEST")
    _common(pc)
    ps = sub.add_parser("psync", help="send only what changed",
                        description="Make DEST (fs/…) on every selected node hold SOURCE (a file "
                        "or a directory's files): a file goes only to the nodes whose copy "
                        "differs (by SHA-256, computed in the daemons) or is missing.")
    ps.add_argument("source", metavar="SOURCE")
    ps.add_argument("dest", metavar="DEST")
    _common(ps)
    pt2 = sub.add_parser("ptop", help="a live view of the tree's nodes",
                         description="Refreshing table of the selected nodes: load, free and "
                         "total slots, sessions, free memory. Ctrl-C ends it.")
    pt2.add_argument("--once", action="store_true", help="print the table once and exit")
    pt2.add_argument("--interval", type=float, default=1.0, metavar="S",
                     help="seconds between refreshes (default 1); off a terminal, a new table "
                     "is printed each time, as top -b does")
    _common(pt2)


NUMERIC = ("sum", "min", "max", "mean")
STATUS_HEADER = "NAME SLOTS FREE LOAD MEMFREE_MB"  # a status line's numeric columns
COMMANDS = ("gread", "pgrep", "ptail", "pcp", "psync", "ptop")


def print_groups(groups: list[dict[str, Any]]) -> None:
    from ..client.run import fold
    for g in groups:
        print("-" * 15)
        print(f"{fold(g['nodes'])} ({g['count']})")
        print("-" * 15)
        if g.get("encoding") == "base64":
            size = len(base64.b64decode(g["content"]))
            print(f"(binary, {size} bytes; --json gives it base64-encoded)")
            continue
        print(g["content"], end="" if g["content"].endswith("\n") or not g["content"] else "\n")


def print_errors(result: dict[str, Any]) -> int:
    for node, why in sorted(result.get("errors", {}).items()):
        print(f"{node}: {why}", file=sys.stderr)
    return 1 if result.get("errors") else 0


def print_notes(path: str, problems: dict[str, str]) -> None:
    """ptail: the nodes lacking the file (followed once it appears) and other troubles."""
    from ..client.run import fold
    missing = sorted(n for n, why in problems.items() if "No such file" in why)
    if missing:
        print(f"brasil ptail: {path}: no such file on {fold(missing)} (yet): following it "
              "there once it appears", file=sys.stderr, flush=True)
    for node, why in sorted(problems.items()):
        if node not in missing:
            print(f"brasil ptail: {node}: {why}", file=sys.stderr, flush=True)


async def cmd(args: argparse.Namespace) -> int:
    from ..client import group as api
    from ..ninep.auth import dial
    c = await dial(args.at, args.secret_file)
    try:
        if args.command in ("gread", "pgrep"):
            agg = "equiv" if args.command == "pgrep" else args.agg
            grep = args.pattern if args.command == "pgrep" else args.grep
            try:
                result = await api.gread(c, args.path, args.where, agg, grep)
            except ValueError as e:
                raise UsageError(str(e)) from None
            if args.command == "pgrep":  # a node where nothing matched is no group of lines
                result["groups"] = [g for g in result.get("groups", []) if g.get("content")]
            elif agg in NUMERIC and args.path == "status" and sys.stdout.isatty():
                print(STATUS_HEADER)
            show(result, getattr(args, "json", False))
            if result.get("long_lines"):
                print(f"brasil {args.command}: {result['long_lines']} line(s) over 1 MiB skipped "
                      "(not numbers)", file=sys.stderr)
            rc = print_errors(result)
            if args.command == "pgrep" and not rc and not result["groups"]:
                return 1  # as grep: nothing matched anywhere
            if not result.get("nodes") and not result.get("errors"):
                print(f"brasil {args.command}: no node matches "
                      f"{args.where or '(every node: none answered)'}", file=sys.stderr)
                return 1
            if "series" in result:
                if result.get("nodes") and not result["series"]:
                    print(f"brasil {args.command}: no history in that range on "
                          f"{len(result['nodes'])} node(s)", file=sys.stderr)
                    return 1
                return rc
            if agg in NUMERIC and result.get("nodes") and not any(
                    v is not None for v in result.get("value") or []):
                print(f"brasil {args.command}: no numbers in {args.path} on "
                      f"{len(result['nodes'])} node(s)", file=sys.stderr)
                return 1
            return rc
        if args.command == "ptail":
            if not 0 <= args.n <= 100_000:
                raise UsageError(f"-n {args.n}: give 0 to 100000 lines")
            async for line in api.follow(c, args.path, args.where,
                                         lambda p: print_notes(args.path, p), lines=args.n):
                print(line, flush=True)
            return 0
        if args.command == "pcp":
            n = await pcp_with_progress(c, args)
            print(f"copied {n} bytes to {len(await api.nodes(c, args.where))} node(s)",
                  file=sys.stderr)
            return 0
        if args.command == "psync":
            from ..client.run import fold
            done = await api.psync(c, args.source, args.dest, args.where)
            for path, sent in done:
                print(f"{path}: {'sent to ' + fold(sorted(sent)) if sent else 'up to date'}")
            if not done:
                print(f"brasil psync: {args.source} holds no files: nothing to send",
                      file=sys.stderr)
            return 0
        return await ptop(c, args)
    finally:
        await c.close()


async def pcp_with_progress(c: Any, args: argparse.Namespace) -> int:
    """pcp with a bar on a terminal (stderr), as scp shows one; quiet otherwise."""
    import os

    from ..client import group as api
    if not sys.stderr.isatty():
        return await api.pcp(c, args.source, args.dest, args.where)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    try:
        size = await asyncio.to_thread(os.path.getsize, args.source)
    except OSError:
        size = None
    with Progress("[bold]pcp", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(args.source, total=size)
        return await api.pcp(c, args.source, args.dest, args.where,
                             progress=lambda sent: bar.update(task, completed=sent))


def show(result: dict[str, Any], as_json: bool) -> None:
    agg = result["agg"]
    if as_json:
        print(json.dumps(result["groups"] if agg in ("equiv", "sha256") else result, indent=1))
        return
    if agg == "concat":
        for node in sorted(result.get("parts", {})):
            part = result["parts"][node]
            if not isinstance(part, str):  # not UTF-8: base64 in the JSON, a note here
                size = len(base64.b64decode(part["content"]))
                print(f"{node}: (binary, {size} bytes; --json gives it base64-encoded)")
                continue
            for line in part.splitlines():
                print(f"{node}: {line}")
    elif agg in ("equiv", "sha256"):
        print_groups(result.get("groups", []))
    elif "series" in result:  # a history range: TIME VALUE, a step a line
        for t, v in result["series"]:
            print(f"{t} {v:g}")
    elif agg == "count":
        print(f"nodes {result['value']['nodes']} lines {result['value']['lines']}")
    elif agg.startswith("py:"):
        print(json.dumps(result.get("value")))
    elif agg == "ls":
        from ..client.run import fold
        everyone = set(result.get("nodes", []))
        for name, (nodes, is_dir) in sorted(result.get("names", {}).items()):
            where = "" if set(nodes) == everyone else f"  [{fold(sorted(nodes))}]"
            print(f"{name}{'/' if is_dir else ''}{where}")
    elif not result.get("value"):
        pass  # no numbers: said on stderr
    else:
        print(" ".join("-" if v is None else f"{v:g}" for v in result.get("value", [])))


async def ptop(c: Any, args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from ..client import group as api
    from ..node.attrs import parse_status_line

    def table(lines: list[str]) -> Table:
        t = Table(title="brasil ptop", expand=False)
        for col in ("node", "load", "free/slots", "sessions", "mem free", "arch"):
            t.add_column(col, justify="right" if col != "node" else "left")
        for line in sorted(lines):
            a = parse_status_line(line)
            if not a.get("name") or " lost" in line:
                continue
            mem = int(a.get("memfree", "0") or 0) >> 20
            t.add_row(a["name"], a.get("load", "?"), f"{a.get('free', '?')}/{a.get('slots', '?')}",
                      a.get("sessions", "?"), f"{mem} MB", a.get("arch", "?"))
        return t
    if args.interval <= 0:
        raise UsageError(f"--interval {args.interval:g}: give a number of seconds above 0")
    if args.once or not sys.stdout.isatty():  # off a terminal: one table per interval (top -b)
        while True:
            Console().print(table(await api.status(c, args.where)))
            sys.stdout.flush()
            if args.once:
                return 0
            await asyncio.sleep(args.interval)
    with Live(table(await api.status(c, args.where)), refresh_per_second=4) as live:
        while True:
            await asyncio.sleep(args.interval)
            live.update(table(await api.status(c, args.where)))


def main(args: argparse.Namespace) -> int:
    return run(f"brasil {args.command}", lambda: cmd(args))
