"""brasil.allocator: a big read buffer comes from the heap, not an mmap of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# In a fresh interpreter: a held 300,000-byte buffer, then how many blocks malloc has mmapped
# (glibc's mallinfo2: hblks), with and without keep_buffers().
PROBE = """
import ctypes, sys
from brasil.allocator import keep_buffers
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                               "fsmblks uordblks fordblks keepcost").split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    assert keep_buffers()
before = libc.mallinfo2().hblks
buf = bytes(300_000)
print(libc.mallinfo2().hblks - before)
"""

glibc = pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
                           reason="glibc's malloc only")


def _mmapped_blocks(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=60)
    return int(out.stdout)


@glibc
def test_a_big_buffer_is_mmapped_by_default_and_on_the_heap_once_kept():
    assert _mmapped_blocks("default") == 1  # glibc's default: the trap this module is for
    assert _mmapped_blocks("keep") == 0
