"""How a command line becomes an argv: what ``/bin/sh -c CMD`` would do, without the shell when
it is not needed.

A command of plain words that names a program is run directly, sparing a shell per process (half
the CPU of a short command), and a missing program is reported when the command is given rather
than as an exit status 127 later. Used by the node daemon's ``exec`` and by PUSH.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil

from ..ninep.errors import NinepError

SH_WORDS = set(""". : [ alias bg break cd command continue echo eval exec exit export false fg
getopts hash jobs kill local printf pwd read readonly return set shift test times trap true type
ulimit umask unalias unset wait if then else elif fi case esac for while until do done { } ! time
""".split())
SHELL_SYNTAX = set("$`\\\"'|&;<>(){}*?[]~#=!%\n")


def command_argv(cmd: str, path: str, direct: bool = True) -> list[str]:
    """How to run ``cmd`` exactly as ``/bin/sh -c`` would, failing early and with a sentence when
    a simple command names a program that does not exist.

    A simple command — plain words, no shell syntax, not a builtin — runs directly, sparing a
    shell per process (half the CPU of a short command); anything else goes through /bin/sh,
    whose exit status 127 then shows in ``status`` for what it could not find."""
    shell = ["/bin/sh", "-c", cmd]
    try:
        words = shlex.split(cmd, comments=True)
    except ValueError:
        return shell
    if not words:
        raise NinepError("exec: empty command; usage: exec CMD…")
    prog = words[0]
    if prog in SH_WORDS or any(c in SHELL_SYNTAX for c in prog) or cmd.lstrip()[:1] in "({!":
        return shell  # (subshell), { group; }, ! negation, VAR=x, globs: the shell's to run
    if "/" in prog:
        if not os.access(prog, os.X_OK):
            raise NinepError(f"exec: {prog}: no such executable file", errno.ENOENT)
        found = prog
    else:
        which = shutil.which(prog, path=path)
        if which is None:
            shown = path if len(path) <= 120 else path[:117] + "…"
            raise NinepError(f"exec: {prog}: command not found (PATH={shown})", errno.ENOENT)
        found = which
    if not direct or any(c in SHELL_SYNTAX for c in cmd):
        return shell
    return [found, *words[1:]]
