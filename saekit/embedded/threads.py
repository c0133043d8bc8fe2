"""Thread counts for building the demo: fixed per build, never chosen from the machine's current load.

torch's thread count sets how a matmul splits its sums, so it changes the floating-point reduction
order and with it the last bits of every result. A count read from the load (busy cores elsewhere)
would make two builds of the same inputs differ; the counts here depend only on this process's CPU
affinity and the caller's settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

LM_THREADS = 1
"""torch threads per language-model run, side by side or one at a time: these small matmuls gain little from
more threads (two 1-thread runs side by side outpace one 2-thread run on 2 cores), and one fixed count makes a
resumed build train exactly what an uninterrupted one does."""


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), else `os.cpu_count()`: not how busy they are."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `torch.set_num_threads(n)`, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
