"""The interpretability proxy, on a hand-made store whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from saekit.analysis import interpretability as I
from saekit.analysis.features import FeatureStore, StoreConfig, build_feature_store
from saekit.saes.dictionary import Neurons

from helpers import HOOK, corpus


def _store() -> FeatureStore:
    """Windows [[a b c a] [a d e f]] (ids 1..6; 0 is special). Feature 0 fires on a, a, a at the top;
    feature 1 on b, c, d, e; feature 2 never fires."""
    top = pd.DataFrame({"feature": [0, 0, 0, 1, 1, 1, 1], "rank": [0, 1, 2, 0, 1, 2, 3],
                        "activation": [3.0, 2.0, 1.0, 4.0, 3.0, 2.0, 1.0], "token_index": [0, 3, 4, 1, 2, 5, 6]})
    intervals = pd.DataFrame({
        "feature": [0, 0, 0, 1], "interval": [0, 0, 10, 0], "sample": [0, 1, 0, 0],
        "interval_start": [0.0, 0.0, 2.7, 0.0], "interval_end": [0.3, 0.3, 3.0, 0.4],
        "interval_count": [10, 10, 2, 4], "activation": [0.1, 0.1, 1.0, 0.5], "token_index": [1, 0, 3, 1],
    })
    features = pd.DataFrame({"feature": [0, 1, 2], "density": [0.5, 0.25, 0.0]})
    return FeatureStore(
        meta={"n_features": 3, "context_len": 4, "special_ids": [0]}, features=features, top=top,
        intervals=intervals, histograms=pd.DataFrame(columns=["feature", "bin", "count"]),
        logits=pd.DataFrame(columns=["feature", "direction", "rank", "token_id", "token", "logit"]),
        token_ids=np.array([[1, 2, 3, 1], [1, 4, 5, 6]], dtype=np.int32), lengths=np.array([4, 4], dtype=np.int32),
        vocab=["<eot>", "a", "b", "c", "d", "e", "f"],
    )


def test_measures_by_hand():
    table = I.unit_measures(_store()).set_index("feature")
    assert list(table.index) == [0, 1]  # the dead feature has nothing to measure
    assert table.loc[0, "top_token"] == "a" and table.loc[1, "top_token"] == "b"
    assert table.loc[0, "top_token_share"] == 1.0 and table.loc[1, "top_token_share"] == 0.25
    assert table.loc[0, "top_token_entropy"] == pytest.approx(0.0)
    assert table.loc[1, "top_token_entropy"] == pytest.approx(2.0)
    # feature 0: interval 0 has mass 10·0.1 with half its samples on "a"; interval 10 mass 2·1.0, all on "a"
    assert table.loc[0, "specificity"] == pytest.approx((0.5 * 1.0 + 2.0) / 3.0)
    assert table.loc[0, "base_rate"] == pytest.approx(3 / 8)
    assert table.loc[0, "log_likelihood_ratio"] == pytest.approx(math.log((2.5 / 3) / (3 / 8)))
    assert table.loc[1, "specificity"] == 1.0
    assert table.loc[1, "log_likelihood_ratio"] == pytest.approx(math.log(8))


def test_compare_bases_on_real_stores(tiny_lm):
    windows = corpus(tiny_lm)
    config = StoreConfig(n_top=8, n_bins=128)
    neurons = build_feature_store(tiny_lm, windows, hook=HOOK, config=config, progress=False)
    summary = I.compare_bases({"neurons": neurons, "again": neurons}).set_index("basis")
    assert list(summary.columns) == ["n_units", *I.MEASURES]
    assert summary.loc["neurons", "n_units"] == (neurons.features["n_fires"] > 0).sum()
    pd.testing.assert_series_equal(summary.loc["neurons"], summary.loc["again"], check_names=False)
    measures = I.unit_measures(neurons)
    assert measures["top_token_share"].between(0, 1).all() and measures["specificity"].between(0, 1).all()
    assert Neurons(4).W_dec.shape == (4, 4)
