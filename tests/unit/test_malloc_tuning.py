"""netlab.linux.malloc: the heap keeps a freed bulk buffer instead of handing it back."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
from netlab.linux import malloc
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "tuned":
    assert malloc.tune_for_bulk()
before = libc.mallinfo2().arena
buf = bytes(1024 * 1024)  # a bulk buffer: from a fresh mmap by default, from the heap once tuned
del buf
print(libc.mallinfo2().arena - before)
"""


def heap_growth(kind: str) -> int:
    """How much a 1 MiB buffer, allocated and freed, left on the heap."""
    out = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_tuned_heap_keeps_a_freed_bulk_buffer() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 - glibc >= 2.33
    except (OSError, AttributeError):
        pytest.skip("not glibc >= 2.33")
    # Untuned, a 1 MiB buffer is its own mmap and the heap stays small; tuned, it comes from the
    # heap and stays there once freed (no brk() shrink and regrow, no fresh pages, per read).
    assert heap_growth("default") < 1024 * 1024 <= heap_growth("tuned")
