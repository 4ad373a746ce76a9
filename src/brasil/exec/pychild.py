"""How brasil starts a Python program of its own (a daemon, a reducer, nsexec, a worker, chain).

``python -m MODULE`` puts the current directory first on ``sys.path``; a daemon owned by root
that was started in a directory others can write (``/tmp``, a shared project) would then import
their ``json.py`` or ``ClusterShell/`` instead of the real ones. So every Python child of ours
runs isolated (``-I``: neither the current directory nor the script's is added, ``PYTHON*``
variables and the user's site directory are ignored; brasil itself comes from the interpreter's
own site-packages), and, where its working directory does not matter to what it runs, from
``SAFE_CWD`` or its state directory. This module is the one place that says so.
"""

from __future__ import annotations

import os
import sys

SAFE_CWD = "/"  # where a child runs when nothing asks for another directory
ISOLATED = "-I"


def python_argv(module: str, *args: str, python: str | None = None) -> list[str]:
    """``[python, -I, -m, module, *args]``; ``python`` defaults to this interpreter (another
    host's interpreter for ``cluster up --hosts``)."""
    return [python or sys.executable, ISOLATED, "-m", module, *args]


def runs_module(argv: list[str], module: str) -> bool:
    """Whether ``argv`` was made by :func:`python_argv` for ``module``."""
    return argv[1:4] == [ISOLATED, "-m", module]


# A lean child: no site (-S), so nothing but the standard library and brasil's own modules, found
# where this brasil is installed, after the standard library (as site would put it: nothing there
# shadows the standard library). sys.argv[1] is that directory; the module's main gets the rest.
_LEAN = ("import sys; sys.path.append(sys.argv.pop(1)); import importlib; "
         "sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))")


def lean_python_argv(module: str, *args: str) -> list[str]:
    """``python -I -S`` running ``module.main(args)``: a process a few MB smaller than one with
    site's imports, for a child whose size matters (the fork server: every fork copies it).
    ``module`` must import only the standard library and brasil's stdlib-only modules."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [sys.executable, ISOLATED, "-S", "-c", _LEAN, root, module, *args]
