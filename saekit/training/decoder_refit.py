"""Decoder refit: the least-squares decoder for the encoder's codes, once training is over.

An L1 penalty shrinks the codes f, and the decoder learned beside it reads those shrunk codes. With the encoder
frozen, the best linear readout of the same codes is a least-squares problem with an exact answer:

    [W_dec; b_dec] = argmin Σ_t ‖x_t − f_t W_dec − b_dec‖²  =  G⁻¹ R,   G = Σ f̃ᵀ f̃,  R = Σ f̃ᵀ x,  f̃ = [f, 1]

Which features fire, and how strongly, is unchanged (so L0, densities and activation correlations are too);
only the reconstruction improves (the decoder fine-tuning of Wright & Sharkey 2024, solved in closed form).
Features silent on the refit tokens keep their decoder rows. With a pre-encoder bias (x − b_dec), b_enc moves
by (b_dec_new − b_dec) W_enc so that the codes stay exactly as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from saekit.saes import SAE


class DecoderRefit(NamedTuple):
    """What a refit did: tokens read, features refit, and the mean squared error before and after on them."""

    tokens: int
    features: int
    mse_before: float
    mse_after: float


def _add_sums(gram: Tensor, cross: Tensor, f: Tensor, x: Tensor) -> None:
    """gram += f̃ᵀ f̃ and cross += f̃ᵀ x for codes f [batch, d_sae] and inputs x [batch, d_in], f̃ = [f, 1]. The
    codes are sparse (a few active features per token), so fᵀf is a sparse product scattered into the dense sums:
    its cost grows with the active pairs, not with d_sae²."""
    d_sae = f.shape[1]
    codes = f.to_sparse()
    pairs = torch.sparse.mm(codes.t(), codes).coalesce()  # [d_sae, d_sae], nonzero where two features co-fire
    rows, cols = pairs.indices()
    gram.view(-1).index_add_(0, rows * (d_sae + 1) + cols, pairs.values())
    column_sums = f.sum(0)
    gram[d_sae, :d_sae] += column_sums
    gram[:d_sae, d_sae] += column_sums
    gram[d_sae, d_sae] += len(f)
    cross[:d_sae] += torch.sparse.mm(codes.t(), x)
    cross[d_sae] += x.sum(0)


@torch.no_grad()
def refit_decoder(sae: SAE, batches: Iterator[Tensor], tokens: int, ridge: float = 1e-6) -> DecoderRefit:
    """Replace W_dec and b_dec by the least-squares readout of the codes of the next `tokens` inputs [batch, d_in]
    from `batches` (fewer if they run out; none read: nothing changes). `ridge` (relative to the mean diagonal of
    G) keeps the solve stable when two features fire together nearly always."""
    d_sae, d_in = sae.d_sae, sae.d_in
    gram = torch.zeros(d_sae + 1, d_sae + 1, dtype=torch.float64, device=sae.device)  # G = f̃ᵀ f̃
    cross = torch.zeros(d_sae + 1, d_in, dtype=torch.float64, device=sae.device)  # R = f̃ᵀ x
    sum_sq, sse_before, seen = 0.0, 0.0, 0
    while seen < tokens:
        x = next(batches, None)
        if x is None:
            break
        x = x[: tokens - seen].to(sae.dtype)
        f = sae.encode(x)  # [batch, d_sae]
        sse_before += (x - sae.decode(f)).pow(2).sum().item()
        sum_sq += x.double().pow(2).sum().item()
        _add_sums(gram, cross, f.double(), x.double())
        seen += len(x)
    if seen == 0:
        return DecoderRefit(0, 0, float("nan"), float("nan"))
    fired = gram.diagonal()[:d_sae] > 0
    keep = torch.cat([fired, torch.ones(1, dtype=torch.bool, device=fired.device)])  # the bias column always
    g, r = gram[keep][:, keep], cross[keep]
    del gram
    shift = ridge * g.diagonal().mean()
    g.diagonal().add_(shift)
    solution = torch.linalg.solve(g, r)  # [n_fired + 1, d_in]
    g.diagonal().sub_(shift)
    # SSE of the new readout, from the sums: Σ‖x‖² − 2⟨S, R⟩ + ⟨S, G S⟩
    sse_after = sum_sq - 2 * (solution * r).sum().item() + (solution * (g @ solution)).sum().item()
    new_b_dec = solution[-1].to(sae.dtype)
    if sae.apply_b_dec_to_input:
        sae.b_enc += (new_b_dec - sae.b_dec) @ sae.W_enc
    sae.W_dec[fired] = solution[:-1].to(sae.dtype)
    sae.b_dec.copy_(new_b_dec)
    n_values = seen * d_in
    return DecoderRefit(seen, int(fired.sum()), sse_before / n_values, max(sse_after, 0.0) / n_values)
