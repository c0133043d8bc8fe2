import numpy as np
import pytest
import torch

import saekit
from saekit.toy_models import (
    ToyConfig,
    feature_geometry,
    features_per_dimension,
    match_features,
    sample_features,
    train_toy_models,
)

DENSE, SPARSE = 0.0, 0.97


@pytest.fixture(scope="module")
def toys():
    """Five features in two dimensions, trained dense and very sparse (about 3 s)."""
    return train_toy_models(ToyConfig(sparsities=(DENSE, SPARSE), steps=2_000, batch_size=512), progress=False)


def columns(toys, i: int) -> np.ndarray:
    return toys.model.W.detach()[i].numpy().T  # [n_features, d_hidden]


def test_dense_features_get_a_dimension_each_and_the_rest_are_dropped(toys):
    W = columns(toys, 0)
    norms = np.linalg.norm(W, axis=1)
    assert (norms[:2] > 0.9).all() and (norms[2:] < 0.2).all()  # the two most important features are kept
    assert abs(W[0] @ W[1]) / (norms[0] * norms[1]) < 0.1  # on orthogonal axes
    table = features_per_dimension(toys).set_index("sparsity")
    assert table.loc[DENSE, "represented"] == 2
    assert table.loc[DENSE, "features_per_dimension"] == pytest.approx((norms**2).sum() / 2)
    assert table.loc[DENSE, "features_per_dimension"] == pytest.approx(1.0, abs=0.05)


def test_sparse_features_are_all_kept_in_superposition_as_a_pentagon(toys):
    W = columns(toys, 1)
    norms = np.linalg.norm(W, axis=1)
    assert (norms > 0.9).all()  # five features in two dimensions
    angles = np.sort(np.degrees(np.arctan2(W[:, 1], W[:, 0])))
    gaps = np.diff(np.append(angles, angles[0] + 360))
    np.testing.assert_allclose(gaps, 72, atol=10)
    table = features_per_dimension(toys).set_index("sparsity")
    assert table.loc[SPARSE, "represented"] == 5
    assert table.loc[SPARSE, "features_per_dimension"] > 2.4
    assert (toys.model.b.detach()[1] < -0.1).all()  # negative biases filter the interference out


def test_geometry_table_against_numpy(toys):
    geometry = feature_geometry(toys)
    W = columns(toys, 1)
    unit = W / np.linalg.norm(W, axis=1, keepdims=True)
    expected = [sum((unit[i] @ W[j]) ** 2 for j in range(5) if j != i) for i in range(5)]
    sparse = geometry[geometry.sparsity == SPARSE]
    np.testing.assert_allclose(sparse.superposition, expected, rtol=1e-4)
    np.testing.assert_allclose(sparse[["x", "y"]].to_numpy(), W, rtol=1e-5)
    np.testing.assert_allclose(sparse.importance, 0.85 ** np.arange(5), rtol=1e-6)
    assert geometry[geometry.sparsity == DENSE].superposition.iloc[2:].isna().all()  # dropped: no direction


def test_model_computes_relu_of_wt_w_x_plus_b(toys):
    x = sample_features(7, (DENSE, SPARSE), 5, torch.Generator().manual_seed(0))
    W, b = toys.model.W.detach().numpy(), toys.model.b.detach().numpy()
    expected = np.stack([np.maximum(x[i].numpy() @ W[i].T @ W[i] + b[i], 0) for i in range(2)])
    with torch.no_grad():
        np.testing.assert_allclose(toys.model(x).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_features_are_zero_with_the_given_probability():
    x = sample_features(20_000, (0.0, 0.9), 5, torch.Generator().manual_seed(0))
    zero = (x == 0).float().mean(dim=(1, 2))
    assert zero[0].item() == 0.0 and zero[1].item() == pytest.approx(0.9, abs=0.01)
    assert 0 <= x.min() and x.max() <= 1


def test_an_sae_on_the_hidden_activations_recovers_the_true_features(toys):
    sae = saekit.SAE.create("topk", 2, 10, k=1, seed=0)
    cfg = saekit.TrainConfig(total_tokens=300 * 512, lr=3e-3)
    saekit.train(sae, toys.hidden_batches(SPARSE, 512, 300), cfg, progress=False)
    matches = match_features(sae.W_dec, toys.directions(SPARSE))
    assert (matches.cosine > 0.9).all()
    assert matches.sae_feature.nunique() == 5  # each true feature found by its own dictionary feature


def test_hidden_batches_are_w_x_and_repeat(toys):
    first = list(toys.hidden_batches(SPARSE, 64, 2))
    again = list(toys.hidden_batches(SPARSE, 64, 2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    W = toys.directions(SPARSE)  # [5, 2]
    x = sample_features(64, (SPARSE,), 5, torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(first[0], x @ W)


def test_match_features_against_brute_force():
    g = np.random.default_rng(0)
    W_dec, directions = g.normal(size=(12, 4)), g.normal(size=(6, 4))
    table = match_features(torch.tensor(W_dec), torch.tensor(directions))
    for i, row in table.iterrows():
        cos = [directions[i] @ d / np.linalg.norm(directions[i]) / np.linalg.norm(d) for d in W_dec]
        assert row.sae_feature == int(np.argmax(cos)) and row.cosine == pytest.approx(max(cos))
        assert row.norm == pytest.approx(np.linalg.norm(directions[i]))


def test_bad_input_says_what_to_change(toys):
    with pytest.raises(saekit.InputError, match="sparsities"):
        ToyConfig(sparsities=(1.0,))
    with pytest.raises(saekit.InputError, match="use one of"):
        toys.directions(0.5)
    with pytest.raises(saekit.InputError, match="dimensions"):
        match_features(torch.zeros(3, 4), torch.zeros(2, 5))
