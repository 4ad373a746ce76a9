"""A private copy-on-write view of a home directory: overlayfs in a private mount namespace.

The execution's process, between fork and exec (cloned by the worker's fork server,
``exec/forkserver.py``; where there is none, :func:`preexec` in a fork of the worker: either way no
helper program is started per job), leaves the host's mount namespace — as root a plain
``unshare(CLONE_NEWNS)``, otherwise an unprivileged user namespace too, as ``exec/nsexec.py`` does
— makes every mount private, and mounts an overlay AT THE HOME'S OWN PATH: the home is the lower
layer, the upper and work directories are the worker's scratch for that execution. Absolute paths
into the home work; creations, changes and deletions land in the upper directory only and vanish
with it unless committed (``commit.py``). The mount dies with the namespace's last process.

:func:`probe` tries all of it once in a child process, so a platform that cannot isolate is told
at submission, with the reason, rather than at run time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from ..exec import nsexec
from ..exec.nsexec import mount_overlay, overlay_options  # noqa: F401 - this module's words too


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
