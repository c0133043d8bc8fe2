"""The feature store, checked against brute force over the dense activations of a tiny GPT-2."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from saekit.activations import nnsight_api as api
from saekit.analysis import features as F
from saekit.analysis.features import FeatureStore, StoreConfig, build_feature_store

from helpers import HOOK, corpus, dense_acts, sparse_sae

CONFIG = StoreConfig(n_top=6, n_per_interval=3, n_bins=128, n_logits=4, batch_size=3)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tiny_lm):
    windows = corpus(tiny_lm)
    acts, index = dense_acts(tiny_lm, windows)
    sae = sparse_sae(acts, 40)
    with torch.no_grad():
        f = sae.encode(acts).numpy()
    store = build_feature_store(tiny_lm, windows, sae, hook=HOOK, config=CONFIG, progress=False)
    return windows, f, index, sae, store


# --- the running pieces ---------------------------------------------------------------------------


def test_group_best_keeps_the_n_lowest_scores_per_group():
    g = torch.Generator().manual_seed(0)
    best = F.GroupBest(7, 4)
    groups, scores = [], []
    for size in (50, 3, 200, 1, 80):
        group, score = torch.randint(0, 6, (size,), generator=g), torch.rand(size, generator=g)
        offset = sum(len(s) for s in scores)
        token = torch.arange(offset, offset + size)
        best.update(group, score, -score, token)
        groups.append(group)
        scores.append(score)
    group, score = torch.cat(groups).numpy(), torch.cat(scores).numpy()
    for k in range(7):
        order = np.flatnonzero(group == k)[np.argsort(score[group == k])][:4]
        kept = torch.isfinite(best.score[k])
        assert best.token[k][kept].tolist() == order.tolist()
        np.testing.assert_allclose(best.value[k][kept].numpy(), -score[order])


def test_group_best_breaks_ties_by_arrival_across_and_within_batches():
    """Equal scores (and −0.0 vs 0.0) keep the earliest offered entries: a stable sort of everything offered."""
    g = torch.Generator().manual_seed(3)
    best = F.GroupBest(5, 3)
    groups, scores = [], []
    for size in (40, 7, 60, 2, 30):
        group = torch.randint(0, 5, (size,), generator=g)
        score = torch.randint(-3, 3, (size,), generator=g).float() * 0.25
        score[score == 0] = torch.tensor([0.0, -0.0])[torch.randint(0, 2, (int((score == 0).sum()),), generator=g)]
        offset = sum(len(s) for s in scores)
        best.update(group, score, -score, torch.arange(offset, offset + size))
        groups.append(group)
        scores.append(score)
    group, score = torch.cat(groups).numpy(), torch.cat(scores).numpy()
    for k in range(5):
        members = np.flatnonzero(group == k)
        expected = members[np.argsort(score[members], kind="stable")][:3]
        assert best.token[k][torch.isfinite(best.score[k])].tolist() == expected.tolist()


def test_fired_finds_the_entries_in_token_order():
    f = torch.tensor([[0.0, 1.5, -2.0], [0.0, 0.0, 0.0], [3.0, -0.0, 0.5]])
    codes, values = F.fired(f)
    assert (codes.rows.tolist(), codes.cols.tolist(), values.tolist(), codes.n_rows) == ([0, 2, 2], [1, 0, 2],
                                                                                       [1.5, 3.0, 0.5], 3)
    codes, values = F.fired(f, positive=False)
    assert (codes.rows.tolist(), codes.cols.tolist(), values.tolist()) == ([0, 0, 2, 2], [1, 2, 0, 2],
                                                                           [1.5, -2.0, 3.0, 0.5])


def test_binned_samples_are_exact_bottom_k_through_range_growth():
    """Bins merge when the running max grows; the samples must equal bottom-k of the final bins."""
    n_units, n_bins, n = 3, 16, 2
    binned = F.BinnedSamples(n_units, n_bins, n, seed=5)
    keys_gen = torch.Generator().manual_seed(5)
    g = torch.Generator().manual_seed(1)
    all_cols, all_vals, all_keys = [], [], []
    for scale in (0.3, 1.0, 0.2, 9.0, 40.0, 3.0):  # the max grows over several powers of two
        f = torch.rand(30, n_units, generator=g) * scale
        f[f < 0.3 * scale] = 0
        codes, values = F.fired(f)
        offset = sum(len(v) for v in all_vals)
        token = torch.arange(offset, offset + values.numel())
        binned.update(codes, values, token)
        all_keys.append(torch.rand(values.shape, generator=keys_gen))
        all_cols.append(codes.cols)
        all_vals.append(values)
    cols, vals, keys = torch.cat(all_cols).numpy(), torch.cat(all_vals).numpy(), torch.cat(all_keys).numpy()
    width = binned.bin_width().numpy()
    for unit in range(n_units):
        assert vals[cols == unit].max() < width[unit] * n_bins <= 2 * vals[cols == unit].max()
        bins = np.floor(vals / width[unit]).astype(int)
        for b in range(n_bins):
            members = np.flatnonzero((cols == unit) & (bins == b))
            assert binned.counts[unit, b] == len(members)
            expected = members[np.argsort(keys[members])][:n]
            group = unit * n_bins + b
            kept = torch.isfinite(binned.samples.score[group])
            assert binned.samples.token[group][kept].tolist() == expected.tolist()


# --- the store against brute force ----------------------------------------------------------------


def test_density_counts_and_means(setup):
    _, f, _, _, store = setup
    table = store.features
    np.testing.assert_array_equal(table["n_fires"], (f > 0).sum(0))
    np.testing.assert_allclose(table["density"], (f > 0).mean(0))
    mean = np.where((f > 0).any(0), f.sum(0) / np.maximum((f > 0).sum(0), 1), 0)
    np.testing.assert_allclose(table["mean_activation"], mean, rtol=1e-5)
    np.testing.assert_allclose(table["max_activation"], f.max(0), rtol=1e-6)
    assert store.meta["n_tokens"] == f.shape[0]
    assert table["n_fires"].iloc[-1] == 0  # the dead feature


def test_top_examples_match_brute_force_topk(setup):
    _, f, index, _, store = setup
    for feature in range(f.shape[1]):
        col = f[:, feature]
        order = np.argsort(-col, kind="stable")[: CONFIG.n_top]
        order = order[col[order] > 0]
        rows = store.top[store.top.feature == feature]
        np.testing.assert_allclose(rows["activation"], col[order], rtol=1e-6)
        assert set(rows["token_index"]) == set(index[order])


def test_histogram_matches_brute_force(setup):
    _, f, _, _, store = setup
    for feature in range(f.shape[1] - 1):
        col = f[:, feature][f[:, feature] > 0]
        hist = store.histogram(feature)
        width = hist["bin_end"].iloc[0] - hist["bin_start"].iloc[0]
        assert col.max() < width * CONFIG.n_bins <= 2 * col.max()  # the range is the next power of two
        expected = np.bincount(np.floor(col / width).astype(int), minlength=len(hist))
        np.testing.assert_array_equal(hist["count"], expected)
        assert hist["bin_start"].iloc[-1] <= col.max() < hist["bin_end"].iloc[-1]
    assert store.histogram(f.shape[1] - 1).empty


def test_interval_examples_are_uniform_samples_of_even_intervals(setup):
    _, f, index, _, store = setup
    position = {token: i for i, token in enumerate(index)}
    for feature in range(f.shape[1] - 1):
        col = f[:, feature]
        rows = store.intervals[store.intervals.feature == feature]
        bounds = rows.drop_duplicates("interval").set_index("interval")
        width = store.features["bin_width"].iloc[feature]
        for j, row in bounds.iterrows():
            assert abs(row.interval_start - j * col.max() / CONFIG.n_intervals) <= width / 2 + 1e-9
            members = (col >= row.interval_start) & (col < row.interval_end) & (col > 0)
            assert row.interval_count == members.sum()
            samples = rows[rows.interval == j]
            assert len(samples) == min(CONFIG.n_per_interval, members.sum())
            assert samples["token_index"].is_unique
            for token, value in zip(samples["token_index"], samples["activation"]):
                assert members[position[token]] and math.isclose(value, col[position[token]], rel_tol=1e-6)
        assert bounds["interval_count"].sum() == (col > 0).sum()  # the intervals cover every firing


def test_example_context_comes_from_the_window(setup):
    windows, _, _, _, store = setup
    feature = int(store.feature_table()["feature"].iloc[0])
    examples = store.top_examples(feature, context=5)
    ids = windows.input_ids
    for row in examples.itertuples():
        assert row.token_id == ids[row.window, row.position]
        assert row.token == store.vocab[row.token_id]
        left = ids[row.window, max(0, row.position - 5) : row.position].tolist()
        assert row.left == [store.vocab[i] for i in left]
        assert len(row.right) <= 5
    assert list(examples["activation"]) == sorted(examples["activation"], reverse=True)
    assert {"interval", "interval_start", "activation", "token", "left", "right"} <= set(
        store.interval_examples(feature).columns)


def test_feature_table_and_search(setup):
    _, _, _, _, store = setup
    table = store.feature_table()
    assert list(table["density"]) == sorted(table["density"], reverse=True)
    assert {"feature", "density", "top_token", "top_token_share", "top_boost"} <= set(table.columns)
    hit = table.dropna(subset=["top_token"]).iloc[0]
    found = store.search_token(hit.top_token, exact=True)
    assert hit.feature in set(found["feature"])
    assert found.loc[found.feature == hit.feature, "n_top_examples"].iloc[0] >= 1
    boosted = store.logit_effects(int(hit.feature))
    assert list(boosted.columns) == ["direction", "rank", "token_id", "token", "logit"]
    token = boosted[boosted.direction == "boost"]["token"].iloc[0]
    matches = store.search_token(token, exact=True)
    assert (matches.loc[matches.feature == hit.feature, "boost_rank"] == 0).all()
    assert store.search_token("no such token at all").empty


def test_logit_effects_in_the_store_match_the_module(setup, tiny_lm):
    _, _, _, sae, store = setup
    from saekit.analysis.logit_effects import model_logit_effects

    expected = model_logit_effects(tiny_lm, HOOK, sae.W_dec.detach(), k=CONFIG.n_logits)
    pd.testing.assert_frame_equal(store.logits.reset_index(drop=True), expected.reset_index(drop=True),
                                  check_dtype=False)


def test_save_and_load_round_trip(setup, tmp_path):
    _, _, _, _, store = setup
    loaded = FeatureStore.load(store.save(tmp_path / "store"))
    assert loaded.meta == store.meta
    for name in ("features", "top", "intervals", "histograms", "logits"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(store, name), check_dtype=False)
    np.testing.assert_array_equal(loaded.token_ids, store.token_ids)
    pd.testing.assert_frame_equal(loaded.top_examples(3), store.top_examples(3))
    assert loaded.vocab == store.vocab
    with pytest.raises(FileNotFoundError, match="store.json"):
        FeatureStore.load(tmp_path)


def test_neuron_store_is_the_identity_dictionary(tiny_lm):
    windows = corpus(tiny_lm)
    acts, _ = dense_acts(tiny_lm, windows)
    store = build_feature_store(tiny_lm, windows, hook=HOOK, config=CONFIG, progress=False)
    assert store.meta["kind"] == "neurons" and store.n_features == acts.shape[1]
    np.testing.assert_allclose(store.features["density"], (acts > 0).float().mean(0).numpy())
    np.testing.assert_allclose(store.features["max_activation"], acts.max(0).values.numpy(), rtol=1e-6)
    # a neuron's logit effects are its row of W_out through the unembedding
    module = api.underlying_module(tiny_lm)
    w_out = module.transformer.h[0].mlp.c_proj.weight[7].detach()
    ln = module.transformer.ln_f
    effect = ((w_out - w_out.mean()) * ln.weight.detach()) @ module.lm_head.weight.detach().T
    boosted = store.logit_effects(7)
    assert boosted[boosted.direction == "boost"]["token_id"].tolist() == effect.topk(CONFIG.n_logits).indices.tolist()


def test_window_activations_match_the_dense_codes(setup, tiny_lm):
    windows, f, index, sae, store = setup
    acts = F.window_activations(tiny_lm, sae, store.windows([0, 1]), [2, 5], HOOK)
    assert acts.shape == (2, store.context_len, 2)
    first = index[index < 2 * store.context_len]
    flat = acts.reshape(-1, 2).numpy()[first]
    np.testing.assert_allclose(flat, f[: len(first)][:, [2, 5]], rtol=1e-5, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="power of two"):
        StoreConfig(n_bins=100)
    with pytest.raises(ValueError, match="n_top"):
        StoreConfig(n_top=0)


def test_a_model_without_lm_head_gets_a_store_without_logit_effects(tiny_bert_dir):
    model = api.load_model(tiny_bert_dir)
    windows = corpus(model)
    store = build_feature_store(model, windows, hook="encoder.layer.0.intermediate", config=CONFIG, progress=False)
    assert store.logits.empty and "LM head" in store.meta["logit_effects_note"]
    assert store.logit_effects(0).empty
    feature = int(store.feature_table()["feature"].iloc[0])
    token = store.top_examples(feature)["token"].iloc[0]
    assert feature in set(store.search_token(token, exact=True)["feature"])


# --- the shared pass (saekit demo's feature data) against one store per dictionary ----------------


def _same_store(a: FeatureStore, b: FeatureStore) -> None:
    for name in ("features", "top", "intervals", "histograms", "logits"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    assert a.meta == b.meta and a.vocab == b.vocab


def test_shared_pass_stores_equal_one_pass_per_dictionary(setup, tiny_lm):
    """Two SAEs and the neurons, some over a prefix of the windows (a batch cut mid-way), each encoded once
    for all its jobs: every store equals `build_feature_store` run on its own windows."""
    from saekit.activations.reading import open_reading
    from saekit.analysis.harvest import Reader, StoreJob, cut_windows, shared_pass
    from saekit.saes.dictionary import Neurons

    windows, _, _, sae, _ = setup
    acts, _ = dense_acts(tiny_lm, windows)
    other = sparse_sae(acts, 24, density=0.3, seed=4)
    readings = {"m": open_reading(tiny_lm, windows, sae, hook=HOOK)}
    readers = {"neurons": Reader("m", Neurons(acts.shape[1])), "a": Reader("m", sae), "b": Reader("m", other)}
    n = len(windows)
    cuts = [m for m in range(n - 1, 0, -1) if m % CONFIG.batch_size]  # window counts that end mid-batch
    jobs = {"a": StoreJob("a", n), "b": StoreJob("b", cuts[2]), "neurons": StoreJob("neurons", cuts[0])}
    shared = shared_pass(readings, readers, jobs, batch_size=CONFIG.batch_size, config=CONFIG, progress=False)
    for name, job in jobs.items():
        dictionary = None if name == "neurons" else readers[name].dictionary
        expected = build_feature_store(tiny_lm, cut_windows(windows, job.n_windows), dictionary, hook=HOOK,
                                       config=CONFIG, progress=False)
        _same_store(shared.assemble(name), expected)
    assert not shared.stores  # assembled stores are dropped from the result
