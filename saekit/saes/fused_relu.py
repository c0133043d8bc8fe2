"""The ReLU SAE's dense training loss as one autograd function: five matmuls, few passes over [B, n].

Plain autograd spends a sixth matmul on ∂L/∂x̄ (only needed for b_dec, where W_enc Σ_t ∂L/∂pre_t is
enough) and several extra passes over the [batch, n_features] activations. Here, with g = 2(x̂ − x)/B:

    ∂L/∂W_dec = fᵀ g (+ the L1-by-norm term)      ∂L/∂f = g W_decᵀ + λ w / B       w_i = 1 or ‖W_dec_i‖
    ∂L/∂pre = ∂L/∂f · 1[f > 0]                     ∂L/∂W_enc = x̄ᵀ ∂L/∂pre
    ∂L/∂b_enc = Σ_t ∂L/∂pre_t                      ∂L/∂b_dec = Σ_t g_t − W_enc ∂L/∂b_enc
"""

from __future__ import annotations

import torch
from torch import Tensor


class _DenseReLULoss(torch.autograd.Function):
    """(mse, l1, f) for a ReLU SAE; f [B, n] is returned for tracking and carries no gradient."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, weighted: bool, scratch: Tensor | None):
        x_bar = x - b_dec  # [B, d_in]
        f = torch.addmm(b_enc, x_bar, W_enc).relu_()  # [B, n]
        x_hat = torch.addmm(b_dec, f, W_dec)
        diff = x_hat - x
        n_tokens = x.shape[0]
        mse = diff.pow(2).sum() / n_tokens
        col_sums = f.sum(0)  # [n]
        norms = W_dec.norm(dim=1) if weighted else None
        l1 = (col_sums @ norms if weighted else col_sums.sum()) / n_tokens
        ctx.save_for_backward(x_bar, f, diff, W_enc, W_dec, col_sums, norms if weighted else col_sums)
        ctx.weighted, ctx.scratch = weighted, scratch
        ctx.mark_non_differentiable(f)
        return mse, l1, f, x_hat

    @staticmethod
    def backward(ctx, grad_mse, grad_l1, _grad_f, _grad_x_hat):
        x_bar, f, diff, W_enc, W_dec, col_sums, norms = ctx.saved_tensors
        n_tokens = x_bar.shape[0]
        g = diff * (2 * grad_mse / n_tokens)  # [B, d_in]
        l1_row = (grad_l1 / n_tokens) * (norms if ctx.weighted else torch.ones_like(col_sums))
        grad_f = torch.addmm(l1_row, g, W_dec.T, out=ctx.scratch)  # [B, n]
        grad_pre = torch.ops.aten.threshold_backward.grad_input(grad_f, f, 0, grad_input=grad_f)  # 0 where f == 0
        grad_W_dec = f.T @ g
        if ctx.weighted:
            grad_W_dec += ((grad_l1 / n_tokens) * col_sums / norms.clamp_min(1e-12))[:, None] * W_dec
        grad_W_enc = x_bar.T @ grad_pre
        grad_b_enc = grad_pre.sum(0)
        grad_b_dec = g.sum(0) - W_enc @ grad_b_enc
        return None, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None


def dense_relu_loss(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
                    weighted: bool, scratch: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(mse, l1, f [B, n], x̂ [B, d_in]) with the gradients above; b_dec is always subtracted first.
    scratch: an optional [B, n] buffer the backward pass may overwrite (saves a fresh 64 MiB block a step)."""
    return _DenseReLULoss.apply(x, W_enc, b_enc, W_dec, b_dec, weighted, scratch)
