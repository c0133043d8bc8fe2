"""Model diffing with a crosscoder (Lindsey et al., 2024): which features each model has, read off the decoders.

A crosscoder feature i writes W_dec_i^m into each model m. Its relative decoder norm between two models,

    r_i = ‖W_dec_i^B‖ / (‖W_dec_i^A‖ + ‖W_dec_i^B‖)

is 0 for a feature only A uses, 1 for one only B uses and about ½ for a shared one; the cosine between a shared
feature's two decoder blocks says whether it does the same thing in both. `compare_with_matching` sets this against
the paper's answer to the same question (best-match activation correlation between two separately trained SAEs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saekit.saes.dictionary import Dictionary

EXCLUSIVE = 0.1
"""Relative norms within this of 0 or 1 mark a feature as one model's only (the rest are shared)."""


def decoder_blocks(crosscoder: Dictionary) -> Tensor:
    """[d_sae, n_models, d] each feature's decoder direction in each model."""
    if crosscoder.n_models < 2:
        raise ValueError(f"a crosscoder reads several models; this dictionary reads {crosscoder.n_models}")
    return crosscoder.W_dec.detach().float().view(crosscoder.d_sae, crosscoder.n_models, -1)


def relative_norms(crosscoder: Dictionary, models: Sequence[str] = ("A", "B"), first: int = 0, second: int = 1,
                   exclusive: float = EXCLUSIVE) -> pd.DataFrame:
    """Per feature: its decoder norm in each model (`norm_<name>`), the relative norm of model `second` against
    model `first` and the feature's kind: "<first> only", "shared" or "<second> only" (dead decoders: NaN, "none").
    """
    blocks = decoder_blocks(crosscoder)
    if len(models) != crosscoder.n_models:
        raise ValueError(f"name each of the crosscoder's {crosscoder.n_models} models (got {list(models)})")
    norms = blocks.norm(dim=2)  # [d_sae, n_models]
    pair = norms[:, first] + norms[:, second]
    relative = torch.where(pair > 0, norms[:, second] / pair.clamp_min(1e-30), torch.nan).numpy()
    kind = np.select([np.isnan(relative), relative <= exclusive, relative >= 1 - exclusive],
                     ["none", f"{models[first]} only", f"{models[second]} only"], "shared")
    table = pd.DataFrame({"feature": np.arange(crosscoder.d_sae)})
    for m, name in enumerate(models):
        table[f"norm_{name}"] = norms[:, m].numpy()
    table["relative_norm"] = relative
    table["kind"] = kind
    return table


def relative_norm_histogram(table: pd.DataFrame, bins: int = 40) -> pd.DataFrame:
    """Histogram data of the relative norms over [0, 1]: bin_start, bin_end, count (the paper's figure)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(table["relative_norm"].dropna().to_numpy(), bins=edges)
    return pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:], "count": counts})


def decoder_cosines(crosscoder: Dictionary, first: int = 0, second: int = 1) -> Tensor:
    """[d_sae] cosine between each feature's decoder directions in two models (NaN where either is zero)."""
    blocks = decoder_blocks(crosscoder)
    a, b = blocks[:, first], blocks[:, second]
    norms = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(norms > 0, (a * b).sum(1) / norms.clamp_min(1e-30), torch.nan)


def nearest_decoder_features(directions: Tensor, dictionary: Dictionary) -> tuple[Tensor, Tensor]:
    """For each row of directions [n, d]: the dictionary feature whose decoder row is closest in cosine, and that
    cosine; both [n]."""
    W = dictionary.W_dec.detach().float()
    sims = torch.nn.functional.normalize(directions, dim=1) @ torch.nn.functional.normalize(W, dim=1).T
    best = sims.max(dim=1)
    return best.indices, best.values


def compare_with_matching(crosscoder: Dictionary, sae_a: Dictionary, matches_a: pd.DataFrame,
                          models: Sequence[str] = ("A", "B"), exclusive: float = EXCLUSIVE) -> pd.DataFrame:
    """Each crosscoder feature beside the paper's correlation matching: its model-A decoder block's nearest feature
    of A's own SAE (by decoder cosine) and that SAE feature's best-match correlation with B's SAE (`matches_a`, the
    `features` table of `best_match_tables`). Shared crosscoder features should land on SAE features that B's SAE
    also learned (high correlation); A-only ones on features it did not.

    Columns: feature, relative_norm, kind, sae_feature, decoder_cosine, best_match_correlation."""
    table = relative_norms(crosscoder, models, exclusive=exclusive)[["feature", "relative_norm", "kind"]]
    blocks = decoder_blocks(crosscoder)[:, 0]
    if blocks.shape[1] != sae_a.d_out:
        raise ValueError(f"the crosscoder writes {blocks.shape[1]} units per model; A's SAE writes {sae_a.d_out}: "
                         "compare dictionaries of the same site")
    nearest, cosine = nearest_decoder_features(blocks, sae_a)
    correlation = matches_a.set_index("unit")["correlation"]
    table["sae_feature"] = nearest.numpy()
    table["decoder_cosine"] = cosine.numpy()
    table["best_match_correlation"] = correlation.reindex(nearest.numpy()).to_numpy()
    return table


def matching_by_kind(comparison: pd.DataFrame) -> pd.DataFrame:
    """Median best-match correlation and decoder cosine of the nearest SAE feature, per crosscoder kind."""
    grouped = comparison.groupby("kind")
    return pd.DataFrame({"n_features": grouped.size(),
                         "median_best_match_correlation": grouped["best_match_correlation"].median(),
                         "median_decoder_cosine": grouped["decoder_cosine"].median()}).reset_index()
