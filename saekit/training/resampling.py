"""Dead-feature resampling, as in "Towards Monosemanticity" (2023).

Each dead feature is re-initialised from an input drawn with probability ∝ (its squared reconstruction
error)²: decoder row = the input normalised; encoder column = the same direction scaled to 0.2 × the mean
encoder norm of live features; encoder bias 0; Adam's moments for exactly those weights reset. A transcoder's
decoder row is the drawn target's direction and its encoder column the drawn input's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saekit.saes import SAE


@torch.no_grad()
def reconstruction_errors(sae: SAE, batch: Tensor, chunk: int = 8192) -> Tensor:
    """‖target − x̂‖² per row of a training batch [n, batch_width] → [n]."""
    errors = []
    for part in batch.split(chunk):
        x, target = sae.split_batch(part)
        errors.append((sae(x) - target).pow(2).sum(-1))
    return torch.cat(errors)


@torch.no_grad()
def resample_dead(sae: SAE, optimizer: torch.optim.Optimizer, pool: Tensor, dead: Tensor,
                  generator: torch.Generator) -> Tensor:
    """Re-initialise the features marked in dead [d_sae] from batch rows in pool [n, batch_width]; returns their
    ids."""
    ids = dead.nonzero().squeeze(1)
    if ids.numel() == 0 or pool.shape[0] == 0:
        return ids[:0]
    weights = reconstruction_errors(sae, pool).double().pow(2)
    if not torch.isfinite(weights).all() or weights.sum() <= 0:
        weights = torch.ones_like(weights)
    replace = ids.numel() > pool.shape[0]
    picks = torch.multinomial(weights.cpu(), ids.numel(), replacement=replace, generator=generator)
    x, target = sae.split_batch(pool[picks.to(pool.device)])
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else sae.W_enc.new_tensor(1.0)
    sae.W_dec[ids] = target / target.norm(dim=1, keepdim=True).clamp_min(1e-8)  # [n_dead, d_out]
    sae.W_enc[:, ids] = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)).T * (0.2 * enc_norm)
    sae.b_enc[ids] = 0.0
    _reset_adam_rows(optimizer, sae, ids)
    return ids


def _reset_adam_rows(optimizer: torch.optim.Optimizer, sae: SAE, ids: Tensor) -> None:
    """Zero Adam's moment estimates for the weights of features `ids` only."""
    for param in (sae.W_dec, sae.W_enc, sae.b_enc):
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                if param is sae.W_enc:
                    state[key][:, ids] = 0.0
                else:
                    state[key][ids] = 0.0
