"""Universality: streaming sparse correlations against dense numpy over the same tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saekit.activations import nnsight_api as api
from saekit.analysis import universality as U
from saekit.analysis.encoding import fired

from helpers import HOOK, build_tiny_gpt2, corpus, dense_acts, sparse_sae


def _numpy_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(a.T.astype(np.float64), b.T.astype(np.float64))[: a.shape[1], a.shape[1]:]


def _random_codes(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(n, d, generator=g) - 1.2)
    f[:, 2] = 0  # a silent unit
    return f


@pytest.mark.parametrize("method", ["sparse", "dense", "auto"])
def test_sums_give_numpys_correlation_and_cosine(method):
    f_a, f_b = _random_codes(300, 20, 0), _random_codes(300, 13, 1)
    sums = U.CoactivationSums(20, 13, method)
    for rows in (slice(0, 100), slice(100, 101), slice(101, 300)):
        sums.update(f_a[rows], f_b[rows])
    expected = _numpy_corr(f_a.numpy(), f_b.numpy())
    np.testing.assert_allclose(sums.correlation().numpy(), expected, rtol=1e-5, atol=1e-6)
    a, b = f_a.double().numpy(), f_b.double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (a.T @ b) / np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0))
    np.testing.assert_allclose(sums.cosine().numpy(), cosine, rtol=1e-5, atol=1e-6)
    assert torch.isnan(sums.correlation()[2]).all()


def test_torch_product_when_scipy_is_missing(monkeypatch):
    monkeypatch.setattr(U, "_has_scipy", lambda: False)
    f_a, f_b = _random_codes(200, 9, 2), _random_codes(200, 11, 3)
    cross = torch.zeros(9, 11, dtype=torch.float64)
    U.add_sparse_cross(cross, *fired(f_a, positive=False), *fired(f_b, positive=False))
    np.testing.assert_allclose(cross.numpy(), f_a.double().numpy().T @ f_b.double().numpy(), rtol=1e-10)


@pytest.mark.parametrize("threads", [1, 2])
def test_sparse_cross_adds_in_blocks_of_units_like_a_dense_product(threads):
    """Enough units of A for several row blocks and slabs: two batches added equal numpy's f_aᵀ f_b."""
    f_a, f_b = _random_codes(400, 3 * U.SLAB_ROWS + 5, 4), _random_codes(400, 37, 5)
    cross = torch.zeros(f_a.shape[1], f_b.shape[1], dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for rows in (slice(0, 150), slice(150, 400)):
            U.add_sparse_cross(cross, *fired(f_a[rows], positive=False), *fired(f_b[rows], positive=False))
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(cross.numpy(), f_a.double().numpy().T @ f_b.double().numpy(), rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def model_b(tmp_path_factory):
    return api.load_model(build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2_b"), seed=1))


def test_correlate_two_models_matches_dense_numpy(tiny_lm, model_b):
    windows = corpus(tiny_lm)
    acts_a, _ = dense_acts(tiny_lm, windows)
    acts_b, _ = dense_acts(model_b, windows)
    sae_a, sae_b = sparse_sae(acts_a, 32, seed=1), sparse_sae(acts_b, 24, seed=2)
    result = U.correlate(tiny_lm, model_b, windows, sae_a, sae_b, batch_size=2, method="sparse", progress=False)
    with torch.no_grad():
        f_a, f_b = sae_a.encode(acts_a).numpy(), sae_b.encode(acts_b).numpy()
    np.testing.assert_allclose(result.features.numpy(), _numpy_corr(f_a, f_b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.neurons.numpy(), _numpy_corr(acts_a.numpy(), acts_b.numpy()), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(result.density_a.numpy(), (f_a > 0).mean(0), rtol=1e-6)

    tables = U.best_match_tables(result)
    best = tables.features.dropna()
    expected = np.nan_to_num(_numpy_corr(f_a, f_b), nan=-np.inf).max(axis=1)  # NaN: dead features
    np.testing.assert_allclose(best["correlation"], expected[best["unit"]], rtol=1e-4)
    assert tables.features["correlation"].isna().sum() == 1  # sae_a's dead feature
    hist = U.best_match_histogram(tables, bins=10)
    assert set(hist["basis"]) == {"features", "neurons"}
    assert hist.groupby("basis")["count"].sum().to_dict() == {"features": 31, "neurons": 128}
    summary = U.universality_summary(tables).set_index("basis")
    assert summary.loc["features", "median"] == pytest.approx(best["correlation"].median())


def test_a_model_against_itself_matches_every_feature_perfectly(tiny_lm):
    windows = corpus(tiny_lm)
    acts, _ = dense_acts(tiny_lm, windows)
    sae = sparse_sae(acts, 16)
    tables = U.best_match_tables(U.correlate(tiny_lm, tiny_lm, windows, sae, sae, progress=False))
    alive = tables.features.dropna()
    assert (alive["best_match"] == alive["unit"]).all()
    np.testing.assert_allclose(alive["correlation"], 1.0, atol=1e-5)
    np.testing.assert_allclose(tables.neurons["correlation"], 1.0, atol=1e-5)


def test_best_matches_table():
    corr = torch.tensor([[0.1, 0.9, -0.2], [float("nan")] * 3, [0.3, -0.5, 0.4]])
    table = U.best_matches(corr, density=torch.tensor([0.1, 0.0, 0.2]))
    assert table["best_match"].tolist()[0] == 1 and table["best_match"].tolist()[2] == 2
    assert table["best_match"].isna().tolist() == [False, True, False]
    np.testing.assert_allclose(table["correlation"], [0.9, np.nan, 0.4])


def test_universality_by_density_buckets_against_hand_medians():
    import pandas as pd

    features = pd.DataFrame({"unit": range(7), "best_match": range(7),
                             "correlation": [0.9, 0.1, 0.5, 0.7, np.nan, 0.3, 0.8],
                             "density": [2e-5, 5e-5, 3e-3, 4e-3, 0.0, 5e-3, 0.2]})
    result = U.Universality(features, pd.DataFrame({"unit": [0], "best_match": [0], "correlation": [0.5]}))
    table = U.universality_by_density(result, edges=(0.0, 1e-4, 1e-2, 1.0)).set_index("density_to")
    assert table["n_features"].tolist() == [2, 3, 1]  # the silent feature (density 0) is in no bucket
    np.testing.assert_allclose(table["median"], [0.5, 0.5, 0.8])
    np.testing.assert_allclose(table["mean"], [0.5, 0.5, 0.8])
    assert U.universality_by_density(result)["n_features"].sum() == 6
    with pytest.raises(ValueError, match="density"):
        U.universality_by_density(U.Universality(features.drop(columns="density"), result.neurons))


def test_shared_pass_pairs_equal_correlate(tiny_lm, model_b):
    """Universality from the shared pass (each side encoded once, also feeding a store and a pair over fewer
    windows) gives `correlate`'s correlations and densities on the same windows."""
    from saekit.activations.reading import open_reading
    from saekit.analysis.harvest import PairJob, Reader, StoreJob, cut_windows, shared_pass
    from saekit.saes.dictionary import Neurons

    windows = corpus(tiny_lm)
    acts_a, _ = dense_acts(tiny_lm, windows)
    acts_b, _ = dense_acts(model_b, windows)
    sae_a, sae_b = sparse_sae(acts_a, 32, seed=1), sparse_sae(acts_b, 24, seed=2)
    readings = {"A": open_reading(tiny_lm, windows, sae_a, hook=HOOK), "B": open_reading(model_b, windows, sae_a,
                                                                                       hook=HOOK)}
    readers = {"na": Reader("A", Neurons(128)), "a": Reader("A", sae_a), "nb": Reader("B", Neurons(128)),
               "b": Reader("B", sae_b)}
    n, cut = len(windows), len(windows) - 3  # correlate below takes one method for features and neurons
    pairs = {"features": PairJob("a", "b", n, "sparse"), "neurons": PairJob("na", "nb", n, "sparse"),
             "short": PairJob("b", "a", cut, "sparse")}
    shared = shared_pass(readings, readers, {"store": StoreJob("a", cut)}, pairs, batch_size=2, progress=False)
    result = shared.pairs["features"].correlations(shared.pairs["neurons"])
    expected = U.correlate(tiny_lm, model_b, windows, sae_a, sae_b, hook=HOOK, batch_size=2, method="sparse",
                           progress=False)
    for got, want in zip(result, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    short = shared.pairs["short"].correlations()
    expected = U.correlate(model_b, tiny_lm, cut_windows(windows, cut), sae_b, sae_a, hook=HOOK, batch_size=2,
                           method="sparse", progress=False)
    torch.testing.assert_close(short.features, expected.features, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(short.density_a, expected.density_a, rtol=0, atol=0)
