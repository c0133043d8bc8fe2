"""saekit: sparse autoencoders on transformer activations, after "Towards Monosemanticity" (2023)."""

from saekit.activations import ActivationConfig, ActivationSource, UnknownHookError, load_model
from saekit.activations.sites import resolve_site
from saekit.analysis.features import FeatureStore, StoreConfig, build_feature_store, load_feature_store
from saekit.errors import InputError
from saekit.evaluation import EvalResult, evaluate
from saekit.formats import SAEFormatError, load_sae
from saekit.saes import SAE, architectures
from saekit.saes.provenance import Provenance
from saekit.training import TrainConfig, TrainResult, train, train_many

__all__ = [
    "ActivationConfig", "ActivationSource", "EvalResult", "FeatureStore", "InputError", "Provenance", "SAE",
    "SAEFormatError", "StoreConfig",
    "TrainConfig", "TrainResult", "UnknownHookError", "architectures", "build_feature_store", "evaluate",
    "load_feature_store", "load_model", "load_sae", "resolve_site", "train", "train_many",
]
