"""Analyses built on SAEs, as pure functions returning DataFrames/tensors: the feature store, logit
effects, universality, crosscoder model diffing, feature splitting, feature maps, steering, automata (features that
hand off to each other) and an interpretability proxy."""

from saekit.analysis.automata import (
    Chain,
    ChainConfig,
    ChainConfirmation,
    HandoffConfig,
    TopicChains,
    chain_table,
    confirm_chain,
    confirm_chains,
    confirmation_table,
    find_chains,
    firing_tokens,
    handoff_edges,
    handoff_scores,
    topic_chains,
)
from saekit.analysis.crosscoders import (
    compare_with_matching,
    decoder_cosines,
    matching_by_kind,
    relative_norm_histogram,
    relative_norms,
)
from saekit.analysis.features import (
    FeatureStore,
    StoreConfig,
    build_feature_store,
    load_feature_store,
    window_activations,
)
from saekit.analysis.interpretability import compare_bases, unit_measures
from saekit.analysis.logit_effects import (
    logit_effect_matrix,
    model_logit_effects,
    output_weights,
    top_logit_effects,
)
from saekit.analysis.maps import MapConfig, feature_map, hover_labels
from saekit.analysis.splitting import Splitting, families, feature_family, split_edges, split_similarities
from saekit.analysis.steering import FeatureEdit, edit_activations, next_token_shift, steer_generate, steering_sweep
from saekit.analysis.topics import TOPICS, Topic, topic_features, topic_mask
from saekit.analysis.universality import (
    CoactivationSums,
    Correlations,
    Universality,
    best_match_histogram,
    best_match_tables,
    best_matches,
    correlate,
    universality_by_density,
    universality_summary,
)
from saekit.saes.dictionary import Neurons

__all__ = [
    "TOPICS", "Chain", "ChainConfig", "ChainConfirmation", "CoactivationSums", "Correlations", "FeatureEdit",
    "FeatureStore", "HandoffConfig", "MapConfig", "Neurons", "Splitting", "StoreConfig", "Topic", "TopicChains",
    "Universality", "best_match_histogram", "best_match_tables", "best_matches", "build_feature_store",
    "chain_table", "compare_bases", "compare_with_matching", "confirm_chain", "confirm_chains", "confirmation_table",
    "correlate", "decoder_cosines", "edit_activations", "families", "feature_family", "feature_map", "find_chains",
    "firing_tokens", "handoff_edges", "handoff_scores", "hover_labels", "load_feature_store", "logit_effect_matrix",
    "matching_by_kind", "model_logit_effects", "next_token_shift", "output_weights", "relative_norm_histogram",
    "relative_norms", "split_edges", "split_similarities", "steer_generate", "steering_sweep", "topic_chains",
    "topic_features", "topic_mask", "top_logit_effects", "unit_measures", "universality_by_density",
    "universality_summary", "window_activations",
]
