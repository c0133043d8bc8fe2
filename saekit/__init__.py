"""saekit: sparse autoencoders on transformer activations, after "Towards Monosemanticity" (2023)."""

from saekit.formats import SAEFormatError, load_sae
from saekit.saes import SAE, architectures
from saekit.training import TrainConfig, TrainResult, train

__all__ = ["SAE", "SAEFormatError", "TrainConfig", "TrainResult", "architectures", "load_sae", "train"]
