"""Run a command in a private mount namespace with ``bind SRC DST`` lines applied.

Usage: ``python -m brasil.exec.nsexec SRC DST [SRC DST …] -- ARGV…``. As root only a mount
namespace is needed; otherwise an unprivileged user namespace maps the caller to itself, which
gives the capability to mount inside it. Mount propagation is made private first so that nothing
leaks back to the host. The process then execs ARGV; the binds vanish with the last process in the
namespace.
"""

from __future__ import annotations

import ctypes
import os
import sys

SETUP_FD = "BRASIL_SETUP_FD"  # exec.process.SETUP_FD (this runs without our package's imports)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_BIND = 4096



def _load_libc() -> ctypes.CDLL:
    """The C library, by its usual name first: ``ctypes.util.find_library`` runs ldconfig (a
    process, and ``subprocess`` and ``re`` imported), which a small process (the fork server)
    would pay for in size on every fork."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes import util
        return ctypes.CDLL(util.find_library("c"), use_errno=True)


_libc = _load_libc()


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def enter_private_namespace() -> None:
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    else:
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")


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
    """An overlay of ``lower`` (read-only) and ``upper`` (where changes land) mounted at ``at``,
    in the current mount namespace (a private one: :func:`enter_private_namespace`)."""
    _check(_libc.mount(b"overlay", at.encode(), b"overlay", 0,
                       overlay_options(lower, upper, work).encode()), f"mount overlay on {at}")


def bind(src: str, dst: str) -> None:
    _check(_libc.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None),
           f"bind {src} {dst}")


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: nsexec SRC DST [SRC DST …] -- ARGV…", file=sys.stderr)
        return 2
    cut = argv.index("--")
    pairs, command = argv[:cut], argv[cut + 1:]
    if len(pairs) % 2 or not command:
        print("nsexec: binds come in SRC DST pairs, then -- and a command", file=sys.stderr)
        return 2
    report = int(os.environ.pop(SETUP_FD, "-1"))
    try:
        enter_private_namespace()
        for src, dst in zip(pairs[::2], pairs[1::2]):
            bind(src, dst)
    except OSError as e:
        why = f"ns: {e.strerror}"
        if report >= 0:  # the daemon fails the exec with this, instead of a late exit 126
            os.write(report, why.encode())
        print(why, file=sys.stderr)
        return 126
    if report >= 0:
        os.set_inheritable(report, False)  # closed by exec: end of file means "all set up"
    os.execvp(command[0], command)
    return 127


def probe() -> str | None:
    """None if private mount namespaces work here, else why not (checked in a child process)."""
    pid = os.fork()
    if pid == 0:
        try:
            enter_private_namespace()
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return ("this system does not allow private mount namespaces (unprivileged user namespaces "
            "are disabled); ns lines cannot be applied")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
