"""The ReLU SAE's dense training loss as one autograd function: five matmuls, few passes over [B, n].

Plain autograd spends a sixth matmul on ∂L/∂x̄ (only needed for b_dec, where W_enc Σ_t ∂L/∂pre_t is
enough) and several extra passes over the [batch, n_features] activations. Here, with g = 2(x̂ − x)/B:

    ∂L/∂W_dec = fᵀ g (+ the L1-by-norm term)      ∂L/∂f = g W_decᵀ + λ w / B       w_i = 1 or ‖W_dec_i‖
    ∂L/∂pre = ∂L/∂f · 1[f > 0]                     ∂L/∂W_enc = x̄ᵀ ∂L/∂pre
    ∂L/∂b_enc = Σ_t ∂L/∂pre_t                      ∂L/∂b_dec = Σ_t g_t − W_enc ∂L/∂b_enc

The five products may run in a lower `compute` dtype (bf16 where the hardware multiplies it faster);
the weights, their gradients, the loss and every sum stay in the parameters' dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Buffers(NamedTuple):
    """[B, n] blocks kept between steps (fresh 64 MiB blocks cost a page fault per 4 KiB on CPUs)."""

    work: Tensor  # in the compute dtype: ∂L/∂f, then ∂L/∂pre, in the backward pass
    sums: Tensor  # in the parameters' dtype: for the per-feature sums of the forward pass


class _DenseReLULoss(torch.autograd.Function):
    """(mse, l1, f, x̂, fired) for a ReLU SAE; f [B, n] (compute dtype) and fired [n] carry no gradient."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, W_dec, b_dec, weighted: bool, buffers: Buffers):
        compute = buffers.work.dtype
        x_bar = x - b_dec  # [B, d_in]
        x_bar_c, W_enc_c, W_dec_c = x_bar.to(compute), W_enc.to(compute), W_dec.to(compute)
        f = torch.addmm(b_enc.to(compute), x_bar_c, W_enc_c).relu_()  # [B, n]
        x_hat = (f @ W_dec_c).to(x.dtype) + b_dec
        diff = x_hat - x
        n_tokens = x.shape[0]
        mse = diff.pow(2).sum() / n_tokens
        col_sums = (f if f.dtype == x.dtype else buffers.sums.copy_(f)).sum(0)  # [n], in the parameters' dtype
        fired = torch.gt(f, 0, out=buffers.sums).sum(0).long()  # [n] tokens each feature fired on (exact)
        norms = W_dec.norm(dim=1) if weighted else None
        l1 = (col_sums @ norms if weighted else col_sums.sum()) / n_tokens
        ctx.save_for_backward(x_bar_c, f, diff, W_enc, W_dec_c, W_dec, col_sums, norms if weighted else col_sums)
        ctx.weighted, ctx.work = weighted, buffers.work
        ctx.mark_non_differentiable(f, fired)
        return mse, l1, f, x_hat, fired

    @staticmethod
    def backward(ctx, grad_mse, grad_l1, _grad_f, _grad_x_hat, _grad_fired):
        x_bar_c, f, diff, W_enc, W_dec_c, W_dec, col_sums, norms = ctx.saved_tensors
        n_tokens = x_bar_c.shape[0]
        g = diff * (2 * grad_mse / n_tokens)  # [B, d_in]
        g_c = g.to(f.dtype)
        l1_row = (grad_l1 / n_tokens) * (norms if ctx.weighted else torch.ones_like(col_sums))
        grad_f = torch.addmm(l1_row.to(f.dtype), g_c, W_dec_c.T, out=ctx.work)  # [B, n]
        grad_pre = torch.ops.aten.threshold_backward.grad_input(grad_f, f, 0, grad_input=grad_f)  # 0 where f == 0
        grad_W_dec = (f.T @ g_c).to(W_dec.dtype)
        if ctx.weighted:
            grad_W_dec += ((grad_l1 / n_tokens) * col_sums / norms.clamp_min(1e-12))[:, None] * W_dec
        grad_W_enc = (x_bar_c.T @ grad_pre).to(W_enc.dtype)
        grad_b_enc = grad_pre.sum(0, dtype=W_enc.dtype)
        grad_b_dec = g.sum(0) - W_enc @ grad_b_enc
        return None, grad_W_enc, grad_b_enc, grad_W_dec, grad_b_dec, None, None


class DenseReLUOutput(NamedTuple):
    mse: Tensor
    l1: Tensor  # Σ_i f_i (w_i) averaged over tokens
    f: Tensor  # [B, n] in the compute dtype
    x_hat: Tensor  # [B, d_in]
    fired: Tensor  # [n] tokens each feature fired on


def dense_relu_loss(x: Tensor, W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor,
                    weighted: bool, buffers: Buffers | None = None) -> DenseReLUOutput:
    """The loss parts with the gradients above; b_dec is always subtracted first. `buffers` sets the
    compute dtype (its `work` block's) and is overwritten; without it, fresh parameter-dtype blocks."""
    if buffers is None:
        buffers = Buffers(*(torch.empty(x.shape[0], W_enc.shape[1], dtype=x.dtype, device=x.device)
                            for _ in range(2)))
    return DenseReLUOutput(*_DenseReLULoss.apply(x, W_enc, b_enc, W_dec, b_dec, weighted, buffers))
