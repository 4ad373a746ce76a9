"""`brasil mount` and `brasil umount`: the namespace as a directory for unmodified programs.

Wired into `brasil` by :func:`add_parsers`; also runnable alone as ``python -m brasil.cli.mount``.
These commands are synchronous (the mount forks a process), so they are dispatched through
:data:`COMMANDS` rather than the asyncio runner the other subcommands use.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from ..ninep.transport import AddressError, default_address, parse_address
from .options import add_client_options

MOUNT_DESCRIPTION = """\
Mount a Brasil daemon's namespace on DIR through FUSE, so that any program can use it:

    brasil mount mnt
    cat mnt/csrv/local/clone                 # prints a new session's id, e.g. 0
    echo "res 4" > mnt/csrv/local/0/ctl
    echo "exec hostname" > mnt/csrv/local/0/ctl
    cat mnt/csrv/local/0/stdio               # output as it arrives, until all have ended
    brasil umount mnt

Without --foreground the command returns once the mount is live, leaving a mount process
behind it that ends at `brasil umount DIR`. Reads of synthetic and stream files are never cached;
each write(2) is one 9P write, so one echo is one ctl command; permissions are checked by the
daemon. DIR must be an empty directory."""

MOUNT_EPILOG = """addresses: HOST:PORT, unix:PATH or tcp!HOST!PORT; --at defaults to $BRASIL, then to
the local daemon's Unix socket. Needs /dev/fuse and fusermount3 (package fuse3)."""


def add_parsers(subparsers: Any) -> None:
    """Add the ``mount`` and ``umount`` subcommands to an ``add_subparsers()`` object."""
    m = subparsers.add_parser(
        "mount", help="mount the namespace on DIR (FUSE) for unmodified programs",
        description=MOUNT_DESCRIPTION, epilog=MOUNT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("dir", metavar="DIR", help="an empty directory to mount on")
    add_client_options(m)
    m.add_argument("-f", "--foreground", action="store_true",
                   help="serve in this process until unmounted or interrupted (^C unmounts)")
    m.add_argument("-d", "--debug", action="store_true",
                   help="print every FUSE request (libfuse debug output) on stderr; best with "
                   "--foreground")
    m.add_argument("--trace", action="store_true",
                   help="log every 9P message to stderr (with --foreground)")
    m.add_argument("--log", metavar="FILE", help="where the mount process logs once it is in the "
                   "background: each refused write with the daemon's reason (a shell only shows "
                   "the errno, e.g. 'Invalid argument')")
    m.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                   help="how long to wait for the mount to become live (default: %(default)g)")
    m.set_defaults(func=cmd_mount)

    u = subparsers.add_parser(
        "umount", help="unmount a `brasil mount`",
        description="Unmount DIR (fusermount3 -u DIR; umount DIR when root). Also clears a mount "
        "whose process died ('Transport endpoint is not connected'). The mount process then "
        "closes its connection and exits.")
    u.add_argument("dir", metavar="DIR")
    u.add_argument("-z", "--lazy", action="store_true",
                   help="detach now even if programs still use it; it goes once they let go")
    u.set_defaults(func=cmd_umount)


def _fail(prog: str, msg: object, code: int = 1) -> int:
    print(f"{prog}: {msg}", file=sys.stderr)
    return code


def cmd_mount(args: argparse.Namespace) -> int:
    prog = "brasil mount"
    try:
        addr = parse_address(args.at) if args.at else default_address()
    except AddressError as e:
        return _fail(prog, e, 2)
    auth = None
    from ..ninep.auth import SecretError, client_auth, load_secret, secret_file_for
    try:
        secret_file = secret_file_for(addr, args.secret_file)
    except SecretError as e:
        return _fail(prog, e)
    if secret_file:
        try:
            auth = client_auth(load_secret(secret_file))
        except SecretError as e:
            return _fail(prog, e)
    if args.log:
        from ..ninep.private import open_private
        try:
            os.close(open_private(args.log))
        except OSError as e:
            return _fail(prog, f"--log {args.log}: {e.strerror or e}")
    try:
        from ..mount import fuse
    except (ImportError, OSError) as e:  # mfusepy raises OSError when libfuse3 is missing
        return _fail(prog, f"FUSE is not available: {e} (install the fuse3 package)")
    try:
        if args.foreground:
            import logging
            logging.basicConfig(level=logging.DEBUG if args.debug else
                                logging.INFO if args.trace else logging.WARNING,
                                format="%(name)s: %(message)s")
            fuse.mount_foreground(args.dir, addr, auth=auth, debug=args.debug, trace=args.trace)
        else:
            fuse.mount_background(args.dir, addr, auth=auth, debug=args.debug, trace=args.trace,
                                  timeout=args.timeout, log_file=args.log)
    except fuse.MountError as e:
        return _fail(prog, e)
    except KeyboardInterrupt:
        return 130
    except (ConnectionError, OSError) as e:
        return _fail(prog, f"cannot reach the daemon: {e}")
    except Exception as e:  # noqa: BLE001 - NinepError, ProtocolError: say what, not a traceback
        return _fail(prog, f"the daemon at {addr}: {e}")
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    try:
        from ..mount import fuse
    except (ImportError, OSError) as e:
        return _fail("brasil umount", f"FUSE is not available: {e}")
    try:
        fuse.umount(args.dir, lazy=args.lazy)
    except fuse.MountError as e:
        return _fail("brasil umount", e)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"mount": cmd_mount, "umount": cmd_umount}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="brasil", description="Mount a Brasil namespace (FUSE).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_parsers(sub)
    args = p.parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
