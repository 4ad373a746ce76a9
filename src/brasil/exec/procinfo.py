"""What a process of ours is doing, from /proc: the bytes behind a session's ``proc/RANK/`` files.

Each reader takes the pid of a process the caller started and still holds (a session's leaf: a
child not yet reaped, so its pid cannot have gone to anyone else), reads a bounded amount, and
turns "the process is gone" into :class:`ProcessGone`, so a rank that exits while it is looked
at is reported as gone rather than failing the whole group.
"""

from __future__ import annotations

import os

from .stacks import ProcessGone, StackError

MAX_READ = 1 << 20  # maps, environ, cmdline: what one read returns at most
MAX_MEM = 1 << 20  # one read or write of memory
_STATES = {"R": "running", "S": "sleeping", "D": "disk wait", "T": "stopped",
           "t": "traced", "Z": "zombie", "X": "dead", "I": "idle"}
_TICK = os.sysconf("SC_CLK_TCK")


def _read(pid: int, name: str, limit: int = MAX_READ) -> bytes:
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"process {pid} is gone") from None
    try:
        return os.read(fd, limit)
    except ProcessLookupError:
        raise ProcessGone(f"process {pid} is gone") from None
    finally:
        os.close(fd)


def state(pid: int) -> str:
    """The one-letter state of ``ps``."""
    stat = _read(pid, "stat").decode(errors="replace")
    return stat.rsplit(")", 1)[1].split()[0]


def is_stopped(pid: int) -> bool:
    return state(pid) in ("T", "t")


def status_line(pid: int) -> str:
    """One line a person and a script can read: state, CPU, memory, threads, where it waits."""
    stat = _read(pid, "stat").decode(errors="replace").rsplit(")", 1)[1].split()
    fields = dict(line.split(":", 1) for line in _read(pid, "status").decode(errors="replace")
                  .splitlines() if ":" in line)
    letter = stat[0]
    cpu = (int(stat[11]) + int(stat[12])) / _TICK  # utime + stime
    rss = fields.get("VmRSS", "0 kB").split()[0]
    wchan = _read(pid, "wchan").decode(errors="replace").strip() or "-"
    if wchan == "0":
        wchan = "-"
    return (f"pid {pid} state {letter} ({_STATES.get(letter, '?')}) cpu {cpu:.2f}s "
            f"rss {rss}kB threads {fields.get('Threads', '1').strip()} wchan {wchan}\n")


def cmdline(pid: int) -> str:
    words = _read(pid, "cmdline").split(b"\0")[:-1]
    return " ".join(w.decode(errors="replace") for w in words) + "\n"


def environ(pid: int) -> str:
    return "".join(w.decode(errors="replace") + "\n"
                   for w in _read(pid, "environ").split(b"\0") if w)


def maps(pid: int) -> str:
    return _read(pid, "maps").decode(errors="replace")


def read_mem(pid: int, offset: int, count: int) -> bytes:
    """Memory at an address (the TBON-FS example's ``lseek`` + ``read``); unmapped is an error
    that says so."""
    got = _mem(pid, offset, min(count, MAX_MEM), None)
    assert isinstance(got, bytes)
    return got


def write_mem(pid: int, offset: int, data: bytes, running: bool = False) -> int:
    """Write memory, only while the process is stopped: a running one would race the write.
    ``running`` is a debugger's own knowledge that it let the process go."""
    if running or not is_stopped(pid):
        raise StackError(f"process {pid} is running: stop it before writing its memory")
    if len(data) > MAX_MEM:
        raise StackError(f"a memory write of {len(data)} bytes (the limit is {MAX_MEM})")
    return int(_mem(pid, offset, len(data), data))


def _mem(pid: int, offset: int, count: int, data: bytes | None) -> bytes | int:
    try:
        fd = os.open(f"/proc/{pid}/mem", (os.O_RDONLY if data is None else os.O_RDWR)
                     | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"process {pid} is gone") from None
    except PermissionError:
        raise StackError(f"the kernel refused access to the memory of process {pid} (ptrace "
                         "permission: see docs/reference.md on ptrace_scope)") from None
    try:
        return os.pread(fd, count, offset) if data is None else os.pwrite(fd, data, offset)
    except OSError as e:
        raise StackError(f"process {pid} has no memory at 0x{offset:x} that can be "
                         f"{'read' if data is None else 'written'} ({e.strerror}); see its "
                         "maps file") from None
    finally:
        os.close(fd)
