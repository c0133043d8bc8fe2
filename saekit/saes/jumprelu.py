"""JumpReLU SAE (Rajamanoharan et al., 2024): a learned threshold per feature, trained for L0 directly.

    x̄ = x − b_dec,  pre = x̄ W_enc + b_enc
    f = pre · H(pre − θ)                              H = Heaviside step, θ ≥ 0 per feature
    x̂ = f W_dec + b_dec
    L = ‖x − x̂‖² + λ Σ_i H(pre_i − θ_i)               an L0 penalty
    straight-through estimates with a rectangle kernel K of width ε (the bandwidth):
      ∂f/∂θ ≈ −(θ/ε) K((pre − θ)/ε),   ∂H/∂θ ≈ −(1/ε) K((pre − θ)/ε),   ∂f/∂pre = H(pre − θ)

Inference is ReLU(pre) · 1[pre > θ], as in SAELens, which stores θ as `threshold`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saekit.errors import InputError
from saekit.saes.base import PLAIN, SAE, LossContext, SAELoss
from saekit.saes.batch import LOCAL, BatchReduce
from saekit.saes.registry import register
from saekit.saes.sparse import codes_from_mask, gather


def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        grad_threshold = -(threshold / eps) * _rectangle((pre - threshold) / eps) * grad
        return grad_pre, grad_threshold.reshape(-1, threshold.shape[-1]).sum(0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad
        return None, grad_threshold.reshape(-1, threshold.shape[-1]).sum(0), None


@register
class JumpReLUSAE(SAE):
    arch = "jumprelu"
    saelens_architecture = "jumprelu"
    saelens_transcoder_architecture = "jumprelu_transcoder"
    saelens_reads = ("jumprelu", "jumprelu_transcoder")
    sparsity_penalty = "l0"
    supports_sparse = True

    def __init__(
        self, d_in: int, d_sae: int, *, init_threshold: float = 0.001, bandwidth: float = 0.001, **kwargs
    ) -> None:
        if init_threshold < 0 or bandwidth <= 0:
            raise InputError(
                f"init_threshold must be ≥ 0 and bandwidth > 0 (got {init_threshold}, {bandwidth})"
            )
        super().__init__(d_in, d_sae, **kwargs)
        self.bandwidth = float(bandwidth)
        self.threshold = nn.Parameter(torch.full((d_sae,), float(init_threshold), dtype=self.dtype,
                                                 device=self.device))

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre) * (pre > self.threshold)

    def train_activate(self, pre: Tensor, ctx: LossContext = PLAIN) -> Tensor:
        return _JumpReLU.apply(pre, self.threshold, self.bandwidth)

    def sparsity_loss(self, f: Tensor, pre: Tensor, ctx: LossContext) -> Tensor:
        return _Step.apply(pre, self.threshold, self.bandwidth).sum(-1).mean()

    def sparse_loss(self, x: Tensor, ctx: LossContext, target: Tensor) -> SAELoss:
        # active entries, plus inactive ones within the estimator's window (they move θ)
        with torch.no_grad():
            pre = self.scratch_pre_acts(x, ctx.compute_dtype)  # [batch, d_sae], the one dense product
            near = (pre - self.threshold).abs() < self.bandwidth / 2
            codes = codes_from_mask((pre > self.threshold) | near).grouped()
            values = gather(pre, codes)
        pre_sel = self.selected(x, codes, values, ctx.compute_dtype)
        theta = torch.index_select(self.threshold, 0, codes.cols)  # index_add backward: deterministic
        f = _JumpReLU.apply(pre_sel, theta, self.bandwidth)
        x_hat, mse = self.sparse_mse(target, codes, f, ctx.compute_dtype)
        sparsity = _Step.apply(pre_sel, theta, self.bandwidth).sum() / x.shape[0]
        total = mse + ctx.sparsity_coefficient * sparsity
        return SAELoss(total, mse, sparsity, mse.new_zeros(()), x_hat, codes=codes, values=f.detach())

    @torch.no_grad()
    def after_step(self, out: SAELoss, batch: BatchReduce = LOCAL) -> None:
        self.threshold.clamp_min_(0.0)

    @torch.no_grad()
    def scale_activations(self, factor: float, target_factor: float | None = None) -> None:
        super().scale_activations(factor, target_factor)
        self.threshold *= factor
        self.bandwidth *= factor

    def saelens_tensors(self) -> dict[str, Tensor]:
        return {**super().saelens_tensors(), "threshold": self.threshold}

    @torch.no_grad()
    def load_saelens_tensors(self, tensors: dict[str, Tensor]) -> None:
        super().load_saelens_tensors(tensors)
        self.threshold.copy_(tensors["threshold"])

    def hyperparams(self) -> dict:
        return {"bandwidth": self.bandwidth}
