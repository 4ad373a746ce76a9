"""Starting a command: fork (vfork) and exec with three pipes, in a session of its own.

``subprocess.Popen`` did this for every command a node runs, and its Python around the one C
call (``_posixsubprocess.fork_exec``, which vforks, closes the other descriptors, moves to the
directory and execs) cost 150 µs of the spawning thread per command against 60 µs for the call
alone: a quarter of a node's whole CPU per short command (2,048 `date`s on a tree). So on the
Python whose ``fork_exec`` we know (3.11), :func:`spawn` calls it as Popen does, with the same
arguments and the same reading of the child's error report; elsewhere it is Popen itself.
Both give a :class:`Spawned`; tests/test_spawn.py runs each the same way.

A node's launches go further: :func:`spawn_batch` starts a whole batch in one call of a compiled
module (``_spawn.c``) that holds no interpreter lock while it forks, gets each child's pidfd from
the fork itself, and has each child move itself into its slot's cgroup before its exec. From
Python, a spawn thread handed the lock to the loop and back at every system call (a dozen futex
calls per command), opened the pidfd after, and moved the child from outside, waiting on the
kernel's lock for its exec. Where the module could not be built, exec/process.py starts a
batch one by one through :func:`spawn`, a shell entering its cgroup itself and a program moved
right after its vfork.
"""

from __future__ import annotations

import builtins
import io
import os
import subprocess
import sys
from typing import Any

try:
    import _posixsubprocess
except ImportError:  # (not POSIX)
    _posixsubprocess = None  # type: ignore[assignment]
try:
    from . import _spawn as native  # type: ignore[attr-defined]
except ImportError:  # (not built: no compiler where it was installed, or not Linux)
    native = None

# 3.11.x as Debian ships it: the arguments below are those its subprocess passes (with vfork)
LEAN = (_posixsubprocess is not None and sys.version_info[:2] == (3, 11)
        and hasattr(subprocess, "_USE_VFORK"))


class Spawned:
    """A started command: its pid and our ends of its pipes (``stdin`` written, ``stdout`` and
    ``stderr`` read), as file objects, which is what asyncio's pipe transports take."""

    __slots__ = ("pid", "stdin", "stdout", "stderr", "returncode", "cgroup", "pidfd", "_popen")

    def __init__(self, pid: int, stdin: Any, stdout: Any, stderr: Any,
                 popen: subprocess.Popen[bytes] | None = None, pidfd: int = -1) -> None:
        self.pid, self.stdin, self.stdout, self.stderr = pid, stdin, stdout, stderr
        self.returncode: int | None = None
        self.cgroup: Any = None  # its slot's cgroup, where commands run in one (exec/cgroups.py)
        self.pidfd = pidfd  # given by the fork (spawn_batch), for its taker to own; else -1
        self._popen = popen

    def poll(self) -> int | None:
        """Its status (negative: killed by that signal) once it has ended; never blocks."""
        if self._popen is not None:
            return self._popen.poll()
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # (reaped elsewhere: nothing more to know)
                self.returncode = 255
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self._popen is not None:
            return self._popen.wait()
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def spawn(argv: list[str], env: dict[str, str], cwd: str | None = None,
          pass_fds: tuple[int, ...] = (), stdio: tuple[int, int, int] | None = None) -> Spawned:
    """``argv`` in ``cwd`` with exactly ``env``, in a new session, every descriptor but its
    three pipes (and ``pass_fds``) closed; OSError as Popen raises it when it cannot start.

    With ``stdio`` (descriptors for its stdin, stdout and stderr, left open for the caller to
    close) it gets those instead of pipes, and the Spawned has no pipe: a batch job writing to
    its output file."""
    if not LEAN:
        where: dict[str, Any] = (
            dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if stdio is None else dict(stdin=stdio[0], stdout=stdio[1], stderr=stdio[2]))
        p = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True, close_fds=True,
                             pass_fds=pass_fds, **where)
        return Spawned(p.pid, p.stdin, p.stdout, p.stderr, p)
    env_list = _env_list(env)
    exe_list = _exe_list(argv[0], env)
    ours: list[int] = []
    try:
        if stdio is None:
            p2cread, p2cwrite = os.pipe()
            ours += (p2cread, p2cwrite)
            c2pread, c2pwrite = os.pipe()
            ours += (c2pread, c2pwrite)
            errread, errwrite = os.pipe()
            ours += (errread, errwrite)
        else:
            (p2cread, c2pwrite, errwrite), p2cwrite, c2pread, errread = stdio, -1, -1, -1
        vforks = _vforks()
        errpipe_read, errpipe_write = (os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK) if vforks
                                       else os.pipe())
        try:
            keep = tuple(sorted({*pass_fds, errpipe_write}))
            fork_exec: Any = _posixsubprocess.fork_exec  # (typeshed's stub is another version's)
            pid = fork_exec(
                [os.fsencode(a) for a in argv], exe_list, True, keep, cwd, env_list,
                p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                errpipe_read, errpipe_write, True, True, -1, None, None, None, -1, None, vforks)
        finally:
            os.close(errpipe_write)
        for fd in (p2cread, c2pwrite, errwrite) if stdio is None else ():
            os.close(fd)
            ours.remove(fd)
        try:
            report = _read_all(errpipe_read, wait=not vforks)
        finally:
            os.close(errpipe_read)
        if report:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            raise _child_error(report, argv[0], cwd)
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    if stdio is not None:
        return Spawned(pid, None, None, None)
    return Spawned(pid, io.FileIO(p2cwrite, "wb"), io.FileIO(c2pread, "rb"),
                   io.FileIO(errread, "rb"))


class CgroupError(OSError):
    """A child could not move itself into its slot's cgroup (:func:`spawn_batch`)."""


Batch = tuple[list[str], dict[str, str], str | None, str | None]  # argv, env, cwd, cgroup.procs


def spawn_batch(jobs: list[Batch]) -> list[Spawned | OSError | ValueError]:
    """Each job started as :func:`spawn` starts it, having first moved itself into the cgroup
    whose ``cgroup.procs`` it names (if any): a :class:`Spawned` with its ``pidfd``, or what
    :func:`spawn` would have raised (OSError, ValueError; a :class:`CgroupError` for the move).
    Only with the compiled module (``native``)."""
    assert native is not None
    todo: list[tuple[Any, ...]] = []
    refused: dict[int, ValueError] = {}
    for i, (argv, env, cwd, procs) in enumerate(jobs):
        try:
            todo.append((tuple(map(os.fsencode, argv)), _exe_list(argv[0], env),
                         tuple(_env_list(env)), None if cwd is None else os.fsencode(cwd),
                         None if procs is None else os.fsencode(procs)))
        except ValueError as e:  # ("=" in a name: refused before any fork, as Popen refuses it)
            refused[i] = e
    started = iter(native.spawn_batch(todo))
    done: list[Spawned | OSError | ValueError] = []
    for i, (argv, _, cwd, procs) in enumerate(jobs):
        if i in refused:
            done.append(refused[i])
            continue
        r = next(started)
        if len(r) == 5:
            pid, pidfd, w, r1, r2 = r
            done.append(Spawned(pid, io.FileIO(w, "wb"), io.FileIO(r1, "rb"),
                                io.FileIO(r2, "rb"), pidfd=pidfd))
            continue
        stage, number = r
        if stage == "null":  # (an embedded NUL: refused by the module, before any fork)
            done.append(ValueError("embedded null byte"))
            continue
        kind = CgroupError if stage == "cgroup" else OSError
        name = {"cgroup": procs, "chdir": cwd}.get(stage, argv[0])
        done.append(kind(number, os.strerror(number), name))
    return done


def _exe_list(program: str, env: dict[str, str]) -> tuple[bytes, ...]:
    """The paths to exec ``program`` at, in turn, as Popen searches them."""
    exe = os.fsencode(program)
    if os.path.dirname(exe):
        return (exe,)
    return tuple(os.path.join(os.fsencode(d), exe) for d in os.get_exec_path(env))


# KEY=VALUE bytes by (KEY, VALUE): a node's commands share all but a few of their fifty-odd
# variables (the session's, the daemon's), and encoding each for every command was a quarter of a
# spawn's own CPU. Bounded (at most 1,024 variables of at most 4 KiB: 4 MiB): cleared when full,
# a longer one never kept; another session's values are then just encoded again.
_encoded: dict[tuple[str, str], bytes] = {}
_ENCODED_MAX, _ENCODED_LONGEST = 1024, 4096


def _env_list(env: dict[str, str]) -> list[bytes]:
    out = []
    for kv in env.items():
        b = _encoded.get(kv)
        if b is None:
            key = os.fsencode(kv[0])
            if b"=" in key:
                raise ValueError("illegal environment variable name")
            b = key + b"=" + os.fsencode(kv[1])
            if len(b) <= _ENCODED_LONGEST:
                if len(_encoded) >= _ENCODED_MAX:
                    _encoded.clear()
                _encoded[kv] = b
        out.append(b)
    return out


def _vforks() -> bool:
    """Whether ``fork_exec`` above is to vfork (asked to, it does on Linux with our arguments):
    unless subprocess was told not to, as Popen would then not."""
    return sys.platform == "linux" and bool(getattr(subprocess, "_USE_VFORK", False))


def _read_all(fd: int, wait: bool = True) -> bytes:
    """The child's error report: empty once it has exec'd (the pipe closes on exec).

    Without ``wait`` (``fd`` is then non-blocking) the child was vforked, so we run again only
    once it has written its report and is ending, or has passed the point of no return of its
    exec: an empty pipe now stays empty. Waiting for its end of file would wait for the exec to
    reach the closing of its descriptors, and a short command paid a context switch a third of
    the time for it."""
    out = bytearray()
    if not wait:
        try:
            part = os.read(fd, 50000)
        except BlockingIOError:
            return b""
        if not part:
            return b""
        out += part  # a report: the rest of it to its end of file (the child may still hold it)
        os.set_blocking(fd, True)
    while True:
        part = os.read(fd, 50000)
        out += part
        if not part or len(out) > 50000:
            return bytes(out)


def _child_error(report: bytes, program: str, cwd: str | None) -> Exception:
    """The exception the child reported, as Popen reads ``_posixsubprocess``'s report."""
    try:
        name, hex_errno, raw = report.split(b":", 2)
        message = raw.decode()
    except ValueError:
        return subprocess.SubprocessError(f"bad exception data from child: {report!r}")
    kind = getattr(builtins, name.decode("ascii", "replace"), subprocess.SubprocessError)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        kind = subprocess.SubprocessError
    if issubclass(kind, OSError) and hex_errno:
        number = int(hex_errno, 16)
        filename = cwd if message == "noexec" else program  # (noexec: chdir failed)
        return kind(number, os.strerror(number) if number else message, filename)
    return kind(message)
