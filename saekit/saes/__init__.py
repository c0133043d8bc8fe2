"""SAE architectures, one file each, registered by name (see `registry`)."""

from saekit.saes.base import SAE, LossContext, SAELoss
from saekit.saes.batchtopk import BatchTopKSAE
from saekit.saes.jumprelu import JumpReLUSAE
from saekit.saes.registry import architectures, register, sae_class
from saekit.saes.relu import ReLUSAE
from saekit.saes.topk import TopKSAE

__all__ = [
    "SAE", "LossContext", "SAELoss", "ReLUSAE", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE",
    "architectures", "register", "sae_class",
]
