"""The feature store: per-feature statistics and examples from ONE streaming pass over a model reading a text.

For every feature (or raw neuron, with `Neurons` as the identity dictionary) the pass records its
density, a histogram of its activations, its top-activating examples, a few examples from each of
the paper's 11 even intervals of [0, max], and its logit effects. Memory stays bounded: a batch's
codes [tokens, d_sae] live only while that batch is processed, and everything kept is O(d_sae).

How the running pieces work (all on the (token, feature) entries where a feature fires, f > 0):

- top examples: per feature the `n_top` largest (value, token) pairs, merged batch by batch; entries
  below a feature's current k-th value are dropped before any sorting (`GroupBest`).
- histogram and interval examples: the max is unknown until the end, so each feature keeps
  `n_bins` fine bins over [0, 2^e), 2^e the smallest power of two above its running max. When the
  max outgrows 2^e, e grows and bins merge in pairs, exactly. Each fine bin keeps a uniform sample
  (the entries with the smallest random keys, "bottom-k" sampling, which merges exactly too). At the
  end the 11 intervals are cut at the fine-bin edges nearest to j·max/11 (so within max/n_bins of
  the paper's boundaries; the store reports the exact edges used) and each interval's sample is the
  smallest-key entries over its fine bins: a uniform sample of the interval.
- examples are stored as flat token indices (window · context_len + position) into the store's
  token array, and their context is cut from it at display time.

Raw neurons can be negative (GELU dips below 0); a neuron counts as firing where it is > 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from saekit.activations import nnsight_api as api
from saekit.activations.reading import (
    DEFAULT_READ_TOKENS,
    Reading,
    open_reading,
    provenance_of,
    read_models,
    reading_activations,
)
from saekit.activations.windows import TokenWindows
from saekit.analysis.encoding import encode, fired
from saekit.analysis.logit_effects import output_weights, token_strings, top_logit_effects
from saekit.analysis.reservoirs import BinnedSamples, GroupBest, IntervalSamples
from saekit.saes.dictionary import Dictionary, Neurons
from saekit.saes.sparse import Codes

STORE_FORMAT = "saekit.feature_store"
STORE_VERSION = 1
_FILES = ("features", "top_examples", "interval_examples", "histograms", "logit_effects", "tokens", "vocab")


# --- the pass -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreConfig:
    """What the feature store keeps per feature and how the pass is batched."""

    n_top: int = 20  # top-activating examples per feature
    n_intervals: int = 11  # even activation intervals over [0, max] (the paper's 11)
    n_per_interval: int = 5  # examples sampled per interval
    n_bins: int = 256  # fine histogram bins per feature; a power of two (see the module doc)
    n_logits: int = 10  # boosted and suppressed tokens per feature
    batch_size: int = 32  # windows per model forward (memory: batch_size · context_len · d_sae floats)
    final_norm: bool = True  # logit effects through the final layer norm's linear part (see logit_effects)
    seed: int = 0  # seed of the interval sampling

    def __post_init__(self) -> None:
        for name in ("n_top", "n_intervals", "n_per_interval", "n_logits", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_bins < 8 * self.n_intervals or self.n_bins & (self.n_bins - 1):
            raise ValueError(
                f"n_bins must be a power of two ≥ 8 · n_intervals = {8 * self.n_intervals} (got {self.n_bins}); "
                "e.g. n_bins=256"
            )


class FeatureStats:
    """Everything the pass accumulates, fed one batch of codes at a time."""

    def __init__(self, n_units: int, config: StoreConfig) -> None:
        self.n_tokens = 0
        self.n_fires = torch.zeros(n_units, dtype=torch.long)
        self.sum = torch.zeros(n_units, dtype=torch.float64)
        self.top = GroupBest(n_units, config.n_top)
        self.binned = BinnedSamples(n_units, config.n_bins, config.n_per_interval, config.seed)

    def update(self, f: Tensor, token_index: Tensor) -> None:
        """f: [tokens, units] activations of the tokens at `token_index` [tokens]."""
        self.add_entries(token_index, *fired(f.float().cpu()))

    def add_entries(self, token_index: Tensor, codes: Codes, values: Tensor) -> None:
        """`update` from the firing entries (`fired(f)`) of the tokens at `token_index` [codes.n_rows]: a shared
        pass finds each dictionary's entries once for several analyses."""
        token = token_index[codes.rows]
        self.n_tokens += codes.n_rows
        self.n_fires += torch.bincount(codes.cols, minlength=self.n_fires.numel())
        self.sum.index_add_(0, codes.cols, values.double())
        self.top.update(codes.cols, -values, values, token)
        self.binned.update(codes, values, token)


def build_feature_store(
    model: Any,
    text: Any = None,
    dictionary: Dictionary | None = None,
    *,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_READ_TOKENS,
    exclude_special_tokens: bool | None = None,
    tokenizer: Any = None,
    config: StoreConfig = StoreConfig(),
    progress: bool = True,
) -> FeatureStore:
    """One pass over `text` through `model` and `dictionary` (an SAE; None: the raw neurons at `hook`; a crosscoder
    with its models as a list, its logit effects read in the first).

    `text`: TokenWindows, a folder, strings or token ids (None: the SAE's training text); hook, side,
    context_len and exclude_special_tokens default to the SAE's provenance.
    """
    probe = dictionary if dictionary is not None else Neurons(1)
    reading = open_reading(model, text, probe, hook=hook, side=side, context_len=context_len, max_tokens=max_tokens,
                           exclude_special_tokens=exclude_special_tokens, tokenizer=tokenizer)
    stats: FeatureStats | None = None
    for chunk in reading_activations(reading, config.batch_size, progress, desc="feature store"):
        if dictionary is None:
            dictionary = Neurons(chunk.acts.shape[-1])
        if stats is None:
            stats = FeatureStats(dictionary.d_sae, config)
        stats.update(encode(dictionary, chunk.acts), chunk.token_index)
    if stats is None:
        raise ValueError("the text yields no tokens to read (all padded or special); pass more text")
    return assemble_store(reading, dictionary, stats, config)


def assemble_store(reading: Reading, dictionary: Dictionary, stats: FeatureStats, config: StoreConfig) -> FeatureStore:
    """The store of a finished pass: tables from the running statistics, logit effects from the weights."""
    top = _top_frame(stats.top)
    max_values = stats.top.value[:, 0].where(torch.isfinite(stats.top.score[:, 0]), torch.zeros(()))  # [units]
    intervals = stats.binned.interval_samples(max_values, config.n_intervals)
    width = stats.binned.bin_width()
    features = pd.DataFrame({
        "feature": np.arange(stats.n_fires.numel()),
        "density": (stats.n_fires.double() / max(stats.n_tokens, 1)).numpy(),
        "n_fires": stats.n_fires.numpy(),
        "mean_activation": (stats.sum / stats.n_fires.clamp_min(1)).numpy(),
        "max_activation": max_values.numpy(),
        "bin_width": width.numpy(),
    })
    vocab, logits, note = _logit_table(reading, dictionary, config)
    meta = {
        "format": STORE_FORMAT, "version": STORE_VERSION,
        "kind": "neurons" if isinstance(dictionary, Neurons) else "sae",
        "n_features": int(stats.n_fires.numel()), "n_tokens": stats.n_tokens,
        "context_len": int(reading.windows.input_ids.shape[1]), "hook": reading.hook, "side": reading.side,
        "model": api.model_name(reading.model), "special_ids": list(reading.special_ids),
        "config": asdict(config), "logit_effects_note": note,
    }
    return FeatureStore(
        meta=meta, features=features, top=top, intervals=_interval_frame(intervals, width, config),
        histograms=_histogram_frame(stats.binned.counts), logits=logits,
        token_ids=reading.windows.input_ids.numpy().astype(np.int32),
        lengths=reading.windows.attention_mask.sum(1).numpy().astype(np.int32), vocab=vocab,
    )


def _top_frame(top: GroupBest) -> pd.DataFrame:
    kept = top.entries()
    return pd.DataFrame({"feature": kept.group.numpy(), "rank": kept.rank.numpy(), "activation": kept.value.numpy(),
                         "token_index": kept.token.numpy()})


def _interval_frame(intervals: IntervalSamples, width: Tensor, config: StoreConfig) -> pd.DataFrame:
    group, rank, _, value, token = intervals.samples.entries()
    feature, interval = group // config.n_intervals, group % config.n_intervals
    edges = intervals.edges
    return pd.DataFrame({
        "feature": feature.numpy(), "interval": interval.numpy(), "sample": rank.numpy(),
        "interval_start": (edges[feature, interval] * width[feature]).numpy(),
        "interval_end": (edges[feature, interval + 1] * width[feature]).numpy(),
        "interval_count": intervals.counts[feature, interval].numpy(),
        "activation": value.numpy(), "token_index": token.numpy(),
    })


def _histogram_frame(counts: Tensor) -> pd.DataFrame:
    feature, fine = counts.nonzero(as_tuple=True)
    return pd.DataFrame({"feature": feature.numpy(), "bin": fine.numpy(), "count": counts[feature, fine].numpy()})


def _logit_table(reading: Reading, dictionary: Dictionary,
                 config: StoreConfig) -> tuple[list[str], pd.DataFrame, str | None]:
    """The vocabulary's token strings and the top logit effects (empty, with a note, when unavailable)."""
    provenance = provenance_of(dictionary)
    writes_at, side = ((provenance.target_hook, provenance.target_side) if provenance.target_hook
                       else (reading.hook, reading.side))
    width = dictionary.W_dec.shape[1] // getattr(dictionary, "n_models", 1)
    try:
        weights = output_weights(reading.model, writes_at, side=side, final_norm=config.final_norm)
        if weights.W_out.shape[0] != width:
            raise ValueError(f"the directions at {writes_at} ({side}) are {width} wide and reach the residual stream "
                             f"through a {tuple(weights.W_out.shape)} weight: no direct logit effects to read")
    except (ValueError, AttributeError) as error:
        tokenizer = reading.tokenizer
        vocab_size = len(tokenizer) if tokenizer is not None else int(reading.windows.input_ids.max()) + 1
        empty = pd.DataFrame(columns=["feature", "direction", "rank", "token_id", "token", "logit"])
        return token_strings(reading.tokenizer, vocab_size), empty, str(error)
    vocab = token_strings(reading.tokenizer, weights.W_U.shape[0])
    with torch.no_grad():
        directions = dictionary.W_dec.detach().float().cpu()
        directions = directions[:, :width]  # a crosscoder's: the first model's
    return vocab, top_logit_effects(directions, weights, vocab, config.n_logits), None


# --- the store ------------------------------------------------------------------------------------


@dataclass
class FeatureStore:
    """What the pass found, with per-feature queries; every query returns a pandas DataFrame.

    Token strings are raw (unescaped) text; `left`/`right` context columns hold lists of them.
    """

    meta: dict[str, Any]
    features: pd.DataFrame  # one row per feature: density, n_fires, mean/max activation, bin_width
    top: pd.DataFrame  # feature, rank, activation, token_index
    intervals: pd.DataFrame  # feature, interval, sample, interval_start/_end/_count, activation, token_index
    histograms: pd.DataFrame  # feature, bin, count (non-empty fine bins)
    logits: pd.DataFrame  # feature, direction, rank, token_id, token, logit
    token_ids: np.ndarray  # [n_windows, context_len] int32
    lengths: np.ndarray  # [n_windows] real tokens per window
    vocab: list[str]  # token id → text
    _offsets: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("top", "intervals", "histograms", "logits"):
            table = getattr(self, name)
            keys = [c for c in ("feature", "direction", "interval", "sample", "rank", "bin") if c in table.columns]
            table = table.sort_values(keys, kind="stable", ignore_index=True)
            setattr(self, name, table)
            bounds = np.arange(self.n_features + 1)
            self._offsets[name] = np.searchsorted(table["feature"].to_numpy(), bounds, side="left")

    @property
    def n_features(self) -> int:
        return int(self.meta["n_features"])

    @property
    def context_len(self) -> int:
        return int(self.meta["context_len"])

    def _rows(self, name: str, feature: int) -> pd.DataFrame:
        if not 0 <= feature < self.n_features:
            raise IndexError(f"feature {feature} is out of range; this store has {self.n_features} features")
        lo, hi = self._offsets[name][feature], self._offsets[name][feature + 1]
        return getattr(self, name).iloc[lo:hi].reset_index(drop=True)

    # --- tables -------------------------------------------------------------------------------------

    def feature_table(self) -> pd.DataFrame:
        """All features, densest first, with the most common token of each one's top examples and its
        top boosted token."""
        table = self.features.copy()
        current = self.token_ids.reshape(-1)[self.top["token_index"].to_numpy()]
        counts = self.top.assign(token_id=current).groupby(["feature", "token_id"]).size().rename("n").reset_index()
        best = counts.sort_values(["feature", "n", "token_id"], ascending=[True, False, True])
        best = best.drop_duplicates("feature")
        n_top = self.top.groupby("feature").size()
        best = best.assign(top_token=[self.vocab[i] for i in best.token_id],
                           top_token_share=best.n.to_numpy() / n_top.loc[best.feature].to_numpy())
        table = table.merge(best[["feature", "top_token", "top_token_share"]], on="feature", how="left")
        boost = self.logits[(self.logits.direction == "boost") & (self.logits["rank"] == 0)]
        boost = boost[["feature", "token"]].rename(columns={"token": "top_boost"})
        table = table.merge(boost, on="feature", how="left")
        return table.sort_values(["density", "feature"], ascending=[False, True], ignore_index=True)

    def top_examples(self, feature: int, context: int = 16) -> pd.DataFrame:
        """The feature's top-activating tokens, highest first, with `context` tokens each side."""
        return self._with_context(self._rows("top", feature), context)

    def interval_examples(self, feature: int, context: int = 16) -> pd.DataFrame:
        """Uniform samples from each even interval of [0, max] (lowest interval first)."""
        return self._with_context(self._rows("intervals", feature), context)

    def histogram(self, feature: int) -> pd.DataFrame:
        """Activation counts in the fine bins from 0 up to the feature's max: bin_start, bin_end, count."""
        row = self.features.iloc[feature]
        width = float(row.bin_width)
        if width == 0:
            return pd.DataFrame({"bin_start": [], "bin_end": [], "count": []})
        n = int(math.floor(row.max_activation / width)) + 1
        counts = np.zeros(n, dtype=np.int64)
        rows = self._rows("histograms", feature)
        counts[rows["bin"].to_numpy()] = rows["count"].to_numpy()
        starts = np.arange(n) * width
        return pd.DataFrame({"bin_start": starts, "bin_end": starts + width, "count": counts})

    def logit_effects(self, feature: int) -> pd.DataFrame:
        """Top boosted and suppressed tokens: direction, rank, token_id, token, logit."""
        return self._rows("logits", feature).drop(columns="feature")

    def search_token(self, text: str, exact: bool = False) -> pd.DataFrame:
        """Features whose top examples sit on the token `text`, or that boost/suppress it.

        Matching ignores surrounding whitespace and case unless `exact`. Columns: feature,
        n_top_examples (top examples on the token), boost_rank, suppress_rank (NaN: not in the
        list), density; most top examples first.
        """
        wanted = text if exact else text.strip().casefold()
        matches = np.array([(t if exact else t.strip().casefold()) == wanted for t in self.vocab])
        current = self.token_ids.reshape(-1)[self.top["token_index"].to_numpy()]
        hits = self.top[matches[current]].groupby("feature").size().rename("n_top_examples")
        ranks = self.logits[matches[self.logits["token_id"].to_numpy().astype(np.int64)]]
        ranks = ranks.groupby(["feature", "direction"])["rank"].min().unstack("direction")
        ranks = ranks.reindex(columns=["boost", "suppress"]).add_suffix("_rank")
        table = pd.concat([hits, ranks], axis=1).rename_axis("feature").reset_index()
        if table.empty:
            return pd.DataFrame(columns=["feature", "n_top_examples", "boost_rank", "suppress_rank", "density"])
        table["n_top_examples"] = table["n_top_examples"].fillna(0).astype(int)
        table["density"] = self.features["density"].to_numpy()[table["feature"].to_numpy()]
        return table.sort_values(["n_top_examples", "boost_rank", "feature"], ascending=[False, True, True],
                                 ignore_index=True)

    # --- tokens and context -------------------------------------------------------------------------

    def windows(self, window_ids: Sequence[int] | None = None) -> TokenWindows:
        """The stored token windows (all, or those named), e.g. to recompute activations on them."""
        ids = self.token_ids if window_ids is None else self.token_ids[np.asarray(window_ids, dtype=np.int64)]
        lengths = self.lengths if window_ids is None else self.lengths[np.asarray(window_ids, dtype=np.int64)]
        mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        return TokenWindows(torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long))

    def token_context(self, token_index: int, context: int = 16) -> tuple[list[str], str, list[str]]:
        """The token at a flat index and up to `context` tokens of its window on each side."""
        window, position = divmod(int(token_index), self.context_len)
        row, end = self.token_ids[window], int(self.lengths[window])
        left = [self.vocab[i] for i in row[max(0, position - context) : position]]
        right = [self.vocab[i] for i in row[position + 1 : min(end, position + 1 + context)]]
        return left, self.vocab[row[position]], right

    def _with_context(self, rows: pd.DataFrame, context: int) -> pd.DataFrame:
        index = rows["token_index"].to_numpy().astype(np.int64)
        window, position = np.divmod(index, self.context_len)
        parts = [self.token_context(i, context) for i in index]
        rows = rows.drop(columns=["feature", "token_index"]).assign(window=window, position=position)
        rows["token_id"] = self.token_ids.reshape(-1)[index].astype(np.int64)
        rows["token"] = [p[1] for p in parts]
        rows["left"] = [p[0] for p in parts]
        rows["right"] = [p[2] for p in parts]
        return rows

    # --- persistence --------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write store.json and one parquet file per table into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tables = {
            "features": self.features, "top_examples": self.top, "interval_examples": self.intervals,
            "histograms": self.histograms, "logit_effects": self.logits,
            "tokens": pd.DataFrame({"token_id": self.token_ids.reshape(-1)}),
            "vocab": pd.DataFrame({"token": self.vocab}),
        }
        for name, table in tables.items():
            table.to_parquet(folder / f"{name}.parquet", index=False)
        meta = {**self.meta, "lengths": self.lengths.tolist()}
        (folder / "store.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureStore:
        """A store written by `save`."""
        folder = Path(folder)
        meta_file = folder / "store.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{str(folder)!r} holds no store.json; pass a folder written by FeatureStore.save")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{str(meta_file)!r} is not a saekit feature store")
        tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in _FILES}
        lengths = np.asarray(meta.pop("lengths"), dtype=np.int32)
        token_ids = tables["tokens"]["token_id"].to_numpy().astype(np.int32).reshape(len(lengths), -1)
        return cls(meta=meta, features=tables["features"], top=tables["top_examples"],
                   intervals=tables["interval_examples"], histograms=tables["histograms"],
                   logits=tables["logit_effects"], token_ids=token_ids, lengths=lengths,
                   vocab=tables["vocab"]["token"].tolist())


def load_feature_store(folder: str | Path) -> FeatureStore:
    """A feature store saved with `FeatureStore.save`."""
    return FeatureStore.load(folder)


# --- activations on chosen windows (e.g. to colour an example's context) ---------------------------


@torch.no_grad()
def window_activations(
    model: Any, dictionary: Dictionary, windows: TokenWindows, features: Sequence[int], hook: str, side: str = "output"
) -> Tensor:
    """Activations [n_windows, context_len, len(features)] of chosen features at every position (`model`: a
    crosscoder's models as a list)."""
    models = [api.load_model(m) for m in (model if isinstance(model, (list, tuple)) else [model])]
    acts = read_models(models, windows.input_ids, windows.attention_mask, hook, side)
    f = encode(dictionary, acts.reshape(-1, acts.shape[-1]))[:, list(features)]
    return f.reshape(*acts.shape[:2], len(features)).cpu()
