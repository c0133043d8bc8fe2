"""Feature maps: one small seeded UMAP of two dictionaries (umap-learn compiles on first use: keep it small)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import saekit
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
    for bad in ({"n_epochs": 0}, {"pca_dims": 1}, {"init": "tsne"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            M.MapConfig(**bad)


def test_hover_labels_from_a_feature_store(tiny_lm):
    store = build_feature_store(tiny_lm, corpus(tiny_lm), hook=HOOK, config=StoreConfig(n_top=4, n_bins=128),
                                progress=False)
    labels = M.hover_labels(store, n_tokens=2)
    assert len(labels) == store.n_features
    feature = int(store.feature_table()["feature"].iloc[0])
    top_token = store.top_examples(feature)["token"].iloc[0]
    assert labels[feature].startswith("fires on: " + repr(top_token))
    assert "boosts: " + repr(store.logit_effects(feature)["token"].iloc[0]) in labels[feature]


# --- the paper's joint map: A/1 and its larger neighbours in one UMAP ----------------------------------------

CONCEPTS, D_IN = 6, 32
JOINT = M.MapConfig(n_epochs=60, init="pca", pca_dims=8, cluster_dims=2, min_cluster_size=8)


def _split_family(sizes: tuple[int, ...]) -> dict[str, saekit.SAE]:
    """Tiny relu SAEs whose decoder rows scatter around the same few directions (a concept each), as larger
    dictionaries split a smaller one's features: feature i of every size belongs to concept i % CONCEPTS."""
    centres = torch.nn.functional.normalize(torch.randn(CONCEPTS, D_IN, generator=torch.Generator().manual_seed(0)),
                                            dim=1)
    family = {}
    for n in sizes:
        sae = saekit.SAE.create("relu", D_IN, n, seed=n)
        noise = torch.randn(n, D_IN, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            sae.W_dec.copy_(centres[torch.arange(n) % CONCEPTS] + 0.04 * noise)
        family[f"A-relu-{n}"] = sae
    return family


def test_joint_map_puts_each_feature_among_its_relatives_in_the_other_dictionaries():
    family = _split_family((48, 96, 192))
    hover = {"A-relu-48": [f"a1 {i}" for i in range(48)]}  # stores for some sizes only
    table = M.feature_map(family, hover=hover, config=JOINT)
    assert table.groupby("dictionary").size().to_dict() == {"A-relu-48": 48, "A-relu-96": 96, "A-relu-192": 192}
    assert (table.groupby("dictionary")["size"].first() == table.groupby("dictionary").size()).all()
    assert table["hover"].iloc[5] == "a1 5" and set(table["hover"].iloc[48:]) == {""}
    concept = table["feature"].to_numpy() % CONCEPTS
    xy, names = table[["x", "y"]].to_numpy(), table["dictionary"].to_numpy()
    # one joint embedding: a feature's nearest point of another dictionary is one of its own concept
    # (separate UMAPs per dictionary would put the concepts anywhere relative to each other)
    for name in family:
        mine, others = names == name, names != name
        gaps = np.linalg.norm(xy[mine][:, None] - xy[others][None], axis=2)
        nearest = concept[others][gaps.argmin(axis=1)]
        assert (nearest == concept[mine]).mean() > 0.95, name
    # clusters on the map itself: one concept each, holding features of every size
    clustered = table.assign(concept=concept)[table.cluster >= 0]
    assert len(clustered) > 0.8 * len(table)
    assert (clustered.groupby("cluster")["concept"].nunique() == 1).all()
    assert clustered["concept"].nunique() == CONCEPTS
    assert (clustered.groupby("concept")["dictionary"].nunique() == 3).all()
    again = M.feature_map(family, hover=hover, config=JOINT)
    pd.testing.assert_frame_equal(again, table)  # seeded and exact: the same map every run


def test_joint_map_names_take_a1_and_every_larger_else_its_smaller_neighbours():
    full = ["A-relu-512", "A-relu-1024", "A-relu-2048", "A-relu-4096", "A-relu-8192", "A-relu-16384"]
    names, why = M.joint_map_names(full, "A-relu-4096")
    assert names == ["A-relu-4096", "A-relu-8192", "A-relu-16384"] and "larger" in why
    names, why = M.joint_map_names(full[:4], "A-relu-4096")
    assert names == full[:4] and "smaller neighbours" in why
    assert M.joint_map_names(["A-relu-4096"], "A-relu-4096")[0] == ["A-relu-4096"]
    with pytest.raises(ValueError, match="not in the family"):
        M.joint_map_names(full, "B-relu-4096")


def test_exact_neighbours_and_the_projection_keep_cosines():
    rng = np.random.default_rng(0)
    points = (rng.normal(size=(300, 5)) @ rng.normal(size=(5, 40))).astype(np.float32)  # rank 5 in 40-D
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    cosine = unit @ unit.T
    index, distance = M.nearest_neighbours(points, 7, "cosine", block=64)
    expected = np.argsort(-cosine, axis=1, kind="stable")[:, :7]
    assert (index[:, 0] == np.arange(300)).all() and np.allclose(distance[:, 0], 0, atol=1e-5)
    np.testing.assert_allclose(distance, 1 - np.take_along_axis(cosine, expected, 1), atol=1e-5)
    gaps = np.linalg.norm(points[:, None] - points[None], axis=2)
    _, euclid = M.nearest_neighbours(points, 4, "euclidean", block=100)
    np.testing.assert_allclose(euclid, np.sort(gaps, axis=1)[:, :4], rtol=1e-3, atol=1e-3)
    projected = M.top_directions(points, 5)
    assert projected.shape == (300, 5)
    kept = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    np.testing.assert_allclose(kept @ kept.T, cosine, atol=1e-4)  # rank 5: five directions keep every cosine
    assert np.array_equal(M.top_directions(points, 64), points)  # no fewer dimensions asked: unchanged
    with pytest.raises(ValueError, match="exact neighbours"):
        M.nearest_neighbours(points, 3, "manhattan")
