"""`brasil run`: a command on many nodes, as pdsh and clush run it (client/run.py)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from .errors import UsageError
from .errors import run as run_async
from .options import add_client_options

DESCRIPTION = """Run a command on many slots of the tree and print what they say: reserve, exec,
stream the output, close. Each line is prefixed by its node and rank (NODE/RANK: line), as pdsh
and clush print them; -b groups identical outputs under their node set instead. stdin is given to
every rank (or spread with --mux). The exit status is the largest of the ranks' statuses: 0 only
if every rank succeeded.

CMD is one word of shell text, run by /bin/sh as written (quote it to keep $VARS, pipes and ;
for the ranks: 'echo $BRASIL_RANK'), or several words, each passed whole, as your shell split
them (sh -c 'echo a; echo b' works as it reads)."""

EPILOG = """examples:
  brasil run -- uname -r                 once on every node of the tree
  brasil run -n 8 -- hostname            on 8 slots, wherever the tree has them
  brasil run -w 'n[1-3,7]' -b -- date    once on each named node, identical outputs grouped
  seq 100 | brasil run -n 4 --mux rr -- wc -l   lines dealt round-robin to 4 ranks"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a command on many nodes (like pdsh/clush)",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group()
    where.add_argument("-n", type=int, metavar="N", help="N slots anywhere in the tree")
    where.add_argument("-w", metavar="NODESET", help="one slot on each of these nodes "
                       "(ClusterShell syntax: n[1-3,7],m1)")
    p.add_argument("-x", metavar="NODESET", help="leave these nodes out (of -w, or of every "
                   "node)")
    p.add_argument("--spread", metavar="LABEL", help="with -n N: deal the ranks evenly over "
                   "the values of this node label (e.g. rack, given by serve --label rack=r1)")
    p.add_argument("--stage", action="append", default=[], metavar="FILE",
                   help="give FILE (here, on this machine) to every node that runs a rank, as "
                   "$BRASIL_STAGE/NAME: sent down the tree once per link and cached by content "
                   "at every node, so the same file run again sends nothing; a word of CMD "
                   "equal to FILE is replaced by the staged copy (repeatable)")
    p.add_argument("-b", action="store_true", help="group identical outputs by node set, "
                   "sorted by node")
    p.add_argument("-N", dest="no_prefix", action="store_true",
                   help="print lines without their NODE/RANK: prefix (as clush -N)")
    p.add_argument("-D", "--dir", metavar="DIR", help="where the ranks run, on every node "
                   "(default: this shell's current directory, as srun does; a node without it "
                   "fails, naming itself and the directory)")
    p.add_argument("--timeout", type=float, metavar="S", help="kill every rank after S seconds "
                   "and say which were cut short")
    p.add_argument("--mux", nargs="+", metavar=("rr|hash", "F"), help="spread stdin: round-robin by "
                   "line, or by the hash of field F (default: every rank gets all of it)")
    add_client_options(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD…")


def command_text(words: list[str], staged: Sequence[str] = ()) -> str:
    """One word is shell text, run as written (``'echo $BRASIL_RANK | wc'``); several are the
    words of one command, each kept whole (``sh -c 'echo a; echo b'``), as a shell here split
    them. brasil submit makes its commands the same way. A word equal to a ``staged`` path
    becomes the staged copy, ``"$BRASIL_STAGE"/NAME`` (as is a lone word naming one)."""
    from ..client.stage import staged_name
    if len(words) == 1 and words[0] not in staged:
        return words[0]
    # exec: the shell that expands $BRASIL_STAGE becomes the command, rather than forking it
    return "exec " + " ".join(f'"$BRASIL_STAGE"/{shlex.quote(staged_name(w))}' if w in staged
                              else shlex.quote(w) for w in words)


def where_to_run(path: str | None) -> str:
    """``-D DIR`` made absolute, or this shell's directory (as srun runs in its caller's)."""
    return os.path.abspath(path) if path else os.getcwd()


async def cmd_run(args: argparse.Namespace) -> int:
    from ..client.run import RunError, run
    from ..ninep.auth import dial
    words = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not words:
        raise UsageError("nothing to run: brasil run [-n N | -w NODESET] -- CMD…")
    if args.n is not None and args.n < 1:
        raise UsageError("-n must be 1 or more")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: give a number of seconds above 0")
    mux = None
    if args.mux:
        m = " ".join(args.mux).split()
        if m[0] not in ("rr", "hash") or (m[0] == "hash") != (len(m) == 2):
            raise UsageError(f"--mux {' '.join(m)}: use rr, or hash F with F a field number")
        mux = " ".join(m)
    command = command_text(words, args.stage)
    workdir = where_to_run(args.dir)
    c = await dial(args.at, args.secret_file)
    try:
        result = await run(c, command, n=args.n, nodeset=args.w, group=args.b,
                           timeout=args.timeout, mux=mux, stdin=sys.stdin.buffer, workdir=workdir,
                           exclude=args.x, label=not args.no_prefix, spread=args.spread,
                           stage=args.stage,
                           out=lambda line: print(line, flush=True))
    except RunError as e:
        raise UsageError(str(e)) from None
    finally:
        await c.close()
    return result.status


def main(args: argparse.Namespace) -> int:
    return run_async("brasil run", lambda: cmd_run(args))
