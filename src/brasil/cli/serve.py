"""`brasil serve`: run this machine's node daemon (SPEC.md §2–4, §9)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import signal
import socket
import sys
from typing import Any

from ..ninep.auth import load_secret, own_secret
from ..ninep.errors import NinepError
from ..ninep.private import private_dir, read_private, write_private
from ..ninep.server import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_TOTAL_FIDS,
    UNIX_CONNECTIONS,
)
from ..ninep.transport import (
    DEFAULT_PORT,
    Address,
    AddressError,
    default_socket_path,
    parse_address,
)
from ..node import policy
from ..node.attrs import check_label
from ..node.daemon import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SESSIONS, Node
from .errors import UsageError, run
from .logs import daemon_logging

log = logging.getLogger("brasil.serve")

DESCRIPTION = """Run the node daemon: serve this machine's namespace (/csrv/local: arch, status, env,
ns, clone, fs, net and sessions) over 9P.

With no options it listens on a Unix socket in your runtime directory (mode 0600, and only
connections from your own uid are served) and on 127.0.0.1:5670, with one slot per CPU core.
A TCP listener always requires the cluster secret: without --secret-file, the daemon uses (and
makes, the first time) RUNTIME_DIR/secret, mode 0600, which your own commands on this machine
find by themselves. A TCP listener on anything but loopback is refused unless --secret-file is
given."""

EPILOG = """examples:
  brasil serve                                  defaults: Unix socket + 127.0.0.1:5670
  brasil serve --listen 127.0.0.1:0 --slots 4   an ephemeral port, 4 slots
  brasil serve --export ~/data                  also serve ~/data as /csrv/local/fs"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the node daemon", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", action="append", metavar="ADDR", default=[],
                   help="listen here (repeatable): HOST:PORT, unix:PATH or tcp!HOST!PORT "
                   "(default: the Unix socket and 127.0.0.1:5670)")
    p.add_argument("--name", default=socket.gethostname().split(".")[0],
                   help="this node's name in the tree (default: the host name)")
    p.add_argument("--slots", type=int, default=os.cpu_count() or 1,
                   help="how many commands may run here at once (default: CPU cores)")
    p.add_argument("--export", metavar="DIR", help="serve DIR read-write as /csrv/local/fs")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="an attribute of this node that predicates can select by "
                   "(res … where rack=r7, query paths); repeatable; also settable by writing "
                   "/csrv/local/attrs")
    p.add_argument("--parent", metavar="ADDR", help="join the tree under the daemon at ADDR")
    p.add_argument("--slurm", action="store_true", help="run as one task of `srun brasil serve "
                   "--slurm`: name, listen address and parent come from Slurm's environment "
                   "(a k-ary tree over the tasks; task 0, the root, prints its address)")
    p.add_argument("--discover", action="store_true", help="announce this daemon by zeroconf "
                   "(mDNS/DNS-SD, service _brasil._tcp) and, without --parent, join a parent "
                   "found that way (the cluster secret still authenticates it; nothing found: "
                   "this node is a root). Needs a --listen address other hosts reach")
    p.add_argument("--discover-wait", type=float, default=2.0, metavar="SECONDS",
                   help="with --discover: browse this long before choosing a parent "
                   "(default 2)")
    p.add_argument("--fanout", type=int, default=32, help="with --slurm: children per daemon; "
                   "with --discover: the children this daemon announces it takes at most "
                   "(default 32)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="with --slurm: the first "
                   "task's port on each node (the next tasks there take the following ones)")
    p.add_argument("--secret-file", metavar="FILE",
                   help="cluster secret; required to listen beyond loopback (default for TCP on "
                   "loopback or joining a parent: the runtime directory's secret, made if "
                   "missing)")
    p.add_argument("--state-dir", metavar="DIR", help="where state is kept "
                   "(default: $XDG_STATE_HOME/brasil or ~/.local/state/brasil)")
    p.add_argument("--db", metavar="URL", help="the batch scheduler's database: sqlite:///PATH "
                   "or postgresql://… without a password (default: batch.db in the state "
                   "directory)")
    p.add_argument("--db-password-file", metavar="FILE", help="the PostgreSQL password, in a "
                   "file of yours (mode 600); or set PGPASSWORD, or use ~/.pgpass (never in "
                   "--db: the command line is public)")
    p.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                   help="close a session idle this long: no open files, processes or unread "
                   f"output (default: {DEFAULT_IDLE_TIMEOUT:g})")
    lim = p.add_argument_group("limits", "what one client may take of a daemon others share; "
                               "past a limit new requests fail with a clear error and existing "
                               "work goes on")
    lim.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS, metavar="N",
                     help="sessions at once (default: %(default)s)")
    lim.add_argument("--policy", metavar="FILE",
                     help="caps per user on sessions, slots and the size of one res (TOML; "
                     "see docs/reference.md, Policy); a refusal names the file and the cap")
    lim.add_argument("--max-connections", type=int, default=None, metavar="N",
                     help="network connections at once (default: 1024, less if the open-file "
                     f"limit is low); the Unix socket has {UNIX_CONNECTIONS} more of its own. "
                     "Those not yet attached are at most half, and 1/16 from one address")
    lim.add_argument("--max-fids", type=int, default=DEFAULT_MAX_TOTAL_FIDS, metavar="N",
                     help="open files (fids) over all connections (default: %(default)s); "
                     "network connections hold at most 7/8 of them (the rest is the Unix "
                     "socket's), one address at most half of that")
    lim.add_argument("--handshake-timeout", type=float, default=DEFAULT_HANDSHAKE_TIMEOUT,
                     metavar="SECONDS", help="close a connection not attached this long after "
                     "connecting (default: %(default)g)")
    lim.add_argument("--frame-timeout", type=float, default=DEFAULT_FRAME_TIMEOUT,
                     metavar="SECONDS", help="close a connection whose message began to arrive "
                     "this long ago and is still incomplete (default: %(default)g)")
    # (defaults: batch/scheduler.py's DEFAULT_MAX_SUBMIT and _WORKLOAD, not imported here: the
    # scheduler costs every command a sixth of a second to load; so does compose, imported when
    # serve runs)
    lim.add_argument("--max-jobs-per-submission", type=int, metavar="N",
                     help="batch jobs in one submission (default: 100000)")
    lim.add_argument("--max-jobs-per-workload", type=int, metavar="N",
                     help="batch jobs of one tag waiting, ready or running at once "
                     "(default: 1000000)")
    p.add_argument("--metrics-interval", type=float, default=5.0, metavar="SECONDS",
                   help="how often the node samples itself and merges its children's metrics "
                   "(default 5)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve the subtree's metrics "
                   "over HTTP in the Prometheus text format (read-only; beyond loopback, anyone "
                   "who reaches it reads them)")
    p.add_argument("--debug", action="store_true", help="log every 9P message")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")


def state_dir(arg: str | None) -> str:
    if arg:
        return os.path.abspath(os.path.expanduser(arg))
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "brasil")


def listen_addresses(args: argparse.Namespace) -> list[Address]:
    try:
        addrs = [parse_address(a) for a in args.listen]
    except AddressError as e:
        raise UsageError(f"--listen: {e}") from None
    if not addrs:
        addrs = [Address("unix", path=default_socket_path()),
                 Address("tcp", "127.0.0.1", DEFAULT_PORT)]
    wide = [a for a in addrs if not a.is_loopback]
    if wide and not args.secret_file:
        raise UsageError(f"refusing to listen on {', '.join(map(str, wide))} without "
                         "--secret-file: anyone who can reach it could run commands as you. "
                         "Give --secret-file FILE, or listen on 127.0.0.1 or a unix: socket")
    return addrs


def secret_file_for_serving(args: argparse.Namespace, addrs: list[Address]) -> str | None:
    """--secret-file, else, if we listen on TCP or join a parent, our own default secret (made
    if there is none): a TCP listener, even on loopback, is open to every local user, so it
    never goes without one. The log says where it is, for the clients that need it."""
    if args.secret_file:
        return str(args.secret_file)
    if not args.parent and not any(a.kind == "tcp" for a in addrs):
        return None
    path, made = own_secret()
    log.warning("no --secret-file: TCP clients must know the secret %s %s (your commands on "
                "this machine find it there; elsewhere give --secret-file or set "
                "BRASIL_SECRET_FILE)", "made in" if made else "kept in", path)
    return path


async def serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()  # from the start: a SIGTERM while we set up still stops us cleanly
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.slurm:
        from ..tree.deploy import DeployError, slurm_place
        try:
            place = slurm_place(dict(os.environ), args.fanout, args.port)
        except DeployError as e:
            raise UsageError(str(e)) from None
        args.name, args.listen, args.parent = place.name, [place.listen], place.parent
        if args.state_dir is None:
            args.state_dir = os.path.join(state_dir(None), f"slurm-{place.name}")
    addrs = listen_addresses(args)
    password = db_password(args)  # before anything starts: a refusal leaves nothing behind
    if args.slots < 0:
        raise UsageError("--slots must be 0 or more")
    batch_limits(args)
    private_dir(state_dir(args.state_dir), "state directory")
    try:
        node = Node(args.name, args.slots, export=args.export, idle_timeout=args.idle_timeout,
                    max_sessions=args.max_sessions)
    except (NotADirectoryError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    if args.policy:
        try:
            node.policy = policy.load(args.policy)
        except policy.PolicyError as e:
            raise UsageError(str(e)) from None
        log.info("policy %s: %s", args.policy, node.policy)
    node.contain_process()  # all it starts dies with it, setsid'd or not (exec/cgroups.py)
    # where this daemon keeps its state: `brasil worker` started through it (`brasil workers`)
    # keeps its directory there too, under the cluster's --dir when there is one
    node.state_dir = state_dir(args.state_dir)
    for label in args.label:
        k, eq, v = label.partition("=")
        try:
            if not eq:
                raise NinepError(f"--label {label!r}: expected KEY=VALUE")
            check_label(k, v)
        except NinepError as e:
            raise UsageError(str(e)) from None
        node.labels[k] = v
    secret_file = secret_file_for_serving(args, addrs)
    secret = load_secret(secret_file) if secret_file else None  # errors: cli/errors.py
    parent = None
    if args.parent:
        try:
            parent = parse_address(args.parent)
        except AddressError as e:
            raise UsageError(f"--parent: {e}") from None
    discover = discover_options(args, addrs)
    from ..batch.store import StoreError
    from .compose import BatchOptions, ListenError, compose
    tcp = [a for a in addrs if a.kind == "tcp"]
    try:
        composed = await compose(
            node, addrs, secret=secret, parent=parent, discover=discover, trace=args.debug,
            data_host=tcp[0].host if tcp else "127.0.0.1",  # direct splices listen there too
            batch=BatchOptions(state_dir(args.state_dir), args.db, password,
                               max_submit=args.max_jobs_per_submission,
                               max_workload=args.max_jobs_per_workload),
            max_connections=connection_budget(args.max_connections),
            max_total_fids=args.max_fids, handshake_timeout=args.handshake_timeout,
            frame_timeout=args.frame_timeout, metrics_interval=args.metrics_interval,
            metrics_http=metrics_http(args))
    except ListenError as e:
        hint = f" (another daemon there? pick another with {e.option})" \
            if e.error.errno in (98, None) else ""
        print(f"brasil serve: {e}{hint}", file=sys.stderr)
        return 1
    except StoreError as e:
        raise UsageError(f"--db: {e}") from None
    write_addresses(args, [a for a in node.addresses if not a.startswith("data ")])
    if args.slurm and args.parent is None:
        print(f"brasil: root at {args.listen[0]}", flush=True)  # for whoever ran srun
    log.warning("node %s: %d slot(s), serving 9P on %s", node.name, node.slots_total,
                ", ".join(node.addresses))
    settle_collector()
    await stop.wait()
    log.warning("node %s: shutting down", node.name)
    await composed.stop()
    write_addresses(args, None)
    return 0


def discover_options(args: argparse.Namespace, addrs: list[Address]) -> Any:
    """--discover's options (tree/discover.Options), checked; None without --discover."""
    if not args.discover:
        return None
    if not 0 < args.discover_wait <= 60:
        raise UsageError("--discover-wait: give a number of seconds above 0, at most 60")
    if args.fanout < 1:
        raise UsageError("--fanout must be 1 or more")
    tcp = [a for a in addrs if a.kind == "tcp"]
    if not tcp or tcp[0].is_loopback:
        raise UsageError("--discover announces the first TCP listener, which other hosts must "
                         "reach: give --listen HOST:PORT (not loopback) and --secret-file FILE")
    from ..tree.discover import Options
    return Options(wait=args.discover_wait, fanout=args.fanout)


def metrics_http(args: argparse.Namespace) -> tuple[str, int] | None:
    """--metrics-listen HOST:PORT, checked."""
    if not args.metrics_listen:
        return None
    try:
        a = parse_address(args.metrics_listen)
    except AddressError as e:
        raise UsageError(f"--metrics-listen: {e}") from None
    if a.kind != "tcp":
        raise UsageError(f"--metrics-listen: {args.metrics_listen} is not HOST:PORT")
    if args.metrics_interval <= 0:
        raise UsageError("--metrics-interval: give a number of seconds above 0")
    return a.host, a.port


def settle_collector() -> None:
    """What the daemon made to start (modules, tables, the scheduler) is kept out of the cyclic
    collector's scans (``gc.freeze``), and the youngest generation is collected every 10,000
    allocations instead of 700: a reservation allocates a few objects per slot, and with the
    default a res 32 spent a fifth of its CPU in collections that found nothing to free (this
    daemon's structures are freed by reference counts; cycles are rare)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)


def batch_limits(args: argparse.Namespace) -> dict[str, int]:
    """The scheduler's caps that were given (the others keep the scheduler's defaults)."""
    limits = {"max_submit": args.max_jobs_per_submission,
              "max_workload": args.max_jobs_per_workload}
    if any(n is not None and n < 1 for n in limits.values()):
        raise UsageError("--max-jobs-per-submission and --max-jobs-per-workload must be 1 or more")
    return {k: n for k, n in limits.items() if n is not None}


def db_password(args: argparse.Namespace) -> str | None:
    """The PostgreSQL password from --db-password-file, if given. One in --db is refused: the
    command line is readable by every user (`ps`) for the daemon's whole life."""
    from ..batch.store import url_password
    if args.db and url_password(args.db) is not None:
        raise UsageError("--db: the URL holds a password, which every user of this machine can "
                         "read (ps) for as long as the daemon runs; remove it from the URL and "
                         "give it with --db-password-file FILE (mode 600), the PGPASSWORD "
                         "environment variable, or ~/.pgpass (or the file PGPASSFILE names)")
    if not args.db_password_file:
        return None
    if not (args.db or "").startswith(("postgresql://", "postgres://")):
        raise UsageError("--db-password-file: only for --db postgresql://…")
    try:
        text = read_private(args.db_password_file, "--db-password-file").decode()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--db-password-file: {e}") from None
    return text.rstrip("\r\n")


FD_RESERVE = 512  # descriptors kept for forking commands (4 each) and the owner's socket


def connection_budget(asked: int | None) -> int:
    """How many network connections fit: the open-file limit is raised as far as allowed, and
    enough descriptors stay free for commands and the owner's Unix socket whatever clients do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                        else 1 << 20, hard))
            soft = hard if hard != resource.RLIM_INFINITY else 1 << 20
        except (ValueError, OSError):
            pass
    room = max(16, (soft - FD_RESERVE - UNIX_CONNECTIONS) // 2)  # a connection may splice too
    if asked is None:
        return min(DEFAULT_MAX_CONNECTIONS, room)
    if asked > room:
        log.warning("--max-connections %d: only %d fit under the open-file limit %d", asked,
                    room, soft)
        return room
    return asked


def write_addresses(args: argparse.Namespace, addresses: list[str] | None) -> None:
    """Leave our addresses in the state directory while we run (`brasil cluster` reads them)."""
    path = os.path.join(state_dir(args.state_dir), "addresses")
    if addresses is None:
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    write_private(path, "".join(a + "\n" for a in addresses))


def tune_malloc() -> None:
    """A daemon moving 1 MiB blocks makes glibc map and unmap each one (its mmap threshold is
    128 KiB), and every fresh mapping page-faults in again: measured, pcp to 64 leaves spent a
    third of its time there. Keeping blocks up to 32 MiB in the heap, and trimming only past
    256 MiB, reuses the pages. Not glibc (musl, macOS): nothing to tune, skip."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 256 << 20)


def main(args: argparse.Namespace) -> int:
    tune_malloc()
    daemon_logging(args.quiet)
    if args.debug:
        logging.getLogger("brasil.ninep.trace").setLevel(logging.INFO)
    return run("brasil serve", lambda: serve(args))
