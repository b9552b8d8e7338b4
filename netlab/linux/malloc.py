"""glibc ``malloc`` tuned for a process that moves bulk data through Python ``bytes``.

A proxy relaying a bulk transfer allocates and frees a few buffers of 16 KiB to 1 MiB for every
read. glibc's defaults serve those from the top of the heap and give the top back to the kernel
(``brk``) as soon as more than twice the largest recent buffer is free there, so every read grows
the heap again and touches fresh pages: a page fault and a zeroed page per 4 KiB carried. With
the top kept (a trim threshold well above the buffers in flight) the same memory is reused and
the relaying ztunnel spent about a fifth less CPU per byte sent (``docs/benchmarks.md``).

The cost is memory that a burst left free at the top of the heap staying with the process, at
most :data:`TRIM_THRESHOLD` plus :data:`TOP_PAD`. 4 MiB keeps the whole CPU saving of a bulk
transfer (16 MiB saved no more); in a 1,000-pod lab the busiest ztunnel's resident memory was the
same with the tuning as without it (121–131 MB).

>>> isinstance(tune_for_bulk(), bool)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc <malloc.h>)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 4 * 1024 * 1024  # free memory kept at the top of the heap before giving it back
TOP_PAD = 1024 * 1024  # extra asked of the kernel each time the heap grows
MMAP_THRESHOLD = 1280 * 1024  # buffers below this (a 1 MiB HTTP/2 frame too) come from the heap


def tune_for_bulk() -> bool:
    """Set the three parameters; False (and nothing changed) where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in the C library: malloc left as it is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
