"""The embedded language-model trainer's throughput on one thread, against this CPU's matmul limit.

usage: python -m benchmarks.lm_speed   → prints TOKPS, FLOP_PER_TOKEN, GFLOPS, DTYPE and the limits
Trains the demo-shaped model (batch 8 x context 128, vocab 4096) on seeded random tokens (throughput does not
depend on them) with `train_steps`, in the product dtype its config picks on this machine; the limit is a
timed 2048^3 matmul on one thread, in fp32 and in that dtype.
"""

from __future__ import annotations

import torch
from transformers import GPT2LMHeadModel

from benchmarks.common import CONTEXT, VOCAB, demo_shaped_model, median_time

STEPS = 30
LIMIT_SIZE = 2048


def matmul_gflops(dtype: torch.dtype, size: int = LIMIT_SIZE) -> float:
    """GFLOP/s of a `size`^3 matmul in `dtype` on the current thread count (the practical limit)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(dtype) for _ in range(2))
    return 2 * size**3 / median_time(lambda: a @ b, repeats=5) / 1e9


def measure() -> dict[str, float | str]:
    from saekit.embedded.lm import LMConfig, train_flops_per_token, train_steps
    from saekit.embedded.threads import torch_threads

    config = LMConfig.profile("quick", context=CONTEXT, tokens=STEPS * 8 * CONTEXT, threads=1)
    dtype = config.torch_product_dtype
    tokens = torch.randint(1, VOCAB, (200_000,), generator=torch.Generator().manual_seed(0)).numpy()
    model: GPT2LMHeadModel = demo_shaped_model().train()
    with torch_threads(1):
        seconds = median_time(lambda: train_steps(model, tokens, config, progress=False))
        limits = {d: matmul_gflops(d) for d in dict.fromkeys((torch.float32, dtype))}
    tok_s = config.steps * config.batch_size * config.context / seconds
    flops = train_flops_per_token(config, VOCAB)
    gflops = tok_s * flops / 1e9
    return {"tok_s": tok_s, "flop_per_token": flops, "gflops": gflops, "dtype": str(dtype).removeprefix("torch."),
            "limit_fp32": limits[torch.float32], "limit_dtype": limits[dtype],
            "of_limit_fp32": gflops / limits[torch.float32], "of_limit_dtype": gflops / limits[dtype]}


if __name__ == "__main__":
    m = measure()
    print(f"TOKPS {m['tok_s']:.1f}\nFLOP_PER_TOKEN {m['flop_per_token']}\nGFLOPS {m['gflops']:.1f}\nDTYPE {m['dtype']}")
    print(f"LIMIT_FP32 {m['limit_fp32']:.1f} GFLOP/s ({m['of_limit_fp32']:.0%} of it)")
    print(f"LIMIT_{m['dtype'].upper()} {m['limit_dtype']:.1f} GFLOP/s ({m['of_limit_dtype']:.0%} of it)")
