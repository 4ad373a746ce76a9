"""`brasil cluster up|down`: a local tree of daemons in the background."""

from __future__ import annotations

import argparse
import os
import sys

from ..ninep.transport import runtime_dir
from ..tree import cluster
from .errors import UsageError, run


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("cluster", help="start or stop a local tree of daemons",
                       description="Start a tree of node daemons on this machine in the "
                       "background (loopback and Unix sockets only), or stop it.")
    csub = p.add_subparsers(dest="cluster_command", metavar="up|down")
    csub.required = True
    default_dir = os.path.join(runtime_dir(), "cluster")
    u = csub.add_parser("up", help="start the tree; prints the root's address",
                        description="Start 1 + F + F² + … daemons (depth D, fanout F). Names: n0 "
                        "is the root, n1…nF its children, n1.1… theirs. Prints the root's address "
                        "and the environment to use it.")
    u.add_argument("--depth", type=int, default=1, help="levels below the root (default 1)")
    u.add_argument("--fanout", type=int, default=3, help="children per daemon (default 3)")
    u.add_argument("--slots", type=int, default=1, help="slots per daemon (default 1)")
    u.add_argument("--dir", default=default_dir, help=f"where sockets, logs and pids go "
                   f"(default {default_dir})")
    u.add_argument("--export-root", metavar="DIR", help="export DIR/NAME as each node's fs/")
    d = csub.add_parser("down", help="stop every daemon `up` started",
                        description="Stop every daemon started by `brasil cluster up` in DIR.")
    d.add_argument("--dir", default=default_dir, help=f"the cluster's directory (default {default_dir})")


async def cmd_up(args: argparse.Namespace) -> int:
    if args.depth < 0 or args.fanout < 1 or args.slots < 0:
        raise UsageError("--depth must be ≥ 0, --fanout ≥ 1 and --slots ≥ 0")
    n = sum(args.fanout ** d for d in range(args.depth + 1))
    if n > 500:
        raise UsageError(f"a tree of {n} daemons is more than one machine should run; "
                         "lower --depth or --fanout")
    try:
        addrs = await cluster.up(args.dir, args.depth, args.fanout, args.slots, args.export_root,
                                 progress=lambda m: print(m, file=sys.stderr))
    except cluster.ClusterError as e:  # `up` has stopped what it started, and only that
        raise UsageError(str(e)) from None
    d = os.path.abspath(args.dir)
    root = next(a for a in addrs["n0"] if a.startswith("unix:"))
    print(root)
    print(f"# use it:  export BRASIL={root} BRASIL_SECRET_FILE={d}/secret", file=sys.stderr)
    print(f"# stop it: brasil cluster down --dir {d}", file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.cluster_command == "up":
        return run("brasil cluster", lambda: cmd_up(args))
    try:
        n = cluster.down(args.dir)
    except cluster.ClusterError as e:
        print(f"brasil cluster: {e}", file=sys.stderr)
        return 1
    print(f"stopped {n} daemon(s)", file=sys.stderr)
    return 0
