"""Keep freed memory in the process: glibc's ``mallopt`` thresholds for recon's commands.

torch and numpy take their CPU buffers from the C library's ``malloc``. glibc serves blocks above
its *mmap threshold* with fresh ``mmap`` pages and hands the free top of its heap back to the
system above its *trim threshold*. Both thresholds adapt to the largest freed block, which is a few
MB for a network's activations. So a network that frees its activations at the end of each pass
gets them back as new pages on the next one, and pays a page fault (a zeroed 4 KB page) for every
page it touches again. `recon reconstruct` on a 16 × 256² MR stack took 822 794 faults and 3.375 s
of reconstruction with the defaults, and 410 142 faults and 2.687 s with the thresholds below
(`benchmarks/cli_reconstruct.py`, medians of five runs; BENCHMARKS.md, Learned reconstruction).

Fixed thresholds turn the adaptation off:

- blocks up to 32 MB come from the heap (32 MB is glibc's largest mmap threshold on 64-bit);
- up to 256 MB of free heap is kept for reuse.

Settings a user gives glibc through ``MALLOC_*_`` or ``GLIBC_TUNABLES`` are left as they are.
Other C libraries have no such knobs here, so the call does nothing there.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process. Returns whether they were set: False
    off glibc, or when the environment already configures glibc's allocator."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # not glibc (musl's mallopt does nothing)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
