"""Which dtype the big [batch, n_features] products run in: whatever this hardware multiplies fastest.

bf16 is not free on every CPU: without native bf16 dot products it is several times slower than fp32,
with them (AVX512-BF16, AMX) or on recent GPUs it is about twice as fast. So "auto" times one
encoder-sized product in each dtype, once per device and shape, and takes bf16 only where it wins
clearly (small SAEs stay fp32: their steps are overheads, and a timing that close would be a coin
toss). Only the products change dtype: weights, Adam's state, gradients and losses stay fp32.
"""

from __future__ import annotations

import functools
import time
from typing import Literal

import torch

ComputeDtype = Literal["auto", "float32", "bfloat16"]
BF16_MIN_SPEEDUP = 1.3  # auto takes bf16 only if its product is at least this much faster
AUTO_MIN_WEIGHTS = 2**20  # below this many encoder weights, steps are overheads and auto stays fp32


def resolve_compute_dtype(choice: ComputeDtype, param_dtype: torch.dtype, device: torch.device,
                          d_in: int, d_sae: int) -> torch.dtype:
    """The dtype for an SAE's products: an explicit choice, or (auto, fp32 parameters) the faster one here."""
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16":
        return torch.bfloat16
    if param_dtype != torch.float32 or d_in * d_sae < AUTO_MIN_WEIGHTS:
        return param_dtype
    return fastest_product_dtype(str(device), d_in, d_sae)


@functools.cache
def fastest_product_dtype(device: str, d_in: int, d_sae: int, batch: int = 1024) -> torch.dtype:
    """fp32 or bf16, whichever multiplies [batch, d_in] × [d_in, d_sae] faster on `device` (timed once)."""
    fp32 = product_seconds(torch.float32, device, d_in, d_sae, batch)
    bf16 = product_seconds(torch.bfloat16, device, d_in, d_sae, batch)
    return torch.bfloat16 if fp32 >= BF16_MIN_SPEEDUP * bf16 else torch.float32


def product_seconds(dtype: torch.dtype, device: str, d_in: int, d_sae: int, batch: int, reps: int = 3) -> float:
    """Median seconds of one [batch, d_in] × [d_in, d_sae] product in `dtype` on `device`."""
    a = torch.randn(batch, d_in, device=device).to(dtype)
    b = torch.randn(d_in, d_sae, device=device).to(dtype)
    out = torch.empty(batch, d_sae, dtype=dtype, device=device)
    times = []
    for i in range(reps + 1):  # the first run warms up
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
