"""Specificity: how well a unit's activations track a proxy computed without the model (the paper's base64, Arabic,
DNA... plots: features are more specific than neurons).

For every unit and activation level t, with P the tokens where the proxy holds:

    precision(t) = P(proxy | act ≥ t)      recall(t) = P(act ≥ t | proxy)

at the paper's levels, fractions 0, 1/n, ..., (n−1)/n of the unit's max (level 0: the unit fires, act > 0). A unit's
summary is its best F1 over the levels (2PR/(P+R)): the claim "this unit tracks the proxy" needs both directions, the
proxy holding where the unit fires and the unit firing where the proxy holds, and F1 at one level rewards exactly
that. AUROC was not taken: on sparse units almost every token ties at 0, and it rewards ranking within the weak
firings that the paper's plots leave aside.

One streaming pass (`find_tracking_units`) ranks every feature and neuron: per unit, fine histograms of its firing
activations on tokens where the proxy holds and where it does not, over [0, 2^e) with e growing as the max does (bins
merge exactly, `saekit.analysis.reservoirs.range_growth`). A level's threshold is cut at the fine-bin edge nearest to
its fraction of the max (within max / (n_bins / 2)); the tables give the threshold used, and counts at it are exact.
`unit_activations` keeps chosen units' per-token activations with the tokens they sit on, for the figures.

    table = find_tracking_units(model, text, proxies.base64(), sae)   # every feature and neuron, best first
    best_per_basis(table)                                              # the best feature beside the best neuron
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from saekit.activations.reading import DEFAULT_READ_TOKENS, Reading, open_reading, reading_activations
from saekit.analysis.encoding import encode, fired
from saekit.analysis.proxies import Proxy, proxy_values
from saekit.analysis.reservoirs import merge_bins, range_growth
from saekit.analysis.token_text import WindowTexts
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary, Neurons

MAX_KEPT_VALUES = 64_000_000
"""Most activations `unit_activations` keeps (tokens × units, 256 MB of float32)."""


@dataclass(frozen=True)
class TrackingConfig:
    """Activation levels and histogram resolution of the tracking analysis."""

    n_levels: int = 11  # levels at fractions 0, 1/n, ..., (n − 1)/n of each unit's max (the paper's 11 intervals)
    n_bins: int = 512  # fine bins per unit; a power of two ≥ 8 · n_levels (thresholds within max / (n_bins / 2))
    batch_size: int = 32  # windows per model forward

    def __post_init__(self) -> None:
        for name in ("n_levels", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"TrackingConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_bins < 8 * self.n_levels or self.n_bins & (self.n_bins - 1):
            raise InputError(f"TrackingConfig.n_bins must be a power of two ≥ 8 · n_levels = {8 * self.n_levels} "
                             f"(got {self.n_bins}); e.g. n_bins=512")


# --- counting -------------------------------------------------------------------------------------


class LevelCounts:
    """Per unit, fine histograms of its firing activations where the proxy does not hold (row 0) and holds (row 1),
    fed batch by batch; the tracking curves are read from them at the end."""

    def __init__(self, n_units: int, n_bins: int) -> None:
        self.n_units, self.n_bins, self.log2_bins = n_units, n_bins, int(math.log2(n_bins))
        self.exponent = torch.zeros(n_units, dtype=torch.long)  # max < 2^exponent, once seen
        self.seen = torch.zeros(n_units, dtype=torch.bool)
        self.max_values = torch.zeros(n_units)
        self.counts = torch.zeros(n_units, 2, n_bins, dtype=torch.long)  # [units, proxy holds, bins]
        self.n_tokens = 0
        self.n_proxy = 0

    def update(self, f: Tensor, holds: Tensor) -> None:
        """f [tokens, units]: activations of a batch's tokens; holds [tokens] bool: where the proxy holds."""
        codes, values = fired(f)
        holds = torch.as_tensor(holds, dtype=torch.bool)
        self.n_tokens += f.shape[0]
        self.n_proxy += int(holds.sum())
        if values.numel() == 0:
            return
        growth = range_growth(self.exponent, self.seen, codes.cols, values)
        for shift in growth.shifts.unique().tolist():
            units = growth.units[growth.shifts == shift]
            self.counts[units] = merge_bins(self.counts[units], int(shift))
        self.exponent, self.seen = growth.exponent, growth.seen
        self.max_values.scatter_reduce_(0, codes.cols, values.float(), "amax")
        bins = torch.ldexp(values.float(), self.log2_bins - self.exponent[codes.cols]).floor().long()
        bins.clamp_(0, self.n_bins - 1)
        index = (codes.cols * 2 + holds[codes.rows].long()) * self.n_bins + bins
        self.counts.view(-1).index_add_(0, index, torch.ones_like(index))

    def curves(self, n_levels: int, units: ArrayLike | None = None) -> pd.DataFrame:
        """Precision, recall and F1 of every unit at each level (see the module doc); `units` names the columns
        counted (default 0..n−1). Columns: unit, level, fraction, threshold, n_above, n_proxy_above, precision,
        recall, f1. A unit that never fired has NaN thresholds and precision, recall 0."""
        width = torch.ldexp(torch.ones(self.n_units), self.exponent - self.log2_bins)
        fractions = torch.arange(n_levels, dtype=torch.float64) / n_levels
        top_bin = (self.max_values.double() / width.double()).floor().clamp(max=self.n_bins - 1)  # the max's bin
        edges = (fractions[None, :] * self.max_values.double()[:, None] / width.double()[:, None]).round()
        edges = torch.minimum(edges, top_bin[:, None]).long()  # [units, levels]
        above = self.counts.flip(-1).cumsum(-1).flip(-1)  # [units, 2, bins]: counts at or above each bin
        n_pos = above[:, 1].gather(1, edges)
        n_above = n_pos + above[:, 0].gather(1, edges)
        threshold = (edges.double() * width.double()[:, None]).where(self.seen[:, None], torch.nan)
        n_pos, n_above = n_pos.numpy().astype(np.int64), n_above.numpy().astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(n_above > 0, n_pos / n_above, np.nan)
            recall = n_pos / self.n_proxy if self.n_proxy else np.full(n_pos.shape, np.nan)
            f1 = np.where(n_pos > 0, 2 * precision * recall / (precision + recall), 0.0)
        f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
        names = np.arange(self.n_units) if units is None else np.asarray(units)
        return pd.DataFrame({
            "unit": np.repeat(names, n_levels), "level": np.tile(np.arange(n_levels), self.n_units),
            "fraction": np.tile(fractions.numpy(), self.n_units), "threshold": threshold.numpy().reshape(-1),
            "n_above": n_above.reshape(-1), "n_proxy_above": n_pos.reshape(-1), "precision": precision.reshape(-1),
            "recall": recall.reshape(-1), "f1": f1.reshape(-1),
        })


def tracking_curves(acts: ArrayLike | Tensor, holds: ArrayLike, config: TrackingConfig = TrackingConfig(),
                    units: ArrayLike | None = None) -> pd.DataFrame:
    """Precision, recall and F1 at each level of every unit (columns of acts [tokens, units]) against where the
    proxy holds (holds [tokens] bool; threshold a proxy's values with `Proxy.holds`); see `LevelCounts.curves`."""
    acts = torch.as_tensor(np.asarray(acts) if not isinstance(acts, Tensor) else acts).float()
    if acts.ndim == 1:
        acts = acts[:, None]
    holds = torch.as_tensor(np.asarray(holds)).reshape(-1)
    if holds.dtype != torch.bool:
        raise InputError("holds must be a boolean array (where the proxy holds): threshold a proxy's values with "
                         "proxy.holds(values)")
    if holds.shape[0] != acts.shape[0]:
        raise InputError(f"{acts.shape[0]} tokens of activations and {holds.shape[0]} proxy values: pass one value "
                         "per token")
    counts = LevelCounts(acts.shape[1], config.n_bins)
    counts.update(acts, holds)
    return counts.curves(config.n_levels, units)


def best_levels(curves: pd.DataFrame) -> pd.DataFrame:
    """Per unit, its level of best F1 (ties: the lowest level) with precision and recall there, and at level 0 (where
    it fires at all). Columns: unit, f1, level, fraction, threshold, precision, recall, n_above, n_fires,
    firing_precision, firing_recall; in unit order (NaN f1: the unit never fired)."""
    ordered = curves.sort_values(["unit", "f1", "level"], ascending=[True, False, True], na_position="last")
    best = ordered.drop_duplicates("unit").set_index("unit")
    firing = curves[curves["level"] == 0].set_index("unit")
    table = best[["f1", "level", "fraction", "threshold", "precision", "recall", "n_above"]].assign(
        n_fires=firing["n_above"], firing_precision=firing["precision"], firing_recall=firing["recall"])
    return table.sort_index().reset_index()


# --- reading a model ------------------------------------------------------------------------------


def _open(model: Any, text: Any, dictionary: Dictionary | None,
          settings: dict[str, Any]) -> tuple[Reading, WindowTexts]:
    """The reading (as `build_feature_store` opens it) and its windows' text, for the proxies."""
    reading = open_reading(model, text, dictionary if dictionary is not None else Neurons(1), **settings)
    if reading.tokenizer is None:
        raise InputError("the model has no tokenizer, and proxies read the tokens' text: pass tokenizer=...")
    return reading, WindowTexts.of(reading.windows, reading.tokenizer)


@torch.no_grad()
def find_tracking_units(
    model: Any,
    text: Any,
    proxy: Proxy,
    dictionary: Dictionary | None = None,
    *,
    neurons: bool = True,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_READ_TOKENS,
    exclude_special_tokens: bool | None = None,
    tokenizer: Any = None,
    config: TrackingConfig = TrackingConfig(),
    progress: bool = True,
) -> pd.DataFrame:
    """The units that track `proxy` best, best first: every feature of `dictionary` and (with `neurons`) every
    neuron where it reads, from one pass over `text` (any form `open_reading` takes; hook and the rest default to the
    dictionary's provenance, as for `build_feature_store`).

    Columns: rank, basis ("features"/"neurons"), unit, f1 (the best over the levels), level, fraction, threshold,
    precision, recall, n_above (at that level), n_fires, density, firing_precision, firing_recall (where the unit
    fires at all). `attrs` holds proxy, n_tokens and n_proxy_tokens. The best unit of each basis:
    `best_per_basis(table)`."""
    if dictionary is None and not neurons:
        raise InputError("nothing to rank: pass a dictionary, or neurons=True")
    settings = dict(hook=hook, side=side, context_len=context_len, max_tokens=max_tokens,
                    exclude_special_tokens=exclude_special_tokens, tokenizer=tokenizer)
    reading, texts = _open(model, text, dictionary, settings)
    holds = torch.from_numpy(proxy.holds(proxy_values(proxy, texts)))
    counts: dict[str, LevelCounts] = {}
    for chunk in reading_activations(reading, config.batch_size, progress, desc=f"tracking {proxy.name}"):
        for basis, f in _bases(chunk.acts, dictionary, neurons):
            if basis not in counts:
                counts[basis] = LevelCounts(f.shape[-1], config.n_bins)
            counts[basis].update(f, holds[chunk.token_index])
    if not counts:
        raise InputError("the text yields no tokens to read (all padded or special); pass more text")
    tables = []
    for basis, basis_counts in counts.items():
        best = best_levels(basis_counts.curves(config.n_levels))
        tables.append(best.assign(basis=basis, density=best["n_fires"] / basis_counts.n_tokens))
    table = pd.concat(tables, ignore_index=True)
    table = table.sort_values(["f1", "basis", "unit"], ascending=[False, True, True], na_position="last",
                              ignore_index=True)
    table.insert(0, "rank", np.arange(len(table)))
    columns = ["rank", "basis", "unit", "f1", "level", "fraction", "threshold", "precision", "recall", "n_above",
               "n_fires", "density", "firing_precision", "firing_recall"]
    table = table[columns]
    first = next(iter(counts.values()))
    table.attrs.update(proxy=proxy.name, n_tokens=first.n_tokens, n_proxy_tokens=first.n_proxy)
    return table


def _bases(acts: Tensor, dictionary: Dictionary | None, neurons: bool) -> list[tuple[str, Tensor]]:
    """(basis, its activations [tokens, units]) of a batch: the dictionary's features, then the neurons."""
    found = [("features", encode(dictionary, acts))] if dictionary is not None else []
    return found + ([("neurons", acts)] if neurons else [])


def best_per_basis(table: pd.DataFrame) -> pd.DataFrame:
    """The first row of each basis of a `find_tracking_units` table: the best feature and the best neuron."""
    return table.groupby("basis", sort=False).head(1).reset_index(drop=True)


@dataclass(frozen=True)
class UnitActivations:
    """Chosen units' activations on every token read (padding and special tokens dropped), with the windows and
    their text, so proxies can be evaluated on the same tokens."""

    basis: str  # "features" or "neurons"
    units: np.ndarray  # [k] the units kept
    values: np.ndarray  # [tokens, k] float32 activations
    token_index: np.ndarray  # [tokens] int64 flat indices (window · context_len + position)
    texts: WindowTexts  # the windows read, decoded

    def column(self, unit: int) -> np.ndarray:
        """[tokens] the activations of one kept unit."""
        where = np.flatnonzero(self.units == unit)
        if where.size == 0:
            raise InputError(f"unit {unit} was not kept; these activations hold units {self.units.tolist()}")
        return self.values[:, where[0]]

    def proxy(self, proxy: Proxy) -> np.ndarray:
        """[tokens] the proxy's value on each token."""
        return proxy_values(proxy, self.texts)[self.token_index]

    @cached_property
    def tokens(self) -> list[str]:
        """Each token's text (the characters it overlaps)."""
        return self.texts.tokens(self.token_index)


@torch.no_grad()
def unit_activations(
    model: Any,
    text: Any,
    dictionary: Dictionary | None = None,
    units: Sequence[int] | None = None,
    *,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_READ_TOKENS,
    exclude_special_tokens: bool | None = None,
    tokenizer: Any = None,
    batch_size: int = 32,
    progress: bool = True,
) -> UnitActivations:
    """The activations of `units` of `dictionary` (None: the neurons where `hook` reads; units None: all of them)
    on every token of `text`, read as `find_tracking_units` reads; only those units are kept."""
    settings = dict(hook=hook, side=side, context_len=context_len, max_tokens=max_tokens,
                    exclude_special_tokens=exclude_special_tokens, tokenizer=tokenizer)
    reading, texts = _open(model, text, dictionary, settings)
    kept, columns, values, index = np.zeros(0, dtype=np.int64), torch.zeros(0, dtype=torch.long), [], []
    for chunk in reading_activations(reading, batch_size, progress, desc="unit activations"):
        f = chunk.acts if dictionary is None else encode(dictionary, chunk.acts)
        if not values:  # the first batch tells the units' width
            kept = np.arange(f.shape[-1]) if units is None else np.asarray(units, dtype=np.int64).reshape(-1)
            _check_units(kept, f.shape[-1], reading.windows.n_tokens)
            columns = torch.from_numpy(kept)
        values.append(f[:, columns].float().cpu().numpy())
        index.append(chunk.token_index.numpy())
    if not values:
        raise InputError("the text yields no tokens to read (all padded or special); pass more text")
    return UnitActivations("features" if dictionary is not None else "neurons", kept,
                           np.concatenate(values), np.concatenate(index).astype(np.int64), texts)


def _check_units(units: np.ndarray, width: int, n_tokens: int) -> None:
    if units.size and (units.min() < 0 or units.max() >= width):
        raise InputError(f"units must lie in [0, {width}); got {units.min()}..{units.max()}")
    if units.size * n_tokens > MAX_KEPT_VALUES:
        raise InputError(f"{units.size} units on {n_tokens:,} tokens is more than {MAX_KEPT_VALUES:,} activations to "
                         "keep: pass the units you want (units=[...]), or fewer tokens (max_tokens=...)")


# --- tables for the figures -----------------------------------------------------------------------


def _buckets(values: np.ndarray, buckets: int | Sequence[float]) -> np.ndarray:
    """Bucket edges: given, or `buckets` even buckets over [0, 1] for values inside it, else over their range."""
    if not isinstance(buckets, int):
        edges = np.asarray(buckets, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise InputError("buckets must be an int or increasing edges, e.g. [0, 0.5, 1]")
        return edges
    low, high = (0.0, 1.0) if values.size == 0 or (values.min() >= 0 and values.max() <= 1) else \
        (float(values.min()), float(values.max()))
    return np.linspace(low, high if high > low else low + 1.0, buckets + 1)


def proxy_histogram(activations: ArrayLike, values: ArrayLike, tokens: Sequence[str] | None = None, *,
                    bins: int = 24, buckets: int | Sequence[float] = 5, n_examples: int = 3) -> pd.DataFrame:
    """The paper's stacked histogram: a unit's firing activations (activations [tokens] > 0) in `bins` even bins of
    (0, max], each bin's tokens counted by proxy-value bucket (values [tokens]; values outside the edges go to the
    end buckets). Columns: bin, bin_start, bin_end, bucket, bucket_start, bucket_end, count, examples (the cell's
    most common token texts, from `tokens`, raw)."""
    acts, values = np.asarray(activations, dtype=np.float64).reshape(-1), np.asarray(values, dtype=np.float64)
    if acts.shape != values.reshape(-1).shape:
        raise InputError(f"{acts.size} activations and {values.size} proxy values: pass one value per token")
    firing = acts > 0
    acts, values = acts[firing], values.reshape(-1)[firing]
    edges = _buckets(values, buckets)
    top = float(acts.max()) if acts.size else 1.0
    bin_of = np.minimum((acts / top * bins).astype(np.int64), bins - 1)
    bucket_of = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    cell = pd.DataFrame({"bin": bin_of, "bucket": bucket_of})
    if tokens is not None:
        cell["token"] = np.asarray(list(tokens), dtype=object)[firing]
    grid = pd.MultiIndex.from_product([range(bins), range(len(edges) - 1)], names=["bin", "bucket"])
    table = cell.groupby(["bin", "bucket"]).size().rename("count").reindex(grid, fill_value=0).reset_index()
    examples: dict[tuple[int, int], list[str]] = {}
    if tokens is not None:
        counts = cell.groupby(["bin", "bucket", "token"]).size().rename("n").reset_index()
        counts = counts.sort_values(["bin", "bucket", "n", "token"], ascending=[True, True, False, True])
        for key, part in counts.groupby(["bin", "bucket"]):
            examples[key] = part["token"].head(n_examples).tolist()
    width = top / bins
    table["bin_start"], table["bin_end"] = table["bin"] * width, (table["bin"] + 1) * width
    table["bucket_start"], table["bucket_end"] = edges[table["bucket"]], edges[table["bucket"] + 1]
    table["examples"] = [examples.get((b, k), []) for b, k in zip(table["bin"], table["bucket"])]
    return table[["bin", "bin_start", "bin_end", "bucket", "bucket_start", "bucket_end", "count", "examples"]]


def proxy_distribution(activations: ArrayLike, values: ArrayLike, *, bins: int = 20, firing_threshold: float = 0.0,
                       value_range: tuple[float, float] | None = None) -> pd.DataFrame:
    """The proxy's distribution on the tokens where a unit fires (activation > firing_threshold) and where it does
    not, over common even bins of `value_range` (default: the values' range). Columns: firing (bool), bin_start,
    bin_end, count, fraction (of that group's tokens)."""
    acts, values = np.asarray(activations, dtype=np.float64).reshape(-1), np.asarray(values, dtype=np.float64)
    values = values.reshape(-1)
    if acts.shape != values.shape:
        raise InputError(f"{acts.size} activations and {values.size} proxy values: pass one value per token")
    low, high = value_range or (float(values.min()), float(values.max()))
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    rows = []
    for firing in (True, False):
        group = values[(acts > firing_threshold) == firing]
        counts, _ = np.histogram(np.clip(group, edges[0], edges[-1]), edges)
        rows.append(pd.DataFrame({"firing": firing, "bin_start": edges[:-1], "bin_end": edges[1:], "count": counts,
                                  "fraction": counts / max(group.size, 1)}))
    return pd.concat(rows, ignore_index=True)
