"""Analyses built on SAEs, as pure functions returning DataFrames/tensors: the feature store, logit
effects, universality, crosscoder model diffing, feature splitting, feature maps, steering, an
interpretability proxy, specificity (units against proxies of text: `saekit.analysis.proxies` holds the
built-in proxies) and automata (features that hand off to each other)."""

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
from saekit.analysis.likelihood_ratio import base64_text, llr_proxy, llr_table
from saekit.analysis.logit_effects import (
    logit_effect_matrix,
    model_logit_effects,
    output_weights,
    top_logit_effects,
)
from saekit.analysis.maps import MapConfig, feature_map, hover_labels
from saekit.analysis.proxies import Proxy, proxy_values
from saekit.analysis.specificity import (
    TrackingConfig,
    UnitActivations,
    best_levels,
    best_per_basis,
    find_tracking_units,
    proxy_distribution,
    proxy_histogram,
    tracking_curves,
    unit_activations,
)
from saekit.analysis.splitting import Splitting, families, feature_family, split_edges, split_similarities
from saekit.analysis.steering import FeatureEdit, edit_activations, next_token_shift, steer_generate, steering_sweep
from saekit.analysis.token_text import WindowText, WindowTexts
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
    "Chain", "ChainConfig", "ChainConfirmation", "CoactivationSums", "Correlations", "FeatureEdit", "FeatureStore",
    "HandoffConfig", "MapConfig", "Neurons", "Proxy", "Splitting", "StoreConfig", "TOPICS", "Topic", "TopicChains",
    "TrackingConfig", "UnitActivations", "Universality", "WindowText", "WindowTexts", "base64_text", "best_levels",
    "best_match_histogram", "best_match_tables", "best_matches", "best_per_basis", "build_feature_store",
    "chain_table", "compare_bases", "compare_with_matching", "confirm_chain", "confirm_chains", "confirmation_table",
    "correlate", "decoder_cosines", "edit_activations", "families", "feature_family", "feature_map", "find_chains",
    "find_tracking_units", "firing_tokens", "handoff_edges", "handoff_scores", "hover_labels", "llr_proxy",
    "llr_table", "load_feature_store", "logit_effect_matrix", "matching_by_kind", "model_logit_effects",
    "next_token_shift", "output_weights", "proxy_distribution", "proxy_histogram", "proxy_values",
    "relative_norm_histogram", "relative_norms", "split_edges", "split_similarities", "steer_generate",
    "steering_sweep", "top_logit_effects", "topic_chains", "topic_features", "topic_mask", "tracking_curves",
    "unit_activations", "unit_measures", "universality_by_density", "universality_summary", "window_activations",
]
