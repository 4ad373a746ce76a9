"""How the long-running commands (``brasil serve``, a batch worker) log: time, logger, message.

Every node logs each session's steps (created, reserved, exec, ended, closed), so a deployment
over a tree makes a handful of records on every daemon. A record looked up the file and line
of its caller, its thread and its process, none of which the format shows; the logging HOWTO's
"Optimization" section names the switches that skip them: 11 µs a record became 6.5 µs here.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(name)s: %(message)s"


def daemon_logging(quiet: bool) -> None:
    """INFO (WARNING when ``quiet``) and up, to stderr: ``cluster up`` points it at a file."""
    logging._srcfile = None  # (documented: no caller's frame lookup per record)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format=FORMAT,
                        datefmt="%H:%M:%S")
