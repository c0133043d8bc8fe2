"""The feature store: per-feature statistics and examples from ONE streaming pass over a corpus.

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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.source import keep_positions
from saekit.activations.text import TokenWindows, special_token_ids, token_source
from saekit.analysis.logit_effects import output_weights, token_strings, top_logit_effects
from saekit.evaluation import eval_settings
from saekit.saes.sparse import Codes

STORE_FORMAT = "saekit.feature_store"
STORE_VERSION = 1
DEFAULT_STORE_TOKENS = 1_000_000
_FILES = ("features", "top_examples", "interval_examples", "histograms", "logit_effects", "tokens", "vocab")


# --- dictionaries ---------------------------------------------------------------------------------


class Neurons:
    """The identity dictionary: a model's neurons as the features (the baseline of every comparison)."""

    def __init__(self, d_in: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        self.d_in = self.d_sae = int(d_in)
        self.dtype, self.device = dtype, torch.device(device)
        self.metadata: dict[str, Any] = {}

    def encode(self, x: Tensor) -> Tensor:
        return x

    @property
    def W_dec(self) -> Tensor:
        """[d, d] identity: neuron i's direction in neuron space is the i-th unit vector."""
        return torch.eye(self.d_sae, dtype=self.dtype, device=self.device)


@torch.no_grad()
def encode(dictionary: Any, acts: Tensor) -> Tensor:
    """Feature activations [tokens, d_sae] of activations [tokens, d_in], on the dictionary's device/dtype."""
    return dictionary.encode(acts.to(device=dictionary.device, dtype=dictionary.dtype))


def fired(f: Tensor, positive: bool = True) -> tuple[Codes, Tensor]:
    """The entries of f [tokens, units] where units fire (f > 0, or f ≠ 0 with positive=False), sorted
    by token, and their values [nnz]."""
    flat = f.reshape(-1)
    index = (flat > 0 if positive else flat).nonzero().squeeze(1)  # [nnz] into the row-major matrix
    return Codes(index // f.shape[1], index % f.shape[1], f.shape[0]), flat[index]


# --- streaming activations ------------------------------------------------------------------------


class ActivationChunk(NamedTuple):
    """The kept activations of one model batch."""

    token_index: Tensor  # [tokens] int64: window · context_len + position of each kept token
    acts: Tensor  # [tokens, d_in]


def corpus_windows(text: Any, tokenizer: Any, context_len: int, max_tokens: int | None) -> TokenWindows:
    """The first windows of `text` (any form `token_source` takes) holding `max_tokens` real tokens."""
    return token_source(text, tokenizer, context_len, batch_size=64).take(max_tokens)


def hook_activations(
    model: Any,
    windows: TokenWindows,
    hook: str,
    side: str = "output",
    *,
    special_ids: Sequence[int] = (),
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "activations",
) -> Iterator[ActivationChunk]:
    """Activations at `hook` over `windows`, `batch_size` windows per forward, padding and special
    tokens dropped; the same windows give the same token indices for any model."""
    special = torch.tensor(list(special_ids), dtype=torch.long)
    n, ctx = windows.input_ids.shape
    flat = torch.arange(n * ctx).view(n, ctx)
    kept = int(keep_positions(windows, special).sum())
    with tqdm(total=kept, unit="tok", desc=desc, disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = TokenWindows(*(t[start : start + batch_size] for t in windows))
            keep = keep_positions(batch, special)
            acts = api.get_activations(model, batch.input_ids, batch.attention_mask, hook, side)
            bar.update(int(keep.sum()))
            yield ActivationChunk(flat[start : start + batch_size][keep], acts[keep.to(acts.device)].float())


class Corpus(NamedTuple):
    """A model, the windows to read and where to read them: what every streaming analysis needs."""

    model: Any  # a loaded nnsight model
    windows: TokenWindows
    hook: str
    side: str
    special_ids: tuple[int, ...]  # token ids whose positions are skipped
    tokenizer: Any


def open_corpus(
    model: Any,
    text: Any,
    dictionary: Any,
    *,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_STORE_TOKENS,
    exclude_special_tokens: bool | None = None,
    tokenizer: Any = None,
) -> Corpus:
    """Load the model and cut the windows; hook/side/context/text default to the dictionary's metadata.

    TokenWindows are used whole; any other text is cut into windows up to `max_tokens` real tokens.
    """
    settings = eval_settings(dictionary, hook, side, context_len, exclude_special_tokens)
    model = api.load_model(model)
    api.check_hook(model, settings.hook)
    tokenizer = tokenizer if tokenizer is not None else api.get_tokenizer(model)
    if text is None:
        text = (getattr(dictionary, "metadata", None) or {}).get("text")
        if text is None:
            raise ValueError("no text given and the dictionary's metadata names none; pass a text folder or token ids")
    windows = text if isinstance(text, TokenWindows) else corpus_windows(text, tokenizer, settings.context_len,
                                                                          max_tokens)
    special = tuple(special_token_ids(tokenizer)) if settings.exclude_special_tokens else ()
    return Corpus(model, windows, settings.hook, settings.side, special, tokenizer)


def corpus_activations(corpus: Corpus, batch_size: int = 32, progress: bool = True,
                       desc: str = "activations") -> Iterator[ActivationChunk]:
    """`hook_activations` over a Corpus."""
    return hook_activations(corpus.model, corpus.windows, corpus.hook, corpus.side, special_ids=corpus.special_ids,
                            batch_size=batch_size, progress=progress, desc=desc)


# --- running per-group selections -----------------------------------------------------------------


class GroupBest:
    """Per group, the `n` entries with the lowest scores so far, each row kept sorted by score.

    Top-k by value uses score = −value; a uniform sample uses random scores (bottom-k sampling). Both
    merge exactly: the best n of a union are the best n of the parts' best n. Empty slots score +inf.
    """

    def __init__(self, n_groups: int, n: int) -> None:
        self.n = n
        self.score = torch.full((n_groups, n), math.inf)  # [groups, n]
        self.value = torch.zeros(n_groups, n)  # [groups, n] the activation of each kept entry
        self.token = torch.zeros(n_groups, n, dtype=torch.long)  # [groups, n] its flat token index

    def update(self, group: Tensor, score: Tensor, value: Tensor, token: Tensor) -> None:
        """Offer entries (all [m]); only those beating their group's current n-th score are sorted."""
        keep = score < self.score[group, -1]
        if not bool(keep.any()):
            return
        group, score, value, token = group[keep], score[keep], value[keep], token[keep]
        order = torch.sort(score, stable=True).indices
        order = order[torch.sort(group[order], stable=True).indices]  # by group, then by score
        group, score, value, token = group[order], score[order], value[order], token[order]
        groups, counts = torch.unique_consecutive(group, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(group.numel()) - torch.repeat_interleave(starts, counts)
        slot = torch.repeat_interleave(torch.arange(groups.numel()), counts)
        first = rank < self.n
        slot, rank = slot[first], rank[first]
        new = (torch.full((groups.numel(), self.n), math.inf), torch.zeros(groups.numel(), self.n),
               torch.zeros(groups.numel(), self.n, dtype=torch.long))
        for block, values in zip(new, (score[first], value[first], token[first])):
            block[slot, rank] = values
        self._merge(groups, *new)

    def _merge(self, groups: Tensor, score: Tensor, value: Tensor, token: Tensor) -> None:
        both = torch.cat([self.score[groups], score], 1)  # [U, 2n]; old first, so ties keep old entries
        order = both.sort(dim=1, stable=True).indices[:, : self.n]
        self.value[groups] = torch.cat([self.value[groups], value], 1).gather(1, order)
        self.token[groups] = torch.cat([self.token[groups], token], 1).gather(1, order)
        self.score[groups] = both.gather(1, order)

    def entries(self) -> Entries:
        """The filled slots, group by group, best first."""
        group, rank = torch.isfinite(self.score).nonzero(as_tuple=True)
        return Entries(group, rank, self.score[group, rank], self.value[group, rank], self.token[group, rank])


class Entries(NamedTuple):
    """The filled slots of a GroupBest, each [m]."""

    group: Tensor
    rank: Tensor  # position within the group, 0 = best
    score: Tensor
    value: Tensor
    token: Tensor


class BinnedSamples:
    """Per unit: a fine histogram over [0, 2^e) and a uniform sample per fine bin (see module doc)."""

    def __init__(self, n_units: int, n_bins: int, n_per_bin: int, seed: int) -> None:
        self.n_units, self.n_bins, self.log2_bins = n_units, n_bins, int(math.log2(n_bins))
        self.exponent = torch.zeros(n_units, dtype=torch.long)  # max < 2^exponent, once seen
        self.seen = torch.zeros(n_units, dtype=torch.bool)
        self.counts = torch.zeros(n_units, n_bins, dtype=torch.long)  # [units, bins]
        self.samples = GroupBest(n_units * n_bins, n_per_bin)  # group = unit · n_bins + bin
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, codes: Codes, values: Tensor, token: Tensor) -> None:
        """Add the firing entries of a batch: values [nnz] at `codes`, token [nnz] flat indices."""
        self._grow(codes.cols, values)
        bins = torch.ldexp(values, self.log2_bins - self.exponent[codes.cols]).floor().long().clamp_(0, self.n_bins - 1)
        group = codes.cols * self.n_bins + bins
        self.counts.view(-1).index_add_(0, group, torch.ones_like(group))
        keys = torch.rand(values.shape, generator=self.generator)
        self.samples.update(group, keys, values, token)

    def _grow(self, cols: Tensor, values: Tensor) -> None:
        """Raise each unit's power-of-two range to cover this batch's max, merging its bins."""
        batch_max = torch.zeros(self.n_units).scatter_reduce_(0, cols, values, "amax")
        fired_now = batch_max > 0
        exponent = torch.frexp(batch_max).exponent.long()  # batch_max < 2^exponent
        grow = fired_now & self.seen & (exponent > self.exponent)
        shifts = (exponent - self.exponent)[grow]
        units = grow.nonzero(as_tuple=True)[0]
        for shift in shifts.unique().tolist():
            self._coarsen(units[shifts == shift], int(shift))
        first = fired_now & ~self.seen
        self.exponent = torch.where(grow | first, exponent, self.exponent)
        self.seen |= fired_now

    def _coarsen(self, units: Tensor, shift: int) -> None:
        """Merge each 2^shift adjacent bins of `units` into one (the range grew by 2^shift)."""
        m = 1 << min(shift, self.log2_bins)
        b, n, k = self.n_bins, self.samples.n, units.numel()
        counts = torch.zeros(k, b, dtype=torch.long)
        counts[:, : b // m] = self.counts[units].view(k, b // m, m).sum(-1)
        self.counts[units] = counts
        views = [t.view(self.n_units, b, n) for t in (self.samples.score, self.samples.value, self.samples.token)]
        score = views[0][units].view(k, b // m, m * n)
        order = score.sort(dim=-1, stable=True).indices[..., :n]
        for view, empty in zip(views, (math.inf, 0, 0)):
            merged = torch.full((k, b, n), empty, dtype=view.dtype)
            merged[:, : b // m] = view[units].view(k, b // m, m * n).gather(-1, order)
            view[units] = merged

    def bin_width(self) -> Tensor:
        """[units] the width of each unit's fine bins (2^e / n_bins); 0 for units that never fired."""
        return torch.where(self.seen, torch.ldexp(torch.ones(self.n_units), self.exponent - self.log2_bins), 0.0)

    def interval_edges(self, max_values: Tensor, n_intervals: int) -> Tensor:
        """[units, n_intervals + 1] fine-bin indices cutting [0, max] into even intervals (rounded to bins)."""
        width = self.bin_width().clamp_min(1e-30)
        last = (max_values / width).floor().clamp(max=self.n_bins - 1) + 1  # one past the max's bin
        cuts = torch.arange(n_intervals + 1) / n_intervals * (max_values / width)[:, None]
        edges = cuts.round().long()
        edges[:, -1] = last.long()
        return torch.minimum(edges, last.long()[:, None])

    def interval_samples(self, max_values: Tensor, n_intervals: int) -> IntervalSamples:
        """Per (unit, interval): the smallest-key entries over the interval's fine bins, and its count."""
        edges = self.interval_edges(max_values, n_intervals)  # [units, n_intervals + 1]
        fine_bins = torch.arange(self.n_bins)[None, :, None]
        interval_of_bin = (fine_bins >= edges[:, None, 1:]).sum(-1)  # [units, bins]; n_intervals: past the max
        counts = torch.zeros(self.n_units, n_intervals + 1, dtype=torch.long).scatter_add_(1, interval_of_bin,
                                                                                           self.counts)
        kept = self.samples.entries()
        unit, fine = kept.group // self.n_bins, kept.group % self.n_bins
        interval = interval_of_bin[unit, fine]
        keep = interval < n_intervals
        merged = GroupBest(self.n_units * n_intervals, self.samples.n)
        merged.update((unit * n_intervals + interval)[keep], kept.score[keep], kept.value[keep], kept.token[keep])
        return IntervalSamples(merged, edges, counts[:, :n_intervals])


class IntervalSamples(NamedTuple):
    """The interval examples of every unit."""

    samples: GroupBest  # group = unit · n_intervals + interval
    edges: Tensor  # [units, n_intervals + 1] fine-bin indices of the interval boundaries
    counts: Tensor  # [units, n_intervals] firing entries in each interval


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
        codes, values = fired(f.float().cpu())
        token = token_index[codes.rows]
        self.n_tokens += f.shape[0]
        self.n_fires += torch.bincount(codes.cols, minlength=self.n_fires.numel())
        self.sum.index_add_(0, codes.cols, values.double())
        self.top.update(codes.cols, -values, values, token)
        self.binned.update(codes, values, token)


def build_feature_store(
    model: Any,
    text: Any = None,
    dictionary: Any = None,
    *,
    hook: str | None = None,
    side: str | None = None,
    context_len: int | None = None,
    max_tokens: int | None = DEFAULT_STORE_TOKENS,
    exclude_special_tokens: bool | None = None,
    tokenizer: Any = None,
    config: StoreConfig = StoreConfig(),
    progress: bool = True,
) -> FeatureStore:
    """One pass over `text` through `model` and `dictionary` (an SAE; None: the raw neurons at `hook`).

    `text`: TokenWindows, a folder, strings or token ids (None: the SAE's training text); hook, side,
    context_len and exclude_special_tokens default to the SAE's metadata.
    """
    probe = dictionary if dictionary is not None else Neurons(1)
    corpus = open_corpus(model, text, probe, hook=hook, side=side, context_len=context_len, max_tokens=max_tokens,
                         exclude_special_tokens=exclude_special_tokens, tokenizer=tokenizer)
    stats: FeatureStats | None = None
    for chunk in corpus_activations(corpus, config.batch_size, progress, desc="feature store"):
        if dictionary is None:
            dictionary = Neurons(chunk.acts.shape[-1])
        if stats is None:
            stats = FeatureStats(dictionary.d_sae, config)
        stats.update(encode(dictionary, chunk.acts), chunk.token_index)
    if stats is None:
        raise ValueError("the text yields no tokens to read (all padded or special); pass more text")
    return _assemble(corpus, dictionary, stats, config)


def _assemble(corpus: Corpus, dictionary: Any, stats: FeatureStats, config: StoreConfig) -> FeatureStore:
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
    vocab, logits, note = _logit_table(corpus, dictionary, config)
    meta = {
        "format": STORE_FORMAT, "version": STORE_VERSION,
        "kind": "neurons" if isinstance(dictionary, Neurons) else "sae",
        "n_features": int(stats.n_fires.numel()), "n_tokens": stats.n_tokens,
        "context_len": int(corpus.windows.input_ids.shape[1]), "hook": corpus.hook, "side": corpus.side,
        "model": api.model_name(corpus.model), "special_ids": list(corpus.special_ids),
        "config": asdict(config), "logit_effects_note": note,
    }
    return FeatureStore(
        meta=meta, features=features, top=top, intervals=_interval_frame(intervals, width, config),
        histograms=_histogram_frame(stats.binned.counts), logits=logits,
        token_ids=corpus.windows.input_ids.numpy().astype(np.int32),
        lengths=corpus.windows.attention_mask.sum(1).numpy().astype(np.int32), vocab=vocab,
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


def _logit_table(corpus: Corpus, dictionary: Any, config: StoreConfig) -> tuple[list[str], pd.DataFrame, str | None]:
    """The vocabulary's token strings and the top logit effects (empty, with a note, when unavailable)."""
    try:
        weights = output_weights(corpus.model, corpus.hook, final_norm=config.final_norm)
    except (ValueError, AttributeError) as error:
        vocab_size = len(corpus.tokenizer) if corpus.tokenizer is not None else int(corpus.windows.input_ids.max()) + 1
        empty = pd.DataFrame(columns=["feature", "direction", "rank", "token_id", "token", "logit"])
        return token_strings(corpus.tokenizer, vocab_size), empty, str(error)
    vocab = token_strings(corpus.tokenizer, weights.W_U.shape[0])
    with torch.no_grad():
        directions = dictionary.W_dec.detach().float().cpu()
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
    model: Any, dictionary: Any, windows: TokenWindows, features: Sequence[int], hook: str, side: str = "output"
) -> Tensor:
    """Activations [n_windows, context_len, len(features)] of chosen features at every position."""
    model = api.load_model(model)
    acts = api.get_activations(model, windows.input_ids, windows.attention_mask, hook, side)
    f = encode(dictionary, acts.reshape(-1, acts.shape[-1]))[:, list(features)]
    return f.reshape(*acts.shape[:2], len(features)).cpu()
