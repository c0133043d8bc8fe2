"""An automatic interpretability proxy, to compare features with neurons (pure functions of a FeatureStore).

The paper scores features by how specific they are to a concept. Without human or model raters,
the concept here is a unit's most common token among its top-activating examples, and:

- top_token_share: share of the top examples sitting on that token (1 = all on one token);
- top_token_entropy: entropy (bits) of the tokens under the top examples (0 = one token);
- specificity: estimated share of the unit's whole activation mass on that token, from the
  interval samples (each interval weighted by count × mean sampled activation), so weak firings
  count too, not just the peak;
- log_likelihood_ratio: log(specificity / base rate of the token in the corpus), in nats — the
  paper's log P(token | unit) / P(token) with the single token as the class proxy.

Monosemantic features score high on all of these; polysemantic neurons score low.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MEASURES = ("top_token_share", "top_token_entropy", "specificity", "log_likelihood_ratio")


def token_base_rates(store: Any) -> np.ndarray:
    """[vocab] frequency of each token among the store's real, non-special tokens."""
    mask = np.arange(store.token_ids.shape[1])[None, :] < store.lengths[:, None]
    tokens = store.token_ids[mask].astype(np.int64)
    tokens = tokens[~np.isin(tokens, np.asarray(store.meta.get("special_ids", []), dtype=np.int64))]
    counts = np.bincount(tokens, minlength=len(store.vocab)).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def _with_current_token(store: Any, table: pd.DataFrame) -> pd.DataFrame:
    current = store.token_ids.reshape(-1)[table["token_index"].to_numpy().astype(np.int64)]
    return table.assign(token_id=current.astype(np.int64))


def top_token_stats(store: Any) -> pd.DataFrame:
    """Per unit with top examples: top_token_id, top_token_share, top_token_entropy (bits)."""
    top = _with_current_token(store, store.top)
    counts = top.groupby(["feature", "token_id"]).size().rename("n").reset_index()
    totals = counts.groupby("feature")["n"].sum()
    p = counts["n"] / counts["feature"].map(totals)
    counts["plogp"] = -p * np.log2(p)
    entropy = counts.groupby("feature")["plogp"].sum()
    best = counts.sort_values(["feature", "n", "token_id"], ascending=[True, False, True]).drop_duplicates("feature")
    best = best.set_index("feature")
    return pd.DataFrame({
        "top_token_id": best["token_id"],
        "top_token_share": best["n"] / totals,
        "top_token_entropy": entropy,
    })


def specificity(store: Any, top_token: pd.Series) -> pd.Series:
    """Per unit: the activation-mass-weighted share of its interval samples on `top_token` (by unit)."""
    samples = _with_current_token(store, store.intervals)
    samples = samples[samples["feature"].isin(top_token.index)]
    samples = samples.assign(hit=samples["token_id"].to_numpy() == top_token.loc[samples["feature"]].to_numpy())
    per_interval = samples.groupby(["feature", "interval"]).agg(
        hit=("hit", "mean"), mean_act=("activation", "mean"), count=("interval_count", "first"))
    per_interval["mass"] = per_interval["count"] * per_interval["mean_act"]
    per_interval["hit_mass"] = per_interval["mass"] * per_interval["hit"]
    sums = per_interval.groupby("feature")[["hit_mass", "mass"]].sum()
    return (sums["hit_mass"] / sums["mass"]).rename("specificity")


def unit_measures(store: Any) -> pd.DataFrame:
    """The measures of every unit that fired: feature, density, top_token, and MEASURES."""
    stats = top_token_stats(store)
    spec = specificity(store, stats["top_token_id"])
    base = token_base_rates(store)[stats["top_token_id"].to_numpy()]
    table = stats.join(spec).assign(base_rate=base)
    table["log_likelihood_ratio"] = np.log(table["specificity"].clip(lower=1e-12) / table["base_rate"].clip(1e-12))
    table["top_token"] = [store.vocab[i] for i in table["top_token_id"]]
    table = table.rename_axis("feature").reset_index()
    table["density"] = store.features["density"].to_numpy()[table["feature"].to_numpy()]
    columns = ["feature", "density", "top_token_id", "top_token", "base_rate", *MEASURES]
    return table[columns].sort_values("feature", ignore_index=True)


def compare_bases(stores: dict[str, Any]) -> pd.DataFrame:
    """Median of each measure per store (e.g. {"features": sae_store, "neurons": neuron_store})."""
    rows = []
    for name, store in stores.items():
        measures = unit_measures(store)
        rows.append({"basis": name, "n_units": len(measures), **measures[list(MEASURES)].median().to_dict()})
    return pd.DataFrame(rows)
