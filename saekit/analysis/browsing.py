"""What the feature viewers show, computed here so that it works without a widget: the features nearest one by
decoder cosine, a feature's activation on every token of its examples (the model rerun on their windows), the
features that fire most on a typed text, and the stores, correlations and links each viewer opens on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from saekit.activations import nnsight_api as api
from saekit.activations.reading import provenance_of
from saekit.activations.windows import windows_from_tokens
from saekit.analysis.features import FeatureStore, StoreConfig, build_feature_store, window_activations
from saekit.analysis.splitting import DEFAULT_THRESHOLD, decoder_cosine, split_edges, split_similarities
from saekit.analysis.universality import Universality, best_match_tables, correlate
from saekit.saes.dictionary import Dictionary, Neurons

N_RESULTS = 12  # features a text search returns


# --- looking features up ------------------------------------------------------------------------------------


@torch.no_grad()
def nearest_features(dictionary: Dictionary, feature: int, k: int = 8) -> pd.DataFrame:
    """The k features whose decoder directions are closest to `feature`'s: feature, cosine (empty for neurons,
    whose directions are the unit vectors, or without a dictionary)."""
    if dictionary is None or isinstance(dictionary, Neurons) or not hasattr(dictionary, "W_dec"):
        return pd.DataFrame({"feature": pd.Series(dtype=int), "cosine": pd.Series(dtype=float)})
    W = dictionary.W_dec
    cos = decoder_cosine(W[feature : feature + 1], W)[0]
    cos[feature] = -float("inf")
    top = cos.topk(min(k, cos.numel() - 1))
    return pd.DataFrame({"feature": top.indices.numpy(), "cosine": top.values.numpy()})


def context_values(store: FeatureStore, dictionary: Dictionary, model: Any, feature: int,
                   examples: pd.DataFrame) -> list[np.ndarray] | None:
    """Per example row (window, position, left, right) of `store`: the feature's activation on every shown token,
    with the model rerun on those windows. None without a model or dictionary to rerun."""
    if model is None or dictionary is None or examples.empty:
        return None
    windows = np.unique(examples["window"].to_numpy())
    acts = window_activations(model, dictionary, store.windows(windows), [feature],
                              store.meta["hook"], store.meta.get("side", "output"))[..., 0].numpy()
    row_of = {int(w): i for i, w in enumerate(windows)}
    values = []
    for row in examples.itertuples(index=False):
        start = int(row.position) - len(row.left)
        values.append(acts[row_of[int(row.window)], start : int(row.position) + 1 + len(row.right)])
    return values


def text_search(store: FeatureStore, dictionary: Dictionary, model: Any, text: str, k: int = N_RESULTS) -> pd.DataFrame:
    """The units that fire most on `text` (run through `model`, read as `store` reads it): feature, activation,
    and the token where each fires most."""
    if model is None or dictionary is None:
        raise ValueError("text search needs the model and the dictionary; pass model= (and sae=) to the explorer")
    tokenizer = api.get_tokenizer(model)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: store.context_len]
    if not ids:
        return pd.DataFrame(columns=["feature", "activation", "token"])
    windows = windows_from_tokens(np.asarray([ids]), len(ids))
    acts = window_activations(model, dictionary, windows, range(store.n_features), store.meta["hook"],
                              store.meta.get("side", "output"))[0].numpy()  # [tokens, units]
    best = acts.max(0)
    order = [int(i) for i in np.argsort(-best, kind="stable")[:k] if best[i] > 0]
    where = acts.argmax(0)
    return pd.DataFrame({"feature": order, "activation": best[order],
                         "token": [store.vocab[ids[where[i]]] for i in order]})


# --- what each viewer opens on ------------------------------------------------------------------------------


class ExplorerData(NamedTuple):
    """An SAE's feature store and its neurons' on the same windows, with the loaded model both read."""

    model: Any
    features: FeatureStore
    neurons: FeatureStore | None


def explorer_data(sae: Dictionary, model: Any, text: Any = None, *, neurons: bool = True, max_tokens: int = 100_000,
                  context_len: int | None = None, config: StoreConfig | None = None,
                  progress: bool = True) -> ExplorerData:
    """The feature store of `sae` over `text` (default: its provenance's) and, with `neurons`, the raw neurons'."""
    model = load_models(model)
    config = config or StoreConfig()
    store = build_feature_store(model, text, sae, max_tokens=max_tokens, context_len=context_len, config=config,
                                progress=progress)
    neuron_store = None
    if neurons:
        first = model[0] if isinstance(model, list) else model  # a crosscoder's: the first model's neurons
        neuron_store = build_feature_store(first, store.windows(), None, hook=store.meta["hook"],
                                           side=store.meta["side"], config=config, progress=progress)
    return ExplorerData(model, store, neuron_store)


def load_models(model: Any) -> Any:
    """A model loaded through nnsight, or a crosscoder's models (a list) each loaded."""
    if isinstance(model, (list, tuple)):
        return [api.load_model(m) for m in model]
    return api.load_model(model)


def map_stores(saes: Mapping[str, Dictionary], model: Any, text: Any,
               max_tokens: int = 50_000) -> dict[str, FeatureStore]:
    """A feature store per dictionary (name → SAE) over `text`, for the map's hovers and explorer."""
    model = load_models(model)
    return {name: build_feature_store(model, text, sae, max_tokens=max_tokens, progress=False)
            for name, sae in saes.items()}


class SplittingData(NamedTuple):
    """Links between dictionaries of several sizes and their feature stores on the same windows."""

    edges: pd.DataFrame  # linked by activation
    decoder_edges: pd.DataFrame  # linked by decoder cosine
    stores: list[FeatureStore]


def splitting_data(model: Any, saes: Sequence[Dictionary], text: Any, *, threshold: float = DEFAULT_THRESHOLD,
                   max_tokens: int = 100_000, progress: bool = True, **settings: Any) -> SplittingData:
    """Link `saes` (same model and hook) over `text` and build their stores (`settings`: hook, context_len, ...)."""
    model = load_models(model)
    split = split_similarities(model, text, saes, max_tokens=max_tokens, progress=progress, **settings)
    stores = [build_feature_store(model, text, sae, max_tokens=max_tokens, progress=progress, **settings)
              for sae in saes]
    return SplittingData(split_edges(split, threshold), split_edges(split, threshold, "decoder"), stores)


class UniversalityData(NamedTuple):
    """Best matches between two models' dictionaries (and neurons), with the four stores on the same windows."""

    result: Universality
    model_a: Any
    model_b: Any
    store_a: FeatureStore
    store_b: FeatureStore
    neurons_a: FeatureStore
    neurons_b: FeatureStore


def universality_data(model_a: Any, model_b: Any, sae_a: Dictionary, sae_b: Dictionary, text: Any, *,
                      max_tokens: int = 100_000, progress: bool = True, **settings: Any) -> UniversalityData:
    """Correlate `sae_a` on `model_a` with `sae_b` on `model_b` over `text` (and the neurons) and build the four
    feature stores on the same windows (`settings`: hook, context_len, ...)."""
    model_a, model_b = api.load_model(model_a), api.load_model(model_b)
    result = best_match_tables(correlate(model_a, model_b, text, sae_a, sae_b, max_tokens=max_tokens,
                                         progress=progress, **settings))
    store_a = build_feature_store(model_a, text, sae_a, max_tokens=max_tokens, progress=progress, **settings)
    windows, hook_b = store_a.windows(), provenance_of(sae_b).hook
    common = {"side": store_a.meta["side"], "progress": progress}
    store_b = build_feature_store(model_b, windows, sae_b, hook=hook_b or store_a.meta["hook"], **common)
    neurons_a = build_feature_store(model_a, windows, None, hook=store_a.meta["hook"], **common)
    neurons_b = build_feature_store(model_b, windows, None, hook=hook_b or store_a.meta["hook"], **common)
    return UniversalityData(result, model_a, model_b, store_a, store_b, neurons_a, neurons_b)
