"""``brasil pstack``, ``pstop``, ``pcont``, ``psignal``, ``pbreak``, ``peval``: a session's
processes as one group."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from .errors import UsageError, run
from .options import add_client_options

SESSION_HELP = "the session: its number at the daemon (--at), as `brasil run` and clone give it"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pstack", help="where every rank of a session is: stacks merged into classes",
        description="Print the merged call tree of every rank's stacks (STAT's prefix tree): "
        "one frame a line with the ranks that passed through it and their nodes, folded, so "
        "a hung job of thousands of ranks reads as a few classes and the odd rank stands out. "
        "The tree is merged at every level of the daemons' tree. Native frames come from "
        "eu-stack, Python frames (CPython) from py-spy.",
        epilog="Ranks whose process has exited are listed as gone; a node lost during the "
        "read is named; the others are still shown. Exit status 0, or 1 when no rank could "
        "be read.")
    p.add_argument("session", metavar="SESSION", nargs="?", help=SESSION_HELP + " (default: "
                   "the one session running there)")
    p.add_argument("--where", metavar="QUERY", help="every session a query selects, anywhere "
                   "in the tree (user=alice, command=*solver*, state=running; predicates joined "
                   "by '/'), one tree each")
    p.add_argument("--lines", action="store_true", help="frames with file:line (ranks on "
                   "different lines of one function are then different classes)")
    p.add_argument("--dot", action="store_true", help="print the tree as Graphviz dot")
    p.add_argument("--svg", metavar="FILE", help="draw the tree into FILE (needs graphviz)")
    p.add_argument("--samples", type=int, default=1, metavar="N", help="merge N snapshots "
                   "(STAT's 3D mode) and say which ranks moved between them and which are stuck")
    p.add_argument("--interval", type=float, default=0.5, metavar="S",
                   help="seconds between samples (default 0.5)")
    p.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds "
                   "for a session to be running with every rank's process started (a job "
                   "just launched)")
    add_client_options(p)
    for name, what in (("pstop", "stop every rank of a session (held by the debugger)"),
                       ("pcont", "continue every rank of a session"),
                       ("pdetach", "let the debugger go of every rank of a session")):
        q = sub.add_parser(name, help=what, description=what[0].upper() + what[1:] + ".")
        q.add_argument("session", metavar="SESSION", nargs="?", help=SESSION_HELP)
        add_client_options(q)
    b = sub.add_parser("pbreak", help="stop every rank of a session at a breakpoint",
                       description="Set a breakpoint on every rank, continue them, wait until "
                       "every rank is stopped, and print where they stopped as classes of "
                       "ranks. WHERE is a C function or FILE:LINE (gdb), or on CPython ranks "
                       "py:FILE.py:LINE, py:module.function or FILE.py:LINE (Python).",
                       epilog="Then `brasil peval EXPR` reads a value on every rank, `brasil "
                       "pcont` goes on to the next hit, `brasil pdetach` lets them go.")
    b.add_argument("where", metavar="WHERE")
    b.add_argument("session", metavar="SESSION", nargs="?", help=SESSION_HELP)
    b.add_argument("--within", type=float, default=60.0, metavar="S", help="seconds to wait "
                   "for every rank to stop there (default 60)")
    b.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds "
                   "for a session to be running with every rank's process started")
    add_client_options(b)
    e = sub.add_parser("peval", help="an expression's value on every stopped rank, as classes",
                       description="Evaluate EXPR on every rank of a session (held by the "
                       "debugger and stopped) and print its classes of values: `x = 42  "
                       "[ranks 0-62 (63) on …]`. Python on a rank stopped at a Python "
                       "breakpoint, else C; py:EXPR or c:EXPR says which.")
    e.add_argument("expr", metavar="EXPR")
    e.add_argument("session", metavar="SESSION", nargs="?", help=SESSION_HELP)
    add_client_options(e)
    s = sub.add_parser("psignal", help="send a signal to every rank of a session",
                       description="Send SIGNAL (TERM, KILL, STOP, CONT, USR1… or a number) to "
                       "the process of every rank of a session.")
    s.add_argument("signal", metavar="SIGNAL")
    s.add_argument("session", metavar="SESSION", nargs="?", help=SESSION_HELP)
    add_client_options(s)


COMMANDS = ("pstack", "pstop", "pcont", "pdetach", "psignal", "pbreak", "peval")


async def cmd(args: argparse.Namespace) -> int:
    from ..group import procs
    from ..ninep.auth import dial
    c = await dial(args.at, args.secret_file)
    try:
        if args.command == "pstack" and args.where:
            if args.session:
                raise UsageError("give a SESSION or --where, not both")
            found = await procs.sessions_of(c, args.where)
            if not found:
                print(f"brasil pstack: no session matches {args.where}", file=sys.stderr)
                return 1
            rc = 0
            for title, path in found:
                print(f"== {title}", flush=True)
                args.session = path
                rc = max(rc, await _picture(c, args))
            return rc
        deadline = time.monotonic() + getattr(args, "wait", 0.0)
        if args.session is None:
            args.session = await _running_session(c, deadline)
        while getattr(args, "wait", 0.0) and time.monotonic() < deadline:  # another machine's
            if await procs.started(c, args.session):
                break
            await asyncio.sleep(0.2)
        if args.command in ("pbreak", "peval"):
            return await _debug(c, args)
        if args.command != "pstack":
            return await _act(c, args)
        return await _picture(c, args)
    finally:
        await c.close()


async def _running_session(c: Any, deadline: float) -> str:
    from ..group import procs
    while True:
        try:
            return await procs.the_running_session(c)
        except ValueError as e:
            if time.monotonic() > deadline:
                raise UsageError(str(e)) from None
            await asyncio.sleep(0.2)


async def _act(c: Any, args: argparse.Namespace) -> int:
    """pstop, pcont, pdetach, psignal: one group operation; its failures named on stderr."""
    from ..group import procs
    verb = {"pstop": "stop", "pcont": "cont", "pdetach": "detach",
            "psignal": "signal"}[args.command]
    try:
        report = await procs.op(c, args.session, verb, getattr(args, "signal", ""))
    except ValueError as e:
        print(f"brasil {args.command}: cannot read the daemon's answer: {e}", file=sys.stderr)
        return 1
    for line in report.trailer():
        print(f"brasil {args.command}: {line}", file=sys.stderr)
    return 1 if report.errors else 0


async def _debug(c: Any, args: argparse.Namespace) -> int:
    """pbreak (break, cont, wait: where every rank stopped) and peval (a value's classes)."""
    from ..group import procs
    try:
        if args.command == "pbreak":
            for verb, arg in (("break", args.where), ("cont", "")):
                report = await procs.op(c, args.session, verb, arg)
                if report.errors:
                    return _failed(args, report)
            report = await procs.op(c, args.session, "wait", f"{args.within:g}")
            lines = report.value_lines("stopped at")
        else:
            report = await procs.op(c, args.session, "eval", args.expr)
            lines = report.value_lines(args.expr.removeprefix("py:").removeprefix("c:"))
    except ValueError as e:
        print(f"brasil {args.command}: cannot read the daemon's answer: {e}", file=sys.stderr)
        return 1
    if lines:
        print("\n".join(lines), flush=True)
    return _failed(args, report)


def _failed(args: argparse.Namespace, report: Any) -> int:
    for line in report.trailer():
        print(f"brasil {args.command}: {line}", file=sys.stderr)
    return 1 if report.errors or not report.values else 0


def _colour(tree: Any) -> Any:
    """On a terminal, the frames fewer than half the ranks pass through in red: where the odd
    ranks went."""
    total = len(tree.ranks)

    def paint(line: str) -> str:
        count = line.rsplit(" (", 1)[-1].split(")", 1)[0]
        return f"\x1b[31m{line}\x1b[0m" if count.isdigit() and int(count) * 2 < total else line
    return paint


async def _picture(c: Any, args: argparse.Namespace) -> int:
    """The merged tree of one session: as lines, dot or an SVG; with samples, who moved."""
    from ..exec.stacktree import progress, ranks_text
    from ..group import procs
    if args.samples < 1:
        raise UsageError("--samples: give 1 or more")
    try:
        report, tree, trees = await procs.samples(c, args.session, args.samples, args.interval,
                                                  args.lines)
    except ValueError as e:  # a daemon of another version, say
        print(f"brasil pstack: cannot read the daemon's answer: {e}", file=sys.stderr)
        return 1
    if args.svg:
        dot = await asyncio.create_subprocess_exec("dot", "-Tsvg", "-o", args.svg,
                                                   stdin=asyncio.subprocess.PIPE)
        await dot.communicate(tree.dot().encode())
        if dot.returncode:
            raise UsageError(f"--svg: graphviz's dot failed (exit {dot.returncode})")
    elif args.dot:
        sys.stdout.write(tree.dot())
    else:
        odd = _colour(tree) if sys.stdout.isatty() else None
        for line in tree.lines():
            print(odd(line) if odd else line)
    if args.samples > 1:
        stuck, moving = progress(trees)
        print(f"moving: {ranks_text(moving)}" if len(moving) else "moving: none")
        print(f"stuck:  {ranks_text(stuck)}" if len(stuck) else "stuck: none")
    sys.stdout.flush()
    for line in report.trailer():
        print(f"brasil pstack: {line}", file=sys.stderr)
    return 0 if len(tree.ranks) else 1


def main(args: argparse.Namespace) -> int:
    return run(f"brasil {args.command}", lambda: cmd(args))
