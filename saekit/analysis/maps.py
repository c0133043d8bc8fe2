"""Feature maps: UMAP of decoder directions, for one dictionary or several sizes in one map.

The paper's settings: cosine metric, 15 neighbours, min_dist 0.05. Several dictionaries are
embedded together (their decoder rows stacked), so features of different sizes that point the
same way land near each other. Clusters come from HDBSCAN on a separate 10-D UMAP (min_dist 0,
as UMAP's docs advise for clustering). umap-learn compiles numba code on its first call, which
takes a while; everything is seeded (`random_state`), which also makes UMAP single-threaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor


@dataclass(frozen=True)
class MapConfig:
    """UMAP and HDBSCAN settings of a feature map."""

    n_neighbors: int = 15  # UMAP neighbourhood size
    min_dist: float = 0.05  # UMAP minimum distance in the 2-D map
    metric: str = "cosine"  # distance between decoder directions
    seed: int = 0  # random_state of both UMAPs
    cluster_dims: int = 10  # dimensions of the UMAP that HDBSCAN clusters
    min_cluster_size: int = 5  # HDBSCAN's smallest cluster

    def __post_init__(self) -> None:
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be at least 2, got {self.n_neighbors}")
        if not 0 <= self.min_dist <= 1:
            raise ValueError(f"min_dist must be within [0, 1], got {self.min_dist}")
        if self.cluster_dims < 2 or self.min_cluster_size < 2:
            raise ValueError("cluster_dims and min_cluster_size must be at least 2")


def decoder_directions(dictionaries: Mapping[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
    """Stacked unit-norm decoder rows [n_total, d] and one row per feature: dictionary, size, feature."""
    blocks, frames = [], []
    for name, item in dictionaries.items():
        W = item if isinstance(item, Tensor) else item.W_dec
        W = torch.nn.functional.normalize(W.detach().float().cpu(), dim=1).numpy()
        blocks.append(W)
        frames.append(pd.DataFrame({"dictionary": name, "size": W.shape[0], "feature": np.arange(W.shape[0])}))
    if not blocks:
        raise ValueError("pass at least one dictionary (name → SAE or decoder matrix)")
    return np.concatenate(blocks), pd.concat(frames, ignore_index=True)


def umap_embedding(points: np.ndarray, n_components: int, min_dist: float, config: MapConfig) -> np.ndarray:
    """A seeded UMAP of `points` [n, d] into [n, n_components]."""
    try:
        import umap
    except ImportError as error:
        raise ImportError("feature maps need umap-learn: pip install 'saekit[notebooks]'") from error
    n_neighbors = min(config.n_neighbors, len(points) - 1)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=config.metric,
                        n_components=n_components, random_state=config.seed, n_jobs=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(n_jobs|random_state|spectral|disconnected).*")
        return reducer.fit_transform(points)


def cluster(points: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """HDBSCAN labels [n] (-1 = noise), from scikit-learn."""
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError as error:
        raise ImportError("clustering feature maps needs scikit-learn ≥ 1.3 (for HDBSCAN)") from error
    return HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit_predict(points)


def feature_map(
    dictionaries: Mapping[str, Any],
    *,
    hover: Mapping[str, Sequence[str]] | None = None,
    clusters: bool = True,
    config: MapConfig = MapConfig(),
) -> pd.DataFrame:
    """One UMAP map of the decoder directions of all `dictionaries` (name → SAE or W_dec [n, d]).

    Columns: dictionary, size, feature, x, y, hover (text per feature from `hover`, e.g. top
    tokens; "" when not given), cluster (HDBSCAN label on a 10-D UMAP; -1 = noise) when `clusters`.
    """
    points, table = decoder_directions(dictionaries)
    xy = umap_embedding(points, 2, config.min_dist, config)
    table["x"], table["y"] = xy[:, 0], xy[:, 1]
    table["hover"] = _hover_column(table, hover or {})
    if clusters:
        dims = min(config.cluster_dims, len(points) - 2)
        table["cluster"] = cluster(umap_embedding(points, dims, 0.0, config), config.min_cluster_size)
    return table


def _hover_column(table: pd.DataFrame, hover: Mapping[str, Sequence[str]]) -> list[str]:
    texts = []
    for name, feature in zip(table["dictionary"], table["feature"]):
        labels = hover.get(name)
        texts.append(str(labels[feature]) if labels is not None else "")
    return texts


def hover_labels(store: Any, n_tokens: int = 5) -> list[str]:
    """Per feature of a FeatureStore: its top-example tokens and top boosted tokens, for map hovers."""
    current = store.token_ids.reshape(-1)[store.top["token_index"].to_numpy()]
    top = store.top.assign(token=[store.vocab[i] for i in current])
    examples = top.groupby("feature")["token"].agg(lambda t: list(dict.fromkeys(t))[:n_tokens])
    boosted = store.logits[store.logits.direction == "boost"].groupby("feature")["token"].agg(
        lambda t: list(t)[:n_tokens])
    labels = []
    for feature in range(store.n_features):
        ex = examples.get(feature, [])
        up = boosted.get(feature, [])
        labels.append(f"fires on: {' | '.join(map(repr, ex))}; boosts: {' | '.join(map(repr, up))}")
    return labels
