"""Keep freed memory in the process for reuse, so that a training step's large blocks cost no page faults.

glibc's malloc serves large blocks with fresh mmap'd pages and gives them back to the kernel when they are freed, so
each step that allocates a [d_sae, d_in] gradient or a [batch, d_sae] block anew first-touches every 4 KiB page of
it again (8,192 page faults per 32 MiB block). With freed blocks kept and reused instead, a ReLU SAE's training step
at 16,384 features went from 161-174 to 116-135 ms on one core of this project's machine (batches of 512 activations
of width 512, bf16 products, two runs each); at 4,096 features the difference was within the noise.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30
"""Blocks up to this size come from (and go back to) the process's heap; freed memory up to it is not trimmed."""


def glibc_malloc_in_use() -> bool:
    """Whether this process's `malloc` is glibc's: not on other systems, nor where another allocator is preloaded
    (jemalloc, tcmalloc and mimalloc accept or ignore `mallopt`, so its return value alone does not tell)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        process, libc = ctypes.CDLL(None), ctypes.CDLL("libc.so.6")
        in_use, glibc = process.malloc, libc.malloc
        if not hasattr(libc, "gnu_get_libc_version"):  # glibc's own symbol
            return False
    except (OSError, AttributeError):
        return False
    return ctypes.cast(in_use, ctypes.c_void_p).value == ctypes.cast(glibc, ctypes.c_void_p).value


def retain_freed_memory() -> bool:
    """Ask glibc's malloc to serve blocks up to KEEP_BYTES from the heap and keep freed memory for reuse; True where
    it took (glibc's malloc in use), False elsewhere, where nothing changes.

    A process-wide setting that never changes a number, for processes whose runs are bounded (the demo's SAE
    workers, the benchmark): the process keeps the memory it has freed until it exits, up to KEEP_BYTES, so its
    peak grows with a run's length. `saekit train` does not call it: its peak memory stays flat however much text
    it reads (benchmarks/memory.py: 1.03x for 10x the text without it, 1.08x with it)."""
    if not glibc_malloc_in_use():
        return False
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
