"""Shared pieces of the benchmarks: the demo-shaped model and SAE, timing, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

D_MODEL, N_MLP, VOCAB, CONTEXT = 128, 512, 4096, 128
HOOK = "transformer.h.0.mlp.act"


def demo_shaped_model(seed: int = 0) -> GPT2LMHeadModel:
    """A one-layer GPT-2 with the demo's shape (untrained: throughput does not depend on the weights)."""
    config = GPT2Config(n_layer=1, n_embd=D_MODEL, n_inner=N_MLP, n_head=4, n_positions=CONTEXT, vocab_size=VOCAB,
                        activation_function="gelu_pytorch_tanh", bos_token_id=0, eos_token_id=0)
    with torch.random.fork_rng():  # the init draws from the global generator: seeded here, restored after
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).eval()


def sparse_relu_sae(n_features: int, density: float, acts: torch.Tensor, seed: int = 0):
    """A relu SAE whose features fire on about `density` of tokens (biases set from sample activations)."""
    import saekit

    sae = saekit.SAE.create("relu", acts.shape[-1], n_features, seed=seed)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
        sae.b_enc -= torch.quantile(sae.pre_acts(acts[:4096]), 1 - density, dim=0)
    return sae


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of `fn()` over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
