"""Options every client command shares, so that they read and behave the same everywhere, and
the connection they ask for."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..ninep.client import Client

AT_HELP = "daemon address (default: $BRASIL, then the local daemon's Unix socket)"


def add_client_options(p: argparse.ArgumentParser, at_help: str = AT_HELP,
                       trace: bool = False) -> None:
    """``--at`` and ``--secret-file`` (and ``--trace``, where the command logs 9P messages)."""
    p.add_argument("--at", metavar="ADDR", help=at_help)
    p.add_argument("--secret-file", metavar="FILE", help="cluster secret for daemons that "
                   "require authentication (default: $BRASIL_SECRET_FILE, then for a TCP address the "
                   "runtime directory's secret that `brasil serve` made, if any)")
    if trace:
        p.add_argument("--trace", action="store_true", help="log every 9P message to stderr")


async def connect(args: argparse.Namespace) -> Client:
    """The client every command uses: --at or $BRASIL, and the secret if one is configured.
    (The 9P client is imported here, not above: `push` reads these options and, on one
    machine, never dials; importing asyncio and the codec cost it 70 ms at every start.)"""
    from ..ninep.auth import dial
    return await dial(args.at, getattr(args, "secret_file", None),
                      trace=getattr(args, "trace", False))
