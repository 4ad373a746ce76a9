"""The C allocator's thresholds for Brasil's long-running processes: read buffers on the heap.

asyncio reads every socket into a fresh 256 KiB buffer (``recv(262144)``), and a node reads its
children's pipes the same way. glibc serves a malloc of 128 KiB or more with an mmap of its own
and a munmap at free, until a freed mmapped block larger than its threshold raises it; a read
buffer never does that, since it is shrunk to the bytes received before it is freed. A process
in that state pays an mmap, a page fault on fresh zeroed memory and a munmap for every message:
19.6 µs for a 60-byte message through a socket pair (a fresh process, a daemon's modules
imported) against 2.9 µs once kept, 16.5 µs against 1.2 µs for a line from a pipe. Daemons of
a busy tree mostly got out of it by chance (some larger block freed whole: a leaf traced
through three deployments made one mmap), which is why this is a setting, not luck. Fixed
thresholds keep such buffers on the heap, and the heap's top is given back beyond TRIM only: a
process keeps at most that much freed memory for its next buffers.
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP = 4 << 20  # PUSH reads its pipes a MiB at a time
TRIM = 16 << 20


def keep_buffers() -> bool:
    """Set the thresholds (glibc only: elsewhere nothing is known to be needed); whether set.
    Process-wide, inherited across fork, not across exec: commands started later get glibc's
    defaults."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, ValueError):  # (ValueError: no such confstr here)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM))
