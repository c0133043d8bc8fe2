"""BatchTopK SAE (Bussmann et al., 2024): TopK over the whole batch in training, a threshold at inference.

    x̄ = x − b_dec,  pre = x̄ W_enc + b_enc
    training:   f = ReLU(pre) where it is among the k·B largest values of the batch (over every rank), else 0
    inference:  f = ReLU(pre) · 1[pre > θ]
    θ ← (1 − η) θ + η · min{f > 0}               a global threshold, an EMA over training batches
    x̂ = f W_dec + b_dec,   L = ‖x − x̂‖² + α · AuxK   (AuxK as for TopK)

Tokens may use more or fewer than k features, so the mean L0 is k while harder tokens get more.
SAELens stores a trained BatchTopK SAE as a JumpReLU with θ in every feature; saekit does the same.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saekit.errors import InputError
from saekit.saes.base import PLAIN, LossContext, SAELoss
from saekit.saes.batch import LOCAL, BatchReduce
from saekit.saes.registry import register
from saekit.saes.sparse import Codes, codes_from_flat, gather
from saekit.saes.topk import TopKSAE


@register
class BatchTopKSAE(TopKSAE):
    arch = "batchtopk"
    saelens_architecture = "jumprelu"  # saved with θ in every feature, as SAELens saves a trained BatchTopK
    saelens_reads = ("batchtopk",)

    def __init__(self, d_in: int, d_sae: int, *, k: int = 32, threshold_lr: float = 0.01, **kwargs) -> None:
        if not 0 < threshold_lr <= 1:
            raise InputError(f"threshold_lr is an EMA rate and must be in (0, 1] (got {threshold_lr})")
        super().__init__(d_in, d_sae, k=k, **kwargs)
        self.threshold_lr = float(threshold_lr)
        self.register_buffer("threshold", torch.zeros((), dtype=self.dtype, device=self.device))

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre) * (pre > self.threshold)

    @torch.no_grad()
    def batch_threshold(self, pre: Tensor, batch: BatchReduce) -> Tensor:
        """The k·B-th largest pre-activation of the global batch (B its rows, over every rank)."""
        flat = pre.detach().reshape(-1)
        rows = int(batch.sum(torch.tensor(pre.shape[0])))
        k = min(self.k * rows, rows * self.d_sae)
        return batch.kth_largest(flat.topk(min(k, flat.numel()), sorted=False).values, k)

    def train_activate(self, pre: Tensor, ctx: LossContext = PLAIN) -> Tensor:
        return torch.where(pre >= self.batch_threshold(pre, ctx.batch), torch.relu(pre), pre.new_zeros(()))

    def select(self, pre: Tensor, ctx: LossContext = PLAIN) -> tuple[Codes, Tensor]:
        flat = pre.reshape(-1)
        kept = (flat >= self.batch_threshold(pre, ctx.batch)).nonzero().squeeze(1)
        codes = codes_from_flat(kept, pre.shape[0], self.d_sae).grouped()
        return codes, gather(pre, codes)

    @torch.no_grad()
    def after_step(self, out: SAELoss, batch: BatchReduce = LOCAL) -> None:
        kept = out.active_values()
        lowest = batch.min(kept.min() if kept.numel() else kept.new_tensor(float("inf")))
        if not torch.isfinite(lowest):
            return
        lowest = lowest.to(self.threshold.dtype)
        if self.threshold <= 0:  # first batch: start at the observed value instead of creeping up from 0
            self.threshold.copy_(lowest)
        else:
            self.threshold.lerp_(lowest, self.threshold_lr)

    @torch.no_grad()
    def scale_activations(self, factor: float, target_factor: float | None = None) -> None:
        super().scale_activations(factor, target_factor)
        self.threshold *= factor

    def saelens_tensors(self) -> dict[str, Tensor]:
        return {**super().saelens_tensors(), "threshold": self.threshold.expand(self.d_sae)}

    @torch.no_grad()
    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        theta = tensors["threshold"]
        if not bool((theta == theta[0]).all()):
            raise ValueError("a BatchTopK SAE has one global threshold, but this folder's `threshold` varies "
                             "by feature: load it as arch 'jumprelu' instead")
        super().load_saelens_tensors(tensors)
        self.threshold.fill_(theta[0])

    def hyperparams(self) -> dict:
        return {"k": self.k, "threshold_lr": self.threshold_lr}

    def saelens_config(self) -> dict:
        return {}  # a SAELens JumpReLU: its thresholds are in the weights
