"""Streaming analysis at scale: the feature store (4096 features, 1M tokens) and universality correlations
(4096 × 4096 features, 1M tokens), on the demo's shape with SAEs whose features fire sparsely."""

from __future__ import annotations

import time

import torch

from benchmarks.common import CONTEXT, HOOK, VOCAB, demo_shaped_model, sparse_relu_sae

N_FEATURES, DENSITY = 4096, 0.008  # ≈ 33 active features per token, like a trained A/1


def _setup(tokens: int):
    from saekit.activations import nnsight_api as api
    from saekit.activations.windows import windows_from_tokens

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


def shared_pass(tokens: int = 100_000, sizes: tuple[int, ...] = (512, 1024, 2048, 4096)) -> dict[str, float]:
    """The demo's feature data step both ways on the same windows: one call per analysis (each store, correlate,
    split_similarities read the models and encode on their own) against `analysis.harvest.shared_pass` (each
    model read once, each dictionary encoded once per batch). Stand-in SAEs fire on ~33 features per token."""
    from saekit.activations.reading import open_reading
    from saekit.analysis.features import build_feature_store
    from saekit.analysis.harvest import PairJob, Reader, StoreJob
    from saekit.analysis.harvest import shared_pass as run_shared
    from saekit.analysis.splitting import split_similarities
    from saekit.analysis.universality import correlate
    from saekit.saes.dictionary import Neurons

    model_a, model_b, windows, _, _ = _paired_setup(tokens)
    from saekit.activations import nnsight_api as api

    sample_b = api.get_activations(model_b, windows.input_ids[:64], windows.attention_mask[:64], HOOK).reshape(-1, 512)
    sample_a = api.get_activations(model_a, windows.input_ids[:64], windows.attention_mask[:64], HOOK).reshape(-1, 512)
    family = [sparse_relu_sae(n, min(0.1, 33 / n), sample_a, seed=n) for n in sizes]
    sae_b = sparse_relu_sae(sizes[-1], 33 / sizes[-1], sample_b, seed=1)
    a1 = family[-1]
    start = time.perf_counter()
    for sae in [*family, None]:
        build_feature_store(model_a, windows, sae, hook=HOOK, progress=False)
    for sae in (sae_b, None):
        build_feature_store(model_b, windows, sae, hook=HOOK, progress=False)
    correlate(model_a, model_b, windows, a1, sae_b, hook=HOOK, progress=False)
    split_similarities(model_a, windows, family, hook=HOOK, progress=False)
    separate = time.perf_counter() - start

    start = time.perf_counter()
    readings = {m: open_reading(model, windows, a1, hook=HOOK) for m, model in (("A", model_a), ("B", model_b))}
    readers = {"A-neurons": Reader("A", Neurons(512)), "B-neurons": Reader("B", Neurons(512)),
               **{f"A-{s.d_sae}": Reader("A", s) for s in family}, "B": Reader("B", sae_b)}
    n = len(windows)
    pairs = {"universality": PairJob(f"A-{a1.d_sae}", "B", n), "neurons": PairJob("A-neurons", "B-neurons", n),
             **{f"split-{a.d_sae}": PairJob(f"A-{a.d_sae}", f"A-{b.d_sae}", n) for a, b in zip(family, family[1:])}}
    result = run_shared(readings, readers, {name: StoreJob(name, n) for name in readers}, pairs, progress=False)
    for name in list(result.stores):
        result.assemble(name)
    for pair in result.pairs.values():
        pair.sums.cosine()
    shared = time.perf_counter() - start
    return {"separate_passes_seconds": separate, "shared_pass_seconds": shared}
