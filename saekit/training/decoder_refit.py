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

import warnings
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from saekit.saes import SAE

RIDGE = 0.1
"""Pull toward the trained decoder, relative to G's mean diagonal (measured on the full demo's A family, refit on
100k tokens and scored on others: with 1e-6, A-relu-16384's rare features fit their few tokens and held-out MSE
rose)."""


class DecoderRefit(NamedTuple):
    """What a refit did: tokens read, features refit, and the mean squared error before and after on them."""

    tokens: int
    features: int
    mse_before: float
    mse_after: float


def _add_sums(gram: Tensor, cross: Tensor, codes: Tensor, x: Tensor) -> None:
    """gram += f̃ᵀ f̃ and cross += f̃ᵀ x for sparse codes f [batch, d_sae] and inputs x [batch, d_in], f̃ = [f, 1]. A
    few features are active per token, so fᵀf is a sparse product scattered into the dense sums: its cost grows
    with the active pairs, not with d_sae²."""
    d_sae = codes.shape[1]
    with warnings.catch_warnings():  # torch calls the sparse × sparse product it runs internally "beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        pairs = torch.sparse.mm(codes.t(), codes).coalesce()  # [d_sae, d_sae], nonzero where two features co-fire
    rows, cols = pairs.indices()
    gram.view(-1).index_add_(0, rows * (d_sae + 1) + cols, pairs.values())
    column_sums = torch.sparse.sum(codes, 0).to_dense()
    gram[d_sae, :d_sae] += column_sums
    gram[:d_sae, d_sae] += column_sums
    gram[d_sae, d_sae] += codes.shape[0]
    cross[:d_sae] += torch.sparse.mm(codes.t(), x)
    cross[d_sae] += x.sum(0)


class DecoderRefitSums:
    """The refit's sums G and R over the batches added so far; `apply()` solves for the decoder and sets it.

    Batches come one at a time, so a sweep (`saekit.train_many`) feeds each dictionary its own refit tokens
    from the stream they share."""

    def __init__(self, sae: SAE, tokens: int, ridge: float = RIDGE) -> None:
        self.sae, self.tokens, self.ridge = sae, tokens, ridge
        d_sae, d_out = sae.d_sae, sae.d_out
        self.gram = torch.zeros(d_sae + 1, d_sae + 1, dtype=torch.float64, device=sae.device)  # G = f̃ᵀ f̃
        self.cross = torch.zeros(d_sae + 1, d_out, dtype=torch.float64, device=sae.device)  # R = f̃ᵀ y
        self.sum_sq, self.sse_before, self.seen = 0.0, 0.0, 0

    @property
    def full(self) -> bool:
        """Whether the sums hold all `tokens`."""
        return self.seen >= self.tokens

    @torch.no_grad()
    def add(self, batch: Tensor) -> None:
        """Add a training batch [batch, batch_width] (up to the tokens still wanted)."""
        sae = self.sae
        x, y = sae.split_batch(batch[: self.tokens - self.seen].to(sae.dtype))
        active, values = sae.sparse_encode(x)  # only the active values widened to float64
        codes = torch.sparse_coo_tensor(torch.stack([active.rows, active.cols]), values.double(),
                                        (len(x), sae.d_sae), is_coalesced=True,
                                        check_invariants=False)  # row-major and distinct already
        y64 = y.double()
        x_hat = torch.sparse.mm(codes, sae.W_dec.double()) + sae.b_dec.double()  # paying only for active codes
        self.sse_before += (y64 - x_hat).pow(2).sum().item()
        self.sum_sq += y64.pow(2).sum().item()
        _add_sums(self.gram, self.cross, codes, y64)
        self.seen += len(x)

    @torch.no_grad()
    def apply(self) -> DecoderRefit:
        """Set W_dec and b_dec to the ridge least-squares readout of the sums (nothing read: nothing changes)."""
        sae, seen, d_sae = self.sae, self.seen, self.sae.d_sae
        if seen == 0:
            return DecoderRefit(0, 0, float("nan"), float("nan"))
        gram, r_all = self.gram, self.cross
        fired = gram.diagonal()[:d_sae] > 0
        keep = torch.cat([fired, torch.ones(1, dtype=torch.bool, device=fired.device)]).nonzero().squeeze(1)
        g, r = gram[keep[:, None], keep], r_all[keep]  # one gather of the fired block (+ the bias)
        self.gram = self.cross = None  # [d_sae + 1]² float64: freed before the solve
        del gram, r_all
        old = torch.cat([sae.W_dec.double()[fired], sae.b_dec.double()[None]])  # [n_fired + 1, d_out]
        shift = self.ridge * g.diagonal()[:-1].mean()
        g.diagonal().add_(shift)
        target = r + shift * old
        factor, info = torch.linalg.cholesky_ex(g)  # G is a Gram matrix, positive definite with the ridge
        solution = torch.cholesky_solve(target, factor) if int(info) == 0 else torch.linalg.lstsq(g, target).solution
        # SSE of the new readout from the sums, Σ‖x‖² − 2⟨S, R⟩ + ⟨S, G S⟩, with G S = R + shift·(S_old − S)
        sse_after = (self.sum_sq - (solution * r).sum().item()
                     + shift.item() * (solution * (old - solution)).sum().item())
        sae.set_b_dec_keeping_codes(solution[-1].to(sae.dtype))
        sae.W_dec[fired] = solution[:-1].to(sae.dtype)
        n_values = seen * sae.d_out
        return DecoderRefit(seen, int(fired.sum()), self.sse_before / n_values, max(sse_after, 0.0) / n_values)


def refit_decoder(sae: SAE, batches: Iterator[Tensor], tokens: int, ridge: float = RIDGE) -> DecoderRefit:
    """Replace W_dec and b_dec by the least-squares readout of the codes of the next `tokens` training batches
    [batch, batch_width] from `batches` (of their targets; fewer if they run out; none read: nothing changes).
    `ridge` (relative to G's mean diagonal) pulls each row toward the trained one: a feature that fired a few times
    keeps its trained direction instead of fitting those few tokens."""
    sums = DecoderRefitSums(sae, tokens, ridge)
    while not sums.full:
        batch = next(batches, None)
        if batch is None:
            break
        sums.add(batch)
    return sums.apply()
