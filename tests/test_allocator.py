"""Freed training blocks are kept for reuse: a second 32 MiB block costs no page faults (Linux with glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

RUN = """
import resource, sys, torch
from saekit.training.allocator import retain_freed_memory
took = retain_freed_memory() if sys.argv[1] == "retain" else False
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(16384, 512).fill_(1.0)  # a [d_sae, d_in] gradient of the demo's largest SAE
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(took, faults[-1])
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", RUN, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_retained_memory_is_reused_without_page_faults():
    took, retained = _faults("retain")
    _, default = _faults("default")
    assert took
    assert default > 4000  # 8,192 pages of 4 KiB, touched afresh each time by default
    assert retained < 100
