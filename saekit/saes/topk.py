"""TopK SAE (Gao et al., 2024): each token keeps its k largest pre-activations.

    x̄ = x − b_dec
    f = ReLU(TopK_k(x̄ W_enc + b_enc))            all but the k largest set to 0
    x̂ = f W_dec + b_dec
    L = ‖x − x̂‖² + α · AuxK
    AuxK = ‖e − ê‖² / ‖e − ē‖²,   e = x − x̂ (no gradient),
           ê = ReLU(TopK_{k_aux}(pre over dead features)) W_dec

AuxK lets dead features learn to explain what the live ones miss; normalising by the residual's
variance makes α = 1/32 work at any scale. L0 is fixed at k, so there is no sparsity penalty.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saekit.errors import InputError
from saekit.saes.base import SAE, LossContext, SAELoss
from saekit.saes.registry import register
from saekit.saes.sparse import Codes, codes_from_topk, sparse_decode


def scatter_topk(values: Tensor, k: int) -> Tensor:
    """ReLU of the k largest entries of each row of `values`, zeros elsewhere: [..., n] → [..., n]."""
    top, idx = values.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(values).scatter_(-1, idx, top.relu())


@register
class TopKSAE(SAE):
    arch = "topk"
    saelens_architecture = "topk"
    supports_sparse = True

    def __init__(self, d_in: int, d_sae: int, *, k: int = 32, **kwargs) -> None:
        if not 1 <= k <= d_sae:
            raise InputError(f"k must be between 1 and n_features={d_sae} (got k={k})")
        super().__init__(d_in, d_sae, **kwargs)
        self.k = int(k)

    def activate(self, pre: Tensor) -> Tensor:
        return scatter_topk(pre, self.k)

    def aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, ctx: LossContext) -> Tensor:
        if ctx.dead is None or ctx.aux_k < 1 or not bool(ctx.dead.any()):
            return x.new_zeros(())
        k_aux = min(ctx.aux_k, int(ctx.dead.sum()))
        e = (x - x_hat).detach()  # [batch, d_in]
        dead_pre = pre.masked_fill(~ctx.dead, float("-inf"))
        e_hat = scatter_topk(dead_pre, k_aux) @ self.W_dec
        return (e_hat - e).pow(2).sum(-1).mean() / (e - e.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)

    def select(self, pre: Tensor) -> tuple[Codes, Tensor]:
        """The entries training keeps (per token: its k largest) and their pre-activations [nnz]."""
        top = pre.topk(self.k, dim=-1, sorted=False)
        return codes_from_topk(top.indices), top.values.reshape(-1)

    def sparse_loss(self, x: Tensor, ctx: LossContext) -> SAELoss:
        with torch.no_grad():
            pre = self.scratch_pre_acts(x, ctx.compute_dtype)  # [batch, d_sae], the one dense product
            codes, values = self.select(pre)
        f = torch.relu(self.selected(x, codes, values))
        x_hat, mse = self.sparse_mse(x, codes, f)
        aux = self.sparse_aux_loss(x, x_hat, pre, ctx)
        total = mse + ctx.aux_coefficient * aux
        return SAELoss(total, mse, mse.new_zeros(()), aux, x_hat, codes=codes, values=f.detach())

    def sparse_aux_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor, ctx: LossContext) -> Tensor:
        """AuxK through sparse products: the same value and gradients as `aux_loss`."""
        if ctx.dead is None or ctx.aux_k < 1 or not bool(ctx.dead.any()):
            return x.new_zeros(())
        dead_ids = ctx.dead.nonzero().squeeze(1)
        with torch.no_grad():
            top = pre[:, dead_ids].topk(min(ctx.aux_k, dead_ids.numel()), dim=-1, sorted=False)
            rows = codes_from_topk(top.indices).rows
            codes = Codes(rows, dead_ids[top.indices.reshape(-1)], x.shape[0])
        f_aux = torch.relu(self.selected(x, codes, top.values.reshape(-1)))
        e = (x - x_hat).detach()
        e_hat = sparse_decode(codes, f_aux, self.W_dec, torch.zeros_like(self.b_dec))
        return (e_hat - e).pow(2).sum(-1).mean() / (e - e.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)

    def hyperparams(self) -> dict:
        return {"k": self.k}

    def initial_density(self) -> float:
        return self.k / self.d_sae
