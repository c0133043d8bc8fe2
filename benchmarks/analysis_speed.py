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


def _paired_setup(tokens: int):
    """Models A and B (different seeds) on the same windows, each with an SAE calibrated on its own model."""
    from saekit.activations import nnsight_api as api

    model_a, windows, sample_a = _setup(tokens)
    model_b = api.load_model(demo_shaped_model(seed=1))
    sample_b = api.get_activations(model_b, windows.input_ids[:64], windows.attention_mask[:64], HOOK).reshape(-1, 512)
    sae_a = sparse_relu_sae(N_FEATURES, DENSITY, sample_a, seed=0)
    sae_b = sparse_relu_sae(N_FEATURES, DENSITY, sample_b, seed=1)
    return model_a, model_b, windows, sae_a, sae_b


def universality_sums(tokens: int = 1_000_000, distinct_batches: int = 4, batch: int = 4096) -> dict[str, float]:
    """The correlation itself: feature × feature (4096²) sums over `tokens` tokens of encoded activations (a few
    real batches from both models, cycled), then the correlation matrix. The neuron baseline (512², dense)
    is timed in the end-to-end row."""
    from saekit.activations import nnsight_api as api
    from saekit.analysis.universality import CoactivationSums

    model_a, model_b, windows, sae_a, sae_b = _paired_setup(distinct_batches * batch)
    rows = batch // CONTEXT
    pairs = []
    with torch.no_grad():
        for i in range(distinct_batches):
            ids, mask = windows.input_ids[i * rows:(i + 1) * rows], windows.attention_mask[i * rows:(i + 1) * rows]
            acts_a = api.get_activations(model_a, ids, mask, HOOK).reshape(-1, 512)
            acts_b = api.get_activations(model_b, ids, mask, HOOK).reshape(-1, 512)
            pairs.append((sae_a.encode(acts_a), sae_b.encode(acts_b)))
    start = time.perf_counter()
    features = CoactivationSums(N_FEATURES, N_FEATURES)
    for step in range(tokens // batch):
        features.update(*pairs[step % distinct_batches])
    features.correlation()
    return {"universality_sums_seconds": time.perf_counter() - start}


def universality(tokens: int = 1_000_000) -> dict[str, float]:
    """End to end: both models read, both SAEs encode, and the correlation sums, over `tokens` tokens."""
    from saekit.analysis.universality import correlate

    model_a, model_b, windows, sae_a, sae_b = _paired_setup(tokens)
    start = time.perf_counter()
    correlate(model_a, model_b, windows, sae_a, sae_b, hook=HOOK, max_tokens=tokens, progress=False)
    return {"universality_seconds": time.perf_counter() - start}
