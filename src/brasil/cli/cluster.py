"""`brasil cluster up|down`: a local tree of daemons in the background."""

from __future__ import annotations

import argparse
import os
import sys

from ..ninep.transport import runtime_dir
from ..tree import cluster
from .errors import UsageError, run

UP_DESCRIPTION = """Start a tree of daemons in the background and print the root's address.

here (default):  1 + F + F² + … daemons (depth D, fanout F); n0 is the root, n1…nF its
                 children, n1.1… theirs; Unix sockets and loopback only
--hosts NODESET: one daemon per host over ssh, in a k-ary tree (the first host is the root,
                 each child dials its parent); a generated secret is installed 0600 on every
                 host; hosts that cannot be reached are reported, and the tree is formed from
                 the rest
--slurm:         inside an allocation, one daemon per task through srun"""

UP_EXAMPLES = """examples:
  brasil cluster up --depth 2 --fanout 3 --slots 2      13 daemons here
  brasil cluster up --hosts 'node[01-64]' --fanout 8    over ssh
  salloc -N 16 brasil cluster up --slurm                 in Slurm"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="start or stop a tree of daemons (here, over ssh, Slurm)",
                       description="Start a tree of node daemons in the background — on this "
                       "machine (loopback and Unix sockets only), on hosts over ssh (--hosts), "
                       "or in a Slurm allocation (--slurm) — or stop it.")
    csub = p.add_subparsers(dest="cluster_command", metavar="up|down")
    csub.required = True
    default_dir = os.path.join(runtime_dir(), "cluster")
    u = csub.add_parser("up", help="start the tree; prints the root's address",
                        description=UP_DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=UP_EXAMPLES)
    u.add_argument("--depth", type=int, default=1, help="levels below the root (default 1)")
    u.add_argument("--fanout", type=int, default=None, help="children per daemon (default 3 "
                   "here, 32 with --hosts or --slurm, as Flux's kary:32)")
    u.add_argument("--slots", type=int, default=None, help="slots per daemon (default 1 here; "
                   "one per core elsewhere)")
    u.add_argument("--hosts", metavar="NODESET", help="start one daemon on each host over ssh "
                   "(ClusterShell node set: node[01-64],login1)")
    u.add_argument("--slurm", action="store_true", help="start one daemon per task of the "
                   "current Slurm allocation (srun brasil serve --slurm)")
    u.add_argument("--port", type=int, default=5670, help="the daemons' port with --hosts or "
                   "--slurm (a node's tasks take the following ones; default 5670)")
    u.add_argument("--remote-python", metavar="PATH", help="the interpreter that has brasil on "
                   "the hosts (default: this one's path)")
    u.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="passed to ssh (repeatable), e.g. --ssh-option=-F --ssh-option=cfg")
    u.add_argument("--dir", default=default_dir, help=f"where sockets, logs and pids go "
                   f"(default {default_dir})")
    exp = u.add_mutually_exclusive_group()
    exp.add_argument("--export", default="/", metavar="DIR", help="each node's fs/ is its DIR "
                     "(default /, so `gread fs/etc/hosts` works: whoever holds the secret can "
                     "run commands as you anyway); --export '' exports nothing")
    exp.add_argument("--export-root", metavar="DIR", help="export DIR/NAME as each node's fs/ "
                     "(a directory of its own per node, here)")
    d = csub.add_parser("down", help="stop every daemon `up` started",
                        description="Stop every daemon started by `brasil cluster up` in DIR.")
    d.add_argument("--dir", default=default_dir, help=f"the cluster's directory (default {default_dir})")
    # A host's part of `up --hosts` and `down`, run there over ssh (not listed: no help=).
    hu = csub.add_parser("host-up", description="Read the cluster secret on stdin, install it "
                         "in a private directory of yours (/tmp/brasil-UID/hosts/ID) and start "
                         "`brasil serve ARGS…` with it; prints {\"pid\", \"dir\"} as JSON.")
    hu.add_argument("id")
    hu.add_argument("serve_args", nargs=argparse.REMAINDER, metavar="-- ARGS…")
    hd = csub.add_parser("host-down", description="Stop the daemon `host-up` started in DIR "
                         "(PID, and the pid DIR records, each only while it is still that "
                         "daemon) and remove DIR; prints {\"stopped\", \"left\"} as JSON.")
    hd.add_argument("host_dir", metavar="DIR")
    hd.add_argument("pid", type=int)


async def cmd_up(args: argparse.Namespace) -> int:
    if args.hosts or args.slurm:
        return await cmd_up_remote(args)
    args.fanout = 3 if args.fanout is None else args.fanout
    args.slots = 1 if args.slots is None else args.slots
    if args.depth < 0 or args.fanout < 1 or args.slots < 0:
        raise UsageError("--depth must be ≥ 0, --fanout ≥ 1 and --slots ≥ 0")
    n = sum(args.fanout ** d for d in range(args.depth + 1))
    if n > 500:
        raise UsageError(f"a tree of {n} daemons is more than one machine should run; "
                         "lower --depth or --fanout")
    try:
        addrs = await cluster.up(args.dir, args.depth, args.fanout, args.slots, args.export_root,
                                 progress=lambda m: print(m, file=sys.stderr),
                                 export=args.export or None)
    except cluster.ClusterError as e:  # `up` has stopped what it started, and only that
        raise UsageError(str(e)) from None
    d = os.path.abspath(args.dir)  # noqa: ASYNC240 - a name, no disk
    root = next(a for a in addrs["n0"] if a.startswith("unix:"))
    print(root)
    print(f"# use it:  export BRASIL={root} BRASIL_SECRET_FILE={d}/secret", file=sys.stderr)
    print(f"# stop it: brasil cluster down --dir {d}", file=sys.stderr)
    return 0


async def cmd_up_remote(args: argparse.Namespace) -> int:
    from ..tree import deploy
    fanout = deploy.DEFAULT_FANOUT if args.fanout is None else args.fanout
    if fanout < 1:
        raise UsageError("--fanout must be ≥ 1")
    d = os.path.abspath(args.dir)  # noqa: ASYNC240 - a name, no disk
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        if args.slurm:
            root = await deploy.slurm_up(d, fanout=fanout, slots=args.slots, port=args.port,
                                         export=args.export or None, progress=say)
        else:
            root, missing = await deploy.ssh_up(d, deploy.expand(args.hosts), fanout=fanout,
                                                slots=args.slots, port=args.port,
                                                python=args.remote_python,
                                                ssh=args.ssh_option, export=args.export or None,
                                                progress=say)
    except deploy.DeployError as e:
        raise UsageError(str(e)) from None
    print(root)
    print(f"# use it:  export BRASIL={root} BRASIL_SECRET_FILE={d}/secret", file=sys.stderr)
    print(f"# stop it: brasil cluster down --dir {d}", file=sys.stderr)
    return 0


def host_main(args: argparse.Namespace) -> int:
    """`cluster host-up|host-down`: what `up --hosts` and `down` run on each host."""
    import json

    from ..tree import deploy
    try:
        if args.cluster_command == "host-up":
            serve = args.serve_args[1:] if args.serve_args[:1] == ["--"] else args.serve_args
            started = deploy.host_up(args.id, serve, sys.stdin.buffer.read(deploy.MAX_SECRET + 1))
            print(json.dumps(started))
        else:
            print(json.dumps(deploy.host_down(args.host_dir, args.pid)))
    except deploy.DeployError as e:
        print(f"brasil cluster {args.cluster_command}: {e}", file=sys.stderr)
        return 1
    return 0


def main(args: argparse.Namespace) -> int:
    if args.cluster_command == "up":
        return run("brasil cluster", lambda: cmd_up(args))
    if args.cluster_command in ("host-up", "host-down"):
        return host_main(args)
    import asyncio

    from ..tree import deploy
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        if os.path.exists(os.path.join(args.dir, "hosts.json")):
            n = asyncio.run(deploy.ssh_down(args.dir, say))
        elif os.path.exists(os.path.join(args.dir, "srun.pid")):
            n = deploy.slurm_down(args.dir, say)
        else:
            n = cluster.down(args.dir, progress=say)
    except cluster.ClusterError as e:
        print(f"brasil cluster: {e}", file=sys.stderr)
        return 1
    print(f"stopped {n} daemon(s)", file=sys.stderr)
    return 0
