"""Streaming analysis at scale: the feature store (4096 features, 1M tokens) and universality correlations
(4096 × 4096 features, 1M tokens), on the demo's shape with SAEs whose features fire sparsely."""

from __future__ import annotations

import time

import torch

from benchmarks.common import CONTEXT, HOOK, VOCAB, demo_shaped_model, sparse_relu_sae

N_FEATURES, DENSITY = 4096, 0.008  # ≈ 33 active features per token, like a trained A/1


def _setup(tokens: int):
    from saekit.activations import nnsight_api as api
    from saekit.activations.text import windows_from_tokens

    model = api.load_model(demo_shaped_model())
    ids = torch.randint(1, VOCAB, (tokens,), generator=torch.Generator().manual_seed(0))
    windows = windows_from_tokens(ids, CONTEXT)
    sample = api.get_activations(model, windows.input_ids[:64], windows.attention_mask[:64], HOOK).reshape(-1, 512)
    return model, windows, sample


def feature_store(tokens: int = 1_000_000) -> dict[str, float]:
    from saekit.analysis.features import build_feature_store

    model, windows, sample = _setup(tokens)
    sae = sparse_relu_sae(N_FEATURES, DENSITY, sample)
    start = time.perf_counter()
    store = build_feature_store(model, windows, sae, hook=HOOK, max_tokens=tokens, progress=False)
    seconds = time.perf_counter() - start
    return {"store_seconds": seconds, "store_features": len(store.feature_table())}


def universality(tokens: int = 1_000_000) -> dict[str, float]:
    from saekit.analysis.universality import correlate

    model_a, windows, sample = _setup(tokens)
    from saekit.activations import nnsight_api as api

    model_b = api.load_model(demo_shaped_model(seed=1))
    sae_a = sparse_relu_sae(N_FEATURES, DENSITY, sample, seed=0)
    sae_b = sparse_relu_sae(N_FEATURES, DENSITY, sample, seed=1)
    start = time.perf_counter()
    correlate(model_a, model_b, windows, sae_a, sae_b, hook=HOOK, max_tokens=tokens, progress=False)
    return {"universality_seconds": time.perf_counter() - start}
