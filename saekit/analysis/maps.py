"""Feature maps: UMAP of decoder directions, for one dictionary or several sizes in one map.

The paper's settings: cosine metric, 15 neighbours, min_dist 0.05. Several dictionaries are
embedded together (their unit-norm decoder rows stacked), so features of different sizes that point
the same way land near each other. Clusters come from HDBSCAN, on a separate 10-D UMAP (min_dist 0,
as UMAP's docs advise for clustering) or, for large maps, on the 2-D map itself.

The neighbour graph is computed here, exactly, by blocked matrix products (torch), and handed to
UMAP: no NN-descent, so nothing to compile for it and no approximation. Everything is seeded
(`random_state`, which also makes UMAP's layout single-threaded), so a map is the same on every run.
`JOINT_MAP` holds the settings that draw the paper's joint map (28,672 features) in about a minute.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

EXACT_METRICS = ("cosine", "euclidean")


@dataclass(frozen=True)
class MapConfig:
    """UMAP and HDBSCAN settings of a feature map."""

    n_neighbors: int = 15  # UMAP neighbourhood size
    min_dist: float = 0.05  # UMAP minimum distance in the 2-D map
    metric: str = "cosine"  # distance between decoder directions
    seed: int = 0  # random_state of the UMAPs
    cluster_dims: int = 10  # dimensions of the UMAP that HDBSCAN clusters; 2: the map itself (no second UMAP)
    min_cluster_size: int = 5  # HDBSCAN's smallest cluster
    n_epochs: int | None = None  # UMAP's optimisation epochs; None: its default (500 below 10,000 points, else 200)
    init: str = "spectral"  # UMAP's initial layout: "spectral" (of the neighbour graph) or "pca"
    pca_dims: int | None = None  # project onto this many top singular directions first; None: all dimensions

    def __post_init__(self) -> None:
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be at least 2, got {self.n_neighbors}")
        if not 0 <= self.min_dist <= 1:
            raise ValueError(f"min_dist must be within [0, 1], got {self.min_dist}")
        if self.cluster_dims < 2 or self.min_cluster_size < 2:
            raise ValueError("cluster_dims and min_cluster_size must be at least 2")
        if self.n_epochs is not None and self.n_epochs < 1:
            raise ValueError(f"n_epochs must be positive, got {self.n_epochs}")
        if self.pca_dims is not None and self.pca_dims < 2:
            raise ValueError(f"pca_dims must be at least 2, got {self.pca_dims}")
        if self.init not in ("spectral", "pca", "random"):
            raise ValueError(f"init must be 'spectral', 'pca' or 'random', got {self.init!r}")


JOINT_MAP = MapConfig(n_epochs=100, init="pca", pca_dims=50, cluster_dims=2)
"""Settings for the paper's joint map, A/1 and its larger neighbours (4,096 + 8,192 + 16,384 = 28,672 points in
the full demo), to draw it in about a minute on 2 CPU cores.

Measured on 28,672 rows of 512 (the quick demo's four A decoders tiled, copies perturbed to cosine ~0.93) on 2
cores shared with other work (load ~7, this job got half a core): 68 s in a fresh process (33 s of CPU, about
20 s of it numba compiling UMAP; 1 s projection, 16 s kNN, 41 s UMAP, 10 s HDBSCAN), 39 s again in the same
process. The paper's settings (NN-descent kNN, spectral init, 200 epochs, a second 10-D UMAP to cluster) took
over 4 minutes there, stage by stage. Each choice, and what it costs the layout (share of a feature's 15
nearest 512-D neighbours among its 15 nearest on the map; Spearman correlation of map and cosine distance):

- pca_dims 50: keeps 90% of every feature's 15 nearest neighbours (32 dims: 83%, 64: 91%) and makes the exact
  kNN 10× cheaper than in 512-D; the map keeps 0.51 of the 15 neighbours, as a 512-D map does.
- exact kNN (`nearest_neighbours`) instead of NN-descent: no approximation, and none of NN-descent's ~70 s of
  numba compilation in each fresh kernel; `low_memory` only concerns NN-descent, so it does not apply.
- init "pca": the spectral init of this graph (many components) costs 20 s more CPU and orders the map's
  global layout worse (Spearman 0.09 against 0.48).
- n_epochs 100 (UMAP's default here is 200): half the optimisation (8.5 s against 18 s of CPU) for the same
  neighbourhoods (0.52 against 0.53 kept).
- cluster_dims 2: HDBSCAN on the map itself; a second, 10-D UMAP doubled the time.

Deterministic: UMAP is seeded (so single-threaded) and the projection and kNN hold no randomness; two runs give
identical coordinates. Nothing here runs in parallel in a way that changes results.
"""


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


def top_directions(points: np.ndarray, dims: int | None) -> np.ndarray:
    """`points` [n, d] projected onto their top `dims` right-singular directions (uncentred, so inner
    products, hence cosines, are kept as well as `dims` dimensions can); all of `points` when dims ≥ d.

    The directions are the eigenvectors of the d × d Gram matrix, found by LAPACK on one thread: a
    512 × 512 `eigh` takes 0.05 s on one, but 8 s on two BLAS threads competing on a busy machine."""
    x = np.ascontiguousarray(points, dtype=np.float32)
    if dims is None or dims >= x.shape[1]:
        return x
    t = torch.from_numpy(x)
    gram = (t.T @ t).double().numpy()
    with _one_blas_thread():
        _, vectors = np.linalg.eigh(gram)
    top = vectors[:, ::-1][:, :dims]
    top = top * np.where(top[np.abs(top).argmax(axis=0), np.arange(dims)] < 0, -1.0, 1.0)  # a fixed sign per axis
    return (t @ torch.from_numpy(np.ascontiguousarray(top, dtype=np.float32))).numpy()


def _one_blas_thread() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it, BLAS keeps its threads
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def nearest_neighbours(points: np.ndarray, k: int, metric: str = "cosine", block: int = 2048
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every point (itself included, at distance 0): indices [n, k] and
    distances [n, k], nearest first; cosine distance is 1 − cos, euclidean the L2 distance."""
    if metric not in EXACT_METRICS:
        raise ValueError(f"exact neighbours are computed for {EXACT_METRICS}, got {metric!r}")
    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    norms = (x * x).sum(dim=1)
    k = min(k, len(x))
    indices, distances = np.empty((len(x), k), np.int64), np.empty((len(x), k), np.float32)
    for start in range(0, len(x), block):
        products = x[start:start + block] @ x.T
        if metric == "cosine":
            value, index = products.topk(k, dim=1)
            distance = (1.0 - value).clamp_(min=0.0)
        else:
            squared = norms[start:start + block, None] + norms[None, :] - 2 * products
            index = squared.topk(k, dim=1, largest=False).indices
            distance = (x[start:start + block, None] - x[index]).norm(dim=2)  # exact, not |a|²+|b|²−2ab
        indices[start:start + block], distances[start:start + block] = index.numpy(), distance.numpy()
    return indices, distances


def umap_embedding(points: np.ndarray, n_components: int, min_dist: float, config: MapConfig,
                   knn: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """A seeded UMAP of `points` [n, d] into [n, n_components], on the neighbour graph `knn` when given."""
    try:
        import umap
    except ImportError as error:
        raise ImportError("feature maps need umap-learn: pip install 'saekit[notebooks]'") from error
    n_neighbors = min(config.n_neighbors, len(points) - 1)
    precomputed = (knn[0][:, :n_neighbors], knn[1][:, :n_neighbors], None) if knn is not None else (None, None, None)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=config.metric,
                        n_components=n_components, random_state=config.seed, n_jobs=1, n_epochs=config.n_epochs,
                        init=config.init, precomputed_knn=precomputed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(n_jobs|random_state|spectral|disconnected|knn_search_index).*")
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
    tokens; "" for a dictionary it does not cover), cluster (HDBSCAN label, -1 = noise) when `clusters`.
    """
    points, table = decoder_directions(dictionaries)
    points = top_directions(points, config.pca_dims)
    n_neighbors = min(config.n_neighbors, len(points) - 1)
    knn = nearest_neighbours(points, n_neighbors, config.metric) if config.metric in EXACT_METRICS else None
    xy = umap_embedding(points, 2, config.min_dist, config, knn)
    table["x"], table["y"] = xy[:, 0], xy[:, 1]
    table["hover"] = _hover_column(table, hover or {})
    if clusters:
        dims = min(config.cluster_dims, len(points) - 2)
        space = xy if dims <= 2 else umap_embedding(points, dims, 0.0, config, knn)
        table["cluster"] = cluster(space, config.min_cluster_size)
    return table


def _hover_column(table: pd.DataFrame, hover: Mapping[str, Sequence[str]]) -> list[str]:
    texts = []
    for name, feature in zip(table["dictionary"], table["feature"]):
        labels = hover.get(name)
        texts.append(str(labels[feature]) if labels is not None else "")
    return texts


def joint_map_names(family: Sequence[str], anchor: str) -> tuple[list[str], str]:
    """The dictionaries of the paper's joint map, from `family` (one model's dictionaries, small → large):
    `anchor` (A/1) and every larger one, as the paper maps A/1 among its larger runs; when none is larger,
    the anchor with its smaller neighbours. Returns the names and, in a sentence, why these."""
    names = list(family)
    if anchor not in names:
        raise ValueError(f"{anchor!r} is not in the family {names}")
    at = names.index(anchor)
    if at < len(names) - 1:
        return names[at:], f"{anchor} and every larger dictionary, as in the paper's map of A/1 among its larger runs"
    if at == 0:
        return [anchor], f"{anchor} alone: there is no other dictionary in its family"
    return names[:at + 1], (f"{anchor} with its smaller neighbours: the family has no dictionary larger than "
                            f"{anchor}")


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
