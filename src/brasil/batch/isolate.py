"""A private copy-on-write view of a home directory: overlayfs in a private mount namespace.

The execution's process, between fork and exec (``preexec_fn``, so no helper program is started
per job), leaves the host's mount namespace — as root a plain ``unshare(CLONE_NEWNS)``, otherwise
an unprivileged user namespace too, as ``exec/nsexec.py`` does — makes every mount private, and
mounts an overlay AT THE HOME'S OWN PATH: the home is the lower layer, the upper and work
directories are the worker's scratch for that execution. Absolute paths into the home work;
creations, changes and deletions land in the upper directory only and vanish with it unless
committed (``commit.py``). The mount dies with the namespace's last process.

:func:`probe` tries all of it once in a child process, so a platform that cannot isolate is told
at submission, with the reason, rather than at run time.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from typing import Callable

from ..exec import nsexec

_libc = nsexec._libc


def _escape(path: str) -> str:
    """overlayfs option syntax: backslash-escape the separators (',' between options, ':' between
    lower layers)."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def overlay_options(lower: str, upper: str, work: str) -> str:
    opts = f"lowerdir={_escape(lower)},upperdir={_escape(upper)},workdir={_escape(work)}"
    if os.getuid() != 0:
        opts += ",userxattr"  # in a user namespace trusted.* is out of reach
    return opts


def mount_overlay(lower: str, upper: str, work: str, at: str) -> None:
    opts = overlay_options(lower, upper, work).encode()
    if _libc.mount(b"overlay", at.encode(), b"overlay", 0, opts) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount overlay on {at}: {os.strerror(e)}")


def preexec(home: str, upper: str, work: str, lower: str | None = None) -> Callable[[], None]:
    """What the child runs between fork and exec: its own mount namespace, the overlay on the
    home, and the home as its working directory. ``lower``: where the home's contents really are
    (a remote worker's staged copy); by default the home itself."""
    def setup() -> None:
        nsexec.enter_private_namespace()
        mount_overlay(lower or home, upper, work, home)
        os.chdir(home)
    return setup


def probe() -> str | None:
    """None if isolated executions can run here, else why not (tried once, in a child)."""
    with tempfile.TemporaryDirectory(prefix="brasil-isolate-probe-") as d:
        for sub in ("lower", "upper", "work"):
            os.mkdir(os.path.join(d, sub))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(r)
            try:
                nsexec.enter_private_namespace()
                mount_overlay(f"{d}/lower", f"{d}/upper", f"{d}/work", f"{d}/lower")
                with open(f"{d}/lower/probe", "w") as f:
                    f.write("x")
                os._exit(0)
            except BaseException as e:  # noqa: BLE001
                os.write(w, str(e).encode()[:500])
                os._exit(1)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            why = f.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0 and not os.path.exists(f"{d}/lower/probe"):
            return None
        return ("this system cannot give an execution a private copy-on-write view of its home "
                f"(overlayfs in a private mount namespace: {why or 'failed'})")
