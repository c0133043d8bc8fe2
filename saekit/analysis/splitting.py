"""Feature splitting: how a feature of a small dictionary splits into several in larger ones.

Dictionaries of several sizes trained on the same model and hook are linked size to size (each to
the next larger one). Two views of a link between feature i (smaller) and j (larger):

- activation cosine: the cosine of their activation vectors over the tokens (equal to the cosine
  over the tokens where either fires, since zeros add nothing), from one streaming pass that shares
  `universality.CoactivationSums`;
- decoder cosine: the cosine of their decoder directions (needs no data).

Each feature of the larger dictionary gets as parent its most similar feature of the smaller one
(by the chosen view) when that similarity reaches a threshold (the paper draws an edge at about
0.4), so the links form trees: a parent in the small dictionary, children in the larger ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saekit.activations.reading import DEFAULT_READ_TOKENS, open_reading, reading_activations
from saekit.analysis.encoding import encode
from saekit.analysis.universality import CoactivationSums, Method
from saekit.saes.dictionary import Dictionary

View = Literal["activation", "decoder"]
DEFAULT_THRESHOLD = 0.4
EDGE_COLUMNS = ["size_from", "feature_from", "size_to", "feature_to", "activation_cosine", "decoder_cosine"]


class Splitting(NamedTuple):
    """Similarities between consecutive dictionary sizes (smallest first)."""

    sizes: tuple[int, ...]  # dictionary sizes, ascending
    activation: list[Tensor]  # [i]: [sizes[i], sizes[i + 1]] activation cosines
    decoder: list[Tensor]  # [i]: [sizes[i], sizes[i + 1]] decoder cosines


def decoder_cosine(W_a: Tensor, W_b: Tensor) -> Tensor:
    """Cosine similarity [n_a, n_b] between decoder rows W_a [n_a, d] and W_b [n_b, d]."""
    a = torch.nn.functional.normalize(W_a.detach().float().cpu(), dim=1)
    b = torch.nn.functional.normalize(W_b.detach().float().cpu(), dim=1)
    return a @ b.T


def by_size(saes: Sequence[Dictionary]) -> list[Any]:
    """The dictionaries sorted by size; sizes must differ (a size names a dictionary in the tables)."""
    ordered = sorted(saes, key=lambda sae: sae.d_sae)
    sizes = [sae.d_sae for sae in ordered]
    if len(ordered) < 2 or len(set(sizes)) != len(sizes):
        raise ValueError(f"pass at least two dictionaries of different sizes (got sizes {sizes})")
    return ordered


def split_similarities(
    model: Any,
    text: Any,
    saes: Sequence[Dictionary],
    *,
    max_tokens: int | None = DEFAULT_READ_TOKENS,
    batch_size: int = 32,
    method: Method = "auto",
    tokenizer: Any = None,
    progress: bool = True,
    **settings: Any,
) -> Splitting:
    """Activation and decoder cosines between consecutive sizes, from one pass over `text`.

    Hook, side and context come from the smallest SAE's provenance unless `settings` give them
    (hook, side, context_len, exclude_special_tokens).
    """
    ordered = by_size(saes)
    reading = open_reading(model, text, ordered[0], max_tokens=max_tokens, tokenizer=tokenizer, **settings)
    sums = [CoactivationSums(a.d_sae, b.d_sae, method) for a, b in zip(ordered, ordered[1:])]
    for chunk in reading_activations(reading, batch_size, progress, desc="splitting"):
        codes = [encode(sae, chunk.acts) for sae in ordered]
        for pair, f_a, f_b in zip(sums, codes, codes[1:]):
            pair.update(f_a, f_b)
    return splitting_from_sums(ordered, sums)


def splitting_from_sums(ordered: Sequence[Any], sums: Sequence[CoactivationSums]) -> Splitting:
    """The Splitting of dictionaries sorted by size, given each consecutive pair's co-activation sums (from any
    pass over the tokens, e.g. one shared with other analyses)."""
    decoders = [decoder_cosine(a.W_dec, b.W_dec) for a, b in zip(ordered, ordered[1:])]
    return Splitting(tuple(sae.d_sae for sae in ordered), [pair.cosine() for pair in sums], decoders)


def split_edges(split: Splitting, threshold: float = DEFAULT_THRESHOLD, link_by: View = "activation") -> pd.DataFrame:
    """Parent → child edges: each feature of a larger size linked to its most similar feature of the
    next smaller size, kept when that similarity (in the `link_by` view) is ≥ `threshold`."""
    if link_by not in ("activation", "decoder"):
        raise ValueError(f"link_by must be 'activation' or 'decoder', got {link_by!r}")
    parts = []
    for level, (act, dec) in enumerate(zip(split.activation, split.decoder)):
        view = act if link_by == "activation" else dec
        best = torch.nan_to_num(view, nan=-float("inf")).max(dim=0)  # over parents, per child
        children = (best.values >= threshold).nonzero(as_tuple=True)[0]
        parents = best.indices[children]
        parts.append(pd.DataFrame({
            "size_from": split.sizes[level], "feature_from": parents.numpy(),
            "size_to": split.sizes[level + 1], "feature_to": children.numpy(),
            "activation_cosine": act[parents, children].numpy(), "decoder_cosine": dec[parents, children].numpy(),
        }))
    return pd.concat(parts, ignore_index=True)[EDGE_COLUMNS]


class _Forest(NamedTuple):
    parent_of: dict[tuple[int, int], Any]  # child node → its edge
    children: dict[tuple[int, int], list[Any]]  # parent node → its edges, most similar first


def _forest(edges: pd.DataFrame) -> _Forest:
    rows = list(edges.itertuples(index=False))
    children: dict[tuple[int, int], list[Any]] = {}
    for r in sorted(rows, key=lambda e: -e.activation_cosine):
        children.setdefault((r.size_from, r.feature_from), []).append(r)
    return _Forest({(r.size_to, r.feature_to): r for r in rows}, children)


def feature_family(edges: pd.DataFrame, size: int, feature: int) -> pd.DataFrame:
    """The tree holding (size, feature): its root in the smallest size it reaches, then every descendant.

    Columns: depth, size, feature, parent_size, parent_feature (NA at the root), activation_cosine,
    decoder_cosine (to the parent), is_query; rows in breadth-first order.
    """
    table = pd.DataFrame(_tree(_forest(edges), (int(size), int(feature))))
    for column in ("size", "feature", "parent_size", "parent_feature"):
        table[column] = pd.array(table[column], dtype="Int64")
    return table


def _tree(forest: _Forest, query: tuple[int, int]) -> list[dict[str, Any]]:
    root = query
    while root in forest.parent_of:
        edge = forest.parent_of[root]
        root = (edge.size_from, edge.feature_from)
    rows = [_node(root, 0, None, root == query)]
    frontier, depth = [root], 0
    while frontier:
        depth += 1
        edges = [edge for node in frontier for edge in forest.children.get(node, [])]
        frontier = [(edge.size_to, edge.feature_to) for edge in edges]
        rows += [_node(child, depth, edge, child == query) for child, edge in zip(frontier, edges)]
    return rows


def _node(node: tuple[int, int], depth: int, edge: Any, is_query: bool) -> dict[str, Any]:
    return {
        "depth": depth, "size": node[0], "feature": node[1],
        "parent_size": None if edge is None else edge.size_from,
        "parent_feature": None if edge is None else edge.feature_from,
        "activation_cosine": np.nan if edge is None else edge.activation_cosine,
        "decoder_cosine": np.nan if edge is None else edge.decoder_cosine,
        "is_query": is_query,
    }


def families(edges: pd.DataFrame, min_sizes: int = 3) -> pd.DataFrame:
    """Roots whose trees span at least `min_sizes` sizes: size, feature, n_descendants, n_sizes."""
    forest = _forest(edges)
    roots = set(zip(edges.size_from, edges.feature_from)) - set(forest.parent_of)
    rows = []
    for root in sorted(roots):
        tree = _tree(forest, root)
        n_sizes = len({row["size"] for row in tree})
        if n_sizes >= min_sizes:
            rows.append({"size": root[0], "feature": root[1], "n_descendants": len(tree) - 1, "n_sizes": n_sizes})
    return pd.DataFrame(rows, columns=["size", "feature", "n_descendants", "n_sizes"])
