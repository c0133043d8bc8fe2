"""Synthetic activations from a known sparse dictionary: ground truth to test dictionary learning on.

Each token is a sparse non-negative combination of `n_features` random unit directions in d_in
dimensions (more directions than dimensions: superposition), each active with probability `p_active`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SparseDictionary:
    """Ground-truth generator: unit directions [n_features, d_in], each firing rarely."""

    d_in: int = 32
    """Dimension of the activations."""
    n_features: int = 64
    """Number of true directions (more than d_in for superposition)."""
    p_active: float = 0.03
    """Probability that a direction is active on a token."""
    seed: int = 0
    """Seed for the directions (and default seed for sampling)."""

    def __post_init__(self) -> None:
        if self.d_in < 1 or self.n_features < 1:
            raise ValueError("d_in and n_features must be positive")
        if not 0 < self.p_active <= 1:
            raise ValueError(f"p_active is a probability: use a value in (0, 1] (got {self.p_active})")

    @property
    def directions(self) -> Tensor:
        """[n_features, d_in] unit vectors."""
        g = torch.Generator().manual_seed(self.seed)
        w = torch.randn(self.n_features, self.d_in, generator=g)
        return w / w.norm(dim=1, keepdim=True)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """[n, d_in] tokens: Σ_i a_i d_i with a_i ~ Uniform(0.5, 1.5) where active, else 0."""
        active = torch.rand(n, self.n_features, generator=generator) < self.p_active
        coef = (0.5 + torch.rand(n, self.n_features, generator=generator)) * active
        return coef @ self.directions

    def batches(self, batch_size: int, n_batches: int, seed: int = 1) -> Iterator[Tensor]:
        """A fixed, seeded sequence of batches (the same every time it is called)."""
        g = torch.Generator().manual_seed(seed)
        for _ in range(n_batches):
            yield self.sample(batch_size, g)


def matched_fraction(W_dec: Tensor, directions: Tensor, threshold: float = 0.9) -> float:
    """Share of true directions [n, d_in] whose best-matching decoder row [d_sae, d_in] has cosine ≥ threshold."""
    dec = W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = (directions @ dec.T).max(dim=1).values  # [n]
    return (best >= threshold).float().mean().item()
