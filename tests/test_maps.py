"""Feature maps: one small seeded UMAP of two dictionaries (umap-learn compiles on first use: keep it small)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saekit.analysis import maps as M
from saekit.analysis.features import StoreConfig, build_feature_store

from helpers import HOOK, corpus

umap = pytest.importorskip("umap")


def _clustered_decoder(n: int, d: int, seed: int) -> torch.Tensor:
    """Decoder rows around 4 well-separated directions, so the map has clusters to find."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(d)[:4] * 3
    return centres[torch.arange(n) % 4] + 0.15 * torch.randn(n, d, generator=g)


def test_feature_map_of_two_sizes():
    small, large = _clustered_decoder(40, 16, 0), _clustered_decoder(80, 16, 1)
    hover = {"small": [f"s{i}" for i in range(40)]}
    config = M.MapConfig(min_cluster_size=8)
    table = M.feature_map({"small": small, "large": large}, hover=hover, config=config)
    assert list(table.columns) == ["dictionary", "size", "feature", "x", "y", "hover", "cluster"]
    assert table.groupby("dictionary").size().to_dict() == {"large": 80, "small": 40}
    assert set(table[table.dictionary == "small"]["size"]) == {40}
    assert np.isfinite(table[["x", "y"]].to_numpy()).all()
    assert table["hover"].iloc[3] == "s3" and table["hover"].iloc[45] == ""
    # features of both sizes along the same direction share a cluster
    table["group"] = np.concatenate([np.arange(40) % 4, np.arange(80) % 4])
    clustered = table[table.cluster >= 0]
    assert len(clustered) > 0.8 * len(table)
    assert (clustered.groupby("cluster")["group"].nunique() == 1).all()
    assert clustered["cluster"].nunique() == 4
    again = M.feature_map({"small": small, "large": large}, clusters=False, config=config)
    np.testing.assert_allclose(again[["x", "y"]].to_numpy(), table[["x", "y"]].to_numpy())  # seeded


def test_map_config_validation():
    with pytest.raises(ValueError, match="n_neighbors"):
        M.MapConfig(n_neighbors=1)
    with pytest.raises(ValueError, match="at least one dictionary"):
        M.decoder_directions({})


def test_hover_labels_from_a_feature_store(tiny_lm):
    store = build_feature_store(tiny_lm, corpus(tiny_lm), hook=HOOK, config=StoreConfig(n_top=4, n_bins=128),
                                progress=False)
    labels = M.hover_labels(store, n_tokens=2)
    assert len(labels) == store.n_features
    feature = int(store.feature_table()["feature"].iloc[0])
    top_token = store.top_examples(feature)["token"].iloc[0]
    assert labels[feature].startswith("fires on: " + repr(top_token))
    assert "boosts: " + repr(store.logit_effects(feature)["token"].iloc[0]) in labels[feature]
