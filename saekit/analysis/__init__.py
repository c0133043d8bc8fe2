"""Analyses built on SAEs, as pure functions returning DataFrames/tensors: the feature store, logit
effects, universality, crosscoder model diffing, feature splitting, feature maps, steering, an
interpretability proxy, and specificity (units against proxies of text: `saekit.analysis.proxies` holds the
built-in proxies)."""

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
    "CoactivationSums", "Correlations", "FeatureEdit", "FeatureStore", "MapConfig", "Neurons", "Proxy", "Splitting",
    "StoreConfig", "TrackingConfig", "UnitActivations", "Universality", "WindowText", "WindowTexts", "base64_text",
    "best_levels", "best_match_histogram", "best_match_tables", "best_matches", "best_per_basis",
    "build_feature_store", "compare_bases", "compare_with_matching", "correlate", "decoder_cosines",
    "edit_activations", "families", "feature_family", "feature_map", "find_tracking_units", "hover_labels",
    "llr_proxy", "llr_table", "load_feature_store", "logit_effect_matrix", "matching_by_kind", "model_logit_effects",
    "next_token_shift", "output_weights", "proxy_distribution", "proxy_histogram", "proxy_values",
    "relative_norm_histogram", "relative_norms", "split_edges", "split_similarities", "steer_generate",
    "steering_sweep", "top_logit_effects", "tracking_curves", "unit_activations", "unit_measures",
    "universality_by_density", "universality_summary", "window_activations",
]
