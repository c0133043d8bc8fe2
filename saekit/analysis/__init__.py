"""Analyses built on SAEs, as pure functions returning DataFrames/tensors: the feature store, logit
effects, universality, crosscoder model diffing, feature splitting, feature maps, steering and an
interpretability proxy."""

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
    "CoactivationSums", "Correlations", "FeatureEdit", "FeatureStore", "MapConfig", "Neurons", "Splitting",
    "StoreConfig", "Universality", "best_match_histogram", "best_match_tables", "best_matches",
    "build_feature_store", "compare_bases", "compare_with_matching", "correlate", "decoder_cosines",
    "edit_activations", "families", "feature_family", "feature_map", "hover_labels", "load_feature_store",
    "logit_effect_matrix", "matching_by_kind", "model_logit_effects", "next_token_shift", "output_weights",
    "relative_norm_histogram", "relative_norms", "split_edges", "split_similarities", "steer_generate",
    "steering_sweep", "top_logit_effects", "unit_measures", "universality_by_density", "universality_summary",
    "window_activations",
]
