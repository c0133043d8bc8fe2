"""saekit: sparse autoencoders on transformer activations, after "Towards Monosemanticity" (2023)."""

from saekit.formats import SAEFormatError, load_sae
from saekit.saes import SAE, architectures

__all__ = ["SAE", "SAEFormatError", "architectures", "load_sae"]
