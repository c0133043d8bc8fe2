"""ReLU SAE with an L1 penalty: the dictionary of "Towards Monosemanticity" (2023).

    x̄ = x − b_dec
    f = ReLU(x̄ W_enc + b_enc)
    x̂ = f W_dec + b_dec
    L = ‖x − x̂‖² + λ Σ_i f_i               2023: decoder rows kept at ‖W_dec_i‖ = 1
    L = ‖x − x̂‖² + λ Σ_i f_i ‖W_dec_i‖     April 2024 update: decoder norms free, L1 weighted by them
                                           (a crosscoder's ‖W_dec_i‖ is Σ_m ‖W_dec_i^m‖: see `SAE.decoder_norms`)

SAELens calls this architecture "standard".
"""

from __future__ import annotations

import torch
from torch import Tensor

from saekit.saes.base import SAE, LossContext, SAELoss
from saekit.saes.fused_relu import Buffers, dense_relu_loss
from saekit.saes.registry import register
from saekit.saes.sparse import gather, positive_codes, sparse_decode, sparse_decode_with_norms


@register
class ReLUSAE(SAE):
    arch = "relu"
    saelens_architecture = "standard"
    saelens_transcoder_architecture = "transcoder"
    saelens_reads = ("standard", "transcoder")
    sparsity_penalty = "l1"
    supports_sparse = True

    def activate(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, f: Tensor, pre: Tensor, ctx: LossContext) -> Tensor:
        if ctx.l1_weighted_by_decoder_norm:
            return (f * self.decoder_norms()).sum(-1).mean()
        return f.sum(-1).mean()

    def dense_loss(self, x: Tensor, ctx: LossContext, target: Tensor) -> SAELoss:
        if not self.apply_b_dec_to_input or self.n_models > 1:  # the fused loss is the plain SAE's
            return self.reference_loss(x, ctx, target)
        n = x.shape[0]
        buffers = Buffers(self.scratch("work", n, ctx.compute_dtype), self.scratch("sums", n))
        out = dense_relu_loss(x, self.W_enc, self.b_enc, self.W_dec, self.b_dec, ctx.l1_weighted_by_decoder_norm,
                              buffers)
        total = out.mse + ctx.sparsity_coefficient * out.l1
        return SAELoss(total, out.mse, out.l1, out.mse.new_zeros(()), out.x_hat.detach(), f=out.f, counts=out.fired)

    def sparse_loss(self, x: Tensor, ctx: LossContext, target: Tensor) -> SAELoss:
        with torch.no_grad():
            pre = self.scratch_pre_acts(x, ctx.compute_dtype)  # [batch, d_sae], the one dense product
            codes = positive_codes(pre).grouped()
            values = gather(pre, codes)
        f = self.selected(x, codes, values, ctx.compute_dtype)  # all > 0, so ReLU is the identity here
        if ctx.l1_weighted_by_decoder_norm and self.n_models > 1:
            x_hat = sparse_decode(codes, f, self.W_dec, self.b_dec, ctx.compute_dtype)
            sparsity = (f * self.decoder_norms().index_select(0, codes.cols)).sum() / x.shape[0]
        elif ctx.l1_weighted_by_decoder_norm:
            # norms [nnz]: ‖W_dec[col]‖
            x_hat, norms = sparse_decode_with_norms(codes, f, self.W_dec, self.b_dec, ctx.compute_dtype)
            sparsity = (f * norms).sum() / x.shape[0]
        else:
            x_hat = sparse_decode(codes, f, self.W_dec, self.b_dec, ctx.compute_dtype)
            sparsity = f.sum() / x.shape[0]
        mse = (x_hat - target).pow(2).sum(-1).mean()
        total = mse + ctx.sparsity_coefficient * sparsity
        return SAELoss(total, mse, sparsity, mse.new_zeros(()), x_hat, codes=codes, values=f.detach())
