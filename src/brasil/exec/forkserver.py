"""Start isolated commands from a small process that is already running, as our own children.

An isolated command needs work between fork and exec (a private mount namespace, an overlay on
its home), so it cannot be started with posix_spawn (vfork and exec); ``subprocess`` with a
``preexec_fn`` forks the whole caller instead. For a worker of 30 MB that fork, the copy-on-write
of every page Python touches in the child, and the teardown of the copy at exec cost 2-3 ms on
this project's test machine, several times the namespace and the mount themselves — per job, on
the path from a free slot to a running command. (From a 10 MB process the same clone costs about
1 ms; the round trip to the server gives some of the difference back: bench/batch.py (e) measures
both.)

So the caller starts this module once (``pychild.lean_python_argv``: ``python -I -S``, no site,
nothing imported but the standard library's few modules below and ``nsexec``: 10 MB, one thread)
and sends it each command over a private socket pair: argv, environment, the overlay's directories,
and its output descriptor (SCM_RIGHTS). The server clones itself with ``CLONE_PARENT``: the child
is the CALLER's child, not the server's — the caller reaps it, waits on its pidfd and kills its
group exactly as for a command it forked itself. The child makes its own session, points 0 at
/dev/null and 1, 2 at the output, closes everything else, resets the signals Python ignores, enters
the namespace, mounts the overlay, steps into the home and execs; anything that fails on the way is
written to a close-on-exec pipe the server reads to its end, so the caller hears either "started"
(the pipe closed by exec) or why not, as ``subprocess`` reports it. The server ends when the
caller's end of the socket closes, however the caller ends.

Where the server cannot run (another architecture, a failed start), :func:`ForkServer.start`
returns None and the caller forks as before.
"""

from __future__ import annotations

import array
import ctypes
import json
import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from . import nsexec

if TYPE_CHECKING:
    import subprocess

CLONE_PARENT = 0x00008000
# clone(2)'s number; the other arguments (stack, tids, tls) are 0, so their order does not matter
SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)
MAX_REQUEST = 1 << 21  # bytes: a job's assignment is at most 768 KiB of JSON, escaped once more
MAX_FDS = 2  # descriptors a request carries: the output
START_TIMEOUT = 30.0  # seconds for a new server to answer (a Python start on a very busy host)


class ForkServer:
    """The caller's side: one server process, one socket, one request at a time."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock

    @classmethod
    def start(cls) -> ForkServer | None:
        """A running server, or None where there can be none (the caller forks instead)."""
        import subprocess

        from .pychild import SAFE_CWD, lean_python_argv
        if SYS_CLONE is None:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(lean_python_argv(__name__, str(theirs.fileno())),
                                    stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                                    cwd=SAFE_CWD)
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()
        server = cls(proc, ours)
        try:  # it answers a ping once it has imported what it needs
            ours.settimeout(START_TIMEOUT)
            ours.sendmsg([b"{}"])
            if json.loads(ours.recv(4096) or b"null") != {"ready": True}:
                raise OSError("no answer")
            ours.settimeout(None)
        except (OSError, ValueError):  # socket.timeout is an OSError
            server.close()
            return None
        return server

    def spawn(self, argv: list[str], env: dict[str, str], out: int, home: str, upper: str,
              work: str, lower: str | None = None) -> int:
        """Start ``argv`` (its path resolved) with ``env``, output to ``out``, in a private mount
        namespace with an overlay of ``lower`` (default: the home) and ``upper`` at ``home``, in
        a session of its own. Returns its pid: our child, to reap. Raises OSError if it could not
        be started (and reaps what was started), saying why."""
        request = json.dumps({"argv": argv, "env": env, "home": home, "upper": upper,
                              "work": work, "lower": lower}).encode()
        if len(request) > MAX_REQUEST:
            raise OSError(f"command and environment too large ({len(request)} bytes)")
        self.sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [out]))])
        answer = self.sock.recv(65536)
        if not answer:
            raise OSError("the fork server is gone")
        reply = json.loads(answer)
        pid = int(reply.get("pid") or 0)
        if reply.get("error"):
            if pid > 0:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            raise OSError(reply["error"])
        return pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """The server ends with its socket."""
        import subprocess
        self.sock.close()
        try:
            self.proc.wait(5)  # it ends at once with its socket (even while starting: -9 then)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- the server ----

_libc = nsexec._libc
_libc.syscall.restype = ctypes.c_long


def _clone_parent() -> int:
    """fork(), except that the child's parent is our parent (and no Python fork hooks run: we
    have one thread, and the child only execs)."""
    assert SYS_CLONE is not None
    pid = _libc.syscall(SYS_CLONE, ctypes.c_ulong(CLONE_PARENT), ctypes.c_ulong(0),
                        ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if pid < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"clone: {os.strerror(e)}")
    return int(pid)


def _child(req: dict[str, Any], out: int, report: int) -> None:  # pragma: no cover - the child
    """Between clone and exec; never returns."""
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.closerange(3, report)  # the report pipe closes itself at exec (close-on-exec)
        os.closerange(report + 1, 1 << 20)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # as restore_signals
            signal.signal(sig, signal.SIG_DFL)
        nsexec.enter_private_namespace()
        home = req["home"]
        nsexec.mount_overlay(req["lower"] or home, req["upper"], req["work"], home)
        os.chdir(home)
        os.execve(req["argv"][0], req["argv"], req["env"])
    except BaseException as e:  # noqa: BLE001 - whatever it is, the caller hears it
        why = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else str(e)
        try:
            os.write(report, (why or type(e).__name__).encode(errors="replace")[:1000])
        except OSError:
            pass
    os._exit(127)


def _serve_one(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    try:
        req = json.loads(data)
    except ValueError:
        req = None
    if not req:  # the ping
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"ready": True}).encode())
        return
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"error": "a request carries one descriptor"}).encode())
        return
    out = fds[0]
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _clone_parent()
    except OSError as e:
        os.close(r)
        os.close(w)
        os.close(out)
        sock.send(json.dumps({"error": str(e)}).encode())
        return
    if pid == 0:
        _child(req, out, w)
    os.close(w)
    os.close(out)
    why = b""
    while chunk := os.read(r, 4096):
        why += chunk
    os.close(r)
    sock.send(json.dumps({"pid": pid, "error": why.decode(errors="replace") or None}).encode())


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    sock.set_inheritable(False)
    # Ctrl-C on the worker's terminal is the worker's to handle; we end when it does
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, MAX_FDS, socket.MSG_CMSG_CLOEXEC)
        except ConnectionError:
            return 0
        if not data:
            for fd in fds:
                os.close(fd)
            return 0  # the caller closed its end, or ended
        _serve_one(sock, data, fds)


