"""Finite-state automata of features: chains of features that hand off to each other, as the paper found in
base64 and HTML (one feature fires on a token and predicts the tokens on which the next one fires).

The hand-off score of feature i to feature j, read off the weights:

    s_ij = a_i · Σ_v q_j(v) · e_i(v)

- e_i [vocab]: i's logit effects, its decoder direction through the MLP's output weight, the final norm and the
  unembedding, median-centred (`logit_effects.logit_effect_matrix`, as the feature store's logit tables);
- a_i: i's mean activation where it fires (`HandoffConfig.scale`), so s_ij is what i adds as it usually fires:
  a decoder row's norm and its feature's activations trade against each other, their product does not;
- q_j [vocab]: the tokens j fires on, the share of j's activation mass on each current token (`firing_tokens`).

So s_ij, in nats, is how much more likely than a typical (median) token i makes the tokens that j fires on, at the
next position, through the direct path: i fires on a token and predicts the next one, j fires on that next one.
Chains follow the strongest hand-offs (`find_chains`); `confirm_chains` checks one on the text, counting how often
j fires on the token right after i fires, against j's base rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from saekit.activations import nnsight_api as api
from saekit.activations.reading import provenance_of
from saekit.analysis.features import FeatureStore, window_activations
from saekit.analysis.logit_effects import FEATURE_CHUNK, OutputWeights, logit_effect_matrix, output_weights
from saekit.analysis.topics import Topic, topic_features, topic_of
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary

Examples = Literal["intervals", "top"]
Scale = Literal["mean", "max", "unit"]
N_LABEL_TOKENS = 3  # tokens per feature in a chain's labels
EDGE_COLUMNS = ["source", "target", "score", "rank"]


@dataclass(frozen=True)
class HandoffConfig:
    """Which features take part in hand-offs and how a score is read off the weights."""

    examples: Examples = "intervals"  # j's firing tokens from the interval samples (all its firings) or top examples
    scale: Scale = "mean"  # i's effects times its mean or max activation when firing, or per unit ("unit")
    max_density: float = 0.05  # features firing on more of the tokens follow a context, not a token: left out
    min_fires: int = 10  # features firing fewer times in the store have too few examples to read: left out
    final_norm: bool = True  # effects through the final norm's linear part (see logit_effects)

    def __post_init__(self) -> None:
        if self.examples not in ("intervals", "top"):
            raise InputError(f"examples={self.examples!r}: use 'intervals' or 'top'")
        if self.scale not in ("mean", "max", "unit"):
            raise InputError(f"scale={self.scale!r}: use 'mean', 'max' or 'unit'")
        if not 0 < self.max_density <= 1:
            raise InputError(f"max_density={self.max_density}: a share of tokens in (0, 1], e.g. 0.05")
        if self.min_fires < 1:
            raise InputError(f"min_fires={self.min_fires}: at least 1 firing")


# --- what each feature fires on -------------------------------------------------------------------------------


def firing_tokens(store: FeatureStore, features: Sequence[int] | None = None,
                  examples: Examples = "intervals") -> pd.DataFrame:
    """Per feature, the share of its activation mass on each current token: feature, token_id, token, weight
    (summing to 1 per feature), heaviest first.

    "intervals": each interval sample weighs its activation × (the interval's count / the samples drawn from it),
    an unbiased estimate over all of the feature's firings; "top": the top examples, each weighing its activation.
    """
    table = store.intervals if examples == "intervals" else store.top
    if features is not None:
        table = table[table["feature"].isin(np.asarray(features, dtype=np.int64))]
    weight = table["activation"].to_numpy(dtype=np.float64)
    if examples == "intervals":
        drawn = table.groupby(["feature", "interval"])["sample"].transform("size").to_numpy()
        weight = weight * table["interval_count"].to_numpy(dtype=np.float64) / drawn
    token_id = store.token_ids.reshape(-1)[table["token_index"].to_numpy().astype(np.int64)].astype(np.int64)
    rows = pd.DataFrame({"feature": table["feature"].to_numpy().astype(np.int64), "token_id": token_id,
                         "weight": weight})
    rows = rows[rows["weight"] > 0].groupby(["feature", "token_id"], as_index=False)["weight"].sum()
    rows["weight"] /= rows.groupby("feature")["weight"].transform("sum")
    rows.insert(2, "token", [store.vocab[i] for i in rows["token_id"]])
    return rows.sort_values(["feature", "weight", "token_id"], ascending=[True, False, True], ignore_index=True)


def eligible_features(store: FeatureStore, config: HandoffConfig = HandoffConfig()) -> np.ndarray:
    """The features that take part in hand-offs: firing at least `min_fires` times, on at most `max_density` of
    the tokens, with examples to read their tokens from."""
    table = store.features
    keep = (table["n_fires"].to_numpy() >= config.min_fires) & (table["density"].to_numpy() <= config.max_density)
    examples = store.intervals if config.examples == "intervals" else store.top
    keep &= np.isin(table["feature"].to_numpy(), examples["feature"].unique())
    return table["feature"].to_numpy()[keep].astype(np.int64)


# --- hand-off scores --------------------------------------------------------------------------------------------


class _Scorer:
    """The pieces of s_ij: decoder directions, the weights to the logits, each source's activation scale."""

    def __init__(self, store: FeatureStore, dictionary: Dictionary, model: Any, config: HandoffConfig) -> None:
        self.store, self.config = store, config
        self.weights, self.directions = _effect_weights(store, dictionary, model, config.final_norm)
        column = {"mean": "mean_activation", "max": "max_activation"}.get(config.scale)
        n = store.n_features
        self.scale = (torch.ones(n) if column is None
                      else torch.tensor(store.features[column].to_numpy(), dtype=torch.float32))

    def targets(self, targets: np.ndarray) -> Tensor:
        """q [len(targets), vocab] as a sparse matrix (rows of features without examples are empty)."""
        rows = firing_tokens(self.store, targets, self.config.examples)
        position = pd.Series(np.arange(len(targets)), index=targets)
        index = torch.as_tensor(np.stack([position.loc[rows["feature"]].to_numpy(), rows["token_id"].to_numpy()]))
        size = (len(targets), self.weights.W_U.shape[0])
        values = torch.tensor(rows["weight"].to_numpy(), dtype=torch.float32)
        return torch.sparse_coo_tensor(index, values, size, check_invariants=True).coalesce()

    def chunks(self, sources: np.ndarray, q: Tensor, progress: bool):
        """(chunk of source ids, scores [chunk, len(targets)]) over `sources`, FEATURE_CHUNK at a time."""
        starts = range(0, len(sources), FEATURE_CHUNK)
        for start in tqdm(starts, desc="hand-offs", unit="chunk", disable=not progress or len(starts) < 2):
            ids = sources[start : start + FEATURE_CHUNK]
            index = torch.as_tensor(ids)
            effects = logit_effect_matrix(self.directions[index], self.weights)  # [chunk, vocab]
            effects *= self.scale[index, None]
            yield ids, torch.sparse.mm(q, effects.T).T  # [chunk, targets]


def _effect_weights(store: FeatureStore, dictionary: Dictionary, model: Any,
                    final_norm: bool) -> tuple[OutputWeights, Tensor]:
    """The weights from the dictionary's output space to the logits and its decoder directions [n, d] (where it
    writes: a transcoder's target, else the store's hook; a crosscoder's first model)."""
    provenance = provenance_of(dictionary)
    hook, side = ((provenance.target_hook, provenance.target_side) if provenance.target_hook
                  else (store.meta["hook"], store.meta.get("side", "output")))
    first = model[0] if isinstance(model, (list, tuple)) else model
    try:
        weights = output_weights(api.load_model(first), hook, side=side, final_norm=final_norm)
    except (ValueError, AttributeError) as error:
        raise InputError(f"no logit effects to read for hand-offs: {error}") from error
    width = dictionary.W_dec.shape[1] // getattr(dictionary, "n_models", 1)
    if weights.W_out.shape[0] != width:
        raise InputError(f"the dictionary writes {width}-wide directions at {hook} ({side}), which reach the logits "
                         f"through a {tuple(weights.W_out.shape)} weight: pass the dictionary this store was built of")
    if dictionary.W_dec.shape[0] != store.n_features:
        raise InputError(f"the dictionary has {dictionary.W_dec.shape[0]} features and the store "
                         f"{store.n_features}: pass the dictionary this store was built of")
    with torch.no_grad():
        return weights, dictionary.W_dec.detach().float().cpu()[:, :width]


def handoff_scores(store: FeatureStore, dictionary: Dictionary, model: Any, sources: Sequence[int] | None = None,
                   targets: Sequence[int] | None = None, *, config: HandoffConfig = HandoffConfig(),
                   progress: bool = False) -> Tensor:
    """s [len(sources), len(targets)]: the hand-off score of each source to each target (see the module doc; all
    features by default, eligible or not; 0 towards a target without examples)."""
    every = np.arange(store.n_features)
    sources = every if sources is None else _feature_ids(sources, store)
    targets = every if targets is None else _feature_ids(targets, store)
    scorer = _Scorer(store, dictionary, model, config)
    q = scorer.targets(targets)
    return torch.cat([s for _, s in scorer.chunks(sources, q, progress)] or [torch.zeros(0, len(targets))])


def handoff_edges(store: FeatureStore, dictionary: Dictionary, model: Any, *, k: int = 5,
                  features: Sequence[int] | None = None, config: HandoffConfig = HandoffConfig(),
                  progress: bool = True) -> pd.DataFrame:
    """Each feature's `k` strongest hand-offs among `features` (default: every eligible feature, itself included):
    source, target, score, rank (0: the strongest); by source, then rank."""
    if k < 1:
        raise InputError(f"k={k}: keep at least one hand-off per feature")
    ids = eligible_features(store, config) if features is None else _feature_ids(features, store)
    if len(ids) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "score" else np.int64) for c in EDGE_COLUMNS})
    scorer = _Scorer(store, dictionary, model, config)
    q = scorer.targets(ids)
    parts = [_top_edges(sources, scores, ids, k) for sources, scores in scorer.chunks(ids, q, progress)]
    return pd.concat(parts, ignore_index=True)


def _top_edges(sources: np.ndarray, scores: Tensor, targets: np.ndarray, k: int) -> pd.DataFrame:
    """The k best targets of each row of `scores` [sources, targets], ties to the lower target id."""
    k = min(k, scores.shape[1])
    order = np.lexsort((np.broadcast_to(targets, scores.shape), -scores.numpy()), axis=1)[:, :k]  # [sources, k]
    best = np.take_along_axis(scores.numpy(), order, axis=1)
    return pd.DataFrame({"source": np.repeat(sources, k), "target": targets[order].reshape(-1),
                         "score": best.reshape(-1).astype(np.float64), "rank": np.tile(np.arange(k), len(sources))})


def _feature_ids(features: Sequence[int], store: FeatureStore) -> np.ndarray:
    ids = np.asarray(list(features), dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= store.n_features)]
    if len(bad):
        raise InputError(f"features {bad[:5].tolist()} are out of range: this store has {store.n_features} features")
    return ids


def strong_threshold(edges: pd.DataFrame, quantile: float = 0.9) -> float:
    """The `quantile` of the features' best hand-off scores: a hand-off at least this strong is stronger than the
    best one of that share of the features."""
    best = edges.loc[edges["rank"] == 0, "score"].to_numpy()
    return float(np.quantile(best, quantile)) if len(best) else float("inf")


# --- chains ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainConfig:
    """How chains follow hand-offs."""

    min_score: float | None = None  # weaker hand-offs are not followed; None: strong_threshold(edges, quantile)
    quantile: float = 0.9  # the automatic min_score's quantile of the features' best hand-offs
    branching: int = 3  # hand-offs followed per feature: its strongest ones
    max_length: int = 5  # features per chain, counting the repeat that closes a cycle
    min_length: int = 2  # shorter chains are not reported (2: a single hand-off)
    self_loops: bool = True  # whether a feature handing off to itself (a one-state automaton) counts
    n_chains: int = 20  # chains returned, strongest first

    def __post_init__(self) -> None:
        if not 0 <= self.quantile <= 1:
            raise InputError(f"quantile={self.quantile}: a quantile in [0, 1], e.g. 0.9")
        if self.branching < 1 or self.n_chains < 1:
            raise InputError("branching and n_chains must be at least 1")
        if not 2 <= self.min_length <= self.max_length <= 12:
            raise InputError(f"need 2 ≤ min_length ≤ max_length ≤ 12, got {self.min_length} and {self.max_length}")


@dataclass(frozen=True)
class Chain:
    """Features handing off in order; the last may repeat an earlier one, closing a cycle (an automaton's loop)."""

    features: tuple[int, ...]
    scores: tuple[float, ...]  # hand-off score of each step, features[k] → features[k + 1]
    margin: float  # how far the weakest step stands above the strongest hand-off that would extend the chain
    labels: tuple[tuple[str, ...], ...]  # per feature: the tokens it fires on, heaviest first (raw text)
    boosts: tuple[tuple[str, ...], ...]  # per feature: the tokens it boosts most (raw text)

    @property
    def closes_cycle(self) -> bool:
        return self.features[-1] in self.features[:-1]

    @property
    def states(self) -> tuple[int, ...]:
        """The distinct features, in order (without the repeat that closes a cycle)."""
        return self.features[:-1] if self.closes_cycle else self.features

    def next_state(self, state: int) -> int | None:
        """The index in `states` that follows state index `state` (None after the last of an open chain)."""
        if state + 1 < len(self.states):
            return state + 1
        return self.states.index(self.features[-1]) if self.closes_cycle else None

    @property
    def weakest(self) -> float:
        return min(self.scores)

    def table(self) -> pd.DataFrame:
        """One row per hand-off: step, source, target, score, fires_on (source's tokens), boosts, target_fires_on."""
        return pd.DataFrame({
            "step": range(len(self.scores)), "source": self.features[:-1], "target": self.features[1:],
            "score": self.scores, "fires_on": [list(t) for t in self.labels[:-1]],
            "boosts": [list(t) for t in self.boosts[:-1]], "target_fires_on": [list(t) for t in self.labels[1:]],
        })


def find_chains(edges: pd.DataFrame, store: FeatureStore, config: ChainConfig = ChainConfig()) -> list[Chain]:
    """Chains through the hand-offs of `edges` (`handoff_edges`), the most distinct first.

    Chains follow each feature's `branching` strongest hand-offs of at least `min_score`, up to `max_length`
    features; a step back to a feature the chain holds closes a cycle and ends it. A chain is as strong as its
    weakest hand-off, and it ranks by its margin: how far that weakest hand-off stands above the strongest one that
    would extend it at either end (or above `min_score` when none would), so it is the same chain over that range
    of thresholds. Chains with no margin (a stronger one extends them) are left out, and so is a chain that a
    higher-ranked one holds as a stretch; the rotations of a cycle count as one chain.
    """
    threshold = config.min_score if config.min_score is not None else strong_threshold(edges, config.quantile)
    kept = edges[(edges["rank"] < config.branching) & (edges["score"] >= threshold)]
    if not config.self_loops:
        kept = kept[kept["source"] != kept["target"]]
    kept = kept.sort_values(["source", "score", "target"], ascending=[True, False, True])
    follow: dict[int, list[tuple[int, float]]] = {}
    enter: dict[int, list[tuple[int, float]]] = {}
    for source, target, score in zip(kept["source"].tolist(), kept["target"].tolist(), kept["score"].tolist()):
        follow.setdefault(source, []).append((target, score))
        enter.setdefault(target, []).append((source, score))
    paths: dict[tuple[int, ...], tuple[float, ...]] = {}
    for start in follow:
        _walk([start], [], follow, config.max_length, paths)
    ranked = []
    for path, scores in dict(_canonical(p, s) for p, s in paths.items()).items():
        margin = min(scores) - _extension(path, follow, enter, config.max_length, threshold)
        if margin > 0 and len(path) >= config.min_length:
            ranked.append((path, scores, margin))
    ranked.sort(key=lambda c: (-c[2], -min(c[1]), -len(c[0]), c[0]))
    chosen: list[tuple[tuple[int, ...], tuple[float, ...], float]] = []
    held: set[tuple[int, ...]] = set()
    for path, scores, margin in ranked:
        if path in held:
            continue
        chosen.append((path, scores, margin))
        held |= {path[i:j] for i in range(len(path)) for j in range(i + 2, len(path) + 1)}
        if len(chosen) == config.n_chains:
            break
    involved = sorted({f for path, _, _ in chosen for f in path})
    labels, boosts = _fires_on(store, involved), _boosts(store, involved)
    return [Chain(p, s, m, tuple(labels.get(f, ()) for f in p), tuple(boosts.get(f, ()) for f in p))
            for p, s, m in chosen]


def _walk(path: list[int], scores: list[float], follow: dict[int, list[tuple[int, float]]], max_length: int,
          paths: dict[tuple[int, ...], tuple[float, ...]]) -> None:
    """Record every chain from `path` on, depth first; a step back into the path closes it."""
    if scores:
        paths[tuple(path)] = tuple(scores)
    if len(path) == max_length:
        return
    for target, score in follow.get(path[-1], []):
        if target in path:
            paths[(*path, target)] = (*scores, score)
        else:
            _walk([*path, target], [*scores, score], follow, max_length, paths)


def _extension(path: tuple[int, ...], follow: dict[int, list[tuple[int, float]]],
               enter: dict[int, list[tuple[int, float]]], max_length: int, threshold: float) -> float:
    """The strongest followed hand-off that would make `path` longer (`threshold` when none would): out of its
    last feature unless it closed a cycle, into its first (into any of a pure cycle's) from outside it. A chain
    at `max_length` cannot grow, so nothing extends it."""
    if len(path) >= max_length:
        return threshold
    closed = path[-1] in path[:-1]
    scores = [] if closed else [s for _, s in follow.get(path[-1], [])]
    entries = set(path[:-1]) if path[0] == path[-1] else {path[0]}
    scores += [s for f in entries for source, s in enter.get(f, []) if source not in path]
    return max(scores, default=threshold)


def _canonical(path: tuple[int, ...], scores: tuple[float, ...]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A pure cycle (first feature = last) starts after its weakest hand-off, so its rotations are one chain."""
    if len(path) < 3 or path[0] != path[-1]:
        return path, scores
    cut = (int(np.argmin(scores)) + 1) % len(scores)
    ring = path[:-1]
    rotated = ring[cut:] + ring[:cut]
    return (*rotated, rotated[0]), scores[cut:] + scores[:cut]


def _fires_on(store: FeatureStore, features: Sequence[int]) -> dict[int, tuple[str, ...]]:
    rows = firing_tokens(store, features)
    return {int(f): tuple(group["token"].head(N_LABEL_TOKENS)) for f, group in rows.groupby("feature")}


def _boosts(store: FeatureStore, features: Sequence[int]) -> dict[int, tuple[str, ...]]:
    rows = store.logits[(store.logits["direction"] == "boost") & store.logits["feature"].isin(list(features))]
    rows = rows.sort_values(["feature", "rank"])
    return {int(f): tuple(group["token"].head(N_LABEL_TOKENS)) for f, group in rows.groupby("feature")}


def chain_table(chains: Sequence[Chain]) -> pd.DataFrame:
    """One row per chain: chain (its index), features, length, margin, weakest, mean_score, closes_cycle,
    fires_on (each feature's heaviest token)."""
    return pd.DataFrame({
        "chain": range(len(chains)), "features": [list(c.features) for c in chains],
        "length": [len(c.features) for c in chains], "margin": [c.margin for c in chains],
        "weakest": [c.weakest for c in chains],
        "mean_score": [float(np.mean(c.scores)) for c in chains], "closes_cycle": [c.closes_cycle for c in chains],
        "fires_on": [[lab[0] if lab else "" for lab in c.labels] for c in chains],
    })


# --- on the text ------------------------------------------------------------------------------------------------


class ChainRun(NamedTuple):
    """One place where the chain runs, with its context."""

    window: int  # the store's window
    position: int  # where the run's first feature fires
    first_step: int  # which of the chain's states it starts at (0: its first feature)
    n_steps: int  # consecutive tokens on which the chain's features fire in order
    start: int  # index of `position` in `tokens`
    tokens: tuple[str, ...]  # the context's tokens (raw text)
    activations: np.ndarray  # [len(tokens), len(chain.states)] each state's activation on each token


@dataclass(frozen=True)
class ChainConfirmation:
    """How a chain shows on the text: per hand-off, how often the target fires right after the source."""

    chain: Chain
    steps: pd.DataFrame  # step, source, target, source_fires, followed, p_follow, base_rate, lift
    runs: pd.DataFrame  # every run of ≥ 2 steps: window, position, first_step, n_steps; longest first
    examples: tuple[ChainRun, ...]  # a few runs with context, longest first, one per window
    n_tokens: int  # tokens read (real, not special)
    full_runs: int  # runs through every feature of the chain, from its first
    expected_full_runs: float  # as many would run by chance if the features fired independently at their rates


@torch.no_grad()
def chain_activations(store: FeatureStore, dictionary: Dictionary, model: Any, features: Sequence[int], *,
                      windows: Sequence[int] | None = None, batch_size: int = 16, progress: bool = True) -> Tensor:
    """[n_windows, context_len, len(features)]: the features' activations on the store's windows (all, or those
    named), the model rerun `batch_size` windows at a time."""
    ids = np.arange(len(store.token_ids)) if windows is None else np.asarray(list(windows), dtype=np.int64)
    hook, side = store.meta["hook"], store.meta.get("side", "output")
    model = [api.load_model(m) for m in model] if isinstance(model, (list, tuple)) else api.load_model(model)
    starts = range(0, len(ids), batch_size)
    parts = [window_activations(model, dictionary, store.windows(ids[s : s + batch_size]), list(features), hook, side)
             for s in tqdm(starts, desc="chain activations", unit="batch", disable=not progress)]
    return torch.cat(parts) if parts else torch.zeros(0, store.context_len, len(features))


def confirm_chains(store: FeatureStore, dictionary: Dictionary, model: Any, chains: Sequence[Chain], *,
                   max_windows: int | None = None, n_examples: int = 6, context: int = 8,
                   progress: bool = True) -> list[ChainConfirmation]:
    """Each chain on the store's windows (the first `max_windows`), the model read once for all of them."""
    features = sorted({f for chain in chains for f in chain.states})
    if not features:
        return []
    n = len(store.token_ids) if max_windows is None else min(max_windows, len(store.token_ids))
    acts = chain_activations(store, dictionary, model, features, windows=range(n), progress=progress).numpy()
    column = {f: i for i, f in enumerate(features)}
    return [chain_evidence(store, chain, acts[..., [column[f] for f in chain.states]], n_examples=n_examples,
                           context=context) for chain in chains]


def confirmation_table(confirmations: Sequence[ChainConfirmation]) -> pd.DataFrame:
    """One row per confirmed chain: features, weakest (hand-off score), min_lift (its weakest step on the text),
    full_runs, expected_full_runs, run_lift (full runs over those expected by chance)."""
    return pd.DataFrame({
        "features": [list(c.chain.features) for c in confirmations],
        "weakest": [c.chain.weakest for c in confirmations],
        "min_lift": [float(c.steps["lift"].min()) for c in confirmations],
        "full_runs": [c.full_runs for c in confirmations],
        "expected_full_runs": [c.expected_full_runs for c in confirmations],
        "run_lift": [c.full_runs / c.expected_full_runs if c.expected_full_runs > 0 else float("nan")
                     for c in confirmations],
    })


def confirm_chain(store: FeatureStore, dictionary: Dictionary, model: Any, chain: Chain,
                  **settings: Any) -> ChainConfirmation:
    """One chain on the text (`settings`: as `confirm_chains`)."""
    return confirm_chains(store, dictionary, model, [chain], **settings)[0]


def chain_evidence(store: FeatureStore, chain: Chain, activations: np.ndarray, *, n_examples: int = 6,
                   context: int = 8) -> ChainConfirmation:
    """The counts of `confirm_chains` from the chain's states' activations [n_windows, context_len, len(states)]
    on the store's first windows. A feature fires where its activation is > 0, on real, non-special tokens."""
    acts = np.asarray(activations, dtype=np.float32)
    n_windows, length, n_states = acts.shape
    ids = store.token_ids[:n_windows]
    valid = np.arange(length)[None, :] < store.lengths[:n_windows, None]
    valid &= ~np.isin(ids, np.asarray(store.meta.get("special_ids", []), dtype=np.int64))
    fires = (acts > 0) & valid[..., None]
    n_tokens = int(valid.sum())
    base = fires.reshape(-1, n_states).sum(0) / max(n_tokens, 1)  # [states]
    state = {f: i for i, f in enumerate(chain.states)}
    rows = []
    for step, (source, target) in enumerate(zip(chain.features[:-1], chain.features[1:])):
        s, t = state[source], state[target]
        went = fires[:, :-1, s] & valid[:, 1:]
        followed = int((went & fires[:, 1:, t]).sum())
        n_source = int(went.sum())
        p = followed / n_source if n_source else float("nan")
        rows.append((step, source, target, n_source, followed, p, float(base[t]),
                     p / base[t] if base[t] > 0 and n_source else float("nan")))
    steps = pd.DataFrame(rows, columns=["step", "source", "target", "source_fires", "followed", "p_follow",
                                        "base_rate", "lift"])
    runs = _runs(chain, fires)
    full = int(((runs["first_step"] == 0) & (runs["n_steps"] >= len(chain.features))).sum())
    span = len(chain.features)
    starts = int(np.lib.stride_tricks.sliding_window_view(valid, span, axis=1).all(-1).sum()) if length >= span else 0
    expected = starts * float(np.prod([base[state[f]] for f in chain.features]))
    examples = _examples(store, runs, acts, n_examples, context)
    return ChainConfirmation(chain, steps, runs, examples, n_tokens, full, expected)


def _runs(chain: Chain, fires: np.ndarray) -> pd.DataFrame:
    """Every maximal run of ≥ 2 tokens where the chain's states fire in order (following its steps, round its
    cycle): window, position, first_step, n_steps."""
    n_windows, length, n_states = fires.shape
    after = [chain.next_state(k) for k in range(n_states)]
    reach = np.zeros((n_windows, length + 1, n_states), dtype=np.int64)  # tokens a run from (w, t, k) covers
    for t in range(length - 1, -1, -1):
        for k in range(n_states):
            onward = reach[:, t + 1, after[k]] if after[k] is not None else 0
            reach[:, t, k] = np.where(fires[:, t, k], 1 + onward, 0)
    continued = np.zeros_like(fires)  # (w, t, k) follows a state that fired at t - 1
    for k, nxt in enumerate(after):
        if nxt is not None:
            continued[:, 1:, nxt] |= fires[:, :-1, k]
    window, position, first = np.nonzero((reach[:, :length] >= 2) & ~continued)
    runs = pd.DataFrame({"window": window, "position": position, "first_step": first,
                         "n_steps": reach[window, position, first]})
    return runs.sort_values(["n_steps", "window", "position", "first_step"], ascending=[False, True, True, True],
                            ignore_index=True)


def _examples(store: FeatureStore, runs: pd.DataFrame, acts: np.ndarray, n: int, context: int
              ) -> tuple[ChainRun, ...]:
    out: list[ChainRun] = []
    for run in runs.drop_duplicates("window").head(n).itertuples(index=False):
        w, p = int(run.window), int(run.position)
        lo, hi = max(0, p - context), min(int(store.lengths[w]), p + int(run.n_steps) + context)
        tokens = tuple(store.vocab[i] for i in store.token_ids[w, lo:hi])
        out.append(ChainRun(w, p, int(run.first_step), int(run.n_steps), p - lo, tokens, acts[w, lo:hi].copy()))
    return tuple(out)


# --- looking for a topic's automata -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicChains:
    """What a search for a topic's automata found; `note` says what was looked for and what came of it."""

    topic: Topic
    features: pd.DataFrame  # the topic's features (topics.topic_features), with `eligible` for hand-offs
    chains: tuple[Chain, ...]  # chains among the eligible topic features, strongest first
    min_score: float | None  # the hand-off strength a chain's steps had to reach (None: no search was needed)
    note: str

    @property
    def found(self) -> bool:
        return bool(self.chains)


def topic_chains(store: FeatureStore, dictionary: Dictionary, model: Any, topic: str | Topic, *,
                 edges: pd.DataFrame | None = None, min_share: float = 0.5,
                 config: HandoffConfig = HandoffConfig(), chains: ChainConfig = ChainConfig(),
                 progress: bool = True) -> TopicChains:
    """Chains among the features of a topic (e.g. "base64", "markup": see topics.TOPICS), each step at least
    `chains.min_score` strong (default: the strong threshold of all features' hand-offs, `edges` if given, else
    computed). The answer says what it looked for, and what it found or why nothing."""
    topic = topic_of(topic)
    found = topic_features(store, topic, min_share=min_share)
    eligible = np.intersect1d(found["feature"].to_numpy(), eligible_features(store, config))
    found["eligible"] = found["feature"].isin(eligible)
    looked = (f"looked for {topic.name} automata: features whose top examples are ≥ {min_share:.0%} on "
              f"{topic.description}")
    if found.empty:
        return TopicChains(topic, found, (), chains.min_score, f"{looked}; found no such feature in this store")
    if len(eligible) == 0:
        return TopicChains(topic, found, (), chains.min_score,
                           f"{looked}; found {len(found)}, none of which takes part in hand-offs (each fires on more "
                           f"than {config.max_density:.0%} of the tokens or fewer than {config.min_fires} times: see "
                           "HandoffConfig)")
    threshold = chains.min_score
    if threshold is None:
        if edges is None:
            edges = handoff_edges(store, dictionary, model, k=chains.branching, config=config, progress=progress)
        threshold = strong_threshold(edges, chains.quantile)
    scores = handoff_scores(store, dictionary, model, eligible, eligible, config=config)
    topic_edges = _top_edges(eligible, scores, eligible, chains.branching)
    result = tuple(find_chains(topic_edges, store, replace(chains, min_score=threshold)))
    summary = (f"{looked}; found {len(found)} ({len(eligible)} taking part in hand-offs) and "
               + (f"{len(result)} chains with every hand-off ≥ {threshold:.3g}" if result else
                  f"no hand-off among them ≥ {threshold:.3g} (their strongest: {float(scores.max()):.3g})"))
    return TopicChains(topic, found, result, threshold, summary)
