"""Which dtype the big [batch, n_features] products run in: bf16 where the hardware multiplies it natively.

bf16 is not free on every CPU: without native bf16 dot products it is several times slower than fp32,
with them (AVX512-BF16, AMX) or on recent GPUs (compute capability 8.0 and up) it is about twice as fast.
"auto" decides from what the hardware declares, never from a timing: a timing under load can flip, and
then the same build gives other numbers. Small SAEs stay fp32 (their steps are overheads). Only the
products change dtype: weights, Adam's state, gradients and losses stay fp32.
"""

from __future__ import annotations

import functools
import sys
from typing import Literal

import torch

ComputeDtype = Literal["auto", "float32", "bfloat16"]
AUTO_MIN_WEIGHTS = 2**20  # below this many encoder weights, steps are overheads and auto stays fp32
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of native bf16 dot products
CUDA_BF16_CAPABILITY = (8, 0)  # Ampere and later multiply bf16 on tensor cores
_CPUINFO = "/proc/cpuinfo"


def resolve_compute_dtype(choice: ComputeDtype, param_dtype: torch.dtype, device: torch.device,
                          d_in: int, d_sae: int) -> torch.dtype:
    """The dtype for an SAE's products: an explicit choice, or (auto, fp32 parameters, a big enough SAE)
    bf16 where `device` has native bf16 products, else the parameters' dtype."""
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16":
        return torch.bfloat16
    if param_dtype != torch.float32 or d_in * d_sae < AUTO_MIN_WEIGHTS:
        return param_dtype
    return torch.bfloat16 if native_bf16(str(device)) else torch.float32


def native_bf16(device: str) -> bool:
    """Whether `device` ("cpu", "cuda", "cuda:1", ...) multiplies bf16 in hardware (decided once per device)."""
    return _native_bf16(torch.device(device).type, torch.device(device).index)


@functools.cache
def _native_bf16(kind: str, index: int | None) -> bool:
    if kind == "cpu":
        return bool(cpu_flags() & CPU_BF16_FLAGS)
    if kind == "cuda":
        return torch.cuda.get_device_capability(index) >= CUDA_BF16_CAPABILITY
    return False


def cpu_flags(cpuinfo: str = _CPUINFO) -> frozenset[str]:
    """The CPU feature flags Linux lists in /proc/cpuinfo (empty on other systems or when unreadable)."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()

