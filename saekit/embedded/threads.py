"""How many torch threads to train with: the cores other processes leave free, re-checked as they come and go.

On a shared CPU, more torch threads than free cores is disastrous: with one of two cores busy elsewhere,
2 threads trained 11x slower than 1 (1.1K vs 12.5K tokens/s) on the 2-core CI machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

_PROC_STAT = "/proc/stat"


class CpuSample(NamedTuple):
    """Machine-wide busy CPU seconds and this process's CPU seconds at a wall-clock time."""

    wall: float
    machine_busy: float
    own: float


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), else `os.cpu_count()`."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_sample() -> CpuSample | None:
    """A sample from /proc/stat (Linux); None where the machine-wide counters cannot be read."""
    try:
        with open(_PROC_STAT, encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy_ticks = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    times = os.times()
    return CpuSample(time.monotonic(), busy_ticks / os.sysconf("SC_CLK_TCK"), times.user + times.system)


def free_cores(before: CpuSample, after: CpuSample, cores: int) -> int:
    """Cores not used by other processes between two samples (at least 1, at most `cores`)."""
    wall = after.wall - before.wall
    if wall <= 0:
        return cores
    elsewhere = ((after.machine_busy - before.machine_busy) - (after.own - before.own)) / wall
    return max(1, min(cores, cores - round(max(0.0, elsewhere))))


class ThreadBalancer:
    """Sets torch's thread count to the free cores, re-measured every `every_seconds` while training."""

    def __init__(self, cores: int, every_seconds: float = 5.0) -> None:
        self.cores, self.every = cores, every_seconds
        self.last = cpu_sample()
        if self.last is not None:
            time.sleep(0.2)
            self.update(force=True)

    def update(self, force: bool = False) -> int:
        """Re-balance when the interval has passed; returns the thread count in use."""
        now = cpu_sample()
        if now is not None and self.last is not None and (force or now.wall - self.last.wall >= self.every):
            threads = free_cores(self.last, now, self.cores)
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            self.last = now
        return torch.get_num_threads()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `torch.set_num_threads(n)`, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
