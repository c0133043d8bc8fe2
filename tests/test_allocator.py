"""Freed training blocks stay in the process for reuse (glibc's malloc): a freed 32 MiB block is kept in the heap,
where by default it goes back to the kernel and the next one is faulted in afresh."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from saekit.training.allocator import glibc_malloc_in_use

RUN = """
import ctypes, json, resource, sys, torch
from saekit.training.allocator import retain_freed_memory

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
took = retain_freed_memory() if sys.argv[1] == "retain" else False
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(16384, 512).fill_(1.0)  # a [d_sae, d_in] gradient of the demo's largest SAE
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    held = libc.mallinfo2()
    del block
freed = libc.mallinfo2()
print(json.dumps(dict(took=took, faults=faults, mmapped_while_held=held.hblkhd, free_in_heap=freed.fordblks)))
"""
BLOCK = 16384 * 512 * 4


def _run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, mode], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not glibc_malloc_in_use(), reason="glibc's malloc is not this process's allocator")
def test_freed_blocks_stay_in_the_heap_for_reuse():
    retained, default = _run("retain"), _run("default")
    seen = f"retained {retained}, default {default}, LD_PRELOAD={os.environ.get('LD_PRELOAD')!r}"
    assert retained["took"], seen
    assert default["mmapped_while_held"] >= BLOCK, seen  # by default a block this large is its own mapping
    assert default["free_in_heap"] < BLOCK, seen  # ... and unmapped when freed
    assert retained["mmapped_while_held"] < BLOCK, seen  # retained: it comes from the heap
    assert retained["free_in_heap"] >= BLOCK, seen  # ... and stays there, free for the next step
    assert default["faults"][-1] > 4000, seen  # 8,192 pages of 4 KiB touched afresh each time
