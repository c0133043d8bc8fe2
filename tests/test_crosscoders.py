"""Crosscoder model diffing against brute force: relative decoder norms and their kinds, decoder cosines, and the
comparison with the paper's correlation matching."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import saekit
from saekit.analysis.crosscoders import (
    compare_with_matching,
    decoder_cosines,
    matching_by_kind,
    relative_norm_histogram,
    relative_norms,
)

D, D_SAE = 8, 10


@pytest.fixture
def crosscoder():
    cc = saekit.SAE.create("relu", 2 * D, D_SAE, n_models=2, seed=0)
    with torch.no_grad():
        cc.W_dec[0, D:] = 0  # A only
        cc.W_dec[1, :D] = 0  # B only
        cc.W_dec[2, D:] = cc.W_dec[2, :D]  # shared, the same direction in both
        cc.W_dec[3, D:] = 0.05 * cc.W_dec[3, D:] / cc.W_dec[3, D:].norm()  # nearly A only
        cc.W_dec[3, :D] = cc.W_dec[3, :D] / cc.W_dec[3, :D].norm()
        cc.W_dec[4] = 0  # dead
    return cc


def test_relative_norms_and_kinds_match_a_loop(crosscoder):
    table = relative_norms(crosscoder)
    W = crosscoder.W_dec.detach().numpy()
    for i in range(D_SAE):
        a, b = np.linalg.norm(W[i, :D]), np.linalg.norm(W[i, D:])
        assert table.loc[i, "norm_A"] == pytest.approx(a, rel=1e-5)
        assert table.loc[i, "norm_B"] == pytest.approx(b, rel=1e-5)
        if a + b == 0:
            assert math.isnan(table.loc[i, "relative_norm"]) and table.loc[i, "kind"] == "none"
            continue
        r = b / (a + b)
        assert table.loc[i, "relative_norm"] == pytest.approx(r, rel=1e-5)
        assert table.loc[i, "kind"] == ("A only" if r <= 0.1 else "B only" if r >= 0.9 else "shared")
    assert list(table.loc[:3, "kind"]) == ["A only", "B only", "shared", "A only"]
    hist = relative_norm_histogram(table, bins=10)
    assert hist["count"].sum() == D_SAE - 1 and hist["count"].iloc[0] == 2 and hist["count"].iloc[-1] == 1


def test_decoder_cosines_match_a_loop(crosscoder):
    cos = decoder_cosines(crosscoder)
    W = crosscoder.W_dec.detach().numpy()
    for i in range(D_SAE):
        a, b = W[i, :D], W[i, D:]
        if np.linalg.norm(a) * np.linalg.norm(b) == 0:
            assert math.isnan(float(cos[i]))
        else:
            assert float(cos[i]) == pytest.approx(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), abs=1e-6)
    assert float(cos[2]) == pytest.approx(1.0)


def test_comparison_with_matching_finds_the_nearest_sae_feature(crosscoder):
    sae_a = saekit.SAE.create("relu", D, 6, seed=1)
    with torch.no_grad():
        sae_a.W_dec[5] = 3 * crosscoder.W_dec[2, :D]  # the shared crosscoder feature's A direction
    matches = pd.DataFrame({"unit": np.arange(6), "best_match": np.arange(6),
                            "correlation": np.linspace(0.1, 0.9, 6)})
    table = compare_with_matching(crosscoder, sae_a, matches)
    A = torch.nn.functional.normalize(crosscoder.W_dec.detach()[:, :D], dim=1).numpy()
    S = torch.nn.functional.normalize(sae_a.W_dec.detach(), dim=1).numpy()
    for i in range(D_SAE):
        sims = S @ A[i]
        if not np.isfinite(sims).all() or np.linalg.norm(crosscoder.W_dec.detach()[i, :D]) == 0:
            continue
        j = int(np.argmax(sims))
        assert table.loc[i, "sae_feature"] == j
        assert table.loc[i, "decoder_cosine"] == pytest.approx(sims[j], abs=1e-5)
        assert table.loc[i, "best_match_correlation"] == pytest.approx(matches.loc[j, "correlation"])
    assert table.loc[2, "sae_feature"] == 5 and table.loc[2, "decoder_cosine"] == pytest.approx(1.0)
    summary = matching_by_kind(table).set_index("kind")
    assert summary.loc["shared", "n_features"] == (table["kind"] == "shared").sum()


def test_a_plain_sae_is_not_a_crosscoder():
    with pytest.raises(ValueError, match="several models"):
        relative_norms(saekit.SAE.create("relu", D, D_SAE))

