"""Activation records: the excerpts an explainer reads and a scorer tests, each token with the unit's activation.

A unit's records come from its feature store: the top-activating examples alternate between the explanation set
and the held-out test set (as in the paper's scoring), interval samples join both, and the test set adds excerpts
from random windows, firing or not. Activations are recomputed over each excerpt's whole window (the model is
causal, so cutting the window after reading it changes nothing), which gives every token its true value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from saekit.analysis.features import FeatureStore, window_activations
from saekit.errors import InputError
from saekit.saes.dictionary import Dictionary, Neurons

RecordKind = Literal["top", "interval", "random"]
LEVELS = 10
"""Activations are shown and simulated on the integer scale 0..LEVELS, relative to the unit's top activation."""


@dataclass(frozen=True)
class ActivationRecord:
    """One excerpt: its tokens (raw text) and the unit's activation on each."""

    tokens: tuple[str, ...]
    activations: np.ndarray  # [len(tokens)] float32
    kind: RecordKind
    """Where it came from: a top example, an interval sample, or a random window."""
    window: int = -1
    """The store's window it was cut from (-1: none)."""
    start: int = 0
    """Position of its first token in that window."""

    def levels(self, max_activation: float) -> np.ndarray:
        """Activations [n] on the 0..LEVELS integer scale of a unit whose top activation is `max_activation`."""
        return discretize(self.activations, max_activation)

    def text(self) -> str:
        return "".join(self.tokens)


@dataclass(frozen=True)
class UnitRecords:
    """One unit's excerpts: what the explainer reads and what is held out to test the explanation."""

    unit: int
    basis: str
    """What the units are ("feature" of an SAE, or "neuron"): tables and figures group by it."""
    max_activation: float
    """The unit's top activation in its store: the top of the 0..LEVELS scale."""
    explain: tuple[ActivationRecord, ...]
    test: tuple[ActivationRecord, ...]

    def firing(self, record: ActivationRecord) -> bool:
        """Whether the unit responds in this excerpt: some token at level ≥ 1 of its scale."""
        return bool(record.levels(self.max_activation).max(initial=0) >= 1)


def discretize(activations: np.ndarray, max_activation: float) -> np.ndarray:
    """Activations on the integer scale 0..LEVELS (LEVELS at `max_activation`; negative values count as 0)."""
    if max_activation <= 0:
        return np.zeros(len(activations), dtype=np.int64)
    scaled = np.floor(np.clip(np.asarray(activations, dtype=np.float64) / max_activation, 0.0, 1.0) * LEVELS)
    return scaled.astype(np.int64)


@dataclass(frozen=True)
class RecordConfig:
    """How many excerpts of which kinds each unit gets, and how long they are."""

    n_top: int = 20
    """Top examples used (alternately explanation and test); at most the store's n_top."""
    n_interval: int = 6
    """Interval samples used (alternately explanation and test), from the upper intervals down."""
    n_random: int = 10
    """Random excerpts in the test set (any unit may or may not fire there)."""
    left: int = 24
    """Tokens before the example token in an excerpt (fewer at a window's start)."""
    right: int = 8
    """Tokens after it (fewer at a window's end)."""
    batch_size: int = 32
    """Windows per model forward when recomputing activations."""
    seed: int = 0
    """Seed of the random excerpts."""

    def __post_init__(self) -> None:
        for name in ("n_top", "left", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"RecordConfig.{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("n_interval", "n_random", "right"):
            if getattr(self, name) < 0:
                raise ValueError(f"RecordConfig.{name} must be >= 0 (got {getattr(self, name)})")


def unit_records(store: FeatureStore, units: Sequence[int], model: Any, dictionary: Dictionary | None = None,
                 config: RecordConfig = RecordConfig(), progress: bool = True) -> list[UnitRecords]:
    """The explanation and test excerpts of each unit of `store`, with activations recomputed through `model` at
    the store's hook (`dictionary`: the SAE the store was built from; None for a store of neurons)."""
    kind = store.meta.get("kind")
    if dictionary is None and kind != "neurons":
        raise InputError("this store's units are an SAE's features: pass the SAE it was built from as dictionary=")
    dictionary = dictionary if dictionary is not None else Neurons(store.n_features)
    units = [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < store.n_features]
    if bad:
        raise InputError(f"units {bad[:5]} are out of range: the store has {store.n_features}")
    basis = "neuron" if kind == "neurons" else "feature"
    rng = np.random.default_rng(config.seed)
    plans = {unit: _plan(store, unit, config, rng) for unit in units}
    windows = sorted({w for plan in plans.values() for _, w, _ in plan[0] + plan[1]})
    acts = _activations(store, model, dictionary, windows, units, config, progress)  # window → [context, len(units)]
    column = {unit: i for i, unit in enumerate(units)}
    maxima = store.features.set_index("feature")["max_activation"] if "max_activation" in store.features else None
    out = []
    for unit in units:
        explain, test = plans[unit]
        top = float(maxima.loc[unit]) if maxima is not None else 0.0
        cut = [tuple(_excerpt(store, acts[w][:, column[unit]], kind, w, p, config) for kind, w, p in part)
               for part in (explain, test)]
        out.append(UnitRecords(unit, basis, top, *cut))
    return out


def _plan(store: FeatureStore, unit: int, config: RecordConfig,
          rng: np.random.Generator) -> tuple[list[tuple[RecordKind, int, int]], list[tuple[RecordKind, int, int]]]:
    """(kind, window, position) of the unit's explanation and test excerpts."""
    top = store.top[store.top["feature"] == unit].sort_values("rank").head(config.n_top)
    places = [divmod(int(i), store.context_len) for i in top["token_index"]]
    explain = [("top", w, p) for w, p in places[0::2]]
    test = [("top", w, p) for w, p in places[1::2]]
    intervals = store.intervals[store.intervals["feature"] == unit]
    intervals = intervals.sort_values(["interval", "sample"], ascending=[False, True]).head(config.n_interval)
    for i, index in enumerate(intervals["token_index"]):
        (explain if i % 2 == 0 else test).append(("interval", *divmod(int(index), store.context_len)))
    n_windows = len(store.lengths)
    for _ in range(config.n_random):
        window = int(rng.integers(n_windows))
        test.append(("random", window, int(rng.integers(max(1, int(store.lengths[window]))))))
    return explain, test


def _activations(store: FeatureStore, model: Any, dictionary: Dictionary, windows: list[int], units: list[int],
                 config: RecordConfig, progress: bool) -> dict[int, np.ndarray]:
    """Each window's activations [context, len(units)] of the units."""
    hook, side = store.meta.get("hook"), store.meta.get("side", "output")
    if hook is None:
        raise InputError("this store does not record its hook; rebuild it with saekit.build_feature_store")
    out: dict[int, np.ndarray] = {}
    starts = range(0, len(windows), config.batch_size)
    for start in tqdm(starts, desc="excerpt activations", unit="batch", disable=not progress):
        chunk = windows[start : start + config.batch_size]
        with torch.no_grad():
            acts = window_activations(model, dictionary, store.windows(chunk), units, hook, side)
        out.update(zip(chunk, acts.float().numpy()))
    return out


def _excerpt(store: FeatureStore, acts: np.ndarray, kind: RecordKind, window: int, position: int,
             config: RecordConfig) -> ActivationRecord:
    end = int(store.lengths[window])
    lo, hi = max(0, position - config.left), min(end, position + config.right + 1)
    tokens = tuple(store.vocab[i] for i in store.token_ids[window, lo:hi])
    return ActivationRecord(tokens, acts[lo:hi].astype(np.float32), kind, window, lo)
